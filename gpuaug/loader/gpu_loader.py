"""``flow_from_directory`` and ``GPULoader``: batches decoded by workers, augmented on the device.

Pipeline per batch (each stage a module of `gpuaug.loader.stages`; this module only composes them
and owns epochs, lifetime and the public surface)::

    EpochBatchSampler --indices--> DataLoader workers (decode + resize, uint8, pinned)
        --non_blocking copy on a side CUDA stream (batch k+1 while batch k trains)-->
        GPUAugment on the device (params drawn from a CPU generator seeded by
        (seed, epoch, step, rank), copied to the device: the same on every device)
        --> (x float (B, C, H, W), y) on the device

Nothing on the per-batch path makes the host wait for the GPU (no ``.item()``, ``.tolist()``,
``nonzero``, boolean masks or blocking copies); `gpuaug.sync_check.SyncCheck` checks it in the
test suite.

With ``target_size=None`` each image keeps its own size (capped by the data set's
``max_side``): a batch travels as one packed uint8 buffer and an ``(offset, H, W)`` table,
one gather on the device makes the zero-padded batch (`gpuaug.loader.stages.ragged`), and the
loader's ``recipe`` (a `gpuaug.augment.recipe.TrainRecipe` or ``EvalRecipe``, in place of
``augment``) crops each image from its own pixels with the batch's seed.

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
  rebuilds it bit for bit (same images, same augmentation parameters), and
  ``loader.state_dict()`` / ``load_state_dict()`` resume mid-epoch at the very next batch
  without reading the ones before it (`gpuaug.loader.state`).

Under ``torch.distributed`` each rank reads a disjoint shard of each pass (``DistributedSampler``
padding: the shortest shards are completed with repeated images so every rank has the same
number of steps) and draws its own augmentation stream. No constructor runs a collective (a
loader made on some ranks only cannot deadlock): ``seed=None`` is agreed through the process
group's store; a ``"disk"`` cache is built by the first process to take its file lock while
the others wait and then open it. ``device=f"cuda:{local_rank}"`` is honoured without
``torch.cuda.set_device`` (streams, pinned memory and the pin-memory thread use that device).

Faults: files that fail to decode follow the data set's ``on_error`` (``"raise"``: an
``ImageLoadError`` naming the file; ``"skip"``: one warning per epoch lists the files, in
``loader.last_skipped``). Skipping in one process drops the sample from its batch, image and
label together (Keras' behaviour; a batch whose every file failed is replaced as below, so an
epoch always yields ``len(loader)`` batches); under ``torch.distributed`` it *replaces* the
sample by another one of its batch (or, if the whole batch failed, by the next readable sample), so
every rank runs the same steps with the same batch shapes and the all-reduce cannot hang (see
`gpuaug.loader.stages.skip`; ``loader.skip_rule``). A worker process that dies raises
:class:`WorkerCrashError` naming the file it was reading. Leaving a loop early (``break``, an
exception, ``KeyboardInterrupt``) shuts the worker processes down; the next iteration starts
new ones.

Two iterations at once (``next(iter(loader))`` inside ``for x, y in loader``, or
``zip(iter(loader), iter(loader))``) are both exact: the first holds the persistent workers,
the other runs worker processes of its own, stopped when it ends or is dropped.

Why one module (over 600 lines): `GPULoader` is the one object a training loop holds; besides
epochs, lifetime, replay and resume it carries the Keras iterator surface that Keras code reads
(``n``, ``filenames``, ``classes``, ``class_indices``, ...). The per-batch work is in
`gpuaug.loader.stages`, the resume state in `gpuaug.loader.state`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.module import AugmentDraws, AugmentParams, GPUAugment
from gpuaug.augment.recipe import EvalRecipe
from gpuaug.augment.rrc import center_crop_params
from gpuaug.data.cache import ImageCache
from gpuaug.data.nvjpeg import JpegDecoder, check_decode
from gpuaug.data.ragged_cache import RaggedCache
from gpuaug.device import resolve_device
from gpuaug.loader.agreement import check_rank_agreement, data_digest, rank_slot
from gpuaug.loader.config import DTYPES, LoaderConfig
from gpuaug.loader.report import describe_loader, loader_stats
from gpuaug.loader.sampler import AUGMENT_STREAM, EpochBatchSampler, mix_seed
from gpuaug.loader.stages import jpeg_decode
from gpuaug.loader.stages.batch import DeviceBatch, HostBatch, failed_path
from gpuaug.loader.stages.cache_source import CacheSource, build_cache, rank_share
from gpuaug.loader.stages.finish import (
    Finisher,
    augment_module,
    check_recipe,
    recipe_module,
)
from gpuaug.loader.stages.layout import choose_layout
from gpuaug.loader.stages.skip import replace_failed, settle_failures
from gpuaug.loader.stages.transfer import Prefetcher, to_device
from gpuaug.loader.stages.workers import WorkerCrashError, WorkerPool
from gpuaug.loader.state import Resume, check_state, make_state

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "GPULoader",
    "LoaderConfig",
    "ReplayBatch",
    "WorkerCrashError",
]

_MAX_LISTED = 20


class ReplayBatch(NamedTuple):
    """One batch re-created by :meth:`GPULoader.replay`.

    Attributes:
        x: the augmented images, as the loader yielded them.
        y: the targets (``None`` for ``class_mode=None``; ``x`` for ``"input"``).
        params: the augmentation parameters; row ``i`` (``params.index(i)``) is sample ``i``.
            With a ``recipe``: its `gpuaug.augment.recipe.RecipeParams` (an ``EvalRecipe``:
            the centre crops' `gpuaug.augment.rrc.CropParams`).
        indices: the data set indices of the rows (CPU int64); ``dataset.samples[j]`` names the
            file.
        kornia_params: the kornia stages' parameters (kornia's ``_params``, a list of
            ``ParamItem``), None without kornia stages.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    params: AugmentParams
    indices: torch.Tensor
    kornia_params: list[Any] | None = None


class GPULoader:
    """Batches of augmented images and their targets, on the device; epochs you can count.

    Iterate it like a ``DataLoader``: ``for x, y in loader`` (``for x in loader`` with
    ``class_mode=None``). See the module docstring for the epoch rules and
    :meth:`describe` for the numbers of a given loader.

    Args:
        dataset: a `gpuaug.DirectoryDataset`, or any object with the members listed in
            `gpuaug.loader.stages` (the data set protocol); ``target_size=None`` (images at
            their own sizes) needs a ``recipe``.
        augment: an `AugmentConfig`, a preset name, a YAML path, a `GPUAugment` (used as is:
            fit it first for featurewise statistics) or ``None`` (no augmentation: a float
            conversion).
        config: a :class:`LoaderConfig`.
        recipe: a `gpuaug.augment.recipe.TrainRecipe` / ``EvalRecipe`` (or a recipe preset
            name, YAML path or ``RecipeConfig``) run on each uint8 batch instead of
            ``augment`` (which must then be ``None``); see :attr:`recipe`.

    Attributes:
        dataset: the data set it batches.
        augment: a `GPUAugment` on :attr:`device`.
        config: its `LoaderConfig`.
        sampler: the `EpochBatchSampler`; also ``batch_sampler``, so Lightning calls its
            ``set_epoch``.
        device: where batches are augmented and returned.
        seed: the base seed (drawn at random when none was given).
        cache: an `ImageCache` (a `gpuaug.data.ragged_cache.RaggedCache` with
            ``target_size=None``) or ``None``.
        layout: the pixel layout of the uint8 batches it assembles, ``"planar"`` or
            ``"rgbx"`` (``LoaderConfig.layout``; ``layout_reason`` says why).
        last_skipped: ``[(path, reason), ...]`` of the last epoch, ``on_error="skip"``.
        skip_rule: ``"shrink"`` in one process, ``"replace"`` under DDP; see
            `gpuaug.loader.stages.skip`. Keras' iterator names too: ``n``, ``samples``,
            ``filenames``, ``filepaths``, ``classes`` (per-sample class indices),
            ``class_indices``, ``labels``, ``image_shape`` (``(C, H, W)``), ``batch_index``;
            ``next(loader)`` runs on across epochs as a Keras iterator does, ``loader[i]`` is
            batch ``i`` of the current epoch and ``reset()`` restarts it.

    Shape:
        each batch: x ``(B, C, H, W)`` float (``config.dtype``) on :attr:`device`; y
        ``(B, K)`` float32 (categorical), ``(B,)`` float32 (binary), ``(B,)`` int64 (sparse),
        x itself (input), absent (None). ``B = batch_size`` except the last batch of a pass.

    Raises:
        ValueError: ``target_size=None`` without a ``recipe``, a ``recipe`` with an
            ``augment`` or another channel count; ``decode="gpu"`` without CUDA or with
            an interpolation the GPU lacks; ``drop_last`` with a batch larger than the data.
        TypeError: a bad ``augment`` or ``config``.
    """

    def __init__(
        self,
        dataset: Any,
        augment: AugmentConfig | GPUAugment | str | os.PathLike[str] | None = None,
        config: LoaderConfig | None = None,
        recipe: Any = None,
    ) -> None:
        if config is None:
            config = LoaderConfig()
        if not isinstance(config, LoaderConfig):
            raise TypeError(f"`config` must be a LoaderConfig; got {type(config).__name__}")
        recipe = recipe_module(recipe, getattr(dataset, "num_classes", None))
        ragged = getattr(dataset, "target_size", None) is None
        check_recipe(recipe, augment, dataset, config, ragged)
        self.dataset = dataset
        #: ``target_size=None``: each image at its own size, batches packed by the workers and
        #: unpacked on the device (`gpuaug.loader.stages.ragged`), cropped by the recipe.
        self.ragged = ragged
        self.config = config
        self.device = resolve_device(config.device)  # LOCAL_RANK under torchrun; names `device`
        check_decode(
            config.decode,
            dataset.interpolation,
            self.device,
            keep_aspect_ratio=bool(getattr(dataset, "keep_aspect_ratio", False)),
            draft=bool(getattr(dataset, "draft", False)),
        )
        self.augment = augment_module(augment, DTYPES[config.dtype]).to(self.device)
        self.layout, self.layout_reason = choose_layout(
            config.layout, self.augment, dataset, self.device, config.cache,
            recipe=recipe is not None,
        )  # fmt: skip
        self.sampler = EpochBatchSampler(
            len(dataset),
            config.batch_size,
            shuffle=config.shuffle,
            seed=config.seed,
            drop_last=config.drop_last,
            steps_per_epoch=config.steps_per_epoch,
            num_replicas=config.num_replicas,
            rank=config.rank,
            seed_key=data_digest(dataset),
            stick_to_shard=config.cache_per_rank,
        )
        self._rank_slot = rank_slot(self.sampler)  # checked at the first batch (DDP)
        self.seed = self.sampler.seed
        self.num_workers = config.workers
        self._cuda = self.device.type == "cuda"
        # np.asarray: a TargetList (gpuaug.data.index) converts in one copy, a list as before
        self._targets = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
        # Failed samples under on_error="skip": dropped in one process, replaced under DDP so
        # that every rank runs the same steps with the same shapes (see gpuaug.loader.stages.skip).
        self.skip_rule = "replace" if self.sampler.num_replicas > 1 else "shrink"
        self._workers = WorkerPool(
            dataset,
            self.sampler,
            decode=config.decode,
            num_workers=self.num_workers,
            prefetch_factor=config.prefetch_factor,
            timeout=config.timeout,
            seed=self.seed,
            device=self.device,
            layout=self.layout,
        )
        self._prefetcher = Prefetcher(self.device)
        self._jpeg_decoder = (  # nvJPEG on a background thread, batches decoded ahead
            JpegDecoder(
                self.device,
                dataset.target_size,
                dataset.color_mode,
                dataset.interpolation,
                max_side=getattr(dataset, "max_side", None),
                layout=self.layout,
            )  # fmt: skip
            if config.decode == "gpu"
            else None
        )  # fmt: skip
        self._finisher = Finisher(self.augment, dataset, self.device)
        self._finisher.recipe = None if recipe is None else recipe.to(self.device)
        # the fused kernels compile (or load from Triton's cache) while the first batch decodes
        self.compiling_ahead = (
            None
            if recipe is not None
            else self.augment.prepare(self.image_shape, self.device, self.layout)
        )
        self.last_skipped: list[tuple[str, str]] = []
        self.batch_index = 0  # Keras' name: the step the running epoch reaches next
        self.saver: Any = None  # a gpuaug.keras.saving.BatchSaver (save_to_dir), set by its caller
        self.augment_notes: list[str] = []  # extra lines for describe()'s augmentation part
        self._endless: Generator[Any, None, None] | None = None  # next(loader), as Keras' iterators
        self._resume: Resume | None = None  # set by load_state_dict: where the next epoch starts
        # The running iterations, outermost first: [epoch, failures, batches handed out] each
        # (a peek inside a loop is a second one; state_dict() reports the first).
        self._lives: list[list[Any]] = []
        self.cache: ImageCache | RaggedCache | None = None
        self._cache_source: CacheSource | None = None
        if config.cache is not None:
            share = rank_share(dataset, self.sampler)  # cache_per_rank: this rank's samples
            self.cache = build_cache(
                config,
                dataset,
                self._workers,
                self._to_device,
                device=self.device,
                batch_size=self.batch_size,
                rank=self.sampler.rank,
                share=share,
                layout=self.layout,
            )
            self._cache_source = CacheSource(
                self.cache,
                self.sampler,
                self.device,
                self._targets,
                self.skip_rule,
                None if share is None else share.indices,
                self.layout,
            )

    @property
    def recipe(self) -> Any:
        """The `TrainRecipe` or `EvalRecipe` run on each batch in place of ``augment``
        (``GPULoader(..., recipe=...)``), or None. Its params are drawn from the batch's seed,
        so ``replay`` and the epochs stay exact; ``replay(e, s).params`` is its
        `gpuaug.augment.recipe.RecipeParams` (the crop params alone for an `EvalRecipe`)."""
        return self._finisher.recipe

    @property
    def mix(self) -> Any:
        """MixUp / CutMix applied after the augmentation (a `gpuaug.augment.mixup.Mixup`), or
        None. Set it to mix each batch: y becomes ``(B, num_classes)`` float32 soft targets,
        drawn from the batch's seed after the augmentation's draws (so ``replay`` and the
        epochs stay exact). Needs ``class_mode`` "sparse" or "categorical" (class labels)."""
        return self._finisher.mix

    @mix.setter
    def mix(self, mix: Any) -> None:
        if mix is not None:
            if self.recipe is not None:
                raise ValueError(
                    "`mix` is for the Keras-style augmentation; this loader runs a `recipe`: "
                    "set mixup_alpha / cutmix_alpha in its RecipeConfig instead"
                )
            if self.dataset.class_mode not in ("sparse", "categorical"):
                raise ValueError(
                    "`mix` needs class labels: class_mode 'sparse' or 'categorical'; got "
                    f"{self.dataset.class_mode!r}"
                )
            finisher = self._finisher
            if getattr(self.dataset, "mask_bytes", 0) or finisher.box_tables is not None:
                raise ValueError("`mix` is for class labels; this loader yields masks or boxes")
            if finisher.outputs is not None:
                raise ValueError("`mix` is for class labels; this data set builds its own outputs")
            if getattr(mix, "num_classes", None) != self.dataset.num_classes:
                raise ValueError(
                    f"`mix.num_classes` must be the data's {self.dataset.num_classes} classes; "
                    f"got {getattr(mix, 'num_classes', None)}"
                )
        self._finisher.mix = mix

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

    # ------------------------------------------------------------------ Keras' iterator names
    @property
    def n(self) -> int:
        """The number of samples (Keras' ``Iterator.n``)."""
        return len(self.dataset)

    @property
    def samples(self) -> int:
        """The number of samples (Keras' ``DirectoryIterator.samples``)."""
        return len(self.dataset)

    @property
    def filenames(self) -> list[str]:
        """Each sample's file, relative to the root folder (Keras' ``filenames``)."""
        names = getattr(self.dataset, "filenames", None)
        if names is not None:
            return list(names)
        root = str(getattr(self.dataset, "root", ""))
        return [os.path.relpath(path, root) for path, _ in self.dataset.samples]

    @property
    def filepaths(self) -> list[str]:
        """Each sample's file path (Keras' ``filepaths``)."""
        return [path for path, _ in self.dataset.samples]

    @property
    def classes(self) -> np.ndarray:
        """Each sample's class index, int32 (Keras' ``classes``)."""
        return np.asarray(self.dataset.targets, dtype=np.int32)

    @property
    def class_indices(self) -> dict[str, int]:
        """Class name -> index (Keras' ``class_indices``)."""
        return dict(getattr(self.dataset, "class_to_idx", {}))

    @property
    def labels(self) -> Any:
        """Each sample's label: ``classes``, or the data set's own (raw, multi-output)."""
        own = getattr(self.dataset, "labels", None)
        return self.classes if own is None else own

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """One yielded image's shape ``(C, H, W)`` (Keras gives ``(H, W, C)``): the recipe's
        output size when there is a recipe."""
        recipe = self._finisher.recipe if hasattr(self, "_finisher") else None
        if recipe is not None:
            h, w = recipe.config.output_size
            return (self.dataset.channels, h, w)
        h, w = self.dataset.target_size
        return (self.dataset.channels, h, w)

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Any]:
        resume = self._resume
        if resume is not None and resume.epoch == self.sampler.epoch:
            return self._run(resume.epoch, self.sampler._set_count, resume.step, resume.failures)
        return self._run(self.sampler.epoch, self.sampler._set_count)

    def __next__(self) -> Any:
        """Keras' ``next(iterator)``: the next batch, epoch after epoch without end (a
        ``for`` loop over the loader, by contrast, runs one epoch).

        The endless iteration is kept on the loader and refers to it, so a loader advanced
        with ``next`` and then dropped keeps its worker processes until Python's cyclic
        garbage collector frees it; `close` (or ``with loader:``) stops them at once."""
        if self.saver is not None:  # a save_to_dir error of an earlier step, then the next
            self.saver.check()
        if self._endless is None:
            self._endless = self._epochs()
        try:
            return next(self._endless)
        except BaseException:  # a dead generator would stop every later next(loader)
            self._endless = None
            raise

    def _epochs(self) -> Generator[Any, None, None]:
        while True:
            yield from self

    def _run(
        self,
        epoch: int,
        set_count: int,
        start: int = 0,
        skipped: list[tuple[int, str]] | None = None,
    ) -> Iterator[Any]:
        if self._rank_slot is not None:  # once, at the first batch: same data and seed?
            slot, self._rank_slot = self._rank_slot, None
            check_rank_agreement(self.sampler, slot, self.sampler.seed_key)
        failures: list[tuple[int, str]] = list(skipped or [])
        completed = False
        whole = 0  # batches whose every file failed, replaced (see _complete)
        record: list[Any] = [epoch, failures, start]
        self._lives.append(record)
        batches = self._device_batches(epoch, failures, start)
        try:
            for step, batch in enumerate(batches, start):
                record[2] = step + 1
                if self._lives[0] is record:  # a peek inside a loop leaves the loop's count
                    self.batch_index = step + 1
                whole += batch is None
                batch = self._complete(batch, epoch, step)
                if batch is None:
                    continue
                out = self._finisher(batch, self.augment_seed(epoch, step))[0]
                if self.saver is not None:  # save_to_dir: written by a background thread
                    self.saver.submit(out[0] if isinstance(out, tuple) else out, batch.indices)
                yield out
            completed = True
            if self._lives[0] is record:
                self.batch_index = 0
                self._resume = None
        finally:
            self._lives = [r for r in self._lives if r is not record]
            # Left early (break, exception, KeyboardInterrupt, a dropped peek): this closes the
            # iteration's source now, which stops its worker processes.
            batches.close()
            self.last_skipped = [(failed_path(self.dataset, i, r), str(r)) for i, r in failures]
            if failures:
                warnings.warn(
                    f"Skipped {len(failures)} unreadable image file(s) in epoch {epoch} "
                    f"(on_error='skip'"
                    + (
                        ", replaced by other samples to keep the batch shapes"
                        if self._replacing
                        else (
                            f"; {whole} batch(es) whose every file failed replaced by copies "
                            "of the next readable sample, so the epoch keeps len(loader) steps"
                            if whole
                            else ""
                        )
                    )
                    + f"; see `loader.last_skipped`): {_listing(self.last_skipped)}",
                    stacklevel=2,
                )
            if completed and self.sampler._set_count == set_count:
                self.sampler.epoch = epoch + 1
            if completed and self.saver is not None:  # save_to_dir: the epoch's files written
                self.saver.flush()

    @property
    def _replacing(self) -> bool:
        return self.skip_rule == "replace"

    def _device_batches(
        self, epoch: int, failures: list[tuple[int, str]], start: int = 0
    ) -> Generator[DeviceBatch | None, None, None]:
        """The uint8 batches of ``epoch`` on the device from step ``start`` on, one per step
        (None: all skipped): a source, then the transfer stage."""
        source = self._cache_source
        if source is not None and source.on_device:
            yield from source.device_batches(epoch, failures, start)
            return
        if source is not None:
            raw = source.host_batches(epoch, start)
        else:
            raw = self._workers.epoch_batches(epoch, start)
            if self._jpeg_decoder is not None:  # nvJPEG runs ahead on its own thread
                raw = jpeg_decode.decode_ahead(raw, self._jpeg_decoder, self.dataset)
        yield from self._prefetcher.run(raw, lambda r: self._to_device(r, failures))

    def _to_device(
        self,
        raw: HostBatch,
        failures: list[tuple[int, str]],
        device: torch.device | None = None,
    ) -> DeviceBatch | None:
        batch, bad = to_device(raw, self.dataset, self._targets, self.device, device, self.layout)
        settle_failures(bad, self.dataset, failures)  # raises under on_error="raise"
        return batch

    def _complete(self, batch: DeviceBatch | None, epoch: int, step: int) -> DeviceBatch | None:
        """Under the ``"replace"`` rule, the batch filled back to its full size; under
        ``"shrink"``, a batch whose every file failed is replaced as under ``"replace"``, so
        that an epoch yields ``len(loader)`` batches (schedulers and progress bars count on
        it)."""
        if not self._replacing and batch is not None:
            return batch
        size = self.sampler.batch_size_at(epoch * self.steps_per_epoch + step)
        first = int(self.sampler.batch(epoch, step).numpy()[0])
        return replace_failed(
            batch, size, first, self.dataset, self._targets, self.device, self.layout
        )

    def augment_seed(self, epoch: int, step: int) -> int:
        """The seed of the augmentation generator of batch ``step`` of ``epoch`` on this rank."""
        base = self.seed if self.config.augment_seed is None else self.config.augment_seed
        return mix_seed(base, AUGMENT_STREAM, epoch, step, self.sampler.rank)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """The loader's position: the epoch and the batches of it already handed out, the
        seeds and the settings they depend on (see `gpuaug.loader.state`).

        While an iteration runs, where it is (after ``k`` batches: ``step=k``); otherwise where
        the next iteration starts. A plain dict of ints, strings and lists (``torch.save``,
        JSON, Lightning's and torchdata's ``Stateful`` protocol).
        """
        resume = self._resume
        if self._lives:
            epoch, failures, step = self._lives[0]
        elif resume is not None and resume.epoch == self.sampler.epoch:
            epoch, step, failures = resume
        else:
            epoch, step, failures = self.sampler.epoch, 0, []
        return make_state(
            self.sampler,
            epoch=epoch,
            step=step,
            augment_seed=self.config.augment_seed,
            failures=failures,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Makes the next iteration continue from ``state_dict`` (from :meth:`state_dict`).

        The next batch is bit for bit the one the saved loader would have yielded next; the
        batches before it are not loaded. A loader built with ``seed=None`` adopts the saved
        seed. ``set_epoch`` to another epoch afterwards drops the resume point.

        Raises:
            TypeError: ``state_dict`` is not a dict.
            ValueError: not a loader state, another world size, or a setting that differs
                (named in the message).
        """
        resume, seed = check_state(state_dict, self.sampler, self.config.augment_seed)
        if self._endless is not None:  # next(loader) continues from the state too
            self._endless.close()
            self._endless = None
        if seed is not None and self.sampler.stick_to_shard:
            raise ValueError(
                f"`state_dict['seed']` is {seed} but this loader drew seed={self.seed}, and with "
                "cache_per_rank=True its cached share depends on the seed: build it with "
                f"seed={seed}"
            )
        if seed is not None:
            self._adopt_seed(seed)
        self.sampler.set_epoch(resume.epoch)
        self._resume = resume if resume.step else None
        self.batch_index = resume.step

    def _adopt_seed(self, seed: int) -> None:
        self.seed = self.sampler.seed = self._workers.seed = seed
        self.sampler._cache = None  # the shard of the old seed's permutation
        if self._cache_source is not None:
            self._cache_source._plan = None

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Shuts the worker processes, the nvJPEG thread and the ``save_to_dir`` writer down
        (after it has written what was queued); a later iteration starts new ones."""
        self._workers.shutdown()
        if self._jpeg_decoder is not None:
            self._jpeg_decoder.close()
        if self.saver is not None:
            self.saver.close()

    def __enter__(self) -> GPULoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ replay
    def replay(self, epoch: int, step: int) -> ReplayBatch:
        """Re-creates batch ``step`` of epoch ``epoch`` exactly (indices, pixels, params).

        Runs in the main process (no workers); reads the cache when there is one, else decodes
        the batch's files again, the same way the loader does.

        Raises:
            ValueError: ``step`` not in ``[0, len(loader))``, or every file of the batch failed.
        """
        out, draws, batch = self._rebuild(epoch, step)
        if self.recipe is not None:
            params = self._recipe_params(batch)
        else:
            assert draws is not None  # the Keras-style augmentation returns its draws
            params = draws.params(self.augment.config, *batch.images.shape[-2:])
        kp = self.augment.last_kornia_params
        if self.dataset.class_mode is None:
            return ReplayBatch(out, None, params, batch.indices, kp)
        return ReplayBatch(out[0], out[1], params, batch.indices, kp)

    def _recipe_params(self, batch: DeviceBatch) -> Any:
        """The params of the recipe's last batch: a training recipe keeps them; an eval
        recipe's centre crops are recomputed from the batch's sizes."""
        recipe = self.recipe
        if isinstance(recipe, EvalRecipe):
            b, _, h, w = batch.images.shape
            sizes = batch.sizes if batch.sizes is not None else torch.tensor([[h, w]] * b)
            cfg = recipe.config
            return center_crop_params(sizes[:, 0], sizes[:, 1], cfg.resize_size, cfg.output_size)
        return recipe.last_params

    def __getitem__(self, index: int) -> Any:
        """Keras' ``iterator[i]``: batch ``i`` of the current epoch (:attr:`epoch`), as the
        iteration yields it (the same samples and augmentation), rebuilt in the main process
        as `replay` does. Nothing is written to ``save_to_dir``.

        Raises:
            TypeError: ``index`` is not an int.
            ValueError: ``index`` not in ``[0, len(loader))`` (Keras' error too).
        """
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"a loader is indexed by a batch number (int); got {index!r}")
        if not 0 <= index < len(self):
            raise ValueError(
                f"Asked to retrieve batch {index}, but the loader has {len(self)} batches per epoch"
            )
        return self._rebuild(self.epoch, index)[0]

    def reset(self) -> None:
        """Keras' ``iterator.reset()``: the next ``next(loader)`` starts the current epoch
        (:attr:`epoch`, the same order and augmentation) from its first batch."""
        if self._endless is not None:
            self._endless.close()  # stops its worker processes now
            self._endless = None
        self.batch_index = 0
        self._resume = None  # from its first batch, even after load_state_dict

    def _rebuild(self, epoch: int, step: int) -> tuple[Any, AugmentDraws | None, DeviceBatch]:
        """Batch ``step`` of ``epoch`` made again in the main process: what the iteration
        yields, its draws and its device batch."""
        idx = self.sampler.batch(epoch, step)
        failures: list[tuple[int, str]] = []
        k = epoch * self.steps_per_epoch + step
        source = self._cache_source
        if source is not None and source.on_device:
            batch = source.device_batch(k, failures)
        elif source is not None:
            batch = self._to_device(source.host_batch(k), failures)
        else:
            view = self._workers.view()
            raw = self._workers.collate([view[i] for i in idx.numpy().tolist()])
            batch = self._to_device(raw, failures)
        batch = self._complete(batch, epoch, step)
        if batch is None:
            raise ValueError(f"every file of epoch {epoch} step {step} failed to load")
        out, draws = self._finisher(batch, self.augment_seed(epoch, step))
        return out, draws, batch

    def preview(self, n: int = 16, rows: int = 4, seed: int = 0) -> Image.Image:
        """A grid of this loader's images and fresh augmentations, captioned with their params.

        `gpuaug.preview.make_preview` on this loader's data set and augmentation, on its
        device: each row one source image (classes in turn), first column as decoded, then
        augmentations; normalisation is not shown. ``loader.preview().save("grid.png")``.
        """
        from gpuaug.preview import make_detection_preview, make_paired_preview, make_preview

        if getattr(self.dataset, "mask_bytes", 0):  # gpuaug.data.paired: masks drawn over the tiles
            return make_paired_preview(
                self.dataset, self.augment.config, n=n, rows=rows, seed=seed, device=self.device
            )
        if getattr(self.dataset, "box_valid", None) is not None:  # gpuaug.data.detection: boxes
            return make_detection_preview(
                self.dataset, self.augment.config, n=n, rows=rows, seed=seed, device=self.device
            )
        return make_preview(
            self.dataset, self.augment.config, n=n, rows=rows, seed=seed, device=self.device
        )

    # ------------------------------------------------------------------ reporting
    def stats(self) -> dict[str, Any]:
        """The numbers behind :meth:`describe`, as a dict."""
        return loader_stats(self)

    def describe(self, verbose: bool = False) -> str:
        """What one epoch is: images per class, samples and steps per epoch, augmentation,
        and where each sample's randomness comes from. ``print(loader.describe())``;
        ``verbose=True`` adds the generators and seed mixing behind every draw."""
        return describe_loader(self, verbose=verbose)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self.dataset)} images, batch_size={self.batch_size}, "
            f"steps_per_epoch={self.steps_per_epoch}, epoch={self.epoch}, device={self.device}, "
            f"cache={self.config.cache!r}, decode={self.config.decode!r})"
        )


def _listing(items: Sequence[tuple[str, str]]) -> str:
    shown = "; ".join(f"{path} ({reason})" for path, reason in items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f"; ... and {len(items) - _MAX_LISTED} more"
    return shown
