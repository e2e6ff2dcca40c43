"""The nvJPEG step of ``decode="gpu"``: a batch's JPEG bytes decoded on the device.

The workers send the batch's JPEG files as one byte buffer with offsets (and each file's EXIF
orientation; ``raw.jpegs`` gives views of it); this step decodes them
(:func:`gpuaug.data.nvjpeg.decode_jpegs`: pixel-budget chunks, batched resize, called from
:func:`_decode_call` only) and places them, with the images the workers decoded themselves
(non-JPEG files), in one ``(b, C, H, W)`` uint8 batch on the device.

During an epoch the decode runs ahead: :func:`decode_ahead` submits each batch's JPEGs to the
loader's :class:`gpuaug.data.nvjpeg.JpegDecoder` (a background thread and CUDA stream) as soon as
the workers deliver it, and :func:`decode_jpegs` only collects the result, so nvJPEG works on
batch k+2 while batch k trains and batch k+1 is handed out. Replay and cache building decode
synchronously, with the same function, so they give the same pixels.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import torch

from gpuaug.data import nvjpeg as jpeg
from gpuaug.data.pixel_layout import empty_batch, take
from gpuaug.device import host_to_device
from gpuaug.loader.stages.batch import HostBatch
from gpuaug.loader.stages.ragged import unpack

__all__ = ["decode_ahead", "decode_jpegs", "decode_jpegs_ragged"]


def _paths(raw: HostBatch, dataset: Any) -> list[str]:
    index = raw.indices.numpy()  # host bookkeeping in numpy: no tensor scalar reads
    return [dataset.samples[int(index[p])][0] for p in raw.jpeg_pos]


def decode_ahead(
    raw_batches: Iterator[HostBatch], decoder: jpeg.JpegDecoder, dataset: Any
) -> Iterator[HostBatch]:
    """The batches of ``raw_batches``, each with its JPEGs already submitted to ``decoder``.

    Reads one batch ahead of its consumer (the transfer stage, itself one batch ahead of
    training), so a batch's decode has a whole step to run before it is needed. An error from
    ``raw_batches`` is raised after the batches read before it, as without read-ahead.
    """
    queue: deque[HostBatch] = deque()
    iterator = iter(raw_batches)
    try:
        while True:
            try:
                raw = next(iterator)
            except StopIteration:
                break
            except Exception:  # e.g. a dead worker: deliver what was read, then raise, in order
                while queue:
                    yield queue.popleft()
                raise
            if raw.jpegs:
                raw.decode_job = decoder.submit(raw.jpegs, raw.orient, _paths(raw, dataset))
            queue.append(raw)
            if len(queue) > 1:
                yield queue.popleft()
        while queue:
            yield queue.popleft()
    finally:
        # Left early (break, a peek, an error): stop the source now (its workers), and drop
        # the decodes read ahead, waiting for a running one, so that no nvJPEG work is in
        # flight when the next iteration forks its worker processes.
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        for raw in queue:
            if raw.decode_job is not None:
                raw.decode_job.cancel()


def _decode_call(
    raw: HostBatch, dataset: Any, device: torch.device, paths: list[str], layout: str
) -> jpeg.DecodedJpegs:
    """The one call site of the decoder: every JPEG of the batch, upright and resized."""
    if raw.decode_job is not None:  # submitted by decode_ahead; waits on this stream only
        return raw.decode_job.result()
    return jpeg.decode_jpegs(
        raw.jpegs,
        device,
        dataset.target_size,
        dataset.color_mode,
        dataset.interpolation,
        orientations=raw.orient,
        paths=paths,
        max_side=getattr(dataset, "max_side", None),
        layout=layout,
    )


def _rows(positions: list[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Row numbers as an index on ``device`` without a host sync (pinned, non_blocking)."""
    return host_to_device(torch.as_tensor(positions, dtype=torch.int64), device)


def decode_jpegs(
    raw: HostBatch,
    images: torch.Tensor | None,
    dataset: Any,
    device: torch.device,
    layout: str = "planar",
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """Decodes the JPEGs of ``raw`` on ``device`` and merges them with the decoded ``images``.

    Args:
        raw: the batch from the workers (``raw.jpegs`` non-empty).
        images: ``raw.images`` already on ``device`` (or ``None``).
        dataset: the data set (``samples``, ``target_size``, ``channels``, ``color_mode``,
            ``interpolation``).
        device: where to decode.
        layout: the batch's pixel layout (`gpuaug.data.pixel_layout`), as the workers' images
            have it; a batch submitted ahead (``raw.decode_job``) was decoded in its decoder's.

    Returns:
        ``(images, indices, failures)``: the batch without the JPEGs that failed, their indices
        (CPU int64) and ``[(index, reason), ...]`` for those that failed.

    Shape:
        -> images ``(b', C, H, W)`` uint8 on ``device``; indices ``(b',)`` int64 CPU.
    """
    indices = raw.indices
    decoded = _decode_call(raw, dataset, device, _paths(raw, dataset), layout)
    n = len(indices)
    if images is None and raw.jpeg_pos == list(range(n)):
        full = decoded.images  # an all-JPEG batch: the decoder's output is the batch
    else:
        c, (h, w) = dataset.channels, dataset.target_size
        full = empty_batch(layout, (n, c, h, w), device=device)
        if images is not None:
            full.index_copy_(0, _rows(raw.image_pos, device), images)
        full.index_copy_(0, _rows(raw.jpeg_pos, device), decoded.images)
    index = indices.numpy()
    bad = [(int(index[raw.jpeg_pos[i]]), err.reason or str(err)) for i, err in decoded.failed]
    if bad:
        dropped = {raw.jpeg_pos[i] for i, _ in decoded.failed}
        keep = [p for p in range(n) if p not in dropped]
        full = take(full, _rows(keep, device))
        indices = torch.from_numpy(index[keep])
    return full, indices, bad


def decode_jpegs_ragged(
    raw: HostBatch, packed: torch.Tensor | None, dataset: Any, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """:func:`decode_jpegs` for a ragged batch (``target_size=None``).

    The decoder packs its JPEGs into one buffer; the workers' own images (``packed``, already
    on ``device``) are appended to it and both tables merged into one in batch order, so one
    `gpuaug.loader.stages.ragged.unpack` makes the padded batch (failed rows left out).

    Returns:
        ``(images, sizes, indices, failures)``: ``(b', C, Hmax, Wmax)`` uint8 on ``device``,
        ``(b', 2)`` int64 CPU, ``(b',)`` int64 CPU and ``[(index, reason), ...]``.
    """
    indices = raw.indices
    decoded = _decode_call(raw, dataset, device, _paths(raw, dataset), "planar")
    assert decoded.table is not None  # a decoder without target_size packs its images
    n = len(indices)
    table = torch.zeros((n, 3), dtype=torch.int64)
    table[raw.jpeg_pos] = decoded.table
    data = decoded.images
    if packed is not None and raw.packed_table is not None:
        own = raw.packed_table.clone()
        own[:, 0] += data.numel()
        table[raw.image_pos] = own
        data = torch.cat([data, packed])
    index = indices.numpy()
    bad = [(int(index[raw.jpeg_pos[i]]), err.reason or str(err)) for i, err in decoded.failed]
    if bad:
        dropped = {raw.jpeg_pos[i] for i, _ in decoded.failed}
        keep = [p for p in range(n) if p not in dropped]
        table = table[keep]
        indices = torch.from_numpy(index[keep])
    images, sizes = unpack(data, table, dataset.channels)
    return images, sizes, indices, bad
