"""gpuaug.preview: the augmented-sample grid (rendered in-process; tiny images)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpuaug import AugmentConfig, AugmentParams
from gpuaug.data.directory import DirectoryDataset
from gpuaug.preview import PAD, caption_lines, grid_layout, make_preview

GEOMETRIC = AugmentConfig(
    rotation_range=30,
    width_shift_range=0.2,
    height_shift_range=0.2,
    shear_range=10.0,
    zoom_range=0.2,
    horizontal_flip=True,
    rescale=1.0 / 255,
)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def preview(root: Path, **kwargs) -> Image.Image:
    options = {"n": 4, "rows": 2, "seed": 0, "target_size": (16, 16)} | kwargs
    return make_preview(root, GEOMETRIC, **options)


def test_same_seed_gives_byte_identical_png(image_tree):
    assert png_bytes(preview(image_tree)) == png_bytes(preview(image_tree))


def test_other_seed_gives_other_picture(image_tree):
    assert png_bytes(preview(image_tree, seed=0)) != png_bytes(preview(image_tree, seed=1))


def test_size_matches_grid_layout(image_tree):
    image = preview(image_tree, n=6, rows=3)
    assert image.mode == "RGB"
    assert image.size == grid_layout(6, 3, (16, 16), GEOMETRIC).size


def test_each_row_gets_ceil_n_over_rows_augmentations():
    layout = grid_layout(5, 2, (16, 16))
    assert layout.per_row == 3
    assert layout.columns == 4


def test_small_tiles_are_upscaled_so_captions_fit():
    assert grid_layout(4, 2, (16, 16)).tile_width >= 128
    assert grid_layout(4, 2, (150, 150)).scale == 1


def test_first_column_is_the_unaugmented_image(image_tree):
    image = preview(image_tree, rows=1)
    layout = grid_layout(4, 1, (16, 16), GEOMETRIC)
    dataset = DirectoryDataset(image_tree, target_size=(16, 16), class_mode=None)
    x, y = PAD, layout.header_height + PAD
    tile = image.crop((x, y, x + layout.tile_width, y + layout.tile_height))
    originals = [
        Image.fromarray(dataset.load(i).permute(1, 2, 0).numpy()).resize(
            (layout.tile_width, layout.tile_height), Image.Resampling.NEAREST
        )
        for i in range(len(dataset))
    ]
    assert any(tile.tobytes() == original.tobytes() for original in originals)


def test_augmented_tiles_differ_from_the_original(image_tree):
    image = preview(image_tree, rows=1)
    layout = grid_layout(4, 1, (16, 16), GEOMETRIC)
    y = layout.header_height + PAD
    tiles = [
        image.crop((x, y, x + layout.tile_width, y + layout.tile_height)).tobytes()
        for x in (PAD + c * layout.cell_width for c in range(layout.columns))
    ]
    assert all(tile != tiles[0] for tile in tiles[1:])


@pytest.mark.filterwarnings("ignore:Skipped 1 unreadable")
def test_rows_are_limited_to_the_readable_images(make_tree):
    root = make_tree({"only": 2}, size=(16, 16))
    (root / "only" / "broken.png").write_bytes(b"not a png")
    image = preview(root, n=4, rows=4)
    layout = dataclasses.replace(grid_layout(4, 4, (16, 16), GEOMETRIC), rows=2)
    assert image.size == layout.size


def test_grayscale_folder_renders_as_rgb(image_tree):
    image = preview(image_tree, color_mode="grayscale")
    assert image.mode == "RGB"


def test_preset_name_is_accepted(image_tree):
    image = make_preview(image_tree, "chollet_cats_dogs", n=2, rows=1, target_size=(16, 16))
    assert image.size == grid_layout(2, 1, (16, 16)).size


def test_caption_lines_describe_the_sampled_parameters():
    params = AugmentParams(
        angle_deg=torch.tensor([-12.34]),
        shift_px=torch.tensor([[4.0, -2.5]]),
        shear_deg=torch.tensor([3.1]),
        zoom=torch.tensor([[0.93, 1.07]]),
        flip_h=torch.tensor([True]),
        flip_v=torch.tensor([False]),
        channel_shift=torch.tensor([5.0]),
        brightness=torch.tensor([1.2]),
    )
    assert caption_lines(params, 0) == [
        "rotate -12.3\N{DEGREE SIGN}",
        "shift x +4.0, y -2.5",
        "shear +3.1\N{DEGREE SIGN}",
        "zoom x 0.93, y 1.07",
        "flip h",
    ]
    assert caption_lines(params, 0, extras=True)[-1] == "bright 1.20, ch +5.0"


def test_zero_n_is_rejected(image_tree):
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        preview(image_tree, n=0)


def test_non_positive_target_size_is_rejected(image_tree):
    with pytest.raises(ValueError, match="`target_size` must be positive"):
        preview(image_tree, target_size=(0, 16))


def test_folder_whose_images_fail_to_decode_is_rejected(make_tree):
    root = make_tree({"a": 1}, size=(16, 16))
    path = root / "a" / "img_000.png"
    path.write_bytes(path.read_bytes()[:60])  # the header survives, the pixels do not
    with pytest.raises(ValueError, match="no readable image in .*img_000.png"):
        preview(root)


def _first_tile(image: Image.Image, layout) -> bytes:
    x, y = PAD, layout.header_height + PAD
    return image.crop((x, y, x + layout.tile_width, y + layout.tile_height)).tobytes()


def _tiles_of(dataset: DirectoryDataset, layout) -> set[bytes]:
    return {
        Image.fromarray(dataset.load(i).permute(1, 2, 0).numpy())
        .resize((layout.tile_width, layout.tile_height), Image.Resampling.NEAREST)
        .tobytes()
        for i in range(len(dataset))
    }


def test_a_dataset_is_previewed_with_its_own_subset_and_size(make_tree):
    root = make_tree({"cats": 5, "dogs": 5}, size=(20, 24))
    validation = DirectoryDataset(
        root, target_size=(12, 12), validation_split=0.4, subset="validation"
    )
    training = DirectoryDataset(root, target_size=(12, 12), validation_split=0.4, subset="training")
    image = make_preview(validation, GEOMETRIC, n=2, rows=1, seed=3, target_size=(99, 99))
    layout = grid_layout(2, 1, (12, 12), GEOMETRIC)
    assert image.size == layout.size
    first = _first_tile(image, layout)
    assert first in _tiles_of(validation, layout)
    assert first not in _tiles_of(training, layout)


def test_loader_preview_shows_the_loaders_images_and_augmentation(image_tree):
    import gpuaug

    loader = gpuaug.flow_from_directory(
        image_tree, augment=GEOMETRIC, target_size=(16, 16), device="cpu", num_workers=0
    )
    image = loader.preview(n=4, rows=2, seed=0)
    direct = make_preview(image_tree, GEOMETRIC, n=4, rows=2, seed=0, target_size=(16, 16))
    assert image.size == grid_layout(4, 2, (16, 16), GEOMETRIC).size
    assert image.tobytes() == direct.tobytes()
    assert image.tobytes() != loader.preview(n=4, rows=2, seed=1).tobytes()


# ----------------------------------------------------------------------------- bounds (12.4)


def test_too_many_tiles_are_refused_before_any_work():
    from gpuaug.preview import MAX_TILES

    with pytest.raises(ValueError, match=f"`n` must be at most {MAX_TILES} augmented tiles"):
        grid_layout(100_000, 1, (150, 150))


def test_a_grid_of_too_many_pixels_is_refused_naming_the_layout():
    with pytest.raises(ValueError, match="megapixels, more than 50: use fewer tiles per row"):
        grid_layout(1024, 1, (200, 200))
    with pytest.raises(ValueError, match="smaller `target_size` \\(4000x4000\\)"):
        grid_layout(16, 4, (4000, 4000))


def test_the_largest_allowed_grids_fit_the_pixel_bound():
    from gpuaug.preview import MAX_PIXELS, MAX_TILES

    w, h = grid_layout(MAX_TILES, 32, (64, 64)).size
    assert w * h <= MAX_PIXELS


def test_make_preview_refuses_before_reading_the_folder(tmp_path):
    with pytest.raises(ValueError, match="`n` must be at most"):
        make_preview(tmp_path / "never-read", GEOMETRIC, n=100_000, rows=1)


# ----------------------------------------------------------------------------- recipes


def _recipe_config():
    from gpuaug.augment.recipe import RecipeConfig

    return RecipeConfig(
        size=32, re_prob=0.6, re_mode="pixel", mixup_alpha=0.8, cutmix_alpha=1.0,
        mixup_mode="elem", num_classes=2,
    )  # fmt: skip


def _recipe_preview(root: Path, **kwargs) -> Image.Image:
    from gpuaug.preview import make_recipe_preview

    options = {"n": 6, "rows": 2, "seed": 0, "target_size": (24, 32)} | kwargs
    return make_recipe_preview(root, _recipe_config(), **options)


def test_a_recipe_preview_has_the_layout_of_its_output_size_and_replays_by_seed(image_tree):
    from gpuaug.preview import RECIPE_CAPTION_LINES

    first, again, other = (_recipe_preview(image_tree, seed=s) for s in (0, 0, 1))
    layout = dataclasses.replace(grid_layout(6, 2, (32, 32)), caption_lines=RECIPE_CAPTION_LINES)
    assert first.size == layout.size
    assert png_bytes(first) == png_bytes(again)
    assert png_bytes(first) != png_bytes(other)


def test_a_recipe_preview_of_a_folder_whose_images_fail_to_decode_is_rejected(make_tree):
    root = make_tree({"a": 1, "b": 1}, size=(16, 16))
    for path in root.glob("*/img_000.png"):
        path.write_bytes(path.read_bytes()[:60])  # the header survives, the pixels do not
    with pytest.raises(ValueError, match="no readable image in .*img_000.png"):
        _recipe_preview(root)


def test_a_recipe_preview_in_another_colour_mode_names_color_mode(image_tree):
    with pytest.raises(ValueError, match="`color_mode`='grayscale' gives 1"):
        _recipe_preview(image_tree, color_mode="grayscale")


def _assert_recipe_tiles(picture: np.ndarray, expected: torch.Tensor) -> None:
    """Each augmented tile of a 6-tile, 2-row recipe preview at 32 x 32 is ``expected``'s."""
    from gpuaug.preview import RECIPE_CAPTION_LINES

    layout = dataclasses.replace(grid_layout(6, 2, (32, 32)), caption_lines=RECIPE_CAPTION_LINES)
    for i in range(6):
        row, column = divmod(i, 3)
        x = PAD + (column + 1) * layout.cell_width
        y = layout.header_height + row * layout.cell_height + PAD
        tile = picture[y : y + layout.tile_height : layout.scale, x : x + layout.tile_width]
        tile = tile[:, :: layout.scale]
        assert np.array_equal(tile, expected[i].permute(1, 2, 0).numpy())


def test_recipe_tiles_are_the_recipes_outputs_with_the_normalisation_undone(image_tree):
    from gpuaug.augment.recipe import TrainRecipe
    from gpuaug.preview import _pick_sources

    picture = np.asarray(_recipe_preview(image_tree, seed=3))
    # the same sources and batch as the preview, run by hand
    dataset = DirectoryDataset(image_tree, target_size=(24, 32), class_mode=None)
    sources = _pick_sources(dataset, 2, torch.Generator().manual_seed(3), image_tree)
    batch = torch.stack([image for _, _, image in sources]).repeat_interleave(3, dim=0)
    labels = torch.tensor([dataset.classes.index(c) for _, c, _ in sources]).repeat_interleave(3)
    recipe = TrainRecipe(_recipe_config())
    out, _ = recipe(batch, labels, seed=3)
    cfg = recipe.config
    shown = out * torch.tensor(cfg.std).view(1, 3, 1, 1) + torch.tensor(cfg.mean).view(1, 3, 1, 1)
    expected = (shown * 255).round().clamp(0, 255).to(torch.uint8)
    _assert_recipe_tiles(picture, expected)


def test_a_recipe_preview_of_images_at_their_own_sizes_crops_each_from_its_own_pixels(tmp_path):
    """A data set with target_size=None (the ragged loader's): the batch is the padded one
    with each image's size, so every crop lies inside its own image."""
    from gpuaug.augment.recipe import TrainRecipe
    from gpuaug.loader.stages.ragged import pack_images, unpack
    from gpuaug.preview import _pick_sources, make_recipe_preview

    rng = np.random.default_rng(0)
    for name, (h, w) in {"a": (30, 44), "b": (40, 26)}.items():
        (tmp_path / name).mkdir()
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / name / "img.png")
    dataset = DirectoryDataset(tmp_path, target_size=None, class_mode=None)
    picture = np.asarray(make_recipe_preview(dataset, _recipe_config(), n=6, rows=2, seed=3))
    sources = _pick_sources(dataset, 2, torch.Generator().manual_seed(3), tmp_path)
    padded, sizes = unpack(*pack_images([image for _, _, image in sources]), 3)
    batch, sizes = padded.repeat_interleave(3, dim=0), sizes.repeat_interleave(3, dim=0)
    labels = torch.tensor([dataset.classes.index(c) for _, c, _ in sources]).repeat_interleave(3)
    recipe = TrainRecipe(_recipe_config())
    out, _ = recipe(batch, labels, seed=3, sizes=sizes)
    crop = recipe.last_params.crop
    inside = crop.top_left_px + crop.size_px <= sizes
    assert bool(inside.all())  # no crop reads the padding
    cfg = recipe.config
    shown = out * torch.tensor(cfg.std).view(1, 3, 1, 1) + torch.tensor(cfg.mean).view(1, 3, 1, 1)
    expected = (shown * 255).round().clamp(0, 255).to(torch.uint8)
    _assert_recipe_tiles(picture, expected)


def test_recipe_captions_name_each_tiles_own_draws():
    from gpuaug.augment.auto_augment import OPS
    from gpuaug.augment.recipe import TrainRecipe
    from gpuaug.preview import recipe_caption_lines

    recipe = TrainRecipe(_recipe_config())
    x = torch.randint(0, 256, (8, 3, 40, 48), generator=torch.Generator().manual_seed(0))
    recipe(x.to(torch.uint8), torch.arange(8) % 2, seed=5)
    p = recipe.last_params
    mixed = erased = 0
    for i in range(8):
        crop, op, erase, mix = recipe_caption_lines(p, i, per_row=4)
        h, w = p.crop.size_px[i].tolist()
        top, left = p.crop.top_left_px[i].tolist()
        assert crop.startswith(f"crop {h}x{w} at {top},{left}")
        assert crop.endswith(" flip") == bool(p.crop.flip_h[i])
        assert op.startswith(OPS[int(p.auto_augment.op[i, 0])])
        if bool(p.erasing.active[i, 0]):
            erased += 1
            t, left_, eh, ew = p.erasing.box_tlhw_px[i, 0].tolist()
            assert erase == f"erase {eh}x{ew} at {t},{left_}"
        else:
            assert erase == "not erased"
        j = int(p.mix.partner[i])
        if j != i and float(p.mix.lam[i]) < 1:
            mixed += 1
            kind = "CutMix" if bool(p.mix.use_cutmix[i]) else "MixUp"
            assert mix == f"{kind} r{j // 4 + 1}c{j % 4 + 1} lam {float(p.mix.lam[i]):.2f}"
    assert mixed and erased  # both kinds of caption were checked


def test_a_recipe_preview_refuses_an_eval_recipe_and_too_many_classes(image_tree):
    from gpuaug.augment.recipe import RecipeConfig
    from gpuaug.preview import make_recipe_preview

    with pytest.raises(ValueError, match="must be a training recipe"):
        make_recipe_preview(image_tree, "imagenet_rrc_val", n=2, rows=1)
    one_class = dataclasses.replace(_recipe_config(), num_classes=1)
    assert isinstance(one_class, RecipeConfig)
    with pytest.raises(ValueError, match="`num_classes`=1.*has 2 classes"):
        make_recipe_preview(image_tree, one_class, n=2, rows=1, target_size=(24, 32))
