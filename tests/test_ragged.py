"""Ragged batches (``target_size=None``): each image at its own size, packed by the workers,
unpacked on the device with one gather, cropped by the recipe from its own pixels.

Checked here: the unpack against a per-image loop; the ``max_side`` cap; exact epochs; replay
bit for bit; no host sync; the crop read from the full-size image (against torchvision's
``resized_crop(antialias=True)`` with the same box, and not from a pre-resized image); the
crop distribution of images of different sizes against torchvision's ``get_params`` with a
negative control; the validation transform; bad arguments named.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop as TVRandomResizedCrop
from torchvision.transforms.v2 import functional as TF

import gpuaug
from gpuaug.augment.recipe import EvalRecipe, RecipeConfig, TrainRecipe
from gpuaug.augment.rrc import sample_crop_params
from gpuaug.data.image import capped_size, load_image
from gpuaug.loader.stages.ragged import (
    pack_images,
    pack_table,
    unpack,
    unpack_reference,
    zero_padding,
)
from gpuaug.sync_check import SyncCheck

MEAN = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]


def _grey_levels(x: torch.Tensor) -> torch.Tensor:
    """A normalised recipe output back on the 0..255 scale."""
    return (x * STD + MEAN) * 255.0


def _checkerboard(height: int, width: int, seed: int) -> np.ndarray:
    """A 1-px checkerboard (with a per-image tint): a pre-resize with ``nearest`` to a quarter
    of the size keeps only one colour of it, the full image holds both."""
    yy, xx = np.mgrid[0:height, 0:width]
    board = ((yy + xx) % 2 * 200 + 20).astype(np.uint8)
    tint = np.array([1.0, 0.8, 0.6]) * (0.7 + 0.1 * seed)
    return np.clip(board[..., None] * tint, 0, 255).astype(np.uint8)


def _tree(root: Path, sizes: list[tuple[int, int]], ext: str = "png") -> Path:
    for i, (h, w) in enumerate(sizes):
        d = root / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_checkerboard(h, w, i % 3)).save(d / f"img_{i:02d}.{ext}")
    return root


SIZES = [(40, 64), (64, 40), (33, 50), (72, 72), (48, 30), (50, 90), (36, 36), (80, 44), (30, 30)]


def _recipe(**kwargs) -> TrainRecipe:
    cfg = {"size": 16, "auto_augment": None, "hflip": 0.0, **kwargs}
    return TrainRecipe(RecipeConfig(**cfg))


def _loader(root: Path, recipe, **kwargs):
    args = {
        "target_size": None,
        "class_mode": "sparse",
        "batch_size": 4,
        "seed": 0,
        "device": "cpu",
        "num_workers": 0,
        "progress": False,
        **kwargs,
    }
    return gpuaug.flow_from_directory(root, recipe=recipe, **args)


# ---------------------------------------------------------------------- packing
def test_unpack_equals_a_per_image_loop_in_any_row_order():
    g = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (3, int(h), int(w)), dtype=torch.uint8, generator=g)
        for h, w in torch.randint(1, 50, (9, 2), generator=g)
    ]
    data, table = pack_images(images)
    assert torch.equal(table, pack_table([tuple(i.shape) for i in images]))
    out, sizes = unpack(data, table, 3)
    reference, _ = unpack_reference(data, table, 3)
    assert torch.equal(out, reference)
    for i, image in enumerate(images):  # each image top-left, zeros beyond
        h, w = image.shape[1:]
        assert torch.equal(out[i, :, :h, :w], image) and sizes[i].tolist() == [h, w]
        assert int(out[i, :, h:].sum()) == 0 and int(out[i, :, :, w:].sum()) == 0
    rows = torch.tensor([8, 0, 3, 3])  # reordered, repeated; a buffer without its spare bytes
    cut = data[: sum(i.numel() for i in images)]
    assert torch.equal(unpack(cut, table[rows], 3)[0], unpack_reference(data, table[rows], 3)[0])


def test_both_forms_of_zero_padding_give_the_same_batch():
    # the CPU's two multiplies and the device's one masked_fill_ (run here on the CPU)
    g = torch.Generator().manual_seed(1)
    batch = torch.randint(1, 256, (5, 2, 9, 11), dtype=torch.uint8, generator=g)
    h, w = torch.tensor([9, 1, 4, 9, 0]), torch.tensor([11, 11, 1, 3, 0])
    two = zero_padding(batch.clone(), h, w, two_passes=True)
    one = zero_padding(batch.clone(), h, w, two_passes=False)
    assert torch.equal(two, one)
    for i in range(5):
        assert torch.equal(two[i, :, : h[i], : w[i]], batch[i, :, : h[i], : w[i]])
        assert int(two[i].sum()) == int(batch[i, :, : h[i], : w[i]].sum())


def test_unpack_makes_no_host_sync():
    images = [torch.full((3, h, w), 7, dtype=torch.uint8) for h, w in [(5, 9), (12, 4)]]
    data, table = pack_images(images)
    with SyncCheck() as check:
        unpack(data, table, 3)
    check.assert_clean()


def test_max_side_caps_the_long_side_and_keeps_the_aspect_ratio(tmp_path):
    Image.fromarray(_checkerboard(60, 150, 0)).save(tmp_path / "wide.png")
    Image.fromarray(_checkerboard(20, 30, 0)).save(tmp_path / "small.png")
    assert load_image(tmp_path / "wide.png", None, max_side=50).shape == (3, 20, 50)
    assert load_image(tmp_path / "small.png", None, max_side=50).shape == (3, 20, 30)
    assert capped_size(150, 60, 50) == (50, 20) and capped_size(60, 150, 50) == (20, 50)
    assert capped_size(1000, 1, 10) == (10, 1)  # never a zero side


def test_draft_decodes_a_large_jpeg_no_smaller_than_the_cap(tmp_path):
    Image.fromarray(_checkerboard(400, 600, 0)).save(tmp_path / "big.jpg", quality=95)
    drafted = load_image(tmp_path / "big.jpg", None, max_side=120, draft=True)
    plain = load_image(tmp_path / "big.jpg", None, max_side=120)
    assert drafted.shape == plain.shape == (3, 80, 120)


# ---------------------------------------------------------------------- the loader
def test_every_image_once_per_epoch_and_each_batch_replays_bit_for_bit(tmp_path):
    root = _tree(tmp_path / "d", SIZES)
    loader = _loader(root, _recipe(re_prob=0.5), max_side=64)
    assert loader.ragged and len(loader) == 3
    for epoch in range(2):
        seen, steps = [], 0
        for step, (x, y) in enumerate(loader):
            replayed = loader.replay(epoch, step)
            assert torch.equal(x, replayed.x) and torch.equal(y, replayed.y)
            assert x.shape[1:] == (3, 16, 16)
            seen += replayed.indices.tolist()
            steps += 1
        assert steps == len(loader) and sorted(seen) == list(range(len(SIZES)))


def test_workers_ship_the_same_batches_as_the_main_process(tmp_path):
    root = _tree(tmp_path / "d", SIZES)
    main = [x for x, _ in _loader(root, _recipe(), max_side=64)]
    workers = [x for x, _ in _loader(root, _recipe(), max_side=64, num_workers=2)]
    assert len(main) == len(workers) == 3
    assert all(torch.equal(a, b) for a, b in zip(main, workers, strict=True))


def test_a_ragged_batch_makes_no_host_sync_from_transfer_to_recipe(tmp_path):
    root = _tree(tmp_path / "d", SIZES)
    loader = _loader(root, _recipe(re_prob=0.5))
    raw = next(loader._workers.epoch_batches(0))
    with SyncCheck() as check:
        batch = loader._to_device(raw, [])
        loader._finisher(batch, 123)
    check.assert_clean()


def test_the_crop_is_read_from_the_full_image_as_torchvision_reads_it(tmp_path):
    """Against torchvision's ``resized_crop(antialias=True)`` of the decoded full image with the
    same box: measured 0.62 grey levels apart at most (uint8 fixed-point weights there,
    float32 here; bound: 1); against the crop of a pre-resized image, 32 grey levels apart on
    average at the least (bound: 20)."""
    root = _tree(tmp_path / "d", SIZES)
    loader = _loader(root, _recipe(scale=(0.3, 1.0)))
    worst, pre_resized = 0.0, []
    for step in range(len(loader)):
        r = loader.replay(0, step)
        crop = r.params.crop
        got = _grey_levels(r.x)
        for i, index in enumerate(r.indices.tolist()):
            full = load_image(loader.dataset.samples[index][0], None)
            (top, left), (h, w) = crop.top_left_px[i].tolist(), crop.size_px[i].tolist()
            assert top + h <= full.shape[1] and left + w <= full.shape[2]
            expected = TF.resized_crop(full, top, left, h, w, [16, 16], antialias=True)
            worst = max(worst, float((got[i] - expected.float()).abs().max()))
            # the same box on the image a target_size=(16, 16) loader would have decoded
            small = load_image(loader.dataset.samples[index][0], (16, 16))
            sy, sx = 16 / full.shape[1], 16 / full.shape[2]
            st, sl = int(top * sy), int(left * sx)
            sh, sw = max(1, round(h * sy)), max(1, round(w * sx))
            other = TF.resized_crop(small, st, sl, sh, sw, [16, 16], antialias=True)
            pre_resized.append(float((got[i] - other.float()).abs().mean()))
    assert worst <= 1.0 + 1e-3
    assert min(pre_resized) > 20


def test_the_crop_distribution_of_ragged_sizes_is_torchvisions_and_another_scale_is_not():
    stats = pytest.importorskip("scipy.stats")
    sizes = torch.tensor([[40, 64], [64, 40], [33, 50], [72, 72]]).repeat(400, 1)
    g = torch.Generator().manual_seed(0)
    p = sample_crop_params(len(sizes), sizes[:, 0], sizes[:, 1], (8, 8), generator=g)
    q = sample_crop_params(
        len(sizes), sizes[:, 0], sizes[:, 1], (8, 8), scale=(0.2, 1.0), generator=g
    )
    torch.manual_seed(0)
    ref = []
    for h, w in sizes.tolist():
        ref.append(
            TVRandomResizedCrop.get_params(torch.zeros(1, h, w), (0.08, 1.0), (3 / 4, 4 / 3))
        )
    ref_t = torch.tensor(ref, dtype=torch.float64)
    area = sizes.prod(1).double()

    def fraction(top_left, size):
        return (size.prod(1).double() / area).numpy()

    ours = fraction(p.top_left_px, p.size_px)
    other = fraction(q.top_left_px, q.size_px)
    theirs = (ref_t[:, 2] * ref_t[:, 3] / area).numpy()
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-3
    assert stats.ks_2samp(other, theirs).pvalue < 1e-6
    for column, ref_column in ((0, 0), (1, 1)):  # top, left against torchvision's
        assert stats.ks_2samp(p.top_left_px[:, column].numpy(), ref_t[:, ref_column]).pvalue > 1e-3


def test_validation_resizes_the_short_side_of_the_full_image_then_centre_crops(tmp_path):
    """Against torchvision's ``Resize`` + ``CenterCrop`` of the full image: measured 0.5 grey
    levels apart at most (bound: 1)."""
    root = _tree(tmp_path / "d", SIZES)
    cfg = RecipeConfig(kind="eval", size=16, resize_size=20)
    loader = _loader(root, EvalRecipe(cfg), shuffle=False)
    worst = 0.0
    for step, (x, _) in enumerate(loader):
        got = _grey_levels(x)
        for i, index in enumerate(loader.replay(0, step).indices.tolist()):
            full = load_image(loader.dataset.samples[index][0], None)
            expected = TF.center_crop(TF.resize(full, 20, antialias=True), [16, 16])
            worst = max(worst, float((got[i] - expected.float()).abs().max()))
    assert worst <= 1.0 + 1e-3


def test_describe_says_each_image_keeps_its_size(tmp_path):
    root = _tree(tmp_path / "d", SIZES)
    text = _loader(root, _recipe(), max_side=64).describe()
    assert "each at its own size, the long side capped at 64 px" in text
    assert "packed uint8 buffer" in text and "TrainRecipe" in text
    assert "RandomResizedCrop" in text
    assert _loader(root, _recipe()).stats()["target_size"] is None


def test_describe_says_a_decode_gpu_batch_travels_as_its_jpeg_files(tmp_path, monkeypatch):
    monkeypatch.setattr("gpuaug.loader.gpu_loader.check_decode", lambda *a, **k: None)
    root = _tree(tmp_path / "d", SIZES[:4], ext="jpg")
    text = _loader(root, _recipe(), decode="gpu").describe()
    assert "JPEG files travel as they are and nvJPEG decodes them into one packed" in text
    assert "a batch travels as one packed" not in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_side": 0}, "`max_side` must be a positive"),
        ({"max_side": -3}, "`max_side` must be a positive"),
        ({"max_side": 2.5}, "`max_side` must be an int"),
        ({"max_side": 64, "target_size": (32, 32)}, "`max_side`=64 caps .* needs target_size=None"),
        ({"recipe": None}, "`target_size`=None .* needs a `recipe`"),
        ({"augment": "strong"}, "`recipe` replaces `augment`"),
        ({"keep_aspect_ratio": True}, "`keep_aspect_ratio`=True .* needs a `target_size`"),
        ({"cache": "device"}, "`cache`='device' holds images of one size"),
        ({"color_mode": "grayscale"}, "`recipe` normalises 3 channels"),
        ({"dtype": torch.float16}, "`dtype`='float16' would not be applied"),
        ({"dtype": torch.bfloat16, "target_size": (32, 32)}, "`dtype`='bfloat16' would not"),
    ],
)
def test_bad_arguments_are_refused_by_name(tmp_path, kwargs, message):
    root = _tree(tmp_path / "d", SIZES[:3])
    recipe = kwargs.pop("recipe", _recipe())
    with pytest.raises((ValueError, TypeError), match=message):
        _loader(root, recipe, **kwargs)


def test_mixing_is_the_recipes_own_not_loader_mix(tmp_path):
    from gpuaug.augment.mixup import Mixup

    root = _tree(tmp_path / "d", SIZES[:4])
    loader = _loader(root, _recipe(mixup_alpha=0.8, num_classes=2))
    x, soft = next(iter(loader))
    assert soft.shape == (4, 2) and torch.allclose(soft.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="`mix` is for the Keras-style augmentation"):
        loader.mix = Mixup(mixup_alpha=0.8, num_classes=2)
    with pytest.raises(ValueError, match="needs class labels"):
        _loader(root, _recipe(mixup_alpha=0.8, num_classes=2), class_mode=None)


# ---------------------------------------------------------------------- caches
@pytest.mark.parametrize("cache", ["host", "disk"])
def test_a_cache_holds_the_capped_images_and_serves_the_same_batches(tmp_path, cache):
    from gpuaug.data.ragged_cache import RaggedCache

    root = _tree(tmp_path / "d", SIZES)
    plain = [(x, y) for x, y in _loader(root, _recipe(re_prob=0.5), max_side=48)]
    kwargs = {"max_side": 48, "cache": cache, "cache_dir": tmp_path / "cache"}
    loader = _loader(root, _recipe(re_prob=0.5), **kwargs)
    assert isinstance(loader.cache, RaggedCache) and loader.cache.built
    table = loader.cache.table
    assert table[:, 1:].max() == 48 and len(table) == len(SIZES)
    for i, (path, _) in enumerate(loader.dataset.samples):  # as decoded, capped: no one size
        with Image.open(path) as im:
            w, h = im.size
        ph, pw = loader.dataset.load(i).shape[1:]
        assert tuple(table[i, 1:]) == (ph, pw) and max(ph, pw) == min(48, max(h, w))
    cached = list(loader)
    assert len(cached) == len(plain) == len(loader)
    for (a, ya), (b, yb) in zip(plain, cached, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    assert "cache=" in loader.describe()
    if cache == "disk":  # a second loader opens it, and reads the same pixels
        again = _loader(root, _recipe(re_prob=0.5), **kwargs)
        assert not again.cache.built
        assert all(torch.equal(a, b) for (a, _), (b, _) in zip(plain, again, strict=True))


def test_a_changed_byte_of_a_ragged_disk_cache_is_found_on_its_first_read(tmp_path):
    from gpuaug.data.cache import CacheCorruptedError

    root = _tree(tmp_path / "d", SIZES[:4])
    kwargs = {"cache": "disk", "cache_dir": tmp_path / "cache", "shuffle": False}
    path = _loader(root, _recipe(), **kwargs).cache.path
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))
    loader = _loader(root, _recipe(), **kwargs)
    with pytest.raises(CacheCorruptedError, match="is corrupted: image 0"):
        list(loader)
    assert not path.with_suffix(".json").exists()  # the next start rebuilds


@pytest.mark.parametrize("damage", ["manifest", "failed entry", "data size", "max_side"])
def test_a_damaged_or_stale_ragged_disk_cache_is_rebuilt(tmp_path, damage):
    root = _tree(tmp_path / "d", SIZES[:4])
    kwargs = {"cache": "disk", "cache_dir": tmp_path / "cache", "max_side": 48}
    path = _loader(root, _recipe(), **kwargs).cache.path
    if damage == "manifest":
        path.with_suffix(".json").write_text("{not json")
    elif damage == "failed entry":  # a hand-edited manifest: a sample index out of range
        manifest = json.loads(path.with_suffix(".json").read_text())
        manifest["failed"] = [[len(SIZES), "gone"]]
        path.with_suffix(".json").write_text(json.dumps(manifest))
    elif damage == "data size":
        path.write_bytes(path.read_bytes()[:-1])
    else:  # other settings: another cache, this one left as it is
        kwargs["max_side"] = 40
    again = _loader(root, _recipe(), **kwargs)
    assert again.cache.built
    assert int(again.cache.table[:, 1:].max()) == kwargs["max_side"]


def test_a_ragged_disk_cache_dir_that_is_a_file_is_refused_by_name(tmp_path):
    root = _tree(tmp_path / "d", SIZES[:2])
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cache_dir"):
        _loader(root, _recipe(), cache="disk", cache_dir=tmp_path / "file")


# ---------------------------------------------------------------------- decode="gpu"
def test_the_batched_jpeg_decoder_packs_images_at_their_own_capped_sizes(tmp_path):
    """`gpuaug.data.nvjpeg.decode_jpegs` without a target size, on the CPU decoder (the same
    plumbing nvJPEG's output goes through)."""
    from gpuaug.data.jpeg import read_file_bytes
    from gpuaug.data.nvjpeg import decode_jpeg_batch, decode_jpegs

    paths = []
    for i, (h, w) in enumerate([(40, 90), (60, 30), (20, 20)]):
        paths.append(tmp_path / f"{i}.jpg")
        Image.fromarray(_checkerboard(h, w, i)).save(paths[-1], quality=95)
    data = [read_file_bytes(p) for p in paths]
    out = decode_jpegs(data, "cpu", None, interpolation="bilinear", max_side=45)
    assert out.table is not None and out.table[:, 1:].tolist() == [[20, 45], [45, 22], [20, 20]]
    images, _ = unpack(out.images, out.table, 3)
    listed = decode_jpeg_batch(data, "cpu", None, interpolation="bilinear")
    full = listed[2]
    assert isinstance(full, torch.Tensor)
    assert torch.equal(images[2, :, :20, :20], full)  # under the cap: as decoded


@pytest.fixture
def cpu_gpu_decode(monkeypatch):
    """decode='gpu' run by torchvision's CPU JPEG decoder (no CUDA here): the loader's nvJPEG
    path (workers read bytes, the batched decoder packs, one unpack) without nvJPEG."""
    monkeypatch.setattr("gpuaug.loader.gpu_loader.check_decode", lambda *a, **k: None)


def test_decode_gpu_ships_jpeg_bytes_and_the_batch_matches_the_cpu_decode(tmp_path, cpu_gpu_decode):
    root = tmp_path / "d"
    _tree(root, SIZES[:6], ext="jpg")
    Image.fromarray(_checkerboard(30, 50, 1)).save(root / "a" / "z_png.png")  # decoded by PIL
    kwargs = {"max_side": 48, "interpolation": "bilinear", "batch_size": 7, "shuffle": False}
    gpu = _loader(root, EvalRecipe(RecipeConfig(kind="eval", size=16, resize_size=20)),
                  decode="gpu", **kwargs)  # fmt: skip
    cpu = _loader(root, EvalRecipe(RecipeConfig(kind="eval", size=16, resize_size=20)), **kwargs)
    raw = next(gpu._workers.epoch_batches(0))
    assert raw.num_jpegs == 6 and raw.packed_table is not None and len(raw.packed_table) == 1
    batch = gpu._to_device(raw, [])
    reference = cpu._to_device(next(cpu._workers.epoch_batches(0)), [])
    assert torch.equal(batch.sizes, reference.sizes) and torch.equal(
        batch.indices, reference.indices
    )
    # same files, same sizes; the pixels may differ by the resize (torch's antialias vs PIL's):
    # measured 1 grey level at most here
    diff = (batch.images.float() - reference.images.float()).abs()
    assert float(diff.max()) <= 2
    (xg, _), (xc, _) = next(iter(gpu)), next(iter(cpu))
    assert xg.shape == xc.shape == (7, 3, 16, 16)


# ---------------------------------------------------------------------- failures
def test_an_unreadable_file_leaves_its_ragged_batch_with_the_sizes_of_the_others(tmp_path):
    root = _tree(tmp_path / "d", SIZES[:4])
    Image.fromarray(_checkerboard(40, 40, 0)).save(root / "a" / "cut.jpg")
    loader = _loader(root, _recipe(), on_error="skip", batch_size=5, shuffle=False)
    data = (root / "a" / "cut.jpg").read_bytes()
    (root / "a" / "cut.jpg").write_bytes(data[: len(data) // 2])  # broken after indexing
    raw = next(loader._workers.epoch_batches(0))
    failures: list = []
    batch = loader._to_device(raw, failures)
    assert [Path(loader.dataset.samples[i][0]).name for i, _ in failures] == ["cut.jpg"]
    assert batch is not None and len(batch.indices) == 4 and batch.sizes is not None
    for row, index in enumerate(batch.indices.tolist()):
        h, w = loader.dataset.load(index).shape[1:]
        assert batch.sizes[row].tolist() == [h, w]


def test_the_replace_rule_copies_each_rows_size_with_its_image():
    from gpuaug.loader.stages.batch import DeviceBatch
    from gpuaug.loader.stages.skip import replace_failed

    images = torch.zeros((2, 3, 5, 6), dtype=torch.uint8)
    sizes = torch.tensor([[5, 2], [3, 6]])
    batch = DeviceBatch(images, torch.tensor([4, 7]), torch.tensor([0, 1]), sizes)
    out = replace_failed(batch, 5, 4, None, torch.zeros(10, dtype=torch.int64), torch.device("cpu"))
    assert out is not None and out.sizes is not None
    assert out.sizes.tolist() == [[5, 2], [3, 6], [5, 2], [3, 6], [5, 2]]
    assert out.indices.tolist() == [4, 7, 4, 7, 4]


# ---------------------------------------------------------------------- CUDA
@pytest.mark.cuda
def test_cuda_ragged_epoch_is_sync_free_and_matches_the_cpu(tmp_path):
    root = _tree(tmp_path / "d", SIZES)
    cpu = [(x, y) for x, y in _loader(root, _recipe(re_prob=0.5), max_side=64)]
    loader = _loader(root, _recipe(re_prob=0.5), max_side=64, device="cuda")
    list(loader)  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        with SyncCheck() as check:
            got = [(x, y) for x, y in loader]  # epoch 1
    finally:
        torch.cuda.set_sync_debug_mode(0)
    check.assert_clean()
    loader.set_epoch(0)
    again = [(x, y) for x, y in loader]
    assert len(got) == len(again) == len(cpu)
    for (a, ya), (b, yb) in zip(cpu, again, strict=True):
        assert torch.equal(ya, yb.cpu())
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=2e-3)  # float32 matmul order


@pytest.mark.cuda
def test_cuda_unpack_equals_the_per_image_loop():
    g = torch.Generator().manual_seed(1)
    images = [
        torch.randint(0, 256, (3, int(h), int(w)), dtype=torch.uint8, generator=g)
        for h, w in torch.randint(1, 300, (32, 2), generator=g)
    ]
    data, table = pack_images(images)
    out, _ = unpack(data.cuda(), table, 3)
    assert torch.equal(out.cpu(), unpack_reference(data, table, 3)[0])


@pytest.mark.cuda
def test_cuda_nvjpeg_ragged_batch_has_the_cpu_decodes_sizes(tmp_path):
    root = _tree(tmp_path / "d", SIZES, ext="jpg")
    kwargs = {"max_side": 48, "interpolation": "bilinear", "batch_size": 9, "shuffle": False}
    recipe = EvalRecipe(RecipeConfig(kind="eval", size=16, resize_size=20))
    gpu = _loader(root, recipe, decode="gpu", device="cuda", **kwargs)
    cpu = _loader(root, recipe, **kwargs)
    batch = gpu._to_device(next(gpu._workers.epoch_batches(0)), [])
    reference = cpu._to_device(next(cpu._workers.epoch_batches(0)), [])
    assert torch.equal(batch.sizes, reference.sizes)
    diff = (batch.images.cpu().float() - reference.images.float()).abs()
    assert float(diff.mean()) < 3  # nvJPEG's IDCT and torch's resize against PIL's


def test_the_docs_training_loop_runs_on_a_folder(tmp_path):
    """docs/recipes.md's loop, small: a ragged training loader with a mixing recipe and a
    ragged validation loader with the eval recipe."""
    import torch.nn.functional as F

    root = _tree(tmp_path / "d", SIZES)
    train_recipe = TrainRecipe(
        RecipeConfig(size=16, re_prob=0.25, re_mode="pixel", mixup_alpha=0.8, cutmix_alpha=1.0,
                     mixup_mode="elem", num_classes=2)
    )  # fmt: skip
    common = {"max_side": 64, "draft": True, "interpolation": "bilinear"}
    train = _loader(root, train_recipe, **common)
    val = _loader(root, "imagenet_rrc_val", shuffle=False, **common)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    steps = 0
    for x, soft in train:
        assert x.shape[1:] == (3, 16, 16) and soft.shape[1] == 2
        loss = torch.sum(-soft * F.log_softmax(model(x), dim=-1), dim=-1).mean()
        loss.backward()
        steps += 1
    assert steps == len(train) and torch.isfinite(loss)
    with torch.no_grad():
        x, labels = next(iter(val))
        assert x.shape == (4, 3, 224, 224)  # the preset: short side 256, centre crop 224
        assert labels.dtype == torch.int64


def test_a_resumed_ragged_loader_continues_at_the_next_batch(tmp_path):
    root = _tree(tmp_path / "d", SIZES)
    loader = _loader(root, _recipe(re_prob=0.5))
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    expected = [x for x, _ in it]
    resumed = _loader(root, _recipe(re_prob=0.5))
    resumed.load_state_dict(state)
    got = [x for x, _ in resumed]
    assert len(got) == len(expected) == len(loader) - 1
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_images_at_their_own_sizes_travel_planar_and_rgbx_is_refused_by_name(tmp_path):
    root = _tree(tmp_path / "d", SIZES[:4])
    loader = _loader(root, _recipe())
    assert loader.layout == "planar"
    assert "own sizes" in loader.layout_reason
    with pytest.raises(ValueError, match=r"`layout`='rgbx'.*own sizes \(target_size=None\)"):
        _loader(root, _recipe(), layout="rgbx")


def test_a_training_recipe_on_the_validation_subset_is_refused_unless_asked_for(tmp_path):
    """As the Keras-style augmentation is off there by default: random crops and mixing on
    validation images are refused, an eval recipe runs, augment_validation=True allows it."""
    root = _tree(tmp_path / "d", SIZES)
    split = {"subset": "validation", "validation_split": 0.5}
    with pytest.raises(ValueError, match="subset='validation' with a training `recipe`"):
        _loader(root, _recipe(), **split)
    evaluating = _loader(root, EvalRecipe(RecipeConfig(kind="eval", size=16, resize_size=20)),
                         **split)  # fmt: skip
    assert next(iter(evaluating))[0].shape[-2:] == (16, 16)
    asked = _loader(root, _recipe(), augment_validation=True, **split)
    assert isinstance(asked.recipe, TrainRecipe) and len(asked.dataset) < len(SIZES)
