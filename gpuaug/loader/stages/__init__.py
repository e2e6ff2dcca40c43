"""The loader's per-batch stages, each small and named for what it does.

`gpuaug.GPULoader` composes them and owns only epochs, lifetime and its public surface::

    sources                        transfer                    finish
    workers.WorkerPool  --+
    (decode, JPEG bytes)  |--> HostBatch --> Prefetcher --> DeviceBatch --> Finisher
    cache_source        --+    (uint8,       (side CUDA     (uint8 on       (augment +
    (cache gathers)             host)         stream)        the device)     targets)

- :mod:`gpuaug.loader.stages.batch`: the records passed between stages (`HostBatch`, `DeviceBatch`).
- :mod:`gpuaug.loader.stages.skip`: ``on_error`` for a batch and the skip rules ("shrink" in one
  process, "replace" under DDP: same steps and shapes on every rank).
- :mod:`gpuaug.loader.stages.workers`: the DataLoader worker processes (`WorkerView` and `collate`
run
  in the workers), crash detection (`WorkerCrashError`) and shutdown.
- :mod:`gpuaug.loader.stages.cache_source`: building an `ImageCache` and gathering batches from it.
- :mod:`gpuaug.loader.stages.jpeg_decode`: the batched nvJPEG step of ``decode="gpu"``.
- :mod:`gpuaug.loader.stages.ragged`: images of different sizes as one packed buffer and an
  ``(offset, H, W)`` table, unpacked on the device by one gather (``target_size=None``).
- :mod:`gpuaug.loader.stages.transfer`: host -> device copies (pinned, ``non_blocking``), the pinned
  ring of the host / disk caches, and prefetch on a side stream.
- :mod:`gpuaug.loader.stages.layout`: the pixel layout the sources assemble batches in
  (planar, or RGBX where the fused kernel reads them; ``LoaderConfig.layout``).
- :mod:`gpuaug.loader.stages.finish`: the augmentation and the targets; `augment_module` turns a
  user's ``augment`` argument into a `GPUAugment`, once, at the boundary.

The data set protocol
---------------------
What the loader and its stages read from a data set (`gpuaug.DirectoryDataset` has all of it;
any object with these members works):

- ``__len__()``: the number of samples ``n``.
- ``samples``: ``[(path, class_index), ...]``, one per sample (the path names the file in
  messages; ``decode="gpu"`` reads its bytes).
- ``targets``: ``[class_index, ...]`` (int), one per sample.
- ``load(i)``: sample ``i`` decoded (and resized): ``(C, H, W)`` uint8 CPU tensor; raises
  `gpuaug.ImageLoadError` (naming the file) for a bad file.
- ``target_size``: ``(H, W)`` every image is resized to, or ``None``: each image at its own
  size (ragged batches, `gpuaug.loader.stages.ragged`; the loader then needs a ``recipe``);
  ``max_side`` (optional) then caps the long side.
- ``channels``: ``C`` (1, 3 or 4).
- ``color_mode``: ``"rgb"``, ``"grayscale"`` or ``"rgba"``.
- ``interpolation``: the resize filter (Keras name).
- ``class_mode``: ``"categorical"``, ``"binary"``, ``"sparse"``, ``"input"`` or ``None``.
- ``num_classes``: the number of classes (for one-hot targets).
- ``on_error``: ``"raise"`` or ``"skip"`` (what the loader does with a bad file).

Optional, for targets beyond class labels:

- ``load_packed(i)``, ``mask_bytes``, ``mask_fill`` (`gpuaug.data.paired.PairedDataset`): the
  workers read ``load_packed`` (image + mask as ``C + mask_bytes`` uint8 channels), so every
  source and cache carries the mask; the finish stage splits it off and warps it
  (`gpuaug.augment.targets.apply_mask`), and batches are ``(x, mask)``.
- ``boxes``, ``labels``, ``box_valid``, ``min_visibility``
  (`gpuaug.data.detection.DetectionDataset`): padded per-sample box tables that the finish stage
  keeps on the device, gathers by row and maps (`gpuaug.augment.targets.apply_boxes`); batches are
  ``(x, (boxes, labels, valid))``.

Read for reporting only (`GPULoader.describe` / ``stats``): ``root``, ``classes``,
``counts()``, and optionally ``subset``, ``validation_split``, ``skipped``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["LoaderDataset"]


@runtime_checkable
class LoaderDataset(Protocol):
    """The members of a data set that `gpuaug.GPULoader` uses (see the module docstring)."""

    samples: Any
    targets: Any
    target_size: tuple[int, int] | None
    channels: int
    color_mode: str
    interpolation: str
    class_mode: str | None
    num_classes: int
    on_error: str

    def __len__(self) -> int: ...

    def load(self, index: int) -> torch.Tensor: ...
