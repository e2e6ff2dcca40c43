"""decode="gpu": file bytes in workers, batched JPEG decode + resize on the device.

Without CUDA the decode functions run on the CPU (torchvision's libjpeg-turbo decoder), which
tests their plumbing; the loader refuses decode="gpu" without CUDA, so its GPU-decode path is
tested here on the CPU with that check switched off. nvJPEG itself needs the cuda tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image, write_tree
from PIL import Image

import gpuaug
import gpuaug.decode as decode_mod
import gpuaug.loader as loader_mod
from gpuaug.decode import (
    apply_orientation,
    check_decode,
    decode_jpeg_batch,
    is_jpeg,
    jpeg_orientation,
    read_file_bytes,
)
from gpuaug.image import ImageLoadError, load_image

SIZE = (16, 16)


def save_jpeg(path: Path, seed: int = 0, size=(20, 24), orientation: int | None = None) -> Path:
    img = Image.fromarray(textured_image(np.random.default_rng(seed), *size))
    kwargs = {"quality": 90}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", **kwargs)
    return path


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("jpegs")
    return [save_jpeg(folder / f"{i}.jpg", seed=i) for i in range(3)]


# ---------------------------------------------------------------- bytes and headers
def test_read_file_bytes_returns_the_file_as_uint8(jpegs):
    data = read_file_bytes(jpegs[0])
    assert data.dtype == torch.uint8 and data.ndim == 1
    assert data.numpy().tobytes() == jpegs[0].read_bytes()


def test_read_file_bytes_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(ImageLoadError, match=r"nope\.jpg"):
        read_file_bytes(tmp_path / "nope.jpg")


def test_read_file_bytes_of_an_empty_file_is_an_error(tmp_path):
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"e\.jpg.*empty"):
        read_file_bytes(tmp_path / "e.jpg")


def test_is_jpeg_reads_the_magic_bytes_not_the_name(tmp_path, jpegs):
    disguised = tmp_path / "photo.png"
    disguised.write_bytes(jpegs[0].read_bytes())
    png = write_tree(tmp_path / "t", {"a": 1}) / "a" / "img_000.png"
    assert is_jpeg(read_file_bytes(disguised))
    assert not is_jpeg(png.read_bytes())


def test_jpeg_orientation_reads_the_exif_tag(tmp_path, jpegs):
    rotated = save_jpeg(tmp_path / "r.jpg", orientation=6)
    assert jpeg_orientation(rotated.read_bytes()) == 6
    assert jpeg_orientation(read_file_bytes(jpegs[0])) == 1
    assert jpeg_orientation(b"\xff\xd8\xffgarbage") == 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_pil_exif_transpose(tmp_path, orientation):
    path = save_jpeg(tmp_path / "o.jpg", orientation=orientation)
    from PIL import ImageOps

    with Image.open(path) as img:
        stored = torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy())
        upright = np.asarray(ImageOps.exif_transpose(img)).transpose(2, 0, 1)
    assert torch.equal(apply_orientation(stored, orientation), torch.from_numpy(upright.copy()))


# ---------------------------------------------------------------- decode_jpeg_batch (CPU)
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
def test_batch_decode_matches_the_cpu_loader(jpegs, interpolation):
    data = [read_file_bytes(p) for p in jpegs]
    out = decode_jpeg_batch(data, "cpu", SIZE, "rgb", interpolation)
    for path, image in zip(jpegs, out, strict=True):
        ref = load_image(path, SIZE, "rgb", interpolation)
        assert image.shape == (3, *SIZE) and image.dtype == torch.uint8
        assert (image.int() - ref.int()).abs().max() <= 2


@pytest.mark.parametrize("color_mode, channels", [("grayscale", 1), ("rgba", 4)])
def test_batch_decode_follows_color_mode(jpegs, color_mode, channels):
    (image,) = decode_jpeg_batch([read_file_bytes(jpegs[0])], "cpu", SIZE, color_mode)
    assert image.shape == (channels, *SIZE)
    if color_mode == "rgba":
        assert bool((image[3] == 255).all())


def test_batch_decode_turns_exif_rotated_photos_upright(tmp_path):
    path = save_jpeg(tmp_path / "portrait.jpg", size=(20, 24), orientation=6)
    data = read_file_bytes(path)
    (image,) = decode_jpeg_batch([data], "cpu", None, orientations=[jpeg_orientation(data)])
    ref = load_image(path, None)
    assert image.shape == ref.shape == (3, 24, 20)
    assert (image.int() - ref.int()).abs().max() <= 2


def test_a_jpeg_the_decoder_refuses_falls_back_to_the_cpu(jpegs, monkeypatch):
    real = decode_mod._decode

    def refuse_second(data, mode, device):
        if any(d.numel() == jpegs[1].stat().st_size for d in data):
            raise RuntimeError("nvjpeg: unsupported")
        return real(data, mode, device)

    monkeypatch.setattr(decode_mod, "_decode", refuse_second)
    data = [read_file_bytes(p) for p in jpegs]
    out = decode_jpeg_batch(data, "cpu", SIZE, paths=[str(p) for p in jpegs])
    assert torch.equal(out[1], load_image(jpegs[1], SIZE))


def test_an_unreadable_jpeg_is_returned_as_its_error(jpegs, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpegs[0].read_bytes()[:40])
    files = [jpegs[0], broken]
    out = decode_jpeg_batch(
        [read_file_bytes(p) for p in files],
        "cpu",
        SIZE,
        paths=[str(p) for p in files],
        on_error="return",
    )
    assert isinstance(out[0], torch.Tensor)
    assert isinstance(out[1], ImageLoadError) and out[1].path == str(broken)


def test_an_unreadable_jpeg_raises_naming_the_file(jpegs, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpegs[0].read_bytes()[:40])
    with pytest.raises(ImageLoadError, match=r"broken\.jpg"):
        decode_jpeg_batch([read_file_bytes(broken)], "cpu", SIZE, paths=[str(broken)])


def test_gpu_resize_rejects_pil_only_filters(jpegs):
    with pytest.raises(ValueError, match="`interpolation` must be one of 'nearest', 'bilinear'"):
        decode_jpeg_batch([read_file_bytes(jpegs[0])], "cpu", SIZE, interpolation="lanczos")


def test_orientations_of_the_wrong_length_are_an_error(jpegs):
    with pytest.raises(ValueError, match="`orientations` must have one entry per image"):
        decode_jpeg_batch([read_file_bytes(jpegs[0])], "cpu", SIZE, orientations=[1, 1])


# ---------------------------------------------------------------- check_decode
def test_unknown_decode_is_an_error():
    with pytest.raises(ValueError, match="`decode` must be 'cpu' or 'gpu'; got 'fast'"):
        check_decode("fast", "nearest", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_gpu_decode_without_cuda_is_an_error():
    with pytest.raises(
        ValueError, match=r"decode='gpu' needs CUDA; torch.cuda.is_available\(\) is False"
    ):
        check_decode("gpu", "nearest", "cpu")


# ---------------------------------------------------------------- the loader's GPU-decode path
@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory) -> Path:
    """4 JPEG cats (one EXIF-rotated, square so sizes agree) and 3 PNG dogs."""
    root = write_tree(tmp_path_factory.mktemp("mixed") / "data", {"dogs": 3}, (20, 20))
    for i in range(4):
        save_jpeg(
            root / "cats" / f"c{i}.jpg",
            seed=10 + i,
            size=(20, 20),
            orientation=6 if i == 0 else None,
        )
    return root


@pytest.fixture
def gpu_decode_on_cpu(monkeypatch):
    """Let the loader take decode='gpu' with device='cpu' (torchvision's CPU decoder)."""
    monkeypatch.setattr(loader_mod, "check_decode", lambda *args: None)


def make(root, **kwargs):
    kwargs = {
        "target_size": SIZE,
        "batch_size": 3,
        "seed": 2,
        "device": "cpu",
        "num_workers": 0,
        "progress": False,
        **kwargs,
    }
    return gpuaug.flow_from_directory(root, **kwargs)


@pytest.mark.usefixtures("gpu_decode_on_cpu")
def test_gpu_decode_path_matches_cpu_decode(mixed_tree):
    gpu = list(make(mixed_tree, decode="gpu", num_workers=2, class_mode="sparse"))
    cpu = list(make(mixed_tree, decode="cpu", class_mode="sparse"))
    assert len(gpu) == len(cpu) == 3
    for (xg, yg), (xc, yc) in zip(gpu, cpu, strict=True):
        assert torch.equal(yg, yc)
        assert (xg - xc).abs().max() <= 2


@pytest.mark.usefixtures("gpu_decode_on_cpu")
def test_gpu_decode_path_replays_exactly(mixed_tree):
    loader = make(mixed_tree, decode="gpu", augment=gpuaug.AugmentConfig(rotation_range=20))
    batches = [x for x, _ in loader]
    for step, x in enumerate(batches):
        assert torch.equal(loader.replay(0, step).x, x)


@pytest.mark.usefixtures("gpu_decode_on_cpu")
def test_gpu_decode_path_skips_a_broken_jpeg(mixed_tree, tmp_path):
    root = tmp_path / "copy"
    for src in mixed_tree.rglob("*.*"):
        dst = root / src.relative_to(mixed_tree)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    broken = root / "cats" / "c2.jpg"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) * 4 // 5])  # header fine, scan data cut
    loader = make(
        root, decode="gpu", on_error="skip", batch_size=7, shuffle=False, class_mode="sparse"
    )
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable.*c2\.jpg"):
        ((x, y),) = list(loader)
    assert len(x) == 6 and y.tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.usefixtures("gpu_decode_on_cpu")
def test_gpu_decode_path_with_a_cache(mixed_tree):
    cached = list(make(mixed_tree, decode="gpu", cache="device"))
    plain = list(make(mixed_tree, decode="gpu"))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(cached, plain, strict=True))


# ---------------------------------------------------------------- CUDA (nvJPEG)
@pytest.mark.cuda
def test_nvjpeg_batch_decode_is_close_to_the_cpu_loader(jpegs):
    out = decode_jpeg_batch([read_file_bytes(p) for p in jpegs], "cuda", SIZE, "rgb", "bilinear")
    for path, image in zip(jpegs, out, strict=True):
        ref = load_image(path, SIZE, "rgb", "bilinear")
        assert image.is_cuda and image.shape == ref.shape
        assert (image.cpu().int() - ref.int()).abs().float().mean() < 3


@pytest.mark.cuda
def test_nvjpeg_applies_exif_orientation(tmp_path):
    path = save_jpeg(tmp_path / "p.jpg", size=(20, 24), orientation=6)
    data = read_file_bytes(path)
    (image,) = decode_jpeg_batch([data], "cuda", None, orientations=[jpeg_orientation(data)])
    assert image.shape == (3, 24, 20)


@pytest.mark.cuda
def test_loader_decodes_jpegs_on_the_gpu(mixed_tree):
    loader = gpuaug.flow_from_directory(
        mixed_tree,
        target_size=SIZE,
        batch_size=3,
        seed=2,
        device="cuda",
        decode="gpu",
        num_workers=2,
        class_mode="sparse",
        interpolation="bilinear",
    )
    ref = list(make(mixed_tree, class_mode="sparse", interpolation="bilinear"))
    got = list(loader)
    for (xg, yg), (xc, yc) in zip(got, ref, strict=True):
        assert xg.is_cuda and torch.equal(yg.cpu(), yc)
        assert (xg.cpu() - xc).abs().mean() < 3
    loader.close()
