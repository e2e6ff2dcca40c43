"""The recipe: presets, the steps in timm's order, replay, no host sync, the eval transform."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from gpuaug.augment.config import preset_dir
from gpuaug.augment.recipe import EvalRecipe, RecipeConfig, TrainRecipe, load_recipe
from gpuaug.sync_check import SyncCheck

SMALL = RecipeConfig(
    size=16, re_prob=0.5, re_mode="pixel", mixup_alpha=0.8, cutmix_alpha=1.0,
    mixup_mode="elem", num_classes=5,
)  # fmt: skip


def _batch(n: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 40, 48), generator=gen, dtype=torch.uint8)
    return x, torch.randint(0, 5, (n,), generator=gen)


def test_the_presets_load_and_round_trip_yaml():
    train, val = load_recipe("imagenet_rrc"), load_recipe("imagenet_rrc_val")
    assert train.kind == "train" and train.auto_augment == "trivial_augment_wide"
    assert (train.re_prob, train.mixup_alpha, train.cutmix_alpha) == (0.25, 0.8, 1.0)
    assert val.kind == "eval" and (val.resize_size, val.output_size) == (256, (224, 224))
    assert RecipeConfig.from_yaml(train.to_yaml()) == train
    assert (preset_dir() / "imagenet_rrc.yaml").is_file()


def test_the_training_batch_has_the_recipes_shapes_and_soft_targets():
    recipe = TrainRecipe(SMALL)
    x, y = _batch()
    out, soft = recipe(x, y, seed=3)
    assert out.shape == (8, 3, 16, 16) and out.dtype == torch.float32
    assert soft.shape == (8, 5)
    torch.testing.assert_close(soft.sum(1), torch.ones(8))


def test_the_same_seed_gives_the_same_batch_and_replay_reproduces_it():
    recipe = TrainRecipe(SMALL)
    x, y = _batch()
    out, soft = recipe(x, y, seed=3)
    again, soft_again = recipe(x, y, seed=3)
    replay, soft_replay = recipe(x, y, params=recipe.last_params)
    other, _ = recipe(x, y, seed=4)
    assert torch.equal(out, again) and torch.equal(soft, soft_again)
    assert torch.equal(out, replay) and torch.equal(soft, soft_replay)
    assert not torch.equal(out, other)


def test_without_erasing_or_mixing_the_steps_are_crop_then_trivialaugment_then_normalise():
    cfg = RecipeConfig(size=16, num_classes=5)
    recipe = TrainRecipe(cfg)
    x, y = _batch(4)
    out, labels = recipe(x, y, seed=0)
    p = recipe.last_params
    from gpuaug.augment.rrc import resized_crop

    cropped = resized_crop(x, p.crop, (16, 16)).round().clamp(0, 255)
    tv = v2.TrivialAugmentWide()
    norm = v2.Normalize(cfg.mean, cfg.std)
    for i in range(4):
        name = p.auto_augment.names(i)[0]
        img = tv._apply_image_or_video_transform(
            cropped[i].to(torch.uint8), name, float(p.auto_augment.magnitude[i, 0]),
            interpolation=tv.interpolation, fill=tv._fill,
        )  # fmt: skip
        expected = norm(img.float() / 255)
        if name in ("ShearX", "ShearY", "Rotate"):  # float32 nearest ties
            assert (out[i] - expected).abs().gt(1e-4).double().mean() < 2e-3
        else:
            torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-5)
    assert torch.equal(labels, y)


def test_a_training_batch_makes_no_host_sync_in_the_device_form(monkeypatch):
    import gpuaug.augment.auto_augment as auto_augment
    import gpuaug.augment.erasing as erasing
    import gpuaug.augment.rrc as rrc

    # the form a device takes: what would sync there is recorded on the CPU all the same
    for module in (auto_augment, erasing, rrc):
        monkeypatch.setattr(module, "host_reads_free", lambda t: False)
    recipe = TrainRecipe(SMALL)
    x, y = _batch()
    with SyncCheck() as check:
        recipe(x, y, seed=1)
    check.assert_clean()


def test_on_the_cpu_only_the_crops_op_groups_and_erased_pixels_are_read_on_the_host():
    recipe = TrainRecipe(SMALL)
    x, y = _batch()
    with SyncCheck(device_forms=False) as check:
        recipe(x, y, seed=1)
    places = {e.where.split(":")[0] for e in check.events}
    # mixup.py: the targets' range check, on the CPU only
    assert places == {"rrc.py", "auto_augment.py", "erasing.py", "mixup.py"}
    with SyncCheck() as check:  # the forms a device runs read nothing back
        recipe(x, y, seed=1)
    check.assert_clean()


def test_describe_shows_each_steps_params_of_an_image():
    recipe = TrainRecipe(SMALL)
    x, y = _batch()
    recipe(x, y, seed=1)
    text = recipe.describe(recipe.last_params, 2)
    assert "RandomResizedCrop" in text and "rows" in text
    assert "TrivialAugmentWide" in text and "Mixup" in text and "lam=" in text


def test_a_batch_without_targets_is_not_mixed_and_its_params_say_so():
    recipe = TrainRecipe(SMALL)
    x, y = _batch()
    out, none = recipe(x, seed=1)
    assert none is None and recipe.last_params.mix is None
    assert "lam=" not in recipe.describe(recipe.last_params, 0)
    mixed, _ = recipe(x, y, seed=1)
    assert recipe.last_params.mix is not None and not torch.equal(out, mixed)


def test_eval_equals_torchvisions_resize_centre_crop_normalise():
    cfg = RecipeConfig(kind="eval", size=16, resize_size=20)
    x = torch.rand(2, 3, 30, 45) * 255
    tf = v2.Compose([v2.Resize(20), v2.CenterCrop(16)])
    norm = v2.Normalize(cfg.mean, cfg.std)
    expected = torch.stack([norm(tf(x[i]) / 255) for i in range(2)])
    torch.testing.assert_close(EvalRecipe(cfg)(x), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "test"}, "`kind` must be"),
        ({"auto_augment": "autoaugment"}, "`auto_augment` must be one of"),
        ({"mean": (0.5,), "std": (0.5, 0.5)}, "`mean` and `std`"),
        # the fields the steps' modules name otherwise (flip_p, prob, switch_prob, mode, ...)
        ({"hflip": 1.5}, "`hflip` must be in"),
        ({"mixup_alpha": 0.8, "num_classes": 3, "mixup_prob": 2.0}, "`mixup_prob` must be in"),
        ({"cutmix_alpha": 1.0, "num_classes": 3, "mixup_switch_prob": -1}, "`mixup_switch_prob`"),
        ({"mixup_alpha": 0.8, "num_classes": 3, "mixup_mode": "image"}, "`mixup_mode` must be"),
        ({"auto_augment": "rand_augment", "ra_magnitude": 31}, "`ra_magnitude` must be"),
        ({"auto_augment": "rand_augment", "ra_num_ops": -1}, "`ra_num_ops` must be"),
        ({"auto_augment": "rand_augment", "ra_num_ops": True}, "`ra_num_ops` must be"),
        ({"num_magnitude_bins": 1}, "`num_magnitude_bins` must be an int >= 2"),
        ({"num_magnitude_bins": 31.0}, "`num_magnitude_bins` must be an int >= 2"),
        ({"mean": (0.5,) * 4, "std": (0.5,) * 4}, "`auto_augment`='trivial_augment_wide' runs"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RecipeConfig(**kwargs)


@pytest.mark.parametrize("channels", [1, 4])
def test_images_with_another_channel_count_than_the_mean_are_refused_by_both_recipes(channels):
    x = torch.randint(0, 256, (2, channels, 30, 40), dtype=torch.uint8)
    for recipe in (TrainRecipe(RecipeConfig(size=16)), EvalRecipe("imagenet_rrc_val")):
        with pytest.raises(ValueError, match=f"`images` have {channels} channels"):
            recipe(x)


def test_mixing_without_num_classes_is_refused():
    with pytest.raises(ValueError, match="`num_classes` must be set"):
        TrainRecipe(RecipeConfig(mixup_alpha=0.8))


def test_an_unknown_key_in_a_recipe_file_is_named():
    with pytest.raises(ValueError, match="unknown recipe keys \\['re_probability'\\]"):
        RecipeConfig.from_yaml("recipe: train\nre_probability: 0.5\n")


def test_the_docs_training_loop_runs_on_a_folder(make_tree):
    import torch.nn.functional as F

    import gpuaug

    root = make_tree({"a": 3, "b": 3}, size=(40, 48))
    train = gpuaug.flow_from_directory(
        root, target_size=(40, 48), class_mode="sparse", batch_size=4, seed=0, device="cpu",
        num_workers=0, progress=False,
    )  # fmt: skip
    cfg = RecipeConfig(
        size=16,
        re_prob=0.25,
        re_mode="pixel",
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        mixup_mode="elem",
        num_classes=2,
    )
    recipe = TrainRecipe(cfg)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    seen = []
    for step, (images, labels) in enumerate(train):
        x, soft = recipe(images, labels, seed=train.augment_seed(train.epoch, step))
        loss = torch.sum(-soft * F.log_softmax(model(x), dim=-1), dim=-1).mean()
        loss.backward()
        seen.append(x)
    assert len(seen) == 2 and torch.isfinite(loss)
    evaluate = EvalRecipe(RecipeConfig(kind="eval", size=16, resize_size=18))
    assert evaluate(images).shape == (images.shape[0], 3, 16, 16)
