"""``gpuaug.ImageDataGenerator``: Keras' class and methods, checked against the real Keras."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image, write_tree

import gpuaug
from gpuaug.keras import generator as generator_module

keras_image = pytest.importorskip("keras.src.legacy.preprocessing.image")
KerasIDG = keras_image.ImageDataGenerator


def _images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([textured_image(rng, h, w) for _ in range(n)]).astype(np.float32)


def _gen(**kwargs) -> gpuaug.ImageDataGenerator:
    return gpuaug.ImageDataGenerator(device="cpu", **kwargs)


# ------------------------------------------------------------------ constructor


def test_takes_keras_arguments_verbatim():
    g = _gen(rotation_range=40, zoom_range=0.2, interpolation_order=0, data_format="channels_last")
    assert g.config.rotation_range == 40
    assert g.config.interpolation == "nearest"


def test_an_argument_keras_does_not_take_raises_naming_it():
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['rotation'\]"):
        _gen(rotation=40)


def test_an_unsupported_value_raises_naming_it():
    with pytest.raises(ValueError, match="`interpolation_order` must be 1"):
        _gen(interpolation_order=3)
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        _gen(dtype="int32")


def test_a_differently_treated_argument_warns_once_pointing_at_the_readme(monkeypatch):
    monkeypatch.setattr(generator_module, "_WARNED", set())
    with pytest.warns(
        UserWarning,
        match=r"`preprocessing_function` is called once per batch.*"
        r"Keras parity and where we differ",
    ):
        _gen(preprocessing_function=lambda x: x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _gen(preprocessing_function=lambda x: x)


def test_unknown_flow_option_raises_naming_it(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 8))
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['workers'\]"):
        _gen().flow_from_directory(tmp_path, workers=2)


# ------------------------------------------------------------------ per-image methods


@pytest.mark.keras
def test_apply_transform_matches_keras_on_a_square_image():
    kw = dict(rotation_range=30, zoom_range=0.2, shear_range=10, horizontal_flip=True)
    x = _images(1, 16, 16)[0]
    params = {"theta": 17.0, "shear": 5.0, "zx": 0.9, "zy": 1.1, "flip_horizontal": True}
    expected = KerasIDG(**kw).apply_transform(x.copy(), params)
    got = _gen(**kw).apply_transform(x, params)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, expected, atol=0.01)


def test_get_random_transform_gives_keras_keys_within_range():
    g = _gen(rotation_range=20, width_shift_range=3.0, horizontal_flip=True)
    t = g.get_random_transform((10, 12, 3), seed=0)
    assert set(t) >= {"theta", "tx", "ty", "shear", "zx", "zy", "flip_horizontal"}
    assert -20 <= t["theta"] <= 20 and -3 <= t["tx"] <= 3
    assert t == g.get_random_transform((10, 12, 3), seed=0)


def test_random_transform_keeps_the_shape_and_changes_the_image():
    x = _images(1, 12, 12)[0]
    out = _gen(rotation_range=90).random_transform(x, seed=1)
    assert out.shape == x.shape and not np.allclose(out, x)


@pytest.mark.keras
def test_fit_and_standardize_match_keras():
    kw = dict(featurewise_center=True, featurewise_std_normalization=True, rescale=1 / 255)
    x = _images(6, 8, 8)
    k, g = KerasIDG(**kw), _gen(**kw)
    k.fit(x)
    g.fit(x)
    np.testing.assert_allclose(g.mean, k.mean, rtol=1e-5)
    np.testing.assert_allclose(g.std, k.std, rtol=1e-5)
    np.testing.assert_allclose(g.standardize(x[:2].copy()), k.standardize(x[:2].copy()), atol=1e-4)


# ------------------------------------------------------------------ flow_from_directory


@pytest.mark.keras
@pytest.mark.parametrize("subset", [None, "training", "validation"])
def test_flow_from_directory_iterator_attributes_match_keras(tmp_path, subset):
    write_tree(tmp_path / "data", {"cats": 5, "dogs": 4, "emus": 3}, size=(8, 10))
    kw = dict(target_size=(8, 10), class_mode="sparse", subset=subset, shuffle=False)
    k = KerasIDG(validation_split=0.3).flow_from_directory(tmp_path / "data", **kw)
    g = _gen(validation_split=0.3).flow_from_directory(tmp_path / "data", num_workers=0, **kw)
    assert g.filenames == k.filenames
    np.testing.assert_array_equal(g.classes, k.classes)
    np.testing.assert_array_equal(g.labels, k.labels)
    assert g.class_indices == k.class_indices
    assert g.n == g.samples == k.n == k.samples
    assert g.image_shape == (3, 8, 10) and k.image_shape == (8, 10, 3)
    kx, ky = k[0]
    gx, gy = next(iter(g))
    np.testing.assert_array_equal(gx.permute(0, 2, 3, 1).numpy(), kx)
    np.testing.assert_array_equal(gy.numpy(), ky)


@pytest.mark.keras
def test_batch_index_and_total_batches_seen_follow_keras_through_next(tmp_path):
    write_tree(tmp_path, {"a": 3, "b": 2}, size=(8, 8))
    kw = dict(target_size=(8, 8), batch_size=2, shuffle=False)
    k = KerasIDG().flow_from_directory(tmp_path, **kw)
    g = _gen().flow_from_directory(tmp_path, num_workers=0, **kw)
    assert g.index_array is None and k.index_array is None
    for _ in range(5):  # 3 batches per epoch: 0 after the last one, then on
        next(k), next(g)
        assert (g.batch_index, g.total_batches_seen) == (k.batch_index, k.total_batches_seen)
        np.testing.assert_array_equal(g.index_array, k.index_array)


@pytest.mark.keras
def test_indexing_counts_in_total_batches_seen_but_not_in_batch_index(tmp_path):
    write_tree(tmp_path, {"a": 3, "b": 2}, size=(8, 8))
    kw = dict(target_size=(8, 8), batch_size=2, shuffle=False)
    k = KerasIDG().flow_from_directory(tmp_path, **kw)
    g = _gen().flow_from_directory(tmp_path, num_workers=0, **kw)
    k[1], g[1], k[0], g[0]
    assert (g.batch_index, g.total_batches_seen) == (k.batch_index, k.total_batches_seen) == (0, 2)


def test_a_for_loop_ends_the_epoch_with_batch_index_zero(tmp_path):
    write_tree(tmp_path, {"a": 3, "b": 3}, size=(8, 8))
    it = _gen().flow_from_directory(tmp_path, target_size=(8, 8), batch_size=2, num_workers=0)
    seen = [it.batch_index for _ in it]
    assert seen == [1, 2, 0] and it.batch_index == 0 and it.total_batches_seen == 3


def test_on_epoch_end_gives_a_new_order_after_indexing(tmp_path):
    write_tree(tmp_path, {"a": 4, "b": 4}, size=(8, 8))
    it = _gen().flow_from_directory(
        tmp_path, target_size=(8, 8), batch_size=8, num_workers=0, seed=3
    )
    it[0]
    first = it.index_array.copy()
    assert sorted(first) == list(range(8))
    it.on_epoch_end()
    assert it.epoch == 1 and not np.array_equal(it.index_array, first)
    second = it.index_array.copy()
    it.on_epoch_end()  # every call a new order, as Keras reshuffles on every call
    assert it.epoch == 2 and not np.array_equal(it.index_array, second)


def test_on_epoch_end_after_a_finished_loop_keeps_the_epoch_the_loop_moved_to(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 8))
    it = _gen().flow_from_directory(tmp_path, target_size=(8, 8), batch_size=2, num_workers=0)
    list(it)
    assert it.epoch == 1
    it.on_epoch_end()
    assert it.epoch == 1 and sorted(it.index_array) == [0, 1, 2, 3]


def test_indexing_gives_the_batch_the_iteration_yields_and_reset_restarts_the_epoch(tmp_path):
    write_tree(tmp_path, {"a": 4, "b": 3}, size=(8, 8))
    gen = _gen(rotation_range=30, horizontal_flip=True)
    it = gen.flow_from_directory(
        tmp_path, target_size=(8, 8), batch_size=3, num_workers=0, seed=1, class_mode="sparse"
    )
    assert it.epoch == 0
    by_index = [it[i] for i in range(len(it))]
    first = next(it)
    next(it)
    it.reset()
    assert it.batch_index == 0
    again = next(it)
    for x, y in (first, again):
        assert torch.equal(x, by_index[0][0]) and torch.equal(y, by_index[0][1])
    it.reset()
    for (x, y), (ix, iy) in zip(it, by_index, strict=True):  # the rest of epoch 0, in order
        assert torch.equal(x, ix) and torch.equal(y, iy)
    assert it.epoch == 1
    assert not torch.equal(it[0][0], by_index[0][0])  # a new epoch: new order and draws


def test_indexing_out_of_range_or_by_a_non_int_is_an_error(tmp_path):
    write_tree(tmp_path, {"a": 3, "b": 2}, size=(8, 8))
    it = _gen().flow_from_directory(tmp_path, target_size=(8, 8), batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match="Asked to retrieve batch 3, but the loader has 3"):
        it[3]
    with pytest.raises(ValueError, match="batch -1"):
        it[-1]
    with pytest.raises(TypeError, match="batch number"):
        it[0:2]


# ------------------------------------------------------------------ validation, seeds


def test_validation_subset_is_not_augmented_by_default(tmp_path):
    write_tree(tmp_path, {"a": 4, "b": 4}, size=(8, 8))
    g = _gen(rotation_range=90, horizontal_flip=True, rescale=1 / 255, validation_split=0.5)
    kw = dict(target_size=(8, 8), shuffle=False, num_workers=0, subset="validation")
    val = g.flow_from_directory(tmp_path, **kw)
    plain = _gen(rescale=1 / 255, validation_split=0.5).flow_from_directory(tmp_path, **kw)
    assert torch.equal(next(iter(val))[0], next(iter(plain))[0])
    assert "random augmentation off (subset='validation')" in val.describe()
    train = g.flow_from_directory(tmp_path, **{**kw, "subset": "training"})
    assert train.augment.config.rotation_range == 90


def test_augment_true_turns_validation_augmentation_back_on(tmp_path):
    write_tree(tmp_path, {"a": 4, "b": 4}, size=(8, 8))
    g = _gen(rotation_range=90, validation_split=0.5)
    kw = dict(target_size=(8, 8), shuffle=False, num_workers=0, subset="validation")
    on = g.flow_from_directory(tmp_path, augment=True, seed=0, **kw)
    off = g.flow_from_directory(tmp_path, seed=0, **kw)
    assert not torch.equal(next(iter(on))[0], next(iter(off))[0])
    assert "random augmentation off" not in on.describe()


def test_validation_uses_the_statistics_fitted_on_the_generator():
    x = _images(8, 6, 6).astype(np.uint8)
    g = _gen(featurewise_center=True, rotation_range=30, validation_split=0.5)
    val = g.flow(x, np.arange(8) % 2, shuffle=False, subset="validation", ignore_class_split=True)
    g.fit(x)  # after the loader was made: it still sees the statistics
    xb, _ = next(iter(val))
    expected = torch.from_numpy(x[:4]).permute(0, 3, 1, 2).float() - g.augment.mean
    torch.testing.assert_close(xb, expected)


def test_augment_seed_changes_the_augmentation_not_the_order():
    x = np.broadcast_to(np.arange(10, dtype=np.uint8)[:, None, None, None], (10, 6, 6, 3))
    y = np.arange(10)
    g = _gen(rotation_range=45)
    a = next(iter(g.flow(x, y, batch_size=10, seed=5)))
    b = next(iter(g.flow(x, y, batch_size=10, seed=5, augment_seed=99)))
    c = next(iter(g.flow(x, y, batch_size=10, seed=5)))
    assert torch.equal(a[1], b[1])  # same order
    assert torch.equal(a[0], c[0]) and not torch.equal(a[0], b[0])


# ------------------------------------------------------------------ save_to_dir


@pytest.mark.keras
def test_save_to_dir_writes_keras_names(tmp_path):
    write_tree(tmp_path / "data", {"a": 3, "b": 2}, size=(8, 8))
    ours, theirs = tmp_path / "ours", tmp_path / "keras"
    ours.mkdir()
    theirs.mkdir()
    kw = dict(target_size=(8, 8), batch_size=5, save_prefix="aug", save_format="png")
    k = KerasIDG(rotation_range=20).flow_from_directory(tmp_path / "data", save_to_dir=theirs, **kw)
    k[0]
    g = _gen(rotation_range=20).flow_from_directory(
        tmp_path / "data", save_to_dir=ours, num_workers=0, **kw
    )
    next(iter(g))
    g.saver.flush()
    pattern = re.compile(r"aug_(\d+)_(\d+)\.png")

    def indices(folder: Path) -> list[int]:
        names = sorted(p.name for p in folder.iterdir())
        assert all(pattern.fullmatch(n) for n in names), names
        return sorted(int(pattern.fullmatch(n).group(1)) for n in names)

    assert indices(ours) == indices(theirs) == [0, 1, 2, 3, 4]
    from PIL import Image

    with Image.open(next(ours.iterdir())) as img:
        assert img.size == (8, 8) and img.mode == "RGB"


def test_save_to_dir_for_arrays_uses_keras_numpy_hash_range(tmp_path):
    x = _images(4, 6, 6)
    g = _gen().flow(x, np.arange(4), batch_size=4, save_to_dir=tmp_path, save_prefix="p")
    next(iter(g))
    g.saver.flush()
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 4
    assert all(re.fullmatch(r"p_[0-3]_\d{1,4}\.png", n) for n in names)


def test_save_to_dir_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="`save_to_dir`"):
        _gen().flow(_images(2, 4, 4), save_to_dir=tmp_path / "missing")


def test_equal_shift_ranges_do_not_warn_but_different_ones_do(monkeypatch):
    monkeypatch.setattr(generator_module, "_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _gen(width_shift_range=0.2, height_shift_range=0.2)
    with pytest.warns(UserWarning, match="Keras' code swaps them"):
        _gen(width_shift_range=0.2, height_shift_range=0.1)


@pytest.mark.keras
def test_next_on_the_loader_runs_on_across_epochs_as_keras(tmp_path):
    write_tree(tmp_path, {"a": 3, "b": 2}, size=(8, 8))
    kw = dict(target_size=(8, 8), batch_size=2, class_mode="sparse", shuffle=False)
    k = KerasIDG().flow_from_directory(tmp_path, **kw)
    g = _gen().flow_from_directory(tmp_path, num_workers=0, **kw)
    for _ in range(4):  # 3 batches per epoch: the 4th is the next epoch's first
        (kx, ky), (gx, gy) = next(k), next(g)
        np.testing.assert_array_equal(gx.permute(0, 2, 3, 1).numpy(), kx)
        np.testing.assert_array_equal(gy.numpy(), ky)
    assert g.epoch == 1


def test_closing_the_loader_writes_the_queued_batches_and_stops_the_writer(tmp_path):
    x = _images(8, 6, 6)
    g = _gen().flow(x, np.arange(8), batch_size=4, shuffle=False, save_to_dir=tmp_path)
    list(g)
    thread = g.saver._thread
    g.close()  # no flush() first: close must not drop what is still queued
    assert len(list(tmp_path.iterdir())) == 8 and not thread.is_alive()
    next(iter(g))  # a later iteration starts a new writer
    g.close()
    assert len(list(tmp_path.iterdir())) == 12


# ------------------------------------------------------------------ Keras parity, item by item


@pytest.mark.keras
@pytest.mark.parametrize(
    "params",
    [
        {"flip_horizontal": True},
        {"flip_vertical": True},
        {"theta": 20.0},
        {"tx": 2.0},
        {"ty": -3.0},
        {"shear": 12.0},
        {"zx": 0.8},
        {"zy": 1.25},
        {"channel_shift_intensity": 30.0},
    ],
    ids=lambda p: next(iter(p)),
)
def test_apply_transform_applies_every_key_the_generator_leaves_off(params):
    x = _images(1, 12, 12)[0]
    expected = KerasIDG().apply_transform(x.copy(), params)
    got = _gen().apply_transform(x, params)
    assert not np.array_equal(got, x)
    np.testing.assert_allclose(got, expected, atol=0.01)


@pytest.mark.keras
def test_apply_transform_applies_brightness_the_generator_leaves_off_within_its_bound():
    x = _images(1, 12, 12)[0]
    expected = KerasIDG().apply_transform(x.copy(), {"brightness": 0.7})
    got = _gen().apply_transform(x, {"brightness": 0.7})
    assert got.dtype == expected.dtype == np.float32
    diff = got - expected  # Keras truncates through PIL: up to b + 1 grey levels darker
    assert diff.min() >= -0.01 and diff.max() <= 0.7 + 1


@pytest.mark.keras
@pytest.mark.parametrize("name", ["has_ext", "sort", "drop_duplicates"])
def test_flow_from_dataframe_warns_as_keras_about_deprecated_arguments(tmp_path, name):
    pd = pytest.importorskip("pandas")
    write_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 8))
    df = pd.DataFrame(
        {"filename": [str(p) for p in sorted(tmp_path.rglob("*.png"))], "class": list("aabb")}
    )
    kw = dict(target_size=(8, 8), shuffle=False, **{name: True})
    with pytest.warns(DeprecationWarning) as theirs:
        KerasIDG().flow_from_dataframe(df, **kw)
    with pytest.warns(DeprecationWarning) as ours:
        it = _gen().flow_from_dataframe(df, num_workers=0, **kw)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert it.filenames == df["filename"].tolist()


@pytest.mark.keras
def test_float64_generator_fits_and_yields_float64_as_keras():
    x = _images(6, 8, 8).astype(np.float64)
    kw = dict(rescale=1 / 255, featurewise_center=True, dtype="float64")
    k, g = KerasIDG(**kw), _gen(**kw)
    k.fit(x)
    g.fit(x)
    assert g.mean.dtype == k.mean.dtype == np.float64
    np.testing.assert_allclose(g.mean, k.mean, rtol=1e-6)
    xb, _ = next(iter(g.flow(x, np.arange(6), batch_size=6, shuffle=False)))
    kb, _ = next(k.flow(x, np.arange(6), batch_size=6, shuffle=False))
    assert xb.dtype == torch.float64 and kb.dtype == np.float64
    np.testing.assert_allclose(xb.permute(0, 2, 3, 1).numpy(), kb, atol=1e-5)


@pytest.mark.keras
@pytest.mark.parametrize("as_list", [False, True])
def test_flow_of_x_and_x_misc_yields_keras_list_of_inputs(as_list):
    x = _images(5, 6, 6)
    misc = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)
    y = np.arange(5)
    pair = (x, [misc, misc * 2]) if as_list else (x, misc)
    (kx, ky), (gx, gy) = (
        next(KerasIDG().flow(pair, y, batch_size=3, shuffle=False)),
        next(iter(_gen().flow(pair, y, batch_size=3, shuffle=False))),
    )
    assert isinstance(gx, list) and len(gx) == len(kx) == (3 if as_list else 2)
    np.testing.assert_array_equal(gx[0].permute(0, 2, 3, 1).numpy(), kx[0])
    for ours, theirs in zip(gx[1:], kx[1:], strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs)
    np.testing.assert_array_equal(gy.numpy(), ky)


def test_flow_of_x_misc_of_another_length_raises_keras_error():
    with pytest.raises(ValueError, match="All of the arrays in `x` should have the same length"):
        _gen().flow((_images(4, 6, 6), np.zeros(3)), np.arange(4))


def test_class_mode_input_target_is_a_copy_of_the_images(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 8))
    it = _gen().flow_from_directory(
        tmp_path, target_size=(8, 8), class_mode="input", batch_size=4, num_workers=0
    )
    x, y = next(iter(it))
    assert y is not x and torch.equal(x, y)
    x.add_(1.0)  # a denoising autoencoder's noise, in place
    assert not torch.equal(x, y)


@pytest.mark.keras
@pytest.mark.parametrize("class_mode", ["raw", "multi_output"])
def test_raw_and_multi_output_labels_keep_the_column_dtype_as_keras(tmp_path, class_mode):
    pd = pytest.importorskip("pandas")
    write_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 8))
    df = pd.DataFrame(
        {
            "filename": [str(p) for p in sorted(tmp_path.rglob("*.png"))],
            "f": np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float64),
            "i": np.array([1, 2, 3, 4], dtype=np.int32),
        }
    )
    y_col = ["f", "i"] if class_mode == "multi_output" else "f"
    kw = dict(y_col=y_col, class_mode=class_mode, target_size=(8, 8), shuffle=False)
    _, ky = next(KerasIDG().flow_from_dataframe(df, **kw))
    _, gy = next(iter(_gen().flow_from_dataframe(df, num_workers=0, **kw)))
    theirs = ky if class_mode == "multi_output" else [ky]
    ours = gy if class_mode == "multi_output" else [gy]
    for g, k in zip(ours, theirs, strict=True):
        assert g.numpy().dtype == k.dtype
        np.testing.assert_array_equal(g.numpy(), k)


@pytest.mark.keras
def test_a_dataframe_without_valid_file_gives_an_empty_iterator_with_its_classes(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"filename": ["missing.png"], "class": ["a"]})
    kw = dict(directory=tmp_path, classes=["a", "b"], target_size=(8, 8))
    with pytest.warns(UserWarning, match="invalid image filename"):
        k = KerasIDG().flow_from_dataframe(df, **kw)
    with pytest.warns(UserWarning, match="no image left"):
        g = _gen().flow_from_dataframe(df, num_workers=0, **kw)
    assert (g.n, len(g), g.filenames) == (k.n, len(k), k.filenames) == (0, 0, [])
    assert g.class_indices == k.class_indices == {"a": 0, "b": 1}
    assert list(g) == []
    with pytest.raises(StopIteration):
        next(g)


@pytest.mark.keras
def test_flow_from_directory_prints_keras_found_line(tmp_path, capsys):
    write_tree(tmp_path, {"a": 3, "b": 2, "c": 1}, size=(8, 8))
    KerasIDG(validation_split=0.5).flow_from_directory(tmp_path, subset="training")
    theirs = capsys.readouterr().out
    _gen(validation_split=0.5).flow_from_directory(tmp_path, subset="training", num_workers=0)
    assert capsys.readouterr().out == theirs == "Found 4 images belonging to 3 classes.\n"


@pytest.mark.keras
@pytest.mark.parametrize(
    ("class_mode", "validate"), [("categorical", True), ("raw", True), ("sparse", False)]
)
def test_flow_from_dataframe_prints_keras_found_line(tmp_path, capsys, class_mode, validate):
    pd = pytest.importorskip("pandas")
    write_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 8))
    df = pd.DataFrame(
        {
            "filename": [str(p) for p in sorted(tmp_path.rglob("*.png"))],
            "class": list("abab") if class_mode != "raw" else [0.0, 1.0, 2.0, 3.0],
        }
    )
    kw = dict(class_mode=class_mode, validate_filenames=validate, target_size=(8, 8))
    KerasIDG().flow_from_dataframe(df, **kw)
    theirs = capsys.readouterr().out
    _gen().flow_from_dataframe(df, num_workers=0, **kw)
    assert capsys.readouterr().out == theirs
    assert theirs.startswith("Found 4 ")


@pytest.mark.keras
def test_class_split_error_starts_with_keras_words():
    x, y = _images(6, 4, 4), np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError) as theirs:
        KerasIDG(validation_split=0.5).flow(x, y, subset="training")
    with pytest.raises(ValueError) as ours:
        _gen(validation_split=0.5).flow(x, y, subset="training")
    assert str(ours.value).startswith(str(theirs.value))
    assert "ignore_class_split=True" in str(ours.value)


# ------------------------------------------------------------------ where we differ, on purpose
# One test per row of docs/keras-differences.md's table: each shows Keras' behaviour and ours.


@pytest.mark.keras
def test_differs_a_batch_is_a_channels_first_tensor_and_image_shape_says_so(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 10))
    kw = dict(target_size=(8, 10), batch_size=4, shuffle=False)
    k = KerasIDG().flow_from_directory(tmp_path, **kw)
    g = _gen().flow_from_directory(tmp_path, num_workers=0, **kw)
    (kx, _), (gx, _) = next(k), next(g)
    assert isinstance(kx, np.ndarray) and kx.shape == (4, 8, 10, 3) and k.image_shape == (8, 10, 3)
    assert (
        isinstance(gx, torch.Tensor) and gx.shape == (4, 3, 8, 10) and g.image_shape == (3, 8, 10)
    )


@pytest.mark.keras
def test_differs_sparse_labels_are_int64(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 8))
    kw = dict(target_size=(8, 8), class_mode="sparse", shuffle=False)
    (_, ky), (_, gy) = (
        next(KerasIDG().flow_from_directory(tmp_path, **kw)),
        next(_gen().flow_from_directory(tmp_path, num_workers=0, **kw)),
    )
    assert ky.dtype == np.float32 and gy.dtype == torch.int64
    np.testing.assert_array_equal(gy.numpy(), ky)


@pytest.mark.keras
def test_differs_sample_weights_are_float32(tmp_path):
    x, y, w = _images(4, 4, 4), np.arange(4), np.arange(4, dtype=np.float64)
    _, _, kw = next(KerasIDG().flow(x, y, sample_weight=w, shuffle=False))
    _, _, gw = next(iter(_gen().flow(x, y, sample_weight=w, shuffle=False)))
    assert kw.dtype == np.float64 and gw.dtype == torch.float32


@pytest.mark.keras
def test_differs_a_for_loop_runs_one_epoch_where_keras_never_ends(tmp_path):
    x, y = _images(4, 4, 4), np.arange(4)
    k = KerasIDG().flow(x, y, batch_size=2)
    for steps, _ in enumerate(k, start=1):
        if steps == 5:  # Keras' __iter__ is itself: it would run forever
            break
    assert steps == 5
    assert len(list(_gen().flow(x, y, batch_size=2))) == 2


@pytest.mark.keras
def test_differs_reset_restarts_the_current_epoch_in_its_order(tmp_path):
    x, y = _images(8, 4, 4), np.arange(8)
    k = KerasIDG().flow(x, y, batch_size=8, seed=1)
    g = _gen().flow(x, y, batch_size=8, seed=1)
    (_, k1), (_, g1) = next(k), next(g)
    k.reset(), g.reset()
    (_, k2), (_, g2) = next(k), next(g)
    assert not np.array_equal(k1, k2)  # Keras: a reset draws a new order
    assert torch.equal(g1, g2)  # ours: the same epoch again, the same order


@pytest.mark.keras
def test_differs_indexing_twice_gives_the_same_augmented_batch():
    x, y = _images(4, 8, 8), np.arange(4)
    k = KerasIDG(rotation_range=40).flow(x, y, batch_size=4, shuffle=False, seed=0)
    g = _gen(rotation_range=40).flow(x, y, batch_size=4, shuffle=False, seed=0)
    assert not np.array_equal(k[0][0], k[0][0])  # Keras reseeds with seed + batches seen
    assert torch.equal(g[0][0], g[0][0])  # ours: batch 0 of the epoch, as iterated


@pytest.mark.keras
def test_differs_seeds_use_a_local_torch_generator_not_numpy_global_state():
    state = np.random.get_state()[1].copy()
    _gen(rotation_range=10).get_random_transform((8, 8, 3), seed=5)
    _gen(featurewise_center=True, rotation_range=10).fit(_images(2, 4, 4), augment=True, seed=5)
    assert np.array_equal(np.random.get_state()[1], state)
    KerasIDG(rotation_range=10).get_random_transform((8, 8, 3), seed=5)
    assert not np.array_equal(np.random.get_state()[1], state)


@pytest.mark.keras
def test_differs_an_iterator_without_seed_reports_the_seed_it_drew():
    x = _images(2, 4, 4)
    assert KerasIDG().flow(x).seed is None
    assert isinstance(_gen().flow(x).seed, int)


@pytest.mark.keras
def test_differs_flow_stores_a_float64_array_as_float32():
    x = _images(2, 4, 4).astype(np.float64) + 0.1
    kx = next(KerasIDG(dtype="float64").flow(x, shuffle=False))
    gx = next(iter(_gen(dtype="float64").flow(x, shuffle=False)))
    assert gx.dtype == torch.float64 and kx.dtype == np.float64
    diff = np.abs(gx.permute(0, 2, 3, 1).numpy() - kx)
    assert 0 < diff.max() < 1e-4  # float32's rounding of values up to 255


@pytest.mark.keras
def test_differs_brightness_scales_the_alpha_channel_where_pil_keeps_it():
    x = _images(1, 6, 6)[0]
    rgba = np.concatenate([x, np.full((6, 6, 1), 200.0, np.float32)], axis=-1)
    theirs = KerasIDG().apply_transform(rgba.copy(), {"brightness": 0.5})
    ours = _gen().apply_transform(rgba, {"brightness": 0.5})
    np.testing.assert_array_equal(theirs[..., 3], 200.0)
    np.testing.assert_allclose(ours[..., 3], 100.0)


@pytest.mark.keras
def test_differs_brightness_works_channels_first_where_keras_fails():
    x = _images(1, 6, 6)[0].transpose(2, 0, 1).copy()
    with pytest.raises(ValueError, match="Unsupported channel number"):
        KerasIDG(data_format="channels_first").apply_transform(x.copy(), {"brightness": 0.5})
    out = _gen(data_format="channels_first").apply_transform(x, {"brightness": 0.5})
    np.testing.assert_allclose(out, x * 0.5, atol=1e-4)


@pytest.mark.keras
@pytest.mark.parametrize(
    "kwargs", [{"shear_range": 90}, {"zoom_range": 1.5}, {"rotation_range": -10}], ids=str
)
def test_differs_ranges_keras_takes_unchecked_are_refused_naming_the_field(kwargs):
    KerasIDG(**kwargs)  # Keras takes them (a shear of 90 degrees, zoom factors below 0...)
    with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}`"):
        _gen(**kwargs)


@pytest.mark.keras
def test_differs_standardize_of_a_batch_uses_each_image_own_statistics():
    x = _images(2, 4, 4)
    x[1] += 50.0
    theirs = KerasIDG(samplewise_center=True).standardize(x.copy())
    ours = _gen(samplewise_center=True).standardize(x.copy())
    np.testing.assert_allclose(theirs.mean(), 0.0, atol=1e-3)  # Keras: the batch's mean
    assert abs(theirs[1].mean()) > 10
    np.testing.assert_allclose(ours.mean(axis=(1, 2, 3)), 0.0, atol=1e-3)  # ours: per image


@pytest.mark.keras
def test_differs_binary_needs_two_class_folders(tmp_path):
    write_tree(tmp_path, {"a": 1, "b": 1, "c": 1}, size=(8, 8))
    k = KerasIDG().flow_from_directory(tmp_path, target_size=(8, 8), class_mode="binary")
    assert sorted(next(k)[1].tolist()) == [0.0, 1.0, 2.0]  # Keras: "binary" labels up to 2
    with pytest.raises(ValueError, match="class_mode='binary' needs exactly 2 classes"):
        _gen().flow_from_directory(tmp_path, target_size=(8, 8), class_mode="binary")


@pytest.mark.keras
def test_differs_gif_and_webp_files_are_read(tmp_path):
    write_tree(tmp_path, {"a": 1, "b": 1}, size=(8, 8))
    write_tree(tmp_path, {"a": 1}, size=(8, 8), ext="webp", seed=1)
    assert KerasIDG().flow_from_directory(tmp_path, target_size=(8, 8)).samples == 2
    assert _gen().flow_from_directory(tmp_path, target_size=(8, 8), num_workers=0).samples == 3


def test_differs_set_processing_attrs_and_the_raw_inputs_are_not_on_the_iterator(tmp_path):
    write_tree(tmp_path, {"a": 1, "b": 1}, size=(8, 8))
    it = _gen().flow_from_directory(tmp_path, target_size=(8, 8), num_workers=0)
    assert hasattr(keras_image.DirectoryIterator, "set_processing_attrs")
    assert not hasattr(it, "set_processing_attrs")
    x, w = _images(3, 4, 4), np.arange(3.0)
    k = KerasIDG().flow(x, np.arange(3), sample_weight=w)
    g = _gen().flow(x, np.arange(3), sample_weight=w)
    assert k.x.shape == (3, 4, 4, 3) and not hasattr(g, "x") and not hasattr(g, "y")
    assert g.dataset.images.shape == (3, 3, 4, 4) and g.dataset.y.tolist() == [0, 1, 2]
    assert g.dataset.sample_weight.tolist() == w.tolist()


def test_differs_next_on_an_empty_iterator_stops(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"filename": ["missing.png"], "class": ["a"]})
    with pytest.warns(UserWarning):
        it = _gen().flow_from_dataframe(df, directory=tmp_path, target_size=(8, 8))
    with pytest.raises(StopIteration):
        next(it)


def test_every_row_of_the_keras_difference_table_names_a_test_that_exists():
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "keras-differences.md").read_text()
    table = page.split("## Where we differ from Keras", 1)[1].split("\n\n")[2]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    defined = set()
    for path in (root / "tests").glob("test_*.py"):
        defined.update(re.findall(r"^def (test_\w+)", path.read_text(), flags=re.M))
    assert len(rows) > 20
    for row in rows[1:]:  # after the header
        named = re.findall(r"`(test_\w+)`", row.rsplit("|", 2)[1])
        assert named and all(name in defined for name in named), row


@pytest.mark.keras
@pytest.mark.parametrize("which", ["y", "sample_weight"])
def test_flow_length_errors_start_with_keras_words(which):
    x = _images(4, 4, 4)
    kw = {"y": np.arange(4), which: np.arange(5)}
    with pytest.raises(ValueError) as theirs:
        KerasIDG().flow(x, **kw)
    with pytest.raises(ValueError) as ours:
        _gen().flow(x, **kw)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.keras
def test_differs_a_16_bit_grayscale_file_is_scaled_to_8_bits(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    from PIL import Image

    values = np.arange(400, dtype=np.uint16).reshape(20, 20) * 150  # up to 59850
    Image.fromarray(values).save(tmp_path / "a" / "deep.png")
    Image.fromarray(values).save(tmp_path / "b" / "deep.png")
    kw = dict(target_size=(20, 20), color_mode="grayscale", shuffle=False, batch_size=1)
    kx, _ = next(KerasIDG().flow_from_directory(tmp_path, **kw))
    gx, _ = next(_gen().flow_from_directory(tmp_path, num_workers=0, **kw))
    assert kx.max() == values.max()  # Keras: the 16-bit values as they are
    np.testing.assert_allclose(gx[0, 0].numpy(), np.round(values / 257), atol=0.5)


@pytest.mark.cuda
def test_the_keras_batch_extras_run_on_the_gpu_without_a_host_sync():
    from gpuaug.sync_check import SyncCheck

    x = _images(12, 8, 8).astype(np.uint8)
    misc = np.arange(12 * 2, dtype=np.float32).reshape(12, 2)
    g = gpuaug.ImageDataGenerator(device="cuda", rotation_range=20, dtype="float64")
    it = g.flow((x, misc), np.arange(12), batch_size=4, shuffle=True, seed=0)
    list(it)  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        with SyncCheck() as check:
            for (xb, mb), yb in it:
                assert xb.is_cuda and mb.is_cuda and yb.is_cuda and xb.dtype == torch.float64
    finally:
        torch.cuda.set_sync_debug_mode(0)
        it.close()
    check.assert_clean()
    np.testing.assert_array_equal(mb.cpu().numpy(), misc[it.index_array[-len(yb) :]])
