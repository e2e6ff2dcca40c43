"""``flow_from_directory`` and ``GPULoader``: batches decoded by workers, augmented on the device.

Pipeline per batch::

    EpochBatchSampler --indices--> DataLoader workers (decode + resize, uint8, pinned)
        --non_blocking copy on a side CUDA stream (batch k+1 while batch k trains)-->
        GPUAugment on the device (params from a generator seeded by (seed, epoch, step, rank))
        --> (x float (B, C, H, W), y) on the device

With a cache (``cache="device" | "host" | "disk"``) the images are decoded once and every
later epoch is a gather plus the augmentation, with no worker process. With ``decode="gpu"``
the workers only read file bytes and JPEGs are decoded in batches by nvJPEG.

Epochs you can count:

- by default an epoch is one pass: every image exactly once, in a new order, each with freshly
  drawn augmentation parameters; ``len(loader)`` = ``ceil(n / batch_size)`` batches, the last
  one short (Keras' rule), or ``floor`` with ``drop_last``;
- ``steps_per_epoch=N`` gives N batches per epoch; the passes continue across epoch boundaries,
  so within a pass no image is dropped or repeated;
- the epoch advances by one after each *complete* iteration (``next(iter(loader))`` to peek
  does not advance it); ``set_epoch(e)`` chooses it, as ``DistributedSampler.set_epoch``;
- every batch is a function of ``(seed, epoch, step, rank)``: ``loader.replay(epoch, step)``
  rebuilds it bit for bit (same images, same augmentation parameters).

Under ``torch.distributed`` each rank reads a disjoint shard of each pass (``DistributedSampler``
padding: the shortest shards are completed with repeated images so every rank has the same
number of steps) and draws its own augmentation stream.

Faults: files that fail to decode follow the data set's ``on_error`` (``"raise"``: an
``ImageLoadError`` naming the file; ``"skip"``: the sample leaves its batch, image and label
together, and one warning per epoch lists the files). A worker process that dies raises
:class:`WorkerCrashError` naming the file it was reading. Leaving a loop early (``break``, an
exception, ``KeyboardInterrupt``) shuts the worker processes down; the next iteration starts
new ones.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from gpuaug.augment import AugmentParams, GPUAugment
from gpuaug.cache import CACHE_KINDS, ImageCache
from gpuaug.config import AugmentConfig, load_config
from gpuaug.dataset import DirectoryDataset, encode_targets
from gpuaug.decode import (
    DECODERS,
    check_decode,
    decode_jpeg_batch,
    is_jpeg,
    jpeg_orientation,
    read_file_bytes,
)
from gpuaug.image import ImageLoadError
from gpuaug.sampler import AUGMENT_STREAM, PERMUTATION_STREAM, EpochBatchSampler, mix_seed

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "GPULoader",
    "LoaderConfig",
    "ReplayBatch",
    "WorkerCrashError",
    "flow_from_directory",
]

_MAX_LISTED = 20
_IMAGE, _JPEG, _FAILED = 0, 1, 2
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class WorkerCrashError(RuntimeError):
    """A DataLoader worker process died (killed, segfault, ``os._exit``) while reading files.

    Attributes:
        paths: the files the dead worker(s) were decoding (empty when between files).
    """

    def __init__(self, message: str, paths: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.paths = list(paths)


class ReplayBatch(NamedTuple):
    """One batch re-created by :meth:`GPULoader.replay`.

    Attributes:
        x: the augmented images, as the loader yielded them.
        y: the targets (``None`` for ``class_mode=None``; ``x`` for ``"input"``).
        params: the augmentation parameters; row ``i`` (``params.index(i)``) is sample ``i``.
        indices: the data set indices of the rows (CPU int64); ``dataset.samples[j]`` names the
            file.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    params: AugmentParams
    indices: torch.Tensor


def _default_num_workers() -> int:
    return min(4, os.cpu_count() or 1)


def _check_int_or_none(name: str, value: Any, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int or None; got {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum} or None; got {value!r}")


@dataclass(frozen=True)
class LoaderConfig:
    """How a :class:`GPULoader` batches, orders, caches and decodes (no augmentation here).

    Args:
        batch_size: samples per batch.
        shuffle: a new random order every pass (else file order every pass).
        seed: base seed of the order and the augmentation; ``None``: drawn at random when the
            loader is made (then in ``loader.seed`` and ``describe()``).
        steps_per_epoch: batches per epoch; ``None``: one pass over the data. Passes continue
            across epoch boundaries, so no image is dropped or repeated within a pass.
        drop_last: drop the short last batch of each pass.
        num_workers: decoding worker processes; ``None``: ``min(4, os.cpu_count())``; 0 decodes
            in the main process. Workers stay alive between epochs.
        prefetch_factor: batches decoded ahead per worker.
        timeout: seconds to wait for a worker's batch before raising (0: wait for ever; a dead
            worker is detected either way).
        cache: ``None``, ``"device"``, ``"host"`` or ``"disk"`` (see `gpuaug.cache`).
        cache_dir: folder of a ``"disk"`` cache (default ``~/.cache/gpuaug``).
        decode: ``"cpu"`` (PIL in the workers) or ``"gpu"`` (nvJPEG; needs CUDA).
        device: where batches are augmented and returned; ``None``: ``"cuda"`` (the current
            CUDA device: under DDP call ``torch.cuda.set_device(local_rank)`` first) if
            available, else ``"cpu"``.
        dtype: the output float dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        progress: show a progress bar while a cache is built.
        num_replicas, rank: the distributed world; ``None``: from ``torch.distributed`` when
            initialised, else 1 and 0.

    Raises:
        ValueError: a value out of range or not among the allowed ones.
        TypeError: a value of the wrong type.
    """

    batch_size: int = 32
    shuffle: bool = True
    seed: int | None = None
    steps_per_epoch: int | None = None
    drop_last: bool = False
    num_workers: int | None = None
    prefetch_factor: int = 2
    timeout: float = 0.0
    cache: str | None = None
    cache_dir: str | None = None
    decode: str = "cpu"
    device: str | None = None
    dtype: str = "float32"
    progress: bool = True
    num_replicas: int | None = None
    rank: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise TypeError(f"`batch_size` must be an int; got {self.batch_size!r}")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1; got {self.batch_size!r}")
        for name in ("shuffle", "drop_last", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool; got {getattr(self, name)!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise TypeError(f"`seed` must be an int or None; got {self.seed!r}")
        _check_int_or_none("steps_per_epoch", self.steps_per_epoch, 1)
        _check_int_or_none("num_workers", self.num_workers, 0)
        _check_int_or_none("prefetch_factor", self.prefetch_factor, 1)
        _check_int_or_none("num_replicas", self.num_replicas, 1)
        _check_int_or_none("rank", self.rank, 0)
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float):
            raise TypeError(f"`timeout` must be a number of seconds; got {self.timeout!r}")
        if self.timeout < 0:
            raise ValueError(f"`timeout` must be >= 0 seconds; got {self.timeout!r}")
        if self.cache not in (*CACHE_KINDS, None):
            raise ValueError(
                f"`cache` must be 'device', 'host', 'disk' or None; got {self.cache!r}"
            )
        if self.cache_dir is not None and not isinstance(self.cache_dir, str | os.PathLike):
            raise TypeError(f"`cache_dir` must be a path or None; got {self.cache_dir!r}")
        if self.decode not in DECODERS:
            raise ValueError(f"`decode` must be 'cpu' or 'gpu'; got {self.decode!r}")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as exc:
                raise ValueError(f"`device` must name a torch device; got {self.device!r}") from exc
        if self.dtype not in _DTYPES:
            raise ValueError(
                f"`dtype` must be one of {', '.join(map(repr, _DTYPES))}; got {self.dtype!r}"
            )

    @property
    def workers(self) -> int:
        """``num_workers`` with ``None`` resolved."""
        return _default_num_workers() if self.num_workers is None else self.num_workers

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (YAML/JSON-ready)."""
        out = dataclasses.asdict(self)
        if out["cache_dir"] is not None:
            out["cache_dir"] = os.fspath(out["cache_dir"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoaderConfig:
        """The inverse of :meth:`to_dict`; unknown keys are a ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown LoaderConfig field(s): {', '.join(unknown)}")
        return cls(**data)


# ---------------------------------------------------------------------- worker side
class _WorkerView(Dataset):
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


def _collate(items: list[tuple[int, int, Any, int]]) -> dict[str, Any]:
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
    return {
        "indices": torch.tensor(indices, dtype=torch.int64),
        "images": default_collate(images) if images else None,
        "image_pos": torch.tensor(image_pos, dtype=torch.int64),
        "jpegs": jpegs,
        "jpeg_pos": jpeg_pos,
        "orient": orient,
        "failures": failures,
    }


class _EpochView:
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


class _Deferred(NamedTuple):
    error: Exception


class _DeviceBatch(NamedTuple):
    images: torch.Tensor  # (b, C, H, W) uint8 on the device
    indices: torch.Tensor  # (b,) int64 CPU


# ---------------------------------------------------------------------- the loader
class GPULoader:
    """Batches of augmented images and their targets, on the device; epochs you can count.

    Iterate it like a ``DataLoader``: ``for x, y in loader`` (``for x in loader`` with
    ``class_mode=None``). See the module docstring for the epoch rules and
    :meth:`describe` for the numbers of a given loader.

    Args:
        dataset: a `gpuaug.DirectoryDataset` (or an object with its ``samples``, ``targets``,
            ``load(i)``, ``target_size``, ``channels``, ``class_mode``, ``num_classes``,
            ``on_error``...), with a fixed ``target_size``.
        augment: an `AugmentConfig`, a preset name, a YAML path, a `GPUAugment` (used as is:
            fit it first for featurewise statistics) or ``None`` (no augmentation: a float
            conversion).
        config: a :class:`LoaderConfig`.

    Attributes:
        dataset, augment (a `GPUAugment` on :attr:`device`), config, sampler (the
        `EpochBatchSampler`; also ``batch_sampler``, so Lightning calls its ``set_epoch``),
        device, seed, cache (an `ImageCache` or ``None``).

    Shape:
        each batch: x ``(B, C, H, W)`` float (``config.dtype``) on :attr:`device`; y
        ``(B, K)`` float32 (categorical), ``(B,)`` float32 (binary), ``(B,)`` int64 (sparse),
        x itself (input), absent (None). ``B = batch_size`` except the last batch of a pass.

    Raises:
        ValueError: a data set without ``target_size``; ``decode="gpu"`` without CUDA or with
            an interpolation the GPU lacks; ``drop_last`` with a batch larger than the data.
        TypeError: a bad ``augment`` or ``config``.
    """

    def __init__(
        self,
        dataset: Any,
        augment: AugmentConfig | GPUAugment | str | os.PathLike[str] | None = None,
        config: LoaderConfig | None = None,
    ) -> None:
        if config is None:
            config = LoaderConfig()
        if not isinstance(config, LoaderConfig):
            raise TypeError(f"`config` must be a LoaderConfig; got {type(config).__name__}")
        if getattr(dataset, "target_size", None) is None:
            raise ValueError(
                "the loader batches images of one size: the dataset needs a `target_size`; got None"
            )
        self.dataset = dataset
        self.config = config
        self.device = torch.device(
            config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        )
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        check_decode(config.decode, dataset.interpolation, self.device)
        dtype = _DTYPES[config.dtype]
        if isinstance(augment, GPUAugment):
            module = augment
        elif augment is None or isinstance(augment, AugmentConfig):
            module = GPUAugment(augment, dtype=dtype)
        elif isinstance(augment, str | os.PathLike):
            module = GPUAugment(load_config(augment), dtype=dtype)
        else:
            raise TypeError(
                "`augment` must be an AugmentConfig, a preset name, a YAML path, a GPUAugment "
                f"or None; got {type(augment).__name__}"
            )
        self.augment = module.to(self.device)
        self.sampler = EpochBatchSampler(
            len(dataset),
            config.batch_size,
            shuffle=config.shuffle,
            seed=config.seed,
            drop_last=config.drop_last,
            steps_per_epoch=config.steps_per_epoch,
            num_replicas=config.num_replicas,
            rank=config.rank,
        )
        self.seed = self.sampler.seed
        self.num_workers = config.workers
        self._targets = torch.as_tensor(list(dataset.targets), dtype=torch.int64)
        self._cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if self._cuda else None
        self._generator = torch.Generator(device=self.device)
        self._slots = (
            multiprocessing.RawArray("q", [-1] * self.num_workers) if self.num_workers else None
        )
        self._epoch_view = _EpochView(self.sampler)
        self._dataloader: DataLoader | None = None
        self._active_run: object | None = None
        self.last_skipped: list[tuple[str, str]] = []
        self.cache: ImageCache | None = None
        if config.cache is not None:
            self.cache = self._build_cache()

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def batch_sampler(self) -> EpochBatchSampler:
        """The sampler (Lightning calls ``set_epoch`` on a loader's ``batch_sampler``)."""
        return self.sampler

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (``len(loader)``)."""
        return self.sampler.steps_per_epoch

    @property
    def samples_per_epoch(self) -> int:
        """Samples yielded in the current epoch on this rank (before skipped bad files)."""
        return self.sampler.samples_in_epoch(self.sampler.epoch)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration runs."""
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Makes the next iteration run epoch ``epoch`` (order and augmentation)."""
        self.sampler.set_epoch(epoch)

    @property
    def class_mode(self) -> str | None:
        return self.dataset.class_mode

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Any]:
        return self._run(self.sampler.epoch, self.sampler._set_count)

    def _run(self, epoch: int, set_count: int) -> Iterator[Any]:
        failures: list[tuple[int, str]] = []
        completed = False
        token = self._active_run = object()
        try:
            for step, batch in enumerate(self._device_batches(epoch, failures)):
                if batch is None:
                    continue
                yield self._finish(batch, epoch, step)[0]
            completed = True
        finally:
            if not completed and self._active_run is token:
                # Left early (break, exception, KeyboardInterrupt, a dropped peek): stop the
                # workers now. A stale generator closed later leaves a newer run alone.
                self._shutdown_workers()
            self.last_skipped = [(self.dataset.samples[i][0], r) for i, r in failures]
            if failures:
                warnings.warn(
                    f"Skipped {len(failures)} unreadable image file(s) in epoch {epoch} "
                    f"(on_error='skip'; see `loader.last_skipped`): "
                    f"{_listing(self.last_skipped)}",
                    stacklevel=2,
                )
            if completed and self.sampler._set_count == set_count:
                self.sampler.epoch = epoch + 1

    def _device_batches(
        self, epoch: int, failures: list[tuple[int, str]]
    ) -> Iterator[_DeviceBatch | None]:
        """The uint8 batches of ``epoch`` on the device, one per step (None: all skipped)."""
        if self.cache is not None and self.cache.device == self.device:
            for _, idx in self.sampler.epoch_batches(epoch):
                images, kept = self.cache.gather(idx)
                failures.extend(
                    (int(i), "failed when the cache was built") for i in _dropped(idx, kept)
                )
                yield _DeviceBatch(images, kept) if len(kept) else None
            return
        if self.cache is not None:
            raw = (self._cache_raw(idx) for _, idx in self.sampler.epoch_batches(epoch))
        else:
            raw = self._worker_batches(epoch)
        yield from self._prefetched(raw, failures)

    def _cache_raw(self, idx: torch.Tensor) -> dict[str, Any]:
        images, kept = self.cache.gather(idx)
        if self._cuda:
            images = images.pin_memory()
        failures = [(int(i), "failed when the cache was built") for i in _dropped(idx, kept)]
        return _raw(kept, images, failures)

    def _prefetched(
        self, raw_batches: Iterator[dict[str, Any]], failures: list[tuple[int, str]]
    ) -> Iterator[_DeviceBatch | None]:
        """Device batches; batch k+1 is copied (side stream) before batch k is handed out."""
        stream = self._stream

        def load(raw: dict[str, Any]) -> _DeviceBatch | None:
            if stream is None:
                return self._materialize(raw, failures)
            with torch.cuda.stream(stream):
                return self._materialize(raw, failures)

        end = object()

        def fetch() -> Any:
            # An error while fetching or copying batch k+1 is raised at step k+1, after
            # batch k has been handed out, not one step early.
            try:
                raw = next(raw_batches, end)
                return raw if raw is end else load(raw)
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

    def _materialize(
        self,
        raw: dict[str, Any],
        failures: list[tuple[int, str]],
        device: torch.device | None = None,
    ) -> _DeviceBatch | None:
        """A worker batch on ``device`` (default the loader's): copy, decode the JPEGs (on the
        loader's device), apply ``on_error``."""
        device = self.device if device is None else device
        indices: torch.Tensor = raw["indices"]
        bad = list(raw["failures"])
        images = raw["images"]
        if images is not None:
            where = self.device if raw["jpegs"] else device
            images = images.to(where, non_blocking=True)
        if raw["jpegs"]:
            decoded = decode_jpeg_batch(
                raw["jpegs"],
                self.device,
                self.dataset.target_size,
                self.dataset.color_mode,
                self.dataset.interpolation,
                orientations=raw["orient"],
                paths=[self.dataset.samples[int(indices[p])][0] for p in raw["jpeg_pos"]],
                on_error="return",
            )
            c, (h, w) = self.dataset.channels, self.dataset.target_size
            full = torch.empty((len(indices), c, h, w), dtype=torch.uint8, device=self.device)
            if images is not None:
                full[raw["image_pos"].to(self.device)] = images
            keep = torch.ones(len(indices), dtype=torch.bool)
            for p, out in zip(raw["jpeg_pos"], decoded, strict=True):
                if isinstance(out, ImageLoadError):
                    bad.append((int(indices[p]), out.reason or str(out)))
                    keep[p] = False
                else:
                    full[p] = out
            if not bool(keep.all()):
                full, indices = full[keep.to(self.device)], indices[keep]
            images = full.to(device)
        if bad:
            if self.dataset.on_error == "raise":
                index, reason = min(bad)
                raise ImageLoadError(self.dataset.samples[index][0], reason)
            failures.extend(bad)
        if images is None or len(indices) == 0:
            return None
        return _DeviceBatch(images, indices)

    def _finish(self, batch: _DeviceBatch, epoch: int, step: int) -> tuple[Any, AugmentParams]:
        """Augment on the device with the batch's own generator; encode the targets."""
        g = self._generator.manual_seed(self.augment_seed(epoch, step))
        params = self.augment.sample_params(batch.images, generator=g)
        x = self.augment.apply(batch.images, params)
        mode = self.dataset.class_mode
        if mode is None:
            return x, params
        if mode == "input":
            return (x, x), params
        cls = self._targets[batch.indices].to(self.device, non_blocking=True)
        y = encode_targets(cls, mode, self.dataset.num_classes)
        return (x, y), params

    def augment_seed(self, epoch: int, step: int) -> int:
        """The seed of the augmentation generator of batch ``step`` of ``epoch`` on this rank."""
        return mix_seed(self.seed, AUGMENT_STREAM, epoch, step, self.sampler.rank)

    # ------------------------------------------------------------------ workers
    def _make_dataloader(self, batch_sampler: Any, persistent: bool) -> DataLoader:
        workers = self.num_workers
        kwargs: dict[str, Any] = {}
        if workers:
            kwargs.update(
                prefetch_factor=self.config.prefetch_factor,
                persistent_workers=persistent,
                timeout=self.config.timeout,
            )
        return DataLoader(
            _WorkerView(self.dataset, self.config.decode, self._slots),
            batch_sampler=batch_sampler,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=self._cuda,
            generator=torch.Generator().manual_seed(self.seed % 2**63),
            **kwargs,
        )

    def _worker_batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        if self._dataloader is None:
            self._dataloader = self._make_dataloader(self._epoch_view, persistent=True)
        self._epoch_view.epoch = epoch
        yield from self._guarded(iter(self._dataloader))

    def _guarded(self, iterator: Any) -> Iterator[dict[str, Any]]:
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
                self._shutdown_workers(iterator)
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
            index = self._slots[wid] if self._slots is not None and wid < len(self._slots) else -1
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

    def _shutdown_workers(self, iterator: Any = None) -> None:
        """Stops the worker processes now; the next iteration starts new ones."""
        dl, self._dataloader = self._dataloader, None
        its = [iterator, getattr(dl, "_iterator", None) if dl is not None else None]
        if dl is not None:
            dl._iterator = None
        for it in its:
            if it is not None and hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()
        if self._slots is not None:
            for i in range(len(self._slots)):
                self._slots[i] = -1

    def close(self) -> None:
        """Shuts the worker processes down (a later iteration starts new ones)."""
        self._shutdown_workers()

    def __enter__(self) -> GPULoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._shutdown_workers()
        except Exception:
            pass

    # ------------------------------------------------------------------ cache
    def _all_batches(
        self, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, list[tuple[int, str]]]]:
        """Every sample once, in order, decoded (workers, or nvJPEG) and on ``device``."""
        dl = self._make_dataloader(_Chunks(len(self.dataset), self.batch_size), persistent=False)
        iterator = iter(dl)
        try:
            for raw in self._guarded(iterator):
                failures: list[tuple[int, str]] = []
                batch = self._materialize(raw, failures, device)
                if batch is None:
                    yield torch.empty(0, dtype=torch.int64), None, failures
                else:
                    yield batch.indices, batch.images, failures
        finally:
            if hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()

    def _build_cache(self) -> ImageCache:
        cfg = self.config
        if cfg.cache == "disk":
            found = ImageCache.open(self.dataset, cache_dir=cfg.cache_dir, decoder=cfg.decode)
            if found is not None:
                return found
        progress = cfg.progress and self.sampler.rank == 0
        return ImageCache.build(
            cfg.cache,
            self.dataset,
            self._all_batches(self.device if cfg.cache == "device" else torch.device("cpu")),
            device=self.device,
            cache_dir=cfg.cache_dir,
            decoder=cfg.decode,
            pin_memory=self._cuda,
            progress=progress,
        )

    # ------------------------------------------------------------------ replay
    def replay(self, epoch: int, step: int) -> ReplayBatch:
        """Re-creates batch ``step`` of epoch ``epoch`` exactly (indices, pixels, params).

        Runs in the main process (no workers); reads the cache when there is one, else decodes
        the batch's files again, the same way the loader does.

        Raises:
            ValueError: ``step`` not in ``[0, len(loader))``, or every file of the batch failed.
        """
        idx = self.sampler.batch(epoch, step)
        failures: list[tuple[int, str]] = []
        if self.cache is not None:
            images, kept = self.cache.gather(idx)
            batch = _DeviceBatch(images.to(self.device), kept) if len(kept) else None
        else:
            view = _WorkerView(self.dataset, self.config.decode)
            batch = self._materialize(_collate([view[int(i)] for i in idx]), failures)
        if batch is None:
            raise ValueError(f"every file of epoch {epoch} step {step} failed to load")
        out, params = self._finish(batch, epoch, step)
        if self.dataset.class_mode is None:
            return ReplayBatch(out, None, params, batch.indices)
        return ReplayBatch(out[0], out[1], params, batch.indices)

    def preview(self, n: int = 16, rows: int = 4, seed: int = 0) -> Image.Image:
        """A grid of this loader's images and fresh augmentations, captioned with their params.

        `gpuaug.preview.make_preview` on this loader's data set and augmentation, on its
        device: each row one source image (classes in turn), first column as decoded, then
        augmentations; normalisation is not shown. ``loader.preview().save("grid.png")``.
        """
        from gpuaug.preview import make_preview

        return make_preview(
            self.dataset, self.augment.config, n=n, rows=rows, seed=seed, device=self.device
        )

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        """The numbers behind :meth:`describe`, as a dict."""
        s = self.sampler
        n = len(self.dataset)
        return {
            "root": str(self.dataset.root),
            "num_samples": n,
            "num_classes": self.dataset.num_classes,
            "class_counts": dict(self.dataset.counts()),
            "subset": getattr(self.dataset, "subset", None),
            "validation_split": getattr(self.dataset, "validation_split", 0.0),
            "batch_size": s.batch_size,
            "shuffle": s.shuffle,
            "drop_last": s.drop_last,
            "seed": s.seed,
            "seed_given": s.seed_was_given,
            "epoch": s.epoch,
            "num_replicas": s.num_replicas,
            "rank": s.rank,
            "padding": s.samples_per_pass * s.num_replicas - n,
            "samples_per_pass": s.samples_per_pass,
            "steps_per_pass": s.steps_per_pass,
            "steps_per_epoch": s.steps_per_epoch,
            "passes_per_epoch": s.passes_in_epoch(),
            "samples_per_epoch": s.samples_in_epoch(s.epoch),
            "last_batch_size": s.last_batch_size,
            "dropped_per_pass": s.samples_per_pass - s.steps_per_pass * s.batch_size
            if s.drop_last
            else 0,
            "device": str(self.device),
            "cache": self.config.cache,
            "cache_bytes": self.cache.nbytes if self.cache is not None else 0,
            "decode": self.config.decode,
            "num_workers": self.num_workers if self.cache is None else 0,
            "target_size": tuple(self.dataset.target_size),
            "channels": self.dataset.channels,
            "class_mode": self.dataset.class_mode,
        }

    def describe(self) -> str:
        """What one epoch is: images per class, samples and steps per epoch, augmentation,
        and where each sample's randomness comes from. ``print(loader.describe())``."""
        st = self.stats()
        s = self.sampler
        n, b = st["num_samples"], st["batch_size"]
        lines = [f"gpuaug.GPULoader over {st['root']}"]
        subset = ""
        if st["subset"] is not None:
            subset = f" (subset {st['subset']!r}, validation_split={st['validation_split']:g})"
        counts = ", ".join(f"{k}={v}" for k, v in st["class_counts"].items())
        lines.append(
            f"  Found {n} images belonging to {st['num_classes']} classes{subset}: {counts}"
        )
        skipped = getattr(self.dataset, "skipped", [])
        if skipped:
            lines.append(
                f"  {len(skipped)} unreadable file(s) left out when indexing (on_error='skip'; "
                "see dataset.skipped)"
            )
        h, w = st["target_size"]
        lines.append(
            f"  images: {h}x{w}, {self.dataset.color_mode} ({st['channels']} channels), resized "
            f"with {self.dataset.interpolation!r}; class_mode={st['class_mode']!r}"
        )
        lines.append("Epoch:")
        shard = n
        if s.num_replicas > 1:
            shard = s.samples_per_pass
            pad = st["padding"]
            lines.append(
                f"  distributed: rank {s.rank} of {s.num_replicas}; each rank reads a disjoint "
                f"shard of {shard} images per pass"
                + (f" ({pad} image(s) repeated to make the shards equal)" if pad else "")
            )
        rule = f"floor({shard} / {b})" if s.drop_last else f"ceil({shard} / {b})"
        lines.append(
            f"  batch_size={b}, shuffle={s.shuffle}, drop_last={s.drop_last}: one pass = "
            f"{s.steps_per_pass} step{'s' if s.steps_per_pass != 1 else ''} = {rule}"
        )
        if s.drop_last:
            lines.append(
                f"  the last {st['dropped_per_pass']} image(s) of each pass's order are dropped "
                "(a different few each pass when shuffled)"
            )
        elif s.last_batch_size != b and s.steps_per_pass > 1:
            lines.append(
                f"  the last batch of each pass holds {s.last_batch_size} images (as Keras)"
            )
        if self.config.steps_per_epoch is None:
            lines.append(
                f"  steps per epoch: {s.steps_per_epoch} (one pass, the default); samples per "
                f"epoch: {st['samples_per_epoch']}"
                + (" (every image exactly once)" if not s.drop_last else "")
            )
        else:
            sizes = [s.samples_in_epoch(e) for e in range(min(s.steps_per_pass, 1000))]
            lo, hi = min(sizes), max(sizes)
            sp = f"{lo}" if lo == hi else f"{lo} to {hi} (depends on where the short batches fall)"
            lines.append(
                f"  steps per epoch: {s.steps_per_epoch} (steps_per_epoch) = "
                f"{st['passes_per_epoch']:.3g} passes; samples per epoch: {sp}"
            )
            lines.append(
                "  passes run on across epoch boundaries: within a pass no image is dropped or "
                "repeated; epoch e is steps [e * steps_per_epoch, (e + 1) * steps_per_epoch) "
                "of the endless stream of passes"
            )
        lines.append(f"  len(loader) = {len(self)}; next epoch: {s.epoch}")
        lines.append(f"Augmentation (per sample, on {self.device}):")
        lines.extend("  " + line for line in self.augment.config.describe().splitlines())
        lines.append("Randomness:")
        seed_note = "" if s.seed_was_given else ", drawn at random; pass seed= to fix it"
        per_epoch = st["samples_per_epoch"]
        if s.shuffle and self.config.steps_per_epoch is None and not s.drop_last:
            order = f"Each epoch visits every image once in a new order (seed {s.seed}, epoch E)"
        elif s.shuffle:
            order = f"Each pass visits the images in a new order (seed {s.seed}, pass p)"
        else:
            order = f"Each pass visits the images in file order (seed {s.seed})"
        if _is_random(self.augment.config):
            lines.append(
                f"  {order}; each visit draws fresh parameters from a torch.Generator on "
                f"{self.device} seeded by (seed, epoch, step, rank); nothing is stored. "
                f"{per_epoch} augmented samples per epoch, 'infinitely many' distinct over "
                "epochs."
            )
        else:
            lines.append(
                f"  {order}; no random augmentation: every visit of an image gives the same "
                f"pixels. {per_epoch} samples per epoch."
            )
        lines.append(
            f"  seed {s.seed}{seed_note}. Order of pass p: torch.randperm({n}) with a CPU "
            f"generator seeded mix_seed(seed, {PERMUTATION_STREAM:#x}, p); batch (E, step): "
            f"generator seeded mix_seed(seed, {AUGMENT_STREAM:#x}, E, step, rank). "
            "loader.replay(E, step) rebuilds any batch; row i's parameters: params.index(i)."
        )
        lines.append("Pipeline:")
        if self.cache is not None:
            c = self.cache
            where = c.path if c.kind == "disk" else c.device
            lines.append(
                f"  cache={c.kind!r}: {len(c)} images x {c.nbytes / max(len(c), 1) / 1e3:.1f} kB "
                f"= {c.nbytes / 1e6:.1f} MB uint8 at {where}, "
                + ("built by this process" if c.built else "read from disk (up to date)")
                + "; each epoch gathers from it (no worker processes)"
            )
        else:
            lines.append(
                f"  decode={self.config.decode!r} in {self.num_workers} worker process(es)"
                + (" (0: in the main process)" if not self.num_workers else "")
                + f"; uint8 batches copied to {self.device}"
                + (" on a side CUDA stream, one batch ahead" if self._cuda else "")
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self.dataset)} images, batch_size={self.batch_size}, "
            f"steps_per_epoch={self.steps_per_epoch}, epoch={self.epoch}, device={self.device}, "
            f"cache={self.config.cache!r}, decode={self.config.decode!r})"
        )


def _raw(
    indices: torch.Tensor, images: torch.Tensor | None, failures: list[tuple[int, str]]
) -> dict[str, Any]:
    return {
        "indices": indices,
        "images": images if images is not None and len(indices) else None,
        "image_pos": torch.arange(len(indices)),
        "jpegs": [],
        "jpeg_pos": [],
        "orient": [],
        "failures": failures,
    }


def _is_random(config: AugmentConfig) -> bool:
    """Whether the config draws any random parameter."""
    return bool(
        config.has_geometry
        or config.horizontal_flip
        or config.vertical_flip
        or config.channel_shift_range
        or config.brightness_range is not None
    )


def _dropped(requested: torch.Tensor, kept: torch.Tensor) -> list[int]:
    if len(requested) == len(kept):
        return []
    keep = set(kept.tolist())
    return [i for i in requested.tolist() if i not in keep]


def _listing(items: Sequence[tuple[str, str]]) -> str:
    shown = "; ".join(f"{path} ({reason})" for path, reason in items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f"; ... and {len(items) - _MAX_LISTED} more"
    return shown


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(
        f"`dtype` must be torch.float32, torch.float16 or torch.bfloat16; got {dtype!r}"
    )


def flow_from_directory(
    directory: str | os.PathLike[str],
    augment: AugmentConfig | GPUAugment | str | os.PathLike[str] | None = None,
    target_size: tuple[int, int] = (256, 256),
    color_mode: str = "rgb",
    classes: Sequence[str] | None = None,
    class_mode: str | None = "categorical",
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = None,
    subset: str | None = None,
    validation_split: float | None = None,
    interpolation: str = "nearest",
    follow_links: bool = False,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    steps_per_epoch: int | None = None,
    drop_last: bool = False,
    cache: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    decode: str = "cpu",
    on_error: str = "raise",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> GPULoader:
    """Keras' ``ImageDataGenerator(...).flow_from_directory(...)``, augmented on the GPU.

    The data set (`gpuaug.DirectoryDataset`) indexes ``directory/<class>/...`` exactly as
    Keras does; the loader (:class:`GPULoader`) batches, augments on ``device`` and counts
    epochs (see the module docstring; ``print(loader.describe())`` gives the numbers).

    Args:
        directory: root folder, one sub-folder per class.
        augment: an `AugmentConfig`, a preset name (``"chollet_cats_dogs"``), a YAML path, a
            `GPUAugment` or ``None`` (no augmentation).
        target_size: ``(height, width)`` every image is resized to when decoded.
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"``.
        classes: class folder names in index order (default: sorted sub-folders).
        class_mode: ``"categorical"``, ``"binary"``, ``"sparse"``, ``"input"`` or ``None``.
        batch_size, shuffle, seed, steps_per_epoch, drop_last, num_workers, cache, cache_dir,
            decode, progress: see :class:`LoaderConfig`.
        subset: ``"training"``, ``"validation"`` or ``None``.
        validation_split: fraction held out per class; ``None`` takes the augmentation
            config's ``validation_split`` (where Keras keeps it).
        interpolation: the resize filter (Keras name; ``"nearest"`` as Keras).
        follow_links: descend into linked sub-folders.
        device: where batches are augmented and returned (default CUDA if available).
        on_error: ``"raise"`` or ``"skip"`` unreadable files (see `gpuaug.DirectoryDataset`).
        dtype: output float dtype.

    Returns:
        A :class:`GPULoader`.

    Raises:
        ValueError: a bad value (naming the argument), an empty folder, ``decode="gpu"``
            without CUDA, a ``validation_split`` that contradicts the config's.
        TypeError: a value of the wrong type.
        FileNotFoundError: ``directory`` does not exist.
    """
    if isinstance(augment, str | os.PathLike) and not isinstance(augment, GPUAugment):
        augment = load_config(augment)
    aug_config = augment.config if isinstance(augment, GPUAugment) else augment
    config_split = aug_config.validation_split if aug_config is not None else 0.0
    if validation_split is None:
        validation_split = config_split
    elif config_split and validation_split != config_split:
        raise ValueError(
            f"`validation_split`={validation_split!r} contradicts the augmentation config's "
            f"validation_split={config_split!r}; give it in one place"
        )
    dataset = DirectoryDataset(
        directory,
        target_size=target_size,
        color_mode=color_mode,
        classes=classes,
        class_mode=class_mode,
        interpolation=interpolation,
        follow_links=follow_links,
        validation_split=validation_split,
        subset=subset,
        on_error=on_error,
    )
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"`dtype` must be a torch.dtype; got {dtype!r}")
    config = LoaderConfig(
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        drop_last=drop_last,
        num_workers=num_workers,
        cache=cache,
        cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
        decode=decode,
        device=str(device) if device is not None else None,
        dtype=_dtype_name(dtype),
        progress=progress,
    )
    return GPULoader(dataset, augment, config)
