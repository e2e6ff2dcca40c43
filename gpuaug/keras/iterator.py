"""`KerasIterator`: the loader ``ImageDataGenerator``'s ``flow*`` methods return.

A `gpuaug.GPULoader` with the rest of the surface of Keras' ``DirectoryIterator``,
``DataFrameIterator`` and ``NumpyArrayIterator`` (see the class docstring), and Keras'
``flow((x, x_misc), y)`` input checks (`split_x_misc`, `check_lengths_as_keras`), in Keras'
words where code matches on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from gpuaug.augment.module import GPUAugment
from gpuaug.device import host_to_device
from gpuaug.loader.config import DTYPES, LoaderConfig
from gpuaug.loader.gpu_loader import GPULoader

__all__ = ["KerasIterator", "check_lengths_as_keras", "split_x_misc"]

_WITH_CLASSES = ("categorical", "binary", "sparse")


class KerasIterator(GPULoader):
    """The loader the ``flow*`` methods return: a `gpuaug.GPULoader` with the rest of the
    surface of Keras' ``DirectoryIterator``, ``DataFrameIterator`` and ``NumpyArrayIterator``.

    On top of the loader's Keras names (``n``, ``samples``, ``filenames``, ``filepaths``,
    ``classes``, ``class_indices``, ``labels``, ``batch_size``, ``len()``, ``it[i]``,
    ``reset()``, ``next(it)``) and Keras' settings (``target_size``, ``color_mode``,
    ``num_classes``, ``shuffle``, ``subset``, ``directory``, ``interpolation``, ``dtype``;
    ``data_format`` is the batches' ``"channels_first"``), as Keras:

    - ``batch_index``: after ``next(it)`` returned batch ``k`` of an epoch, ``k + 1``, or
      ``0`` when that was the epoch's last batch; ``it[i]`` leaves it alone;
    - ``total_batches_seen``: every batch handed out, by ``next``, a ``for`` loop or ``it[i]``;
    - ``index_array``: ``None`` until a batch is drawn, then the sample order of the epoch in
      progress (numpy int64; ``arange(n)`` without ``shuffle``);
    - ``on_epoch_end()``: the next batches come in a new order (the next epoch; when a loop
      already finished the epoch, which moves on by itself, the epoch it moved to);
    - ``class_mode="input"``: the target is a copy of the images, not the same tensor;
    - ``flow((x, x_misc), y)``: ``[x, *x_misc]`` in place of ``x`` (the extra arrays gathered
      with the batch, as tensors on the device);
    - ``class_mode="categorical"`` / ``"binary"`` targets in the generator's ``dtype``;
      ``"multi_output"`` targets in the dtype Keras gives each (``output_dtypes``).

    An empty data set (a DataFrame with no valid file) gives an iterator of length 0: a ``for``
    loop runs no step and ``next(it)`` raises ``StopIteration`` (Keras yields empty batches).
    """

    def __init__(
        self,
        dataset: Any,
        augment: GPUAugment,
        config: LoaderConfig,
        *,
        x_misc: list[torch.Tensor] | None = None,
        output_dtypes: list[torch.dtype | None] | None = None,
    ) -> None:
        super().__init__(dataset, augment, config)
        self.total_batches_seen = 0
        self._drawn_epoch: int | None = None  # the epoch `index_array` shows; None: no draw yet
        self._orders: dict[int, np.ndarray] = {}
        self._indices: torch.Tensor | None = None  # the samples of the batch being yielded
        self._x_misc = [host_to_device(m, self.device) for m in (x_misc or [])]
        self._label_dtype = DTYPES[config.dtype]
        self._output_dtypes = output_dtypes  # multi_output: Keras' dtype of each target

    _step = 0  # the loader's own count: the step its running epoch reaches next
    _raw_steps = False  # True while the loader itself reads `batch_index`

    # ------------------------------------------------------------------ Keras' attributes
    @property
    def batch_index(self) -> int:
        """Keras' ``batch_index``: the batches of the running epoch handed out so far, 0 once
        its last one is out (the loader counts ``len(it)`` there until the epoch closes)."""
        step = self._step
        return 0 if not self._raw_steps and step >= len(self) else step

    @batch_index.setter
    def batch_index(self, value: int) -> None:
        self._step = value

    def state_dict(self) -> dict[str, Any]:
        # the resume state counts the loader's own steps, not Keras' batch_index view
        self._raw_steps = True
        try:
            return super().state_dict()
        finally:
            self._raw_steps = False

    @property
    def target_size(self) -> tuple[int, int]:
        """``(height, width)`` of every yielded image (Keras' ``target_size``)."""
        return tuple(self.dataset.target_size)

    @property
    def color_mode(self) -> str:
        """``"rgb"``, ``"grayscale"`` or ``"rgba"`` (``"array"`` for ``flow``)."""
        return self.dataset.color_mode

    @property
    def num_classes(self) -> int:
        """The number of classes (Keras' ``DirectoryIterator.num_classes``)."""
        return len(self.class_indices)

    @property
    def shuffle(self) -> bool:
        return self.config.shuffle

    @property
    def subset(self) -> str | None:
        return getattr(self.dataset, "subset", None)

    @property
    def directory(self) -> str:
        """The folder the files are read from (``""`` for a DataFrame of full paths)."""
        own = getattr(self.dataset, "directory", None)
        return own if isinstance(own, str) else str(getattr(self.dataset, "root", ""))

    @property
    def interpolation(self) -> str:
        return self.dataset.interpolation

    @property
    def data_format(self) -> str:
        """The layout of the yielded batches: always ``"channels_first"`` ``(B, C, H, W)``."""
        return "channels_first"

    @property
    def dtype(self) -> str:
        """The yielded images' dtype name (Keras' ``dtype``, e.g. ``"float32"``)."""
        return self.config.dtype

    @property
    def classes(self) -> Any:
        """Each sample's class index (Keras' ``classes``): an int32 array, or for a DataFrame
        a list, as Keras' ``DataFrameIterator`` keeps it (a list of indices per row for
        multi-label rows)."""
        from gpuaug.data.dataframe import DataFrameDataset

        if isinstance(self.dataset, DataFrameDataset) and self.class_mode in _WITH_CLASSES:
            return list(self.dataset.labels)
        return super().classes

    @property
    def index_array(self) -> np.ndarray | None:
        """The sample order of the epoch in progress (``None`` before any batch, as Keras)."""
        if self._drawn_epoch is None:
            return None
        epoch = self._drawn_epoch
        if epoch not in self._orders:
            steps = [self.sampler.batch(epoch, s) for s in range(len(self))]
            order = torch.cat(steps) if steps else torch.zeros(0, dtype=torch.int64)
            self._orders = {epoch: order.numpy()}
        return self._orders[epoch]

    def on_epoch_end(self) -> None:
        """Keras' ``on_epoch_end``: the next batch starts an epoch in a new order."""
        started = self._drawn_epoch == self.epoch or self._resume is not None  # resumed: begun
        if started:  # the current epoch was started: move on
            self.set_epoch(self.epoch + 1)
        self._drawn_epoch = self.epoch
        self.reset()

    # ------------------------------------------------------------------ batches
    def __next__(self) -> Any:
        if len(self) == 0:
            raise StopIteration
        return super().__next__()

    def _complete(self, batch: Any, epoch: int, step: int) -> Any:
        # The samples of the batch about to be yielded (the generator yields it before any
        # other iteration runs), for the extra inputs: an iteration's own, not the loop's.
        out = super()._complete(batch, epoch, step)
        self._indices = None if out is None else out.indices
        return out

    def _run(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        epoch = args[0] if args else kwargs["epoch"]
        for out in super()._run(*args, **kwargs):
            self._drawn_epoch = epoch
            self.total_batches_seen += 1
            yield self._keras_batch(out, self._indices)

    def __getitem__(self, index: int) -> Any:
        out = super().__getitem__(index)
        self._drawn_epoch = self.epoch
        self.total_batches_seen += 1
        return self._keras_batch(out, self.sampler.batch(self.epoch, index))

    def _keras_batch(self, out: Any, indices: torch.Tensor | None) -> Any:
        """A loader batch as Keras' iterators yield it (see the class docstring)."""
        mode = self.class_mode
        if mode is None and not self._x_misc:
            return out
        parts = list(out) if isinstance(out, tuple) else [out]
        if mode == "input":
            parts[1] = parts[0].clone()
        elif mode in ("categorical", "binary") and parts[1].dtype != self._label_dtype:
            parts[1] = parts[1].to(self._label_dtype)
        elif mode == "multi_output" and self._output_dtypes:
            parts[1] = [
                t if d is None or t.dtype == d else t.to(d)
                for t, d in zip(parts[1], self._output_dtypes, strict=True)
            ]
        if self._x_misc:
            assert indices is not None  # a yielded batch has its samples
            idx = host_to_device(indices, self.device)
            parts[0] = [parts[0], *(m.index_select(0, idx) for m in self._x_misc)]
        return tuple(parts) if isinstance(out, tuple) else parts[0]


def check_lengths_as_keras(x: Any, y: Any, sample_weight: Any) -> None:
    """Keras' ``NumpyArrayIterator`` length checks, with its words (code matches on them).

    Raises:
        ValueError: ``y`` or ``sample_weight`` of another length than ``x``.
    """
    n = len(x) if hasattr(x, "__len__") else None
    for name, value in (("`y` (labels)", y), ("`sample_weight`", sample_weight)):
        if n is None or value is None or not hasattr(value, "__len__") or len(value) == n:
            continue
        raise ValueError(
            f"`x` (images tensor) and {name} should have the same length. Found: "
            f"x.shape = {tuple(np.shape(x))}, {name.split()[0].strip('`')}.shape = "
            f"{tuple(np.shape(value))}"
        )


def split_x_misc(x: Any) -> tuple[Any, list[torch.Tensor]]:
    """Keras' ``flow((x, x_misc), ...)``: the images and the extra inputs (one array or a list
    of arrays, each with one row per image), as CPU tensors.

    Raises:
        ValueError: an extra array of another length than ``x`` (Keras' message).
        TypeError: an extra array that does not hold numbers.
    """
    if not isinstance(x, tuple | list) or not len(x) or np.ndim(x[0]) != 4:
        return x, []
    if len(x) != 2:
        raise ValueError(
            "`x` must be an array of images or Keras' pair (x, x_misc) with x_misc an array or "
            f"a list of arrays; got a {type(x).__name__} of {len(x)} items"
        )
    images, misc = x
    arrays = list(misc) if isinstance(misc, list) else [misc]
    tensors = []
    for i, extra in enumerate(arrays):
        if len(images) != len(extra):
            raise ValueError(
                "All of the arrays in `x` should have the same length. Found a pair with: "
                f"len(x[0]) = {len(images)}, len(x[?]) = {len(extra)}"
            )
        if isinstance(extra, torch.Tensor):
            tensors.append(extra.detach().cpu())
            continue
        array = np.asarray(extra)
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise TypeError(
                f"`x_misc[{i}]` must hold numbers (it is yielded as a tensor); got dtype "
                f"{array.dtype}"
            )
        tensors.append(torch.from_numpy(np.array(array, copy=True)))
    return images, tensors
