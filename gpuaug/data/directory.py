"""``DirectoryDataset``: the PyTorch counterpart of Keras' ``flow_from_directory`` index.

Layout: ``root/<class>/.../<image>``. One sub-folder per class; images may sit in nested
sub-folders of a class folder; files directly under ``root`` belong to no class and are
ignored. The index is built exactly as Keras 3's legacy ``DirectoryIterator`` builds it:

- classes are the sorted sub-folder names of ``root`` (``sorted(os.listdir(root))``, keeping
  the entries that are folders or links to folders), or the ``classes`` list in its order;
  class ``i`` is ``classes[i]``. **Unlike Keras, hidden folders** (names starting with
  ``"."``: ``.ipynb_checkpoints``, ``.git``, ``.thumbnails``) are not classes and are not
  walked inside class folders either: they hold tool metadata or copies, and as a class they
  would shift every label. ``classes=[...]`` naming one still uses it; ``include_hidden=True``
  gives Keras' index. Hidden *files* (``.a.png``) are kept, as in Keras: a file is data when
  its extension says so (macOS ``._*`` resource files then fail the header check, named).
- per class, ``os.walk(class_dir, followlinks=follow_links)`` sorted by folder path, file names
  sorted within each folder, extensions matched case-insensitively; samples are concatenated
  class by class in class-index order.
- ``validation_split=v`` with ``subset``: per class, of its ``n`` files in that order, the
  first ``int(v * n)`` are ``"validation"`` and the rest ``"training"``; the two subsets never
  overlap and together cover every file.

``__getitem__`` decodes one image with :func:`gpuaug.data.image.load_image` (uint8 ``(C, H, W)``,
resized to ``target_size``) and returns it with its target; it never augments.

Scale: the index is stored compactly (`gpuaug.data.index.SampleList`, about 30 bytes a sample),
header checks run on every core, and the walk plus the check results are cached on disk for
folders of 10,000 files or more (``index_cache``), so building the same data set again costs
one ``stat`` per folder; see `gpuaug.data.index` for what the cache can and cannot notice.
``len()``, ``counts()`` and ``repr()`` never touch the files.

Bad input, and when it is found:

- *Index time* (in ``__init__``), always: a missing root (``FileNotFoundError``), a root
  with no class folder, a class folder without images, ``classes`` naming a missing folder,
  no image at all (``ValueError``, naming the folders); then, per ``verify``, each file of the
  subset is checked: ``"header"`` (about 100 microseconds a file on a loaded 2-core machine)
  opens it with PIL and reads the header only, which catches zero-byte, non-image and
  unknown-format files and decompression bombs; ``"full"`` also decodes every pixel (slow:
  about as long as one epoch of decoding), which also catches truncated and corrupt data up
  front; ``"none"`` checks nothing; ``"auto"`` (default) is ``"header"`` for a subset of
  fewer than :data:`VERIFY_AUTO_MAX_FILES` files and ``"none"`` from there (the check of a
  million files took 124 s against 4 s for the walk): a large folder's bad files are then
  found, and named, when they are first loaded (below).
- *Load time* (``__getitem__``): whatever the index-time check did not cover, typically a
  truncated or corrupt file: ``ImageLoadError`` naming the file and the reason.

``on_error="raise"`` (default) raises on the first problem found (an ``ImageLoadError`` for
bad files, listing the others in a note). ``on_error="skip"`` drops the bad files found at
index time (recorded in ``skipped``, one warning with the count and the list), keeps empty
class folders as classes with no images (one warning), and at load time makes
``__getitem__`` return ``None`` with a warning (:func:`collate_skip` drops those items from
the batch). Labels never shift: a sample's class comes from its folder, not its position.

Why one module (over 600 lines): Keras' indexing rules (`find_classes`, `make_dataset`,
the validation split) and the `DirectoryDataset` that applies them are read together, as in
torchvision's ``datasets/folder.py``.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Iterable, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from gpuaug.data.image import (
    COLOR_MODES,
    IMAGE_EXTENSIONS,
    ImageLoadError,
    _check_color_mode,
    _check_interpolation,
    _check_target_size,
    check_max_side,
    load_image,
)
from gpuaug.data.index import (
    INDEX_CACHE_MIN_FILES,
    FolderListing,
    SampleList,
    TargetList,
    _walk_class,
    list_folders,
    listing_key,
    load_listing,
    verify_listing,
)
from gpuaug.data.index import save_listing as _save_listing_raw

__all__ = [
    "CLASS_MODES",
    "VERIFY_AUTO_MAX_FILES",
    "DirectoryDataset",
    "collate_skip",
    "encode_targets",
    "find_classes",
    "has_image_extension",
    "list_image_files",
    "make_dataset",
]

#: Allowed ``class_mode`` values (as Keras; ``None`` means no labels).
CLASS_MODES: tuple[str | None, ...] = ("categorical", "binary", "sparse", "input", None)
_SUBSETS = ("training", "validation")
_ON_ERROR = ("raise", "skip")
_VERIFY = ("auto", "header", "full", "none")
#: ``verify="auto"`` checks headers up front below this many files (about 2 s here), else
#: leaves every check to load time.
VERIFY_AUTO_MAX_FILES = 20_000
_MAX_LISTED = 20  # bad files named in one warning / error note


def _normalize_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        raise TypeError(
            f"`extensions` must be a sequence of strings; got the string {extensions!r}"
        )
    exts = tuple("." + str(e).lower().lstrip(".") for e in extensions)
    if not exts:
        raise ValueError("`extensions` must name at least one file extension; got none")
    return exts


def has_image_extension(filename: str, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> bool:
    """Whether ``filename`` ends with ``"." + ext`` for one of ``extensions``, ignoring case."""
    return filename.lower().endswith(_normalize_extensions(extensions))


def _root(directory: str | os.PathLike[str]) -> str:
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"`directory` must be a str or os.PathLike; got {type(directory).__name__}")
    root = os.path.expanduser(os.fspath(directory))
    if not os.path.exists(root):
        raise FileNotFoundError(f"Image folder {root!r} does not exist")
    if not os.path.isdir(root):
        raise NotADirectoryError(
            f"Image folder {root!r} is not a folder; expected root/<class>/<image files>"
        )
    return root


def find_classes(
    directory: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    *,
    include_hidden: bool = False,
) -> tuple[list[str], dict[str, int]]:
    """The class names and their indices, as Keras' ``flow_from_directory`` assigns them.

    Args:
        directory: the root folder, holding one sub-folder per class.
        classes: class sub-folder names in index order; ``None`` (or empty, as in Keras) takes
            every sub-folder of ``directory``, sorted by name, except hidden ones (names
            starting with ``"."``, such as ``.ipynb_checkpoints``) unless ``include_hidden``.
            Folders named here are used even when hidden.
        include_hidden: also take hidden sub-folders as classes (Keras does).

    Returns:
        ``(classes, class_to_idx)`` with ``class_to_idx[classes[i]] == i``.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
        NotADirectoryError: ``directory`` is a file.
        ValueError: ``directory`` has no sub-folder; ``classes`` names a folder that does not
            exist, names one twice, or holds a path instead of a folder name.
        TypeError: ``classes`` is not a sequence of strings.
    """
    root = _root(directory)
    found = [
        d
        for d in sorted(os.listdir(root))
        if (include_hidden or not d.startswith(".")) and os.path.isdir(os.path.join(root, d))
    ]
    if classes is None or (isinstance(classes, Sized) and len(classes) == 0):
        if not found:
            loose = sum(
                1
                for f in os.listdir(root)
                if has_image_extension(f) and os.path.isfile(os.path.join(root, f))
            )
            msg = (
                f"Found no class sub-folder in {root!r}; expected one sub-folder per class "
                "(root/<class>/<image files>)"
            )
            if loose:
                msg += (
                    f". Found {loose} image file(s) directly under it: they belong to no "
                    "class and are ignored (for unlabelled images, move them into one "
                    "sub-folder and use class_mode=None)"
                )
            raise ValueError(msg)
        names = found
    else:
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
            raise TypeError(
                f"`classes` must be a list of class folder names or None; got {classes!r}"
            )
        names = list(classes)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"`classes` must hold folder names (str); got {name!r}")
            if name in ("", ".", "..") or "/" in name or os.sep in name:
                raise ValueError(
                    f"`classes` must hold names of sub-folders of {root!r}, not paths; got {name!r}"
                )
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"`classes` names the same class twice: {', '.join(duplicates)}")
        missing = [n for n in names if not os.path.isdir(os.path.join(root, n))]
        if missing:
            raise ValueError(
                f"Unknown class(es) in `classes`: {', '.join(missing)}: no such sub-folder in "
                f"{root!r}; found sub-folders: {', '.join(found) or '(none)'}"
            )
    return names, {name: i for i, name in enumerate(names)}


def list_image_files(
    class_dir: str | os.PathLike[str],
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    follow_links: bool = False,
    *,
    include_hidden: bool = False,
) -> list[str]:
    """Image files under one class folder, in Keras' order.

    The walk (``os.walk``, into linked folders only with ``follow_links``; link cycles are
    cut; hidden sub-folders skipped unless ``include_hidden``) is sorted by folder path, and
    file names are sorted within each folder; a file is kept when its name ends with
    ``"." + ext`` for one of ``extensions``, ignoring case. Hidden *files* are kept, as Keras
    keeps them.

    Returns:
        Paths ``os.path.join(dirpath, filename)`` (so relative when ``class_dir`` is).
    """
    exts = _normalize_extensions(extensions)
    top = os.fspath(class_dir)
    return [
        os.path.join(dirpath, name)
        for dirpath, filenames in _walk_class(top, follow_links, include_hidden, {}, top)
        for name in sorted(filenames)
        if name.lower().endswith(exts)
    ]


def _split_bounds(n: int, split: tuple[float, float] | None) -> tuple[int, int]:
    if split is None:
        return 0, n
    return int(split[0] * n), int(split[1] * n)  # Keras' rounding, kept exactly


def check_split(validation_split: Any, subset: Any, *, hint: str = "") -> None:
    """Checks a data set's ``validation_split`` and ``subset`` (every data set takes both).

    Args:
        hint: where the user sets ``validation_split``, added to the "needs > 0" message.

    Raises:
        TypeError: ``validation_split`` is not a number.
        ValueError: it is outside [0, 1), ``subset`` is not "training" / "validation" / None,
            or a subset is asked for with no split.
    """
    if isinstance(validation_split, bool) or not isinstance(
        validation_split, int | float | numbers.Real
    ):
        raise TypeError(f"`validation_split` must be a float; got {validation_split!r}")
    if not 0.0 <= float(validation_split) < 1.0:
        raise ValueError(f"`validation_split` must be in [0, 1); got {validation_split!r}")
    if subset not in (*_SUBSETS, None):
        raise ValueError(f"`subset` must be 'training', 'validation' or None; got {subset!r}")
    if subset is not None and validation_split == 0:
        raise ValueError(
            f"`subset`={subset!r} needs `validation_split` > 0{hint}; got {validation_split!r}"
        )


def _subset_split(validation_split: float, subset: str | None) -> tuple[float, float] | None:
    if subset is None:
        return None
    return (0.0, validation_split) if subset == "validation" else (validation_split, 1.0)


def _index_classes(
    root: str,
    class_to_idx: dict[str, int],
    extensions: Iterable[str],
    follow_links: bool,
    include_hidden: bool = False,
) -> dict[str, list[str]]:
    ordered = sorted(class_to_idx, key=class_to_idx.__getitem__)
    return {
        name: list_image_files(
            os.path.join(root, name), extensions, follow_links, include_hidden=include_hidden
        )
        for name in ordered
    }


def _no_images_message(root: str, empty: Sequence[str], extensions: Iterable[str]) -> str:
    exts = ", ".join(_normalize_extensions(extensions))
    return (
        f"Found no valid image file for the classes {', '.join(empty)} in {root!r} "
        f"(folders {', '.join(os.path.join(root, c) for c in empty)}). "
        f"Supported extensions are: {exts} (any case)"
    )


def make_dataset(
    directory: str | os.PathLike[str],
    class_to_idx: dict[str, int],
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    follow_links: bool = False,
    split: tuple[float, float] | None = None,
    *,
    allow_empty: bool = False,
    include_hidden: bool = False,
) -> list[tuple[str, int]]:
    """The ``(path, class_index)`` samples, in Keras' order (see :func:`list_image_files`).

    Args:
        directory: the root folder.
        class_to_idx: class folder name -> index, e.g. from :func:`find_classes`; samples
            are concatenated class by class in index order.
        extensions: file extensions to keep (no dot needed, any case).
        follow_links: descend into linked sub-folders.
        split: ``(start, stop)`` fractions taken per class, as Keras: files
            ``[int(start * n), int(stop * n))`` of each class's ``n`` files. ``(0, v)`` is
            Keras' validation subset, ``(v, 1)`` its training subset, ``None`` everything.
        allow_empty: accept class folders without any image file (Keras does, silently).
            Emptiness is judged on the whole folder, before ``split``.
        include_hidden: also walk hidden sub-folders (names starting with ``"."``).

    Returns:
        ``[(path, class_index), ...]`` with paths ``os.path.join(directory, class, ...)``.

    Raises:
        ValueError: a class folder holds no image file (unless ``allow_empty``), naming it.
    """
    root = os.path.expanduser(os.fspath(directory))
    per_class = _index_classes(root, class_to_idx, extensions, follow_links, include_hidden)
    empty = [name for name, files in per_class.items() if not files]
    if empty and not allow_empty:
        raise ValueError(_no_images_message(root, empty, extensions))
    samples: list[tuple[str, int]] = []
    for name, files in per_class.items():
        start, stop = _split_bounds(len(files), split)
        samples.extend((path, class_to_idx[name]) for path in files[start:stop])
    return samples


def _save_listing(path: Path, listing: FolderListing) -> None:
    """Write the index cache; a cache folder that cannot be written only costs a warning."""
    try:
        _save_listing_raw(path, listing)
    except OSError as exc:
        warnings.warn(
            f"could not write the index cache {str(path)!r} ({exc}); the folder will be "
            "walked again next time",
            stacklevel=3,
        )


def _listing(items: Sequence[tuple[str, str]]) -> str:
    shown = "; ".join(f"{path} ({reason})" for path, reason in items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f"; ... and {len(items) - _MAX_LISTED} more"
    return shown


def encode_targets(
    class_idx: torch.Tensor,
    class_mode: str | None,
    num_classes: int,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor | None:
    """Class indices -> the targets Keras gives for ``class_mode``, on the indices' device.

    Args:
        class_idx: integer class indices.
        class_mode: ``"categorical"`` (one-hot), ``"binary"`` (0./1., exactly 2 classes),
            ``"sparse"`` (the index), ``"input"`` or ``None`` (no label tensor: ``None``; for
            ``"input"`` the caller uses the images themselves).
        num_classes: the number of classes ``K``.
        dtype: floating dtype of categorical and binary targets.

    Returns:
        The targets, or ``None`` for ``"input"`` and ``None``.

    Shape:
        ``class_idx``: ``(B,)`` (or ``()``) int, any device ->
        categorical ``(B, K)`` ``dtype``; binary ``(B,)`` ``dtype``; sparse ``(B,)`` int64;
        same device.

    Raises:
        ValueError: unknown ``class_mode``; ``binary`` with ``num_classes != 2``.
        TypeError: ``class_idx`` is not an integer tensor.
    """
    if class_mode not in CLASS_MODES:
        raise ValueError(
            f"`class_mode` must be one of {', '.join(map(repr, CLASS_MODES))}; got {class_mode!r}"
        )
    if class_mode in ("input", None):
        return None
    if (
        not isinstance(class_idx, torch.Tensor)
        or class_idx.is_floating_point()
        or (class_idx.dtype in (torch.bool, torch.complex64, torch.complex128))
    ):
        raise TypeError(f"`class_idx` must be an integer tensor; got {class_idx!r}")
    if class_mode == "categorical":
        return F.one_hot(class_idx.long(), num_classes).to(dtype)
    if class_mode == "binary":
        if num_classes != 2:
            raise ValueError(
                f"class_mode='binary' needs exactly 2 classes; got num_classes={num_classes}"
            )
        return class_idx.to(dtype)
    return class_idx.long()


def collate_skip(batch: Sequence[Any]) -> Any:
    """``default_collate`` of the items that are not ``None`` (failed loads); ``None`` if all.

    Use as ``DataLoader(dataset, collate_fn=collate_skip)`` with ``on_error="skip"``: a
    batch may then be shorter than ``batch_size``.
    """
    items = [item for item in batch if item is not None]
    return default_collate(items) if items else None


class DirectoryDataset(Dataset):
    """Images in ``root/<class>/...`` as uint8 tensors with Keras' class indices and targets.

    The index (classes, file order, validation subsets) is Keras' ``flow_from_directory``'s,
    file for file; see the module docstring for the rules. ``__getitem__`` decodes and resizes
    with PIL exactly as ``keras.utils.load_img`` does (``gpuaug.data.image.load_image``) but applies
    EXIF orientation and scales 16-bit images to 8 bits; it does no augmentation.

    Args:
        directory: the root folder, one sub-folder per class.
        target_size: ``(height, width)`` every image is resized to (``None``: keep each file's
            size; batches then need equal sizes).
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"`` (3, 1 or 4 channels).
        classes: class folder names in index order; default: every sub-folder, sorted.
        class_mode: ``"categorical"`` (one-hot float32), ``"binary"`` (float32 0./1., exactly 2
            classes), ``"sparse"`` (int64 index), ``"input"`` (target = the image) or ``None``
            (images only).
        interpolation: resize filter by Keras name: ``"nearest"`` (default, as Keras),
            ``"bilinear"``, ``"bicubic"``, ``"lanczos"``, ``"box"``, ``"hamming"``.
        follow_links: descend into linked sub-folders (link cycles are cut).
        validation_split: fraction of each class held out for ``subset="validation"``, in
            ``[0, 1)``.
        subset: ``"training"``, ``"validation"`` or ``None`` (every file).
        on_error: ``"raise"`` or ``"skip"`` bad files and empty class folders (see module
            docstring).
        verify: index-time file check: ``"auto"`` (default: ``"header"`` below
            :data:`VERIFY_AUTO_MAX_FILES` files, else ``"none"``), ``"header"``, ``"full"``
            or ``"none"`` (see the module docstring). The check run is in ``verified``.
        extensions: file extensions to index; default :data:`gpuaug.data.image.IMAGE_EXTENSIONS`
            (Keras' list plus gif and webp). Pass
            :data:`gpuaug.data.image.KERAS_IMAGE_EXTENSIONS` for Keras' exact list.
        include_hidden: also index hidden folders (names starting with ``"."``) as classes
            and inside class folders, as Keras does. Default False.
        index_cache: keep the folder listing and the check results in the gpuaug cache
            folder (``$GPUAUG_CACHE_DIR``, see `gpuaug.data.cache.default_cache_dir`) and reuse
            them while no folder changed: ``None`` (default) for listings of 10,000 files or
            more, ``True`` always, ``False`` never.
        check_workers: parallel workers of the ``verify`` check (default: the usable cores).
        keep_aspect_ratio: crop each image's centre to ``target_size``'s aspect ratio before
            resizing, as Keras' ``keep_aspect_ratio=True`` (else the image is stretched).
        draft: decode JPEGs much larger than ``target_size`` at 1/2, 1/4 or 1/8 scale first
            (``gpuaug.data.image.load_image``'s ``draft``: several times faster on large photos,
            but not Keras' pixels). Off by default. With ``max_side``: at the smallest scale
            whose long side is still at least ``max_side``.
        max_side: with ``target_size=None``, images whose long side is longer are resized to
            a long side of ``max_side`` (aspect ratio kept; ``gpuaug.data.image.capped_size``);
            ``None``: every image at its file's size.

    Attributes:
        root: the root folder. classes, class_to_idx: class names and indices.
        samples: ``(path, class_index)`` pairs in Keras' order (``it.filepaths``,
            ``it.classes``): a read-only `gpuaug.data.index.SampleList` that indexes, iterates and
            compares like the list of tuples. targets: the class indices, a
            `gpuaug.data.index.TargetList` (``targets.array``: the int32 array).
            num_classes, channels (1, 3 or 4).
        index_cache_path: the index cache file used (``None``: none). index_cached: True
            when the listing came from it (no walk).
        skipped: ``[(path, reason), ...]`` files dropped at index time (``on_error="skip"``).

    Shape:
        ``dataset[i]`` -> ``(image, target)``: image ``(C, H, W)`` uint8, CPU, contiguous;
        target ``(K,)`` float32 (categorical), ``()`` float32 (binary), ``()`` int64 (sparse),
        the image (input); image alone for ``class_mode=None``.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
        ValueError: a bad argument (naming it and the allowed values); no class folder; a
            class folder without images (unless ``on_error="skip"``); an unknown class in
            ``classes``; ``binary`` without exactly 2 classes; an empty dataset or subset.
        ImageLoadError: a bad image file found at index time (``on_error="raise"``).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        target_size: tuple[int, int] | None = (256, 256),
        color_mode: str = "rgb",
        classes: Sequence[str] | None = None,
        class_mode: str | None = "categorical",
        interpolation: str = "nearest",
        follow_links: bool = False,
        validation_split: float = 0.0,
        subset: str | None = None,
        on_error: str = "raise",
        verify: str = "auto",
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        keep_aspect_ratio: bool = False,
        draft: bool = False,
        *,
        max_side: int | None = None,
        include_hidden: bool = False,
        index_cache: bool | None = None,
        check_workers: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(keep_aspect_ratio, bool):
            raise TypeError(f"`keep_aspect_ratio` must be a bool; got {keep_aspect_ratio!r}")
        self.keep_aspect_ratio = keep_aspect_ratio
        self.target_size = _check_target_size(target_size)
        self.max_side = check_max_side(max_side, self.target_size)
        _check_color_mode(color_mode)
        _check_interpolation(interpolation)
        if class_mode not in CLASS_MODES:
            raise ValueError(
                f"`class_mode` must be one of {', '.join(map(repr, CLASS_MODES))}; "
                f"got {class_mode!r}"
            )
        if not isinstance(follow_links, bool):
            raise TypeError(f"`follow_links` must be a bool; got {follow_links!r}")
        check_split(validation_split, subset)
        if on_error not in _ON_ERROR:
            raise ValueError(f"`on_error` must be 'raise' or 'skip'; got {on_error!r}")
        if verify not in _VERIFY:
            raise ValueError(f"`verify` must be 'auto', 'header', 'full' or 'none'; got {verify!r}")
        self.extensions = tuple(e[1:] for e in _normalize_extensions(extensions))
        self.follow_links = follow_links

        root = _root(directory)
        self.root = Path(root)
        if not isinstance(include_hidden, bool):
            raise TypeError(f"`include_hidden` must be a bool; got {include_hidden!r}")
        if index_cache not in (None, True, False):
            raise TypeError(f"`index_cache` must be None, True or False; got {index_cache!r}")
        self.include_hidden = include_hidden
        self.classes, self.class_to_idx = find_classes(root, classes, include_hidden=include_hidden)
        self.num_classes = len(self.classes)
        if class_mode == "binary" and self.num_classes != 2:
            raise ValueError(
                f"class_mode='binary' needs exactly 2 classes; found {self.num_classes} in "
                f"{root!r}: {', '.join(self.classes)}"
            )
        self.color_mode = color_mode
        self.channels = COLOR_MODES[color_mode]
        self.class_mode = class_mode
        self.interpolation = interpolation
        if not isinstance(draft, bool):
            raise TypeError(f"`draft` must be a bool; got {draft!r}")
        self.draft = draft
        self.validation_split = float(validation_split)
        self.subset = subset
        self.on_error = on_error
        self.verify = verify

        listing, cache_path, walked = self._list(root, index_cache)
        counts = listing.counts
        per_class = dict(zip(self.classes, counts.tolist(), strict=True))
        empty = [name for name, count in per_class.items() if count == 0]
        if len(empty) == len(per_class):
            raise ValueError(_no_images_message(root, empty, self.extensions))
        if empty:
            message = _no_images_message(root, empty, self.extensions)
            if on_error == "raise":
                raise ValueError(
                    f"{message}. Remove the empty folder(s), list the classes to use in "
                    "`classes`, or pass on_error='skip' to keep them as classes without "
                    "images (as Keras does)"
                )
            warnings.warn(
                f"{message}; kept as classes without images (on_error='skip') so class "
                "indices match Keras",
                stacklevel=2,
            )

        split = _subset_split(self.validation_split, subset)
        starts = listing.class_starts
        chosen = np.concatenate(
            [
                np.arange(starts[k] + lo, starts[k] + hi, dtype=np.int64)
                for k, (lo, hi) in enumerate(_split_bounds(int(c), split) for c in counts)
            ]
        )
        if verify == "auto":
            verify = "header" if len(chosen) < VERIFY_AUTO_MAX_FILES else "none"
        self.verified = verify
        bad, checked = verify_listing(listing, chosen, verify, color_mode, workers=check_workers)
        if cache_path is not None and (walked or checked) and listing.cacheable:
            _save_listing(cache_path, listing)
        self.skipped: list[tuple[str, str]] = [
            (listing.samples.path(i), bad[i]) for i in sorted(bad)
        ]
        if self.skipped:
            if on_error == "raise":
                path, reason = self.skipped[0]
                error = ImageLoadError(path, reason)
                if len(self.skipped) > 1:
                    error.add_note(
                        f"{len(self.skipped) - 1} more unreadable file(s): "
                        f"{_listing(self.skipped[1:])}"
                    )
                error.add_note("Fix or remove the file(s), or pass on_error='skip'.")
                raise error
            chosen = chosen[~np.isin(chosen, np.fromiter(bad, dtype=np.int64, count=len(bad)))]
            warnings.warn(
                f"Skipped {len(self.skipped)} unreadable image file(s) under {root!r} "
                f"(on_error='skip'; see `.skipped`): {_listing(self.skipped)}",
                stacklevel=2,
            )
        if not len(chosen):
            where = f"subset {subset!r} (validation_split={validation_split})" if subset else root
            raise ValueError(
                f"Found no usable image in {where}; per-class file counts: "
                + ", ".join(f"{n}={c}" for n, c in per_class.items())
            )
        everything = len(chosen) == len(listing.samples)  # in order: no subset, nothing bad
        self.samples: SampleList = listing.samples if everything else listing.samples.take(chosen)
        self.targets: TargetList = TargetList(self.samples.targets)
        self.index_cache_path: Path | None = cache_path
        self.index_cached: bool = not walked

    def _list(self, root: str, index_cache: bool | None) -> tuple[FolderListing, Path | None, bool]:
        """The folder listing, from the index cache when it is current: ``(listing, cache
        file or None, walked)``."""
        key_args = (root, self.classes, self.extensions, self.follow_links, self.include_hidden)
        cache_path = None
        if index_cache is not False:
            from gpuaug.data.cache import default_cache_dir, resolve_cache_dir

            # Only a cache that will be written needs a valid folder now (None: looked up only).
            folder = resolve_cache_dir(None) if index_cache else default_cache_dir()
            cache_path = folder / "index" / f"{listing_key(*key_args)}.npz"
            if cache_path.is_file():
                listing = load_listing(cache_path, root)
                if listing is not None and listing.classes == self.classes:
                    return listing, cache_path, False
        exts = _normalize_extensions(self.extensions)
        listing = list_folders(root, self.classes, exts, self.follow_links, self.include_hidden)
        if index_cache is None:
            if len(listing.samples) < INDEX_CACHE_MIN_FILES:
                cache_path = None
            elif listing.cacheable:
                from gpuaug.data.cache import default_cache_dir, resolve_cache_dir

                try:
                    resolve_cache_dir(None)
                except ValueError as exc:
                    if default_cache_dir().is_file():
                        raise  # a setting naming a file is a mistake to report, by name
                    # A folder that cannot be created (read-only home): index without a cache.
                    warnings.warn(f"{exc}; the index is not cached", stacklevel=3)
                    cache_path = None
        return listing, cache_path, True

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        """Decodes sample ``index``; raises ``ImageLoadError`` whatever ``on_error`` says.

        Shape:
            -> ``(C, H, W)`` uint8, CPU, contiguous.
        """
        return load_image(
            self.samples[index][0],
            self.target_size,
            self.color_mode,
            self.interpolation,
            keep_aspect_ratio=self.keep_aspect_ratio,
            draft=self.draft,
            max_side=self.max_side,
        )

    def __getitem__(self, index: int):
        """``(image, target)``, the image alone for ``class_mode=None``, or ``None`` when the
        file fails to load and ``on_error="skip"`` (with a warning)."""
        try:
            image = self.load(index)
        except ImageLoadError as exc:
            if self.on_error == "raise":
                raise
            warnings.warn(f"Skipping a sample (on_error='skip'): {exc}", stacklevel=2)
            return None
        if self.class_mode is None:
            return image
        if self.class_mode == "input":
            return image, image
        target = torch.tensor(self.samples[index][1], dtype=torch.int64)
        return image, encode_targets(target, self.class_mode, self.num_classes)

    def counts(self) -> dict[str, int]:
        """Number of samples per class (this subset, after skipped files), in class order."""
        tally = np.bincount(self.samples.targets, minlength=self.num_classes)
        return dict(zip(self.classes, tally.tolist(), strict=True))

    def __repr__(self) -> str:
        lines = [
            f"{type(self).__name__}(root={str(self.root)!r}",
            f"  {len(self)} images, {self.num_classes} classes: {self.counts()}",
            f"  subset={self.subset!r}, validation_split={self.validation_split}",
            f"  target_size={self.target_size}, "
            + (f"max_side={self.max_side}, " if self.max_side is not None else "")
            + f"color_mode={self.color_mode!r}, "
            f"interpolation={self.interpolation!r}, class_mode={self.class_mode!r}",
        ]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} unreadable file(s)")
        return "\n".join(lines) + ")"
