"""The nvJPEG step of ``decode="gpu"``: a batch's JPEG bytes decoded on the device.

The workers send the batch's JPEG files as one byte buffer with offsets (and each file's EXIF
orientation); this step decodes them in one batched call (:func:`gpuaug.decode.decode_jpeg_batch`,
called from :func:`_decode_call` only) and stacks them, with the images the workers decoded
themselves (non-JPEG files), into one ``(b, C, H, W)`` uint8 batch on the device: one ``stack``
of per-row views, no index tensor to copy to the device and no boolean mask (both would make
the host wait for the GPU).
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
        raw.jpegs(),
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
        raw: the batch from the workers (``raw.jpeg_data`` set).
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
    index_list = indices.numpy().tolist()
    paths = [dataset.samples[index_list[p]][0] for p in raw.jpeg_pos]
    decoded = _decode_call(raw, dataset, device, paths)
    rows: list[torch.Tensor | None] = [None] * len(index_list)
    if images is not None:
        for k, p in enumerate(raw.image_pos):
            rows[p] = images[k]
    bad: list[tuple[int, str]] = []
    for p, out in zip(raw.jpeg_pos, decoded, strict=True):
        if isinstance(out, ImageLoadError):
            bad.append((index_list[p], out.reason or str(out)))
        else:
            rows[p] = out
    keep = [p for p, row in enumerate(rows) if row is not None]
    if not keep:
        c, (h, w) = dataset.channels, dataset.target_size
        return torch.empty((0, c, h, w), dtype=torch.uint8, device=device), indices[:0], bad
    if len(keep) < len(rows):
        indices = torch.from_numpy(indices.numpy()[keep])
    return torch.stack([rows[p] for p in keep]), indices, bad
