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

    Raises:
        ValueError: not COCO (missing keys), an annotation of an unknown image or category.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read COCO file {path!r}: {exc}") from exc
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"COCO file {path!r} has no {', '.join(missing)} key(s)")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: k for k, c in enumerate(categories)}
    names = {img["id"]: img["file_name"] for img in data["images"]}
    per_image: dict[Any, tuple[list[list[float]], list[int]]] = {i: ([], []) for i in names}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0) and not include_crowd:
            continue
        if ann["image_id"] not in per_image:
            raise ValueError(f"COCO file {path!r}: annotation {ann.get('id')} of unknown image "
                             f"{ann['image_id']!r}")  # fmt: skip
        if ann["category_id"] not in label_of:
            raise ValueError(f"COCO file {path!r}: annotation {ann.get('id')} of unknown "
                             f"category {ann['category_id']!r}")  # fmt: skip
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes, labels = per_image[ann["image_id"]]
        boxes.append([x, y, x + w, y + h])
        labels.append(label_of[ann["category_id"]])
    files = {
        names[i]: (np.asarray(b, np.float32).reshape(-1, 4), np.asarray(lab, np.int64))
        for i, (b, lab) in per_image.items()
    }
    return Annotations([str(c["name"]) for c in categories], files, path)


def read_boxes_csv(path: str | os.PathLike[str]) -> Annotations:
    """Read a CSV of boxes, one row per box (see the module docstring).

    Raises:
        ValueError: missing columns, or a row whose coordinates are not numbers (naming the
            line).
    """
    path = os.fspath(path)
    with open(path, newline="", encoding="utf-8") as f:
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
        on_error: ``"raise"`` or ``"skip"`` missing or unreadable image files and degenerate
            boxes (x1 <= x0 or y1 <= y0) found at index time, and files that fail later.
        min_visibility: The loader drops (``valid`` False) a box keeping less than this
            fraction of its area inside the augmented image (`gpuaug.augment.targets.apply_boxes`).

    Attributes:
        samples: ``[(path, 0), ...]``.
        class_mode: ``"boxes"``.
        boxes: ``(n, M, 4)`` float32 (M the largest box count, at least 1).
        labels: ``(n, M)`` int64.
        box_valid: ``(n, M)`` bool. Also ``root``, ``classes``, ``num_classes`` and
            ``skipped``.

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
        if not isinstance(min_visibility, numbers.Real) or not 0 <= min_visibility <= 1:
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
        kept: list[tuple[str, np.ndarray, np.ndarray]] = []
        for name, (boxes, labels) in ann.files.items():
            path = os.path.join(root, name)
            try:
                (w0, h0), _, _ = _header(path)
            except ImageLoadError as exc:
                bad.append((path, exc.reason or "cannot read"))
                continue
            degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if degenerate.any():
                bad.append((path, f"degenerate box(es) {boxes[degenerate].tolist()[:3]}"))
                continue
            scale = np.array([width / w0, height / h0, width / w0, height / h0], np.float32)
            clipped = np.clip(boxes * scale, 0, [width, height, width, height])
            kept.append((path, clipped.astype(np.float32), labels))
        self.skipped = bad
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
