"""``PairedDataset``: images and their segmentation masks from two parallel folder trees.

Layout::

    images/a.jpg        masks/a.png
    images/sub/b.jpg    masks/sub/b.png

A mask pairs with the image of the same relative path and stem, whatever the extensions
(``images/sub/b.jpg`` <-> ``masks/sub/b.png``), so the two trees never depend on ``os.walk``'s
order (the classic Keras recipe, two generators with one seed, breaks when it differs). Both
trees are walked recursively and sorted; the pairs come in the sorted order of their relative
paths.

At index time (``__init__``) every header of both trees is read (PIL, no pixel decoding) and
these are refused with one ``ValueError`` that lists every offending file: images without a
mask and masks without an image, two files of one tree with the same stem (``a.jpg`` and
``a.png``), an image and its mask of different sizes (after the image's EXIF orientation), a
mask in a mode that does not hold labels (``"RGB"`` and ``"RGBA"`` are read only when grey;
``"F"``, ``"CMYK"`` ... are refused). ``on_error="skip"`` drops those pairs instead (recorded
in ``skipped``, one warning).

Masks are label maps: never converted to RGB, never interpolated.

- ``"P"`` (palette) masks keep their palette *indices* (the labels), not the colours;
  ``"L"`` and ``"1"`` their values; ``"LA"`` / ``"PA"`` drop the alpha; ``"I;16"`` (16-bit) and
  ``"I"`` (32-bit) keep their full values.
- They are resized to ``target_size`` with PIL's nearest filter, whatever the images'
  ``interpolation`` (with ``interpolation="nearest"`` the mask pixels come from exactly the
  image pixels kept).
- ``load(i)`` returns them as ``(1, H, W)`` uint8 (8-bit modes), int32 (16-bit) or int64
  (32-bit): ``mask_bytes`` (1, 2 or 4) says which, from the modes found at index time.

In `gpuaug.GPULoader` batches (see `flow_from_paired_directories`), a mask travels as
``mask_bytes`` extra uint8 channels behind the image's (`pack_mask`: the label's little-endian
bytes), so the workers, pinned buffers, the side-stream copy and every cache kind carry it
unchanged; the finish stage splits it off on the device (`unpack_mask`), warps it with the
images' own params (`gpuaug.augment.targets.apply_mask`) and yields ``(x, mask)``.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from gpuaug.data.directory import check_split
from gpuaug.data.image import (
    COLOR_MODES,
    IMAGE_EXTENSIONS,
    ImageLoadError,
    _check_color_mode,
    _check_interpolation,
    _check_target_size,
    _orientation,
    load_image,
    open_image,
)

__all__ = [
    "MASK_EXTENSIONS",
    "PairedDataset",
    "find_pairs",
    "load_mask",
    "pack_mask",
    "unpack_mask",
]

#: Mask file extensions indexed by default (lossless formats; a JPEG mask would blur labels).
MASK_EXTENSIONS: tuple[str, ...] = ("png", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm")

_MAX_LISTED = 20
_ON_ERROR = ("raise", "skip")
_SUBSETS = ("training", "validation")
# PIL mode -> bytes per label.
_MASK_MODES = {
    "1": 1, "L": 1, "P": 1, "LA": 1, "PA": 1, "RGB": 1, "RGBA": 1,
    "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4,
}  # fmt: skip
_MASK_DTYPES = {1: torch.uint8, 2: torch.int32, 4: torch.int64}


#: The label written where a "constant"-mode warp reads outside the image: 0, the background
#: class, valid for every dtype and every loss. Pass ``mask_fill=255`` (with
#: ``CrossEntropyLoss(ignore_index=255)``) to leave those pixels out of the loss instead.
DEFAULT_MASK_FILL = 0


def _normalize_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        raise TypeError(f"`extensions` must be a sequence of strings; got {extensions!r}")
    exts = tuple("." + str(e).lower().lstrip(".") for e in extensions)
    if not exts:
        raise ValueError("`extensions` must name at least one file extension; got none")
    return exts


def _walk(top: str, follow_links: bool) -> Iterator[tuple[str, list[str]]]:
    """``os.walk`` yielding ``(dirpath, filenames)``; with links followed, cycles are cut."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=follow_links):
        if follow_links:
            real = os.path.realpath(dirpath)
            if real in seen:  # a link back into a folder already walked
                dirnames[:] = []
                continue
            seen.add(real)
        yield dirpath, filenames


def _index_tree(
    root: str, extensions: tuple[str, ...], follow_links: bool
) -> tuple[dict[str, str], list[str]]:
    """``{relative path without extension: path}`` and the keys found more than once."""
    found: dict[str, str] = {}
    duplicates: list[str] = []
    for dirpath, filenames in sorted(_walk(root, follow_links), key=lambda t: t[0]):
        for name in sorted(filenames):
            if not name.lower().endswith(extensions):
                continue
            path = os.path.join(dirpath, name)
            key = Path(os.path.relpath(path, root)).with_suffix("").as_posix()
            if key in found:
                duplicates.extend([found[key], path])
            else:
                found[key] = path
    return found, duplicates


def _folder(directory: str | os.PathLike[str], name: str) -> str:
    if not isinstance(directory, str | os.PathLike):
        raise TypeError(f"`{name}` must be a str or os.PathLike; got {type(directory).__name__}")
    root = os.path.expanduser(os.fspath(directory))
    if not os.path.isdir(root):
        what = "does not exist" if not os.path.exists(root) else "is not a folder"
        raise FileNotFoundError(f"`{name}` folder {root!r} {what}")
    return root


def find_pairs(
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    image_extensions: Iterable[str] = IMAGE_EXTENSIONS,
    mask_extensions: Iterable[str] = MASK_EXTENSIONS,
    follow_links: bool = False,
) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """Pair the files of two trees by relative path and stem.

    Returns:
        ``(pairs, problems)``: ``[(image_path, mask_path), ...]`` sorted by relative path, and
        ``{"image without mask": [...], "mask without image": [...], "same stem twice":
        [...]}`` (empty lists when fine).

    Raises:
        FileNotFoundError: a folder does not exist.
    """
    image_root, mask_root = _folder(images, "images"), _folder(masks, "masks")
    image_files, image_dups = _index_tree(
        image_root, _normalize_extensions(image_extensions), follow_links
    )
    mask_files, mask_dups = _index_tree(
        mask_root, _normalize_extensions(mask_extensions), follow_links
    )
    keys = sorted(image_files.keys() & mask_files.keys())
    problems = {
        "image without mask": [
            image_files[k] for k in sorted(image_files.keys() - mask_files.keys())
        ],
        "mask without image": [
            mask_files[k] for k in sorted(mask_files.keys() - image_files.keys())
        ],
        "same stem twice": image_dups + mask_dups,
    }
    return [(image_files[k], mask_files[k]) for k in keys], problems


def _header(path: str) -> tuple[tuple[int, int], str, int]:
    """``((width, height) after EXIF orientation, mode, orientation)`` from the header."""
    with open_image(path) as img:
        orientation = _orientation(img)
        width, height = img.size
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        return (width, height), img.mode, orientation


def load_mask(
    path: str | os.PathLike[str], target_size: tuple[int, int] | None, mask_bytes: int = 1
) -> torch.Tensor:
    """Decode a mask file to its labels, resized with nearest (never interpolated).

    See the module docstring for the modes. EXIF orientation is applied, as for images.

    Args:
        path: The mask file.
        target_size: (height, width) to resize to, or None.
        mask_bytes: 1, 2 or 4: the labels' width (the result is uint8, int32 or int64).

    Shape:
        file -> (1, H, W) uint8 / int32 / int64, CPU, contiguous.

    Raises:
        ImageLoadError: an unreadable file, a coloured RGB mask, an unsupported mode, labels
            wider than ``mask_bytes``.
    """
    path = os.fspath(path)
    with open_image(path) as img:
        try:
            img.load()
            out = img
            if _orientation(out) in range(2, 9):
                out = ImageOps.exif_transpose(out)
            mode = out.mode
            if mode not in _MASK_MODES:
                raise ImageLoadError(path, f"a mask in mode {mode!r} does not hold labels")
            arr = np.asarray(out)
        except ImageLoadError:
            raise
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib.error...
            raise ImageLoadError(path, f"{type(exc).__name__}: {exc}") from exc
    if arr.ndim == 3:  # LA, PA: drop alpha; RGB(A): only when grey
        if mode in ("RGB", "RGBA") and not (
            np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
        ):
            raise ImageLoadError(
                path,
                "an RGB mask with colours: masks must hold label indices; save it as a "
                "palette ('P') or greyscale ('L') PNG",
            )
        arr = arr[..., 0]
    labels = arr.astype(np.int64)  # mode "1": bool -> 0 / 1
    if labels.size and (labels.min() < 0 or labels.max() >= 256**mask_bytes):
        raise ImageLoadError(
            path, f"labels {labels.min()}..{labels.max()} do not fit {mask_bytes} byte(s)"
        )
    size = None if target_size is None else (target_size[1], target_size[0])
    if size is not None and labels.shape[::-1] != size:
        # PIL's nearest filter, as for the images, on the labels themselves ("L" or 32-bit "I")
        plane = (
            Image.fromarray(labels.astype(np.uint8))  # "L"
            if mask_bytes == 1
            else Image.fromarray(labels.astype(np.int32))  # "I"
        )
        labels = np.asarray(plane.resize(size, Image.Resampling.NEAREST)).astype(np.int64)
    dtype = {1: np.uint8, 2: np.int32, 4: np.int64}[mask_bytes]
    return torch.from_numpy(np.ascontiguousarray(labels.astype(dtype)[None]))


def pack_mask(image: torch.Tensor, mask: torch.Tensor, mask_bytes: int) -> torch.Tensor:
    """An image and its mask as one uint8 tensor: the mask's little-endian bytes as channels.

    Shape:
        image (C, H, W) uint8, mask (1, H, W) integer -> (C + mask_bytes, H, W) uint8.
    """
    labels = mask.to(torch.int64)
    planes = [((labels >> (8 * j)) & 255).to(torch.uint8) for j in range(mask_bytes)]
    return torch.cat([image, *planes], dim=0)


def unpack_mask(packed: torch.Tensor, mask_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a packed batch (`pack_mask`) into images and int64 masks, on its device.

    No host sync: a view for the images and a few elementwise ops for the masks.

    Shape:
        packed (B, C + k, H, W) uint8 -> images (B, C, H, W) uint8 (a view),
        masks (B, 1, H, W) int64.
    """
    first = packed.shape[1] - mask_bytes
    images = packed[:, :first]
    masks = packed[:, first : first + 1].to(torch.int64)
    for j in range(1, mask_bytes):
        masks = masks | (packed[:, first + j : first + j + 1].to(torch.int64) << (8 * j))
    return images, masks


class PairedDataset(Dataset):
    """Images and their segmentation masks, paired by relative path and stem.

    Args:
        images: The image tree's root.
        masks: The mask tree's root (same relative paths and stems).
        target_size: (height, width) both are resized to (images with ``interpolation``, masks
            with nearest); None keeps each file's size (the loader needs a size).
        color_mode: The images' ``"rgb"``, ``"grayscale"`` or ``"rgba"``.
        interpolation: The images' resize filter (Keras names; masks always use nearest).
        follow_links: Descend into linked sub-folders.
        validation_split: Fraction of the pairs (the first ones, in sorted order) held out for
            ``subset="validation"``, in [0, 1).
        subset: ``"training"``, ``"validation"`` or None (every pair).
        on_error: ``"raise"`` (default) or ``"skip"`` the unpaired files, mismatched sizes and
            bad masks found at index time, and files that fail to decode later (``__getitem__``
            returns None; the loader drops the sample).
        mask_fill: The label the loader's augmentation writes where it reads outside the image
            under ``fill_mode="constant"`` (`gpuaug.augment.targets.apply_mask`); default 0.
        image_extensions: The file extensions indexed in the images tree.
        mask_extensions: The file extensions indexed in the masks tree.

    Attributes:
        root, mask_root: The two folders. samples: ``[(image_path, 0), ...]`` (the loader's
        protocol); pairs: ``[(image_path, mask_path), ...]``; mask_bytes: 1, 2 or 4 (the
        labels' width, from the mask modes); channels: the image channels; class_mode:
        ``"mask"``; skipped: ``[(path, reason), ...]``.

    Shape:
        ``dataset[i]`` / ``load(i)`` -> ``(image, mask)``: (C, H, W) uint8 and (1, H, W) uint8,
        int32 or int64 (per ``mask_bytes``), CPU.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: no pair; unpaired files, mismatched sizes or bad masks (``on_error="raise"``,
            listing every one); a bad argument.
    """

    class_mode = "mask"
    num_classes = 0

    def __init__(
        self,
        images: str | os.PathLike[str],
        masks: str | os.PathLike[str],
        target_size: tuple[int, int] | None = (256, 256),
        color_mode: str = "rgb",
        interpolation: str = "nearest",
        follow_links: bool = False,
        validation_split: float = 0.0,
        subset: str | None = None,
        on_error: str = "raise",
        mask_fill: int = DEFAULT_MASK_FILL,
        image_extensions: Sequence[str] = IMAGE_EXTENSIONS,
        mask_extensions: Sequence[str] = MASK_EXTENSIONS,
    ) -> None:
        super().__init__()
        self.target_size = _check_target_size(target_size)
        _check_color_mode(color_mode)
        _check_interpolation(interpolation)
        if on_error not in _ON_ERROR:
            raise ValueError(f"`on_error` must be 'raise' or 'skip'; got {on_error!r}")
        check_split(validation_split, subset)
        if isinstance(mask_fill, bool) or not isinstance(mask_fill, int | numbers.Integral):
            raise TypeError(f"`mask_fill` must be an int label; got {mask_fill!r}")
        if mask_fill < 0:
            raise ValueError(f"`mask_fill` must be a label >= 0; got {mask_fill!r}")
        pairs, problems = find_pairs(images, masks, image_extensions, mask_extensions, follow_links)
        self.root = Path(os.path.expanduser(os.fspath(images)))
        self.mask_root = Path(os.path.expanduser(os.fspath(masks)))
        self.color_mode = color_mode
        self.channels = COLOR_MODES[color_mode]
        self.interpolation = interpolation
        self.follow_links = follow_links
        self.validation_split = float(validation_split)
        self.subset = subset
        self.on_error = on_error
        self.mask_fill = int(mask_fill)

        bad: list[tuple[str, str]] = [
            (path, kind) for kind, paths in problems.items() for path in paths
        ]
        kept: list[tuple[str, str]] = []
        widths: set[int] = set()
        for image_path, mask_path in pairs:
            try:
                image_size, _, _ = _header(image_path)
                mask_size, mode, _ = _header(mask_path)
            except ImageLoadError as exc:
                bad.append((exc.path, exc.reason or str(exc)))
                continue
            if mode not in _MASK_MODES:
                bad.append((mask_path, f"mask mode {mode!r} holds no labels"))
            elif image_size != mask_size:
                bad.append(
                    (
                        mask_path,
                        f"size {mask_size[0]}x{mask_size[1]} != image {image_path!r} "
                        f"{image_size[0]}x{image_size[1]}",
                    )
                )
            else:
                kept.append((image_path, mask_path))
                widths.add(_MASK_MODES[mode])
        self.skipped: list[tuple[str, str]] = bad
        if bad:
            listing = "; ".join(f"{p} ({why})" for p, why in bad[:_MAX_LISTED])
            if len(bad) > _MAX_LISTED:
                listing += f"; ... and {len(bad) - _MAX_LISTED} more"
            message = (
                f"{len(bad)} problem(s) pairing images in {str(self.root)!r} with masks in "
                f"{str(self.mask_root)!r} (a mask pairs with the image of the same relative path "
                f"and stem: images/x/a.jpg <-> masks/x/a.png; sizes must match): {listing}"
            )
            if on_error == "raise":
                raise ValueError(message + ". Pass on_error='skip' to leave them out")
            warnings.warn(message + " (left out: on_error='skip')", stacklevel=2)
        if not kept:
            raise ValueError(
                f"Found no image/mask pair in {str(self.root)!r} and {str(self.mask_root)!r} "
                f"(image extensions {', '.join(_normalize_extensions(image_extensions))}; mask "
                f"extensions {', '.join(_normalize_extensions(mask_extensions))})"
            )
        if subset is not None:
            cut = int(self.validation_split * len(kept))
            kept = kept[:cut] if subset == "validation" else kept[cut:]
            if not kept:
                raise ValueError(
                    f"subset {subset!r} (validation_split={validation_split}) holds no pair"
                )
        self.pairs: list[tuple[str, str]] = kept
        self.mask_bytes = max(widths, default=1)
        self.mask_dtype = _MASK_DTYPES[self.mask_bytes]
        self.samples: list[tuple[str, int]] = [(image, 0) for image, _ in kept]
        self.targets: list[int] = [0] * len(kept)
        self.classes: list[str] = []

    @property
    def mask_paths(self) -> list[str]:
        """The mask file of each sample."""
        return [mask for _, mask in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode pair ``index``: ``(image (C, H, W) uint8, mask (1, H, W))``.

        Raises:
            ImageLoadError: naming the file, whatever ``on_error`` says.
        """
        image_path, mask_path = self.pairs[index]
        image = load_image(image_path, self.target_size, self.color_mode, self.interpolation)
        mask = load_mask(mask_path, self.target_size, self.mask_bytes)
        if image.shape[1:] != mask.shape[1:]:
            raise ImageLoadError(
                mask_path,
                f"size {tuple(mask.shape[1:])} != image {tuple(image.shape[1:])} (H, W)",
            )
        return image, mask

    def load_packed(self, index: int) -> torch.Tensor:
        """Pair ``index`` as one uint8 tensor (`pack_mask`), as the loader's workers read it.

        Shape:
            -> (C + mask_bytes, H, W) uint8, CPU.
        """
        return pack_mask(*self.load(index), self.mask_bytes)

    def __getitem__(self, index: int) -> Any:
        """``(image, mask)``, or None when a file fails and ``on_error="skip"`` (a warning)."""
        try:
            return self.load(index)
        except ImageLoadError as exc:
            if self.on_error == "raise":
                raise
            warnings.warn(f"Skipping a sample (on_error='skip'): {exc}", stacklevel=2)
            return None

    def counts(self) -> dict[str, int]:
        """``{"pairs": n}`` (there are no classes)."""
        return {"pairs": len(self)}

    def __repr__(self) -> str:
        size = self.target_size
        return (
            f"{type(self).__name__}(images={str(self.root)!r}, masks={str(self.mask_root)!r}, "
            f"{len(self)} pairs, target_size={size}, color_mode={self.color_mode!r}, "
            f"mask_bytes={self.mask_bytes}, subset={self.subset!r})"
        )
