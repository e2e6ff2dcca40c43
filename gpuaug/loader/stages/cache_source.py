"""The cache source: build an `ImageCache` once, then gather each batch from it.

Each pass of the sampler gets a *plan*, made on the host with numpy once per pass: the sample
indices each batch serves, with the samples that failed when the cache was built dropped
(single process) or replaced (under DDP; see `gpuaug.loader.stages.skip`). A ``"device"`` cache
copies the pass's plan to the device once (pinned, ``non_blocking``) and each batch is a slice
of it and one ``index_select`` there: nothing per batch makes the host wait for the GPU. A
``"host"`` or ``"disk"`` cache gathers each batch on the CPU straight into a pinned buffer of a
`PinnedRing` (CUDA) for the transfer stage to copy. Batches come out in the loader's pixel
layout (`gpuaug.data.pixel_layout`): a cache built by the loader keeps its images in it, so a
batch is a gather of whole rows; an in-memory array kept as given (planar) is interleaved into
an RGBX buffer as it is gathered.

A per-rank cache (``LoaderConfig.cache_per_rank``, a sampler with ``stick_to_shard``) holds
only the samples of this rank's fixed share (`RankShare`, the share without its padding
repeats): it is decoded by workers over that share alone, its rows are the share's samples in
index order, and the source maps each batch's data set indices to those rows (``slots``).

A ``"disk"`` cache is opened or built under a file lock in its folder: the first process (any
rank, or several loaders of one process) builds it, the others wait for the lock and then open
the finished cache. No collective, so a loader made on some ranks only cannot deadlock.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from gpuaug.data.cache import ImageCache, cache_key, resolve_cache_dir
from gpuaug.data.pixel_layout import as_layout, empty_batch, interleave
from gpuaug.data.ragged_cache import RaggedCache
from gpuaug.loader.sampler import EpochBatchSampler
from gpuaug.loader.stages.batch import DeviceBatch, HostBatch
from gpuaug.loader.stages.ragged import unpack
from gpuaug.loader.stages.skip import fill_positions, next_good
from gpuaug.loader.stages.transfer import PinnedRing, host_to_device
from gpuaug.loader.stages.workers import WorkerPool

__all__ = ["CacheSource", "PassPlan", "RankShare", "build_cache", "plan_pass", "rank_share"]

_CACHE_FAILURE = "failed when the cache was built"


class PassPlan(NamedTuple):
    """What each batch of one pass serves from a cache.

    Attributes:
        served: the sample indices of every batch of the pass, concatenated (int64 numpy).
        offsets: batch ``j`` serves ``served[offsets[j]:offsets[j + 1]]``.
        failed: per batch, the requested indices that failed when the cache was built.
    """

    served: np.ndarray
    offsets: list[int]
    failed: list[list[int]]


def plan_pass(
    sampler: EpochBatchSampler, pass_index: int, valid: np.ndarray, rule: str
) -> PassPlan:
    """The `PassPlan` of pass ``pass_index`` for a cache whose ``valid`` samples decoded.

    Args:
        sampler: the loader's sampler (order, batch size, shard).
        pass_index: the pass.
        valid: ``(n,)`` bool numpy, False for samples that failed.
        rule: ``"shrink"`` (leave failed samples out) or ``"replace"`` (keep the batch size).
    """
    shard = sampler.shard(pass_index).numpy()
    b, steps = sampler.batch_size, sampler.steps_per_pass
    batches = [shard[j * b : (j + 1) * b] for j in range(steps)]
    if valid.all():
        served = np.concatenate(batches)
        offsets = [min(j * b, len(served)) for j in range(steps + 1)]
        return PassPlan(served, offsets, [[] for _ in range(steps)])
    parts, failed, offsets = [], [], [0]
    for req in batches:
        ok = valid[req]
        good = req[ok]
        failed.append(req[~ok].tolist())
        if rule == "replace" and len(good) < len(req):
            if len(good):
                good = np.concatenate([good, good[fill_positions(len(good), len(req))]])
            else:
                good = np.full(len(req), next_good(int(req[0]), valid), dtype=np.int64)
        parts.append(good)
        offsets.append(offsets[-1] + len(good))
    return PassPlan(np.concatenate(parts).astype(np.int64), offsets, failed)


class RankShare:
    """The samples ``indices`` (sorted, unique) of a data set, as a data set of their own: what
    a per-rank cache decodes and holds. Everything else is the base data set's.

    ``subset`` names the share (rank, world size, seed), so a disk cache of one rank's share
    is never taken for another's.
    """

    def __init__(self, dataset: Any, indices: np.ndarray, rank: int, world: int, seed: int):
        self.base = dataset
        self.indices = indices
        base_subset = getattr(dataset, "subset", None)
        self.subset = f"{base_subset}|share of rank {rank} of {world}, seed {seed}"
        self.samples = [dataset.samples[int(i)] for i in indices]
        self.targets = [int(dataset.targets[int(i)]) for i in indices]
        if hasattr(dataset, "load_packed"):
            self.load_packed = lambda i: dataset.load_packed(int(self.indices[i]))

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> torch.Tensor:
        return self.base.load(int(self.indices[index]))

    def __getattr__(self, name: str) -> Any:  # target_size, channels, root, classes, ...
        if name in ("base", "as_cache"):  # never the base's in-memory cache
            raise AttributeError(name)
        return getattr(self.base, name)


def rank_share(dataset: Any, sampler: EpochBatchSampler) -> RankShare | None:
    """The `RankShare` a per-rank cache holds (``sampler.stick_to_shard``), else ``None``."""
    if not sampler.stick_to_shard:
        return None
    indices = np.unique(sampler.fixed_shard().numpy())
    return RankShare(dataset, indices, sampler.rank, sampler.num_replicas, sampler.seed)


class CacheSource:
    """Batches of a built cache, following the sampler's passes.

    Args:
        cache: the cache.
        sampler: the loader's sampler.
        device: the loader's device.
        targets: ``(n,)`` int64 CPU, every sample's class index.
        rule: ``"shrink"`` or ``"replace"`` (failed samples; see `gpuaug.loader.stages.skip`).
        share: a per-rank cache's sample indices (its rows, in order); ``None``: the cache
            holds every sample, row ``i`` for sample ``i``.
        layout: the pixel layout of the batches (``"planar"`` or ``"rgbx"``).
    """

    def __init__(
        self,
        cache: ImageCache | RaggedCache,
        sampler: EpochBatchSampler,
        device: torch.device,
        targets: torch.Tensor,
        rule: str,
        share: np.ndarray | None = None,
        layout: str = "planar",
    ) -> None:
        self.cache = cache
        self.layout = layout
        self.sampler = sampler
        self.device = device
        self.rule = rule
        self.slots: np.ndarray | None = None
        if share is None:
            self.valid = cache.valid.numpy().copy()
        else:  # rows of the share's samples; samples of other ranks are never asked for
            n = len(targets)
            self.slots = np.full(n, -1, dtype=np.int64)
            self.slots[share] = np.arange(len(share))
            self.valid = np.ones(n, dtype=bool)
            self.valid[share] = cache.valid.numpy()
        self.on_device = cache.device == device
        self.targets = targets
        self.device_targets = host_to_device(targets, device) if self.on_device else None
        self.ring = PinnedRing(device) if device.type == "cuda" and not self.on_device else None
        self._plan: tuple[int, PassPlan, torch.Tensor, torch.Tensor] | None = None

    def _pass(self, pass_index: int) -> tuple[PassPlan, torch.Tensor]:
        """The pass's plan and its served indices (on the device for a device cache)."""
        if self._plan is None or self._plan[0] != pass_index:
            plan = plan_pass(self.sampler, pass_index, self.valid, self.rule)
            served = torch.from_numpy(plan.served)
            rows = served if self.slots is None else torch.from_numpy(self.slots[plan.served])
            if self.on_device:
                served = host_to_device(served, self.device)  # once per pass
                rows = served if self.slots is None else host_to_device(rows, self.device)
            self._plan = (pass_index, plan, served, rows)
        return self._plan[1], self._plan[2]

    def _rows(self, lo: int, hi: int) -> torch.Tensor:
        """The cache rows of the current pass's served samples ``lo:hi``."""
        assert self._plan is not None  # planned by the pass that serves them
        return self._plan[3][lo:hi]

    def _slot(self, k: int) -> tuple[PassPlan, int, int, torch.Tensor]:
        p, j = divmod(k, self.sampler.steps_per_pass)
        plan, served = self._pass(p)
        lo, hi = plan.offsets[j], plan.offsets[j + 1]
        return plan, j, lo, served[lo:hi]

    def _record(self, plan: PassPlan, j: int, failures: list[tuple[int, str]]) -> None:
        failures.extend((i, _CACHE_FAILURE) for i in plan.failed[j])

    def device_batch(self, k: int, failures: list[tuple[int, str]]) -> DeviceBatch | None:
        """Global batch ``k`` of a device cache, gathered on the device."""
        plan, j, lo, idx = self._slot(k)
        self._record(plan, j, failures)
        if len(idx) == 0:
            return None
        cpu = torch.from_numpy(plan.served[lo : lo + len(idx)])
        assert self.device_targets is not None  # a device cache keeps its targets there
        labels = self.device_targets.index_select(0, idx)
        if isinstance(self.cache, RaggedCache):  # device="cpu" with a host / disk cache
            data, table = self.cache.take_packed(self._rows(lo, lo + len(idx)))
            images, sizes = unpack(data, table, self.cache.channels)
            return DeviceBatch(images, cpu, labels, sizes)
        images = as_layout(self.cache.take(self._rows(lo, lo + len(idx))), self.layout)
        return DeviceBatch(images, cpu, labels)

    def host_batch(self, k: int) -> HostBatch:
        """Global batch ``k`` of a host or disk cache, gathered on the CPU (into a pinned
        buffer with CUDA)."""
        plan, j, lo, idx = self._slot(k)
        failures = [(i, _CACHE_FAILURE) for i in plan.failed[j]]
        if len(idx) == 0:
            return HostBatch.decoded(idx, None, failures)
        rows = self._rows(lo, lo + len(idx))
        if isinstance(self.cache, RaggedCache):  # one packed buffer, as the workers ship it
            ring = self.ring
            allocate = None if ring is None else (lambda n: ring.acquire((n,)))
            data, table = self.cache.take_packed(rows, allocate)
            return HostBatch(
                indices=idx, images=None, image_pos=list(range(len(idx))), failures=failures,
                on_copied=None if ring is None else ring.release, packed=data,
                packed_table=table,
            )  # fmt: skip
        if self.ring is None:
            return HostBatch.decoded(idx, as_layout(self.cache.take(rows), self.layout), failures)
        stored = self.cache.images
        _, c, h, w = stored.shape
        shape = (len(idx), c, h, w)
        if self.layout == "rgbx":  # whole pixels are written: no padding to zero first
            buffer = self.ring.acquire((len(idx) * h * w * 4,))
            out = empty_batch("rgbx", shape, out=buffer, zero_padding=False)
            if self.cache.layout == "rgbx":  # whole rows, one gather
                images = self.cache.take(rows, out=out)
            else:  # an in-memory array kept planar: interleaved as it is copied
                images = interleave(self.cache.take(rows), out)
            return HostBatch.decoded(idx, images, failures, on_copied=self.ring.release)
        # uint8 (files; a disk cache is a numpy memmap) or the dtype of an array's cache
        dtype = stored.dtype if isinstance(stored, torch.Tensor) else torch.uint8
        out = self.ring.acquire(shape, dtype=dtype)
        images = self.cache.take(rows, out=out)
        return HostBatch.decoded(idx, images, failures, on_copied=self.ring.release)

    def global_batches(self, epoch: int, start: int = 0) -> range:
        """The global batch numbers of ``epoch`` from step ``start`` on."""
        s = self.sampler.steps_per_epoch
        return range(epoch * s + start, (epoch + 1) * s)

    def device_batches(
        self, epoch: int, failures: list[tuple[int, str]], start: int = 0
    ) -> Iterator[DeviceBatch | None]:
        """The batches of ``epoch`` from step ``start`` on, from a device cache (None: every
        sample failed)."""
        for k in self.global_batches(epoch, start):
            yield self.device_batch(k, failures)

    def host_batches(self, epoch: int, start: int = 0) -> Iterator[HostBatch]:
        """The batches of ``epoch`` from step ``start`` on, from a host or disk cache."""
        for k in self.global_batches(epoch, start):
            yield self.host_batch(k)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, held for the block.

    No lock where ``fcntl`` does not exist (Windows) or the lock file cannot be made (a
    read-only or missing cache folder: opening or building the cache then reports it).
    """
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b")  # noqa: SIM115
    except (ImportError, OSError):
        yield
        return
    with f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def build_cache(
    config: Any,
    dataset: Any,
    pool: WorkerPool,
    load: Callable[[HostBatch, list[tuple[int, str]], torch.device], DeviceBatch | None],
    *,
    device: torch.device,
    batch_size: int,
    rank: int,
    share: RankShare | None = None,
    layout: str = "planar",
) -> ImageCache | RaggedCache:
    """Opens an up-to-date disk cache, or decodes every sample once into a new cache.

    Args:
        config: the `gpuaug.LoaderConfig` (``cache``, ``cache_dir``, ``decode``, ``progress``).
        dataset: the data set.
        pool: the loader's workers (they decode the samples).
        load: the transfer stage's host -> device step.
        device: the loader's device.
        batch_size: samples per decoding batch.
        rank: this process's rank (only rank 0 shows a progress bar).
        share: a per-rank cache's `RankShare`: only its samples are decoded (by workers of
            their own), row ``i`` for ``share.indices[i]``.
        layout: the pixel layout the cache keeps (the loader's; an in-memory array's
            device copy too, its host cache stays the array as given).

    Raises:
        ValueError: a device cache that does not fit in the free device memory.
    """
    in_memory = getattr(dataset, "as_cache", None)
    if in_memory is not None:  # images already in memory (gpuaug.data.arrays): no decoding
        if share is not None:
            raise ValueError(
                "`cache_per_rank`=True decodes each rank's share once; this data set is "
                "already in memory (flow(x, y)): pass cache_per_rank=False"
            )
        return in_memory(config.cache, device, layout)
    if getattr(dataset, "target_size", ()) is None:  # images at their own sizes
        return _build_ragged(config, dataset, pool, load, batch_size=batch_size, rank=rank,
                             share=share)  # fmt: skip
    target = device if config.cache == "device" else torch.device("cpu")
    rows = None
    if share is not None:  # the share's own workers; indices mapped back to the data set's
        pool = WorkerPool(
            share, pool.sampler, decode=pool.decode, num_workers=pool.num_workers,
            prefetch_factor=pool.prefetch_factor, timeout=pool.timeout, seed=pool.seed,
            device=pool.device, layout=pool.layout,
        )  # fmt: skip
        rows = np.full(len(dataset), -1, dtype=np.int64)
        rows[share.indices] = np.arange(len(share))
        to_data = torch.from_numpy(share.indices)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor | None, list[tuple[int, str]]]]:
        for raw in pool.all_batches(batch_size):
            if share is not None:  # named and labelled as samples of the data set
                raw = dataclasses.replace(
                    raw,
                    indices=to_data[raw.indices],
                    failures=[(int(share.indices[i]), r) for i, r in raw.failures],
                )
            failures: list[tuple[int, str]] = []
            batch = load(raw, failures, target)
            if rows is not None:
                failures = [(int(rows[i]), r) for i, r in failures]
            if batch is None:
                yield torch.empty(0, dtype=torch.int64), None, failures
            elif rows is None:
                yield batch.indices, batch.images, failures
            else:
                yield torch.from_numpy(rows[batch.indices.numpy()]), batch.images, failures

    def build() -> ImageCache:
        return ImageCache.build(
            config.cache,
            dataset if share is None else share,
            batches(),
            device=device,
            cache_dir=config.cache_dir,
            decoder=config.decode,
            pin_memory=False,
            progress=config.progress and rank == 0,
            layout=layout,
        )

    if config.cache != "disk":
        return build()
    folder = resolve_cache_dir(config.cache_dir)  # names the setting if it is a file
    cached = dataset if share is None else share
    lock = folder / f"{cache_key(cached, config.decode, layout)}.lock"
    with _file_lock(lock):
        found = ImageCache.open(
            cached, cache_dir=config.cache_dir, decoder=config.decode, layout=layout
        )
        if found is not None:
            return found
        return build()


def _build_ragged(
    config: Any,
    dataset: Any,
    pool: WorkerPool,
    load: Callable[[HostBatch, list[tuple[int, str]], torch.device], DeviceBatch | None],
    *,
    batch_size: int,
    rank: int,
    share: RankShare | None,
) -> RaggedCache:
    """`build_cache` for ``target_size=None``: a `RaggedCache` (host or disk) of the decoded,
    capped images at their own sizes."""
    if share is not None:
        raise ValueError(
            "`cache_per_rank`=True is not built for images at their own sizes "
            "(target_size=None); pass cache_per_rank=False"
        )
    cpu = torch.device("cpu")

    def batches() -> Iterator[tuple[torch.Tensor, list[torch.Tensor], list[tuple[int, str]]]]:
        for raw in pool.all_batches(batch_size):
            failures: list[tuple[int, str]] = []
            batch = load(raw, failures, cpu)
            if batch is None:
                yield torch.empty(0, dtype=torch.int64), [], failures
                continue
            assert batch.sizes is not None  # a ragged batch knows its sizes
            hw = batch.sizes.tolist()
            images = [batch.images[i, :, :h, :w] for i, (h, w) in enumerate(hw)]
            yield batch.indices, images, failures

    def build() -> RaggedCache:
        return RaggedCache.build(
            config.cache, dataset, batches(), cache_dir=config.cache_dir,
            decoder=config.decode, progress=config.progress and rank == 0,
        )  # fmt: skip

    if config.cache != "disk":
        return build()
    folder = resolve_cache_dir(config.cache_dir)
    lock = folder / f"{cache_key(dataset, config.decode)}.ragged.lock"
    with _file_lock(lock):
        found = RaggedCache.open(dataset, cache_dir=config.cache_dir, decoder=config.decode)
        return found if found is not None else build()
