"""The cache source: build an `ImageCache` once, then gather each batch from it.

A ``"device"`` cache yields `DeviceBatch` es directly (the gather runs on the device); a
``"host"`` or ``"disk"`` cache yields `HostBatch` es that the transfer stage copies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from gpuaug.cache import ImageCache
from gpuaug.stages.batch import DeviceBatch, HostBatch
from gpuaug.stages.workers import WorkerPool

__all__ = ["build_cache", "device_batches", "dropped", "host_batches"]

_CACHE_FAILURE = "failed when the cache was built"


def dropped(requested: torch.Tensor, kept: torch.Tensor) -> list[int]:
    """The indices of ``requested`` missing from ``kept`` (those that failed to decode)."""
    if len(requested) == len(kept):
        return []
    keep = set(kept.tolist())
    return [i for i in requested.tolist() if i not in keep]


def device_batches(
    cache: ImageCache,
    epoch_batches: Iterator[tuple[int, torch.Tensor]],
    failures: list[tuple[int, str]],
) -> Iterator[DeviceBatch | None]:
    """The batches of a cache on the loader's device (None: every sample failed)."""
    for _, idx in epoch_batches:
        images, kept = cache.gather(idx)
        failures.extend((int(i), _CACHE_FAILURE) for i in dropped(idx, kept))
        yield DeviceBatch(images, kept) if len(kept) else None


def host_batch(cache: ImageCache, idx: torch.Tensor, pin: bool) -> HostBatch:
    """One batch of a host or disk cache, as a source's `HostBatch`."""
    images, kept = cache.gather(idx)
    if pin:
        images = images.pin_memory()
    failures = [(int(i), _CACHE_FAILURE) for i in dropped(idx, kept)]
    return HostBatch.decoded(kept, images, failures)


def host_batches(
    cache: ImageCache, epoch_batches: Iterator[tuple[int, torch.Tensor]], pin: bool
) -> Iterator[HostBatch]:
    """The batches of a host or disk cache, gathered on the CPU."""
    return (host_batch(cache, idx, pin) for _, idx in epoch_batches)


def build_cache(
    config: Any,
    dataset: Any,
    pool: WorkerPool,
    load: Callable[[HostBatch, list[tuple[int, str]], torch.device], DeviceBatch | None],
    *,
    device: torch.device,
    batch_size: int,
    rank: int,
) -> ImageCache:
    """Opens an up-to-date disk cache, or decodes every sample once into a new cache.

    Args:
        config: the `gpuaug.LoaderConfig` (``cache``, ``cache_dir``, ``decode``, ``progress``).
        dataset: the data set.
        pool: the loader's workers (they decode the samples).
        load: the transfer stage's host -> device step (``to_device``).
        device: the loader's device.
        batch_size: samples per decoding batch.
        rank: this process's rank (only rank 0 shows a progress bar).
    """
    in_memory = getattr(dataset, "as_cache", None)
    if in_memory is not None:  # images already in memory (gpuaug.arrays): no decoding
        return in_memory(config.cache, device)
    if config.cache == "disk":
        found = ImageCache.open(dataset, cache_dir=config.cache_dir, decoder=config.decode)
        if found is not None:
            return found
    target = device if config.cache == "device" else torch.device("cpu")

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor | None, list[tuple[int, str]]]]:
        for raw in pool.all_batches(batch_size):
            failures: list[tuple[int, str]] = []
            batch = load(raw, failures, target)
            if batch is None:
                yield torch.empty(0, dtype=torch.int64), None, failures
            else:
                yield batch.indices, batch.images, failures

    return ImageCache.build(
        config.cache,
        dataset,
        batches(),
        device=device,
        cache_dir=config.cache_dir,
        decoder=config.decode,
        pin_memory=device.type == "cuda",
        progress=config.progress and rank == 0,
    )
