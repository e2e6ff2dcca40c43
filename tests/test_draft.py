"""JPEG draft decoding (``draft=True``): DCT-scaled decode of large files, opt-in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gpuaug.data.directory import DirectoryDataset
from gpuaug.data.image import load_image

ORIENTATION = 0x0112


def _photo(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    noise = rng.integers(0, 40, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _expected(path, target_size, request, interpolation=Image.BILINEAR, transpose=None):
    """Decode by hand: draft at ``request`` (file axes), load, turn upright, resize."""
    with Image.open(path) as img:
        img.draft(None, request)
        img.load()
        out = img.transpose(transpose) if transpose is not None else img
        out = out.convert("RGB").resize((target_size[1], target_size[0]), interpolation)
        return torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1)


def test_a_large_jpeg_decodes_at_a_reduced_scale_with_draft(tmp_path):
    path = tmp_path / "big.jpg"
    _photo(640, 480).save(path, quality=90)
    out = load_image(path, (60, 80), interpolation="bilinear", draft=True)
    assert out.shape == (3, 60, 80)
    assert torch.equal(out, _expected(path, (60, 80), (80, 60)))  # 1/8 scale: 80 x 60
    plain = load_image(path, (60, 80), interpolation="bilinear")
    assert not torch.equal(out, plain)  # draft changes pixels: hence opt-in
    assert (out.float() - plain.float()).abs().mean() < 2.0


def test_draft_is_off_by_default(tmp_path):
    path = tmp_path / "big.jpg"
    _photo(640, 480).save(path, quality=90)
    with Image.open(path) as img:
        plain = img.convert("RGB").resize((80, 60), Image.NEAREST)
    expected = torch.from_numpy(np.asarray(plain).copy()).permute(2, 0, 1)
    assert torch.equal(load_image(path, (60, 80)), expected)


def test_draft_requests_the_file_axes_of_an_exif_rotated_jpeg(tmp_path):
    # 800 x 400 in the file, orientation 6: upright it is 400 wide, 800 tall. A target of
    # 100 tall x 350 wide needs the file decoded >= 100 x 350 (w x h): scale 1, not 1/2.
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    _photo(800, 400).save(path, quality=90, exif=exif)
    out = load_image(path, (100, 350), interpolation="bilinear", draft=True)
    expected = _expected(path, (100, 350), (100, 350), transpose=Image.Transpose.ROTATE_270)
    assert torch.equal(out, expected)


def test_draft_leaves_other_formats_alone(tmp_path):
    path = tmp_path / "big.png"
    _photo(320, 240).save(path)
    assert torch.equal(load_image(path, (30, 40), draft=True), load_image(path, (30, 40)))


def test_directory_dataset_passes_draft_to_the_decoder(tmp_path):
    (tmp_path / "a").mkdir()
    path = tmp_path / "a" / "big.jpg"
    _photo(640, 480).save(path, quality=90)
    ds = DirectoryDataset(tmp_path, target_size=(60, 80), interpolation="bilinear", draft=True)
    image, _ = ds[0]
    assert torch.equal(image, load_image(path, (60, 80), interpolation="bilinear", draft=True))


def test_directory_dataset_rejects_a_non_bool_draft(tmp_path):
    (tmp_path / "a").mkdir()
    _photo(32, 32).save(tmp_path / "a" / "x.jpg")
    with pytest.raises(TypeError, match="`draft` must be a bool; got 'yes'"):
        DirectoryDataset(tmp_path, draft="yes")


def test_flow_from_directory_passes_draft_and_keys_the_disk_cache_on_it(tmp_path):
    from conftest import write_tree

    import gpuaug
    from gpuaug.data.cache import cache_key

    root = write_tree(tmp_path / "data", {"a": 2}, size=(16, 16), ext="jpg")
    kw = dict(target_size=(8, 8), num_workers=0, device="cpu", progress=False)
    plain = gpuaug.flow_from_directory(root, **kw)
    drafted = gpuaug.flow_from_directory(root, draft=True, **kw)
    assert drafted.dataset.draft and not plain.dataset.draft
    assert cache_key(drafted.dataset) != cache_key(plain.dataset)
    with pytest.raises(ValueError, match="`draft`=True needs decode='cpu'"):
        gpuaug.flow_from_directory(root, draft=True, decode="gpu", **kw)
