"""Keras' own unit-test cases for ``ImageDataGenerator`` and its iterators, run on gpuaug.

The cases of Keras' image preprocessing test suite (the ``ImageDataGenerator``,
``NumpyArrayIterator``, ``DirectoryIterator`` and ``DataFrameIterator`` tests of
keras-preprocessing, which Keras 3's legacy class comes from), written again for gpuaug's
batches: torch ``(B, C, H, W)`` tensors instead of numpy ``(B, H, W, C)`` arrays, and a
``preprocessing_function`` that takes a tensor batch (both rows of docs/keras-differences.md).
Everything else a case asserts is asserted as it stands.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import gpuaug

EVERYTHING_ON = dict(
    featurewise_center=True,
    samplewise_center=True,
    featurewise_std_normalization=True,
    samplewise_std_normalization=True,
    zca_whitening=True,
    rotation_range=90.0,
    width_shift_range=0.1,
    height_shift_range=0.1,
    shear_range=0.5,
    zoom_range=0.2,
    channel_shift_range=0.0,
    brightness_range=(1, 5),
    fill_mode="nearest",
    cval=0.5,
    horizontal_flip=True,
    vertical_flip=True,
    interpolation_order=1,
)


def _gen(**kwargs) -> gpuaug.ImageDataGenerator:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gpuaug.ImageDataGenerator(device="cpu", **kwargs)


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def test_images() -> list[list[Image.Image]]:
    """8 RGB, 8 RGBA and 8 grayscale 20x20 images, noise over a random bias (Keras' set)."""
    rng = np.random.default_rng(7)
    rgb, rgba, gray = [], [], []
    for _ in range(8):
        bias = rng.random((20, 20, 1)) * 64
        variance = rng.random((20, 20, 1)) * (255 - 64)
        rgb.append(Image.fromarray((rng.random((20, 20, 3)) * variance + bias).astype("uint8")))
        four = (rng.random((20, 20, 4)) * variance + bias).astype("uint8")
        rgba.append(Image.fromarray(four, mode="RGBA"))
        one = (rng.random((20, 20, 1)) * variance + bias).astype("uint8").squeeze()
        gray.append(Image.fromarray(one, mode="L"))
    return [rgb, rgba, gray]


def _arrays(images: list[Image.Image]) -> np.ndarray:
    """Keras' ``img_to_array`` of each image, stacked: (N, H, W, C) float32."""
    out = [np.asarray(im, dtype=np.float32) for im in images]
    return np.stack([a if a.ndim == 3 else a[..., None] for a in out])


def _write(images, root, subfolders: bool = False, num_classes: int = 2) -> list[str]:
    """Saves every image under ``root`` (class folders, nested sub-folders if asked)."""
    names = []
    for count, im in enumerate(img for group in images for img in group):
        folder = f"class-{count % num_classes}" if num_classes else ""
        if subfolders:
            sub = ["", "subfolder-1", "subfolder-2", os.path.join("subfolder-1", "sub-sub")]
            folder = os.path.join(folder, sub[count % 4])
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        name = os.path.join(folder, f"image-{count}.png") if num_classes else f"image-{count}.png"
        im.save(os.path.join(root, name))
        names.append(name)
    return names


# ------------------------------------------------------------------ ImageDataGenerator


def test_the_constructor_takes_every_augmentation_at_once():
    _gen(**EVERYTHING_ON)


def test_a_split_with_sorted_labels_is_refused_and_interleaved_labels_split(test_images):
    for group in test_images:
        images = _arrays(group)
        g = _gen(validation_split=0.5)
        sorted_labels = np.repeat([0.0, 1.0], 4)
        match = "Training and validation subsets have different number of classes after the split"
        with pytest.raises(ValueError, match=match):
            g.flow(images, sorted_labels, shuffle=False, batch_size=10, subset="validation")
        labels = np.tile(np.repeat([0.0, 1.0], 2), 2)
        for subset in ("validation", "training"):
            _, y = g.flow(images, labels, shuffle=False, batch_size=10, subset=subset)[0]
            assert len(torch.unique(y)) == 2
        with pytest.raises(ValueError):
            g.flow(images, np.arange(8), shuffle=False, batch_size=3, subset="foo")


def test_a_validation_split_past_one_is_refused():
    with pytest.raises(ValueError):
        _gen(validation_split=5)


def test_fit_and_flow_refuse_arrays_that_are_not_4d():
    g = _gen(**{k: v for k, v in EVERYTHING_ON.items() if k.endswith(("center", "normalization"))})
    with pytest.raises(ValueError):
        g.fit(np.random.random((3, 10, 10)))
    with pytest.raises(ValueError):
        g.flow(np.arange(32))


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_fit_works_augmented_on_every_channel_count_and_with_more_samples_than_dims(data_format):
    kw = {**EVERYTHING_ON, "zoom_range": (0.2, 0.2), "data_format": data_format}
    g = _gen(**kw)
    rng = np.random.default_rng(0)
    g.fit(rng.random((32, 10, 10, 3)), augment=True)  # channels_first: 10 channels, as Keras
    shapes = [(32, 10, 10, 1), (32, 10, 10, 3), (32, 4, 4, 1)]
    if data_format == "channels_first":
        shapes = [(32, 1, 10, 10), (32, 3, 10, 10), (32, 1, 4, 4)]
    for shape in shapes:
        g.fit(rng.random(shape))
        assert g.zca_whitening_matrix.shape == (np.prod(shape[1:]),) * 2


def test_flow_takes_weights_seeds_no_labels_and_extra_inputs(test_images, tmp_path):
    for group in test_images:
        images = _arrays(group)
        n = len(images)
        g = _gen(**EVERYTHING_ON)
        g.fit(images)
        x, y = next(g.flow(images, np.arange(n), shuffle=False, save_to_dir=tmp_path, batch_size=3))
        assert x.shape == (3, images.shape[3], 20, 20) and y.tolist() == [0, 1, 2]
        it = g.flow(
            images, np.arange(n), shuffle=False, sample_weight=np.arange(n) + 1, batch_size=3
        )
        x, y, w = next(it)
        assert y.tolist() == [0, 1, 2] and w.tolist() == [1, 2, 3]
        _, y = next(g.flow(images, np.arange(n), shuffle=True, batch_size=3, seed=42))
        assert y.tolist() != [0, 1, 2]
        x = next(g.flow(images, None, shuffle=True, batch_size=3))
        assert isinstance(x, torch.Tensor) and x.shape[0] == 3
        misc1, misc2 = np.random.random(n), np.random.random((n, 3, 3))
        for i, (x, _) in enumerate(
            g.flow((images, misc1), np.arange(n), shuffle=False, batch_size=2)
        ):
            assert x[0].shape[0] == 2
            np.testing.assert_array_equal(x[1].numpy(), misc1[i * 2 : (i + 1) * 2])
        it = g.flow((images, [misc1, misc2]), np.arange(n), shuffle=False, batch_size=2)
        for i, (x, _) in enumerate(it):
            np.testing.assert_array_equal(x[1].numpy(), misc1[i * 2 : (i + 1) * 2])
            np.testing.assert_array_equal(x[2].numpy(), misc2[i * 2 : (i + 1) * 2])
        x = next(g.flow((images, [misc1, misc2]), None, batch_size=3, shuffle=False))
        assert isinstance(x, list) and len(x) == 3 and x[0].shape[0] == 3
        np.testing.assert_array_equal(x[2].numpy(), misc2[:3])
        x = next(_gen(validation_split=0.2).flow(images, batch_size=3))
        assert isinstance(x, torch.Tensor) and x.shape[0] == 3


def test_flow_errors_name_the_mismatched_arrays_in_keras_words(test_images):
    images = _arrays(test_images[0])
    n = len(images)
    g = _gen()
    with pytest.raises(ValueError, match="All of the arrays in"):
        g.flow((images, np.random.random((n + 1, 3, 3))), np.arange(n), batch_size=3)
    with pytest.raises(ValueError, match=r"`x` \(images tensor\) and `y` \(labels\) "):
        g.flow((images, np.random.random(n)), np.arange(n + 1), batch_size=3)


def test_flow_as_a_sequence_and_on_epoch_end_reshuffles(test_images):
    images = _arrays(test_images[0])
    g = _gen(validation_split=0.2)
    seq = g.flow(images, np.arange(8), shuffle=False, batch_size=3)
    assert len(seq) == 8 // 3 + 1
    x, y = seq[0]
    assert x.shape[0] == 3 and y.tolist() == [0, 1, 2]
    seq = g.flow(images, np.arange(8), shuffle=True, batch_size=3, seed=123)
    _, y = seq[0]
    assert y.tolist() != [0, 1, 2]
    seq.on_epoch_end()
    _, y2 = seq[0]
    assert y.tolist() != y2.tolist()


def test_nearest_interpolation_keeps_label_values_under_rotation():
    labels = np.array(
        [[2, 2, 0, 2, 2], [1, 3, 2, 3, 1], [2, 1, 0, 1, 2], [3, 1, 0, 2, 0], [3, 1, 3, 2, 1]]
    )
    it = _gen(rotation_range=90.0, interpolation_order=0).flow(labels[None, ..., None], seed=123)
    assert np.array_equal(np.unique(labels), np.unique(next(it).numpy()))


def test_a_brightness_range_that_is_not_a_pair_is_refused():
    with pytest.raises(ValueError):
        _gen(brightness_range=0.1)


def test_standardize_works_on_a_batch_of_random_transforms(test_images):
    for group in test_images:
        images = _arrays(group)
        g = _gen(**{k: v for k, v in EVERYTHING_ON.items() if k != "interpolation_order"})
        g.fit(images, augment=True)
        transformed = np.copy(images)
        for i, im in enumerate(transformed):
            transformed[i] = g.random_transform(im)
        out = g.standardize(transformed)
        assert out.shape == images.shape and np.isfinite(out).all()


def test_flips_and_a_45_degree_turn_are_deterministic():
    g = _gen(rotation_range=90, fill_mode="constant")
    x = np.random.random((32, 32, 3))
    assert np.allclose(g.apply_transform(x, {"flip_vertical": True}), x[::-1, :, :])
    assert np.allclose(g.apply_transform(x, {"flip_horizontal": True}), x[:, ::-1, :])
    ones = np.ones((3, 3, 3))
    # Keras 3.15 with today's scipy gives this diamond (the older suite's pattern, one-sided,
    # came from scipy's former "constant" mode); the same cell of every channel
    turned = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])[..., None].repeat(3, -1)
    assert np.allclose(g.apply_transform(ones, {"theta": 45}), turned)


def test_random_transforms_depend_on_the_seed_and_are_off_without_ranges():
    shape = (2, 28, 28)
    g = _gen(
        rotation_range=90.0,
        width_shift_range=0.1,
        height_shift_range=0.1,
        shear_range=0.5,
        zoom_range=0.2,
        channel_shift_range=0.1,
        brightness_range=(1, 5),
        horizontal_flip=True,
        vertical_flip=True,
    )
    one, two = g.get_random_transform(shape, 1), g.get_random_transform(shape, 2)
    for key in ("theta", "tx", "ty", "shear", "zx", "zy", "channel_shift_intensity", "brightness"):
        assert one[key] != 0 and one[key] != two[key], key
    off = _gen().get_random_transform(shape, 1)
    assert (off["theta"], off["tx"], off["ty"], off["shear"], off["zx"], off["zy"]) == (
        0, 0, 0, 0, 1, 1,
    )  # fmt: skip
    assert off["channel_shift_intensity"] is None and off["brightness"] is None


def test_fit_with_rescale_centres_and_scales_the_batches(test_images):
    for group in test_images:
        images = _arrays(group)
        g = _gen(rescale=1 / 255, featurewise_center=True, featurewise_std_normalization=True)
        g.fit(images)
        batch = next(g.flow(images, batch_size=8)).numpy()
        assert abs(batch.mean()) < 1e-3 and abs(1 - batch.std()) < 1e-3
        g = _gen(rescale=1 / 255, featurewise_center=True, zca_whitening=True)
        g.fit(images)
        assert np.abs(next(g.flow(images, batch_size=8)).numpy()).max() <= 1


# ------------------------------------------------------------------ DirectoryIterator


def test_directory_iterator_walks_nested_subfolders(test_images, tmp_path):
    names = _write(test_images, tmp_path, subfolders=True)
    g = _gen()
    it = g.flow_from_directory(tmp_path, num_workers=0)
    assert len(it.class_indices) == 2 and len(it.classes) == len(names)
    assert set(it.filenames) == set(names)
    with pytest.raises(ValueError):
        g.flow_from_directory(tmp_path, color_mode="cmyk")
    with pytest.raises(ValueError):
        g.flow_from_directory(tmp_path, class_mode="output")


def test_directory_iterator_as_a_sequence_runs_the_preprocessing_function(test_images, tmp_path):
    names = _write(test_images, tmp_path, subfolders=True)
    seen = []

    def preprocessing_function(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape[1:]))  # a (B, C, H, W) batch (docs table)
        return torch.zeros_like(x)

    g = _gen(preprocessing_function=preprocessing_function)
    seq = g.flow_from_directory(tmp_path, target_size=(26, 26), batch_size=3, num_workers=0)
    assert len(seq) == np.ceil(len(names) / 3)
    x, y = seq[1]
    assert x.shape == (3, 3, 26, 26) and y.shape == (3, 2) and seen[-1] == (3, 26, 26)
    x, _ = seq[5]
    assert (x == 0).all()
    with pytest.raises(ValueError):
        seq[len(seq)]


def test_directory_iterator_class_mode_input_targets_are_a_copy(test_images, tmp_path):
    _write(test_images, tmp_path, num_classes=1)
    x, y = next(_gen().flow_from_directory(tmp_path, class_mode="input", num_workers=0))
    assert x.shape == y.shape
    y[0, 0, 0, 0] += 1
    assert x[0, 0, 0, 0] != y[0, 0, 0, 0]


@pytest.mark.parametrize(("split", "training"), [(0.25, 18), (0.5, 12), (0.75, 6)])
def test_directory_iterator_validation_split_counts(test_images, tmp_path, split, training):
    names = _write(test_images, tmp_path, subfolders=True)
    g = _gen(validation_split=split)
    with pytest.raises(ValueError):
        g.flow_from_directory(tmp_path, subset="foo")
    train = g.flow_from_directory(tmp_path, subset="training", num_workers=0)
    valid = g.flow_from_directory(tmp_path, subset="validation", num_workers=0)
    assert train.samples == training and valid.samples == len(names) - training
    assert len(train.class_indices) == 2 and len(train.classes) == training
    assert len(set(train.filenames) & set(names)) == training


# ------------------------------------------------------------------ DataFrameIterator


def _flat(test_images, root) -> list[str]:
    return _write(test_images, root, num_classes=0)


def test_dataframe_iterator_with_relative_and_absolute_paths(test_images, tmp_path):
    pd = pytest.importorskip("pandas")
    names = _flat(test_images, tmp_path)
    rng = np.random.default_rng(1)
    paths = [os.path.join(str(tmp_path), f) for f in names]
    df = pd.DataFrame(
        {
            "filename": names,
            "class": [str(c) for c in rng.integers(0, 2, len(names))],
            "filepaths": paths,
        }
    )
    g = _gen()
    x, y = next(g.flow_from_dataframe(df, str(tmp_path), num_workers=0))
    assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
    absolute = g.flow_from_dataframe(df, x_col="filepaths", num_workers=0)
    relative = g.flow_from_dataframe(df, str(tmp_path), num_workers=0)
    sparse = g.flow_from_dataframe(df, str(tmp_path), class_mode="sparse", num_workers=0)
    assert not np.isnan(sparse.classes).any()
    assert len(absolute.class_indices) == 2 and len(absolute.classes) == len(names)
    assert set(absolute.filenames) == set(paths) and set(relative.filenames) == set(names)
    _, y = next(g.flow_from_dataframe(df, str(tmp_path), shuffle=False, class_mode="sparse"))
    assert (y.numpy() == df["class"].astype(float)[: len(y)]).all()
    with pytest.raises(ValueError):
        g.flow_from_dataframe(df, str(tmp_path), color_mode="cmyk")
    with pytest.raises(ValueError):
        g.flow_from_dataframe(df, str(tmp_path), class_mode="output")
    for has_ext in (True, False):
        with pytest.warns(DeprecationWarning):
            g.flow_from_dataframe(df, str(tmp_path), has_ext=has_ext, num_workers=0)
    seq = _gen(preprocessing_function=torch.zeros_like).flow_from_dataframe(
        df, str(tmp_path), target_size=(26, 26), batch_size=3, num_workers=0
    )
    assert len(seq) == np.ceil(len(names) / 3)
    x, y = seq[1]
    assert x.shape == (3, 3, 26, 26) and y.shape == (3, 2)
    assert (seq[5][0] == 0).all()
    with pytest.raises(ValueError):
        seq[len(seq)]


def test_dataframe_iterator_validates_filenames_unless_told_not_to(test_images, tmp_path):
    pd = pytest.importorskip("pandas")
    names = _flat(test_images, tmp_path)
    df = pd.DataFrame({"filename": names + ["test.jpp", "test.jpg"]})
    g = _gen()
    with pytest.warns(UserWarning, match="invalid image filename"):
        it = g.flow_from_dataframe(df, str(tmp_path), class_mode="input", num_workers=0)
    assert len(it.filenames) == len(df) - 2
    it = g.flow_from_dataframe(df, str(tmp_path), class_mode="input", validate_filenames=False)
    assert len(it.filenames) == len(df)


def test_dataframe_iterator_sample_weights_with_input_targets(test_images, tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"filename": _flat(test_images, tmp_path)})
    df["weight"] = ([2, 5] * len(df))[: len(df)]
    g = _gen()
    it = g.flow_from_dataframe(
        df, str(tmp_path), y_col=None, shuffle=False, batch_size=5, weight_col="weight",
        class_mode="input", num_workers=0,
    )  # fmt: skip
    x, y, w = next(it)
    assert torch.equal(x, y)
    y[0, 0, 0, 0] += 1
    assert x[0, 0, 0, 0] != y[0, 0, 0, 0]
    assert w.tolist() == [2, 5, 2, 5, 2]
    df["weight"] = (["2", "5"] * len(df))[: len(df)]
    with pytest.raises(TypeError):
        g.flow_from_dataframe(df, weight_col="weight", class_mode="input")


def test_dataframe_iterator_multi_label_categorical(test_images, tmp_path):
    pd = pytest.importorskip("pandas")
    names = _flat(test_images, tmp_path)
    rng = np.random.default_rng(2)
    options = ["a", "b", ["a"], ["b"], ["a", "b"], ["b", "a"]]
    labels = [options[i] for i in rng.integers(0, len(options), len(names) - 2)] + ["b", "a"]
    x, y = next(
        _gen().flow_from_dataframe(
            pd.DataFrame({"filename": names, "class": labels}), str(tmp_path), num_workers=0
        )
    )
    assert x.ndim == 4 and y.shape == (len(x), 2) and set(y.flatten().tolist()) <= {0.0, 1.0}
    labels = [["b", "a"], "b", ["c"]] + [
        options[i] for i in rng.integers(0, len(options), len(names) - 3)
    ]
    df = pd.DataFrame({"filename": names, "class": labels})
    _, y = next(_gen().flow_from_dataframe(df, str(tmp_path), shuffle=False, num_workers=0))
    assert y.shape == (len(y), 3)
    assert y[:3].tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_dataframe_iterator_multi_output_and_raw_targets(test_images, tmp_path):
    pd = pytest.importorskip("pandas")
    names = _flat(test_images, tmp_path)
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"filename": names}).assign(
        output_0=rng.uniform(size=len(names)), output_1=rng.uniform(size=len(names))
    )
    kw = dict(directory=str(tmp_path), batch_size=3, shuffle=False, num_workers=0)
    for column in (
        list(rng.uniform(size=len(names))),
        [rng.uniform(size=(2, 2, 1)).flatten() for _ in names],
        [rng.uniform(size=(2, 2, 1)) for _ in names],
    ):
        df["output_1"] = column
        x, y = next(
            _gen().flow_from_dataframe(
                df, y_col=["output_0", "output_1"], class_mode="multi_output", **kw
            )
        )
        assert x.ndim == 4 and isinstance(y, list) and len(y) == 2
        assert np.array_equal(y[0].numpy(), np.array(df["output_0"].tolist()[:3]))
        assert np.array_equal(y[1].numpy(), np.array(df["output_1"].tolist()[:3]))
    with pytest.raises(TypeError):
        _gen().flow_from_dataframe(df, y_col="output_0", class_mode="multi_output", **kw)
    df["output_1"] = rng.uniform(size=len(names))
    _, y = next(_gen().flow_from_dataframe(df, y_col="output_0", class_mode="raw", **kw))
    assert y.shape == (3,) and np.array_equal(y.numpy(), df["output_0"].values[:3])
    _, y = next(
        _gen().flow_from_dataframe(df, y_col=["output_0", "output_1"], class_mode="raw", **kw)
    )
    assert y.shape == (3, 2) and np.array_equal(y.numpy(), df[["output_0", "output_1"]].values[:3])


@pytest.mark.parametrize(("split", "training"), [(0.25, 18), (0.5, 12), (0.75, 6)])
def test_dataframe_iterator_validation_split_counts(test_images, tmp_path, split, training):
    pd = pytest.importorskip("pandas")
    names = _flat(test_images, tmp_path)
    rng = np.random.default_rng(4)
    df = pd.DataFrame(
        {"filename": names, "class": [str(c) for c in rng.integers(0, 2, len(names))]}
    )
    g = _gen(validation_split=split)
    _, y = next(g.flow_from_dataframe(df, str(tmp_path), class_mode="sparse", num_workers=0))
    assert not torch.isnan(y.double()).any()
    with pytest.raises(ValueError):
        g.flow_from_dataframe(df, tmp_path, subset="foo")
    train = g.flow_from_dataframe(df, str(tmp_path), subset="training", num_workers=0)
    valid = g.flow_from_dataframe(df, str(tmp_path), subset="validation", num_workers=0)
    assert train.samples == training and valid.samples == len(names) - training
    assert len(train.class_indices) == 2 and len(train.classes) == training
    assert len(set(train.filenames) & set(names)) == training


def test_dataframe_iterator_ignores_the_dataframe_index(test_images, tmp_path):
    pd = pytest.importorskip("pandas")
    names = _flat(test_images, tmp_path)
    classes = [str(c) for c in np.random.default_rng(5).integers(0, 2, len(names))]
    frames = [
        pd.DataFrame({"filename": names, "class": classes}),
        pd.DataFrame({"filename": names, "class": classes}, index=np.arange(1, len(names) + 1)),
        pd.DataFrame({"filename": names, "class": classes}, index=names),
    ]
    its = [_gen().flow_from_dataframe(df, str(tmp_path), seed=1, num_workers=0) for df in frames]
    for _ in range(len(its[0])):
        (a1, c1), (a2, c2), (a3, c3) = (next(it) for it in its)
        assert torch.equal(a1, a2) and torch.equal(a1, a3)
        assert torch.equal(c1, c2) and torch.equal(c1, c3)


def test_dataframe_iterator_n_counts_the_rows_given(test_images, tmp_path):
    pd = pytest.importorskip("pandas")
    names = _flat(test_images, tmp_path)[2:]
    classes = [str(c) for c in np.random.default_rng(6).integers(0, 2, len(names))]
    g = _gen()
    assert g.flow_from_dataframe(
        pd.DataFrame({"filename": names}), str(tmp_path), class_mode=None
    ).n == len(names)
    df = pd.DataFrame({"filename": names, "class": classes})
    assert g.flow_from_dataframe(df, str(tmp_path), class_mode="binary").n == len(names)


def test_dataframe_iterator_absolute_paths_skip_missing_and_foreign_files(test_images, tmp_path):
    pd = pytest.importorskip("pandas")
    paths = [os.path.join(str(tmp_path), f) for f in _flat(test_images, tmp_path)]
    forbidden = os.path.join(str(tmp_path), "image-forbid.fbd")
    with open(paths[-1], "rb") as src, open(forbidden, "wb") as dst:
        dst.write(src.read())
    classes = [str(c) for c in np.random.default_rng(8).integers(0, 2, len(paths))]
    frames = [
        (pd.DataFrame({"filename": paths}), None),
        (pd.DataFrame({"filename": paths, "class": classes}), "binary"),
        (pd.DataFrame({"filename": ["image-not-exist.png", *paths]}), None),
        (pd.DataFrame({"filename": [*paths, forbidden]}), None),
    ]
    g = _gen()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        its = [
            g.flow_from_dataframe(
                df, None, class_mode=mode, shuffle=False, batch_size=1, num_workers=0
            )
            for df, mode in frames
        ]
    split = _gen(validation_split=0.2)
    kw = dict(class_mode=None, shuffle=False, batch_size=1, num_workers=0)
    train = split.flow_from_dataframe(frames[0][0], None, subset="training", **kw)
    valid = split.flow_from_dataframe(frames[0][0], None, subset="validation", **kw)
    assert [it.n for it in its] == [len(paths)] * 4
    assert valid.n == int(0.2 * len(paths)) and train.n == len(paths) - valid.n
    for i in range(len(paths)):
        a1, (a2, _), a3, a4 = (next(it) for it in its)
        a5 = next(valid) if i < valid.n else next(train)
        for other in (a2, a3, a4, a5):
            assert torch.equal(a1, other)


def test_dataframe_iterator_with_nested_subfolders(test_images, tmp_path):
    pd = pytest.importorskip("pandas")
    names = _write(test_images, tmp_path, subfolders=True)
    classes = [str(c) for c in np.random.default_rng(9).integers(0, 2, len(names))]
    it = _gen().flow_from_dataframe(
        pd.DataFrame({"filename": names, "class": classes}), str(tmp_path), class_mode="binary"
    )
    assert it.n == len(names) and set(it.filenames) == set(names)


def test_dataframe_class_indices_follow_classes_even_without_files():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([["data/A.jpg", "A"], ["data/B.jpg", "B"]], columns=["filename", "class"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        forward = _gen().flow_from_dataframe(df, classes=["A", "B"])
        backward = _gen().flow_from_dataframe(df, classes=["B", "A"])
    assert forward.class_indices != backward.class_indices
    assert forward.class_indices == {"A": 0, "B": 1}
