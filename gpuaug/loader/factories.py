"""The factories: a folder (or paired folders, or a detection file) -> a `GPULoader`.

Each is a thin function with Keras' argument names that builds the data set
(`gpuaug.data`), normalises ``augment`` once (`gpuaug.loader.stages.finish.factory_module`)
and the loader settings once (`LoaderConfig.from_arguments`), and does not mutate its
arguments.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.module import GPUAugment
from gpuaug.augment.validation import note, validation_module
from gpuaug.data.detection import Annotations, DetectionDataset
from gpuaug.data.directory import DirectoryDataset
from gpuaug.data.paired import DEFAULT_MASK_FILL, PairedDataset
from gpuaug.loader.config import LoaderConfig
from gpuaug.loader.gpu_loader import GPULoader
from gpuaug.loader.stages.finish import factory_module, validation_split_of

__all__ = [
    "flow_from_detection_file",
    "flow_from_directory",
    "flow_from_paired_directories",
    "flow_from_shards",
]


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
    keep_aspect_ratio: bool = False,
    draft: bool = False,
    augment_validation: bool = False,
    augment_seed: int | None = None,
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
        keep_aspect_ratio: centre-crop each image to ``target_size``'s aspect ratio before
            resizing, as Keras (``decode="cpu"`` only).
        draft: let large JPEGs decode at 1/2, 1/4 or 1/8 scale before the resize (faster on
            multi-megapixel photos, not Keras' pixels; ``decode="cpu"`` only; see
            `gpuaug.data.image.load_image`).
        augment_validation: augment a ``subset="validation"`` loader too (as Keras does);
            by default it runs only the deterministic stages of ``augment`` (rescale,
            preprocessing, normalisation with the fitted statistics; `gpuaug.augment.validation`).
        augment_seed: seed of the augmentation alone (``seed`` then seeds only the order);
            ``None``: ``seed`` seeds both.

    Returns:
        A :class:`GPULoader`.

    Raises:
        ValueError: a bad value (naming the argument), an empty folder, ``decode="gpu"``
            without CUDA, a ``validation_split`` that contradicts the config's.
        TypeError: a value of the wrong type.
        FileNotFoundError: ``directory`` does not exist.
    """
    module = factory_module(augment, dtype)  # the one place `augment` is normalised
    validation_split = validation_split_of(module, validation_split)
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
        keep_aspect_ratio=keep_aspect_ratio,
        draft=draft,
    )
    config = LoaderConfig.from_arguments(
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        drop_last=drop_last,
        num_workers=num_workers,
        cache=cache,
        cache_dir=cache_dir,
        decode=decode,
        device=device,
        dtype=dtype,
        progress=progress,
        augment_seed=augment_seed,
    )
    if not isinstance(augment_validation, bool):
        raise TypeError(f"`augment_validation` must be a bool; got {augment_validation!r}")
    notes = []
    if subset == "validation" and not augment_validation:
        module = validation_module(module)
        notes.append(note("subset='validation'", "pass augment_validation=True"))
    loader = GPULoader(dataset, module, config)
    loader.augment_notes = notes
    return loader


def flow_from_paired_directories(
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    augment: Any = None,
    target_size: tuple[int, int] = (256, 256),
    color_mode: str = "rgb",
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = None,
    subset: str | None = None,
    validation_split: float | None = None,
    interpolation: str = "nearest",
    mask_fill: int = DEFAULT_MASK_FILL,
    follow_links: bool = False,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    steps_per_epoch: int | None = None,
    drop_last: bool = False,
    cache: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    on_error: str = "raise",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> Any:
    """`gpuaug.flow_from_directory` for segmentation: batches of ``(x, mask)`` on the device.

    The data set is a `PairedDataset` over ``images`` and ``masks``; the loader is a
    `gpuaug.GPULoader` (epochs, seeds, ``replay``, ``preview``, caches and workers as for
    `flow_from_directory`). Each batch's images are augmented as usual and its masks with the
    same per-sample params (`gpuaug.augment.targets.apply_mask`: nearest, ``mask_fill`` where
    ``fill_mode="constant"`` reads outside, no photometric stage). ``loader.replay(e, s)``
    gives the mask as ``y``; ``loader.preview()`` draws it over the images; every ``cache``
    kind holds the masks too. JPEGs are decoded by the workers (no ``decode="gpu"``: the mask
    must stay with its image).

    Args:
        images, masks: The two folder trees (see `PairedDataset`).
        augment: An `AugmentConfig`, a preset name, a YAML path, a `GPUAugment` or None.
        target_size: (height, width) both are resized to.
        color_mode: The images' colour mode.
        subset, validation_split: As `PairedDataset` (None: the augmentation config's split).
        interpolation: The images' resize filter (masks always nearest).
        mask_fill: The label written where a "constant" warp reads outside the image (default
            0, the background; 255 with ``CrossEntropyLoss(ignore_index=255)`` ignores them).
        batch_size, shuffle, seed, steps_per_epoch, drop_last, num_workers, cache, cache_dir,
            progress, device: See `gpuaug.LoaderConfig`.
        on_error: As `PairedDataset`.
        dtype: The images' float dtype.

    Returns:
        A `gpuaug.GPULoader` yielding ``(x, mask)``: x (B, C, H, W) ``dtype``, mask
        (B, 1, H, W) int64, both on the loader's device.

    Raises:
        ValueError: Unpaired files, mismatched sizes, bad masks (listing them), a bad value.
        FileNotFoundError: A folder does not exist.
    """

    module = factory_module(augment, dtype)
    validation_split = validation_split_of(module, validation_split)
    dataset = PairedDataset(
        images,
        masks,
        target_size=target_size,
        color_mode=color_mode,
        interpolation=interpolation,
        follow_links=follow_links,
        validation_split=validation_split,
        subset=subset,
        on_error=on_error,
        mask_fill=mask_fill,
    )
    config = LoaderConfig.from_arguments(
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        drop_last=drop_last,
        num_workers=num_workers,
        cache=cache,
        cache_dir=cache_dir,
        device=device,
        dtype=dtype,
        progress=progress,
    )
    return GPULoader(dataset, module, config)


def flow_from_detection_file(
    images: str | os.PathLike[str],
    annotations: str | os.PathLike[str] | Annotations,
    augment: Any = None,
    target_size: tuple[int, int] = (256, 256),
    color_mode: str = "rgb",
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = None,
    interpolation: str = "nearest",
    min_visibility: float = 0.0,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    steps_per_epoch: int | None = None,
    drop_last: bool = False,
    cache: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    on_error: str = "raise",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> Any:
    """A `gpuaug.GPULoader` of images and their boxes from an annotation file.

    Batches are ``(x, (boxes, labels, valid))``: x (B, C, H, W) ``dtype``; boxes (B, M, 4)
    float32 xyxy after each sample's own transform, clipped to the image; labels (B, M) int64;
    valid (B, M) bool (False for padding and for boxes that left the image or kept less than
    ``min_visibility`` of their area). All on the loader's device; the boxes table sits there
    once and each batch is a gather plus `gpuaug.augment.targets.apply_boxes` (no host sync).
    ``gpuaug.augment.targets.unpad(boxes, valid)`` gives per-image lists.

    Args:
        images, annotations, target_size, color_mode, interpolation, min_visibility,
            on_error: See `DetectionDataset`.
        augment, batch_size, shuffle, seed, device, num_workers, steps_per_epoch, drop_last,
            cache, cache_dir, dtype, progress: As `gpuaug.flow_from_directory`.
    """

    module = factory_module(augment, dtype)
    dataset = DetectionDataset(
        images,
        annotations,
        target_size=target_size,
        color_mode=color_mode,
        interpolation=interpolation,
        on_error=on_error,
        min_visibility=min_visibility,
    )
    config = LoaderConfig.from_arguments(
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        drop_last=drop_last,
        num_workers=num_workers,
        cache=cache,
        cache_dir=cache_dir,
        device=device,
        dtype=dtype,
        progress=progress,
    )
    return GPULoader(dataset, module, config)


def flow_from_shards(
    urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    augment: AugmentConfig | GPUAugment | str | os.PathLike[str] | None = None,
    target_size: tuple[int, int] = (256, 256),
    color_mode: str = "rgb",
    classes: Sequence[str] | None = None,
    class_mode: str | None = "categorical",
    label: str = "cls",
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = None,
    interpolation: str = "nearest",
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    steps_per_epoch: int | None = None,
    drop_last: bool = False,
    cache: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    on_error: str = "raise",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    index_cache: bool = True,
    augment_seed: int | None = None,
    cache_per_rank: bool = False,
) -> GPULoader:
    """`flow_from_directory` over WebDataset-layout tar shards (local or any fsspec URL).

    The data set is a `gpuaug.data.shards.ShardDataset` (an index of every sample's offsets,
    built once and cached); the loader is a :class:`GPULoader`, so every pass is one
    permutation of all samples: under ``torch.distributed`` each rank reads a disjoint part of
    it (the ``DistributedSampler`` padding of ``R * ceil(n / R) - n`` repeated samples, or
    ``drop_last``), each batch is read by one worker, and ``state_dict`` / ``load_state_dict``
    resume mid-epoch exactly. Needs the ``shards`` extra (``fsspec``, ``braceexpand``).

    Args:
        urls: shards: a list, or one string with brace ranges
            (``"s3://bucket/train-{000000..000127}.tar"``).
        label: ``"cls"`` (``key.cls``), ``"json"`` or ``"json:<field>"`` (``key.json``).
        classes: class names in index order (default ``"0"``, ``"1"``, ...).
        index_cache: reuse the cached shard index (in ``cache_dir``) while the shards are
            unchanged.
        cache_per_rank: each rank caches only its fixed share (see `LoaderConfig`).
        augment, target_size, color_mode, class_mode, batch_size, shuffle, seed,
            interpolation, device, num_workers, steps_per_epoch, drop_last, cache, cache_dir,
            on_error, dtype, progress, augment_seed: as `flow_from_directory` (``decode`` is
            ``"cpu"``: shard members are decoded by PIL in the workers).

    Raises:
        ValueError: a bad value (named), an unreadable shard or label (shard and member
            named).
        FileNotFoundError: a missing shard.
    """
    from gpuaug.data.shards import ShardDataset

    module = factory_module(augment, dtype)
    dataset = ShardDataset(
        urls,
        target_size=target_size,
        color_mode=color_mode,
        class_mode=class_mode,
        label=label,
        classes=classes,
        interpolation=interpolation,
        on_error=on_error,
        cache_dir=cache_dir,
        index_cache=index_cache,
    )
    config = LoaderConfig.from_arguments(
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        drop_last=drop_last,
        num_workers=num_workers,
        cache=cache,
        cache_dir=cache_dir,
        decode="cpu",
        device=device,
        dtype=dtype,
        progress=progress,
        augment_seed=augment_seed,
        cache_per_rank=cache_per_rank,
    )
    return GPULoader(dataset, module, config)
