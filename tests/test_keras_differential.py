"""Differential test: `gpuaug.ImageDataGenerator` against Keras 3's legacy class, same arguments.

Randomised (a seeded numpy generator, so a failure reproduces) over constructor arguments
(every one, the odd forms included: ``zoom_range`` as a list, shifts as int / list,
``brightness_range``, ``data_format``, ``interpolation_order``, ``dtype``), image dtypes
(uint8, float32, float64), channels 1 / 3 / 4, and every public method and iterator attribute.

What is compared exactly: labels, sample order with ``shuffle=False``, shapes (ours
``(B, C, H, W)``, Keras' ``(B, H, W, C)``), dtypes, file lists, class indices, the printed
"Found ..." line, ``len``, ``n``, ``batch_index``, ``total_batches_seen``, ``index_array``,
the type of the error a bad argument raises. Pixels: within the bounds of
docs/keras-differences.md (0.01 grey levels, except the pixels whose source point sits within
1e-3 px of a discontinuity; brightness within ``b + 1`` levels). Everything else that differs is
a row of that page's table, pinned by its own test (`tests/test_generator.py` and below).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image, write_tree

import gpuaug
from gpuaug.augment.params import AugmentParams, affine_matrix

keras_image = pytest.importorskip("keras.src.legacy.preprocessing.image")
KerasIDG = keras_image.ImageDataGenerator
pd = pytest.importorskip("pandas")

pytestmark = pytest.mark.keras

SEED = int(os.environ.get("GPUAUG_DIFFERENTIAL_SEED", 20261204))
CLASSES = {"cat": 3, "dog": 2, "emu": 4}
SIZE = (12, 16)  # (height, width): tiny, since Keras works image by image on the CPU


def _gen(**kwargs) -> gpuaug.ImageDataGenerator:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gpuaug.ImageDataGenerator(device="cpu", **kwargs)


def _keras(**kwargs) -> KerasIDG:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return KerasIDG(**kwargs)


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


# ----------------------------------------------------------------------------- random inputs


def _shift(rng: np.random.Generator) -> object:
    kind = rng.integers(4)
    if kind == 0:
        return 0.0
    if kind == 1:
        return float(rng.uniform(0.05, 0.3))  # a fraction
    if kind == 2:
        return int(rng.integers(1, 4))  # whole pixels 0..n-1
    return [int(v) for v in rng.integers(0, 4, size=3)]  # a list of pixel choices


def _constructor(rng: np.random.Generator) -> dict:
    """Random constructor arguments: each one on or off, in one of the forms Keras takes."""
    kw: dict = {}
    if rng.random() < 0.5:
        kw["rotation_range"] = float(rng.uniform(1, 40))
    shift = _shift(rng)
    if shift:
        kw["width_shift_range"] = kw["height_shift_range"] = shift  # equal: Keras swaps them
    if rng.random() < 0.4:
        kw["shear_range"] = float(rng.uniform(1, 30))
    z = rng.integers(3)
    if z == 1:
        kw["zoom_range"] = float(rng.uniform(0.05, 0.3))
    elif z == 2:
        lo = float(rng.uniform(0.7, 1.0))
        kw["zoom_range"] = [lo, lo + float(rng.uniform(0.0, 0.4))]
    if rng.random() < 0.3:
        kw["channel_shift_range"] = float(rng.uniform(1, 40))
    if rng.random() < 0.3:
        lo = float(rng.uniform(0.5, 1.0))
        kw["brightness_range"] = (lo, lo + float(rng.uniform(0, 0.5)))
    kw["fill_mode"] = str(rng.choice(["nearest", "constant", "reflect", "wrap"]))
    if kw["fill_mode"] == "constant":
        kw["cval"] = float(rng.uniform(0, 255))
    kw["horizontal_flip"] = bool(rng.random() < 0.5)
    kw["vertical_flip"] = bool(rng.random() < 0.5)
    kw["interpolation_order"] = int(rng.integers(2))
    kw["data_format"] = str(rng.choice(["channels_last", "channels_first"]))
    kw["dtype"] = str(rng.choice(["float32", "float64"]))
    return kw


def _image(rng: np.random.Generator, h: int, w: int, channels: int, dtype: str) -> np.ndarray:
    rgb = textured_image(rng, h, w)
    image = np.concatenate([rgb, rgb[..., :1]], axis=-1)[..., :channels]
    return image.astype(dtype)


def _near_discontinuity(params: dict, h: int, w: int, fill_mode: str, order: int) -> np.ndarray:
    """(H, W) True where the source point lies within 1e-3 px of a place a float32 ulp can
    flip (the "constant" edge, the "wrap" seam, a nearest-interpolation tie)."""
    p = AugmentParams.from_keras([params])
    m = affine_matrix(p, h, w).double().numpy()[0]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    near = np.zeros((h, w), dtype=bool)
    for coord, size in (
        (m[0, 0] * xx + m[0, 1] * yy + m[0, 2], w),
        (m[1, 0] * xx + m[1, 1] * yy + m[1, 2], h),
    ):
        if order == 0:
            near |= np.abs(coord - np.floor(coord) - 0.5) < 1e-3
        if fill_mode == "constant":  # an exact edge is exact in float32 too: not ambiguous
            for edge in (0, size - 1):
                near |= (np.abs(coord - edge) < 1e-3) & (coord != edge)
        if fill_mode == "wrap":
            period = size - 1
            seam = np.abs(coord / period - np.round(coord / period)) * period
            near |= (seam < 1e-3) & (seam != 0)
    return near


# ----------------------------------------------------------------------------- per-image methods


def test_per_image_methods_agree_with_keras():
    rng = np.random.default_rng(SEED)
    for case in range(80):
        kw = _constructor(rng)
        if kw["data_format"] == "channels_first":  # Keras' brightness fails there (docs table)
            kw.pop("brightness_range", None)
        k, g = _keras(**kw), _gen(**kw)
        channels = int(rng.choice([1, 3, 4]))
        image_dtype = str(rng.choice(["uint8", "float32", "float64"]))
        geometric = any(kw.get(n) for n in ("rotation_range", "shear_range", "zoom_range"))
        h, w = (12, 12) if geometric else SIZE  # Keras turns non-square images off-centre
        x = _image(rng, h, w, channels, image_dtype)
        if kw["data_format"] == "channels_first":
            x = np.ascontiguousarray(x.transpose(2, 0, 1))
        where = f"case {case}: {kw}, {image_dtype} x{channels}"

        theirs = k.get_random_transform(x.shape, seed=case)
        ours = g.get_random_transform(x.shape, seed=case)
        assert set(ours) == set(theirs), where
        off = {
            "theta": not kw.get("rotation_range"),
            "tx": not kw.get("width_shift_range"),
            "ty": not kw.get("height_shift_range"),
            "shear": not kw.get("shear_range"),
            "zx": not kw.get("zoom_range"),
            "zy": not kw.get("zoom_range"),
            "channel_shift_intensity": not kw.get("channel_shift_range"),
            "brightness": kw.get("brightness_range") is None,
            "flip_horizontal": True,  # 0 or 1, an int, on or off
            "flip_vertical": True,
        }
        for key, is_off in off.items():  # a stage off: Keras' "off" value, of its type
            if is_off:
                assert type(ours[key]) is type(theirs[key]), (where, key)
                if not key.startswith("flip"):
                    assert ours[key] == theirs[key], (where, key)

        expected = k.apply_transform(x.copy(), theirs)
        got = g.apply_transform(x, theirs)
        assert got.shape == expected.shape and got.dtype == expected.dtype, where
        diff = got.astype(np.float64) - expected.astype(np.float64)
        axis = 0 if kw["data_format"] == "channels_first" else -1
        keep = ~_near_discontinuity(theirs, h, w, kw["fill_mode"], kw["interpolation_order"])
        assert keep.mean() > 0.75, where  # most pixels are compared
        per_pixel = np.moveaxis(diff, axis, -1)[keep]
        if theirs["brightness"] is not None and channels == 4:  # PIL keeps alpha (docs table)
            per_pixel = per_pixel[:, :3]
        # scipy writes a uint8 warp rounded, before the channel shift and brightness: +-0.5
        rounding = 0.5 if image_dtype == "uint8" else 0.0
        b = theirs["brightness"]
        if b is not None:  # Keras truncates through PIL: up to b + 1 levels darker (docs)
            assert per_pixel.min() >= -(rounding * b + 0.01), (where, per_pixel.min())
            assert per_pixel.max() < b + 1 + rounding * b, (where, per_pixel.max())
        else:
            assert np.abs(per_pixel).max() <= rounding + 0.01, (where, np.abs(per_pixel).max())

        shape = g.random_transform(x, seed=case).shape
        assert shape == k.random_transform(x.copy(), seed=case).shape == x.shape


def test_fit_and_standardize_agree_with_keras():
    rng = np.random.default_rng(SEED + 1)
    for case in range(24):
        kw = {
            "data_format": str(rng.choice(["channels_last", "channels_first"])),
            "dtype": str(rng.choice(["float32", "float64"])),
        }
        if rng.random() < 0.5:
            kw["rescale"] = float(rng.choice([1 / 255, 0.5, 2.0]))
        mode = rng.integers(4)
        if mode == 0:
            kw.update(
                featurewise_center=True, featurewise_std_normalization=bool(rng.random() < 0.5)
            )
        elif mode == 1:
            kw.update(samplewise_center=True, samplewise_std_normalization=bool(rng.random() < 0.5))
        elif mode == 2:
            kw.update(zca_whitening=True, zca_epsilon=1e-2)
        else:
            kw.update(featurewise_center=True, samplewise_center=True)
        k, g = _keras(**kw), _gen(**kw)
        channels = int(rng.choice([1, 3, 4]))
        x = np.stack([_image(rng, 6, 5, channels, "float32") for _ in range(8)])
        x = x.astype(kw["dtype"])
        if kw["data_format"] == "channels_first":
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        where = f"case {case}: {kw}, x{channels}"
        k.fit(x)
        g.fit(x)
        for name in ("mean", "std", "zca_whitening_matrix"):
            theirs, ours = getattr(k, name), getattr(g, name)
            assert (ours is None) == (theirs is None), (where, name)
            if theirs is not None:
                assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (where, name)
                scale = np.abs(theirs).max()
                np.testing.assert_allclose(ours, theirs, atol=1e-3 * scale, err_msg=where)
        one = x[0].copy()
        copy = one.copy()
        expected = k.standardize(copy)
        got = g.standardize(one)
        assert got.dtype == expected.dtype, where
        assert (got is one) == (expected is copy) == (not kw.get("zca_whitening")), where
        scale = max(1.0, np.abs(expected).max())
        np.testing.assert_allclose(got, expected, atol=2e-3 * scale, err_msg=where)


# ----------------------------------------------------------------------------- iterators


def _attributes_agree(ours, theirs, where: str, files: bool) -> None:
    assert (ours.n, ours.batch_size, len(ours)) == (theirs.n, theirs.batch_size, len(theirs)), where
    assert (
        (ours.batch_index, ours.total_batches_seen)
        == (0, 0)
        == (
            theirs.batch_index,
            theirs.total_batches_seen,
        )
    ), where
    assert ours.index_array is None and theirs.index_array is None, where
    if files:
        assert ours.samples == theirs.samples, where
        assert ours.filenames == theirs.filenames, where
        assert ours.filepaths == [str(p) for p in theirs.filepaths], where
        if hasattr(theirs, "class_indices"):  # Keras' DataFrameIterator: with classes only
            assert ours.class_indices == theirs.class_indices, where
        for name in ("target_size", "color_mode", "shuffle", "subset", "interpolation", "dtype"):
            assert getattr(ours, name) == getattr(theirs, name), (where, name)
        assert ours.directory == str(theirs.directory), where
        if hasattr(theirs, "num_classes"):  # Keras' DirectoryIterator only
            assert ours.num_classes == theirs.num_classes, where
        if hasattr(theirs, "classes"):  # Keras' DataFrameIterator: with classes only
            assert list(ours.classes) == list(theirs.classes), where
        h, w, c = theirs.image_shape if theirs.data_format == "channels_last" else (0, 0, 0)
        if theirs.data_format == "channels_last":
            assert ours.image_shape == (c, h, w), where


def _batches_agree(ours, theirs, where: str, steps: int) -> None:
    """``steps`` calls of next() on both: batches, then the iterator's counters."""
    for step in range(steps):
        kb, gb = next(theirs), next(ours)
        _batch_agrees(gb, kb, f"{where}, step {step}")
        assert (ours.batch_index, ours.total_batches_seen) == (
            theirs.batch_index,
            theirs.total_batches_seen,
        ), where
        np.testing.assert_array_equal(ours.index_array, theirs.index_array, err_msg=where)


def _batch_agrees(ours, theirs, where: str) -> None:
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs), where
        _images_agree(ours[0], theirs[0], where)
        _targets_agree(ours[1], theirs[1], where)
        if len(theirs) == 3:  # sample weights: float32 here (docs table), the values Keras'
            assert ours[2].dtype == torch.float32, where
            np.testing.assert_allclose(ours[2].numpy(), theirs[2], rtol=1e-6, err_msg=where)
    else:
        _images_agree(ours, theirs, where)


def _images_agree(ours, theirs, where: str) -> None:
    if isinstance(theirs, list):  # flow((x, x_misc)): [images, *extra]
        _images_agree(ours[0], theirs[0], where)
        for o, t in zip(ours[1:], theirs[1:], strict=True):
            _targets_agree(o, t, where)
        return
    assert ours.dtype == getattr(torch, str(theirs.dtype)), where
    np.testing.assert_allclose(_nhwc(ours), theirs, atol=1e-4, err_msg=where)


def _targets_agree(ours, theirs, where: str) -> None:
    if isinstance(theirs, list):  # multi_output
        for o, t in zip(ours, theirs, strict=True):
            _targets_agree(o, t, where)
        return
    ours = ours.numpy() if ours.ndim < 4 else _nhwc(ours)
    if theirs.dtype.kind == "f" and ours.dtype == np.int64:  # sparse: int64 (docs table)
        ours = ours.astype(theirs.dtype)
    assert ours.dtype == theirs.dtype, where
    np.testing.assert_allclose(ours, theirs, atol=1e-4, err_msg=where)


def _deterministic(rng: np.random.Generator) -> dict:
    """Arguments whose output can be compared pixel for pixel (no random stage)."""
    kw: dict = {"dtype": str(rng.choice(["float32", "float64"]))}
    if rng.random() < 0.6:
        kw["rescale"] = float(rng.choice([1 / 255, 0.5]))
    if rng.random() < 0.3:
        kw["samplewise_center"] = True
    return kw


def test_flow_agrees_with_keras():
    rng = np.random.default_rng(SEED + 2)
    for case in range(30):
        kw = _deterministic(rng)
        n = int(rng.integers(4, 11))
        channels = int(rng.choice([1, 3, 4]))
        image_dtype = str(rng.choice(["uint8", "float32", "float64"]))
        x = np.stack([_image(rng, 5, 7, channels, image_dtype) for _ in range(n)])
        y = [None, np.arange(n) % 2, rng.normal(size=(n, 2)), np.arange(n, dtype=np.int32)][
            int(rng.integers(4))
        ]
        flow_kw: dict = {"batch_size": int(rng.integers(1, 5)), "shuffle": False}
        if y is not None and rng.random() < 0.4:
            kw["validation_split"] = 0.3
            flow_kw.update(subset=str(rng.choice(["training", "validation"])))
            flow_kw["ignore_class_split"] = True
        if y is not None and "subset" not in flow_kw and rng.random() < 0.5:
            # (Keras does not split weights with a subset: a row of the docs table)
            flow_kw["sample_weight"] = [rng.random(n), np.arange(n) + 1][int(rng.integers(2))]
        inputs = x
        if rng.random() < 0.3:
            inputs = (x, np.arange(n * 3, dtype=np.float32).reshape(n, 3))
        where = (
            f"case {case}: {kw} {flow_kw}, {image_dtype} x{channels}, y {getattr(y, 'dtype', None)}"
        )
        theirs = _keras(**kw).flow(inputs, y, **flow_kw)
        ours = _gen(**kw).flow(inputs, y, **flow_kw)
        _attributes_agree(ours, theirs, where, files=False)
        _batches_agree(ours, theirs, where, steps=len(theirs) + 1)
        _batch_agrees(ours[0], theirs[0], where)
        assert ours.total_batches_seen == theirs.total_batches_seen, where


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("keras-differential")
    write_tree(root / "data", CLASSES, size=SIZE)
    (root / "data" / "emu" / "notes.txt").write_text("not an image")
    return root / "data"


def test_flow_from_directory_agrees_with_keras(tree, capsys):
    rng = np.random.default_rng(SEED + 3)
    for case in range(20):
        kw = _deterministic(rng)
        class_mode = str(rng.choice(["categorical", "binary", "sparse", "input", "None"]))
        class_mode = None if class_mode == "None" else class_mode
        classes = ["dog", "cat"] if class_mode == "binary" or rng.random() < 0.3 else None
        flow_kw = {
            "target_size": SIZE if rng.random() < 0.5 else (8, 10),
            "color_mode": str(rng.choice(["rgb", "grayscale", "rgba"])),
            "classes": classes,
            "class_mode": class_mode,
            "batch_size": int(rng.integers(1, 5)),
            "shuffle": False,
            "interpolation": str(rng.choice(["nearest", "bilinear"])),
        }
        if rng.random() < 0.4:
            kw["validation_split"] = 0.4
            flow_kw["subset"] = str(rng.choice(["training", "validation"]))
        where = f"case {case}: {kw} {flow_kw}"
        theirs = _keras(**kw).flow_from_directory(tree, **flow_kw)
        printed = capsys.readouterr().out
        ours = _gen(**kw).flow_from_directory(tree, num_workers=0, **flow_kw)
        assert capsys.readouterr().out == printed, where
        _attributes_agree(ours, theirs, where, files=True)
        np.testing.assert_array_equal(ours.labels, theirs.labels, err_msg=where)
        _batches_agree(ours, theirs, where, steps=len(theirs) + 1)


def test_flow_from_dataframe_agrees_with_keras(tree, capsys):
    rng = np.random.default_rng(SEED + 4)
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*.png"))
    n = len(files)
    df = pd.DataFrame(
        {
            "filename": files + ["cat/missing.png", "emu/notes.txt"],
            "class": [f.split("/")[0] for f in files] + ["cat", "emu"],
            "tags": [[f.split("/")[0], "any"] for f in files] + [["cat"], ["emu"]],
            "score": np.linspace(0, 1, n + 2),
            "count": np.arange(n + 2, dtype=np.int32),
        }
    )
    for case in range(20):
        kw = _deterministic(rng)
        class_mode = str(
            rng.choice(["categorical", "binary", "sparse", "raw", "multi_output", "input", "None"])
        )
        class_mode = None if class_mode == "None" else class_mode
        y_col = {"raw": "score", "multi_output": ["score", "count"]}.get(class_mode, "class")
        if class_mode == "categorical" and rng.random() < 0.5:
            y_col = "tags"  # multi-label
        classes = ["dog", "cat"] if class_mode == "binary" else None
        flow_kw = {
            "directory": str(tree),
            "y_col": y_col,
            "target_size": SIZE,
            "color_mode": str(rng.choice(["rgb", "grayscale"])),
            "classes": classes,
            "class_mode": class_mode,
            "batch_size": int(rng.integers(1, 5)),
            "shuffle": False,
            "validate_filenames": True,
            "weight_col": "score" if rng.random() < 0.4 and class_mode is not None else None,
        }
        if rng.random() < 0.4:
            kw["validation_split"] = 0.25
            flow_kw["subset"] = str(rng.choice(["training", "validation"]))
        where = f"case {case}: {kw} {flow_kw}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = _keras(**kw).flow_from_dataframe(df, **flow_kw)
            printed = capsys.readouterr().out
            ours = _gen(**kw).flow_from_dataframe(df, num_workers=0, **flow_kw)
        assert capsys.readouterr().out == printed, where
        _attributes_agree(ours, theirs, where, files=True)
        if class_mode in ("raw", "multi_output"):
            for o, t in zip(
                ours.labels if class_mode == "multi_output" else [ours.labels],
                theirs.labels if class_mode == "multi_output" else [theirs.labels],
                strict=True,
            ):
                np.testing.assert_array_equal(o, t, err_msg=where)
        elif class_mode is not None and class_mode != "input":
            assert list(ours.labels) == list(theirs.labels), where
        _batches_agree(ours, theirs, where, steps=len(theirs) + 1)


# ----------------------------------------------------------------------------- errors

BAD_CONSTRUCTORS = [
    {"zoom_range": "big"},
    {"zoom_range": [0.5, 1.0, 2.0]},
    {"data_format": "channels_middle"},
    {"validation_split": 1.5},
    {"brightness_range": 0.5},
    {"brightness_range": [0.5]},
]


@pytest.mark.parametrize("kwargs", BAD_CONSTRUCTORS, ids=str)
def test_a_bad_constructor_argument_raises_keras_error_type_and_message_start(kwargs):
    theirs = _error(lambda: _keras(**kwargs))
    with pytest.raises(type(theirs)) as ours:
        _gen(**kwargs)
    assert str(ours.value).startswith(str(theirs).split("Received")[0]), str(ours.value)


def _error(call) -> Exception:
    """The exception ``call()`` raises (Keras' side of an error comparison)."""
    try:
        call()
    except Exception as err:  # noqa: BLE001 - its type is what is compared
        return err
    pytest.fail("Keras accepted it")


def _bad_flow_calls(tree: Path) -> list[tuple[str, dict, dict]]:
    x = np.zeros((4, 5, 5, 3), np.float32)
    df = pd.DataFrame({"filename": ["cat/img_000.png", "dog/img_000.png"], "class": ["cat", "dog"]})
    return [
        ("flow", {"x": x[0]}, {}),  # 3-D
        ("flow", {"x": x, "y": np.arange(3)}, {}),  # lengths differ
        ("flow", {"x": x, "sample_weight": np.arange(3)}, {}),
        ("flow", {"x": x, "y": np.arange(4), "subset": "testing"}, {"validation_split": 0.5}),
        ("flow", {"x": (x, np.zeros(3))}, {}),  # x_misc of another length
        ("flow_from_directory", {"directory": tree, "class_mode": "other"}, {}),
        ("flow_from_directory", {"directory": tree, "color_mode": "cmyk"}, {}),
        ("flow_from_directory", {"directory": tree / "nowhere"}, {}),
        (
            "flow_from_directory",
            {"directory": tree, "subset": "testing"},
            {"validation_split": 0.5},
        ),
        ("flow_from_dataframe", {"dataframe": df, "directory": tree, "class_mode": "bad"}, {}),
        (
            "flow_from_dataframe",
            {"dataframe": df, "directory": tree, "y_col": "class", "class_mode": "multi_output"},
            {},
        ),
        ("flow_from_dataframe", {"dataframe": df.assign(filename=[1, 2]), "directory": tree}, {}),
        (
            "flow_from_dataframe",
            {
                "dataframe": df.assign(c=[1, 2]),
                "directory": tree,
                "y_col": "c",
                "class_mode": "sparse",
            },
            {},
        ),
        (
            "flow_from_dataframe",
            {
                "dataframe": df.assign(c=["a", "b"]),
                "directory": tree,
                "y_col": "c",
                "class_mode": "categorical",
                "weight_col": "c",
            },
            {},
        ),
    ]


def test_a_bad_flow_argument_raises_the_error_type_keras_raises(tree, capsys):
    for method, kwargs, init in _bad_flow_calls(tree):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = _error(lambda: getattr(_keras(**init), method)(**kwargs))  # noqa: B023
            with pytest.raises(type(theirs)):
                getattr(_gen(**init), method)(**kwargs, num_workers=0)
