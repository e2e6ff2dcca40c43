"""The ``"opencv"`` CPU backend (opt-in, about 0.01 grey levels off): OpenCV's ``warpAffine``.

The same matrices as the reference (`gpuaug.augment.module.affine_matrix`, flips folded in), warped
by ``cv2.warpAffine`` (``WARP_INVERSE_MAP``: the matrix maps each output pixel to the source
point it reads, as ours does), one call per image: its planes interleaved by ``cv2.merge``
(numpy's transposing copy took 5x longer) and scaled to float32 in one pass, then warped in
float32 (OpenCV computes each pixel's coordinates once for all its channels). Chunks of the
batch run on ``torch.get_num_threads()`` threads (OpenCV releases the GIL). When only a
rescale follows (the common case) the rescale is applied as the image becomes float32 (the
warp is linear: the same values up to float rounding) and the warp writes the output while
the image is in cache (float32 channels_last: in place; planar: ``cv2.split``; bfloat16 and
float16 rounded once, as ``.to(dtype)`` rounds); otherwise the reference's own channel shift,
brightness and `standardize` run on the float batch. Never chosen by ``backend="auto"``: ask
for it by name.

How far from the reference, and why: OpenCV computes the source coordinates and bilinear
weights in another order than the reference's float32 multiply-adds, so a pixel moves by
float32 rounding of its coordinate (a few units in the last place: more px the larger the
coordinate), which a steep neighbourhood turns into thousandths of a grey level. Measured with
OpenCV 5.0 on uniform noise (the worst case: neighbours up to 255 apart), in grey levels
(0..255): 0.0025-0.005 at 150 px, 0.012 at 256, 0.018 at 512, 0.026 at 400 x 600; 7e-5 on
smooth gradients. The tests hold it to `warp_bound` (0.01, or 255 x 4 x 2^-24 x the larger
side when that is more; the benchmark prints its own measurement per run, ``max diff
(grey)``). At those sizes the float32 reference is as far from scipy's float64 (Keras), and
both lose precision alike for source points far outside the image (shifts of thousands of
pixels with "reflect"). OpenCV 4 interpolates with 1/32-pixel fixed-point weights: add up to
1/64 of the step between neighbouring pixels along each axis (about 6 grey levels on noise
with OpenCV 4.10; the tests hold each version to its bound). Two-channel images are warped
plane by plane (OpenCV 5 warps two interleaved channels with the 1/32-pixel weights too).
``interpolation="nearest"`` runs the reference: OpenCV rounds a half-pixel tie to even where
Keras (scipy) rounds it up, and whole zooms, quarter turns and half-pixel shifts put a tie on
most pixels.

Supported: ``fill_mode`` "nearest" (``BORDER_REPLICATE``), "reflect" (``BORDER_REFLECT``,
scipy's half-sample mirror) and "constant" (replicated, then ``cval`` wherever the source
point left the image, decided exactly as the reference decides it: scipy's hard cut at the
edge pixels' centres, which OpenCV's own constant border would blend); uint8 CPU images;
float16 / bfloat16 / float32 output. Anything else ("wrap": scipy's period n - 1 has no OpenCV
border; float inputs, other devices, float64) runs the reference instead, exactly.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import torch

from gpuaug.augment.checks import check_apply_args
from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.params import AugmentParams, FitStats, affine_matrix
from gpuaug.augment.reference import apply_reference, augment_pixels, standardize
from gpuaug.augment.warp import EDGE_TOLERANCE

__all__ = ["apply_opencv", "opencv_available", "supports", "warp_bound", "why_reference"]

#: The fill modes this backend warps with OpenCV (others run the reference).
OPENCV_FILL_MODES = ("nearest", "reflect", "constant")

#: A batch runs on the thread pool only with at least this many pixels (H x W x B) a thread.
_MIN_PIXELS_PER_THREAD = 256 * 1024

#: Output dtypes the warp tasks write directly (others: the float batch, then ``.to``).
_IN_TASK_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (owning pid, threads, pool)
_POOL_LOCK = threading.Lock()
_CV2_THREADS: list[int] = []  # OpenCV's own thread count while a batch holds it at 1


def _after_fork_in_child() -> None:
    """A child forked while another thread ran a batch: a fresh lock (the inherited one may be
    held forever), no pool (its threads did not survive), OpenCV's thread count restored."""
    global _POOL_LOCK, _POOL
    _POOL_LOCK = threading.Lock()
    _POOL = None
    if _CV2_THREADS:
        import cv2

        cv2.setNumThreads(_CV2_THREADS[0])
        _CV2_THREADS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def opencv_available() -> bool:
    """True when ``cv2`` imports."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def supports(images: torch.Tensor, config: AugmentConfig) -> bool:
    """True when the OpenCV path runs for this batch and config (else the reference runs)."""
    return images.dtype == torch.uint8 and why_reference(images.device, None, config) is None


def warp_bound(height: int, width: int) -> float:
    """The documented bound, in grey levels (0..255), on the difference between this backend's
    bilinear warp and the reference's with OpenCV 5 (see the module doc): 0.01, or
    ``255 * 4 * 2**-24 * max(height, width)`` (four float32 units of the larger coordinate at
    the steepest possible neighbourhood) when that is more."""
    return max(0.01, 255 * 4 * 2.0**-24 * max(height, width))


def why_reference(
    device: torch.device | str, dtype: torch.dtype | None, config: AugmentConfig | None
) -> str | None:
    """Why ``backend="opencv"`` runs the reference for this device, output dtype and config
    (None: OpenCV warps them, given uint8 images); `gpuaug.augment.module.describe_backend` says
    it."""
    if torch.device(device).type != "cpu":
        return f"OpenCV warps CPU tensors, not {torch.device(device).type} ones"
    if dtype == torch.float64:
        return "float64 output is computed by the reference"
    if config is not None and config.fill_mode not in OPENCV_FILL_MODES:
        return f"fill_mode={config.fill_mode!r} has no OpenCV border"
    if config is not None and config.interpolation == "nearest":
        return "OpenCV rounds interpolation='nearest' ties to even, Keras up"
    if not opencv_available():
        return 'cv2 is not installed (pip install "gpuaug[opencv]")'
    return None


def _pool(threads: int) -> ThreadPoolExecutor:
    """The process's warp threads (``threads`` of them); a forked child makes its own (the
    parent's threads do not survive a fork), as does a new thread count. Call with
    ``_POOL_LOCK`` held."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] != threads:
        if _POOL is not None and _POOL[0] == os.getpid():
            _POOL[2].shutdown(wait=False)
        _POOL = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="gpuaug-cv2"))
    return _POOL[2]


def _rest(config: AugmentConfig) -> AugmentConfig:
    """The config with the warp and the flips off (they are done by OpenCV)."""
    return dataclasses.replace(
        config,
        rotation_range=0,
        width_shift_range=0.0,
        height_shift_range=0.0,
        shear_range=0.0,
        zoom_range=(1.0, 1.0),
        horizontal_flip=False,
        vertical_flip=False,
    )


def apply_opencv(
    images: torch.Tensor,
    params: AugmentParams,
    config: AugmentConfig,
    *,
    stats: FitStats | None = None,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """`gpuaug.augment.module.apply` with the warp done by OpenCV (approximate; see the module doc).

    Args:
        images: The batch, uint8 on the CPU for the OpenCV path (else the reference runs).
        params: One row per image, on the images' device.
        config: Which stages run, the fill mode and the normalisation.
        stats: Fitted featurewise statistics, if the config uses them.
        dtype: Output dtype (a float dtype).
        memory_format: ``torch.contiguous_format`` or ``torch.channels_last`` for the output.

    Returns:
        The augmented batch, within 0.01 grey levels of `apply`'s with OpenCV 5 (see the
        module doc).

    Shape:
        images: (B, C, H, W) uint8, CPU -> (B, C, H, W) ``dtype`` in ``memory_format``, CPU.

    Raises:
        ValueError: Not a 4-D batch, params of another length or device, or an unknown
            ``memory_format`` (`gpuaug.augment.module.check_apply_args`).
        TypeError: Images neither uint8 nor float, params not `AugmentParams`, or a non-float
            ``dtype``.
    """
    memory_format = check_apply_args(images, params, dtype, memory_format)
    if not supports(images, config) or images.shape[0] == 0 or dtype == torch.float64:
        return apply_reference(images, params, config, stats, dtype, memory_format)
    import cv2

    b, c, h, w = images.shape
    src = images.numpy()  # (B, C, H, W), any strides: each task reads its own images
    matrices32 = affine_matrix(params, h, w, include_flips=config.has_flips).numpy()
    matrices = matrices32.astype(np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # nearest runs the reference
    # "constant": replicate, then cval where the source point left the image (scipy's hard cut
    # at the edge pixels' centres; OpenCV's own constant border would blend with cval)
    border = cv2.BORDER_REFLECT if config.fill_mode == "reflect" else cv2.BORDER_REPLICATE
    constant = config.fill_mode == "constant"
    # With nothing but a rescale after the warp (the common case), each image is scaled as it
    # becomes float32 (the warp is linear: the same values up to float rounding) and warped
    # into the output (channels_last float32: in place) while it is in cache.
    finish_in_task = dtype in _IN_TASK_DTYPES and _only_rescale(config)
    scale = np.float32(config.rescale or 1.0) if finish_in_task else np.float32(1.0)
    if finish_in_task:
        out = torch.empty((b, c, h, w), dtype=dtype, memory_format=memory_format)
        # strided as ``memory_format`` says; bfloat16 (no numpy dtype) as its 16-bit patterns
        dst = out.view(torch.int16).numpy().view(np.uint16) if dtype == torch.bfloat16 else None
        dst_array: np.ndarray = out.numpy() if dst is None else dst
        in_place = dtype == torch.float32 and memory_format == torch.channels_last
    else:
        warped = np.empty((b, h, w, c), dtype=np.float32)  # HWC: what OpenCV writes

    fill = np.float32(config.cval) * scale  # as the reference: cval, then the rescale

    def task(rows: range) -> None:
        staging = _Staging(h, w, c)  # the task's buffers, reused for each of its images
        for i in rows:
            if not finish_in_task:
                image = warped[i]
            elif in_place:
                image = dst_array[i].transpose(1, 2, 0)
            else:
                image = staging.warped
            _warp_image(src[i], matrices[i], flags, border, scale, image, staging)
            if constant:
                image[_outside(matrices32[i], h, w)] = fill
            if finish_in_task and not in_place:
                _finish_image(image, dst_array[i])

    _run_tasks(task, b, h * w)
    if finish_in_task:
        return out
    # contiguous for the rest (a user's preprocessing_function may .view() it), as the reference
    x = torch.from_numpy(warped).permute(0, 3, 1, 2).contiguous()
    x = augment_pixels(x, params, _rest(config))
    x = standardize(x, config, stats)
    return x.to(dtype=dtype, memory_format=memory_format)


def _outside(matrix: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(H, W)`` bool: the output pixels whose source point is outside the image for
    ``fill_mode="constant"``, decided exactly as the reference decides it (`gpuaug.augment.warp`:
    the
    same float32 multiply-adds in the same order, the same ``EDGE_TOLERANCE``)."""
    outside = np.zeros((h, w), dtype=bool)
    xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    for axis, size in ((0, w), (1, h)):
        a, b, c = (np.float32(v) for v in matrix[axis])
        coord = (a * xs)[None, :] + (b * ys + c)[:, None]
        eps = EDGE_TOLERANCE * max(size, 1)
        outside |= ~((coord >= np.float32(-eps)) & (coord <= np.float32(size - 1 + eps)))
    return outside


class _Staging:
    """One task's buffers: the image as uint8 and float32 (H, W, C), and its warp."""

    def __init__(self, h: int, w: int, c: int) -> None:
        self.uint8 = np.empty((h, w, c), dtype=np.uint8)
        self.float32 = np.empty((h, w, c), dtype=np.float32)
        self.warped = np.empty((h, w, c), dtype=np.float32)


def _run_tasks(task: Callable[[range], None], b: int, pixels: int) -> None:
    """``task`` over ``range(b)`` cut into chunks, on ``torch.get_num_threads()`` threads.

    One thread (a DataLoader worker, or a user's ``torch.set_num_threads(1)``), or a batch of
    under `_MIN_PIXELS_PER_THREAD` pixels a thread: in this thread, OpenCV's own threading left
    as it is (small images are mostly Python calls, which threads only queue on the GIL: 32
    images of 64 x 64 ran at 19,600 images/s on one thread, 14,500 on two). Else a few chunks
    per thread (balance), and
    OpenCV's own threads set to 1 meanwhile (a 150 x 150 warp is too small to split, and two
    levels of threads on the same cores ran 20% slower), restored once every chunk has ended
    (also when one raises: its error is raised then).
    """
    threads = max(1, torch.get_num_threads())
    if threads == 1 or b == 1 or b * pixels < threads * _MIN_PIXELS_PER_THREAD:
        task(range(b))
        return
    import cv2

    step = max(1, -(-b // (4 * threads)))
    chunks = [range(i, min(i + step, b)) for i in range(0, b, step)]
    with _POOL_LOCK:
        _CV2_THREADS.append(cv2.getNumThreads())
        cv2.setNumThreads(1)
        try:
            futures = [_pool(threads).submit(task, chunk) for chunk in chunks]
            wait(futures)
            for future in futures:
                future.result()  # the first chunk's error, if any
        finally:
            cv2.setNumThreads(_CV2_THREADS.pop())


def _warp_image(
    image: np.ndarray,
    matrix: np.ndarray,
    flags: int,
    border: int,
    scale: np.float32,
    out: np.ndarray,
    staging: _Staging,
) -> np.ndarray:
    """One uint8 image ``(C, H, W)`` as float32 ``image * scale`` through ``cv2.warpAffine``
    into ``out`` ``(H, W, C)`` float32: one call for 1, 3 or 4 channels (OpenCV's interleaved
    layout; OpenCV warps 2 channels with 1/32-pixel weights), else one per plane. The
    benchmark counts these calls."""
    import cv2

    c, h, w = image.shape
    if c not in (1, 3, 4):
        for ch in range(c):
            plane = np.multiply(image[ch], scale, dtype=np.float32)
            out[..., ch] = cv2.warpAffine(plane, matrix, (w, h), flags=flags, borderMode=border)
        return out
    hwc = image.transpose(1, 2, 0)
    if not hwc.flags.c_contiguous:  # planar (the usual batch): OpenCV interleaves them
        planes = [
            image[ch] if image[ch].flags.c_contiguous else image[ch].copy() for ch in range(c)
        ]
        hwc = cv2.merge(planes, staging.uint8) if c > 1 else planes[0][..., None]
    floats = np.multiply(hwc, scale, out=staging.float32, dtype=np.float32)
    if c == 1:  # OpenCV takes and gives a single channel as (H, W)
        out[..., 0] = cv2.warpAffine(floats[..., 0], matrix, (w, h), flags=flags, borderMode=border)
        return out
    got = cv2.warpAffine(floats, matrix, (w, h), dst=out, flags=flags, borderMode=border)
    if got is not out and not np.shares_memory(got, out):
        out[...] = got
    return out


def _finish_image(warped: np.ndarray, out: np.ndarray) -> np.ndarray:
    """A warped float32 ``(H, W, C)`` image into ``out`` ``(C, H, W)``, a view of the output
    (the benchmark counts these calls).

    float32 planar: OpenCV's split writes the planes (2x numpy's strided copy). float16 is
    rounded by numpy's cast, bfloat16 (``out`` holds its bit patterns as uint16) by
    round-to-nearest-even on the float32 bits, as torch rounds: the same values as the
    float32 result ``.to(dtype)``.
    """
    hwc_out = out.transpose(1, 2, 0)
    src, dst = (warped, hwc_out) if hwc_out.flags.c_contiguous else (warped.transpose(2, 0, 1), out)
    if dst.dtype == np.float32 and dst is out and out.shape[0] > 1:
        import cv2

        cv2.split(warped, list(out))
        return out
    if dst.dtype != np.uint16:
        with np.errstate(over="ignore"):  # float16 overflows to inf silently, as torch's cast
            np.copyto(dst, src, casting="same_kind")
        return out
    bits = np.array(src, dtype=np.float32, copy=True).view(np.uint32)  # finite: no NaN case
    bits += np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    np.right_shift(bits, np.uint32(16), out=dst, casting="unsafe")
    return out


def _only_rescale(config: AugmentConfig) -> bool:
    """True when nothing but ``rescale`` follows the warp."""
    return not (
        config.channel_shift_range
        or config.brightness_range is not None
        or config.preprocessing_function is not None
        or config.samplewise_center
        or config.samplewise_std_normalization
        or config.featurewise_center
        or config.featurewise_std_normalization
        or config.zca_whitening
    )
