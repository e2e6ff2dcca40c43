"""``flow_from_dataframe`` (gpuaug.data.dataframe) against Keras' DataFrameIterator."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image
from PIL import Image

import gpuaug
from gpuaug.data.dataframe import DataFrameDataset

pd = pytest.importorskip("pandas")


@pytest.fixture
def frame(tmp_path: Path):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    names = []
    for i in range(12):
        name = f"f{(i * 7) % 12:02d}.png"
        Image.fromarray(textured_image(rng, 9, 11)).save(tmp_path / "img" / name)
        names.append(name)
    df = pd.DataFrame(
        {
            "filename": names,
            "class": [["dog", "cat", "bird"][i % 3] for i in range(12)],
            "w": np.linspace(0.5, 2.0, 12),
            "a": np.arange(12, dtype=np.float64),
            "b": np.arange(12) * 10,
        }
    )
    return tmp_path / "img", df


def _keras(df, directory, **kwargs):
    from keras.src.legacy.preprocessing.image import ImageDataGenerator as KerasIDG

    split = kwargs.pop("validation_split", 0.0)
    return KerasIDG(validation_split=split).flow_from_dataframe(
        df, directory=str(directory), target_size=(9, 11), shuffle=False, **kwargs
    )


def _ours(df, directory, **kwargs):
    split = kwargs.pop("validation_split", 0.0)
    gen = gpuaug.ImageDataGenerator(validation_split=split, device="cpu")
    return gen.flow_from_dataframe(
        df, directory=str(directory), target_size=(9, 11), shuffle=False, num_workers=0, **kwargs
    )


@pytest.mark.keras
@pytest.mark.parametrize("class_mode", ["categorical", "sparse"])
@pytest.mark.parametrize("subset", [None, "training", "validation"])
def test_index_labels_and_weights_match_keras(frame, class_mode, subset):
    directory, df = frame
    df = df.drop(index=[4])  # an unsorted index with a gap, as after filtering
    kw = dict(class_mode=class_mode, weight_col="w", subset=subset, validation_split=0.25)
    k, g = _keras(df, directory, **kw), _ours(df, directory, **kw)
    assert g.filenames == k.filenames
    assert g.class_indices == k.class_indices
    np.testing.assert_array_equal(g.classes, k.classes)
    assert g.n == k.n == g.samples
    kx, ky, kw_ = k[0]
    gx, gy, gw = next(iter(g))
    np.testing.assert_array_equal(gx.permute(0, 2, 3, 1).numpy(), kx)
    np.testing.assert_array_equal(gy.numpy(), ky)
    np.testing.assert_allclose(gw.numpy(), kw_, rtol=1e-6)


@pytest.mark.keras
def test_raw_and_multi_output_match_keras(frame):
    directory, df = frame
    for kw in (
        dict(class_mode="raw", y_col="a"),
        dict(class_mode="raw", y_col=["a", "b"]),
        dict(class_mode="multi_output", y_col=["a", "b"]),
    ):
        _, ky = _keras(df, directory, **kw)[0]
        _, gy = next(iter(_ours(df, directory, **kw)))
        if kw["class_mode"] == "multi_output":
            assert len(gy) == len(ky) == 2
            for g, k in zip(gy, ky, strict=True):
                np.testing.assert_array_equal(g.numpy(), k)
        else:
            np.testing.assert_array_equal(gy.numpy(), ky)


@pytest.mark.keras
def test_missing_files_are_dropped_with_a_warning_as_keras(frame, tmp_path):
    directory, df = frame
    df = pd.concat([df, pd.DataFrame({"filename": ["gone.png"], "class": ["cat"]})])
    with pytest.warns(UserWarning, match=r"Found 1 invalid image filename.*gone\.png"):
        g = _ours(df, directory)
    with pytest.warns(UserWarning, match="Found 1 invalid image filename"):
        k = _keras(df, directory)
    assert g.filenames == k.filenames


def test_absolute_paths_work_without_directory(frame):
    directory, df = frame
    df = df.assign(filename=[str(directory / f) for f in df["filename"]])
    ds = DataFrameDataset(df, None, target_size=(9, 11))
    assert len(ds) == 12 and ds.load(0).shape == (3, 9, 11)


def test_missing_files_raise_with_on_error_raise(frame):
    directory, df = frame
    df = pd.concat([df, pd.DataFrame({"filename": ["gone.png"], "class": ["cat"]})])
    with pytest.raises(FileNotFoundError, match=r"gone\.png \(no such file\)"):
        DataFrameDataset(df, directory, target_size=(9, 11), on_error="raise")


def test_missing_column_names_it_and_lists_the_columns(frame):
    directory, df = frame
    with pytest.raises(ValueError, match=r"`y_col`='label' is not a column.*'filename'"):
        DataFrameDataset(df, directory, y_col="label")
    with pytest.raises(ValueError, match="`x_col`='path' is not a column"):
        DataFrameDataset(df, directory, x_col="path")


def test_nan_labels_name_the_rows(frame):
    directory, df = frame
    df.loc[3, "class"] = np.nan
    with pytest.raises(ValueError, match=r"missing \(NaN\) labels in rows 3.*dropna"):
        DataFrameDataset(df, directory)


def test_binary_needs_two_classes_and_string_labels(frame):
    directory, df = frame
    with pytest.raises(ValueError, match='class_mode="binary" needs exactly 2 classes; found 3'):
        DataFrameDataset(df, directory, class_mode="binary")
    with pytest.raises(TypeError, match="needs string labels"):
        DataFrameDataset(df, directory, y_col="b", class_mode="sparse")


def test_multi_label_categorical_rows_are_multi_hot(frame):
    directory, df = frame
    df["class"] = [["cat", "dog"] if i % 2 else ["bird"] for i in range(12)]
    ds = DataFrameDataset(df, directory, target_size=(9, 11))
    _, y = ds.batch_outputs(torch.zeros(2, 3, 9, 11), torch.tensor([0, 1]))
    assert y.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]


def test_missing_pandas_says_how_to_install(frame, monkeypatch):
    directory, df = frame
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"gpuaug\[dataframe\]"):
        DataFrameDataset(df, directory)


# ------------------------------------------------------------------ pandas dtypes, label lists


def _frame4(tmp_path: Path, **columns):
    (tmp_path / "img4").mkdir(exist_ok=True)
    names = [f"{i}.png" for i in range(4)]
    for name in names:
        Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "img4" / name)
    return tmp_path / "img4", pd.DataFrame({"filename": names, **columns})


def _ds(directory, df, **kwargs) -> DataFrameDataset:
    return DataFrameDataset(df, directory=directory, target_size=(6, 6), **kwargs)


@pytest.mark.parametrize("dtype", ["Int64", "UInt16", "Float64", "Float32"])
def test_a_nullable_numeric_weight_column_is_accepted(tmp_path, dtype):
    d, df = _frame4(tmp_path, cls=list("abab"), w=pd.array([1, 2, 3, 4], dtype=dtype))
    ds = _ds(d, df, y_col="cls", weight_col="w")
    assert ds.sample_weight.tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("dtype", ["Int64", "Float64"])
def test_a_nullable_raw_label_column_is_yielded_as_numbers(tmp_path, dtype):
    d, df = _frame4(tmp_path, y=pd.array([3, 1, 4, 1], dtype=dtype))
    ds = _ds(d, df, y_col="y", class_mode="raw")
    assert ds._y.tolist() == [3, 1, 4, 1]


def test_a_nullable_multi_output_column_is_yielded_as_numbers(tmp_path):
    d, df = _frame4(tmp_path, y=pd.array([3, 1, 4, 1], dtype="Int64"), z=[0.5, 1, 2, 3])
    ds = _ds(d, df, y_col=["y", "z"], class_mode="multi_output")
    assert ds._y[0].tolist() == [3, 1, 4, 1] and ds._y[1].tolist() == [0.5, 1, 2, 3]


def test_missing_values_of_a_nullable_weight_column_are_named_by_row(tmp_path):
    d, df = _frame4(tmp_path, cls=list("abab"), w=pd.array([1, None, 3, None], dtype="Int64"))
    with pytest.raises(ValueError, match=r"weight_col='w' has missing .* rows 1, 3"):
        _ds(d, df, y_col="cls", weight_col="w")


def test_an_infinite_weight_is_named_by_row(tmp_path):
    d, df = _frame4(tmp_path, cls=list("abab"), w=[1.0, 2.0, np.inf, 1.0])
    with pytest.raises(ValueError, match=r"weight_col='w' has .*infinite values in rows 2"):
        _ds(d, df, y_col="cls", weight_col="w")


def test_missing_values_of_a_nullable_raw_column_are_named_by_row(tmp_path):
    d, df = _frame4(tmp_path, y=pd.array([1.0, 2.0, None, 4.0], dtype="Float64"))
    with pytest.raises(ValueError, match=r"y_col='y' has missing \(NaN\) labels in rows 2"):
        _ds(d, df, y_col="y", class_mode="raw")


@pytest.mark.parametrize("dtype", ["str", "string", "category", "bool"])
def test_a_non_numeric_weight_column_is_refused_naming_it(tmp_path, dtype):
    values = [True, False, True, True] if dtype == "bool" else list("1234")
    d, df = _frame4(tmp_path, cls=list("abab"), w=pd.Series(values, dtype=dtype))
    with pytest.raises(TypeError, match=r"column weight_col='w' must be numeric; got dtype"):
        _ds(d, df, y_col="cls", weight_col="w")


def test_a_pandas_str_label_column_is_refused_for_raw_naming_it(tmp_path):
    d, df = _frame4(tmp_path, y=pd.Series(list("abab"), dtype="str"))
    with pytest.raises(TypeError, match=r"class_mode=\"raw\" .* column 'y' must be numeric"):
        _ds(d, df, y_col="y", class_mode="raw")


def test_pandas_string_dtype_missing_labels_are_named_by_row(tmp_path):
    d, df = _frame4(tmp_path, cls=pd.array(["a", None, "b", "a"], dtype="string"))
    with pytest.raises(ValueError, match=r"missing \(NaN\) labels in rows 1"):
        _ds(d, df, y_col="cls")


def test_pandas_str_dtype_paths_and_labels_are_read_as_keras(tmp_path):
    d, df = _frame4(tmp_path, cls=pd.Series(list("abba"), dtype="str"))
    df["filename"] = df["filename"].astype("str")
    ds = _ds(d, df, y_col="cls", class_mode="sparse")
    assert ds.classes == ["a", "b"] and ds._y.tolist() == [0, 1, 1, 0]


def test_an_empty_label_list_gives_an_all_zero_target_with_a_warning(tmp_path):
    d, df = _frame4(tmp_path, cls=[["a"], [], ["b"], ["a", "b"]])
    with pytest.warns(UserWarning, match=r"rows 1 of y_col='cls' hold an empty list"):
        ds = _ds(d, df, y_col="cls")
    assert ds._y.tolist() == [[1, 0], [0, 0], [0, 1], [1, 1]]
    assert ds.counts() == {"a": 2, "b": 1}


def test_an_empty_label_list_is_dropped_with_classes_as_keras(tmp_path):
    d, df = _frame4(tmp_path, cls=[["a"], [], ["b"], ["a", "b"]])
    assert len(_ds(d, df, y_col="cls", classes=["a", "b"])) == 3


def test_label_lists_mixing_strings_and_numbers_are_refused_naming_rows(tmp_path):
    d, df = _frame4(tmp_path, cls=[["a"], ["b", 2], ["b"], ["a"]])
    with pytest.raises(TypeError, match=r"all strings or all numbers.*row 0 .*row 1 a number"):
        _ds(d, df, y_col="cls")


def test_ragged_multi_output_lists_are_refused_naming_rows(tmp_path):
    d, df = _frame4(tmp_path, y=[[1, 2], [1], [1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"one length; row 0 holds 2 value\(s\), row 1 1 value"):
        _ds(d, df, y_col=["y"], class_mode="multi_output")


def test_a_string_in_a_multi_output_column_is_refused_naming_the_row(tmp_path):
    d, df = _frame4(tmp_path, y=[[1, 2], [1, "x"], [1, 2], [3, 4]])
    with pytest.raises(TypeError, match=r"column 'y' must hold numbers.*row 1 holds \[1, 'x'\]"):
        _ds(d, df, y_col=["y"], class_mode="multi_output")
