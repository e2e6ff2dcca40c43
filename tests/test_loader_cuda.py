"""The loader on a real GPU: what the CPU suite can only approximate (skipped without CUDA).

Batches of 256, TF32 on (``set_float32_matmul_precision("high")``, as many users set it), every
mode under ``torch.cuda.set_sync_debug_mode("error")`` *and* `SyncCheck`, peak device memory
and pinned host memory measured, the seeded epoch compared with the CPU's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image
from PIL import Image

import gpuaug
from gpuaug.data.cache import check_device_cache_fits
from gpuaug.loader.gpu_loader import GPULoader, LoaderConfig
from gpuaug.sync_check import SyncCheck

pytestmark = pytest.mark.cuda

N, SIZE, BATCH = 600, (32, 32), 256
AUG = gpuaug.AugmentConfig(
    rotation_range=30, width_shift_range=0.1, zoom_range=0.2, horizontal_flip=True
)


class ArrayDataset:
    """The loader's data set protocol over random in-memory images (no files)."""

    def __init__(self, n: int, size=SIZE, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=g)
        self.targets = [i % 3 for i in range(n)]
        self.samples = [(f"mem://{i}", t) for i, t in enumerate(self.targets)]
        self.root, self.classes = "mem://", ["a", "b", "c"]
        self.target_size, self.channels = size, 3
        self.color_mode, self.interpolation = "rgb", "nearest"
        self.class_mode, self.num_classes, self.on_error = "categorical", 3, "raise"

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        return self.images[index].clone()

    def counts(self) -> dict[str, int]:
        return {c: self.targets.count(i) for i, c in enumerate(self.classes)}


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cuda_jpegs")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(N // 2):
            Image.fromarray(textured_image(rng, 40, 48)).save(root / c / f"{i}.jpg", quality=90)
    return root


@pytest.fixture
def tf32():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    yield
    torch.set_float32_matmul_precision(before)


MODES = [
    pytest.param({"num_workers": 2}, id="workers"),
    pytest.param({"num_workers": 0}, id="main-process"),
    pytest.param({"cache": "device"}, id="device-cache"),
    pytest.param({"cache": "host"}, id="host-cache"),
    pytest.param({"cache": "disk"}, id="disk-cache"),
    pytest.param({"decode": "gpu", "num_workers": 2}, id="decode-gpu"),
]


@pytest.mark.usefixtures("tf32")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_two_epochs_at_batch_256_never_sync(jpeg_root, tmp_path, mode):
    loader = gpuaug.flow_from_directory(
        jpeg_root,
        augment=AUG,
        target_size=SIZE,
        batch_size=BATCH,
        seed=0,
        device="cuda",
        progress=False,
        cache_dir=tmp_path,
        interpolation="bilinear",
        **{"num_workers": 0, **mode},
    )
    list(loader)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with SyncCheck() as check:
            n = 0
            for _ in range(2):
                for x, y in loader:
                    n += len(x)
                    assert x.is_cuda and y.is_cuda and x.shape[1:] == (3, *SIZE)
    finally:
        torch.cuda.set_sync_debug_mode(0)
        loader.close()
    check.assert_clean()
    assert n == 2 * N
    batch_float = BATCH * 3 * SIZE[0] * SIZE[1] * 4
    assert torch.cuda.max_memory_allocated() - base < 40 * batch_float


def test_cuda_host_cache_pins_a_few_batches_not_the_data_set():
    stats = getattr(torch.cuda, "host_memory_stats", None)
    if stats is None:
        pytest.skip("torch.cuda.host_memory_stats needs a newer torch")
    ds = ArrayDataset(4096)
    torch.cuda.empty_cache()
    before = stats().get("allocated_bytes.current", 0)
    loader = GPULoader(ds, AUG, LoaderConfig(batch_size=BATCH, cache="host", device="cuda"))
    for _ in range(2):
        list(loader)
    torch.cuda.synchronize()
    pinned = stats().get("allocated_bytes.peak", 0) - before
    assert not loader.cache.images.is_pinned()
    assert pinned < loader.cache.nbytes / 2, (
        f"{pinned} B pinned for a {loader.cache.nbytes} B cache"
    )


def test_cuda_and_cpu_draw_the_same_params_and_images_for_a_seeded_epoch():
    ds = ArrayDataset(N)
    cfg = gpuaug.AugmentConfig(rotation_range=30, zoom_range=0.2, horizontal_flip=True)
    gpu = GPULoader(ds, cfg, LoaderConfig(batch_size=BATCH, seed=5, device="cuda"))
    cpu = GPULoader(ds, cfg, LoaderConfig(batch_size=BATCH, seed=5, device="cpu"))
    for step in range(len(gpu)):
        g, c = gpu.replay(0, step), cpu.replay(0, step)
        assert torch.equal(g.indices, c.indices)
        assert torch.equal(g.params.angle_deg.cpu(), c.params.angle_deg)
        assert torch.equal(g.params.zoom.cpu(), c.params.zoom)
        assert (g.x.cpu() - c.x).abs().max() < 0.05


def test_cuda_a_named_device_leaves_the_current_device_alone():
    last = torch.cuda.device_count() - 1
    current = torch.cuda.current_device()
    loader = GPULoader(
        ArrayDataset(64), AUG, LoaderConfig(batch_size=32, num_workers=2, device=f"cuda:{last}")
    )
    x, y = next(iter(loader))
    loader.close()
    assert x.device == y.device == torch.device("cuda", last)
    assert torch.cuda.current_device() == current


def test_cuda_a_device_cache_larger_than_the_free_memory_is_refused():
    free, _ = torch.cuda.mem_get_info()
    with pytest.raises(ValueError, match=r"cache='device' needs .* use cache='host'"):
        check_device_cache_fits((2, 1, 1, free), "cuda")
