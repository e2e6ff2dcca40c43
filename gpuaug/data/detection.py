"""Detection targets from a file: images with their boxes from COCO JSON or a CSV.

Two formats, both giving boxes in the image's own pixels:

- **COCO** (``.json``): ``images`` (``id``, ``file_name`` relative to the image folder,
  ``width``, ``height``), ``annotations`` (``image_id``, ``bbox`` = ``[x, y, w, h]``,
  ``category_id``, ``iscrowd``) and ``categories`` (``id``, ``name``). Classes are the
  categories sorted by id (label ``k`` is ``classes[k]``, not the COCO id); crowd boxes are
  left out unless ``include_crowd``. Images without annotations are kept (no boxes).
- **CSV** (``.csv``), one row per box, a header naming at least ``filename``, ``xmin``,
  ``ymin``, ``xmax``, ``ymax`` and ``class`` (or ``label``); other columns (``width``,
  ``height`` ...) are ignored (the TensorFlow object-detection CSV works as is). A row with an
  empty ``xmin`` lists an image without boxes. Classes are the sorted distinct names
  (numerically when they are all integers).

Boxes are ``xyxy`` in continuous pixel coordinates (`gpuaug.augment.targets`), scaled to
``target_size`` with the image and padded to one count per data set: ``boxes (n, M, 4)``,
``labels (n, M)``, ``box_valid (n, M)``. `flow_from_detection_file` yields ``(x, (boxes,
labels, valid))`` batches whose boxes went through each sample's own transform
(`gpuaug.augment.targets.apply_boxes`, ``min_visibility``), on the device without a host sync.
"""

from __future__ import annotations

import csv
import json
import numbers
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gpuaug.data.image import (
    COLOR_MODES,
    ImageLoadError,
    _check_color_mode,
    _check_interpolation,
    _check_target_size,
    load_image,
)
from gpuaug.data.paired import _header

__all__ = [
    "Annotations",
    "DetectionDataset",
    "read_annotations",
    "read_boxes_csv",
    "read_coco",
]

_MAX_LISTED = 20
_CSV_COLUMNS = ("filename", "xmin", "ymin", "xmax", "ymax")


@dataclass(frozen=True)
class Annotations:
    """Boxes per image file, as read from an annotation file.

    Attributes:
        classes: Class names; label ``k`` is ``classes[k]``.
        files: ``{file name relative to the image folder: (boxes (N, 4) float32 xyxy in the
            image's pixels, labels (N,) int64)}``, in the file's order.
        source: The annotation file.
    """

    classes: list[str]
    files: dict[str, tuple[np.ndarray, np.ndarray]]
    source: str


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)


def read_coco(path: str | os.PathLike[str], *, include_crowd: bool = False) -> Annotations:
    """Read a COCO detection file (see the module docstring).

    Two ``images`` entries with the same ``file_name`` are one file: their boxes are merged
    (with a warning naming the file and the ids).

    Raises:
        ValueError: not a JSON object with ``images``, ``annotations`` and ``categories``;
            or entries without their keys (``id``, ``file_name``, ``image_id``,
            ``category_id``, ``bbox`` of 4 numbers), of an unknown image or category: every
            such problem listed in one error.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read COCO file {path!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(
            f"COCO file {path!r} must hold a JSON object with images, annotations and "
            f"categories; got a JSON {type(data).__name__}"
        )
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"COCO file {path!r} has no {', '.join(missing)} key(s)")
    problems: list[str] = []
    entries = {}
    for key in ("images", "annotations", "categories"):
        entries[key] = data[key] if isinstance(data[key], list) else []
        if not isinstance(data[key], list):
            problems.append(f"{key} is a {type(data[key]).__name__}, not a list")
    categories = []
    for k, c in enumerate(entries["categories"]):
        lacking = _lacking(c, ("id", "name"))
        if lacking:
            problems.append(f"categories[{k}] has no {lacking}")
        else:
            categories.append(c)
    try:
        categories = sorted(categories, key=lambda c: c["id"])
    except TypeError:
        problems.append("category ids must be all numbers or all strings (they are sorted)")
    label_of = {c["id"]: k for k, c in enumerate(categories)}
    file_of: dict[Any, str] = {}
    ids_of: dict[str, list[Any]] = {}
    for k, img in enumerate(entries["images"]):
        lacking = _lacking(img, ("id", "file_name"))
        if lacking:
            problems.append(f"images[{k}] has no {lacking}")
            continue
        file_of[img["id"]] = img["file_name"]
        ids_of.setdefault(img["file_name"], []).append(img["id"])
    per_file: dict[str, tuple[list[list[float]], list[int]]] = {n: ([], []) for n in ids_of}
    for k, ann in enumerate(entries["annotations"]):
        where = f"annotation {ann.get('id', f'[{k}]')}" if isinstance(ann, dict) else f"[{k}]"
        lacking = _lacking(ann, ("image_id", "category_id", "bbox"))
        if lacking:
            problems.append(f"{where} has no {lacking}")
            continue
        if ann.get("iscrowd", 0) and not include_crowd:
            continue
        bbox = ann["bbox"]
        if (
            not isinstance(bbox, list | tuple)
            or len(bbox) != 4
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in bbox)
        ):
            problems.append(f"{where}: bbox must be 4 numbers [x, y, w, h]; got {bbox!r}")
            continue
        if ann["image_id"] not in file_of:
            problems.append(f"{where} of unknown image {ann['image_id']!r}")
            continue
        if ann["category_id"] not in label_of:
            problems.append(f"{where} of unknown category {ann['category_id']!r}")
            continue
        x, y, w, h = (float(v) for v in bbox)
        boxes, labels = per_file[file_of[ann["image_id"]]]
        boxes.append([x, y, x + w, y + h])
        labels.append(label_of[ann["category_id"]])
    if problems:
        listing = "; ".join(problems[:_MAX_LISTED])
        more = (
            f"; ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        )
        raise ValueError(f"COCO file {path!r}: {len(problems)} problem(s): {listing}{more}")
    shared = {name: ids for name, ids in ids_of.items() if len(ids) > 1}
    if shared:
        listing = "; ".join(f"{n} (ids {ids})" for n, ids in list(shared.items())[:_MAX_LISTED])
        warnings.warn(
            f"COCO file {path!r}: {len(shared)} file name(s) listed by several images entries; "
            f"their boxes are merged: {listing}",
            stacklevel=2,
        )
    files = {
        name: (np.asarray(b, np.float32).reshape(-1, 4), np.asarray(lab, np.int64))
        for name, (b, lab) in per_file.items()
    }
    return Annotations([str(c["name"]) for c in categories], files, path)


def _lacking(entry: Any, keys: tuple[str, ...]) -> str:
    """The keys ``entry`` (a JSON object) lacks, as text (``""``: none)."""
    if not isinstance(entry, dict):
        return f"keys (a JSON {type(entry).__name__}, not an object)"
    return ", ".join(k for k in keys if k not in entry)


def read_boxes_csv(path: str | os.PathLike[str]) -> Annotations:
    """Read a CSV of boxes, one row per box (see the module docstring).

    Raises:
        ValueError: missing columns, a row whose coordinates are not numbers (naming the
            line), or a file that is not UTF-8 (a byte order mark is fine).
    """
    path = os.fspath(path)
    try:
        return _read_boxes_csv(path)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"CSV {path!r} is not UTF-8 text ({exc.reason}: byte {exc.object[exc.start]:#04x} "
            f"at offset {exc.start}); save it as UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None


def _read_boxes_csv(path: str) -> Annotations:
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's byte order mark
        reader = csv.DictReader(f)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        label_key = "class" if "class" in header else "label" if "label" in header else None
        missing = [c for c in _CSV_COLUMNS if c not in header] + ([] if label_key else ["class"])
        if missing:
            raise ValueError(
                f"CSV {path!r} lacks the column(s) {', '.join(missing)}; its header is "
                f"{', '.join(header) or '(empty)'}; expected filename,xmin,ymin,xmax,ymax,class"
            )
        rows: dict[str, list[tuple[list[float], str]]] = {}
        for line, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            boxes = rows.setdefault(row["filename"], [])
            if row["xmin"] == "":
                continue
            try:
                coords = [float(row[c]) for c in ("xmin", "ymin", "xmax", "ymax")]
            except ValueError:
                raise ValueError(
                    f"CSV {path!r} line {line}: box coordinates must be numbers; got "
                    f"{[row[c] for c in ('xmin', 'ymin', 'xmax', 'ymax')]}"
                ) from None
            boxes.append((coords, row[label_key]))
    names = sorted({name for boxes in rows.values() for _, name in boxes})
    if names and all(n.lstrip("-").isdigit() for n in names):
        names = sorted(names, key=int)
    label_of = {n: k for k, n in enumerate(names)}
    files = {}
    for file, boxes in rows.items():
        if not boxes:
            files[file] = _empty()
            continue
        files[file] = (
            np.asarray([b for b, _ in boxes], np.float32),
            np.asarray([label_of[n] for _, n in boxes], np.int64),
        )
    return Annotations(names, files, path)


def read_annotations(path: str | os.PathLike[str], **kwargs: Any) -> Annotations:
    """`read_coco` for ``.json``, `read_boxes_csv` for ``.csv``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return read_coco(path, **kwargs)
    if suffix == ".csv":
        return read_boxes_csv(path)
    raise ValueError(f"`annotations` must be a COCO .json or a .csv file; got {os.fspath(path)!r}")


class DetectionDataset(Dataset):
    """Images and their boxes from an annotation file (COCO JSON or CSV).

    Args:
        images: The folder the annotation file's file names are relative to.
        annotations: A ``.json`` (COCO) or ``.csv`` path, or `Annotations`.
        target_size: (height, width) images are resized to; boxes are scaled with them.
        color_mode: As `gpuaug.DirectoryDataset`.
        interpolation: As `gpuaug.DirectoryDataset`.
        on_error: ``"raise"`` or ``"skip"`` missing or unreadable image files, degenerate
            boxes (x1 <= x0 or y1 <= y0) and boxes with NaN or inf found at index time, and
            files that fail later. Boxes wholly outside their image are left out with a
            warning counting them (``outside``); boxes partly outside are clipped.
        min_visibility: The loader drops (``valid`` False) a box keeping less than this
            fraction of its area inside the augmented image (`gpuaug.augment.targets.apply_boxes`).

    Attributes:
        samples: ``[(path, 0), ...]``.
        class_mode: ``"boxes"``.
        boxes: ``(n, M, 4)`` float32 (M the largest box count, at least 1).
        labels: ``(n, M)`` int64.
        box_valid: ``(n, M)`` bool. Also ``root``, ``classes``, ``num_classes`` and
            ``skipped``, ``outside`` (boxes left out for lying wholly outside their image).

    Shape:
        ``dataset[i]`` -> ``(image (C, H, W) uint8, boxes (Ni, 4) float32, labels (Ni,)
        int64)``; ``load(i)`` -> the image.
    """

    class_mode = "boxes"

    def __init__(
        self,
        images: str | os.PathLike[str],
        annotations: str | os.PathLike[str] | Annotations,
        target_size: tuple[int, int] = (256, 256),
        color_mode: str = "rgb",
        interpolation: str = "nearest",
        on_error: str = "raise",
        min_visibility: float = 0.0,
    ) -> None:
        super().__init__()
        self.target_size = _check_target_size(target_size)
        if self.target_size is None:
            raise ValueError("`target_size` must be a (height, width) pair; got None")
        _check_color_mode(color_mode)
        _check_interpolation(interpolation)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"`on_error` must be 'raise' or 'skip'; got {on_error!r}")
        if (
            not isinstance(min_visibility, int | float | numbers.Real)
            or not 0 <= min_visibility <= 1
        ):
            raise ValueError(f"`min_visibility` must be a number in [0, 1]; got {min_visibility!r}")
        root = os.path.expanduser(os.fspath(images))
        if not os.path.isdir(root):
            raise FileNotFoundError(f"`images` folder {root!r} does not exist")
        ann = annotations if isinstance(annotations, Annotations) else read_annotations(annotations)
        self.root = Path(root)
        self.classes = list(ann.classes)
        self.num_classes = len(self.classes)
        self.color_mode = color_mode
        self.channels = COLOR_MODES[color_mode]
        self.interpolation = interpolation
        self.on_error = on_error
        self.min_visibility = float(min_visibility)

        height, width = self.target_size
        bad: list[tuple[str, str]] = []
        outside: list[tuple[str, int]] = []
        kept: list[tuple[str, np.ndarray, np.ndarray]] = []
        for name, (boxes, labels) in ann.files.items():
            path = os.path.join(root, name)
            try:
                (w0, h0), _, _ = _header(path)
            except ImageLoadError as exc:
                bad.append((path, exc.reason or "cannot read"))
                continue
            finite = np.isfinite(boxes).all(axis=1)
            if not finite.all():
                bad.append((path, f"box(es) with NaN or inf {boxes[~finite].tolist()[:3]}"))
                continue
            degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if degenerate.any():
                bad.append((path, f"degenerate box(es) {boxes[degenerate].tolist()[:3]}"))
                continue
            inside = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < w0) & (boxes[:, 1] < h0)
            if not inside.all():
                outside.append((path, int((~inside).sum())))
                boxes, labels = boxes[inside], labels[inside]
            scale = np.array([width / w0, height / h0, width / w0, height / h0], np.float32)
            clipped = np.clip(boxes * scale, 0, [width, height, width, height])
            kept.append((path, clipped.astype(np.float32), labels))
        self.skipped = bad
        #: ``[(path, count), ...]``: boxes left out because they lie wholly outside their image
        self.outside = outside
        if outside:
            listing = "; ".join(f"{p} ({k})" for p, k in outside[:_MAX_LISTED])
            warnings.warn(
                f"{sum(k for _, k in outside)} box(es) of {ann.source!r} lie wholly outside "
                f"their image and are left out (boxes partly outside are clipped): {listing}",
                stacklevel=2,
            )
        if bad:
            listing = "; ".join(f"{p} ({why})" for p, why in bad[:_MAX_LISTED])
            message = f"{len(bad)} problem(s) with the images of {ann.source!r}: {listing}"
            if on_error == "raise":
                raise ValueError(message + ". Pass on_error='skip' to leave them out")
            warnings.warn(message + " (left out: on_error='skip')", stacklevel=2)
        if not kept:
            raise ValueError(f"no usable image in {ann.source!r} (folder {root!r})")
        m = max(1, max(len(b) for _, b, _ in kept))
        self.boxes = torch.zeros((len(kept), m, 4), dtype=torch.float32)
        self.labels = torch.zeros((len(kept), m), dtype=torch.int64)
        self.box_valid = torch.zeros((len(kept), m), dtype=torch.bool)
        for i, (_, boxes, labels) in enumerate(kept):
            self.boxes[i, : len(boxes)] = torch.from_numpy(boxes)
            self.labels[i, : len(labels)] = torch.from_numpy(labels)
            self.box_valid[i, : len(boxes)] = True
        self.samples: list[tuple[str, int]] = [(path, 0) for path, _, _ in kept]
        self.targets: list[int] = [0] * len(kept)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        """Decode image ``index`` (resized); raises `ImageLoadError` naming the file."""
        return load_image(
            self.samples[index][0], self.target_size, self.color_mode, self.interpolation
        )

    def __getitem__(self, index: int) -> Any:
        """``(image, boxes, labels)`` of image ``index`` (its real boxes only)."""
        try:
            image = self.load(index)
        except ImageLoadError as exc:
            if self.on_error == "raise":
                raise
            warnings.warn(f"Skipping a sample (on_error='skip'): {exc}", stacklevel=2)
            return None
        valid = self.box_valid[index]
        return image, self.boxes[index][valid], self.labels[index][valid]

    def counts(self) -> dict[str, int]:
        """Boxes per class."""
        labels = self.labels[self.box_valid]
        tally = torch.bincount(labels, minlength=self.num_classes).tolist()
        return {name: tally[k] for k, name in enumerate(self.classes)}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, {len(self)} images, "
            f"{int(self.box_valid.sum())} boxes, {self.num_classes} classes, "
            f"target_size={self.target_size})"
        )
