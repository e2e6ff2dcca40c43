"""The ``"chunked"`` CPU backend: the reference `apply`, run on cache-sized slices of a batch.

On a CPU the reference path slows down as the batch grows (measured on a 2-core Xeon at
150 x 150: 5,537 img/s at batch 32, 2,676 at batch 256): each of its stages makes a full-batch
intermediate (the float image, the sampling grid, the sampled image), and once those pass a few
tens of MB they no longer stay in the caches and glibc hands them out as fresh ``mmap``
pages, page-faulted and zeroed on every call. `apply_chunked` runs the *same* reference code
on equal slices of at most ``chunk_bytes`` of float image each and writes each slice into one
preallocated output, so the intermediates stay small whatever the batch size.

Measured on a 2-core AMD EPYC at 150 x 150, augmentation-only, interleaved runs: at batch 256
2.0x the whole-batch reference when the machine was quiet (load 1.5), but 0.4x-0.9x when six
other processes were competing for the two cores (its many more parallel regions each wait
for a descheduled thread). Hence opt-in (``backend="chunked"``), not the CPU default.

Exactness: every stage of `apply` is per sample (the matrices, the warp, the channel shift's
per-image range, the per-image statistics), so the result is bitwise that of `apply` on the
whole batch (ZCA whitening, a matrix product, may differ by float rounding). On a GPU the
split buys nothing: `apply_chunked` calls `apply` once for a non-CPU batch.
"""

from __future__ import annotations

import math

import torch

from gpuaug.augment.checks import check_apply_args
from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.params import AugmentParams, FitStats
from gpuaug.augment.reference import apply_reference, work_dtype

__all__ = ["DEFAULT_CHUNK_BYTES", "apply_chunked", "chunk_size"]

#: Float working image per slice: 16 MiB is 62 images of 150 x 150 x 3 in float32 (a batch of
#: 32 stays one call; 256 goes in 5 slices of 51 or 52).
DEFAULT_CHUNK_BYTES = 16 * 2**20


def chunk_size(images: torch.Tensor, dtype: torch.dtype, chunk_bytes: int) -> int:
    """Images per slice: as many as keep the float working copy within ``chunk_bytes`` (>= 1)."""
    per_image = images[0].numel() * work_dtype(dtype).itemsize if images.shape[0] else 1
    return max(1, int(chunk_bytes) // max(per_image, 1))


def apply_chunked(
    images: torch.Tensor,
    params: AugmentParams,
    config: AugmentConfig,
    *,
    stats: FitStats | None = None,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """`gpuaug.augment.module.apply` on slices of the batch that fit the CPU's caches.

    Args:
        images: The batch, read on its 0..255 scale (uint8, or float on that scale).
        params: One row per image, on the images' device.
        config: Which stages run, the fill mode and the normalisation.
        stats: Fitted featurewise statistics, if the config uses them.
        dtype: Output dtype (a float dtype).
        memory_format: ``torch.contiguous_format`` or ``torch.channels_last`` for the output.
        chunk_bytes: Largest float working image per slice, in bytes.

    Returns:
        Bitwise `apply`'s result (see the module docstring), in ``memory_format``.

    Shape:
        images: (B, C, H, W) uint8 or float, CPU -> (B, C, H, W) ``dtype``, CPU. Another device
        runs `apply` on the whole batch.

    Raises:
        ValueError: Not a 4-D batch, params of another length or device, an unknown
            ``memory_format`` or ``chunk_bytes`` < 1.
        TypeError: Images neither uint8 nor float, or a non-float ``dtype``.
    """
    memory_format = check_apply_args(images, params, dtype, memory_format)
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ValueError(f"`chunk_bytes` must be an int >= 1; got {chunk_bytes!r}")
    batch = images.shape[0]
    step = chunk_size(images, dtype, chunk_bytes)
    if images.device.type != "cpu" or batch <= step:
        return apply_reference(images, params, config, stats, dtype, memory_format)
    out = torch.empty(images.shape, dtype=dtype, device=images.device, memory_format=memory_format)
    n = math.ceil(batch / step)  # balanced slices: 256 at <= 62 each -> 51, 51, 51, 51, 52
    bounds = [batch * i // n for i in range(n + 1)]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        rows = slice(start, stop)
        out[rows] = apply_reference(images[rows], params[rows], config, stats, dtype, memory_format)
    return out
