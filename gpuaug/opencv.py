"""The ``"opencv"`` CPU backend (opt-in, approximate): OpenCV's ``warpAffine`` per image.

The same matrices as the reference (`gpuaug.augment.affine_matrix`, flips folded in), warped
by ``cv2.warpAffine`` on the uint8 channel planes (``WARP_INVERSE_MAP``: the matrix maps each
output pixel to the source point it reads, as ours does), one image per task on a thread pool
(OpenCV releases the GIL). When only a rescale follows (the common case) the task also writes
its float32 planes into the output; otherwise the reference's own channel shift, brightness and
`standardize` run on the float batch. Never chosen by ``backend="auto"``: ask for it by name.

How far from the reference, and why: OpenCV warps uint8 in and uint8 out, so each warped
pixel is the reference's value rounded to an integer: measured with OpenCV 5.0 on photos and
on uniform noise, at most 0.50 grey levels (0..255) from the float32 reference, 0.25 on
average (the benchmark prints its own measurement per run, ``max diff (grey)``). Later stages
scale that rounding (a brightness factor b: up to 0.5 b). The tests hold it to 0.51 grey
levels on the warp. Older OpenCV builds use coarser fixed-point weights (1/32 px); expect up
to about a grey level there. Nearest-neighbour warps matched the reference exactly in the
tests (a coordinate exactly at a .5 tie may round the other way).

Supported: ``fill_mode`` "nearest" (``BORDER_REPLICATE``) and "reflect" (``BORDER_REFLECT``,
scipy's half-sample mirror); uint8 CPU images. Anything else ("constant" and "wrap" have no
exact OpenCV border, float inputs, other devices) runs the reference instead, exactly.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from gpuaug.augment import (
    AugmentParams,
    FitStats,
    _augment,
    _check_batch,
    affine_matrix,
    apply,
    standardize,
)
from gpuaug.config import AugmentConfig

__all__ = ["apply_opencv", "opencv_available", "supports"]

_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (owning pid, pool)
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
        and config.fill_mode in ("nearest", "reflect")
        and opencv_available()
    )


def _pool() -> ThreadPoolExecutor:
    """The process's warp threads, one per usable core; a forked child makes its own (the
    parent's threads do not survive a fork)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            workers = max(1, len(os.sched_getaffinity(0)))
            _POOL = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="gpuaug-cv2"))
        return _POOL[1]


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
        ValueError: Not a 4-D batch, params of another length or an unknown
            ``memory_format``.
        TypeError: Images neither uint8 nor float, or params not `AugmentParams`.
    """
    _check_batch(images)
    if not isinstance(params, AugmentParams):
        raise TypeError(f"`params` must be AugmentParams; got {type(params).__name__}")
    if len(params) != images.shape[0]:
        raise ValueError(
            f"`params` has {len(params)} rows but the batch has {images.shape[0]} images"
        )
    if memory_format not in (torch.contiguous_format, torch.channels_last):
        raise ValueError(
            "`memory_format` must be torch.contiguous_format or torch.channels_last; "
            f"got {memory_format}"
        )
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
    src = images.contiguous().numpy()  # (B, C, H, W): contiguous H x W channel planes
    matrices = affine_matrix(params, h, w, include_flips=config.has_flips).numpy()
    matrices = matrices.astype(np.float64)
    flags = (
        cv2.INTER_NEAREST if config.interpolation == "nearest" else cv2.INTER_LINEAR
    ) | cv2.WARP_INVERSE_MAP
    border = cv2.BORDER_REPLICATE if config.fill_mode == "nearest" else cv2.BORDER_REFLECT
    # With nothing but a rescale after the warp (the common case), each task also casts and
    # scales its planes into the output: one pass per image, no full-batch pass at all.
    finish_in_task = dtype == torch.float32 and _only_rescale(config)
    if finish_in_task:
        out = torch.empty((b, c, h, w), dtype=torch.float32, memory_format=memory_format)
        dst = out.numpy()  # strided as ``memory_format`` says
        scale = np.float32(config.rescale or 1.0)
    else:
        dst = np.empty((b, c, h, w), dtype=np.uint8)

    def task(i: int) -> None:
        for ch in range(c):
            if finish_in_task:
                plane = _warp_plane(src[i, ch], matrices[i], (w, h), flags, border)
                _finish_plane(plane, scale, dst[i, ch])
            else:
                _warp_plane(src[i, ch], matrices[i], (w, h), flags, border, out=dst[i, ch])

    list(_pool().map(task, range(b)))
    if finish_in_task:
        return out
    x = torch.from_numpy(dst).to(torch.float32)
    x = _augment(x, params, _rest(config))
    x = standardize(x, config, stats)
    return x.to(dtype=dtype, memory_format=memory_format)


def _warp_plane(
    plane: np.ndarray,
    matrix: np.ndarray,
    size: tuple[int, int],
    flags: int,
    border: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """One uint8 channel plane through ``cv2.warpAffine`` (the benchmark counts these calls)."""
    import cv2

    warped = cv2.warpAffine(plane, matrix, size, flags=flags, borderMode=border)
    if out is None:
        return warped
    out[...] = warped
    return out


def _finish_plane(plane: np.ndarray, scale: np.float32, out: np.ndarray) -> np.ndarray:
    """uint8 plane -> float32 ``plane * scale`` into ``out`` (the benchmark counts these)."""
    return np.multiply(plane, scale, out=out, dtype=np.float32)


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
