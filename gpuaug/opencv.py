"""The ``"opencv"`` CPU backend (opt-in, approximate): OpenCV's ``warpAffine`` per image.

The same matrices as the reference (`gpuaug.augment.affine_matrix`, flips folded in), warped
by ``cv2.warpAffine`` (``WARP_INVERSE_MAP``: the matrix maps each output pixel to the source
point it reads, as ours does), one call per image on its interleaved (H, W, C) copy (OpenCV
computes each pixel's coordinates once for all its channels: 1.3x faster than three planes),
chunks of the batch on ``torch.get_num_threads()`` threads (OpenCV releases the GIL). When
only a rescale follows (the common case) each image is also cast and scaled into the output
(float32, bfloat16 or float16, rounded once as ``.to(dtype)`` rounds) while it is in cache;
otherwise the reference's own channel shift, brightness and `standardize` run on the float
batch. Never chosen by ``backend="auto"``: ask for it by name.

How far from the reference, and why: OpenCV warps uint8 in and uint8 out, so each warped
pixel is the reference's value rounded to an integer: measured with OpenCV 5.0 on photos and
on uniform noise, at most 0.50 grey levels (0..255) from the float32 reference, 0.25 on
average (the benchmark prints its own measurement per run, ``max diff (grey)``). Later stages
scale that rounding (a brightness factor b: up to 0.5 b). The tests hold it to 0.51 grey
levels on the warp. OpenCV 4 interpolates with 1/32-pixel fixed-point weights: add up to 1/64
of the step between neighbouring pixels along each axis (measured with OpenCV 4.10: 0.72 grey
levels on smooth photos; in theory up to 8.5 at a black/white edge); the tests hold each
version to its bound. Nearest-neighbour warps matched the reference exactly in the
tests (a coordinate exactly at a .5 tie may round the other way).

Supported: ``fill_mode`` "nearest" (``BORDER_REPLICATE``) and "reflect" (``BORDER_REFLECT``,
scipy's half-sample mirror); uint8 CPU images. Anything else ("constant" and "wrap" have no
exact OpenCV border, float inputs, other devices) runs the reference instead, exactly.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from gpuaug.augment import (
    OPENCV_FILL_MODES,
    AugmentParams,
    FitStats,
    _augment,
    affine_matrix,
    apply,
    check_apply_args,
    standardize,
)
from gpuaug.config import AugmentConfig

__all__ = ["apply_opencv", "opencv_available", "supports"]

#: Output dtypes the warp tasks write directly (others: the float batch, then ``.to``).
_IN_TASK_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (owning pid, threads, pool)
_POOL_LOCK = threading.Lock()


def opencv_available() -> bool:
    """True when ``cv2`` imports."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def supports(images: torch.Tensor, config: AugmentConfig) -> bool:
    """True when the OpenCV path runs for this batch and config (else the reference runs)."""
    return (
        images.device.type == "cpu"
        and images.dtype == torch.uint8
        and config.fill_mode in OPENCV_FILL_MODES
        and opencv_available()
    )


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
    """`gpuaug.augment.apply` with the warp done by OpenCV (approximate; see the module doc).

    Args:
        images: The batch, uint8 on the CPU for the OpenCV path (else the reference runs).
        params: One row per image, on the images' device.
        config: Which stages run, the fill mode and the normalisation.
        stats: Fitted featurewise statistics, if the config uses them.
        dtype: Output dtype (a float dtype).
        memory_format: ``torch.contiguous_format`` or ``torch.channels_last`` for the output.

    Returns:
        The augmented batch, within half a grey level of `apply`'s warp (see the module doc).

    Shape:
        images: (B, C, H, W) uint8, CPU -> (B, C, H, W) ``dtype`` in ``memory_format``, CPU.

    Raises:
        ValueError: Not a 4-D batch, params of another length or device, or an unknown
            ``memory_format`` (`gpuaug.augment.check_apply_args`).
        TypeError: Images neither uint8 nor float, params not `AugmentParams`, or a non-float
            ``dtype``.
    """
    memory_format = check_apply_args(images, params, dtype, memory_format)
    if not supports(images, config) or images.shape[0] == 0 or dtype == torch.float64:
        return apply(
            images,
            params,
            config,
            stats=stats,
            dtype=dtype,
            memory_format=memory_format,
            backend="kornia",
        )
    import cv2

    b, c, h, w = images.shape
    src = images.numpy()  # (B, C, H, W), any strides: each task reads its images' planes
    matrices = affine_matrix(params, h, w, include_flips=config.has_flips).numpy()
    matrices = matrices.astype(np.float64)
    flags = (
        cv2.INTER_NEAREST if config.interpolation == "nearest" else cv2.INTER_LINEAR
    ) | cv2.WARP_INVERSE_MAP
    border = cv2.BORDER_REPLICATE if config.fill_mode == "nearest" else cv2.BORDER_REFLECT
    # With nothing but a rescale after the warp (the common case), each task also casts and
    # scales its images into the output while they are in cache: no full-batch pass at all.
    finish_in_task = dtype in _IN_TASK_DTYPES and _only_rescale(config)
    if finish_in_task:
        out = torch.empty((b, c, h, w), dtype=dtype, memory_format=memory_format)
        # strided as ``memory_format`` says; bfloat16 (no numpy dtype) as its 16-bit patterns
        dst = out.view(torch.int16).numpy().view(np.uint16) if dtype == torch.bfloat16 else None
        dst = out.numpy() if dst is None else dst
        scale = np.float32(config.rescale or 1.0)
    else:
        warped = np.empty((b, h, w, c), dtype=np.uint8)  # HWC: what OpenCV writes

    def task(rows: range) -> None:
        hwc = np.empty((h, w, c), dtype=np.uint8)  # the task's warp buffer, reused per image
        for i in rows:
            if finish_in_task:
                _finish_image(_warp_image(src[i], matrices[i], flags, border, hwc), scale, dst[i])
            else:
                _warp_image(src[i], matrices[i], flags, border, warped[i])

    _run_tasks(task, b)
    if finish_in_task:
        return out
    x = torch.from_numpy(warped).permute(0, 3, 1, 2).to(torch.float32)
    x = _augment(x, params, _rest(config))
    x = standardize(x, config, stats)
    return x.to(dtype=dtype, memory_format=memory_format)


def _run_tasks(task: Callable[[range], None], b: int) -> None:
    """``task`` over ``range(b)`` cut into chunks, on ``torch.get_num_threads()`` threads.

    One thread (a DataLoader worker, or a user's ``torch.set_num_threads(1)``): in this thread,
    OpenCV's own threading left as it is. Several: a few chunks per thread (balance), and
    OpenCV's own threads set to 1 meanwhile (a 150 x 150 warp is too small to split, and two
    levels of threads on the same cores ran 20% slower), restored afterwards.
    """
    threads = max(1, torch.get_num_threads())
    if threads == 1 or b == 1:
        task(range(b))
        return
    import cv2

    step = max(1, -(-b // (4 * threads)))
    chunks = [range(i, min(i + step, b)) for i in range(0, b, step)]
    with _POOL_LOCK:
        before = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            list(_pool(threads).map(task, chunks))
        finally:
            cv2.setNumThreads(before)


def _warp_image(
    image: np.ndarray, matrix: np.ndarray, flags: int, border: int, out: np.ndarray
) -> np.ndarray:
    """One uint8 image ``(C, H, W)`` through ``cv2.warpAffine`` into ``out`` ``(H, W, C)``
    (one call for 3 or 4 channels, OpenCV's interleaved layout; the benchmark counts these
    calls)."""
    import cv2

    c, h, w = image.shape
    if c == 1:
        out[..., 0] = cv2.warpAffine(image[0], matrix, (w, h), flags=flags, borderMode=border)
    elif c in (3, 4):
        hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
        got = cv2.warpAffine(hwc, matrix, (w, h), dst=out, flags=flags, borderMode=border)
        if got is not out and not np.shares_memory(got, out):
            out[...] = got
    else:  # plane by plane: OpenCV's 2-channel warp rounds coarser (0.69 grey levels)
        for ch in range(c):
            out[..., ch] = cv2.warpAffine(
                np.ascontiguousarray(image[ch]), matrix, (w, h), flags=flags, borderMode=border
            )
    return out


def _finish_image(warped: np.ndarray, scale: np.float32, out: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, C)`` -> ``warped * scale`` computed in float32 into ``out`` ``(C, H, W)``,
    a view of the output (the benchmark counts these calls).

    channels_last makes ``out`` HWC in memory, written as is; else the uint8 image is
    transposed first (1/4 of the bytes). float16 is rounded by numpy's cast, bfloat16 (``out``
    holds its bit patterns as uint16) by round-to-nearest-even on the float32 bits, as torch
    rounds: the same values as the float32 result ``.to(dtype)``.
    """
    hwc_out = out.transpose(1, 2, 0)
    if hwc_out.flags.c_contiguous:
        src, dst = warped, hwc_out
    else:
        src, dst = np.ascontiguousarray(warped.transpose(2, 0, 1)), out
    if dst.dtype != np.uint16:
        np.multiply(src, scale, out=dst, dtype=np.float32)
        return out
    bits = np.multiply(src, scale, dtype=np.float32).view(np.uint32)  # finite: no NaN case
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
