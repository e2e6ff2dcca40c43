"""``keep_aspect_ratio``: Keras' centre crop to the target aspect ratio before the resize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import textured_image
from PIL import Image

from gpuaug.data.directory import DirectoryDataset
from gpuaug.data.image import aspect_crop_box, load_image


def _save(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(textured_image(np.random.default_rng(seed), *size)).save(path)
    return path


@pytest.mark.parametrize(
    ("size", "target", "box"),
    [
        ((40, 20), (10, 10), (10, 0, 30, 20)),  # wide -> square: crop the width
        ((20, 40), (10, 10), (0, 10, 20, 30)),  # tall -> square: crop the height
        ((30, 20), (20, 30), (0, 0, 30, 20)),  # same ratio: the whole image
        ((31, 17), (5, 7), (4, 0, 27, 17)),  # 17 * 7 // 5 = 23 wide, (31 - 23) // 2 = 4
    ],
)
def test_crop_box_is_the_centred_box_of_the_target_ratio(size, target, box):
    assert aspect_crop_box(size, target) == box


def test_keep_aspect_ratio_crops_instead_of_stretching(tmp_path):
    # A wide image whose left and right quarters are black: the square crop drops them.
    arr = np.full((20, 40, 3), 200, np.uint8)
    arr[:, :10] = 0
    arr[:, 30:] = 0
    Image.fromarray(arr).save(tmp_path / "wide.png")
    stretched = load_image(tmp_path / "wide.png", (10, 10), "rgb", "nearest")
    cropped = load_image(tmp_path / "wide.png", (10, 10), "rgb", "nearest", keep_aspect_ratio=True)
    assert (stretched == 0).any()
    assert (cropped == 200).all()


def test_keep_aspect_ratio_must_be_a_bool(tmp_path):
    path = _save(tmp_path / "a.png", (8, 8))
    with pytest.raises(TypeError, match="`keep_aspect_ratio` must be a bool"):
        load_image(path, (4, 4), keep_aspect_ratio="yes")
    with pytest.raises(TypeError, match="`keep_aspect_ratio` must be a bool"):
        DirectoryDataset(tmp_path.parent, keep_aspect_ratio=1)


@pytest.mark.keras
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize(
    ("size", "target"), [((30, 50), (16, 16)), ((50, 30), (12, 20)), ((33, 47), (7, 5))]
)
def test_dataset_pixels_match_keras_load_img_keep_aspect_ratio(
    tmp_path, interpolation, size, target
):
    keras = pytest.importorskip("keras")
    path = _save(tmp_path / "a" / "photo.png", size, seed=sum(size))
    ds = DirectoryDataset(
        tmp_path, target_size=target, interpolation=interpolation, keep_aspect_ratio=True
    )
    expected = keras.utils.load_img(
        str(path), target_size=target, interpolation=interpolation, keep_aspect_ratio=True
    )
    np.testing.assert_array_equal(ds[0][0].permute(1, 2, 0).numpy(), np.asarray(expected))


def test_flow_from_directory_passes_keep_aspect_ratio_on(tmp_path):
    import gpuaug

    _save(tmp_path / "a" / "wide.png", (10, 30))
    loader = gpuaug.flow_from_directory(
        tmp_path, target_size=(5, 5), keep_aspect_ratio=True, num_workers=0, device="cpu"
    )
    assert loader.dataset.keep_aspect_ratio is True
    with pytest.raises(ValueError, match="`keep_aspect_ratio`=True needs decode='cpu'"):
        gpuaug.flow_from_directory(tmp_path, keep_aspect_ratio=True, decode="gpu", device="cpu")


def test_every_factory_refuses_keep_aspect_ratio_with_gpu_decode(tmp_path):
    import gpuaug

    pd = pytest.importorskip("pandas")
    _save(tmp_path / "a" / "wide.png", (10, 30))
    gen = gpuaug.ImageDataGenerator(device="cpu")
    frame = pd.DataFrame({"filename": [str(tmp_path / "a" / "wide.png")], "class": ["a"]})
    match = "`keep_aspect_ratio`=True needs decode='cpu'"
    with pytest.raises(ValueError, match=match):
        gen.flow_from_directory(tmp_path, keep_aspect_ratio=True, decode="gpu")
    with pytest.raises(ValueError, match=match):  # it was silently ignored here
        gen.flow_from_dataframe(frame, keep_aspect_ratio=True, decode="gpu")


def test_disk_cache_of_a_cropped_dataset_is_not_the_stretched_ones(tmp_path):
    from gpuaug.data.cache import cache_key

    _save(tmp_path / "a" / "wide.png", (10, 30))
    stretched = DirectoryDataset(tmp_path, target_size=(5, 5))
    cropped = DirectoryDataset(tmp_path, target_size=(5, 5), keep_aspect_ratio=True)
    assert cache_key(stretched) != cache_key(cropped)
