"""The worker source: DataLoader processes that decode files (or read JPEG bytes) into batches.

`WorkerView` and `collate` run inside the workers; `WorkerPool` runs them from the main
process: one persistent DataLoader for the epochs (its batch sampler is an `EpochView` on the
loader's `EpochBatchSampler`), a throw-away one to build a cache, and the handling of a dead
worker (`WorkerCrashError` naming the file it was reading) and of shutdown.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from gpuaug.decode import is_jpeg, jpeg_orientation, read_file_bytes
from gpuaug.image import ImageLoadError
from gpuaug.sampler import EpochBatchSampler
from gpuaug.stages.batch import HostBatch

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
            if self.decode == "gpu":
                data = read_file_bytes(self.dataset.samples[index][0])
                if is_jpeg(data):
                    return _JPEG, index, data, jpeg_orientation(data)
            return _IMAGE, index, self.dataset.load(index), 1
        except ImageLoadError as exc:
            return _FAILED, index, exc.reason or str(exc), 0
        finally:
            self._slot(-1)


def collate(items: list[tuple[int, int, Any, int]]) -> HostBatch:
    """Worker-side collate: stack the decoded images (into shared memory), list the rest."""
    indices, images, image_pos, jpegs, jpeg_pos, orient, failures = [], [], [], [], [], [], []
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
    return HostBatch(
        indices=torch.tensor(indices, dtype=torch.int64),
        images=default_collate(images) if images else None,
        image_pos=torch.tensor(image_pos, dtype=torch.int64),
        jpegs=jpegs,
        jpeg_pos=jpeg_pos,
        orient=orient,
        failures=failures,
    )


class EpochView:
    """The DataLoader's batch sampler: the batches of the epoch the loader is running."""

    def __init__(self, sampler: EpochBatchSampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[int]]:
        return (idx.tolist() for _, idx in self.sampler.epoch_batches(self.epoch))


class _Chunks:
    """Batch sampler of ``0..n-1`` in order (used to build a cache)."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return math.ceil(self.n / self.size)

    def __iter__(self) -> Iterator[list[int]]:
        return (list(range(i, min(i + self.size, self.n))) for i in range(0, self.n, self.size))


class WorkerPool:
    """The worker processes of one loader: batches for an epoch, or every sample once.

    Args:
        dataset: the data set (see `gpuaug.stages`).
        sampler: the loader's `EpochBatchSampler`.
        decode: ``"cpu"`` or ``"gpu"`` (the workers only read JPEG bytes).
        num_workers: processes (0: in the main process).
        prefetch_factor, timeout: as `gpuaug.LoaderConfig`.
        seed: seeds the DataLoader's own generator (worker seeds).
        pin_memory: let the DataLoader pin the batches (CUDA).
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
        pin_memory: bool,
    ) -> None:
        self.dataset = dataset
        self.decode = decode
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.timeout = timeout
        self.seed = seed
        self.pin_memory = pin_memory
        self.slots = multiprocessing.RawArray("q", [-1] * num_workers) if num_workers else None
        self._epoch_view = EpochView(sampler)
        self._dataloader: DataLoader | None = None

    def view(self) -> WorkerView:
        """The per-sample reader the workers run (also used in the main process by replay)."""
        return WorkerView(self.dataset, self.decode, self.slots)

    def _make_dataloader(self, batch_sampler: Any, persistent: bool) -> DataLoader:
        kwargs: dict[str, Any] = {}
        if self.num_workers:
            kwargs.update(
                prefetch_factor=self.prefetch_factor,
                persistent_workers=persistent,
                timeout=self.timeout,
            )
        return DataLoader(
            self.view(),
            batch_sampler=batch_sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(self.seed % 2**63),
            **kwargs,
        )

    def epoch_batches(self, epoch: int) -> Iterator[HostBatch]:
        """The batches of ``epoch``, from the persistent workers (started on first use)."""
        if self._dataloader is None:
            self._dataloader = self._make_dataloader(self._epoch_view, persistent=True)
        self._epoch_view.epoch = epoch
        yield from self._guarded(iter(self._dataloader))

    def all_batches(self, batch_size: int) -> Iterator[HostBatch]:
        """Every sample once, in order (to build a cache), from workers stopped at the end."""
        dl = self._make_dataloader(_Chunks(len(self.dataset), batch_size), persistent=False)
        iterator = iter(dl)
        try:
            yield from self._guarded(iterator)
        finally:
            if hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()

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
                self.shutdown(iterator)
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
            index = self.slots[wid] if self.slots is not None and wid < len(self.slots) else -1
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

    def shutdown(self, iterator: Any = None) -> None:
        """Stops the worker processes now; the next epoch starts new ones."""
        dl, self._dataloader = self._dataloader, None
        its = [iterator, getattr(dl, "_iterator", None) if dl is not None else None]
        if dl is not None:
            dl._iterator = None
        for it in its:
            if it is not None and hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()
        if self.slots is not None:
            for i in range(len(self.slots)):
                self.slots[i] = -1
