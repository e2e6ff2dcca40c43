"""The nvJPEG step of ``decode="gpu"``: a batch's JPEG bytes decoded on the device.

The workers send each JPEG's bytes (and its EXIF orientation); this step decodes them in one
batched call (:func:`gpuaug.decode.decode_jpeg_batch`, called from :func:`_decode_call` only)
and places them, with the images the workers decoded themselves (non-JPEG files), in one
``(b, C, H, W)`` uint8 batch on the device.
"""

from __future__ import annotations

from typing import Any

import torch

from gpuaug.decode import decode_jpeg_batch
from gpuaug.image import ImageLoadError
from gpuaug.stages.batch import HostBatch

__all__ = ["decode_jpegs"]


def _decode_call(
    raw: HostBatch, dataset: Any, device: torch.device, paths: list[str]
) -> list[torch.Tensor | ImageLoadError]:
    """The one call site of the decoder: every JPEG of the batch, upright and resized."""
    return decode_jpeg_batch(
        raw.jpegs,
        device,
        dataset.target_size,
        dataset.color_mode,
        dataset.interpolation,
        orientations=raw.orient,
        paths=paths,
        on_error="return",
    )


def decode_jpegs(
    raw: HostBatch, images: torch.Tensor | None, dataset: Any, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """Decodes the JPEGs of ``raw`` on ``device`` and merges them with the decoded ``images``.

    Args:
        raw: the batch from the workers (``raw.jpegs`` non-empty).
        images: ``raw.images`` already on ``device`` (or ``None``).
        dataset: the data set (``samples``, ``target_size``, ``channels``, ``color_mode``,
            ``interpolation``).
        device: where to decode.

    Returns:
        ``(images, indices, failures)``: the batch without the JPEGs that failed, their indices
        (CPU int64) and ``[(index, reason), ...]`` for those that failed.

    Shape:
        -> images ``(b', C, H, W)`` uint8 on ``device``; indices ``(b',)`` int64 CPU.
    """
    indices = raw.indices
    paths = [dataset.samples[int(indices[p])][0] for p in raw.jpeg_pos]
    decoded = _decode_call(raw, dataset, device, paths)
    c, (h, w) = dataset.channels, dataset.target_size
    full = torch.empty((len(indices), c, h, w), dtype=torch.uint8, device=device)
    if images is not None:
        full[raw.image_pos.to(device)] = images
    keep = torch.ones(len(indices), dtype=torch.bool)
    bad: list[tuple[int, str]] = []
    for p, out in zip(raw.jpeg_pos, decoded, strict=True):
        if isinstance(out, ImageLoadError):
            bad.append((int(indices[p]), out.reason or str(out)))
            keep[p] = False
        else:
            full[p] = out
    if not bool(keep.all()):
        full, indices = full[keep.to(device)], indices[keep]
    return full, indices, bad
