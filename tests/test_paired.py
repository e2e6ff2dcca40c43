"""gpuaug.data.paired: images/ + masks/ trees, and the loader's (x, mask) batches.

Real data: crops of ``skimage.data.coins`` (JPEG images, their Otsu threshold as palette PNG
masks whose palette colours differ from the indices) and ``skimage.data.astronaut`` (PNG
images in a sub-folder, greyscale masks with label 2 on the bright parts). Tiny sizes.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpuaug import AugmentConfig, ImageLoadError, apply
from gpuaug.augment.targets import apply_mask
from gpuaug.data.paired import (
    PairedDataset,
    find_pairs,
    load_mask,
    pack_mask,
    unpack_mask,
)
from gpuaug.loader.factories import flow_from_paired_directories
from gpuaug.preview import MASK_COLORS, grid_layout, overlay_mask

skimage_data = pytest.importorskip("skimage.data")
skimage_filters = pytest.importorskip("skimage.filters")

SIZE = (24, 32)
CONFIG = AugmentConfig(
    rotation_range=30,
    zoom_range=0.2,
    horizontal_flip=True,
    fill_mode="constant",
    interpolation="nearest",
)


def palette_png(labels: np.ndarray, path: Path) -> None:
    """Save labels as a palette PNG whose colours are not the indices (1 -> (200, 10, 10))."""
    img = Image.fromarray(labels.astype(np.uint8), mode="L").convert("P")
    img.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [0] * (256 * 3 - 9))
    img.save(path)


def build_tree(root: Path, coins: int = 4, astronauts: int = 2) -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    (images / "astro").mkdir(parents=True)
    (masks / "astro").mkdir(parents=True)
    c = skimage_data.coins()
    threshold = skimage_filters.threshold_otsu(c)
    for i in range(coins):
        crop = c[30 + 50 * i : 30 + 50 * i + 48, 40 + 60 * i : 40 + 60 * i + 64][::2, ::2]
        Image.fromarray(crop).convert("RGB").save(images / f"coin{i}.jpg", quality=95)
        palette_png(crop > threshold, masks / f"coin{i}.png")
    a = skimage_data.astronaut()
    for i in range(astronauts):
        crop = a[100 * i : 100 * i + 48, 150 : 150 + 64][::2, ::2]
        Image.fromarray(crop).save(images / "astro" / f"a{i}.png")
        labels = np.where(crop.mean(axis=-1) > 120, 2, 0).astype(np.uint8)
        Image.fromarray(labels, mode="L").save(masks / "astro" / f"a{i}.png")
    return images, masks


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    return build_tree(tmp_path / "data")


def loader(images: Path, masks: Path, **kwargs):
    options = {
        "target_size": SIZE,
        "batch_size": 4,
        "seed": 0,
        "num_workers": 0,
        "progress": False,
        "mask_fill": 255,
    } | kwargs
    return flow_from_paired_directories(images, masks, CONFIG, **options)


# ----------------------------------------------------------------------------- pairing


def test_pairs_by_relative_path_and_stem_in_sorted_order(tree):
    images, masks = tree
    pairs, problems = find_pairs(images, masks)
    rel = [(Path(i).relative_to(images).as_posix(), Path(m).relative_to(masks).as_posix())
           for i, m in pairs]  # fmt: skip
    assert rel == [
        ("astro/a0.png", "astro/a0.png"),
        ("astro/a1.png", "astro/a1.png"),
        *[(f"coin{i}.jpg", f"coin{i}.png") for i in range(4)],
    ]
    assert not any(problems.values())


def test_every_unpaired_file_is_listed_in_one_error(tree):
    images, masks = tree
    (masks / "coin0.png").unlink()
    (masks / "astro" / "a1.png").rename(masks / "astro" / "a9.png")
    with pytest.raises(ValueError, match="problem") as err:
        PairedDataset(images, masks, target_size=SIZE)
    text = str(err.value)
    assert "3 problem(s)" in text
    assert "coin0.jpg (image without mask)" in text
    assert "a1.png (image without mask)" in text
    assert "a9.png (mask without image)" in text
    assert "images/x/a.jpg <-> masks/x/a.png" in text


def test_an_image_and_mask_of_different_sizes_are_named(tree):
    images, masks = tree
    Image.new("L", (10, 10)).save(masks / "coin2.png")
    with pytest.raises(ValueError, match=r"coin2\.png \(size 10x10 != image .*coin2\.jpg.* 32x24"):
        PairedDataset(images, masks, target_size=SIZE)


def test_two_files_with_one_stem_are_refused(tree):
    images, masks = tree
    Image.new("RGB", (32, 24)).save(images / "coin1.png")
    with pytest.raises(ValueError, match=r"coin1\.png \(same stem twice\)"):
        PairedDataset(images, masks, target_size=SIZE)


def test_skip_leaves_the_bad_pairs_out_with_one_warning(tree):
    images, masks = tree
    (masks / "coin0.png").unlink()
    with pytest.warns(UserWarning, match="left out: on_error='skip'"):
        dataset = PairedDataset(images, masks, target_size=SIZE, on_error="skip")
    assert len(dataset) == 5
    assert [Path(p).name for p, _ in dataset.skipped] == ["coin0.jpg"]


def test_no_pair_at_all_is_an_error(tmp_path):
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    with pytest.raises(ValueError, match="Found no image/mask pair"):
        PairedDataset(tmp_path / "i", tmp_path / "m")


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="`masks` folder .* does not exist"):
        PairedDataset(tmp_path, tmp_path / "nope")


def test_a_negative_mask_fill_is_refused(tree):
    with pytest.raises(ValueError, match="`mask_fill` must be a label >= 0"):
        PairedDataset(*tree, mask_fill=-1)


# ----------------------------------------------------------------------------- decoding


def test_palette_masks_keep_their_indices_not_their_colours(tree):
    images, masks = tree
    dataset = PairedDataset(images, masks, target_size=None)
    index = [Path(p).name for p, _ in dataset.samples].index("coin1.jpg")
    image, mask = dataset.load(index)
    expected = np.asarray(Image.open(masks / "coin1.png"))  # the P indices
    assert mask.dtype == torch.uint8 and mask.shape == (1, *image.shape[1:])
    assert set(mask.unique().tolist()) == {0, 1}
    np.testing.assert_array_equal(mask[0].numpy(), expected)


def test_masks_resize_with_nearest_whatever_the_image_interpolation(tree):
    images, masks = tree
    dataset = PairedDataset(images, masks, target_size=(17, 23), interpolation="bilinear")
    for i in range(len(dataset)):
        image, mask = dataset.load(i)
        assert image.shape == (3, 17, 23) and mask.shape == (1, 17, 23)
        source = np.asarray(Image.open(dataset.pairs[i][1]))
        assert set(mask.unique().tolist()) <= set(np.unique(source).tolist())
        expected = Image.open(dataset.pairs[i][1]).resize((23, 17), Image.Resampling.NEAREST)
        np.testing.assert_array_equal(mask[0].numpy(), np.asarray(expected))


def test_16_bit_masks_keep_their_values(tmp_path):
    images, masks = tmp_path / "i", tmp_path / "m"
    images.mkdir()
    masks.mkdir()
    Image.new("RGB", (8, 6)).save(images / "x.png")
    labels = (np.arange(48).reshape(6, 8) * 1000).astype(np.uint16)
    Image.fromarray(labels).save(masks / "x.png")  # mode I;16
    dataset = PairedDataset(images, masks, target_size=None)
    assert dataset.mask_bytes == 2 and dataset.mask_dtype == torch.int32
    _, mask = dataset.load(0)
    assert mask.dtype == torch.int32
    np.testing.assert_array_equal(mask[0].numpy(), labels.astype(np.int32))


@pytest.mark.parametrize("mode", ["1", "L", "P", "I;16", "I"])
def test_every_label_mode_resizes_to_its_own_labels(tmp_path, mode):
    labels = np.arange(12 * 16).reshape(12, 16) // 37 % 2 * (1 if mode in "1LP" else 1000)
    if mode == "1":
        img = Image.fromarray(labels.astype(bool))
    elif mode == "P":
        img = Image.fromarray(labels.astype(np.uint8)).convert("P")
    else:
        img = Image.fromarray(labels.astype({"L": np.uint8, "I;16": np.uint16}.get(mode, np.int32)))
    assert img.mode == mode
    img.save(tmp_path / "m.png" if mode != "I" else tmp_path / "m.tif")
    path = tmp_path / ("m.png" if mode != "I" else "m.tif")
    width = 1 if mode in "1LP" else 2
    mask = load_mask(path, (6, 8), width)
    expected = Image.fromarray(labels.astype(np.int32)).resize((8, 6), Image.Resampling.NEAREST)
    np.testing.assert_array_equal(mask[0].numpy(), np.asarray(expected))


def test_grey_rgb_masks_are_read_and_coloured_ones_refused(tmp_path):
    grey = np.repeat(np.array([[0, 1], [2, 3]], dtype=np.uint8)[..., None], 3, axis=-1)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert load_mask(tmp_path / "grey.png", None)[0].tolist() == [[0, 1], [2, 3]]
    grey[0, 0] = (255, 0, 0)
    Image.fromarray(grey).save(tmp_path / "colour.png")
    with pytest.raises(Exception, match="an RGB mask with colours"):
        load_mask(tmp_path / "colour.png", None)


def test_validation_split_takes_the_first_pairs(tree):
    train = PairedDataset(*tree, target_size=SIZE, validation_split=0.34, subset="training")
    val = PairedDataset(*tree, target_size=SIZE, validation_split=0.34, subset="validation")
    assert len(val) == 2 and len(train) == 4
    assert not set(train.pairs) & set(val.pairs)


@pytest.mark.parametrize("mask_bytes", [1, 2, 4])
def test_pack_and_unpack_round_trip(mask_bytes):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 5, 6), dtype=torch.uint8, generator=g)
    masks = torch.randint(0, min(256**mask_bytes, 2**31 - 1), (3, 1, 5, 6), generator=g)
    packed = torch.stack([pack_mask(i, m, mask_bytes) for i, m in zip(images, masks, strict=True)])
    assert packed.dtype == torch.uint8 and packed.shape == (3, 3 + mask_bytes, 5, 6)
    out_images, out_masks = unpack_mask(packed, mask_bytes)
    assert torch.equal(out_images, images) and torch.equal(out_masks, masks)


# ----------------------------------------------------------------------------- loader


def _decoded(dataset: PairedDataset, indices: torch.Tensor):
    pairs = [dataset.load(int(i)) for i in indices]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def test_batches_are_images_and_masks_warped_with_the_same_params(tree):
    ld = loader(*tree)
    batches = list(ld)
    assert len(batches) == 2
    for step, (x, mask) in enumerate(batches):
        assert mask.dtype == torch.int64 and mask.shape == (x.shape[0], 1, *SIZE)
        replay = ld.replay(0, step)
        images, masks = _decoded(ld.dataset, replay.indices)
        assert torch.equal(x, replay.x) and torch.equal(mask, replay.y)
        assert torch.equal(x, apply(images, replay.params, CONFIG))
        assert torch.equal(mask, apply_mask(masks.long(), replay.params, CONFIG, mask_fill=255))
        # nearest interpolation: the mask's foreground is where the image kept foreground pixels
        assert set(mask.unique().tolist()) <= {0, 1, 2, 255}
    assert any((m == 255).any() for _, m in batches)  # the constant fill reached the masks


@pytest.mark.parametrize("cache", ["device", "host", "disk"])
def test_every_cache_kind_holds_the_masks(tree, tmp_path, cache):
    plain = list(loader(*tree))
    cached = list(loader(*tree, cache=cache, cache_dir=tmp_path / "cache"))
    assert len(plain) == len(cached)
    for (x0, m0), (x1, m1) in zip(plain, cached, strict=True):
        assert torch.equal(x0, x1) and torch.equal(m0, m1)


def test_the_disk_cache_is_rebuilt_when_a_mask_changes(tree, tmp_path):
    images, masks = tree
    first = loader(images, masks, cache="disk", cache_dir=tmp_path / "c")
    assert first.cache.built
    again = loader(images, masks, cache="disk", cache_dir=tmp_path / "c")
    assert not again.cache.built  # up to date: read from disk
    palette_png(np.ones((24, 32)), masks / "coin3.png")
    changed = loader(images, masks, cache="disk", cache_dir=tmp_path / "c")
    assert changed.cache.built


def test_worker_processes_carry_the_masks(tree):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        in_workers = list(loader(*tree, num_workers=1))
    in_process = list(loader(*tree))
    for (x0, m0), (x1, m1) in zip(in_workers, in_process, strict=True):
        assert torch.equal(x0, x1) and torch.equal(m0, m1)


# ----------------------------------------------------------------------------- preview


def test_overlay_tints_labels_and_leaves_the_background():
    image = torch.full((3, 2, 3), 100, dtype=torch.uint8)
    mask = torch.tensor([[0, 1, 2], [255, 0, 1]])
    out = overlay_mask(image, mask, alpha=0.5, ignore=255)
    assert out.shape == (3, 2, 3) and out.dtype == torch.uint8
    assert out[:, 0, 0].tolist() == [100, 100, 100]
    expected = [round(50 + c / 2) for c in MASK_COLORS[0]]
    assert out[:, 0, 1].tolist() == expected and out[:, 1, 2].tolist() == expected
    assert out[:, 1, 0].tolist() == [114, 114, 114]  # ignore: grey (100 + 128) / 2


def test_loader_preview_draws_the_warped_masks_over_the_tiles(tree):
    ld = loader(*tree)
    picture = ld.preview(n=4, rows=2, seed=0)
    layout = grid_layout(4, 2, SIZE, CONFIG)
    assert picture.size == layout.size
    pixels = np.asarray(picture).reshape(-1, 3).astype(int)
    # the coins' label-1 tint (230, 25, 75) blended at 0.5: red clearly above green and blue
    tinted = (pixels[:, 0] - pixels[:, 1] > 60) & (pixels[:, 0] - pixels[:, 2] > 30)
    assert tinted.mean() > 0.01
    assert np.array_equal(np.asarray(ld.preview(n=4, rows=2, seed=0)), np.asarray(picture))


# ----------------------------------------------------------------------------- host syncs


@pytest.mark.parametrize("cache", [None, "device", "host", "disk"])
def test_the_mask_path_dispatches_no_host_sync(tree, tmp_path, cache):
    sync_check = pytest.importorskip("gpuaug.sync_check")
    ld = loader(*tree, cache=cache, cache_dir=tmp_path / "c")
    list(ld)  # warm-up: the cache, the first pass
    with sync_check.SyncCheck() as check:
        n = sum(len(mask) for _ in range(2) for _, mask in ld)
    assert n == 2 * 6
    check.assert_clean()


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_pair_that_fails_to_decode_leaves_with_its_mask(tree, replicas):
    from gpuaug.loader.config import LoaderConfig
    from gpuaug.loader.gpu_loader import GPULoader

    images, masks = tree
    coloured = np.zeros((24, 32, 3), dtype=np.uint8)
    coloured[..., 0] = 200  # an RGB mask with colours: refused when decoded, not when indexed
    Image.fromarray(coloured).save(masks / "coin2.png")
    dataset = PairedDataset(images, masks, target_size=SIZE, on_error="skip", mask_fill=255)
    config = LoaderConfig(batch_size=3, seed=0, num_workers=0, progress=False,
                          num_replicas=replicas, rank=0)  # fmt: skip
    ld = GPULoader(dataset, CONFIG, config)
    with pytest.warns(UserWarning, match="coin2"):
        batches = list(ld)
    bad = [Path(p).name for p, _ in dataset.pairs].index("coin2.jpg")
    for step, (x, mask) in enumerate(batches):
        replay = ld.replay(0, step)
        assert bad not in replay.indices.tolist() and len(x) == len(mask)
        images_, masks_ = _decoded(dataset, replay.indices)
        assert torch.equal(mask, apply_mask(masks_.long(), replay.params, CONFIG, mask_fill=255))
    n = sum(len(x) for x, _ in batches)
    assert n == (5 if replicas == 1 else 3)  # replaced under DDP: every step full


def test_linked_folders_are_paired_only_when_following_links(tree, tmp_path):
    images, masks = tree
    (images / "astro").rename(tmp_path / "astro_images")
    (masks / "astro").rename(tmp_path / "astro_masks")
    (images / "astro").symlink_to(tmp_path / "astro_images", target_is_directory=True)
    (masks / "astro").symlink_to(tmp_path / "astro_masks", target_is_directory=True)
    (tmp_path / "astro_images" / "loop").symlink_to(images, target_is_directory=True)  # a cycle
    assert len(PairedDataset(images, masks, target_size=SIZE)) == 4
    followed = PairedDataset(images, masks, target_size=SIZE, follow_links=True)
    assert len(followed) == 6


@pytest.mark.cuda
@pytest.mark.parametrize("cache", [None, "device", "host"])
def test_cuda_mask_batches_match_the_cpu_and_never_sync(tree, cache):
    sync_check = pytest.importorskip("gpuaug.sync_check")
    cpu = list(loader(*tree, cache=cache, device="cpu"))
    gpu_loader = loader(*tree, cache=cache, device="cuda")
    list(gpu_loader)  # warm-up: the cache, the first pass
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with sync_check.SyncCheck() as check:
            gpu = list(gpu_loader)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    check.assert_clean()
    assert len(gpu) == len(cpu)
    for (xc, mc), (xg, mg) in zip(cpu, gpu, strict=True):
        assert mg.is_cuda and mg.dtype == torch.int64
        torch.testing.assert_close(xg.cpu(), xc, atol=1e-3, rtol=0)
        assert (mg.cpu() != mc).float().mean() < 0.002  # nearest ties may fall apart (ulps)


def _coloured_mask(masks: Path) -> Path:
    coloured = np.zeros((24, 32, 3), dtype=np.uint8)
    coloured[..., 0] = 200  # an RGB mask with colours: refused when decoded, not when indexed
    Image.fromarray(coloured).save(masks / "coin2.png")
    return masks / "coin2.png"


def test_a_mask_that_fails_to_load_is_named_in_last_skipped(tree):
    images, masks = tree
    bad = _coloured_mask(masks)
    ld = loader(images, masks, on_error="skip")
    with pytest.warns(UserWarning, match=re.escape(str(bad))):
        list(ld)
    assert [Path(p) for p, _ in ld.last_skipped] == [bad]


def test_a_mask_that_fails_to_load_is_named_in_the_error(tree):
    images, masks = tree
    bad = _coloured_mask(masks)
    with pytest.raises(ImageLoadError, match=re.escape(f"'{bad}'")) as err:
        list(loader(images, masks, on_error="raise"))
    assert err.value.path == str(bad)


def test_a_failed_mask_keeps_its_path_across_worker_processes():
    import pickle

    from gpuaug.loader.stages.batch import FailureReason

    reason = pickle.loads(pickle.dumps(FailureReason("bad mask", "/m/x.png")))
    assert reason == "bad mask" and reason.path == "/m/x.png"
