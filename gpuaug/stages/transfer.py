"""The transfer stage: host batches to the device, one batch ahead, on a side CUDA stream.

:func:`to_device` turns a `HostBatch` into a `DeviceBatch` (copy, nvJPEG decode for
``decode="gpu"``, ``on_error``); :class:`Prefetcher` runs it for batch k+1 on its own CUDA
stream (created once per loader) while batch k is in use, and makes the consumer's stream wait
on the copy (timm's PrefetchLoader, without its known bugs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch

from gpuaug.stages.batch import DeviceBatch, HostBatch, settle_failures
from gpuaug.stages.jpeg_decode import decode_jpegs

__all__ = ["Prefetcher", "to_device"]


def to_device(
    raw: HostBatch,
    dataset: Any,
    failures: list[tuple[int, str]],
    decode_device: torch.device,
    device: torch.device | None = None,
) -> DeviceBatch | None:
    """A source's batch on ``device``: copied, its JPEGs decoded, ``on_error`` applied.

    Args:
        raw: the host batch.
        dataset: the data set (``on_error``, ``samples``; see `gpuaug.stages`).
        failures: the epoch's list of skipped samples (extended with this batch's).
        decode_device: where JPEGs are decoded (the loader's device).
        device: where the batch goes (default ``decode_device``).

    Returns:
        The batch, or ``None`` when every sample failed (``on_error="skip"``).

    Raises:
        ImageLoadError: a failed sample under ``on_error="raise"``.
    """
    device = decode_device if device is None else device
    indices = raw.indices
    bad = list(raw.failures)
    images = raw.images
    if images is not None:
        where = decode_device if raw.jpegs else device
        images = images.to(where, non_blocking=True)
    if raw.jpegs:
        images, indices, jpeg_bad = decode_jpegs(raw, images, dataset, decode_device)
        images = images.to(device)
        bad += jpeg_bad
    settle_failures(bad, dataset, failures)
    if images is None or len(indices) == 0:
        return None
    return DeviceBatch(images, indices)


class _Deferred(NamedTuple):
    error: Exception


class Prefetcher:
    """Runs a load function one batch ahead, on a side stream when ``device`` is CUDA.

    Args:
        device: the loader's device.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def run(
        self,
        raw_batches: Iterator[HostBatch],
        load: Callable[[HostBatch], DeviceBatch | None],
    ) -> Iterator[DeviceBatch | None]:
        """Device batches; batch k+1 is loaded (side stream) before batch k is handed out."""
        stream = self.stream

        def on_stream(raw: HostBatch) -> DeviceBatch | None:
            if stream is None:
                return load(raw)
            with torch.cuda.stream(stream):
                return load(raw)

        end = object()

        def fetch() -> Any:
            # An error while fetching or copying batch k+1 is raised at step k+1, after
            # batch k has been handed out, not one step early.
            try:
                raw = next(raw_batches, end)
                return raw if raw is end else on_stream(raw)
            except Exception as exc:
                return _Deferred(exc)

        pending = fetch()
        while pending is not end:
            if isinstance(pending, _Deferred):
                raise pending.error
            if stream is not None and pending is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_stream(stream)
                pending.images.record_stream(current)
            ready = pending
            pending = fetch()
            yield ready
