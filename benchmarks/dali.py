"""The NVIDIA DALI peer: the book's augmentation (:data:`~benchmarks.pipelines.BOOK_AUGMENT`)
as a DALI pipeline, on the CPU, or on the GPU when the training device is CUDA.

DALI (``pip install "gpuaug[dali]"``, the ``nvidia-dali-cuda120`` wheel) runs a graph of
operators on its own thread pool and hands batches to PyTorch through
``nvidia.dali.plugin.pytorch.DALIGenericIterator``. Both figures of :mod:`benchmarks.bench`:

- *end to end*: ``fn.readers.file`` over the same folder (class sub-folders, shuffled) ->
  ``fn.decoders.image`` -> ``fn.resize`` (nearest-neighbour, to ``target_size``) -> the
  augmentation below -> ``DALIGenericIterator`` -> ``.to(device)``;
- *augmentation only*: the decoded uint8 batch (NHWC) fed through ``fn.external_source``
  (``batch=True``) -> the augmentation -> ``DALIGenericIterator``.

The augmentation draws Keras' parameters per sample with ``fn.random`` (rotation uniform in
+-40 degrees; ``tx`` uniform in +-0.2 x height and ``ty`` in +-0.2 x width, in pixels; shear
uniform in +-0.2 degrees; ``zx``, ``zy`` independently uniform in [0.8, 1.2]; a fair coin for
the flip), builds Keras' matrix from them with ``fn.transforms.translation / scale / shear /
rotation`` joined by ``fn.transforms.combine`` (:func:`keras_matrix`), warps with
``fn.warp_affine`` (bilinear; no ``fill_value``, so source coordinates are clamped: Keras'
``fill_mode="nearest"``), then flips and rescales to float32 [0, 1] in CHW with
``fn.crop_mirror_normalize(mean=0, std=255, mirror=coin)``.

Where it differs from Keras (the state of this peer, as close as DALI allows):

- the sampling and the geometry are Keras' (``apply_affine_transform``'s
  ``R @ shift @ shear @ zoom`` about Keras' centre, ``tx`` along x as Keras does): DALI's
  output matrix is the one Keras builds, and its warp of an image is within about 1 grey
  level of Keras' (``tests/test_bench_peers.py`` checks both). The random stream is DALI's,
  not numpy's;
- the warp writes uint8 (DALI's usual pipeline: warp, then normalise), so the output is
  rounded to whole grey levels before the rescale, where Keras warps in float32;
- the resize is DALI's nearest-neighbour, which may pick different source pixels than PIL's
  on the same image; decode is DALI's (libjpeg-turbo on the CPU, nvJPEG with ``"mixed"``);
- threads: DALI runs its CPU operators on ``num_threads`` threads of one process, not on
  worker processes. End to end it gets ``num_workers`` threads (at least 1: with 0 workers the
  peers decode in the main process, DALI in one thread); augmentation-only it gets
  ``torch.get_num_threads()``, the threads the torch peers' batched ops use;
- on a GPU (``settings.device`` CUDA and ``torch.cuda.is_available()``) decode is
  ``device="mixed"`` and the resize, warp and normalisation run on the GPU, the parameters
  and matrices on the CPU (DALI's argument inputs). That path is written for DALI's GPU
  operators but has not been run on a GPU here.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from .pipelines import BOOK_AUGMENT, Runner, Settings

__all__ = [
    "augment",
    "augment_only_batches",
    "dali_augment_only",
    "dali_end_to_end",
    "dali_unavailable",
    "draw_params",
    "end_to_end_batches",
    "keras_matrix",
    "on_gpu",
]

#: How to install the peer, in its skip reason.
INSTALL = 'pip install "gpuaug[dali]" (the nvidia-dali-cuda120 wheel, about 420 MB)'


def dali_unavailable(settings: Settings) -> str | None:
    """Why the DALI peer cannot run (None: it can): ``nvidia.dali`` or its PyTorch plugin
    does not import."""
    try:
        import nvidia.dali  # noqa: F401
        from nvidia.dali.plugin.pytorch import DALIGenericIterator  # noqa: F401
    except Exception as err:  # noqa: BLE001 - optional peer: skip with the reason
        return f"nvidia-dali not importable ({type(err).__name__}: {err}); {INSTALL}"
    return None


def on_gpu(settings: Settings) -> bool:
    """Whether the peer runs DALI's GPU operators: the training device is CUDA and there is one."""
    return settings.device.type == "cuda" and torch.cuda.is_available()


def _device_id(settings: Settings) -> int | None:
    """DALI's ``device_id``: the CUDA device index, or None for a CPU-only pipeline."""
    if not on_gpu(settings):
        return None
    index = settings.device.index
    return torch.cuda.current_device() if index is None else index


# ----------------------------------------------------------------------------- the graph


def draw_params(target_size: tuple[int, int]) -> dict:
    """Keras' per-sample draws of :data:`BOOK_AUGMENT` as DALI nodes (inside a pipeline).

    Returns:
        ``{"theta_deg", "tx_px", "ty_px", "shear_deg", "zx", "zy", "flip"}``: one scalar per
        sample each (``flip`` 0 or 1). As ``ImageDataGenerator.get_random_transform``: ``tx``
        from ``height_shift_range`` times the height, ``ty`` from ``width_shift_range`` times
        the width.
    """
    from nvidia.dali import fn

    h, w = target_size
    rot = float(BOOK_AUGMENT["rotation_range"])
    hs, ws = BOOK_AUGMENT["height_shift_range"] * h, BOOK_AUGMENT["width_shift_range"] * w
    shear = float(BOOK_AUGMENT["shear_range"])
    zoom = float(BOOK_AUGMENT["zoom_range"])
    return {
        "theta_deg": fn.random.uniform(range=(-rot, rot)),
        "tx_px": fn.random.uniform(range=(-hs, hs)),
        "ty_px": fn.random.uniform(range=(-ws, ws)),
        "shear_deg": fn.random.uniform(range=(-shear, shear)),
        "zx": fn.random.uniform(range=(1.0 - zoom, 1.0 + zoom)),
        "zy": fn.random.uniform(range=(1.0 - zoom, 1.0 + zoom)),
        "flip": fn.random.coin_flip(probability=0.5),
    }


def keras_matrix(params: dict, target_size: tuple[int, int]):
    """Keras' output -> input matrix for one sample's ``params``, as a DALI node (2 x 3).

    Keras (``apply_affine_transform``) builds ``M = R(theta) @ T(tx, ty) @ Sh(shear) @
    Z(zx, zy)`` with ``Sh = [[1, -sin s], [0, cos s]]``, conjugated by a translation to
    ``(h / 2, w / 2)`` (its ``transform_matrix_offset_center``, in index coordinates
    ``h / 2 - 0.5``), and applies it in (x = column, y = row) order. ``Sh @ Z`` is written
    here as DALI's shear ``[[1, -sin s], [0, 1]]`` after the scale ``(zx, zy cos s)``. DALI's
    pixel centres are at ``i + 0.5``, so Keras' centre is ``(h / 2, w / 2)`` in DALI's
    coordinates: the same matrix, for ``fn.warp_affine``'s default ``inverse_map=True``.
    """
    import nvidia.dali.math as dmath
    from nvidia.dali import fn

    h, w = target_size
    centre = (h / 2.0, w / 2.0)  # Keras' (x, y) centre; the image centre when h == w
    shear = params["shear_deg"] * (math.pi / 180.0)
    return fn.transforms.combine(  # applied in this order: the last one is outermost
        fn.transforms.translation(offset=(-centre[0], -centre[1])),
        fn.transforms.scale(scale=fn.stack(params["zx"], params["zy"] * dmath.cos(shear))),
        fn.transforms.shear(shear=fn.stack(-dmath.sin(shear), shear * 0.0)),
        fn.transforms.translation(offset=fn.stack(params["tx_px"], params["ty_px"])),
        fn.transforms.rotation(angle=params["theta_deg"]),
        fn.transforms.translation(offset=centre),
    )


def augment(images, target_size: tuple[int, int]):
    """The book's augmentation of HWC uint8 ``images`` (CPU or GPU nodes) in DALI.

    Returns:
        ``(out, matrix, params)``: ``out`` CHW float32 in [0, 1] on the images' device, the
        per-sample matrices (CPU) and the draws (:func:`draw_params`).
    """
    from nvidia.dali import fn, types

    params = draw_params(target_size)
    matrix = keras_matrix(params, target_size)
    # No fill_value: out-of-image source coordinates are clamped (Keras' fill_mode="nearest").
    warped = fn.warp_affine(images, matrix=matrix, interp_type=types.INTERP_LINEAR)
    out = fn.crop_mirror_normalize(
        warped,
        dtype=types.FLOAT,
        output_layout="CHW",
        mean=[0.0],
        std=[1.0 / BOOK_AUGMENT["rescale"]],  # rescale 1/255
        mirror=params["flip"],  # after the warp, as Keras flips after apply_affine_transform
    )
    return out, matrix, params


def _resize(images, target_size: tuple[int, int]):
    from nvidia.dali import fn, types

    h, w = target_size
    return fn.resize(
        images, resize_x=float(w), resize_y=float(h), interp_type=types.INTERP_NN, antialias=False
    )


# ----------------------------------------------------------------------------- runners


def _forever(iterator) -> Iterator:
    while True:
        yield from iterator


@contextlib.contextmanager
def end_to_end_batches(settings: Settings) -> Iterator[Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """``readers.file`` -> ``decoders.image`` -> resize -> augment, through DALIGenericIterator.

    Decode is ``"cpu"``, or ``"mixed"`` (nvJPEG) with the other operators on the GPU when
    :func:`on_gpu`.

    Yields:
        an endless iterator of ``(x, y)``: ``x`` ``(B, 3, H, W)`` float32 in [0, 1], ``y``
        ``(B, 1)`` int32 class indices, as DALI hands them out (CPU tensors, or CUDA tensors
        on the GPU path), epoch after epoch.
    """
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    gpu = on_gpu(settings)

    @pipeline_def(
        batch_size=settings.batch_size,
        num_threads=max(1, settings.num_workers),
        device_id=_device_id(settings),
        seed=settings.seed,
    )
    def pipe():
        jpegs, labels = fn.readers.file(
            file_root=str(settings.directory), random_shuffle=True, name="reader"
        )
        images = fn.decoders.image(jpegs, device="mixed" if gpu else "cpu", output_type=types.RGB)
        out, _, _ = augment(_resize(images, settings.target_size), settings.target_size)
        return out, labels

    pipeline = pipe()
    pipeline.build()
    iterator = DALIGenericIterator([pipeline], ["x", "y"], reader_name="reader", auto_reset=True)
    batches = ((out[0]["x"], out[0]["y"]) for out in _forever(iterator))
    try:
        yield batches
    finally:
        batches.close()
        del iterator, pipeline


@contextlib.contextmanager
def augment_only_batches(
    settings: Settings, batch: torch.Tensor
) -> Iterator[Iterator[torch.Tensor]]:
    """The decoded uint8 ``batch`` through ``fn.external_source`` -> augment ->
    DALIGenericIterator.

    The same NHWC batch is fed every step: a numpy array on the CPU path, a CUDA tensor
    (``external_source`` takes PyTorch tensors) on the GPU path.

    Shape:
        ``batch``: ``(B, 3, H, W)`` uint8, CPU -> an endless iterator of ``(B, 3, H, W)``
        float32 in [0, 1], CPU (CUDA on the GPU path).
    """
    from nvidia.dali import fn, pipeline_def
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    gpu = on_gpu(settings)
    nhwc = batch.permute(0, 2, 3, 1).contiguous()
    data = nhwc.to(settings.device) if gpu else np.ascontiguousarray(nhwc.numpy())
    size = (int(batch.shape[2]), int(batch.shape[3]))

    @pipeline_def(
        batch_size=int(batch.shape[0]),
        num_threads=max(1, torch.get_num_threads()),
        device_id=_device_id(settings),
        seed=settings.seed,
    )
    def pipe():
        images = fn.external_source(
            source=lambda: data, batch=True, layout="HWC", device="gpu" if gpu else "cpu"
        )
        out, _, _ = augment(images, size)
        return out

    pipeline = pipe()
    pipeline.build()
    iterator = DALIGenericIterator([pipeline], ["x"])  # no reader: an endless source
    batches = (out[0]["x"] for out in iterator)
    try:
        yield batches
    finally:
        batches.close()
        del iterator, pipeline


@contextlib.contextmanager
def dali_end_to_end(settings: Settings) -> Iterator[Runner]:
    """:func:`end_to_end_batches`, each batch copied to ``settings.device`` (a no-op on the
    GPU path)."""
    device = settings.device
    non_blocking = device.type == "cuda"
    with end_to_end_batches(settings) as batches:

        def step() -> int:
            x, y = next(batches)
            x = x.to(device, non_blocking=non_blocking)
            y.to(device, non_blocking=non_blocking)
            return int(x.shape[0])

        # DALI prefetches 2 batches (prefetch_queue_depth) once built: warm up past them.
        yield Runner(step, warmup_batches=3)


@contextlib.contextmanager
def dali_augment_only(settings: Settings, batch: torch.Tensor) -> Iterator[Runner]:
    """:func:`augment_only_batches` as a runner."""
    with augment_only_batches(settings, batch) as batches:

        def step() -> int:
            return int(next(batches).shape[0])

        yield Runner(step, warmup_batches=3)
