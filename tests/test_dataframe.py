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
