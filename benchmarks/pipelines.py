"""The pipelines under test: one context manager per pipeline and figure.

Every pipeline applies the augmentation of the Cats vs Dogs example in Chollet's *Deep
Learning with Python* (:data:`BOOK_AUGMENT`) to the same folder of images, resized to the same
``target_size`` with nearest-neighbour interpolation (Keras' ``load_img`` default), and hands
out float32 batches scaled to ``[0, 1]``.

Each context manager yields a :class:`Runner`: ``runner.step()`` produces one augmented batch
and returns how many images it holds; ``runner.warmup_batches`` batches are run untimed first.
Two figures:

- *end to end* (``*_end_to_end``): from JPEG files to an augmented float batch on the training
  device (``.to(device)`` included for the CPU pipelines);
- *augmentation only* (``*_augment_only``): from an already decoded uint8 batch that lies where
  the pipeline augments (host memory for the CPU peers, the device for gpuaug) to the augmented
  float batch, in the same place.

How each peer expresses the settings (see :data:`PIPELINES` ``notes`` and the README):

- ``keras-idg``: the real ``ImageDataGenerator(**BOOK_AUGMENT)``; the reference.
- ``torchvision-cpu``: ``transforms.v2.RandomAffine`` + ``RandomHorizontalFlip`` per sample.
  Keras zooms x and y independently with ``z`` uniform in ``[0.8, 1.2]`` (a sampling-grid
  factor: content scale ``1/z``); RandomAffine has one isotropic content scale, drawn uniform
  in ``[1/1.2, 1/0.8]`` = ``[0.833, 1.25]``, the same range. Keras' ``shear_range=0.2`` is a
  shear angle in degrees (``np.deg2rad`` in ``apply_affine_transform``): RandomAffine
  ``shear=0.2`` (degrees, along x) matches it. Shifts: ``translate=(0.2, 0.2)`` (fractions of
  width and height), as Keras. RandomAffine cannot fill "nearest" (constant fill only): it
  fills with 0. Bilinear interpolation, as Keras' ``order=1``.
- ``albumentations-cpu`` (optional): ``A.Affine`` expresses everything: independent x/y
  content scale ``[1/1.2, 1/0.8]``, ``translate_percent`` 0.2, rotate 40, shear 0.2 degrees
  along x, ``border_mode=cv2.BORDER_REPLICATE`` (= Keras "nearest"), bilinear; ``p=1``.
- ``kornia-randomaffine`` (augmentation-only): kornia's own ``AugmentationSequential(
  RandomAffine, RandomHorizontalFlip)``: independent x/y content scale, ``padding_mode="border"``
  (= Keras "nearest"), on a float batch scaled to [0, 1] on the device.
- ``kornia-compiled`` (augmentation-only): the same module through ``torch.compile``
  (:func:`compile_warmup`: compiled before the timed runs, its seconds reported apart in
  ``Runner.measured``). Measured at the headline batch sizes only.
- ``dali`` (optional, ``nvidia-dali``): NVIDIA DALI's own pipeline, Keras' draws and matrix
  (:mod:`benchmarks.dali`, whose docstring lists where it differs); CPU operators, GPU ones
  when the device is CUDA.
- ``kornia-stages`` / ``gpuaug-kornia-stages`` (augmentation-only, a pair): the same ops in
  both, :data:`KORNIA_STAGES` (ColorJiggle, RandomGaussianBlur, RandomErasing, as the
  ``chollet_cats_dogs_kornia`` preset) after the book's affine + flip: kornia's
  ``AugmentationSequential`` alone (``RandomAffine`` as ``kornia-randomaffine``, then the
  stages; unseeded, on the global RNG), against ``GPUAugment(book, kornia=...)`` (gpuaug's
  Keras stage, then the same kornia modules seeded per batch in a forked RNG).
- ``gpuaug``: ``AugmentConfig.from_keras(**BOOK_AUGMENT)``, Keras' own sampling, batched.
  Each gpuaug backend and output variant is also measured alone (:func:`
  gpuaug_backend_augment_only`, the backends table of :mod:`benchmarks.bench`).
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "BOOK_AUGMENT",
    "VARIANTS",
    "backend_unavailable",
    "gpuaug_backend_augment_only",
    "gpuaug_backend_step",
    "PIPELINES",
    "Pipeline",
    "Runner",
    "Settings",
    "decoded_batch",
]

# The augmentation of the Cats vs Dogs example (Chollet, Deep Learning with Python, 5.2.5).
BOOK_AUGMENT: dict = {
    "rotation_range": 40,
    "width_shift_range": 0.2,
    "height_shift_range": 0.2,
    "shear_range": 0.2,
    "zoom_range": 0.2,
    "horizontal_flip": True,
    "fill_mode": "nearest",
    "rescale": 1.0 / 255,
}

# Content-scale range of a Keras zoom_range of 0.2: Keras samples the grid with z in
# [0.8, 1.2], so the content is scaled by 1/z in [1/1.2, 1/0.8].
CONTENT_SCALE = (1.0 / (1.0 + BOOK_AUGMENT["zoom_range"]), 1.0 / (1.0 - BOOK_AUGMENT["zoom_range"]))


@dataclass(frozen=True)
class Settings:
    """What one measurement runs with (shared by every pipeline).

    Attributes:
        directory: image folder, one subfolder per class.
        target_size: ``(height, width)`` every image is resized to before augmentation.
        batch_size: images per batch.
        num_workers: DataLoader worker processes (torch pipelines; Keras has none).
        device: the training device the batches end on.
        seed: seed for shuffling and augmentation draws.
    """

    directory: Path
    target_size: tuple[int, int] = (150, 150)
    batch_size: int = 32
    num_workers: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0


@dataclass
class Runner:
    """A pipeline ready to run: ``step()`` makes one batch and returns its image count.

    Loaders with ``W`` worker processes hand out batches in rounds of ``W`` (each worker
    builds whole batches, all at once): timing a window that starts mid-round counts batches
    that were built before the clock started. So a loader's runner warms up for at least one
    round and is timed over whole rounds (``batches_per_round = W``).

    Attributes:
        step: produce one augmented batch on its destination; returns the number of images.
        warmup_batches: batches to run untimed first (worker start-up, caches, kernels).
        batches_per_round: timed batches are a multiple of this.
        measured: numbers the pipeline measured while it was built, outside the timed runs
            (``compile_seconds`` of a compiled peer, ...); recorded beside its timings.
    """

    step: Callable[[], int]
    warmup_batches: int = 1
    batches_per_round: int = 1
    measured: dict = field(default_factory=dict)


PipelineFactory = Callable[..., contextlib.AbstractContextManager[Runner]]


@dataclass(frozen=True)
class Pipeline:
    """One pipeline under test.

    Attributes:
        name: short id used in the JSON (``keras-idg``, ``torchvision-cpu``, ...).
        augments_on: ``"cpu"`` or ``"device"``: where the augmentation itself runs.
        notes: how the pipeline expresses :data:`BOOK_AUGMENT` and where it cannot.
        end_to_end: ``factory(settings)`` for the end-to-end figure, or None (an
            augmentation-only peer).
        augment_only: ``factory(settings, batch)`` for the augmentation-only figure, or None.
        uses_workers: whether ``num_workers`` applies.
        unavailable: ``fn(settings) -> reason or None``: why it cannot run here.
        scanned: measured in the scaling scans too; False: the headline table only (a
            compiled peer compiles afresh for each measurement).
    """

    name: str
    augments_on: str
    notes: str
    end_to_end: PipelineFactory | None
    augment_only: PipelineFactory | None
    uses_workers: bool
    unavailable: Callable[[Settings], str | None] = lambda settings: None
    scanned: bool = True


# ----------------------------------------------------------------------------- helpers


def decoded_batch(directory: Path, batch_size: int, target_size: tuple[int, int]) -> torch.Tensor:
    """The first ``batch_size`` images of the folder, decoded and resized as Keras loads them.

    Images are read in sorted order (repeated when the folder holds fewer), converted to RGB
    and resized with PIL nearest-neighbour, as ``keras.utils.load_img`` does.

    Shape:
        -> ``(batch_size, 3, H, W)`` uint8, CPU, ``(H, W) = target_size``.
    """
    paths = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        raise ValueError(f"`directory` holds no JPEG files: {str(directory)!r}")
    height, width = target_size
    images = []
    for i in range(batch_size):
        with Image.open(paths[i % len(paths)]) as img:
            img = img.convert("RGB").resize((width, height), Image.NEAREST)
            images.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
    return torch.stack(images).contiguous()


def _forever(loader) -> Iterator:
    """Iterate a loader epoch after epoch."""
    while True:
        yield from loader


def _shutdown(loader) -> None:
    """Stop the persistent worker processes of a torch DataLoader now, not at garbage collection."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def _torch_loader(dataset, settings: Settings, worker_init_fn=None) -> torch.utils.data.DataLoader:
    workers = settings.num_workers
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=settings.device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=worker_init_fn,
        generator=torch.Generator().manual_seed(settings.seed),
    )


@contextlib.contextmanager
def _loader_runner(loader, device: torch.device) -> Iterator[Runner]:
    """Runner over a torch DataLoader of ``(x uint8/float, y)``: copies each batch to ``device``."""
    batches = _forever(loader)
    rounds = max(1, loader.num_workers)
    non_blocking = device.type == "cuda"

    def step() -> int:
        x, y = next(batches)
        x = x.to(device, non_blocking=non_blocking)
        y = y.to(device, non_blocking=non_blocking)
        return int(x.shape[0])

    try:
        yield Runner(step, warmup_batches=rounds, batches_per_round=rounds)
    finally:
        batches.close()
        _shutdown(loader)


# ----------------------------------------------------------------------------- keras-idg


def _keras_generator():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    return ImageDataGenerator(**BOOK_AUGMENT)


def _keras_unavailable(settings: Settings) -> str | None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        from keras.src.legacy.preprocessing.image import ImageDataGenerator  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure means "skip, with the reason"
        return (
            f"keras not importable ({type(err).__name__}: {err}); "
            'pip install "gpuaug[bench]" to include it'
        )
    return None


@contextlib.contextmanager
def keras_idg_end_to_end(settings: Settings) -> Iterator[Runner]:
    """Keras 3 ``ImageDataGenerator.flow_from_directory`` (PIL decode, scipy warp, one process).

    The float32 NHWC numpy batch is wrapped by ``torch.from_numpy``, copied to the device and
    permuted (a view) to NCHW, as a PyTorch user of this generator would.
    """
    generator = _keras_generator()
    with contextlib.redirect_stdout(io.StringIO()):  # "Found N images belonging to 2 classes."
        iterator = generator.flow_from_directory(
            str(settings.directory),
            target_size=settings.target_size,
            batch_size=settings.batch_size,
            class_mode="binary",
            shuffle=True,
            seed=settings.seed,
            interpolation="nearest",
        )
    device = settings.device
    non_blocking = device.type == "cuda"

    def step() -> int:
        x, y = next(iterator)
        xt = torch.from_numpy(x).to(device, non_blocking=non_blocking).permute(0, 3, 1, 2)
        torch.from_numpy(y).to(device, non_blocking=non_blocking)
        return int(xt.shape[0])

    yield Runner(step)


@contextlib.contextmanager
def keras_idg_augment_only(settings: Settings, batch: torch.Tensor) -> Iterator[Runner]:
    """Keras' per-image ``get_random_transform`` + ``apply_transform`` + ``standardize``.

    Exactly the loop of Keras' ``DirectoryIterator._get_batches_of_transformed_samples``, on a
    float32 NHWC batch prepared beforehand (Keras holds decoded images as float32).
    """
    generator = _keras_generator()
    x = batch.permute(0, 2, 3, 1).numpy().astype(np.float32)
    out = np.empty_like(x)

    def step() -> int:
        for i in range(len(x)):
            params = generator.get_random_transform(x[i].shape)
            # apply_transform returns a new array here (the rotation is never exactly 0), so
            # standardize's in-place rescale does not touch the source batch.
            out[i] = generator.standardize(generator.apply_transform(x[i], params))
        return len(x)

    yield Runner(step)


# ----------------------------------------------------------------------------- torchvision


def _torchvision_augment(to_float: bool = True):
    from torchvision.transforms import v2

    steps = [
        v2.RandomAffine(
            degrees=BOOK_AUGMENT["rotation_range"],
            translate=(BOOK_AUGMENT["width_shift_range"], BOOK_AUGMENT["height_shift_range"]),
            scale=CONTENT_SCALE,
            shear=BOOK_AUGMENT["shear_range"],
            interpolation=v2.InterpolationMode.BILINEAR,
            fill=0,  # v2 has no "nearest" fill mode
        ),
        v2.RandomHorizontalFlip(p=0.5),
    ]
    if to_float:
        steps.append(v2.ToDtype(torch.float32, scale=True))  # rescale 1/255
    return v2.Compose(steps)


@contextlib.contextmanager
def torchvision_cpu_end_to_end(settings: Settings) -> Iterator[Runner]:
    """``ImageFolder`` + v2 ``Resize`` (PIL nearest) + per-sample augmentation in workers."""
    from torchvision import datasets
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.Resize(settings.target_size, interpolation=v2.InterpolationMode.NEAREST),
            v2.PILToTensor(),
            _torchvision_augment(),
        ]
    )
    dataset = datasets.ImageFolder(str(settings.directory), transform=transform)
    with _loader_runner(_torch_loader(dataset, settings), settings.device) as runner:
        yield runner


@contextlib.contextmanager
def torchvision_cpu_augment_only(settings: Settings, batch: torch.Tensor) -> Iterator[Runner]:
    """The v2 transform applied per sample (its parameters are drawn per call) and stacked."""
    transform = _torchvision_augment()
    images = list(batch.unbind(0))

    def step() -> int:
        out = torch.stack([transform(image) for image in images])
        return int(out.shape[0])

    yield Runner(step)


# ----------------------------------------------------------------------------- albumentations


def _albumentations_unavailable(settings: Settings) -> str | None:
    try:
        import albumentations  # noqa: F401
        import cv2  # noqa: F401
    except Exception as err:  # noqa: BLE001 - optional peer: skip with the reason
        return (
            f"albumentations not importable ({type(err).__name__}: {err}); "
            'pip install "gpuaug[bench]" to include it'
        )
    return None


def _albumentations_augment():
    import albumentations as A
    import cv2

    lo, hi = CONTENT_SCALE
    shift_x, shift_y = BOOK_AUGMENT["width_shift_range"], BOOK_AUGMENT["height_shift_range"]
    shear = BOOK_AUGMENT["shear_range"]
    return A.Compose(
        [
            A.Affine(
                scale={"x": (lo, hi), "y": (lo, hi)},
                translate_percent={"x": (-shift_x, shift_x), "y": (-shift_y, shift_y)},
                rotate=(-BOOK_AUGMENT["rotation_range"], BOOK_AUGMENT["rotation_range"]),
                shear={"x": (-shear, shear), "y": (0.0, 0.0)},
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_REPLICATE,  # Keras fill_mode="nearest"
                p=1.0,
            ),
            A.HorizontalFlip(p=0.5),
            A.ToFloat(max_value=255.0),  # rescale 1/255
        ]
    )


class _AlbumentationsSample:
    """Dataset transform: HWC uint8 numpy -> augmented CHW float32 tensor (picklable)."""

    def __init__(self) -> None:
        self.augment = _albumentations_augment()

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.augment(image=image)["image"]).permute(2, 0, 1)


class _PILNearestLoader:
    """Dataset loader: path -> RGB HWC uint8 numpy resized with PIL nearest (picklable)."""

    def __init__(self, target_size: tuple[int, int]) -> None:
        self.size = (target_size[1], target_size[0])

    def __call__(self, path: str) -> np.ndarray:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB").resize(self.size, Image.NEAREST))


def _cv2_single_thread(worker_id: int) -> None:
    import cv2

    cv2.setNumThreads(0)  # albumentations' advice for DataLoader workers


@contextlib.contextmanager
def albumentations_cpu_end_to_end(settings: Settings) -> Iterator[Runner]:
    """``ImageFolder`` with a PIL loader + an albumentations ``Compose`` per sample in workers."""
    from torchvision import datasets

    dataset = datasets.ImageFolder(
        str(settings.directory),
        loader=_PILNearestLoader(settings.target_size),
        transform=_AlbumentationsSample(),
    )
    loader = _torch_loader(dataset, settings, worker_init_fn=_cv2_single_thread)
    with _loader_runner(loader, settings.device) as runner:
        yield runner


@contextlib.contextmanager
def albumentations_cpu_augment_only(settings: Settings, batch: torch.Tensor) -> Iterator[Runner]:
    """The albumentations ``Compose`` per sample on HWC uint8 numpy images, then stacked."""
    augment = _albumentations_augment()
    images = list(batch.permute(0, 2, 3, 1).contiguous().numpy())

    def step() -> int:
        out = np.stack([augment(image=image)["image"] for image in images])
        return len(torch.from_numpy(out))

    yield Runner(step)


# ----------------------------------------------------------------------------- gpuaug


def gpuaug_config():
    """:data:`BOOK_AUGMENT` as a gpuaug ``AugmentConfig``."""
    from gpuaug import AugmentConfig

    return AugmentConfig.from_keras(**BOOK_AUGMENT)


def _gpuaug_unavailable(settings: Settings) -> str | None:
    try:
        import gpuaug  # noqa: F401
    except Exception as err:  # noqa: BLE001 - report and skip
        return f"gpuaug not importable: {type(err).__name__}: {err}"
    return None


def _gpu_decode_unavailable(settings: Settings) -> str | None:
    if settings.device.type != "cuda":
        return "decode='gpu' needs a CUDA device"
    return _gpuaug_unavailable(settings)


@contextlib.contextmanager
def _gpuaug_end_to_end(
    settings: Settings, cache: str | None, decode: str, backend: str = "auto"
) -> Iterator[Runner]:
    import gpuaug

    loader = gpuaug.flow_from_directory(
        str(settings.directory),
        augment=gpuaug.GPUAugment(gpuaug_config(), backend=backend),
        target_size=settings.target_size,
        batch_size=settings.batch_size,
        class_mode="binary",
        shuffle=True,
        seed=settings.seed,
        interpolation="nearest",
        device=settings.device,
        num_workers=settings.num_workers,
        cache=cache,
        decode=decode,
        progress=False,
    )
    batches = _forever(loader)

    def step() -> int:
        x, _ = next(batches)
        return int(x.shape[0])

    # A cache is filled during the first epoch: warm up for a whole epoch so that the timed
    # batches read from it (the steady state of training from the second epoch on).
    rounds = max(1, settings.num_workers)
    warmup = max(len(loader), rounds) if cache is not None else rounds
    try:
        yield Runner(step, warmup_batches=warmup, batches_per_round=rounds)
    finally:
        batches.close()
        close = getattr(loader, "close", None)
        if callable(close):
            close()


def gpuaug_end_to_end(settings: Settings) -> contextlib.AbstractContextManager[Runner]:
    """``gpuaug.flow_from_directory`` with no cache: decode in workers, augment on the device."""
    return _gpuaug_end_to_end(settings, cache=None, decode="cpu")


def gpuaug_cache_device_end_to_end(
    settings: Settings,
) -> contextlib.AbstractContextManager[Runner]:
    """``cache='device'``: decoded uint8 images kept on the device after the first epoch."""
    return _gpuaug_end_to_end(settings, cache="device", decode="cpu")


def gpuaug_decode_gpu_end_to_end(settings: Settings) -> contextlib.AbstractContextManager[Runner]:
    """``decode='gpu'``: JPEG bytes from the workers, decoded on the GPU (nvjpeg)."""
    return _gpuaug_end_to_end(settings, cache=None, decode="gpu")


def gpuaug_opencv_end_to_end(settings: Settings) -> contextlib.AbstractContextManager[Runner]:
    """As ``gpuaug_end_to_end`` with the opt-in ``backend="opencv"`` (CPU, ~0.01 grey)."""
    return _gpuaug_end_to_end(settings, cache=None, decode="cpu", backend="opencv")


def _gpuaug_opencv_unavailable(settings: Settings) -> str | None:
    return backend_unavailable("opencv", settings.device) or _gpuaug_unavailable(settings)


@contextlib.contextmanager
def gpuaug_augment_only(
    settings: Settings, batch: torch.Tensor, backend: str = "auto"
) -> Iterator[Runner]:
    """``GPUAugment`` on a uint8 batch already on the device: one batched warp."""
    import gpuaug

    augment = gpuaug.GPUAugment(gpuaug_config(), backend=backend).to(settings.device)
    x = batch.to(settings.device)
    generator = torch.Generator(device=settings.device).manual_seed(settings.seed)

    def step() -> int:
        with torch.no_grad():
            out = augment(x, generator=generator)
        return int(out.shape[0])

    yield Runner(step)


def gpuaug_opencv_augment_only(
    settings: Settings, batch: torch.Tensor
) -> contextlib.AbstractContextManager[Runner]:
    """``GPUAugment(backend="opencv")`` on a uint8 CPU batch."""
    return gpuaug_augment_only(settings, batch, backend="opencv")


# ----------------------------------------------------------------------------- kornia


def _kornia_unavailable(settings: Settings) -> str | None:
    try:
        import kornia.augmentation  # noqa: F401
    except Exception as err:  # noqa: BLE001 - report and skip
        return f"kornia.augmentation not importable: {type(err).__name__}: {err}"
    return None


def _kornia_augment():
    import kornia.augmentation as K

    lo, hi = CONTENT_SCALE
    shift_x, shift_y = BOOK_AUGMENT["width_shift_range"], BOOK_AUGMENT["height_shift_range"]
    shear = BOOK_AUGMENT["shear_range"]
    return K.AugmentationSequential(
        K.RandomAffine(
            degrees=BOOK_AUGMENT["rotation_range"],
            translate=(shift_x, shift_y),
            scale=(lo, hi, lo, hi),  # x and y content scales drawn independently
            shear=(-shear, shear),  # degrees, along x
            resample="bilinear",
            padding_mode="border",  # Keras fill_mode="nearest"
            p=1.0,
        ),
        K.RandomHorizontalFlip(p=0.5),
    )


@contextlib.contextmanager
def kornia_augment_only(settings: Settings, batch: torch.Tensor) -> Iterator[Runner]:
    """kornia's own ``AugmentationSequential(RandomAffine, RandomHorizontalFlip)`` on the device.

    kornia augments float images: the uint8 batch is cast and scaled to [0, 1] first (inside
    the timed step, as gpuaug does it inside its own).
    """
    augment = _kornia_augment().to(settings.device)
    x = batch.to(settings.device)

    def step() -> int:
        with torch.no_grad():
            out = augment(x.float().div_(255.0))
        return int(out.shape[0])

    yield Runner(step)


def _kornia_compiled_unavailable(settings: Settings) -> str | None:
    reason = _kornia_unavailable(settings)
    if reason or settings.device.type != "cpu":
        return reason
    try:  # Inductor's CPU code is C++, built by the compiler it finds here
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as err:  # noqa: BLE001 - report and skip
        return f"torch.compile on a CPU needs a C++ compiler: {type(err).__name__}: {err}"
    return None


#: Calls to try while a compiled peer still compiles (a new graph on the last call).
COMPILE_MAX_CALLS = 10


def compile_warmup(call: Callable[[], object], max_calls: int = COMPILE_MAX_CALLS) -> dict:
    """Call a ``torch.compile``-d function until two calls in a row compile nothing new.

    Dynamo is reset first and Inductor's on-disk caches (FX graph, AOTAutograd) are off, so
    the seconds are those of a first run on a machine. Every call that compiled a graph counts
    whole (capture + Inductor + the C++ build + the call itself).

    Returns:
        ``{"compile_seconds", "compile_graphs", "compile_calls"}``: seconds of the calls that
        compiled, the graphs compiled, the calls made.

    Raises:
        RuntimeError: the compilation failed; the message gives the reason.
    """
    from torch._dynamo.utils import counters
    from torch._functorch import config as functorch_config
    from torch._inductor import config as inductor_config

    torch._dynamo.reset()
    seconds, calls, quiet = 0.0, 0, 0
    start_graphs = graphs = counters["stats"]["unique_graphs"]
    with (
        inductor_config.patch(fx_graph_cache=False),
        functorch_config.patch(enable_autograd_cache=False),
    ):
        while quiet < 2 and calls < max_calls:
            start = time.perf_counter()
            try:
                call()
            except Exception as err:  # noqa: BLE001 - say why instead of a traceback
                first = (str(err).strip().splitlines() or [""])[0][:300]
                raise RuntimeError(f"torch.compile failed: {type(err).__name__}: {first}") from err
            elapsed = time.perf_counter() - start
            calls += 1
            now = counters["stats"]["unique_graphs"]
            if now > graphs:
                seconds, graphs, quiet = seconds + elapsed, now, 0
            else:
                quiet += 1
    return {
        "compile_seconds": round(seconds, 3),
        "compile_graphs": int(graphs - start_graphs),
        "compile_calls": calls,
    }


@contextlib.contextmanager
def kornia_compiled_augment_only(settings: Settings, batch: torch.Tensor) -> Iterator[Runner]:
    """``torch.compile(kornia-randomaffine's AugmentationSequential)`` on the device.

    The same module and float [0, 1] input as :func:`kornia_augment_only`; compiled before the
    runner is handed out (:func:`compile_warmup`: the compile seconds go to
    ``Runner.measured``, not into the timings), then warmed up like the eager peer.
    """
    call, measured = kornia_compiled_step(settings, batch)

    def step() -> int:
        return int(call().shape[0])

    yield Runner(step, warmup_batches=2, measured=measured)


def kornia_compiled_step(
    settings: Settings, batch: torch.Tensor
) -> tuple[Callable[[], torch.Tensor], dict]:
    """The compiled kornia module on ``batch``, compiled (:func:`compile_warmup`).

    Returns:
        ``(call, measured)``: ``call()`` augments the batch again, ``(B, 3, H, W)`` float32 in
        [0, 1] on the device; ``measured`` the compile seconds, graphs and calls.

    Raises:
        RuntimeError: ``torch.compile`` failed; the message gives the reason.
    """
    augment = _kornia_augment().to(settings.device)
    compiled = torch.compile(augment)
    x = batch.to(settings.device)

    def call() -> torch.Tensor:
        with torch.no_grad():
            return compiled(x.float().div_(255.0))

    return call, compile_warmup(call)


def kornia_stages() -> list:
    """:data:`KORNIA_STAGES` as fresh kornia modules."""
    import kornia.augmentation as K

    return [getattr(K, spec["name"])(**_tuples(spec)) for spec in KORNIA_STAGES]


def _tuples(spec: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "name"}


#: The kornia ops of the ``kornia-stages`` pair (the ``chollet_cats_dogs_kornia`` preset's).
KORNIA_STAGES: tuple[dict, ...] = (
    {"name": "ColorJiggle", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02,
     "p": 0.8},
    {"name": "RandomGaussianBlur", "kernel_size": [5, 5], "sigma": [0.1, 1.5], "p": 0.3},
    {"name": "RandomErasing", "scale": [0.02, 0.15], "p": 0.3},
)  # fmt: skip


@contextlib.contextmanager
def kornia_stages_augment_only(settings: Settings, batch: torch.Tensor) -> Iterator[Runner]:
    """kornia's ``AugmentationSequential`` alone: RandomAffine + flip + :data:`KORNIA_STAGES`,
    on the uint8 batch cast and scaled to [0, 1] inside the step."""
    import kornia.augmentation as K

    affine = _kornia_augment()
    augment = K.AugmentationSequential(*affine.children(), *kornia_stages()).to(settings.device)
    x = batch.to(settings.device)

    def step() -> int:
        with torch.no_grad():
            out = augment(x.float().div_(255.0))
        return int(out.shape[0])

    yield Runner(step)


@contextlib.contextmanager
def gpuaug_kornia_stages_augment_only(settings: Settings, batch: torch.Tensor) -> Iterator[Runner]:
    """``GPUAugment(book, kornia=KORNIA_STAGES)`` on the uint8 batch on the device: the Keras
    stage writes float [0, 1], the kornia modules run seeded (a CPU generator, as the loader)."""
    import gpuaug

    augment = gpuaug.GPUAugment(gpuaug_config(), kornia=kornia_stages()).to(settings.device)
    x = batch.to(settings.device)
    generator = torch.Generator().manual_seed(settings.seed)

    def step() -> int:
        with torch.no_grad():
            out = augment(x, generator=generator)
        return int(out.shape[0])

    yield Runner(step)


def _gpuaug_kornia_unavailable(settings: Settings) -> str | None:
    return _gpuaug_unavailable(settings) or _kornia_unavailable(settings)


# ----------------------------------------------------------------------------- gpuaug backends

#: Output variants measured per backend: name -> (dtype, memory_format).
VARIANTS: dict[str, tuple[torch.dtype, torch.memory_format]] = {
    "float32": (torch.float32, torch.contiguous_format),
    "bfloat16": (torch.bfloat16, torch.contiguous_format),
    "float32-channels_last": (torch.float32, torch.channels_last),
    "bfloat16-channels_last": (torch.bfloat16, torch.channels_last),
}


def backend_unavailable(backend: str, device: torch.device) -> str | None:
    """Why a gpuaug backend cannot run on ``device`` (None: it can)."""
    try:
        from gpuaug.augment.module import BACKENDS, resolve_backend
    except ImportError as err:
        return f"this gpuaug has no backend choice ({err})"
    if backend not in BACKENDS:
        return f"this gpuaug has no {backend!r} backend"
    if backend in ("chunked", "opencv") and device.type != "cpu":
        return f"the {backend} backend is a CPU path"
    if backend == "opencv":
        from gpuaug.augment.backends.opencv import opencv_available

        if not opencv_available():
            return 'cv2 not importable (pip install "gpuaug[opencv]")'
    try:
        resolve_backend(backend, device, torch.float32)
    except (ImportError, ValueError) as err:
        return str(err)
    return None


def gpuaug_backend_step(
    settings: Settings,
    batch: torch.Tensor,
    backend: str,
    dtype: torch.dtype,
    memory_format: torch.memory_format,
) -> tuple[Callable[[], torch.Tensor], torch.Tensor]:
    """One augmentation step of ``GPUAugment(backend=...)`` and its device batch."""
    import gpuaug

    augment = gpuaug.GPUAugment(
        gpuaug_config(), dtype=dtype, memory_format=memory_format, backend=backend
    ).to(settings.device)
    x = batch.to(settings.device)
    generator = torch.Generator(device=settings.device).manual_seed(settings.seed)

    def step() -> torch.Tensor:
        with torch.no_grad():
            return augment(x, generator=generator)

    return step, x


@contextlib.contextmanager
def gpuaug_backend_augment_only(
    settings: Settings,
    batch: torch.Tensor,
    backend: str,
    dtype: torch.dtype,
    memory_format: torch.memory_format,
) -> Iterator[Runner]:
    """``GPUAugment(config, dtype, memory_format, backend)`` on a uint8 batch on the device."""
    step, _ = gpuaug_backend_step(settings, batch, backend, dtype, memory_format)

    def run() -> int:
        return int(step().shape[0])

    # compile: the first call compiles (and the batch dim is dynamic: one graph per variant)
    yield Runner(run, warmup_batches=2)


# ----------------------------------------------------------------------------- DALI


def _dali_unavailable(settings: Settings) -> str | None:
    from . import dali

    return dali.dali_unavailable(settings)


def dali_end_to_end(settings: Settings) -> contextlib.AbstractContextManager[Runner]:
    """NVIDIA DALI from the files (:func:`benchmarks.dali.dali_end_to_end`)."""
    from . import dali

    return dali.dali_end_to_end(settings)


def dali_augment_only(
    settings: Settings, batch: torch.Tensor
) -> contextlib.AbstractContextManager[Runner]:
    """NVIDIA DALI from the decoded batch (:func:`benchmarks.dali.dali_augment_only`)."""
    from . import dali

    return dali.dali_augment_only(settings, batch)


# ----------------------------------------------------------------------------- registry

_TV_NOTES = (
    "transforms.v2 RandomAffine(degrees=40, translate=(0.2, 0.2), scale=(1/1.2, 1/0.8), "
    "shear=0.2, bilinear) + RandomHorizontalFlip + ToDtype(scale=True), per sample in "
    "DataLoader workers. Differs from Keras: one isotropic content scale (Keras zooms x and y "
    "independently; same range [0.833, 1.25]), scale drawn uniform in 1/z rather than z, "
    "constant fill 0 (v2 cannot fill 'nearest')."
)
_ALB_NOTES = (
    "albumentations Affine(scale x,y in [1/1.2, 1/0.8] independently, translate_percent 0.2, "
    "rotate 40, shear x 0.2 deg, BORDER_REPLICATE, bilinear, p=1) + HorizontalFlip + "
    "ToFloat(255), per sample in DataLoader workers. Differs from Keras only in drawing the "
    "scale uniform in 1/z rather than z."
)

PIPELINES: dict[str, Pipeline] = {
    p.name: p
    for p in (
        Pipeline(
            name="keras-idg",
            augments_on="cpu",
            notes="Keras 3 ImageDataGenerator(**BOOK_AUGMENT).flow_from_directory: PIL decode, "
            "scipy.ndimage warp per image, one process (no workers). The reference.",
            end_to_end=keras_idg_end_to_end,
            augment_only=keras_idg_augment_only,
            uses_workers=False,
            unavailable=_keras_unavailable,
        ),
        Pipeline(
            name="torchvision-cpu",
            augments_on="cpu",
            notes=_TV_NOTES,
            end_to_end=torchvision_cpu_end_to_end,
            augment_only=torchvision_cpu_augment_only,
            uses_workers=True,
        ),
        Pipeline(
            name="albumentations-cpu",
            augments_on="cpu",
            notes=_ALB_NOTES,
            end_to_end=albumentations_cpu_end_to_end,
            augment_only=albumentations_cpu_augment_only,
            uses_workers=True,
            unavailable=_albumentations_unavailable,
        ),
        Pipeline(
            name="kornia-randomaffine",
            augments_on="device",
            notes="kornia.augmentation.AugmentationSequential(RandomAffine(degrees=40, "
            "translate=(0.2, 0.2), scale x,y in [1/1.2, 1/0.8], shear x 0.2 deg, bilinear, "
            "padding border, p=1), RandomHorizontalFlip) on a float batch scaled to [0, 1], on "
            "the device. Augmentation-only (kornia has no loader). Differs from Keras: scale "
            "drawn uniform in 1/z rather than z.",
            end_to_end=None,
            augment_only=kornia_augment_only,
            uses_workers=False,
            unavailable=_kornia_unavailable,
        ),
        Pipeline(
            name="kornia-compiled",
            augments_on="device",
            notes="torch.compile(kornia-randomaffine's AugmentationSequential) with the default "
            "Inductor backend (C++ on a CPU, Triton on CUDA), the same float [0, 1] input. "
            "Compiled before timing: dynamo reset, Inductor's on-disk caches off, called until "
            "two calls in a row compile nothing new; those seconds are reported apart "
            "(compile_seconds), not in images/s. Augmentation-only, headline batch sizes only "
            "(each measurement compiles afresh). Differs from Keras as kornia-randomaffine.",
            end_to_end=None,
            augment_only=kornia_compiled_augment_only,
            uses_workers=False,
            unavailable=_kornia_compiled_unavailable,
            scanned=False,
        ),
        Pipeline(
            name="dali",
            augments_on="device",
            notes="NVIDIA DALI: fn.readers.file over the same folder -> fn.decoders.image "
            "('cpu'; 'mixed' on CUDA) -> fn.resize (nearest) -> per-sample Keras matrices "
            "(fn.transforms.translation/scale/shear/rotation + combine from fn.random draws of "
            "Keras' ranges) -> fn.warp_affine (bilinear, clamped border = 'nearest') -> "
            "fn.crop_mirror_normalize(mirror=coin, std 255, CHW float32) -> "
            "DALIGenericIterator; augmentation-only from the decoded batch via "
            "fn.external_source. num_workers threads end to end (at least 1), torch's thread "
            "count augmentation-only. Differs from Keras: the warp writes uint8 (within about "
            "1 grey level of Keras' float warp), DALI's nearest resize and decoder, DALI's RNG. "
            "On CUDA the resize, warp and normalisation run on the GPU.",
            end_to_end=dali_end_to_end,
            augment_only=dali_augment_only,
            uses_workers=True,
            unavailable=_dali_unavailable,
        ),
        Pipeline(
            name="kornia-stages",
            augments_on="device",
            notes="kornia.augmentation.AugmentationSequential alone: kornia-randomaffine's "
            "RandomAffine + RandomHorizontalFlip, then ColorJiggle(0.2, 0.2, 0.2, 0.02, p=0.8), "
            "RandomGaussianBlur((5, 5), (0.1, 1.5), p=0.3), RandomErasing(scale=(0.02, 0.15), "
            "p=0.3) on a float batch scaled to [0, 1], on the device; global RNG, unseeded. "
            "Augmentation-only; the pair of gpuaug-kornia-stages.",
            end_to_end=None,
            augment_only=kornia_stages_augment_only,
            uses_workers=False,
            unavailable=_kornia_unavailable,
        ),
        Pipeline(
            name="gpuaug-kornia-stages",
            augments_on="device",
            notes="GPUAugment(AugmentConfig.from_keras(**BOOK_AUGMENT), kornia=[the same three "
            "kornia modules as kornia-stages]): gpuaug's Keras stage (backend='auto') writes "
            "float32 [0, 1], then the kornia modules, seeded per batch inside "
            "torch.random.fork_rng, then rescale. Augmentation-only.",
            end_to_end=None,
            augment_only=gpuaug_kornia_stages_augment_only,
            uses_workers=False,
            unavailable=_gpuaug_kornia_unavailable,
        ),
        Pipeline(
            name="gpuaug",
            augments_on="device",
            notes="gpuaug.flow_from_directory(augment=AugmentConfig.from_keras(**BOOK_AUGMENT), "
            "cache=None): uint8 decode + resize in DataLoader workers, augmentation on the device "
            "with backend='auto' (the fused Triton kernel on CUDA, the torch reference on a "
            "CPU). Keras' sampling, all settings exact.",
            end_to_end=gpuaug_end_to_end,
            augment_only=gpuaug_augment_only,
            uses_workers=True,
            unavailable=_gpuaug_unavailable,
        ),
        Pipeline(
            name="gpuaug-opencv",
            augments_on="device",
            notes="As gpuaug, with the opt-in backend='opencv' (CPU only): cv2.warpAffine per "
            "image on a thread pool, float32 warp, within about 0.01 grey levels of the exact path "
            "(the backends table prints its measured difference).",
            end_to_end=gpuaug_opencv_end_to_end,
            augment_only=gpuaug_opencv_augment_only,
            uses_workers=True,
            unavailable=_gpuaug_opencv_unavailable,
        ),
        Pipeline(
            name="gpuaug-cache-device",
            augments_on="device",
            notes="As gpuaug, with cache='device': decoded uint8 images stay on the device after "
            "the first epoch (warm-up = one full epoch). Augmentation-only is gpuaug's.",
            end_to_end=gpuaug_cache_device_end_to_end,
            augment_only=None,
            uses_workers=True,
            unavailable=_gpuaug_unavailable,
        ),
        Pipeline(
            name="gpuaug-decode-gpu",
            augments_on="device",
            notes="As gpuaug, with decode='gpu': JPEG bytes read in workers, decoded on the GPU.",
            end_to_end=gpuaug_decode_gpu_end_to_end,
            augment_only=None,
            uses_workers=True,
            unavailable=_gpu_decode_unavailable,
        ),
    )
}
