"""decode="gpu": file bytes in workers, batched JPEG decode + resize on the device.

Without CUDA the decode functions run on the CPU (torchvision's libjpeg-turbo decoder), which
tests their plumbing; the loader refuses decode="gpu" without CUDA, so its GPU-decode path is
tested here on the CPU with that check switched off. nvJPEG itself needs the cuda tests.
"""

from __future__ import annotations

import io
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image, write_tree
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

import gpuaug
import gpuaug.data.jpeg as jpeg_mod
import gpuaug.data.nvjpeg as decode_mod
import gpuaug.loader.gpu_loader as loader_mod
from gpuaug.data.image import ImageLoadError, load_image
from gpuaug.data.jpeg import (
    inspect_jpeg,
    is_jpeg,
    jpeg_orientation,
    jpeg_problem,
    read_file_bytes,
    read_gpu_jpeg,
)
from gpuaug.data.nvjpeg import (
    JpegDecoder,
    apply_orientation,
    check_decode,
    decode_jpeg_batch,
    decode_jpegs,
)

SIZE = (16, 16)

# torchvision 0.29 deprecates its image decoders (gpuaug.data.nvjpeg still uses them)
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities")


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


# ---------------------------------------------------------------- worker-side JPEG check
def jpeg_bytes(progressive: bool = False, size=(40, 48), mode: str = "RGB", seed: int = 0) -> bytes:
    img = Image.fromarray(textured_image(np.random.default_rng(seed), *size)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, progressive=progressive)
    return buf.getvalue()


def pil_refuses(path: Path) -> bool:
    try:
        load_image(path, SIZE)
    except ImageLoadError:
        return True
    return False


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_problem_flags_exactly_the_truncations_pil_refuses(tmp_path, progressive):
    data = jpeg_bytes(progressive)
    cuts = [len(data), len(data) - 1, len(data) - 2, len(data) - 10, len(data) // 2, 400, 30]
    for n in cuts:
        path = tmp_path / f"cut{n}.jpg"
        path.write_bytes(data[:n])
        assert (jpeg_problem(path.read_bytes()) is not None) == pil_refuses(path), n
    assert (
        jpeg_problem(data[:-2]) == "truncated: no end-of-image marker (FF D9) after the image data"
    )


def test_jpeg_problem_accepts_trailing_bytes_after_the_end_marker(tmp_path):
    path = tmp_path / "trailer.jpg"
    path.write_bytes(jpeg_bytes() + b"camera trailer")
    assert jpeg_problem(path.read_bytes()) is None and not pil_refuses(path)


def test_jpeg_problem_follows_pils_load_truncated_images(monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert jpeg_problem(jpeg_bytes()[:-100]) is None


def test_jpeg_problem_flags_garbage_after_the_start_marker():
    assert "corrupt JPEG header" in jpeg_problem(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)


def test_inspect_jpeg_sends_cmyk_to_the_cpu_and_progressive_to_the_gpu():
    cmyk = inspect_jpeg(jpeg_bytes(mode="CMYK"))
    progressive = inspect_jpeg(jpeg_bytes(progressive=True))
    assert cmyk.problem is None and not cmyk.gpu
    assert progressive.problem is None and progressive.gpu
    assert (progressive.height_px, progressive.width_px) == (40, 48)


@pytest.mark.parametrize("limit", [100, 1000])  # PIL's own error (> 2x), gpuaug's (> 1x)
def test_inspect_jpeg_refuses_a_decompression_bomb_like_open_image(tmp_path, monkeypatch, limit):
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes())  # 1920 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    assert "decompression bomb" in inspect_jpeg(path.read_bytes()).problem
    assert pil_refuses(path)


def test_read_gpu_jpeg_routes_each_file(tmp_path):
    (tmp_path / "ok.jpg").write_bytes(jpeg_bytes())
    (tmp_path / "cut.jpg").write_bytes(jpeg_bytes()[:-50])
    (tmp_path / "cmyk.jpg").write_bytes(jpeg_bytes(mode="CMYK"))
    Image.new("RGB", (8, 8)).save(tmp_path / "png.jpg", format="PNG")
    data, info = read_gpu_jpeg(tmp_path / "ok.jpg")
    assert data.numpy().tobytes() == (tmp_path / "ok.jpg").read_bytes() and info.gpu
    assert read_gpu_jpeg(tmp_path / "cmyk.jpg") is None
    assert read_gpu_jpeg(tmp_path / "png.jpg") is None
    with pytest.raises(ImageLoadError, match=r"cut\.jpg.*end-of-image marker"):
        read_gpu_jpeg(tmp_path / "cut.jpg")


# ---------------------------------------------------------------- decode_jpegs with a fake nvJPEG
class FakeNvjpeg:
    """Stands in for ``decode_jpeg(list, device="cuda")``: torchvision's CPU decoder, plus
    what the tests watch (calls, images per call, images still alive from earlier calls)."""

    def __init__(self, refuse: set[int] = frozenset(), oom: BaseException | None = None):
        self.refuse, self.oom = refuse, oom  # refuse: byte lengths of files to fail on
        self.calls: list[int] = []
        self.alive_at_call: list[int] = []
        self._refs: list = []

    def __call__(self, data, mode, device):
        self.alive_at_call.append(sum(ref() is not None for ref in self._refs))
        self.calls.append(len(data))
        if self.oom is not None:
            raise self.oom
        if any(d.numel() in self.refuse for d in data):
            raise RuntimeError("Error while decoding JPEG images: Failed to decode batch: 7")
        out = [decode_jpeg(d, mode=mode) for d in data]
        self._refs += [weakref.ref(t) for t in out]
        return out


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    """8 JPEGs of 40 x 48 = 1920 pixels, distinct byte lengths."""
    paths = []
    for i in range(8):
        path = tmp_path / f"p{i}.jpg"
        path.write_bytes(jpeg_bytes(seed=i, size=(40, 48)))
        paths.append(path)
    assert len({p.stat().st_size for p in paths}) == 8
    return paths


def test_pixel_budget_cuts_the_batch_into_chunks(photos, monkeypatch):
    fake = FakeNvjpeg()
    monkeypatch.setattr(decode_mod, "_decode", fake)
    out = decode_jpegs([read_file_bytes(p) for p in photos], "cpu", SIZE, pixel_budget=3 * 1920)
    assert fake.calls == [3, 3, 2]
    assert out.images.shape == (8, 3, *SIZE) and out.failed == ()


def test_full_resolution_images_are_freed_before_the_next_chunk(photos, monkeypatch):
    fake = FakeNvjpeg()
    monkeypatch.setattr(decode_mod, "_decode", fake)
    decode_jpegs([read_file_bytes(p) for p in photos], "cpu", SIZE, pixel_budget=2 * 1920)
    assert fake.alive_at_call == [0, 0, 0, 0]


def test_an_image_over_the_budget_is_decoded_alone(photos, monkeypatch):
    fake = FakeNvjpeg()
    monkeypatch.setattr(decode_mod, "_decode", fake)
    decode_jpegs([read_file_bytes(p) for p in photos[:3]], "cpu", SIZE, pixel_budget=100)
    assert fake.calls == [1, 1, 1]


def test_same_size_photos_are_resized_in_one_call_per_orientation(photos, monkeypatch):
    calls = []
    real = decode_mod._resize
    monkeypatch.setattr(decode_mod, "_resize", lambda x, *a: calls.append(len(x)) or real(x, *a))
    data = [read_file_bytes(p) for p in photos]
    decode_jpegs(data, "cpu", SIZE)
    assert calls == [8]
    calls.clear()
    out = decode_jpegs(data, "cpu", SIZE, "rgb", "bilinear", orientations=[1, 6] * 4)
    assert sorted(calls) == [4, 4]
    for i in (0, 1):  # rows land in input order, upright
        (ref,) = decode_jpeg_batch(
            [data[i]], "cpu", SIZE, "rgb", "bilinear", orientations=[1 + 5 * i]
        )
        assert torch.equal(out.images[i], ref)


def test_a_failing_image_is_found_by_bisection_not_one_by_one(photos, monkeypatch):
    fake = FakeNvjpeg(refuse={photos[5].stat().st_size})
    monkeypatch.setattr(decode_mod, "_decode", fake)
    out = decode_jpegs(
        [read_file_bytes(p) for p in photos], "cpu", SIZE, paths=list(map(str, photos))
    )
    assert len(fake.calls) <= 1 + 2 * 3 and fake.calls[0] == 8
    assert out.failed == ()
    assert torch.equal(out.images[5], load_image(photos[5], SIZE))  # the CPU fallback


def test_a_refused_image_no_cpu_can_read_is_a_failure(photos, tmp_path, monkeypatch):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos[0].read_bytes()[:300])
    files = [photos[0], broken, photos[1]]
    monkeypatch.setattr(decode_mod, "_decode", FakeNvjpeg(refuse={300}))
    out = decode_jpegs(
        [read_file_bytes(p) for p in files], "cpu", SIZE, paths=list(map(str, files))
    )
    ((pos, err),) = out.failed
    assert pos == 1 and err.path == str(broken)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB"),
        RuntimeError("Error while decoding JPEG images: CUDA out of memory. Tried to allocate"),
    ],
)
def test_out_of_memory_is_re_raised_with_what_to_change(photos, monkeypatch, error):
    fake = FakeNvjpeg(oom=error)
    monkeypatch.setattr(decode_mod, "_decode", fake)
    with pytest.raises(torch.OutOfMemoryError, match=r"pixel_budget.*batch_size.*decode='cpu'"):
        decode_jpegs(
            [read_file_bytes(p) for p in photos], "cpu", SIZE, paths=list(map(str, photos))
        )
    assert fake.calls == [8]  # not retried image by image


def test_bad_pixel_budget_is_an_error(photos):
    with pytest.raises(ValueError, match="`pixel_budget` must be a positive int"):
        decode_jpegs([read_file_bytes(photos[0])], "cpu", SIZE, pixel_budget=0)


def test_jpeg_decoder_returns_before_the_decode_is_done(photos, monkeypatch):
    release = threading.Event()
    real = decode_mod._decode

    def slow(data, mode, device):
        release.wait(10)
        return real(data, mode, device)

    monkeypatch.setattr(decode_mod, "_decode", slow)
    data = [read_file_bytes(p) for p in photos]
    with JpegDecoder("cpu", SIZE, "rgb", "bilinear") as decoder:
        job = decoder.submit(data)
        assert not job.done()
        release.set()
        got = job.result()
    ref = decode_jpegs(data, "cpu", SIZE, "rgb", "bilinear")
    assert torch.equal(got.images, ref.images)


def test_jpeg_decoder_raises_the_decode_error_from_result(photos, monkeypatch):
    monkeypatch.setattr(
        decode_mod, "_decode", FakeNvjpeg(oom=torch.OutOfMemoryError("out of memory"))
    )
    with JpegDecoder("cpu", SIZE) as decoder:
        job = decoder.submit([read_file_bytes(photos[0])])
        with pytest.raises(torch.OutOfMemoryError, match="pixel_budget"):
            job.result()


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
    monkeypatch.setattr(loader_mod, "check_decode", lambda *args, **kwargs: None)


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


def hardware_like_decoder(data, mode, device):
    """Like nvJPEG's hardware path: never fails on data it can size, grey where data is missing."""
    out = []
    for d in data:
        try:
            out.append(decode_jpeg(d, mode=mode))
        except RuntimeError:
            frame = jpeg_mod._walk_jpeg(d.numpy().tobytes())
            if isinstance(frame, str):
                raise RuntimeError("Failed to get image info: 2") from None
            channels = 1 if mode == ImageReadMode.GRAY else 3
            out.append(
                torch.full((channels, frame.height_px, frame.width_px), 128, dtype=torch.uint8)
            )
    return out


@pytest.mark.usefixtures("gpu_decode_on_cpu")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_gpu_and_cpu_decode_skip_the_same_files(tmp_path, monkeypatch, num_workers):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    good = jpeg_bytes(size=(20, 20))
    (root / "a" / "good.jpg").write_bytes(good)
    (root / "a" / "truncated.jpg").write_bytes(good[: len(good) * 3 // 4])
    (root / "a" / "garbage.jpg").write_bytes(np.random.default_rng(0).bytes(600))
    (root / "a" / "garbage-soi.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(600))
    (root / "a" / "cmyk.jpg").write_bytes(jpeg_bytes(size=(20, 20), mode="CMYK"))
    monkeypatch.setattr(decode_mod, "_decode", hardware_like_decoder)
    skipped, batches = {}, {}
    for decode in ("cpu", "gpu"):
        with pytest.warns(UserWarning, match="Skipped 2 unreadable"):  # index: no header
            loader = make(
                root,
                decode=decode,
                on_error="skip",
                batch_size=5,
                shuffle=False,
                num_workers=num_workers,
            )
        with pytest.warns(UserWarning, match="Skipped 1 unreadable"):  # epoch: truncated data
            batches[decode] = [x for x, _ in loader]
        found = [p for p, _ in loader.dataset.skipped] + [p for p, _ in loader.last_skipped]
        skipped[decode] = sorted(Path(p).name for p in found)
    assert skipped["gpu"] == skipped["cpu"] == ["garbage-soi.jpg", "garbage.jpg", "truncated.jpg"]
    ((xg,),), ((xc,),) = [batches["gpu"]], [batches["cpu"]]
    assert xg.shape == xc.shape == (2, 3, *SIZE) and (xg - xc).abs().max() <= 2


@pytest.mark.usefixtures("gpu_decode_on_cpu")
def test_loader_decodes_on_the_decoder_thread_two_batches_ahead(tmp_path, monkeypatch):
    for i in range(8):
        save_jpeg(tmp_path / "data" / "a" / f"{i}.jpg", seed=i)
    threads, submitted = [], []
    real_decode, real_submit = decode_mod._decode, decode_mod.JpegDecoder.submit

    def spy_decode(data, mode, device):
        threads.append(threading.current_thread().name)
        return real_decode(data, mode, device)

    def spy_submit(self, *args, **kwargs):
        submitted.append(len(args[0]))
        return real_submit(self, *args, **kwargs)

    monkeypatch.setattr(decode_mod, "_decode", spy_decode)
    monkeypatch.setattr(decode_mod.JpegDecoder, "submit", spy_submit)
    loader = make(tmp_path / "data", decode="gpu", batch_size=2, class_mode="sparse")
    seen_at_first = None
    for _ in loader:
        seen_at_first = len(submitted) if seen_at_first is None else seen_at_first
    loader.close()
    assert seen_at_first == 3  # batches 0, 1 and 2 submitted before batch 0 is handed out
    assert threads and all(name.startswith("gpuaug-nvjpeg") for name in threads)


def test_decode_ahead_submits_one_batch_early_and_keeps_errors_in_order():
    from gpuaug.loader.stages.batch import HostBatch
    from gpuaug.loader.stages.jpeg_decode import decode_ahead

    class Decoder:
        submitted = []

        def submit(self, data, orientations, paths):
            self.submitted.append(paths[0])
            return paths[0]

    class Dataset:
        samples = [(f"f{i}.jpg", 0) for i in range(3)]

    def source():
        for i in range(3):
            yield HostBatch(
                torch.tensor([i]),
                None,
                [],
                jpeg_data=torch.zeros(1, dtype=torch.uint8),
                jpeg_offsets=torch.tensor([0, 1]),
                jpeg_pos=[0],
                orient=[1],
            )
        raise RuntimeError("worker died")

    got = decode_ahead(source(), Decoder(), Dataset())
    first = next(got)
    assert first.decode_job == "f0.jpg" and Decoder.submitted == ["f0.jpg", "f1.jpg"]
    assert [b.decode_job for b in (next(got), next(got))] == ["f1.jpg", "f2.jpg"]
    with pytest.raises(RuntimeError, match="worker died"):
        next(got)


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


@pytest.mark.cuda
def test_nvjpeg_chunks_give_the_same_pixels_as_one_call(tmp_path):
    """256 photos of 1 MP in chunks of ~8: a chunk's nvJPEG writes racing the previous chunk's
    resize (buffers recycled on the stream) would change pixels; memory stays bounded."""
    encoded = [jpeg_bytes(seed=i, size=(800, 1280)) for i in range(16)]
    data = [torch.frombuffer(bytearray(encoded[i % 16]), dtype=torch.uint8) for i in range(256)]
    turns = [1, 6, 3, 8] * 64
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    small = decode_jpegs(
        data, "cuda", (224, 224), "rgb", "bilinear", orientations=turns, pixel_budget=8_192_000
    )
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    one = decode_jpegs(
        data, "cuda", (224, 224), "rgb", "bilinear", orientations=turns, pixel_budget=10**10
    )
    assert torch.equal(small.images, one.images)
    # 8 MP decoded (24 MB) + its float32 resize copy (~100 MB) + output; not 256 MP (0.8 GB)
    assert peak < 300 * 2**20, peak


@pytest.mark.cuda
def test_jpeg_decoder_overlaps_and_matches_the_synchronous_decode(photos):
    data = [read_file_bytes(p) for p in photos]
    with JpegDecoder("cuda", SIZE, "rgb", "bilinear") as decoder:
        jobs = [decoder.submit(data) for _ in range(3)]
        got = [job.result() for job in jobs]
    ref = decode_jpegs(data, "cuda", SIZE, "rgb", "bilinear")
    assert all(torch.equal(g.images, ref.images) for g in got)


def test_leaving_decode_ahead_early_drops_the_decodes_read_ahead():
    from gpuaug.loader.stages.batch import HostBatch
    from gpuaug.loader.stages.jpeg_decode import decode_ahead

    class Job:
        def __init__(self, log, name):
            self.log, self.name = log, name

        def cancel(self):
            self.log.append(("cancel", self.name))

    class Decoder:
        log: list = []

        def submit(self, data, orientations, paths):
            return Job(self.log, paths[0])

    class Dataset:
        samples = [(f"f{i}.jpg", 0) for i in range(4)]

    closed = []

    def source():
        try:
            for i in range(4):
                yield HostBatch(
                    torch.tensor([i]),
                    None,
                    [],
                    jpeg_data=torch.zeros(1, dtype=torch.uint8),
                    jpeg_offsets=torch.tensor([0, 1]),
                    jpeg_pos=[0],
                    orient=[1],
                )
        finally:
            closed.append(True)

    got = decode_ahead(source(), Decoder(), Dataset())
    assert next(got).decode_job.name == "f0.jpg"  # f1 was read and submitted ahead
    got.close()  # a break / a peek
    assert closed == [True] and Decoder.log == [("cancel", "f1.jpg")]


_DECODE_UNDER_W_ERROR = """
import io, warnings
import torch
from PIL import Image
import gpuaug.data.nvjpeg as nv
buf = io.BytesIO()
Image.new("RGB", (12, 10), (200, 30, 40)).save(buf, format="JPEG")
data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
(image,) = nv.decode_jpeg_batch([data], "cpu", (8, 8))
print("with the filter:", tuple(image.shape))
# negative control: the same call with the warning as torchvision gives it
warnings.filters[:] = [f for f in warnings.filters if "TorchVision" not in str(f[1])]
try:
    nv.decode_jpeg_batch([data], "cpu", (8, 8))
except DeprecationWarning as err:
    print("without it:", type(err).__name__)
"""


def test_torchvisions_decoder_deprecation_does_not_reach_the_user():
    """torchvision 0.29 warns on every decode_jpeg call; under ``-W error`` that warning
    would fail the decode. gpuaug ignores that one message (and only it)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", _DECODE_UNDER_W_ERROR],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines == ["with the filter: (3, 8, 8)", "without it: DeprecationWarning"], lines
