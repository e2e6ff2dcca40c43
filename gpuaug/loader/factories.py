"""The factories: a folder (or paired folders, or a detection file) -> a `GPULoader`.

Each is a thin function with Keras' argument names that builds the data set
(`gpuaug.data`), normalises ``augment`` once (`gpuaug.loader.stages.finish.factory_module`)
and the loader settings once (`LoaderConfig.from_arguments`), and does not mutate its
arguments.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypeVar

import torch

from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.module import GPUAugment
from gpuaug.augment.recipe import TrainRecipe
from gpuaug.augment.validation import note, validation_module
from gpuaug.data.detection import Annotations, DetectionDataset
from gpuaug.data.directory import DirectoryDataset
from gpuaug.data.paired import DEFAULT_MASK_FILL, PairedDataset
from gpuaug.loader.config import LoaderConfig
from gpuaug.loader.gpu_loader import GPULoader
from gpuaug.loader.stages.finish import factory_module, recipe_module, validation_split_of

__all__ = [
    "flow_from_detection_file",
    "flow_from_directory",
    "flow_from_paired_directories",
    "flow_from_shards",
]

# Short names for the argument types, so that `help(flow_from_directory)` stays readable.
PathLike: TypeAlias = "str | os.PathLike[str]"
AugmentSpec: TypeAlias = "AugmentConfig | GPUAugment | str | os.PathLike[str] | None"
DeviceLike: TypeAlias = "str | torch.device | None"

_F = TypeVar("_F", bound=Callable[..., Any])


class ReadableSignature(inspect.Signature):
    """A signature whose ``str()`` puts one parameter per line when the one-line form is
    longer than 100 characters, as ``help()`` does from Python 3.13 on. The parameters are
    ``func``'s own; only the text changes."""

    __slots__ = ()

    def __str__(self) -> str:
        text = super().__str__()
        kinds = {p.kind for p in self.parameters.values()}
        if len(text) <= 100 or kinds - {inspect.Parameter.POSITIONAL_OR_KEYWORD}:
            return text
        lines = [f"    {_parameter_text(p)}," for p in self.parameters.values()]
        returns = self.return_annotation
        arrow = "" if returns is self.empty else f" -> {_annotation_text(returns)}"
        return "(\n" + "\n".join(lines) + f"\n){arrow}"


def _annotation_text(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _parameter_text(p: inspect.Parameter) -> str:
    text = p.name
    if p.annotation is not p.empty:
        text += f": {_annotation_text(p.annotation)}"
    if p.default is not p.empty:
        text += f" = {p.default!r}"
    return text


def named_keywords(func: _F) -> _F:
    """Make a keyword argument ``func`` does not take a ``TypeError`` that suggests the closest
    names (`difflib.get_close_matches`) and lists every argument it does take.

    ``inspect.signature`` and ``help()`` still show ``func``'s own parameters, one per line
    (`ReadableSignature`).
    """
    parameters = inspect.signature(func).parameters
    names = [
        name
        for name, p in parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        unknown = [key for key in kwargs if key not in parameters]
        if unknown:
            raise TypeError(unknown_keywords_message(func.__name__, unknown, names))
        return func(*args, **kwargs)

    checked.__signature__ = ReadableSignature.from_callable(func)  # type: ignore[attr-defined]
    return checked  # type: ignore[return-value]


def unknown_keywords_message(function: str, unknown: Sequence[str], names: Sequence[str]) -> str:
    """``f() got an unexpected keyword argument 'batchsize'; did you mean 'batch_size'? ...``

    An `AugmentConfig` field (``rotation_range``) is pointed at ``augment=`` instead.
    """
    augment_fields = set(AugmentConfig.__dataclass_fields__)
    parts = []
    for key in unknown:
        part = f"{function}() got an unexpected keyword argument {key!r}"
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
        if key in augment_fields and "augment" in names:
            part += (
                f" (an augmentation setting: pass "
                f"augment=gpuaug.AugmentConfig.from_keras({key}=...))"
            )
        elif close:
            part += f"; did you mean {' or '.join(map(repr, close))}?"
        parts.append(part)
    text = "; ".join(parts)
    return text + ("" if text.endswith("?") else ".") + f" Its arguments: {', '.join(names)}."


@named_keywords
def flow_from_directory(
    directory: PathLike,
    augment: AugmentSpec = None,
    target_size: tuple[int, int] | None = (256, 256),
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
    device: DeviceLike = None,
    num_workers: int | None = None,
    steps_per_epoch: int | None = None,
    drop_last: bool = False,
    cache: str | None = None,
    cache_dir: PathLike | None = None,
    decode: str = "cpu",
    on_error: str = "raise",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    keep_aspect_ratio: bool = False,
    draft: bool = False,
    augment_validation: bool = False,
    augment_seed: int | None = None,
    max_side: int | None = None,
    recipe: Any = None,
    layout: str = "auto",
) -> GPULoader:
    """Keras' ``ImageDataGenerator(...).flow_from_directory(...)``, augmented on the GPU.

    The data set (`gpuaug.DirectoryDataset`) indexes ``directory/<class>/...`` exactly as
    Keras does; the loader (`GPULoader`) batches, augments on ``device`` and counts
    epochs. ``print(loader.describe())`` gives the numbers: images per class, steps per
    epoch, the augmentation's ranges, the seeds. A misspelt keyword is a ``TypeError`` that
    suggests the closest argument and lists them all.

    Example:
        ```python
        train = gpuaug.flow_from_directory("data/train", augment="chollet_cats_dogs",
                                           target_size=(150, 150), batch_size=32)
        for x, y in train:  # x: (32, 3, 150, 150) float32 on the device, augmented
            ...
        ```

    Args:
        directory: root folder, one sub-folder per class (``train/cats/*.jpg``,
            ``train/dogs/*.jpg``); hidden folders (``.ipynb_checkpoints``) are not classes.
        augment: the augmentation: a preset name (``"chollet_cats_dogs"``, ``"strong"``,
            ``"none"``), a YAML path, an `AugmentConfig` (``AugmentConfig.from_keras(...)``
            takes Keras' arguments), a `GPUAugment`, or ``None`` for none at all (not even a
            rescale; ``"none"`` rescales by 1/255).
        target_size: ``(height, width)`` every image is resized to when decoded; ``None``:
            each image keeps its own size (capped by ``max_side``) and is cropped from its
            own pixels by ``recipe`` on the device (a *ragged* batch: the workers ship one
            packed buffer and an ``(offset, H, W)`` table; `gpuaug.loader.stages.ragged`).
        color_mode: ``"rgb"`` (3 channels), ``"grayscale"`` (1) or ``"rgba"`` (4).
        classes: class folder names in index order (default: the sorted sub-folders); only
            these folders are read.
        class_mode: the targets ``y``, as Keras: ``"categorical"`` (one-hot float32
            ``(B, classes)``), ``"binary"`` (float32 ``(B,)`` 0/1), ``"sparse"`` (int64 class
            indices ``(B,)``, ready for ``cross_entropy``), ``"input"`` (the images
            themselves) or ``None`` (batches are ``x`` alone).
        batch_size: images per batch; the last batch of each pass is shorter unless
            ``drop_last``. ``len(loader)`` is ``ceil(images / batch_size)``.
        shuffle: a new random order every epoch (``False``: file order, e.g. validation).
        seed: seeds the order and the augmentation: the same seed gives the same batches,
            bit for bit, on any device. ``None``: drawn at random (see ``loader.seed``).
        subset: ``"training"`` or ``"validation"`` with ``validation_split``; ``None``: all.
        validation_split: fraction of each class held out for ``subset="validation"``;
            ``None`` takes the augmentation config's ``validation_split`` (where Keras keeps
            it).
        interpolation: the resize filter, Keras' names (``"nearest"``, the default as in
            Keras, ``"bilinear"``, ``"bicubic"``, ...).
        follow_links: descend into linked sub-folders.
        device: where batches are augmented and returned: ``"cuda"``, ``"cuda:1"``,
            ``"cpu"``; ``None`` (default) takes CUDA when torch sees a GPU, else the CPU.
            ``"cuda"`` on a machine without one is a ``ValueError`` saying so.
        num_workers: decoding worker processes (``None``: ``min(4, cpu_count)``; 0 decodes
            in the main process).
        steps_per_epoch: batches per epoch (``None``: one pass over the images). Passes run
            on across epochs, so within a pass no image is dropped or repeated.
        drop_last: drop the short last batch of each pass.
        cache: ``None`` (decode every epoch), ``"device"`` (decode once, keep uint8 on the
            GPU), ``"host"`` (in RAM) or ``"disk"`` (a memory-mapped file).
        cache_dir: folder of a ``"disk"`` cache (default ``$GPUAUG_CACHE_DIR`` or
            ``~/.cache/gpuaug``).
        decode: ``"cpu"`` (PIL in the workers) or ``"gpu"`` (JPEGs by nvJPEG; needs CUDA).
        on_error: ``"raise"`` at the first unreadable file, or ``"skip"`` them with one
            warning listing them (labels never shift).
        dtype: the output float dtype: ``torch.float32``, ``torch.float16`` or
            ``torch.bfloat16``.
        progress: show a progress bar while a cache is built.
        keep_aspect_ratio: centre-crop each image to ``target_size``'s aspect ratio before
            resizing, as Keras (``decode="cpu"`` only).
        draft: let large JPEGs decode at 1/2, 1/4 or 1/8 scale before the resize (faster on
            multi-megapixel photos, not Keras' pixels; ``decode="cpu"`` only; see
            `gpuaug.data.image.load_image`).
        augment_validation: augment a ``subset="validation"`` loader too (as Keras does);
            by default it runs only the deterministic stages of ``augment`` (rescale,
            preprocessing, normalisation with the fitted statistics; `gpuaug.augment.validation`),
            and a training ``recipe`` on the validation subset is refused (pass an
            ``EvalRecipe``) unless this is True.
        augment_seed: seed of the augmentation alone (``seed`` then seeds only the order);
            ``None``: ``seed`` seeds both.
        max_side: with ``target_size=None``, images whose long side is longer are resized
            (``interpolation``) to a long side of ``max_side`` pixels when decoded, aspect
            ratio kept (with ``draft=True`` large JPEGs first decode at a reduced DCT scale
            that keeps the long side ``>= max_side``). ``None``: full size. The cap shrinks
            with ``interpolation``: Keras' default ``"nearest"`` aliases, so pass
            ``"bilinear"`` (or a better filter) with it.
        recipe: a `gpuaug.augment.recipe.TrainRecipe` or ``EvalRecipe`` (or a recipe preset
            name: ``"imagenet_rrc"``, ``"imagenet_rrc_val"``, a YAML path, a ``RecipeConfig``)
            run on each uint8 batch in place of ``augment``, with the batch's seed (so
            ``replay`` and the epochs stay exact); x is then ``(B, C, *recipe size)`` float32
            normalised, y per ``class_mode`` (soft targets when the recipe mixes). Needed by
            ``target_size=None``.
        layout: how the uint8 batches lie in memory before the augmentation: ``"auto"``
            (RGBX where the fused Triton kernel reads them, planar elsewhere), ``"planar"``
            or ``"rgbx"`` (see `LoaderConfig`); the batches' values do not depend on it.

    Returns:
        A `GPULoader`: iterate it for ``(x, y)`` batches (x ``(B, C, H, W)`` ``dtype``
        on ``device``); ``len(loader)`` steps per epoch.

    Raises:
        ValueError: a bad value (naming the argument), an empty folder, ``device="cuda"`` or
            ``decode="gpu"`` without CUDA, a ``validation_split`` that contradicts the
            config's.
        TypeError: a value of the wrong type; a keyword it does not take (with the closest
            names).
        FileNotFoundError: ``directory`` does not exist.
    """
    if recipe is not None and augment is not None:
        raise ValueError(
            "`recipe` replaces `augment` (the recipe crops, augments and normalises); pass "
            f"augment=None; got augment={augment!r}"
        )
    if keep_aspect_ratio and target_size is None:
        raise ValueError(
            "`keep_aspect_ratio`=True crops to target_size's aspect ratio; it needs a "
            "`target_size` (got None)"
        )
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
        max_side=max_side,
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
        layout=layout,
    )
    if not isinstance(augment_validation, bool):
        raise TypeError(f"`augment_validation` must be a bool; got {augment_validation!r}")
    notes: list[str] = []
    if recipe is not None:
        recipe = recipe_module(recipe, dataset.num_classes)
        if subset == "validation" and not augment_validation and isinstance(recipe, TrainRecipe):
            raise ValueError(
                "subset='validation' with a training `recipe` would crop, augment and mix the "
                "validation images at random: pass an evaluation recipe (e.g. "
                "recipe='imagenet_rrc_val'), or augment_validation=True to run it anyway"
            )
        loader = GPULoader(dataset, None, config, recipe=recipe)
        loader.augment_notes = notes
        return loader
    if subset == "validation" and not augment_validation:
        module = validation_module(module)
        notes.append(note("subset='validation'", "pass augment_validation=True"))
    loader = GPULoader(dataset, module, config)
    loader.augment_notes = notes
    return loader


@named_keywords
def flow_from_paired_directories(
    images: PathLike,
    masks: PathLike,
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
    device: DeviceLike = None,
    num_workers: int | None = None,
    steps_per_epoch: int | None = None,
    drop_last: bool = False,
    cache: str | None = None,
    cache_dir: PathLike | None = None,
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
        images: The images' folder tree (see `PairedDataset`).
        masks: The masks' folder tree, the same relative paths and stems.
        augment: An `AugmentConfig`, a preset name, a YAML path, a `GPUAugment` or None.
        target_size: (height, width) both are resized to.
        color_mode: The images' colour mode.
        batch_size: Pairs per batch.
        shuffle: A new random order every epoch.
        seed: Seeds the order and the augmentation (None: drawn at random).
        subset: ``"training"``, ``"validation"`` or None, as `PairedDataset`.
        validation_split: As `PairedDataset` (None: the augmentation config's split).
        interpolation: The images' resize filter (masks always nearest).
        mask_fill: The label written where a "constant" warp reads outside the image (default
            0, the background; 255 with ``CrossEntropyLoss(ignore_index=255)`` ignores them).
        follow_links: Descend into linked sub-folders.
        device: Where batches are augmented and returned (None: CUDA when available).
        num_workers: Decoding worker processes (None: ``min(4, cpu_count)``).
        steps_per_epoch: Batches per epoch (None: one pass).
        drop_last: Drop the short last batch of each pass.
        cache: None, ``"device"``, ``"host"`` or ``"disk"``, as `gpuaug.flow_from_directory`.
        cache_dir: Folder of a ``"disk"`` cache.
        on_error: As `PairedDataset`.
        dtype: The images' float dtype.
        progress: Show a progress bar while a cache is built.

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


@named_keywords
def flow_from_detection_file(
    images: PathLike,
    annotations: PathLike | Annotations,
    augment: Any = None,
    target_size: tuple[int, int] = (256, 256),
    color_mode: str = "rgb",
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = None,
    interpolation: str = "nearest",
    min_visibility: float = 0.0,
    device: DeviceLike = None,
    num_workers: int | None = None,
    steps_per_epoch: int | None = None,
    drop_last: bool = False,
    cache: str | None = None,
    cache_dir: PathLike | None = None,
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
        images: The folder the annotation file's file names are relative to.
        annotations: A ``.json`` (COCO) or ``.csv`` path, or `Annotations` (see
            `DetectionDataset`).
        augment: As `gpuaug.flow_from_directory`.
        target_size: (height, width) images are resized to; boxes are scaled with them.
        color_mode: As `gpuaug.flow_from_directory`.
        batch_size: Images per batch.
        shuffle: A new random order every epoch.
        seed: Seeds the order and the augmentation (None: drawn at random).
        interpolation: The images' resize filter.
        min_visibility: A box keeping less than this fraction of its area inside the
            augmented image is marked not ``valid``.
        device: Where batches are augmented and returned (None: CUDA when available).
        num_workers: Decoding worker processes (None: ``min(4, cpu_count)``).
        steps_per_epoch: Batches per epoch (None: one pass).
        drop_last: Drop the short last batch of each pass.
        cache: None, ``"device"``, ``"host"`` or ``"disk"``, as `gpuaug.flow_from_directory`.
        cache_dir: Folder of a ``"disk"`` cache.
        on_error: ``"raise"`` or ``"skip"``, as `DetectionDataset`.
        dtype: The images' float dtype.
        progress: Show a progress bar while a cache is built.

    Returns:
        A `gpuaug.GPULoader` yielding ``(x, (boxes, labels, valid))``.
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


@named_keywords
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
