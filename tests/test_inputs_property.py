"""Property: any ``flow`` / ``flow_from_dataframe`` input either yields every sample exactly
once per epoch with its own label and weight, or is refused with a ValueError / TypeError
naming the argument, column or row. Nothing in between (no numpy / torch error, no lost or
mislabelled sample)."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest
import torch

import gpuaug

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(
    max_examples=int(os.environ.get("GPUAUG_PROPERTY_EXAMPLES", "40")),  # more: set it
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_NAMED = re.compile(r"`\w+`|\bcolumn\b|\brows?\b|\by_col\b|\bweight_col\b|\bx_col\b|class_mode")

_X_DTYPES = [np.uint8, np.uint16, np.int32, np.float16, np.float32, np.float64, np.bool_]
_Y_DTYPES = [np.int8, np.int64, np.uint16, np.uint32, np.uint64, np.float32, np.float64, np.bool_]


def _values(draw, dtype, shape) -> np.ndarray:
    """Numbers of ``dtype``: small, huge, and for floats NaN / inf."""
    size = int(np.prod(shape))
    if np.dtype(dtype) == np.bool_:
        return np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size))).reshape(shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        ints = st.one_of(st.integers(0, 9), st.sampled_from([int(info.min), int(info.max)]))
        return np.array(draw(st.lists(ints, min_size=size, max_size=size)), dtype=dtype).reshape(
            shape
        )
    specials = st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -0.0])
    floats = st.one_of(st.floats(-10, 300, width=32), specials)
    return np.array(draw(st.lists(floats, min_size=size, max_size=size)), dtype=dtype).reshape(
        shape
    )


@st.composite
def flow_inputs(draw):
    n = draw(st.integers(0, 9))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    c = draw(st.sampled_from([1, 3, 4]))
    x = _values(draw, draw(st.sampled_from(_X_DTYPES)), (n, h, w, c))
    ny = draw(st.sampled_from([n, n, n, n + 1]))  # now and then one label too many
    y = None
    if draw(st.booleans()):
        tail = draw(st.sampled_from([(), (), (2,)]))
        y = _values(draw, draw(st.sampled_from(_Y_DTYPES)), (ny, *tail))
    weight = None
    if y is not None and draw(st.booleans()):
        weight = _values(draw, draw(st.sampled_from([np.float32, np.float64, np.int64])), (ny,))
    batch_size = draw(st.integers(1, 4))
    return x, y, weight, batch_size, draw(st.booleans())


def _refused_with_a_name(err: Exception) -> None:
    assert isinstance(err, ValueError | TypeError), f"{type(err).__name__}: {err}"
    assert _NAMED.search(str(err)), f"the error names no argument, column or row: {err}"


def _epoch(loader):
    """``(indices, batch)`` for each step of one epoch, as the sampler made them."""
    epoch = loader.epoch
    out = [(loader.sampler.batch(epoch, step), batch) for step, batch in enumerate(loader)]
    assert len(out) == len(loader)
    return out


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    return torch.equal(got.isnan(), want.isnan()) and torch.equal(
        got.nan_to_num(0.0), want.nan_to_num(0.0)
    )


@SETTINGS
@given(flow_inputs())
def test_flow_yields_every_sample_once_with_its_label_or_names_the_bad_argument(case):
    x, y, weight, batch_size, shuffle = case
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loader = gpuaug.ImageDataGenerator(device="cpu").flow(
                x, y, batch_size=batch_size, shuffle=shuffle, sample_weight=weight, seed=0
            )
    except Exception as err:  # noqa: BLE001 - the property is about which errors
        _refused_with_a_name(err)
        return
    seen = []
    for idx, batch in _epoch(loader):
        seen += idx.tolist()
        images = batch[0] if isinstance(batch, tuple) else batch
        want = torch.from_numpy(x[idx.numpy()].astype(np.float32)).permute(0, 3, 1, 2)
        assert _same(images.float(), want)
        if y is not None:
            labels, want = batch[1], y[idx.numpy()]
            if want.dtype.kind == "f":  # float labels keep their dtype, as Keras keeps them
                assert labels.dtype == torch.from_numpy(want).dtype, (labels.dtype, want.dtype)
                assert _same(labels, torch.from_numpy(want)), (labels, want)
            else:  # every integer (unsigned too) and bool kept exactly
                assert labels.tolist() == want.tolist(), (labels, want)
        if weight is not None:
            want = torch.from_numpy(weight[idx.numpy()].astype(np.float32))
            assert _same(batch[2], want), (batch[2], want)
    assert sorted(seen) == list(range(len(x)))


# ------------------------------------------------------------------ flow_from_dataframe

pd = pytest.importorskip("pandas")

_FILES = [f"{i}.png" for i in range(6)]
_CLASS_MODES = ["categorical", "binary", "sparse", "raw", "multi_output", "input", None]
_LABEL_KINDS = ["str", "str_dtype", "list", "mixed_list", "int", "float", "Int64", "Float64"]
_WEIGHT_KINDS = [None, "float", "Int64", "Float64", "str"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("frame")
    for i, name in enumerate(_FILES):
        Image.fromarray(np.full((4, 5, 3), 40 * i, np.uint8)).save(folder / name)
    return folder


def _column(draw, kind: str, n: int):
    pick = lambda s: draw(st.lists(s, min_size=n, max_size=n))  # noqa: E731
    number = st.one_of(st.integers(0, 3), st.sampled_from([2**40]))
    real = st.one_of(st.floats(-5, 5), st.sampled_from([np.nan, np.inf, 1e30]))
    maybe_none = lambda s: st.one_of(s, st.none()) if draw(st.booleans()) else s  # noqa: E731
    if kind == "str":
        return pick(st.sampled_from("abc"))
    if kind == "str_dtype":
        return pd.Series(pick(st.sampled_from("abc")), dtype="str")
    if kind == "list":
        return pick(st.lists(st.sampled_from("abc"), max_size=3))
    if kind == "mixed_list":
        return pick(st.lists(st.one_of(st.sampled_from("ab"), st.integers(0, 2)), max_size=2))
    if kind == "int":
        return np.array(pick(number), dtype=np.int64)
    if kind == "float":
        return np.array(pick(real), dtype=np.float64)
    if kind == "Int64":
        return pd.array(pick(maybe_none(number)), dtype="Int64")
    if kind == "Float64":
        return pd.array(pick(maybe_none(st.floats(-5, 5))), dtype="Float64")
    return pick(st.sampled_from(["1.5", "x"]))  # "str" weights


@st.composite
def frame_inputs(draw):
    n = draw(st.integers(0, 6))
    class_mode = draw(st.sampled_from(_CLASS_MODES))
    columns = {"filename": draw(st.lists(st.sampled_from(_FILES), min_size=n, max_size=n))}
    kinds = [draw(st.sampled_from(_LABEL_KINDS)) for _ in range(draw(st.integers(1, 2)))]
    for k, kind in enumerate(kinds):
        columns[f"y{k}"] = _column(draw, kind, n)
    weight_kind = draw(st.sampled_from(_WEIGHT_KINDS))
    if weight_kind is not None:
        columns["w"] = _column(draw, weight_kind, n)
    df = pd.DataFrame(columns)
    y_col = [f"y{k}" for k in range(len(kinds))]
    if class_mode != "multi_output" and (len(y_col) == 1 or class_mode != "raw"):
        y_col = y_col[0]
    return df, class_mode, y_col, None if weight_kind is None else "w", draw(st.integers(1, 4))


def _expected_targets(df, class_mode, y_col):
    """The labels of every row as this test reads the rules (Keras'), independently."""
    if class_mode in ("sparse", "binary", "categorical"):
        labels = list(df[y_col])
        names = sorted({c for v in labels for c in (v if isinstance(v, list) else [v])})
        if class_mode == "categorical":
            hot = np.zeros((len(labels), len(names)), np.float32)
            for i, v in enumerate(labels):
                for c in v if isinstance(v, list) else [v]:
                    hot[i, names.index(c)] = 1
            return torch.from_numpy(hot)
        index = torch.tensor([names.index(v) for v in labels])
        return index.float() if class_mode == "binary" else index
    if class_mode == "raw":
        cols = y_col if isinstance(y_col, list) else [y_col]
        values = np.stack([df[c].to_numpy(dtype=np.float64) for c in cols], axis=1)
        return torch.from_numpy(values if isinstance(y_col, list) else values[:, 0])
    if class_mode == "multi_output":
        return [torch.from_numpy(np.array(df[c].tolist(), dtype=np.float64)) for c in y_col]
    return None


@SETTINGS
@given(frame_inputs())
def test_flow_from_dataframe_yields_every_row_once_with_its_label_or_names_the_bad_input(
    image_folder, case
):
    df, class_mode, y_col, weight_col, batch_size = case
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loader = gpuaug.ImageDataGenerator(device="cpu").flow_from_dataframe(
                df, directory=str(image_folder), x_col="filename", y_col=y_col,
                weight_col=weight_col, class_mode=class_mode, target_size=(4, 5),
                batch_size=batch_size, seed=0, num_workers=0,
            )  # fmt: skip
    except Exception as err:  # noqa: BLE001 - the property is about which errors
        _refused_with_a_name(err)
        return
    expected = _expected_targets(df, class_mode, y_col)
    weights = None if weight_col is None else df[weight_col].to_numpy(dtype=np.float32)
    seen = []
    for idx, batch in _epoch(loader):
        seen += idx.tolist()
        if class_mode is None:
            assert isinstance(batch, torch.Tensor) and len(batch) == len(idx)
            continue
        x, y = batch[0], batch[1]
        if class_mode == "input":  # a copy of the input, as Keras gives
            assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()
        elif class_mode == "multi_output":
            for got, want in zip(y, expected, strict=True):
                assert _same(got.double(), want[idx].to(got.dtype).double())
        else:
            want = expected[idx]
            assert _same(y.double(), want.to(y.dtype).double()), (y, want)
        if weights is not None:
            assert _same(batch[2], torch.from_numpy(weights[idx.numpy()]))
    assert sorted(seen) == list(range(len(df)))
