"""The transfer stage: host batches to the device, one batch ahead, on a side CUDA stream.

:func:`to_device` turns a `HostBatch` into a `DeviceBatch` (asynchronous copies from pinned
memory, the nvJPEG decode for ``decode="gpu"``); :class:`Prefetcher` runs it
for batch k+1 on its own CUDA stream (created once per loader) while batch k is in use, and
makes the consumer's stream wait on the copy (timm's PrefetchLoader, without its known bugs).
:class:`PinnedRing` holds the few reusable pinned buffers a host or disk cache gathers into.

On the CPU (``device="cpu"``) nothing is copied: the host batch is the device batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, cast

import torch

from gpuaug.data.pixel_layout import move
from gpuaug.device import host_to_device
from gpuaug.loader.stages.batch import DeviceBatch, HostBatch
from gpuaug.loader.stages.jpeg_decode import decode_jpegs, decode_jpegs_ragged
from gpuaug.loader.stages.ragged import unpack

__all__ = ["PinnedRing", "Prefetcher", "host_to_device", "to_device"]


def to_device(
    raw: HostBatch,
    dataset: Any,
    targets: torch.Tensor,
    decode_device: torch.device,
    device: torch.device | None = None,
    layout: str = "planar",
) -> tuple[DeviceBatch | None, list[tuple[int, str]]]:
    """A source's batch on ``device``: copied (in its pixel layout), its JPEGs decoded.

    Args:
        raw: the host batch.
        dataset: the data set (``samples``, sizes; see `gpuaug.loader.stages`).
        targets: ``(n,)`` int64 CPU, the class index of every sample.
        decode_device: where JPEGs are decoded (the loader's device).
        device: where the batch goes (default ``decode_device``).
        layout: the loader's pixel layout (`gpuaug.data.pixel_layout`): the JPEGs are decoded
            into it; a host batch is moved in the layout it has.

    Returns:
        ``(batch, failures)``: the batch of the samples that did not fail (``None`` if none)
        and ``[(index, reason), ...]`` for those that did (for `gpuaug.loader.stages.skip`).
    """
    device = decode_device if device is None else device
    indices = raw.indices
    bad = list(raw.failures)
    images = raw.images
    sizes = None
    where = decode_device if raw.jpeg_data is not None else device
    if images is not None:
        images = move(images, where)
    packed = None if raw.packed is None else host_to_device(raw.packed, where)
    if raw.on_copied is not None:
        raw.on_copied()
    if raw.jpeg_data is not None and getattr(dataset, "target_size", ()) is None:
        images, sizes, indices, jpeg_bad = decode_jpegs_ragged(raw, packed, dataset, decode_device)
        images = images.to(device)
        bad += jpeg_bad
    elif raw.jpeg_data is not None:
        images, indices, jpeg_bad = decode_jpegs(raw, images, dataset, decode_device, layout)
        images = move(images, device)
        bad += jpeg_bad
    elif packed is not None:  # a ragged batch: one gather into the padded batch
        assert raw.packed_table is not None  # packed with its table
        images, sizes = unpack(packed, raw.packed_table, dataset.channels)
    if images is None or len(indices) == 0:
        return None, bad
    labels = host_to_device(targets.index_select(0, indices), device)
    return DeviceBatch(images, indices, labels, sizes), bad


class PinnedRing:
    """A few reusable pinned host buffers, each reused only once its last copy has run.

    A host or disk cache gathers each batch straight into one (``index_select(out=...)``,
    one CPU copy), the transfer stage copies it to the device, and :meth:`release` records an
    event on the copying stream; the buffer's next :meth:`acquire` waits for that event (it
    has normally long passed: the ring is ``size`` batches deep).

    Args:
        device: the CUDA device the buffers serve (their pinned memory is registered there).
        size: how many buffers (2-3: one being filled, one being copied, one spare).
        pin: pin the buffers (False only in tests on machines without CUDA).
        event_factory: makes the event that guards a buffer (default ``torch.cuda.Event``).
    """

    def __init__(
        self,
        device: torch.device,
        size: int = 3,
        *,
        pin: bool = True,
        event_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.device = device
        self.size = size
        self.pin = pin
        self.event_factory = event_factory or torch.cuda.Event
        self.buffers: list[torch.Tensor | None] = [None] * size
        self.events: list[Any] = [None] * size
        self._next = 0

    def acquire(self, shape: tuple[int, ...], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
        """A buffer of ``shape`` (a view of the next ring slot), free to overwrite."""
        i = self._next
        self._next = (i + 1) % self.size
        if self.events[i] is not None:
            self.events[i].synchronize()
            self.events[i] = None
        n = math.prod(shape)
        buf = self.buffers[i]
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            if self.pin:
                with torch.cuda.device(self.device):
                    buf = torch.empty(n, dtype=dtype, pin_memory=True)
            else:
                buf = torch.empty(n, dtype=dtype)
            self.buffers[i] = buf
        self._last = i
        return buf[:n].view(shape)

    def release(self, stream: Any = None) -> None:
        """Marks the last acquired buffer as in use until the work queued now on ``stream``
        (default: the current stream) has run."""
        event = self.event_factory()
        if stream is None and self.device.type == "cuda":
            # the current stream of the ring's device, not of the current device (replay on
            # cuda:k without set_device runs outside the prefetcher's stream context)
            stream = torch.cuda.current_stream(self.device)
        if stream is None:
            event.record()
        else:
            event.record(stream)
        self.events[self._last] = event


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
        """Device batches; batch k+1 is loaded (side stream) before batch k is handed out.

        Closing this generator closes ``raw_batches`` (its worker processes stop).
        """
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
                return raw if raw is end else on_stream(cast(HostBatch, raw))
            except Exception as exc:
                return _Deferred(exc)

        try:
            pending = fetch()
            while pending is not end:
                if isinstance(pending, _Deferred):
                    raise pending.error
                if stream is not None and pending is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_stream(stream)
                    pending.images.record_stream(current)
                    pending.labels.record_stream(current)
                ready = pending
                pending = fetch()
                yield ready
        finally:
            close = getattr(raw_batches, "close", None)
            if close is not None:
                close()
