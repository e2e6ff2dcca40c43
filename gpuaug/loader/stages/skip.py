"""What a batch does with its failed samples: the data set's ``on_error`` and the skip rules.

Bad files (``on_error="skip"``): a failed sample leaves its batch with its label ("shrink",
Keras' behaviour, the rule in a single process; a batch left with no sample at all is replaced
as below, so that an epoch keeps ``len(loader)`` batches), or, under ``torch.distributed``
(``num_replicas > 1``), is *replaced* so that every rank runs the same number of steps with the
same batch shapes whatever files fail (an all-reduce would hang otherwise): the j-th failed
sample of a batch becomes a copy of the batch's j-th good sample (cyclically), appended after
the good ones; a batch with no good sample at all becomes ``b`` copies of the first good
sample after its first index (``i + 1, i + 2, ...`` modulo ``n``). Both rules depend only on
which files fail, so a replayed batch is the same batch; the failures are listed in
``loader.last_skipped`` either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gpuaug.data.directory import DirectoryDataset
from gpuaug.data.image import ImageLoadError
from gpuaug.data.pixel_layout import as_layout, move
from gpuaug.loader.stages.batch import DeviceBatch, failed_path
from gpuaug.loader.stages.transfer import host_to_device

__all__ = ["SKIP_RULES", "fill_positions", "next_good", "replace_failed", "settle_failures"]

#: ``"shrink"``: drop failed samples (single process); ``"replace"``: keep the shape (DDP).
SKIP_RULES = ("shrink", "replace")


def settle_failures(
    bad: list[tuple[int, str]], dataset: Any, failures: list[tuple[int, str]]
) -> None:
    """Applies the data set's ``on_error`` to a batch's failed samples.

    ``"raise"``: an `ImageLoadError` naming the first failed file (lowest index; the mask
    itself when a mask failed); ``"skip"``:
    the failures are appended to ``failures`` (the epoch's list, reported at its end).
    """
    if not bad:
        return
    if dataset.on_error == "raise":
        index, reason = min(bad)
        error = ImageLoadError(failed_path(dataset, index, reason), str(reason))
        more = f" ({len(bad) - 1} more in this batch)" if len(bad) > 1 else ""
        note = f"Fix or remove the file{more}, or pass on_error='skip'."
        if isinstance(dataset, DirectoryDataset):  # what `gpuaug inspect` reads
            note += (
                " The check made when the loader was built reads image headers at most; "
                "`gpuaug inspect DIR --full` decodes every file and lists all that fail, "
                "before training."
            )
        error.add_note(note)
        raise error
    failures.extend(bad)


def fill_positions(kept: int, size: int) -> list[int]:
    """The rows that replace a batch's failed samples: ``[j % kept for j in range(size - kept)]``.

    Row ``kept + j`` of the filled batch is a copy of row ``j % kept`` (see the module
    docstring); empty when nothing failed.
    """
    if kept <= 0 or kept >= size:
        return []
    return [j % kept for j in range(size - kept)]


def next_good(start: int, good: np.ndarray) -> int:
    """The first ``i`` in ``start + 1, start + 2, ...`` (modulo ``n``) with ``good[i]``.

    Raises:
        ValueError: no good sample at all.
    """
    n = len(good)
    order = (np.arange(1, n + 1) + start) % n
    hits = order[good[order]]
    if len(hits) == 0:
        raise ValueError("every sample of the data set failed to load; nothing to train on")
    return int(hits[0])


def _next_loadable(dataset: Any, start: int) -> tuple[int, torch.Tensor]:
    """The first sample after ``start`` (cyclically) that decodes, and its image."""
    n = len(dataset)
    load = getattr(dataset, "load_packed", dataset.load)  # gpuaug.data.paired: image + mask
    for k in range(1, n + 1):
        index = (start + k) % n
        try:
            return index, load(index)
        except ImageLoadError:
            continue
    raise ValueError("every sample of the data set failed to load; nothing to train on")


def replace_failed(
    batch: DeviceBatch | None,
    size: int,
    first: int,
    dataset: Any,
    targets: torch.Tensor,
    device: torch.device,
    layout: str = "planar",
) -> DeviceBatch | None:
    """The ``"replace"`` rule: ``batch`` filled back to ``size`` rows (see the module docstring).

    Args:
        batch: the batch without its failed samples (``None``: all failed).
        size: the batch's size as the sampler made it.
        first: the first index the sampler put in the batch (where the search for a good
            sample starts when the whole batch failed).
        dataset: the data set (``load``, for that search).
        targets: ``(n,)`` int64 CPU, every sample's class index.
        device: the loader's device.
        layout: the loader's pixel layout (`gpuaug.data.pixel_layout`), kept by the result.

    Shape:
        -> images ``(size, C, H, W)``, indices ``(size,)``, labels ``(size,)``.
    """
    kept = 0 if batch is None else len(batch.indices)
    if kept == size:
        return batch
    if (
        batch is not None and kept
    ):  # views and one cat per tensor: no index tensor to copy to the device
        pos = fill_positions(kept, size)
        idx = batch.indices.numpy()
        sizes = batch.sizes  # a ragged batch: each copy keeps its row's (h, w)
        return DeviceBatch(
            as_layout(torch.cat([batch.images] + [batch.images[p : p + 1] for p in pos]), layout),
            torch.from_numpy(np.concatenate([idx, idx[pos]])),
            torch.cat([batch.labels] + [batch.labels[p : p + 1] for p in pos]),
            None if sizes is None else torch.cat([sizes, sizes[pos]]),
        )
    index, image = _next_loadable(dataset, first)
    images = move(as_layout(image[None].expand(size, *image.shape), layout), device)
    indices = torch.full((size,), index, dtype=torch.int64)
    labels = host_to_device(targets.index_select(0, indices), device)
    if getattr(dataset, "target_size", ()) is None:  # ragged: the image's own size
        sizes = torch.tensor([list(image.shape[-2:])] * size, dtype=torch.int64)
        return DeviceBatch(images, indices, labels, sizes)
    return DeviceBatch(images, indices, labels)
