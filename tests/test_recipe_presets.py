"""Recipe presets with the user's data: overrides, and the number of classes a preset takes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gpuaug
from gpuaug.augment.recipe import RecipeConfig, load_recipe


def _folder(root: Path, classes: int = 3, per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20 + 4 * i, 28, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return root


def _loader(root: Path, recipe) -> gpuaug.GPULoader:
    return gpuaug.flow_from_directory(
        root, target_size=None, recipe=recipe, class_mode="sparse", batch_size=3,
        device="cpu", num_workers=0, progress=False,
    )  # fmt: skip


def test_load_recipe_replaces_the_fields_it_is_given_and_keeps_the_rest():
    preset = load_recipe("imagenet_rrc")
    mine = load_recipe("imagenet_rrc", num_classes=10, size=64)
    assert (mine.num_classes, mine.size) == (10, 64)
    assert preset.num_classes == 1000
    assert mine == RecipeConfig(**{**preset.__dict__, "num_classes": 10, "size": 64})


def test_load_recipe_names_an_override_that_is_no_field():
    with pytest.raises(ValueError, match="'num_class'.*no RecipeConfig field"):
        load_recipe("imagenet_rrc", num_class=10)


def test_a_training_preset_named_to_the_loader_takes_the_datas_classes(tmp_path):
    loader = _loader(_folder(tmp_path), "imagenet_rrc")
    assert loader.recipe.config.num_classes == 3
    x, soft = next(iter(loader))
    assert tuple(soft.shape) == (3, 3)
    assert soft.sum(-1).sub(1).abs().max() < 1e-5


def test_a_recipe_the_user_configured_keeps_its_classes_and_a_mismatch_is_refused(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(ValueError, match="num_classes=1000 must be the data's 3 classes"):
        _loader(root, load_recipe("imagenet_rrc"))
    path = tmp_path / "mine.yaml"
    path.write_text(load_recipe("imagenet_rrc", num_classes=7).to_yaml())
    with pytest.raises(ValueError, match="num_classes=7 must be the data's 3 classes"):
        _loader(root, path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"num_classes": 0}, "`num_classes` must be an int >= 1 or None; got 0"),
        ({"num_classes": True}, "`num_classes` must be an int >= 1 or None; got True"),
        ({"size": 0}, "`size` must be a positive int or"),
        ({"size": (224, 2.5)}, "`size` must be a positive int or"),
        ({"resize_size": 0}, "`resize_size` must be an int >= 1; got 0"),
        ({"resize_size": 2.5}, "`resize_size` must be an int >= 1; got 2.5"),
    ],
)
def test_an_override_out_of_range_is_refused_by_its_field_name(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_recipe("imagenet_rrc", **override)


def test_an_augmentation_preset_given_as_a_recipe_is_named_as_such():
    with pytest.raises(ValueError, match="'strong' is an augmentation preset, not a recipe"):
        load_recipe("strong")


def test_the_recipe_preview_of_a_preset_mixes_over_the_folders_classes(tmp_path):
    from gpuaug.preview import make_recipe_preview

    root = _folder(tmp_path / "d", classes=2, per_class=3)
    grid = make_recipe_preview(root, "imagenet_rrc", n=4, rows=2, target_size=(32, 32))
    assert grid.size[0] > 0
    with pytest.raises(ValueError, match="num_classes`=1, .* has 2 classes"):
        make_recipe_preview(root, load_recipe("imagenet_rrc", num_classes=1), n=4, rows=2)


def test_gpuaug_preview_of_a_preset_describes_the_folders_classes(tmp_path, capsys):
    from gpuaug.cli import main

    root = _folder(tmp_path / "d", classes=2, per_class=3)
    code = main(["preview", str(root), "--recipe", "imagenet_rrc", "--out",
                 str(tmp_path / "r.png"), "--n", "4", "--rows", "2"])  # fmt: skip
    assert code == 0 and (tmp_path / "r.png").is_file()
    text = capsys.readouterr().out
    assert "num_classes=2" in text and "num_classes=1000" not in text


def test_a_mistyped_recipe_preset_lists_the_recipe_presets():
    with pytest.raises(ValueError, match=r"'imagenet_rcc'.*\['imagenet_rrc', 'imagenet_rrc_val'"):
        load_recipe("imagenet_rcc")
