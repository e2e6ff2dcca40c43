"""DirectoryDataset against real Keras 3 (legacy ``ImageDataGenerator.flow_from_directory``).

Index parity: class indices, file order (nested sub-folders, files under the root ignored,
sorted walk, case-insensitive extensions, links) and validation subsets, file for file.
Pixel parity: decoded values equal ``keras.utils.load_img`` + resize for every
interpolation (both use PIL, so equality is exact).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import textured_image
from PIL import Image

from gpuaug.data.directory import DirectoryDataset
from gpuaug.data.image import INTERPOLATIONS, KERAS_IMAGE_EXTENSIONS

keras = pytest.importorskip("keras")
from keras.src.legacy.preprocessing.image import ImageDataGenerator  # noqa: E402

pytestmark = [
    pytest.mark.keras,
    pytest.mark.filterwarnings('ignore:Using ".tiff" files with multiple bands:UserWarning'),
]


def _save(path: Path, seed: int, size: tuple[int, int] = (10, 14), fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(textured_image(np.random.default_rng(seed), *size)).save(path, format=fmt)


@pytest.fixture
def messy_tree(tmp_path: Path) -> Path:
    """Classes with nested folders, mixed-case extensions, non-images and loose root files."""
    root = tmp_path / "messy"
    files = [
        "cats/b.png",
        "cats/A.PNG",
        "cats/c.JpG",
        "cats/sub/z.jpeg",
        "cats/sub-1/y.bmp",
        "cats/sub/deeper/x.png",
        "cats/Sub/w.tif",
        "cats/.hidden.png",
        "cats/with space #1 [x].png",
        "dogs/d1.ppm",
        "dogs/d0.tiff",
        "dogs/nested/a/b/c.png",
        "dogs/ünïcødé.png",
        "Zebras/z.png",
        "_under/u.png",
        "10/ten.png",
        "9/nine.png",
    ]
    formats = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP", "ppm": "PPM"}
    formats |= {"tif": "TIFF", "tiff": "TIFF"}
    for seed, rel in enumerate(files):
        _save(root / rel, seed, fmt=formats[rel.rsplit(".", 1)[1].lower()])
    for seed in range(7):
        _save(root / "many" / f"m{seed}.png", seed)
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / "dogs" / "meta.json").write_text("{}")
    _save(root / "loose.png", 99)
    return root


def _keras_iterator(root: Path, validation_split: float = 0.0, **kwargs):
    kwargs.setdefault("target_size", (8, 8))
    generator = ImageDataGenerator(validation_split=validation_split)
    return generator.flow_from_directory(str(root), shuffle=False, batch_size=4, **kwargs)


def _assert_same_index(ds: DirectoryDataset, it) -> None:
    assert ds.class_to_idx == it.class_indices
    assert [path for path, _ in ds.samples] == it.filepaths
    assert ds.targets == it.classes.tolist()


def test_class_indices_and_file_order_match_keras(messy_tree):
    ds = DirectoryDataset(messy_tree, target_size=(8, 8), extensions=KERAS_IMAGE_EXTENSIONS)
    it = _keras_iterator(messy_tree)
    _assert_same_index(ds, it)
    assert len(ds) == 24


def test_default_extensions_match_keras_on_a_tree_without_gif_or_webp(messy_tree):
    _assert_same_index(
        DirectoryDataset(messy_tree, target_size=(8, 8)), _keras_iterator(messy_tree)
    )


def test_explicit_class_list_matches_keras(messy_tree):
    classes = ["many", "dogs", "cats"]
    ds = DirectoryDataset(messy_tree, target_size=(8, 8), classes=classes)
    _assert_same_index(ds, _keras_iterator(messy_tree, classes=classes))


@pytest.mark.parametrize("follow_links", [False, True])
def test_linked_folders_match_keras(tmp_path, follow_links):
    root = tmp_path / "root"
    for i in range(3):
        _save(tmp_path / "outside" / f"o{i}.png", i)
    _save(root / "a" / "x.png", 10)
    _save(root / "b" / "y.png", 11)
    (root / "a" / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "c").symlink_to(tmp_path / "outside", target_is_directory=True)
    ds = DirectoryDataset(root, target_size=(8, 8), follow_links=follow_links)
    _assert_same_index(ds, _keras_iterator(root, follow_links=follow_links))


@pytest.mark.parametrize("split", [0.2, 0.25, 0.29, 0.5, 0.7])
@pytest.mark.parametrize("subset", ["training", "validation"])
def test_validation_subsets_match_keras(messy_tree, split, subset):
    ds = DirectoryDataset(
        messy_tree, target_size=(8, 8), validation_split=split, subset=subset, verify="none"
    )
    _assert_same_index(ds, _keras_iterator(messy_tree, split, subset=subset))


@pytest.mark.parametrize("interpolation", sorted(INTERPOLATIONS))
@pytest.mark.parametrize("target_size", [(7, 5), (13, 21)])
def test_pixels_match_keras_load_img(tmp_path, interpolation, target_size):
    path = tmp_path / "a" / "photo.png"
    _save(path, 3, size=(10, 14))
    ds = DirectoryDataset(tmp_path, target_size=target_size, interpolation=interpolation)
    expected = keras.utils.load_img(str(path), target_size=target_size, interpolation=interpolation)
    np.testing.assert_array_equal(ds[0][0].permute(1, 2, 0).numpy(), np.asarray(expected))


@pytest.mark.parametrize("color_mode", ["grayscale", "rgba"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "lanczos"])
def test_pixels_match_keras_in_other_color_modes(tmp_path, color_mode, interpolation):
    path = tmp_path / "a" / "photo.png"
    _save(path, 4, size=(10, 14))
    kw = {"target_size": (6, 9), "color_mode": color_mode, "interpolation": interpolation}
    ds = DirectoryDataset(tmp_path, **kw)
    expected = np.asarray(keras.utils.load_img(str(path), **kw))
    got = ds[0][0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, expected.reshape(got.shape))


def test_jpeg_pixels_match_keras(tmp_path):
    path = tmp_path / "a" / "photo.jpg"
    _save(path, 5, size=(30, 40), fmt="JPEG")
    ds = DirectoryDataset(tmp_path, target_size=(12, 16), interpolation="bicubic")
    expected = keras.utils.load_img(str(path), target_size=(12, 16), interpolation="bicubic")
    np.testing.assert_array_equal(ds[0][0].permute(1, 2, 0).numpy(), np.asarray(expected))


@pytest.mark.parametrize("class_mode", ["categorical", "binary", "sparse"])
def test_batches_and_targets_match_keras(tmp_path, class_mode):
    for i in range(3):
        _save(tmp_path / "a" / f"{i}.png", i)
        _save(tmp_path / "b" / f"{i}.png", 10 + i)
    ds = DirectoryDataset(tmp_path, target_size=(6, 7), class_mode=class_mode)
    it = _keras_iterator(tmp_path, target_size=(6, 7), class_mode=class_mode)
    x_keras, y_keras = it[1]  # samples 4..7: classes a, b mixed
    for row, index in enumerate(range(4, 6)):
        image, target = ds[index]
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), x_keras[row])
        np.testing.assert_array_equal(target.numpy(), y_keras[row])


def test_exif_orientation_is_applied_unlike_keras(tmp_path):
    path = tmp_path / "a" / "portrait.jpg"
    path.parent.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees clockwise
    Image.fromarray(textured_image(np.random.default_rng(0), 10, 16)).save(
        path, exif=exif.tobytes(), quality=95
    )
    ours = DirectoryDataset(tmp_path, target_size=None)[0][0]
    theirs = np.asarray(keras.utils.load_img(str(path)))
    assert theirs.shape == (10, 16, 3)  # Keras ignores the tag
    assert tuple(ours.shape) == (3, 16, 10)
    np.testing.assert_array_equal(ours.permute(1, 2, 0).numpy(), np.rot90(theirs, k=-1))


def test_keras_paths_use_the_root_as_given(messy_tree):
    relative = os.path.relpath(messy_tree)
    ds = DirectoryDataset(relative, target_size=(8, 8), classes=["dogs"])
    assert [p for p, _ in ds.samples] == _keras_iterator(relative, classes=["dogs"]).filepaths
