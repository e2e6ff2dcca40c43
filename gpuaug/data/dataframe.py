"""``DataFrameDataset``: the data set behind ``ImageDataGenerator.flow_from_dataframe``.

The rows of a pandas DataFrame name the image files (``x_col``: paths, relative to
``directory`` or absolute) and their labels (``y_col``), indexed exactly as Keras 3's legacy
``DataFrameIterator`` does, so file order, labels, class indices and sample weights are
Keras', row for row:

1. rows whose file is missing or has no image extension are dropped
   (``validate_filenames=True``, Keras' default), with one warning naming them, as Keras
   warns; ``on_error="raise"`` raises ``FileNotFoundError`` naming them instead;
2. for ``"categorical"``, ``"binary"`` and ``"sparse"``: the classes are ``classes`` (in its
   order) or the sorted distinct labels; rows with no label among ``classes`` are dropped; a
   ``"categorical"`` label may be a list of classes (a multi-hot target);
3. ``subset`` takes rows ``[int(start * n), int(stop * n))`` of what is left (validation
   first), as Keras.

Targets per ``class_mode`` (what a batch yields after the images): ``"categorical"``
``(B, K)`` float32 (multi-hot for list labels), ``"binary"`` ``(B,)`` float32, ``"sparse"``
``(B,)`` int64 (Keras: float32), ``"raw"`` the ``y_col`` values in the column's dtype (one
column ``(B,)`` or several ``(B, k)``; numbers only), ``"multi_output"`` a list with one tensor
per column of ``y_col``,
``"input"`` the images, ``None`` nothing. ``weight_col`` adds the weights ``(B,)`` float32 as a
third element, as Keras. Everything is gathered on the device.

pandas is an optional dependency (``pip install gpuaug[dataframe]``), imported here only.

Errors (clearer than Keras' ``KeyError`` or ``TypeError``): a missing column names the column
and lists the DataFrame's columns; NaN (missing) labels name the rows; labels of the wrong
type for the class mode name the column and the first bad value.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gpuaug.data.directory import _normalize_extensions, check_split
from gpuaug.data.image import (
    COLOR_MODES,
    IMAGE_EXTENSIONS,
    _check_color_mode,
    _check_interpolation,
    _check_target_size,
    load_image,
)
from gpuaug.device import host_to_device

__all__ = ["DATAFRAME_CLASS_MODES", "DataFrameDataset", "import_pandas"]

#: ``class_mode`` values of ``flow_from_dataframe`` (Keras' ``DataFrameIterator``).
DATAFRAME_CLASS_MODES: tuple[str | None, ...] = (
    "categorical",
    "binary",
    "sparse",
    "raw",
    "multi_output",
    "input",
    None,
)
_CLASS_MODES_WITH_CLASSES = ("categorical", "binary", "sparse")
_MAX_LISTED = 20


def import_pandas() -> Any:
    """pandas, or an ImportError saying how to install it."""
    try:
        import pandas
    except ImportError as err:
        raise ImportError(
            "flow_from_dataframe needs pandas, an optional dependency of gpuaug: "
            'pip install "gpuaug[dataframe]" (or pip install pandas)'
        ) from err
    return pandas


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")  # pandas' pd.NA and pd.NaT


def _rows(index: Sequence[Any]) -> str:
    shown = ", ".join(map(repr, list(index)[:_MAX_LISTED]))
    return shown + (f", ... ({len(index)} rows)" if len(index) > _MAX_LISTED else "")


def _check_columns(df: Any, names: Sequence[str], role: str) -> None:
    for name in names:
        if name not in df.columns:
            raise ValueError(
                f"`{role}`={name!r} is not a column of the DataFrame; its columns are "
                f"{list(map(str, df.columns))}"
            )


class DataFrameDataset(Dataset):
    """Image files and labels listed in a DataFrame, indexed as Keras' ``flow_from_dataframe``.

    Follows the data set protocol of `gpuaug.loader.stages` and adds :meth:`batch_outputs` (the
    targets and weights of a batch, per ``class_mode``).

    Args:
        dataframe: a ``pandas.DataFrame``; not modified.
        directory: folder the paths in ``x_col`` are relative to; ``None``: they are used as
            they are (absolute, or relative to the working folder).
        x_col: the column of file paths (strings).
        y_col: the label column, or a list of columns (``"raw"``, ``"multi_output"``).
        weight_col: a numeric column of sample weights, or ``None``.
        target_size: ``(height, width)`` every image is resized to.
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"``.
        classes: class names in index order (``categorical``/``binary``/``sparse``);
            default: the sorted distinct labels.
        class_mode: one of :data:`DATAFRAME_CLASS_MODES` (``"other"`` is Keras' old name of
            ``"raw"``).
        validation_split: fraction held out, as Keras (see the module docstring).
        subset: ``"training"``, ``"validation"`` or ``None``, as Keras.
        interpolation: the resize filter (Keras name).
        keep_aspect_ratio: centre-crop to the target ratio before resizing (as Keras).
        validate_filenames: drop rows whose file is missing or not an image (as Keras).
        on_error: ``"skip"`` (Keras' behaviour: drop such rows with a warning; files that fail
            to decode later leave their batch) or ``"raise"``.
        extensions: file extensions counted as images (default: Keras' list plus gif, webp).

    Attributes:
        filenames: the ``x_col`` value of each kept row (Keras' ``filenames``).
        samples: ``[(path, class_index), ...]``.
        targets: class indices (0 without classes).
        labels: Keras' ``labels``: class indices, the raw values, or one array per output
            column.
        sample_weight: ``(n,)`` float32 or ``None``.
        skipped: ``[(path, reason), ...]``. Also ``classes``, ``class_to_idx`` and
            ``num_classes``.

    Raises:
        ImportError: pandas is not installed.
        ValueError: a missing column, NaN labels, a bad argument. (No row left: a warning and
            an empty data set, as Keras.)
        TypeError: labels or paths of the wrong type, a non-numeric ``weight_col``.
        FileNotFoundError: missing files with ``on_error="raise"``.
    """

    def __init__(
        self,
        dataframe: Any,
        directory: str | os.PathLike[str] | None = None,
        x_col: str = "filename",
        y_col: str | list[str] = "class",
        weight_col: str | None = None,
        target_size: tuple[int, int] = (256, 256),
        color_mode: str = "rgb",
        classes: Sequence[str] | None = None,
        class_mode: str | None = "categorical",
        validation_split: float = 0.0,
        subset: str | None = None,
        interpolation: str = "nearest",
        keep_aspect_ratio: bool = False,
        validate_filenames: bool = True,
        on_error: str = "skip",
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        super().__init__()
        pd = import_pandas()
        if not isinstance(dataframe, pd.DataFrame):
            raise TypeError(
                f"`dataframe` must be a pandas.DataFrame; got {type(dataframe).__name__}"
            )
        if class_mode == "other":
            warnings.warn(
                '`class_mode="other"` is deprecated (as in Keras), use "raw"',
                DeprecationWarning,
                stacklevel=2,
            )
            class_mode = "raw"
        if class_mode not in DATAFRAME_CLASS_MODES:
            raise ValueError(
                f"`class_mode` must be one of {list(DATAFRAME_CLASS_MODES)}; got {class_mode!r}"
            )
        self.target_size = _check_target_size(target_size)
        if self.target_size is None:
            raise ValueError("`target_size` must be a (height, width) pair; got None")
        _check_color_mode(color_mode)
        _check_interpolation(interpolation)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"`on_error` must be 'raise' or 'skip'; got {on_error!r}")
        for name, value in (
            ("keep_aspect_ratio", keep_aspect_ratio),
            ("validate_filenames", validate_filenames),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be a bool; got {value!r}")
        check_split(validation_split, subset)

        # ---- columns and label checks (Keras' _check_params, with clearer messages)
        if class_mode == "multi_output" and not isinstance(y_col, list):
            raise TypeError(
                f'class_mode="multi_output" needs `y_col` to be a list of columns; '
                f"got {type(y_col).__name__} {y_col!r}"
            )
        y_cols = list(y_col) if isinstance(y_col, list | tuple) else [y_col]
        _check_columns(df=dataframe, names=[x_col], role="x_col")
        if class_mode not in ("input", None):
            _check_columns(dataframe, y_cols, "y_col")
        if weight_col is not None:
            _check_columns(dataframe, [weight_col], "weight_col")
        df = dataframe.copy()
        bad_path = [i for i, v in zip(df.index, df[x_col], strict=True) if not isinstance(v, str)]
        if bad_path:
            raise TypeError(
                f"All values in column x_col={x_col!r} must be strings (file paths); rows "
                f"{_rows(bad_path)} are not (first: {df.loc[bad_path[0], x_col]!r})"
            )
        if class_mode not in ("input", None):
            for col in y_cols:
                missing = [i for i, v in zip(df.index, df[col], strict=True) if _is_missing(v)]
                if missing:
                    raise ValueError(
                        f"column y_col={col!r} has missing (NaN) labels in rows "
                        f"{_rows(missing)}; drop them first, e.g. df.dropna(subset=[{col!r}])"
                    )
        if class_mode in ("binary", "sparse"):
            wrong = [v for v in df[y_col] if not isinstance(v, str)]
            if wrong:
                raise TypeError(
                    f'class_mode="{class_mode}" needs string labels in y_col={y_col!r}; '
                    f"got {wrong[0]!r} ({type(wrong[0]).__name__})"
                )
        if class_mode == "categorical":
            wrong = [v for v in df[y_col] if not isinstance(v, str | list | tuple)]
            if wrong:
                raise TypeError(
                    f'class_mode="categorical" needs labels of type str, list or tuple in '
                    f"y_col={y_col!r}; got {wrong[0]!r} ({type(wrong[0]).__name__})"
                )
        if class_mode == "binary":
            found = len(set(classes)) if classes else df[y_col].nunique()
            if found != 2:
                raise ValueError(f'class_mode="binary" needs exactly 2 classes; found {found}')
        if classes and class_mode not in _CLASS_MODES_WITH_CLASSES:
            warnings.warn(
                f'`classes` is ignored with class_mode="{class_mode}" (as in Keras)', stacklevel=2
            )
        if weight_col is not None:
            _numeric_column(df[weight_col], f"weight_col={weight_col!r}", finite=True)
        if class_mode == "raw":
            for col in y_cols:
                _numeric_column(
                    df[col],
                    f"{col!r}",
                    prefix='class_mode="raw" yields the labels as a tensor, so column ',
                )
        if class_mode == "multi_output":
            for col in y_cols:
                _output_column(df[col], col)

        # ---- 1. files (Keras' _filter_valid_filepaths)
        self.directory = "" if directory is None else os.fspath(directory)
        self.root = Path(self.directory or ".")
        exts = _normalize_extensions(extensions)
        paths = [os.path.join(self.directory, f) for f in df[x_col]]
        self.skipped: list[tuple[str, str]] = []
        if validate_filenames:
            keep = []
            for path in paths:
                if not path.lower().endswith(exts):
                    self.skipped.append((path, "not an image file extension"))
                    keep.append(False)
                elif not os.path.isfile(path):
                    self.skipped.append((path, "no such file"))
                    keep.append(False)
                else:
                    keep.append(True)
            if self.skipped:
                listing = "; ".join(f"{p} ({r})" for p, r in self.skipped[:_MAX_LISTED])
                if len(self.skipped) > _MAX_LISTED:
                    listing += f"; ... and {len(self.skipped) - _MAX_LISTED} more"
                if on_error == "raise":
                    raise FileNotFoundError(
                        f"{len(self.skipped)} invalid image filename(s) in x_col={x_col!r}: "
                        f"{listing}. Fix the paths (relative to directory={directory!r}) or pass "
                        "on_error='skip' to ignore them, as Keras does"
                    )
                warnings.warn(
                    f"Found {len(self.skipped)} invalid image filename(s) in x_col={x_col!r}. "
                    f"These filename(s) will be ignored (as Keras): {listing}",
                    stacklevel=2,
                )
            df = df[np.asarray(keep, dtype=bool)]

        # ---- 2. classes (Keras' _filter_classes)
        if class_mode in _CLASS_MODES_WITH_CLASSES:
            df, class_names = _filter_classes(df, y_col, classes)
        else:
            class_names = []
        self.classes: list[str] = [str(c) for c in class_names]
        self.class_to_idx = {name: i for i, name in enumerate(class_names)}

        # ---- 3. subset (Keras' split of the remaining rows)
        if subset is not None:
            n = len(df)
            start, stop = (
                (0.0, validation_split)
                if subset == "validation"
                else (
                    validation_split,
                    1.0,
                )
            )
            df = df.iloc[int(start * n) : int(stop * n)]
        if len(df) == 0:  # Keras builds an empty iterator; we warn, as it warns
            warnings.warn(
                "no image left to load from the DataFrame"
                + (f" in subset {subset!r}" if subset else "")
                + f" ({len(dataframe)} rows, {len(self.skipped)} invalid filename(s)): the "
                "data set is empty",
                stacklevel=2,
            )

        self.filenames: list[str] = df[x_col].tolist()
        paths = [os.path.join(self.directory, f) for f in self.filenames]
        self.class_mode = class_mode
        self.color_mode = color_mode
        self.channels = COLOR_MODES[color_mode]
        self.interpolation = interpolation
        self.keep_aspect_ratio = keep_aspect_ratio
        self.on_error = on_error
        self.validation_split = float(validation_split)
        self.subset = subset
        self.num_classes = max(len(class_names), 1)

        # ---- labels per class mode
        self._y: Any = None
        if class_mode in _CLASS_MODES_WITH_CLASSES:
            per_row = [
                [self.class_to_idx[v] for v in label]
                if isinstance(label, list | tuple)
                else self.class_to_idx[label]
                for label in df[y_col]
            ]
            self.labels: Any = per_row
            _warn_empty_label_lists(df.index, per_row, y_col)
            # a row with an empty list has no class: target 0 for the sampler, not counted
            self.targets = [(t[0] if t else 0) if isinstance(t, list) else t for t in per_row]
            if class_mode == "categorical":
                hot = torch.zeros(len(per_row), len(class_names), dtype=torch.float32)
                for i, t in enumerate(per_row):
                    hot[i, t] = 1.0
                self._y = hot
            elif class_mode == "binary":
                self._y = torch.tensor(self.targets, dtype=torch.float32)
            else:
                self._y = torch.tensor(self.targets, dtype=torch.int64)
        else:
            self.targets = [0] * len(df)
            if class_mode == "raw":
                self.labels = _raw_labels(df, y_col)
                self._y = _numeric_tensor(self.labels)
            elif class_mode == "multi_output":
                self.labels = [_output_column(df[col], col) for col in y_cols]
                self._y = [_numeric_tensor(v) for v in self.labels]
            else:
                self.labels = None
        self.sample_weight = (
            torch.from_numpy(
                _numeric_column(df[weight_col], f"weight_col={weight_col!r}").astype(np.float32)
            )
            if weight_col is not None
            else None
        )
        self.samples: list[tuple[str, int]] = list(zip(paths, self.targets, strict=True))
        self._on_device: dict[torch.device, tuple[Any, Any]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        """Decodes sample ``index`` (``(C, H, W)`` uint8, CPU); raises ``ImageLoadError``."""
        return load_image(
            self.samples[index][0],
            self.target_size,
            self.color_mode,
            self.interpolation,
            keep_aspect_ratio=self.keep_aspect_ratio,
        )

    def counts(self) -> dict[str, int]:
        """Samples per class (a multi-label row counts for its first class, a row with an
        empty list for none; empty without classes)."""
        if not self.classes:
            return {}
        tally: Counter[int | None] = Counter(
            (t[0] if t else None) if isinstance(t, list) else t for t in self.labels
        )
        return {name: tally[i] for i, name in enumerate(self.classes)}

    def batch_outputs(self, x: torch.Tensor, indices: torch.Tensor) -> Any:
        """What a batch yields after the images, per ``class_mode`` (see the module docstring)."""
        mode = self.class_mode
        if mode is None:
            return x
        if mode == "input":
            y: Any = x
            w = None
            if self.sample_weight is not None:
                w = self._device(x.device)[1]
        else:
            y, w = self._device(x.device)
            idx = host_to_device(indices, x.device)
            y = (
                [t.index_select(0, idx) for t in y]
                if isinstance(y, list)
                else y.index_select(0, idx)
            )
        if w is None:
            return x, y
        return x, y, w.index_select(0, host_to_device(indices, x.device))

    def _device(self, device: torch.device) -> tuple[Any, Any]:
        if device not in self._on_device:
            y = self._y
            if isinstance(y, list):
                y = [t.to(device) for t in y]
            elif y is not None:
                y = y.to(device)
            w = None if self.sample_weight is None else self.sample_weight.to(device)
            self._on_device[device] = (y, w)
        return self._on_device[device]


def _numeric_tensor(values: Any) -> torch.Tensor:
    array = np.asarray(values)
    if array.dtype == object:
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"raw labels must be numbers; got values such as {values[0]!r}"
            ) from err
    return torch.from_numpy(np.array(array, order="C", copy=True))  # the column's dtype, as Keras


def _filter_classes(
    df: Any, y_col: str | list[str], classes: Sequence[str] | None
) -> tuple[Any, list]:
    """Keras' ``DataFrameIterator._filter_classes``: the class list, rows without one dropped."""
    df = df.copy()
    if classes:
        names = list(dict.fromkeys(classes))

        def keep(label: Any) -> Any:
            if isinstance(label, list | tuple):
                return [c for c in label if c in names] or None
            return label if label in names else None

        df[y_col] = df[y_col].apply(keep)
        return df.dropna(subset=[y_col]), names
    found: set = set()
    kinds: dict[bool, Any] = {}  # is the class name a str -> the first row with such a name
    for row, v in zip(df.index, df[y_col], strict=True):
        for name in v if isinstance(v, list | tuple) else [v]:
            if not isinstance(name, str | numbers.Number) or isinstance(name, bool):
                raise TypeError(
                    f"the labels in y_col={y_col!r} must be class names (str, or numbers); "
                    f"row {row!r} holds {name!r} ({type(name).__name__})"
                )
            kinds.setdefault(isinstance(name, str), row)
            found.add(name)
    if len(kinds) > 1:
        raise TypeError(
            f"the class names in y_col={y_col!r} must be all strings or all numbers (they are "
            f"sorted into the class list); row {kinds[True]!r} holds a string, row "
            f"{kinds[False]!r} a number"
        )
    return df, sorted(found)


def _numeric_column(series: Any, name: str, *, prefix: str = "column ", finite: bool = False):
    """A column of numbers as a numpy array: numpy int/uint/float columns, and pandas'
    nullable ``Int64``/``UInt8``/``Float64``... (extension) columns without missing values.

    Raises:
        TypeError: any other dtype (``str``, ``object``, ``category``, bool...), naming it.
        ValueError: missing values (``pd.NA``, NaN; with ``finite`` also +-inf), naming the rows.
    """
    dtype = series.dtype
    numpy_dtype = getattr(dtype, "numpy_dtype", dtype)  # a pandas extension dtype's numbers
    if (
        not isinstance(numpy_dtype, np.dtype)
        or numpy_dtype.kind not in "iuf"
        or (dtype != numpy_dtype and type(dtype).__name__ in ("CategoricalDtype", "SparseDtype"))
    ):
        raise TypeError(f"{prefix}{name} must be numeric; got dtype {dtype}")
    missing = series.isna().to_numpy()
    if missing.any():
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = series.to_numpy(dtype=numpy_dtype)
    bad = missing | (~np.isfinite(values) if finite and numpy_dtype.kind == "f" else False)
    if np.any(bad):
        rows = [r for r, b in zip(series.index, bad, strict=True) if b]
        what = "missing (NaN) or infinite" if finite else "missing (NaN)"
        raise ValueError(
            f"{prefix}{name} has {what} values in rows {_rows(rows)}; drop or fill them first"
        )
    return values


def _raw_labels(df: Any, y_col: str | list[str]) -> np.ndarray:
    """``class_mode="raw"``: the ``y_col`` values as one numeric array ``(n,)`` or ``(n, k)``."""
    if isinstance(y_col, list | tuple):
        columns = [_numeric_column(df[c], repr(c)) for c in y_col]
        return np.stack(columns, axis=1) if columns else np.zeros((len(df), 0))
    return _numeric_column(df[y_col], repr(y_col))


def _output_column(series: Any, col: str) -> np.ndarray:
    """One ``multi_output`` column as an array: numbers, or lists of numbers of one length.

    Raises:
        TypeError: a value that is neither a number nor a list of numbers, naming the row.
        ValueError: lists of different lengths (ragged), naming two rows.
    """
    if not (series.dtype == object or type(series.dtype).__name__ == "StringDtype"):
        return _numeric_column(
            series,
            repr(col),
            prefix='class_mode="multi_output" yields each column as a tensor, so column ',
        )
    rule = (
        f'class_mode="multi_output" yields each column as a tensor, so column {col!r} must '
        "hold numbers or lists of numbers of one length"
    )
    shapes: dict[tuple[int, ...] | None, Any] = {}  # a row's shape (None: a number) -> a row
    for row, v in zip(series.index, series, strict=True):
        if isinstance(v, np.ndarray):  # an array of any shape, as Keras takes one
            if v.dtype.kind not in "iuf":
                raise TypeError(f"{rule}; row {row!r} holds an array of {v.dtype}")
            shapes.setdefault(tuple(v.shape), row)
            continue
        items = list(v) if isinstance(v, list | tuple) else [v]
        for item in items:
            if not isinstance(item, numbers.Real) or isinstance(item, bool):
                raise TypeError(f"{rule}; row {row!r} holds {v!r}")
        shapes.setdefault((len(items),) if isinstance(v, list | tuple) else None, row)
    if len(shapes) > 1:
        (n0, r0), (n1, r1) = list(shapes.items())[:2]

        def size(shape: tuple[int, ...] | None) -> str:
            if shape is None:
                return "a number"
            return f"{shape[0]} value(s)" if len(shape) == 1 else f"an array of shape {shape}"

        raise ValueError(f"{rule}; row {r0!r} holds {size(n0)}, row {r1!r} {size(n1)}")
    return np.array(series.tolist())


def _warn_empty_label_lists(index: Any, per_row: list, y_col: str | list[str]) -> None:
    empty = [row for row, t in zip(index, per_row, strict=True) if isinstance(t, list) and not t]
    if empty:
        warnings.warn(
            f"rows {_rows(empty)} of y_col={y_col!r} hold an empty list of labels: their "
            "target is all zeros (as in Keras); pass `classes=` to drop such rows, as Keras "
            "does then",
            stacklevel=3,
        )
