"""The worker source: DataLoader processes that decode files (or read JPEG bytes) into batches.

`WorkerView` and `collate` run inside the workers; `WorkerPool` runs them from the main
process: one persistent DataLoader for the epochs (its batch sampler is an `EpochView` on the
loader's `EpochBatchSampler`), a throw-away one to build a cache, and the handling of a dead
worker (`WorkerCrashError` naming the file it was reading) and of shutdown.
"""

from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from gpuaug.data.image import ImageLoadError
from gpuaug.data.jpeg import read_gpu_jpeg
from gpuaug.data.pixel_layout import empty_batch, interleave
from gpuaug.loader.sampler import EpochBatchSampler
from gpuaug.loader.stages.batch import FailureReason, HostBatch
from gpuaug.loader.stages.ragged import pack_images

__all__ = ["EpochView", "WorkerCrashError", "WorkerPool", "WorkerView", "collate"]

_IMAGE, _JPEG, _FAILED = 0, 1, 2


class WorkerCrashError(RuntimeError):
    """A DataLoader worker process died (killed, segfault, ``os._exit``) while reading files.

    Attributes:
        paths: the files the dead worker(s) were decoding (empty when between files).
    """

    def __init__(self, message: str, paths: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.paths = list(paths)


class WorkerView(Dataset):
    """What the workers run: decode one sample, or read a JPEG's bytes (``decode="gpu"``).

    Never raises ``ImageLoadError``: a bad file comes back as a failure record, so the main
    process can apply ``on_error`` with a clean message. Before each file it writes the sample
    index to its worker slot, so a worker that dies can be matched to the file it was reading.
    """

    def __init__(self, dataset: Any, decode: str, slots: Any = None) -> None:
        self.dataset = dataset
        self.decode = decode
        self.slots = slots

    def __len__(self) -> int:
        return len(self.dataset)

    def _slot(self, value: int) -> None:
        if self.slots is None:
            return
        info = torch.utils.data.get_worker_info()
        if info is not None and info.id < len(self.slots):
            self.slots[info.id] = value

    def __getitem__(self, index: int) -> tuple[int, int, Any, int]:
        self._slot(index)
        try:
            # A data set with masks (gpuaug.data.paired) hands its image and mask packed into one
            # uint8 tensor; its JPEGs decode here, with the mask, not on the GPU.
            packed = getattr(self.dataset, "load_packed", None)
            if packed is not None:
                return _IMAGE, index, packed(index), 1
            if self.decode == "gpu":
                # A broken JPEG (truncated, ...) fails here as decode="cpu" would: nvJPEG
                # would decode it to grey blocks. CMYK & co. (None) are decoded by PIL below.
                routed = read_gpu_jpeg(self.dataset.samples[index][0])
                if routed is not None:
                    return _JPEG, index, routed[0], routed[1].orientation
            return _IMAGE, index, self.dataset.load(index), 1
        except ImageLoadError as exc:
            reason = exc.reason or str(exc)
            if exc.path != self.dataset.samples[index][0]:  # a mask, not the image
                reason = FailureReason(reason, exc.path)
            return _FAILED, index, reason, 0
        finally:
            self._slot(-1)


def _shared_bytes(n: int) -> torch.Tensor:
    """An uninitialised ``(n,)`` uint8 tensor, in shared memory inside a worker (so that
    sending it to the main process costs no copy, as ``default_collate`` does for images)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(n, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(n)
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, (n,), (1,))


def _stack(images: list[torch.Tensor], layout: str) -> torch.Tensor:
    """The decoded images as one batch in ``layout``, in shared memory inside a worker."""
    if layout == "planar":
        return default_collate(images)  # straight into shared memory
    _, h, w = images[0].shape
    out = empty_batch(
        "rgbx", (len(images), 3, h, w), out=_shared_bytes(len(images) * h * w * 4),
        zero_padding=False,
    )  # fmt: skip
    for i, image in enumerate(images):  # the copy default_collate makes, interleaving
        interleave(image[None], out[i : i + 1])
    return out


def collate(
    items: list[tuple[int, int, Any, int]], ragged: bool = False, layout: str = "planar"
) -> HostBatch:
    """Worker-side collate: stack the decoded images, concatenate the JPEG files.

    ``ragged`` (images of different sizes, ``target_size=None``): the images are packed into
    one buffer with an ``(offset, H, W)`` table instead (`gpuaug.loader.stages.ragged`).

    Every tensor of the result travels to the main process as one shared-memory file
    descriptor, so a batch costs a handful of them whatever its size (one per JPEG file
    exhausted ``ulimit -n`` at batch 256 with 4 workers). ``layout``: the images' pixel layout
    (`gpuaug.data.pixel_layout`; ``"rgbx"``: written into a 4-byte-per-pixel buffer).
    """
    indices: list[int] = []
    images: list[torch.Tensor] = []
    image_pos: list[int] = []
    jpegs: list[torch.Tensor] = []
    jpeg_pos: list[int] = []
    orient: list[int] = []
    failures: list[tuple[int, str]] = []
    for kind, index, payload, extra in items:
        if kind == _FAILED:
            failures.append((index, payload))
            continue
        pos = len(indices)
        indices.append(index)
        if kind == _IMAGE:
            images.append(payload)
            image_pos.append(pos)
        else:
            jpegs.append(payload)
            jpeg_pos.append(pos)
            orient.append(extra)
    jpeg_data = jpeg_offsets = None
    if jpegs:
        sizes = [0] + [len(j) for j in jpegs]
        jpeg_offsets = torch.tensor(sizes, dtype=torch.int64).cumsum(0)
        jpeg_data = torch.cat(jpegs, out=_shared_bytes(sum(sizes)))
    packed = packed_table = None
    if ragged and images:
        packed, packed_table = pack_images(images, _shared_bytes)
        images = []
    return HostBatch(
        indices=torch.tensor(indices, dtype=torch.int64),
        images=_stack(images, layout) if images else None,
        packed=packed,
        packed_table=packed_table,
        image_pos=image_pos,
        jpeg_data=jpeg_data,
        jpeg_offsets=jpeg_offsets,
        jpeg_pos=jpeg_pos,
        orient=orient,
        failures=failures,
    )


class EpochView:
    """A DataLoader batch sampler: the batches of epoch :attr:`epoch` of ``sampler`` (the
    persistent workers' view follows the loader's epoch; a concurrent iteration's is fixed)."""

    def __init__(self, sampler: EpochBatchSampler, epoch: int = 0, start: int = 0) -> None:
        self.sampler = sampler
        self.epoch = epoch
        self.start = start  # the first step (a resumed epoch)

    def __len__(self) -> int:
        return len(self.sampler) - self.start

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.sampler.epoch_batches(self.epoch, self.start)
        return (idx.numpy().tolist() for _, idx in batches)


class _Chunks:
    """Batch sampler of ``0..n-1`` in order (used to build a cache)."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return math.ceil(self.n / self.size)

    def __iter__(self) -> Iterator[list[int]]:
        return (list(range(i, min(i + self.size, self.n))) for i in range(0, self.n, self.size))


def _stop(iterator: Any) -> None:
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


class WorkerPool:
    """The worker processes of one loader: batches for an epoch, or every sample once.

    One persistent set of workers serves the epochs; it belongs to one iteration at a time.
    An iteration that starts while another holds it (``next(iter(loader))`` inside
    ``for x, y in loader``, or ``zip(iter(loader), iter(loader))``) runs its own worker
    processes, started for it and stopped when it ends or is dropped, so neither loses a
    sample. With ``num_workers=0`` the samples are read in the main process, no DataLoader.

    Args:
        dataset: the data set (see `gpuaug.loader.stages`).
        sampler: the loader's `EpochBatchSampler`.
        decode: ``"cpu"`` or ``"gpu"`` (the workers only read JPEG bytes).
        num_workers: processes (0: in the main process).
        prefetch_factor, timeout: as `gpuaug.LoaderConfig`.
        seed: seeds the DataLoader's own generator (worker seeds).
        device: the loader's device; with CUDA the batches are pinned (by the DataLoader's
            pin-memory thread, made current on this device, not on GPU 0).
        layout: the pixel layout the workers assemble batches in (``"planar"`` or ``"rgbx"``).
    """

    def __init__(
        self,
        dataset: Any,
        sampler: EpochBatchSampler,
        *,
        decode: str,
        num_workers: int,
        prefetch_factor: int,
        timeout: float,
        seed: int,
        device: torch.device,
        layout: str = "planar",
    ) -> None:
        self.dataset = dataset
        self.layout = layout
        self.sampler = sampler
        self.decode = decode
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.timeout = timeout
        self.seed = seed
        self.device = device
        self.pin_memory = device.type == "cuda"
        # target_size=None: images of their own sizes, packed (gpuaug.loader.stages.ragged)
        self.ragged = getattr(dataset, "target_size", ()) is None
        self._epoch_view = EpochView(sampler)
        self._dataloader: DataLoader | None = None
        self._owner: object | None = None  # the iteration holding the persistent workers
        self._others: dict[int, Any] = {}  # iterators of iterations with their own workers

    def view(self, slots: Any = None) -> WorkerView:
        """The per-sample reader the workers run (also used in the main process by replay);
        ``slots``: where its workers write the sample they are reading (one per DataLoader, so
        a concurrent iteration's workers never overwrite them)."""
        return WorkerView(self.dataset, self.decode, slots)

    def _on_device(self) -> Any:
        if self.pin_memory:
            return torch.cuda.device(self.device)
        return contextlib.nullcontext()

    def _make_dataloader(self, batch_sampler: Any, persistent: bool) -> DataLoader:
        slots = multiprocessing.RawArray("q", [-1] * self.num_workers)
        return DataLoader(
            self.view(slots),
            batch_sampler=batch_sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(self.seed % 2**63),
            prefetch_factor=self.prefetch_factor,
            persistent_workers=persistent,
            timeout=self.timeout,
        )

    @property
    def collate(self) -> Any:
        """`collate` for this pool's data (ragged or not) in its pixel layout (picklable, for
        the worker processes)."""
        return functools.partial(collate, ragged=self.ragged, layout=self.layout)

    def _in_main_process(self, batches: Iterator[list[int]]) -> Iterator[HostBatch]:
        view = self.view()
        for idx in batches:
            raw = self.collate([view[i] for i in idx])
            if self.pin_memory:
                with self._on_device():
                    raw = raw.pin_memory()
            yield raw

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[HostBatch]:
        """The batches of ``epoch`` from step ``start`` on (a generator: close it to stop its
        workers early)."""
        if not self.num_workers:
            yield from self._in_main_process(iter(EpochView(self.sampler, epoch, start)))
            return
        token = object()
        if self._owner is None:
            self._owner = token
            if self._dataloader is None:
                self._dataloader = self._make_dataloader(self._epoch_view, persistent=True)
            self._epoch_view.epoch = epoch
            self._epoch_view.start = start
            dl = self._dataloader
        else:
            dl = self._make_dataloader(EpochView(self.sampler, epoch, start), persistent=False)
        iterator = None
        completed = False
        try:
            with self._on_device():  # the pin-memory thread takes the current device
                iterator = iter(dl)
            if self._owner is not token:
                self._others[id(token)] = iterator
            yield from self._guarded(iterator)
            completed = True
        finally:
            if self._owner is token:
                self._owner = None
                if not completed:  # left early: stop the workers now
                    self._stop_persistent()
            else:
                self._others.pop(id(token), None)
                _stop(iterator)

    def all_batches(self, batch_size: int) -> Iterator[HostBatch]:
        """Every sample once, in order (to build a cache), from workers stopped at the end."""
        chunks = _Chunks(len(self.dataset), batch_size)
        if not self.num_workers:
            yield from self._in_main_process(iter(chunks))
            return
        dl = self._make_dataloader(chunks, persistent=False)
        iterator = None
        try:
            with self._on_device():
                iterator = iter(dl)
            yield from self._guarded(iterator)
        finally:
            _stop(iterator)

    def _guarded(self, iterator: Any) -> Iterator[HostBatch]:
        """Batches from a DataLoader iterator; a dead worker becomes a WorkerCrashError."""
        while True:
            try:
                raw = next(iterator)
            except StopIteration:
                return
            except RuntimeError as exc:
                crash = self._crash_error(iterator, exc)
                if crash is None:
                    raise
                _stop(iterator)
                raise crash from exc
            yield raw

    def _crash_error(self, iterator: Any, exc: BaseException) -> WorkerCrashError | None:
        dead = [
            (wid, w)
            for wid, w in enumerate(getattr(iterator, "_workers", []))
            if w.exitcode is not None or not w.is_alive()
        ]
        if not dead:
            return None
        parts, paths = [], []
        for wid, w in dead:
            code = w.exitcode
            how = (
                f"killed by signal {-code}"
                if code is not None and code < 0
                else f"exit code {code}"
            )
            slots = getattr(getattr(iterator, "_dataset", None), "slots", None)
            index = slots[wid] if slots is not None and wid < len(slots) else -1
            if index >= 0:
                path = self.dataset.samples[index][0]
                paths.append(path)
                parts.append(f"worker {wid} (pid {w.pid}, {how}) while reading {path!r}")
            else:
                parts.append(f"worker {wid} (pid {w.pid}, {how}) between files")
        return WorkerCrashError(
            f"A DataLoader worker process died: {'; '.join(parts)}. A decoder crash on that "
            f"file (try opening it with PIL), or the worker was killed (out of memory?). "
            f"({exc})",
            paths,
        )

    def _stop_persistent(self) -> None:
        dl, self._dataloader = self._dataloader, None
        if dl is not None:
            _stop(getattr(dl, "_iterator", None))
            dl._iterator = None

    def shutdown(self) -> None:
        """Stops every worker process now; the next epoch starts new ones."""
        self._stop_persistent()
        for it in list(self._others.values()):
            _stop(it)
        self._others.clear()
