"""The loader's pixel layout (LoaderConfig.layout): RGBX batches equal planar ones in value on
every path that assembles them, are what the fused kernel reads as RGBX, and augment to the
same result on every backend.

On the CPU (``device="cpu"``, ``layout="rgbx"`` forced); the pinned ring is built by hand with a
fake event, as in test_loader_stages.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image, write_tree
from PIL import Image

import gpuaug
from gpuaug.augment.backends import triton as fused
from gpuaug.data import nvjpeg
from gpuaug.data.cache import check_device_cache_fits
from gpuaug.data.jpeg import read_file_bytes
from gpuaug.data.pixel_layout import (
    as_layout,
    empty_batch,
    interleave,
    is_rgbx,
    layout_of,
    move,
    rgbx_pixels,
    take,
)
from gpuaug.loader.config import LoaderConfig
from gpuaug.loader.gpu_loader import GPULoader
from gpuaug.loader.stages import layout as layout_stage
from gpuaug.loader.stages.cache_source import CacheSource
from gpuaug.loader.stages.layout import choose_layout
from gpuaug.loader.stages.transfer import PinnedRing, to_device
from gpuaug.loader.stages.workers import WorkerView, collate

SIZE = (10, 14)
BOOK = gpuaug.AugmentConfig(
    rotation_range=40,
    width_shift_range=0.2,
    height_shift_range=0.2,
    shear_range=0.2,
    zoom_range=0.2,
    horizontal_flip=True,
    fill_mode="nearest",
    rescale=1 / 255,
)


class FakeEvent:
    def record(self, stream=None):
        pass

    def synchronize(self):
        pass


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """11 PNGs in two classes, 18x22."""
    return write_tree(tmp_path_factory.mktemp("layout") / "data", {"a": 6, "b": 5}, (18, 22))


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory) -> Path:
    """JPEGs and PNGs side by side (decode="gpu" decodes the JPEGs, the workers the rest)."""
    root = tmp_path_factory.mktemp("mixed") / "data"
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            img = Image.fromarray(textured_image(rng, 20, 16))
            img.save(root / name / f"{i}.{'jpg' if i % 2 else 'png'}", quality=90)
    return root


def _batch(n=3, c=3, h=5, w=7, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)


def make(root, layout, **kwargs) -> GPULoader:
    kwargs = {
        "augment": BOOK,
        "target_size": SIZE,
        "batch_size": 4,
        "seed": 3,
        "num_workers": 0,
        "device": "cpu",
        "progress": False,
        **kwargs,
    }
    return gpuaug.flow_from_directory(root, layout=layout, **kwargs)


def uint8_batches(loader: GPULoader, epoch: int = 0, failures=None) -> list[torch.Tensor]:
    """The uint8 batches of ``epoch`` as the finish stage receives them (failed samples
    replaced by the loader's rule, and listed in ``failures``)."""
    failures = [] if failures is None else failures
    batches = loader._device_batches(epoch, failures)
    return [loader._complete(b, epoch, step).images for step, b in enumerate(batches)]


# ---------------------------------------------------------------- the layout helpers
def test_an_rgbx_copy_is_the_view_the_fused_kernel_reads_in_words():
    x = _batch()
    r = as_layout(x, "rgbx")
    b, _, h, w = x.shape
    assert r.stride() == (4 * h * w, 1, 4 * w, 4)
    assert fused._rgbx(r) and is_rgbx(r) and not is_rgbx(x)
    assert torch.equal(r, x)
    assert int(rgbx_pixels(r)[..., 3].max()) == 0  # the padding byte is 0, not left over


def test_interleaving_equals_torchs_strided_copy_from_any_strides():
    x = _batch(2, 3, 6, 9).permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # not planar
    out = empty_batch("rgbx", tuple(x.shape), zero_padding=False)
    rgbx_pixels(out).fill_(255)  # every byte must be written
    interleave(x, out)
    want = torch.zeros(2, 6, 9, 4, dtype=torch.uint8)
    want[..., :3] = x.permute(0, 2, 3, 1)
    assert torch.equal(rgbx_pixels(out), want)


def test_take_keeps_the_layout_and_the_values():
    x = _batch(5)
    r = as_layout(x, "rgbx")
    idx = torch.tensor([4, 0, 2])
    got = take(r, idx)
    assert is_rgbx(got) and torch.equal(got, x[idx])
    out = empty_batch("rgbx", (3, 3, 5, 7))
    assert take(r, idx, out=out).data_ptr() == out.data_ptr() and torch.equal(out, x[idx])
    assert layout_of(take(x, idx)) == "planar" and torch.equal(take(x, idx), x[idx])


def test_a_plain_index_select_of_an_rgbx_batch_would_lose_the_layout():
    # Why take() exists: torch returns a dense tensor, not the strided view.
    r = as_layout(_batch(4), "rgbx")
    assert not is_rgbx(r.index_select(0, torch.tensor([1, 2])))


def test_moving_an_rgbx_batch_to_its_own_device_keeps_it():
    r = as_layout(_batch(), "rgbx")
    assert move(r, "cpu").data_ptr() == r.data_ptr()


def test_a_row_slice_of_an_rgbx_batch_is_still_rgbx():
    r = as_layout(_batch(4), "rgbx")
    assert (
        is_rgbx(r[1:3])
        and is_rgbx(r[2:3])
        and torch.equal(rgbx_pixels(r[1:3])[0], rgbx_pixels(r)[1])
    )


def test_rgbx_holds_three_channels():
    with pytest.raises(ValueError, match="an RGBX batch has 3 channels; got shape"):
        empty_batch("rgbx", (2, 4, 3, 3))
    with pytest.raises(ValueError, match="`layout` must be one of 'planar', 'rgbx'; got 'hwc'"):
        empty_batch("hwc", (2, 3, 3, 3))


def test_the_buffer_of_a_planar_batch_is_refused():
    with pytest.raises(ValueError, match="`images` must be an RGBX batch"):
        rgbx_pixels(_batch())


# ---------------------------------------------------------------- choosing the layout
def _triton_here(monkeypatch):
    monkeypatch.setattr(layout_stage, "resolve_backend", lambda backend, device, dtype: "triton")


def _dataset(tree, **kwargs):
    return gpuaug.DirectoryDataset(tree, target_size=SIZE, **kwargs)


def test_auto_is_rgbx_where_the_fused_kernel_reads_the_batch_on_cuda(tree, monkeypatch):
    _triton_here(monkeypatch)
    aug = gpuaug.GPUAugment(BOOK)
    for cache in (None, "host", "device"):
        got = choose_layout("auto", aug, _dataset(tree), torch.device("cuda"), cache)
        assert got.layout == "rgbx" and "one 32-bit load per tap" in got.reason


def test_auto_is_planar_for_a_recipe_loader_even_under_the_kernel(tree, monkeypatch):
    """A recipe's crop reads the batch, not the fused kernel: RGBX would only cost bytes."""
    _triton_here(monkeypatch)
    aug = gpuaug.GPUAugment(None)  # the loader's module beside a recipe: a float conversion
    got = choose_layout("auto", aug, _dataset(tree), torch.device("cuda"), None, recipe=True)
    assert got.layout == "planar" and "the recipe" in got.reason
    assert choose_layout("auto", aug, _dataset(tree), torch.device("cuda"), None).layout == "rgbx"
    forced = choose_layout("rgbx", aug, _dataset(tree), torch.device("cuda"), None, recipe=True)
    assert forced.layout == "rgbx"


def test_auto_is_planar_on_the_cpu(tree):
    got = choose_layout("auto", gpuaug.GPUAugment(BOOK), _dataset(tree), torch.device("cpu"), None)
    assert got.layout == "planar" and "'reference' backend" in got.reason


def test_auto_is_planar_for_other_channel_counts_even_under_the_kernel(tree, monkeypatch):
    _triton_here(monkeypatch)
    for mode, channels in (("grayscale", 1), ("rgba", 4)):
        ds = _dataset(tree, color_mode=mode)
        got = choose_layout("auto", gpuaug.GPUAugment(BOOK), ds, torch.device("cuda"), None)
        assert got.layout == "planar" and f"{channels} channel(s)" in got.reason


def test_auto_keeps_a_disk_cache_planar(tree, monkeypatch):
    _triton_here(monkeypatch)
    got = choose_layout(
        "auto", gpuaug.GPUAugment(BOOK), _dataset(tree), torch.device("cuda"), "disk"
    )
    assert got.layout == "planar" and "disk cache" in got.reason


def test_auto_keeps_float_arrays_planar(monkeypatch):
    _triton_here(monkeypatch)
    x = np.zeros((4, 6, 5, 3), dtype=np.float32)
    ds = gpuaug.ImageDataGenerator().flow(x, np.arange(4), device="cpu").dataset
    got = choose_layout("auto", gpuaug.GPUAugment(BOOK), ds, torch.device("cuda"), "device")
    assert got.layout == "planar" and "float32, not uint8" in got.reason


def test_auto_is_planar_for_another_backend_on_cuda(tree, monkeypatch):
    monkeypatch.setattr(layout_stage, "resolve_backend", lambda backend, device, dtype: "reference")
    got = choose_layout("auto", gpuaug.GPUAugment(BOOK), _dataset(tree), torch.device("cuda"), None)
    assert got.layout == "planar"


def test_rgbx_for_grayscale_images_is_refused_naming_the_argument(tree):
    with pytest.raises(
        ValueError, match=r"`layout`='rgbx' needs 3-channel uint8 images of one size; got 1 ch"
    ):
        make(tree, "rgbx", color_mode="grayscale")


def test_an_unknown_layout_is_refused():
    with pytest.raises(
        ValueError, match="`layout` must be one of 'auto', 'planar', 'rgbx'; got 'hwc'"
    ):
        LoaderConfig(layout="hwc")


def test_the_layout_round_trips_through_the_config_dict():
    config = LoaderConfig(layout="rgbx")
    assert LoaderConfig.from_dict(config.to_dict()) == config


def test_describe_says_which_layout_and_why(tree):
    text = make(tree, "rgbx").describe()
    assert "uint8 batches 'rgbx': RGB + a padding byte per pixel" in text
    assert "layout='rgbx' was asked for" in text
    text = make(tree, "auto").describe()
    assert "uint8 batches 'planar': (B, C, H, W) contiguous; the 'reference' backend" in text


# ---------------------------------------------------------------- every source, in value
@pytest.mark.parametrize(
    ("cache", "num_workers"),
    [(None, 0), (None, 2), ("host", 0), ("host", 2), ("device", 0), ("disk", 0)],
)
def test_rgbx_batches_equal_the_planar_ones_on_every_source(tree, tmp_path, cache, num_workers):
    kw = {"cache": cache, "cache_dir": tmp_path, "num_workers": num_workers}
    planar, rgbx = make(tree, "planar", **kw), make(tree, "rgbx", **kw)
    assert (planar.layout, rgbx.layout) == ("planar", "rgbx")
    want, got = uint8_batches(planar), uint8_batches(rgbx)
    assert len(got) == len(want) == len(planar)
    for a, b in zip(got, want, strict=True):
        assert fused._rgbx(a) and not fused._rgbx(b)
        assert torch.equal(a, b)
    xs = [x for x, _ in rgbx]
    assert all(torch.equal(x, y) for x, (y, _) in zip(xs, planar, strict=True))


@pytest.mark.parametrize("kind", ["host", "disk"])
def test_a_cache_in_rgbx_gathers_whole_pixels_into_the_pinned_ring(tree, tmp_path, kind):
    planar = make(tree, "planar", cache=kind, cache_dir=tmp_path)
    rgbx = make(tree, "rgbx", cache=kind, cache_dir=tmp_path)
    assert (
        rgbx.cache.layout == "rgbx" and rgbx.cache.nbytes == len(rgbx.cache) * 4 * SIZE[0] * SIZE[1]
    )
    source = CacheSource(rgbx.cache, rgbx.sampler, torch.device("cpu"), torch.arange(11), "shrink",
                         layout="rgbx")  # fmt: skip
    source.ring = PinnedRing(torch.device("cpu"), size=1, pin=False, event_factory=FakeEvent)
    for k in range(len(planar)):
        got = source.host_batch(k).images
        assert is_rgbx(got) and got.data_ptr() == source.ring.buffers[0].data_ptr()
        assert torch.equal(got, planar._cache_source.host_batch(k).images)


def test_an_in_memory_array_kept_planar_is_interleaved_into_the_ring():
    x = np.random.default_rng(0).integers(0, 256, (9, 6, 5, 3), dtype=np.uint8)
    loader = gpuaug.ImageDataGenerator().flow(x, np.arange(9), batch_size=4, device="cpu")
    source = CacheSource(loader.cache, loader.sampler, torch.device("cpu"), torch.arange(9),
                         "shrink", layout="rgbx")  # fmt: skip
    assert loader.cache.layout == "planar"
    source.ring = PinnedRing(torch.device("cpu"), pin=False, event_factory=FakeEvent)
    for k in range(len(loader)):
        got = source.host_batch(k)
        assert is_rgbx(got.images)
        want = torch.from_numpy(x).permute(0, 3, 1, 2)[got.indices]
        assert torch.equal(got.images, want)


def test_an_in_memory_arrays_device_cache_is_made_in_rgbx():
    x = np.random.default_rng(0).integers(0, 256, (9, 6, 5, 3), dtype=np.uint8)
    ds = gpuaug.ImageDataGenerator().flow(x, np.arange(9), device="cpu").dataset
    cache = ds.as_cache("device", torch.device("cpu"), "rgbx")
    assert cache.layout == "rgbx" and is_rgbx(cache.images)
    assert torch.equal(cache.images, torch.from_numpy(x).permute(0, 3, 1, 2))
    assert is_rgbx(cache.take(torch.tensor([3, 1])))


def test_a_device_cache_in_rgbx_is_checked_at_four_bytes_per_pixel(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3.5 * 2**30, 16 * 2**30))
    check_device_cache_fits((1000, 3, 1000, 1000), "cuda:0")  # 2.79 GiB planar: fits
    with pytest.raises(ValueError, match=r"needs 3\.73 GiB for 1000 images of 3x1000x1000 uint8 "
                       r"\(rgbx: 4 bytes per pixel\)"):  # fmt: skip
        check_device_cache_fits((1000, 3, 1000, 1000), "cuda:0", "rgbx")


def test_a_planar_and_an_rgbx_disk_cache_are_two_files(tree, tmp_path):
    make(tree, "planar", cache="disk", cache_dir=tmp_path)
    first = make(tree, "rgbx", cache="disk", cache_dir=tmp_path)
    assert first.cache.built and len(list(tmp_path.glob("*.u8"))) == 2
    again = make(tree, "rgbx", cache="disk", cache_dir=tmp_path)
    assert not again.cache.built and again.cache.layout == "rgbx"
    assert again.cache.path.stat().st_size == len(again.cache) * SIZE[0] * SIZE[1] * 4
    assert torch.equal(torch.from_numpy(np.ascontiguousarray(again.cache.images)),
                       make(tree, "planar", cache="disk", cache_dir=tmp_path).cache.take(
                           torch.arange(11)))  # fmt: skip
    again.cache.verify()  # the checksums cover the stored rows


def test_the_workers_collate_assembles_rgbx_in_shared_layout(tree):
    view = WorkerView(_dataset(tree), "cpu")
    items = [view[i] for i in (3, 0, 7)]
    planar, rgbx = collate(items), collate(items, layout="rgbx")
    assert is_rgbx(rgbx.images) and torch.equal(rgbx.images, planar.images)


# ---------------------------------------------------------------- decode="gpu" (CPU decoder)
def test_decoded_jpegs_come_out_in_rgbx_equal_to_planar(mixed_tree):
    ds = gpuaug.DirectoryDataset(mixed_tree, target_size=SIZE, interpolation="bilinear")
    view = WorkerView(ds, "gpu")
    items = [view[i] for i in range(len(ds))]
    targets = torch.as_tensor(ds.targets)
    cpu = torch.device("cpu")
    planar, _ = to_device(collate(items), ds, targets, cpu, layout="planar")
    raw = collate(items, layout="rgbx")
    assert raw.num_jpegs == 4 and raw.images is not None  # a mixed batch: the merge path
    rgbx, _ = to_device(raw, ds, targets, cpu, layout="rgbx")
    assert is_rgbx(rgbx.images) and torch.equal(rgbx.images, planar.images)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_gpu_decode_loader_hands_rgbx_batches_equal_to_planar(
    mixed_tree, monkeypatch, num_workers
):
    # decode="gpu" on the CPU (torchvision's CPU decoder), as tests/test_sync_check.py runs it
    import gpuaug.loader.gpu_loader as loader_mod

    monkeypatch.setattr(loader_mod, "check_decode", lambda *args, **kwargs: None)
    kw = {"decode": "gpu", "interpolation": "bilinear", "num_workers": num_workers}
    planar, rgbx = make(mixed_tree, "planar", **kw), make(mixed_tree, "rgbx", **kw)
    assert rgbx._jpeg_decoder.layout == "rgbx"
    for a, b in zip(uint8_batches(rgbx), uint8_batches(planar), strict=True):
        assert fused._rgbx(a) and torch.equal(a, b)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(rgbx, planar, strict=True))
    rgbx.close()
    planar.close()


def test_the_decoder_thread_decodes_into_rgbx(mixed_tree):
    paths = sorted(str(p) for p in Path(mixed_tree).rglob("*.jpg"))
    data = [read_file_bytes(p) for p in paths]
    want = nvjpeg.decode_jpegs(data, "cpu", SIZE, "rgb", "bilinear").images
    with nvjpeg.JpegDecoder("cpu", SIZE, "rgb", "bilinear", layout="rgbx") as decoder:
        got = decoder.submit(data).result().images
    assert is_rgbx(got) and torch.equal(got, want)


def test_rgbx_decoding_needs_rgb():
    with pytest.raises(ValueError, match="`layout`='rgbx' needs color_mode='rgb'; got 'grayscale'"):
        nvjpeg.JpegDecoder("cpu", SIZE, "grayscale", layout="rgbx")


# ---------------------------------------------------------------- epochs, resume, replay
def test_epochs_resume_and_replay_are_unchanged_in_rgbx(tree):
    planar, rgbx = make(tree, "planar", steps_per_epoch=2), make(tree, "rgbx", steps_per_epoch=2)
    for _ in range(2):  # epochs 0 and 1: passes continue across the boundary
        for (a, ya), (b, yb) in zip(rgbx, planar, strict=True):
            assert torch.equal(a, b) and torch.equal(ya, yb)
    assert rgbx.epoch == planar.epoch == 2
    it = iter(rgbx)
    next(it)
    state = rgbx.state_dict()
    it.close()
    resumed = make(tree, "rgbx", steps_per_epoch=2)
    resumed.load_state_dict(state)
    first = next(iter(resumed))[0]
    assert torch.equal(first, planar.replay(2, 1).x)
    r = rgbx.replay(2, 1)
    assert torch.equal(r.x, first) and torch.equal(r.indices, planar.replay(2, 1).indices)


@pytest.mark.parametrize("batch_size", [2, 4])  # a whole batch failed; part of one
def test_failed_files_are_replaced_in_the_batchs_layout(tmp_path, batch_size):
    # The "replace" rule of rank 0 of 2 (no process group needed): its shard is [0, 2, 4, 6].
    root = write_tree(tmp_path / "bad", {"a": 4, "b": 4}, (18, 22))
    for name in ("img_000.png", "img_002.png"):
        path = root / "a" / name
        path.write_bytes(path.read_bytes()[:60])  # truncated: fails when decoded
    ds = gpuaug.DirectoryDataset(root, target_size=SIZE, on_error="skip")
    batches = {}
    for layout in ("planar", "rgbx"):
        config = LoaderConfig(batch_size=batch_size, shuffle=False, num_workers=0,
                              num_replicas=2, rank=0, device="cpu", layout=layout)  # fmt: skip
        failures: list = []
        batches[layout] = uint8_batches(GPULoader(ds, config=config), failures=failures)
        assert sorted(i for i, _ in failures) == [0, 2]
    assert [len(b) for b in batches["rgbx"]] == [batch_size] * (4 // batch_size)
    for a, b in zip(batches["rgbx"], batches["planar"], strict=True):
        assert is_rgbx(a) and torch.equal(a, b)


# ---------------------------------------------------------------- augmenting an RGBX batch
@pytest.mark.parametrize("backend", ["reference", "chunked", "triton", "opencv"])
def test_augmenting_an_rgbx_batch_gives_the_planar_result(backend):
    if backend == "opencv":
        pytest.importorskip("cv2")
    x = (
        torch.from_numpy(
            np.stack([textured_image(np.random.default_rng(i), 12, 15) for i in range(4)])
        )
        .permute(0, 3, 1, 2)
        .contiguous()
    )
    r = as_layout(x, "rgbx")
    aug = gpuaug.GPUAugment(BOOK, backend=backend)
    draws = gpuaug.sample_draws(4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(aug(r, params=draws), aug(x, params=draws))


def test_the_loader_feeds_the_fused_kernel_rgbx_words(tree, monkeypatch):
    # Under TRITON_INTERPRET (see conftest) the loader's RGBX batch takes the kernel's 32-bit
    # load path and gives what the planar batch gives.
    seen = []
    real = fused._launch

    def spy(kernel, grid, **kw):
        if kernel is fused._augment_kernel:
            seen.append(kw["WORDS"])
        return real(kernel, grid, **kw)

    monkeypatch.setattr(fused, "_launch", spy)
    rgbx = make(tree, "rgbx", augment=gpuaug.GPUAugment(BOOK, backend="triton"), batch_size=6)
    got = [x for x, _ in rgbx]
    words, seen[:] = list(seen), []
    planar = make(tree, "planar", augment=gpuaug.GPUAugment(BOOK, backend="triton"), batch_size=6)
    want = [x for x, _ in planar]
    assert words == [True] * len(got) and seen == [False] * len(want)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.cuda
def test_on_cuda_auto_assembles_rgbx_and_pins_the_whole_buffer(tree):
    planar = make(tree, "planar", device="cuda", num_workers=2)
    auto = make(tree, "auto", device="cuda", num_workers=2)
    assert auto.layout == "rgbx"
    for a, b in zip(uint8_batches(auto), uint8_batches(planar), strict=True):
        assert fused._rgbx(a) and torch.equal(a, b)
    for cache in ("host", "device"):
        c = make(tree, "auto", device="cuda", cache=cache)
        for a, b in zip(uint8_batches(c), uint8_batches(planar), strict=True):
            assert fused._rgbx(a) and torch.equal(a, b)


def test_rgbx_asked_for_where_the_kernel_does_not_read_it_says_so(tree):
    loader = make(tree, "rgbx")  # the reference backend on the CPU
    assert loader.layout == "rgbx"
    assert loader.layout_reason.startswith("layout='rgbx' was asked for, with no gain here")
    assert "'reference' backend augments on cpu" in loader.layout_reason
    assert "no gain here" in loader.describe()
