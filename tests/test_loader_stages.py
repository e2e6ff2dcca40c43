"""The loader's stages (gpuaug.loader.stages) and the defects they fix, on the CPU.

- 9.1: decode="gpu" sends one byte buffer per batch, not one shared-memory tensor per JPEG;
- 9.2: a device cache moves each pass's indices to the device once, not per batch;
- 9.3: host and disk caches gather into a few reusable (pinned) buffers;
- 9.7 (single process part): the "replace" rule keeps batch shapes when files fail;
- 9.8: a device cache that does not fit is refused before anything is decoded;
- params are drawn from a CPU generator whatever the device;
- 12.1: two iterations of one loader at once lose no sample.

"meta" stands in for a GPU where a test needs a second device.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image, write_tree
from PIL import Image

import gpuaug
import gpuaug.loader.gpu_loader as loader_mod
from gpuaug.data.cache import ImageCache, check_device_cache_fits
from gpuaug.loader.gpu_loader import GPULoader, LoaderConfig
from gpuaug.loader.sampler import EpochBatchSampler
from gpuaug.loader.stages.batch import HostBatch
from gpuaug.loader.stages.cache_source import CacheSource, plan_pass
from gpuaug.loader.stages.finish import Finisher, augment_module
from gpuaug.loader.stages.skip import fill_positions
from gpuaug.loader.stages.transfer import PinnedRing
from gpuaug.loader.stages.workers import WorkerView, collate
from gpuaug.sync_check import SyncCheck

SIZE = (16, 16)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """13 images: 7 cats, 6 dogs, 20x24 PNGs."""
    return write_tree(tmp_path_factory.mktemp("stages") / "data", {"cats": 7, "dogs": 6}, (20, 24))


@pytest.fixture(scope="module")
def pixels_to_index(tree) -> dict[bytes, int]:
    ds = gpuaug.DirectoryDataset(tree, target_size=SIZE)
    return {ds.load(i).numpy().tobytes(): i for i in range(len(ds))}


def identify(x: torch.Tensor, table: dict[bytes, int]) -> list[int]:
    return [table[img.numpy().tobytes()] for img in x.round().to(torch.uint8)]


def make(root, **kwargs) -> GPULoader:
    kwargs = {
        "target_size": SIZE,
        "batch_size": 3,
        "seed": 0,
        "num_workers": 0,
        "device": "cpu",
        "progress": False,
        **kwargs,
    }
    return gpuaug.flow_from_directory(root, **kwargs)


def jpeg_tree(root: Path, per_class: int, size=(8, 8)) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.fromarray(textured_image(rng, *size))
            img.save(root / name / f"{i:03d}.jpg", quality=85)
    return root


# ---------------------------------------------------------------- 9.1 one buffer per batch
def test_collate_sends_a_batchs_jpegs_as_one_buffer_with_offsets(tmp_path):
    root = jpeg_tree(tmp_path / "j", 3)
    ds = gpuaug.DirectoryDataset(root, target_size=SIZE)
    view = WorkerView(ds, "gpu")
    raw = collate([view[i] for i in range(len(ds))])
    assert raw.images is None and raw.jpeg_data.dtype == torch.uint8 and raw.jpeg_data.ndim == 1
    assert raw.jpeg_offsets.tolist()[0] == 0 and len(raw.jpeg_offsets) == len(ds) + 1
    files = [Path(p).read_bytes() for p, _ in ds.samples]
    assert [j.numpy().tobytes() for j in raw.jpegs] == files
    assert raw.jpegs[1].untyped_storage().data_ptr() == raw.jpeg_data.untyped_storage().data_ptr()


@pytest.mark.cuda
def test_pinning_a_host_batch_pins_the_images_not_the_jpeg_bytes():
    raw = HostBatch(
        indices=torch.arange(2),
        images=torch.zeros((1, 3, 2, 2), dtype=torch.uint8),
        image_pos=[],
        jpeg_data=torch.zeros(10, dtype=torch.uint8),
        jpeg_offsets=torch.tensor([0, 4, 10]),
        jpeg_pos=[0, 1],
        orient=[1, 1],
    )
    data = raw.jpeg_data
    raw.pin_memory()
    assert raw.images.is_pinned() and raw.indices.is_pinned()
    assert raw.jpeg_data is data and not raw.jpeg_data.is_pinned()


def test_gpu_decode_with_workers_stays_within_a_low_open_file_limit(tmp_path, monkeypatch):
    """On the CPU: 192 JPEGs in 2 batches, 2 workers, ``ulimit -n`` = open + 48.

    One shared-memory tensor per JPEG needs ~96 file descriptors per batch in flight and dies
    ("Too many open files"); one buffer per batch needs a handful.
    """
    monkeypatch.setattr(loader_mod, "check_decode", lambda *args, **kwargs: None)
    root = jpeg_tree(tmp_path / "j", 96)
    ds = gpuaug.DirectoryDataset(root, target_size=(8, 8))
    config = LoaderConfig(
        batch_size=96, seed=0, num_workers=2, decode="gpu", device="cpu", timeout=30
    )
    loader = GPULoader(ds, config=config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 48, hard))
    try:
        n = sum(len(x) for x, _ in loader)
    finally:
        loader.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert n == 192


# ---------------------------------------------------------------- 9.2 device cache indices
def meta_cache(n: int, valid: torch.Tensor | None = None) -> ImageCache:
    images = torch.empty((n, 3, 4, 4), dtype=torch.uint8, device="meta")
    return ImageCache("device", images, valid if valid is not None else torch.ones(n, dtype=bool))


def test_a_device_cache_copies_each_pass_indices_to_the_device_once():
    sampler = EpochBatchSampler(13, 3, seed=0, steps_per_epoch=9)  # 5 steps per pass
    source = CacheSource(
        meta_cache(13), sampler, torch.device("meta"), torch.zeros(13, dtype=torch.int64), "shrink"
    )
    with SyncCheck() as check:
        batches = list(source.device_batches(0, [])) + list(source.device_batches(1, []))
    copies = [e for e in check.events if "copy" in e.reason]
    assert len(batches) == 18 and all(b.images.device.type == "meta" for b in batches)
    assert len(copies) == 4  # passes 0..3 cover global batches 0..17; none per batch
    assert [len(b.indices) for b in batches[:5]] == [3, 3, 3, 3, 1]


def test_a_device_cache_batch_serves_the_samplers_indices():
    sampler = EpochBatchSampler(13, 3, seed=4)
    source = CacheSource(
        meta_cache(13), sampler, torch.device("meta"), torch.zeros(13, dtype=torch.int64), "shrink"
    )
    got = [b.indices for b in source.device_batches(2, [])]
    want = [idx for _, idx in sampler.epoch_batches(2)]
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


# ---------------------------------------------------------------- 9.3 host cache buffers
class FakeEvent:
    log: list[str] = []

    def record(self, stream=None):
        self.log.append("record")

    def synchronize(self):
        self.log.append("wait")


def test_pinned_ring_reuses_its_buffers_after_their_event():
    FakeEvent.log = []
    ring = PinnedRing(torch.device("cpu"), size=3, pin=False, event_factory=FakeEvent)
    ptrs = []
    for _ in range(6):
        buf = ring.acquire((4, 3, 2, 2))
        ptrs.append(buf.data_ptr())
        ring.release()
    assert ptrs[:3] == ptrs[3:] and len(set(ptrs)) == 3
    assert FakeEvent.log == ["record"] * 3 + ["wait", "record"] * 3


def test_pinned_ring_serves_a_shorter_batch_from_the_same_buffer():
    ring = PinnedRing(torch.device("cpu"), size=1, pin=False, event_factory=FakeEvent)
    a = ring.acquire((4, 3, 2, 2))
    b = ring.acquire((1, 3, 2, 2))
    assert a.data_ptr() == b.data_ptr() and b.shape == (1, 3, 2, 2)


def test_a_host_cache_of_float_images_gathers_into_a_ring_buffer_of_its_dtype():
    # flow(x) keeps float arrays as float32: the pinned ring (CUDA only, so built by hand here)
    # must hand out buffers of the cache's dtype, or index_select(out=uint8) raises.
    x = np.random.default_rng(0).uniform(0, 255, (10, 6, 5, 3)).astype(np.float32)
    loader = gpuaug.ImageDataGenerator().flow(x, np.arange(10), batch_size=4, shuffle=False)
    source = CacheSource(
        loader.cache.__class__("host", torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(),
                               torch.ones(10, dtype=torch.bool)),
        loader.sampler, torch.device("cpu"), torch.arange(10), "shrink",
    )  # fmt: skip
    source.ring = PinnedRing(torch.device("cpu"), pin=False, event_factory=FakeEvent)
    batch = source.host_batch(0)
    assert batch.images.dtype == torch.float32
    assert torch.equal(batch.images, source.cache.images[:4])


@pytest.mark.parametrize("kind", ["host", "disk"])
def test_cache_take_gathers_into_the_given_buffer(tree, tmp_path, kind):
    loader = make(tree, cache=kind, cache_dir=tmp_path)
    idx = torch.tensor([5, 0, 12])
    out = torch.empty((3, 3, *SIZE), dtype=torch.uint8)
    got = loader.cache.take(idx, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(out[1], loader.dataset.load(0)) and torch.equal(
        out[2], loader.dataset.load(12)
    )


# ---------------------------------------------------------------- skip rules
def test_fill_positions_repeat_the_good_rows_cyclically():
    assert fill_positions(2, 5) == [0, 1, 0]
    assert fill_positions(3, 3) == [] and fill_positions(0, 3) == []


def test_plan_replaces_failed_samples_within_their_batch():
    sampler = EpochBatchSampler(6, 3, shuffle=False)
    valid = np.array([True, False, True, False, False, False])
    plan = plan_pass(sampler, 0, valid, "replace")
    assert plan.served.tolist() == [0, 2, 0, 0, 0, 0]  # batch 2: all bad -> next good after 3
    assert plan.offsets == [0, 3, 6] and plan.failed == [[1], [3, 4, 5]]


def test_plan_shrinks_batches_in_one_process():
    sampler = EpochBatchSampler(6, 3, shuffle=False)
    valid = np.array([True, False, True, False, False, False])
    plan = plan_pass(sampler, 0, valid, "shrink")
    assert plan.served.tolist() == [0, 2] and plan.offsets == [0, 2, 2]


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory) -> Path:
    """8 images; cats/img_000 and cats/img_002 (indices 0 and 2) are truncated."""
    root = write_tree(tmp_path_factory.mktemp("bad") / "data", {"cats": 4, "dogs": 4}, (20, 24))
    for name in ("img_000.png", "img_002.png"):
        path = root / "cats" / name
        path.write_bytes(path.read_bytes()[:60])
    return root


@pytest.mark.parametrize("cache", [None, "host", "device"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_replace_rule_keeps_every_batch_full(bad_tree, cache, num_workers):
    """Rank 0 of 2 (no process group needed): its shard is [0, 2, 4, 6]; batch 0 is [0, 2],
    both bad: replaced by the first good sample after 0, i.e. 1."""
    ds = gpuaug.DirectoryDataset(bad_tree, target_size=SIZE, on_error="skip")
    config = LoaderConfig(
        batch_size=2, shuffle=False, num_workers=num_workers, num_replicas=2, rank=0, cache=cache
    )
    loader = GPULoader(ds, config=config)
    with pytest.warns(UserWarning, match=r"Skipped 2 unreadable.*replaced by other samples"):
        batches = [x for x, _ in loader]
    loader.close()
    assert [len(x) for x in batches] == [2, 2]
    assert loader.replay(0, 0).indices.tolist() == [1, 1]
    assert torch.equal(loader.replay(0, 0).x, batches[0])
    assert sorted(p.rsplit(os.sep, 1)[-1] for p, _ in loader.last_skipped) == [
        "img_000.png",
        "img_002.png",
    ]


def test_replace_rule_duplicates_a_good_sample_of_the_same_batch(bad_tree):
    ds = gpuaug.DirectoryDataset(bad_tree, target_size=SIZE, on_error="skip")
    config = LoaderConfig(batch_size=4, shuffle=False, num_workers=0, num_replicas=2, rank=0)
    loader = GPULoader(ds, config=config)
    with pytest.warns(UserWarning, match="Skipped 2"):
        ((x, _),) = list(loader)
    assert loader.replay(0, 0).indices.tolist() == [4, 6, 4, 6]
    assert torch.equal(x[2], x[0]) and torch.equal(x[3], x[1])


# ---------------------------------------------------------------- 9.8 device cache fit
def test_a_device_cache_that_does_not_fit_is_refused_naming_the_size(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * 2**30, 16 * 2**30))
    with pytest.raises(
        ValueError,
        match=r"needs 2\.79 GiB for 1000 images of 3x1000x1000.*"
        r"2\.00 GiB free.*cache='host'.*cache='disk'",
    ):
        check_device_cache_fits((1000, 3, 1000, 1000), "cuda:0")


def test_a_device_cache_that_fits_is_accepted(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 2**30, 16 * 2**30))
    check_device_cache_fits((1000, 3, 1000, 1000), "cuda:0")
    check_device_cache_fits((10**6, 3, 1000, 1000), "cpu")  # nothing to check off CUDA


def test_building_a_device_cache_checks_the_fit_before_decoding(tree, monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 2000))
    ds = gpuaug.DirectoryDataset(tree, target_size=SIZE)

    def never():
        raise AssertionError("decoded before the fit check")
        yield

    with pytest.raises(ValueError, match=r"cache='device' needs .* use cache='host'"):
        ImageCache.build("device", ds, never(), device="cuda:0", progress=False)


# ---------------------------------------------------------------- CPU generator
def test_params_come_from_a_cpu_generator_whatever_the_device(tree):
    ds = gpuaug.DirectoryDataset(tree, target_size=SIZE)
    aug = augment_module(gpuaug.AugmentConfig(rotation_range=30))
    finisher = Finisher(aug, ds, torch.device("meta"))
    assert finisher.generator.device.type == "cpu"


def test_batch_params_are_a_cpu_draw_seeded_by_augment_seed(tree):
    cfg = gpuaug.AugmentConfig(rotation_range=30, zoom_range=0.2)
    loader = make(tree, augment=cfg)
    r = loader.replay(1, 2)
    g = torch.Generator().manual_seed(loader.augment_seed(1, 2))
    want = gpuaug.sample_params(cfg, len(r.indices), *SIZE, generator=g)
    assert torch.equal(r.params.angle_deg, want.angle_deg) and torch.equal(r.params.zoom, want.zoom)


def test_the_loader_hands_its_draws_to_the_fused_kernel_one_pass_per_batch(tree, monkeypatch):
    # The finish stage passes the batch's draws, not params, so the fused path (TRITON_INTERPRET
    # on this CPU, see conftest) reads them in its prologue and one pass, and no params are
    # computed on the way; replay derives the same params from the same draws.
    from gpuaug.augment.backends import triton as fused

    cfg = gpuaug.AugmentConfig(rotation_range=40, zoom_range=0.2, horizontal_flip=True)
    reference = make(tree, augment=cfg)
    loader = make(tree, augment=gpuaug.GPUAugment(cfg, backend="triton"))
    real, launches = fused._launch, []

    def counting(kernel, grid, **kw):
        if kernel is fused._augment_kernel:  # not the prologue
            launches.append(kw)
        return real(kernel, grid, **kw)

    monkeypatch.setattr(fused, "_launch", counting)
    monkeypatch.setattr(
        gpuaug.augment.module, "params_from_draws", lambda *a, **k: pytest.fail("params computed")
    )
    got = [x for x, _ in loader]
    assert len(launches) == len(loader) == len(got)
    monkeypatch.undo()
    want = [x for x, _ in reference]
    assert all((a - b).abs().max() <= 1e-3 for a, b in zip(got, want, strict=True))
    r = loader.replay(0, 1)
    assert torch.allclose(r.x, got[1], atol=1e-3)
    assert torch.equal(r.params.angle_deg, reference.replay(0, 1).params.angle_deg)


def test_describe_says_the_params_do_not_depend_on_the_device(tree):
    text = make(tree, augment=gpuaug.AugmentConfig(rotation_range=30)).describe(verbose=True)
    assert "from a CPU torch.Generator seeded by (seed, epoch, step, rank)" in text
    assert "do not depend on the device" in text


# ---------------------------------------------------------------- augment normalised once
def test_augment_is_turned_into_a_module_once(tree, monkeypatch):
    calls = []
    real = gpuaug.augment.config.load_config

    def counting(name):
        calls.append(name)
        return real(name)

    monkeypatch.setattr(gpuaug.loader.stages.finish, "load_config", counting)
    loader = make(tree, augment="chollet_cats_dogs")
    assert calls == ["chollet_cats_dogs"] and loader.augment.config.rotation_range == 40


# ---------------------------------------------------------------- 12.1 concurrent iterations
def test_a_peek_inside_the_loop_neither_ends_the_epoch_nor_moves_the_counter(tree, pixels_to_index):
    loader = make(tree, num_workers=2)
    seen, peeks = [], 0
    for x, _ in loader:
        seen += identify(x, pixels_to_index)
        peek, _ = next(iter(loader))
        peeks += len(peek)
    loader.close()
    assert sorted(seen) == list(range(13))
    assert peeks == 5 * 3 and loader.epoch == 1


def test_zipping_two_iterations_gives_each_the_whole_epoch(tree, pixels_to_index):
    loader = make(tree, num_workers=2)
    a, b = [], []
    for (xa, _), (xb, _) in zip(iter(loader), iter(loader), strict=False):
        a += identify(xa, pixels_to_index)
        b += identify(xb, pixels_to_index)
    loader.close()
    assert sorted(a) == sorted(b) == list(range(13))
    assert loader.epoch == 1


def test_the_persistent_workers_serve_the_next_epoch_after_a_peek_is_dropped(tree):
    loader = make(tree, num_workers=2)
    peek = iter(loader)
    next(peek)
    del peek
    assert sum(len(x) for x, _ in loader) == 13
    assert sum(len(x) for x, _ in loader) == 13 and loader.epoch == 2
    loader.close()


def test_describe_says_when_the_kernels_compile_ahead(tree):
    from concurrent.futures import Future

    loader = make(tree, augment=gpuaug.AugmentConfig(rotation_range=30))
    assert loader.compiling_ahead is None  # the reference on the CPU: nothing to compile
    assert "compiled (or loaded from Triton's cache)" not in loader.describe()
    loader.compiling_ahead = Future()
    assert "while the first batch decodes (still compiling)" in loader.describe()
    loader.compiling_ahead.set_result([])
    assert "while the first batch decodes (done)" in loader.describe()


def test_a_failed_file_names_gpuaug_inspect_only_for_a_class_folder_data_set(tmp_path):
    from types import SimpleNamespace

    from gpuaug.data.directory import DirectoryDataset
    from gpuaug.data.image import ImageLoadError
    from gpuaug.loader.stages.skip import settle_failures

    root = write_tree(tmp_path / "data", {"a": 2, "b": 1}, (8, 8))
    folder = DirectoryDataset(root, target_size=(8, 8))
    flat = SimpleNamespace(on_error="raise", samples=[("rows.csv/x.png", 0)])  # e.g. a dataframe
    notes = {}
    for name, dataset in (("folder", folder), ("flat", flat)):
        with pytest.raises(ImageLoadError) as info:
            settle_failures([(0, "image file is truncated")], dataset, [])
        notes[name] = "\n".join(info.value.__notes__)
    assert "on_error='skip'" in notes["folder"] and "gpuaug inspect DIR --full" in notes["folder"]
    assert "on_error='skip'" in notes["flat"] and "gpuaug inspect" not in notes["flat"]
