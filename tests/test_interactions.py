"""Features that meet: each built and tested on its own, checked here together."""

from __future__ import annotations

import pytest
import torch
from conftest import write_tree

import gpuaug
from gpuaug.augment.mixup import Mixup


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("together") / "data", {"a": 4, "b": 4}, (12, 16))


def _loader(tree, **kwargs):
    options = dict(
        target_size=(8, 8), batch_size=4, class_mode="sparse", seed=1, device="cpu",
        num_workers=0,
    )  # fmt: skip
    options.update(kwargs)
    return gpuaug.flow_from_directory(tree, **options)


def test_describe_counts_mixup_as_randomness_without_augmentation(tree):
    loader = _loader(tree, augment="none")
    assert "no random augmentation" in loader.describe()
    loader.mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=2)
    assert "no random augmentation" not in loader.describe()


def test_describe_names_the_augment_seed_the_batches_are_drawn_from(tree):
    loader = _loader(tree, augment="chollet_cats_dogs", augment_seed=7)
    text = loader.describe(verbose=True)
    assert "mix_seed(augment_seed=7," in text
    assert "mix_seed(seed," in _loader(tree, augment="chollet_cats_dogs").describe(verbose=True)


def test_a_validation_loader_keeps_the_training_modules_layout_and_backend(tree):
    aug = gpuaug.GPUAugment(
        "chollet_cats_dogs", memory_format=torch.channels_last, backend="reference"
    )
    val = _loader(tree, augment=aug, validation_split=0.5, subset="validation")
    x, _ = next(iter(val))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert val.augment.backend == "reference"


def test_flow_from_shards_suggests_the_closest_keyword(tmp_path):
    with pytest.raises(TypeError, match=r"'batchsize'; did you mean 'batch_size'\?"):
        gpuaug.flow_from_shards(str(tmp_path / "x-{0..1}.tar"), batchsize=3)


def test_prepare_with_kornia_stages_resolves_the_keras_stage_in_float32():
    """The Keras stage before kornia stages runs in float32 whatever the module's dtype."""
    pytest.importorskip("kornia")
    pytest.importorskip("triton")
    import kornia.augmentation as K

    from gpuaug.augment.backends import triton as fused

    if not fused.triton_available():
        pytest.skip("triton cannot run here")
    aug = gpuaug.GPUAugment(
        "chollet_cats_dogs", dtype=torch.float64, backend="triton",
        kornia=[K.ColorJiggle(0.1, p=1.0)],
    )  # fmt: skip
    aug.prepare((3, 8, 8), "cpu")  # float64 would be refused by the triton backend


def test_keras_extra_inputs_follow_each_iteration_even_nested():
    """``flow((x, x_misc), y)``: an iteration started inside another gets its own rows."""
    import numpy as np

    x = np.zeros((8, 6, 6, 3), np.uint8)
    it = gpuaug.ImageDataGenerator().flow(
        (x, np.arange(8)), np.arange(8), batch_size=2, shuffle=False, device="cpu"
    )
    outer = iter(it)
    next(outer)
    for (_, misc), y in iter(it):
        assert torch.equal(misc.to(y.dtype), y)
