"""Validation without augmentation in `gpuaug.flow_from_directory` (gpuaug.augment.validation)."""

from __future__ import annotations

import pytest
import torch
from conftest import write_tree

import gpuaug
from gpuaug.augment.validation import deterministic_config, validation_module

AUG = gpuaug.AugmentConfig(
    rotation_range=90, horizontal_flip=True, rescale=1 / 255, validation_split=0.5
)


def _loader(root, **kw):
    return gpuaug.flow_from_directory(
        root,
        augment=AUG,
        target_size=(8, 8),
        shuffle=False,
        num_workers=0,
        device="cpu",
        seed=0,
        **kw,
    )


def test_deterministic_config_keeps_rescale_and_normalisation_only():
    cfg = deterministic_config(
        gpuaug.AugmentConfig(
            rotation_range=10, zoom_range=0.2, rescale=0.5, featurewise_center=True
        )
    )
    assert not cfg.has_geometry and not cfg.has_flips
    assert cfg.rescale == 0.5 and cfg.featurewise_center


def test_validation_module_shares_the_fitted_statistics():
    train = gpuaug.GPUAugment(gpuaug.AugmentConfig(featurewise_center=True, rotation_range=20))
    train.fit(torch.rand(4, 3, 5, 5) * 255)
    val = validation_module(train)
    assert val.mean is train.mean and val.config.rotation_range == 0


def test_validation_subset_is_not_augmented_by_default(tmp_path):
    write_tree(tmp_path, {"a": 4, "b": 4}, size=(8, 8))
    val = _loader(tmp_path, subset="validation")
    plain = gpuaug.flow_from_directory(
        tmp_path,
        augment=gpuaug.AugmentConfig(rescale=1 / 255, validation_split=0.5),
        target_size=(8, 8),
        shuffle=False,
        num_workers=0,
        device="cpu",
        subset="validation",
    )
    assert torch.equal(next(iter(val))[0], next(iter(plain))[0])
    assert "pass augment_validation=True to turn it on" in val.describe()
    assert _loader(tmp_path, subset="training").augment.config.rotation_range == 90


def test_augment_validation_true_augments_it_as_keras(tmp_path):
    write_tree(tmp_path, {"a": 4, "b": 4}, size=(8, 8))
    on = _loader(tmp_path, subset="validation", augment_validation=True)
    off = _loader(tmp_path, subset="validation")
    assert on.augment.config.rotation_range == 90
    assert not torch.equal(next(iter(on))[0], next(iter(off))[0])


def test_augment_validation_must_be_a_bool(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2}, size=(8, 8))
    with pytest.raises(TypeError, match="`augment_validation` must be a bool"):
        _loader(tmp_path, subset="validation", augment_validation="yes")


def test_augment_seed_reseeds_the_augmentation_but_not_the_order(tmp_path):
    write_tree(tmp_path, {"a": 4, "b": 4}, size=(8, 8))
    kw = dict(augment=AUG, target_size=(8, 8), num_workers=0, device="cpu", seed=3)
    base = gpuaug.flow_from_directory(tmp_path, **kw)
    other = gpuaug.flow_from_directory(tmp_path, augment_seed=11, **kw)
    (xa, ya), (xb, yb) = next(iter(base)), next(iter(other))
    assert torch.equal(base.replay(0, 0).indices, other.replay(0, 0).indices)
    assert torch.equal(ya, yb) and not torch.equal(xa, xb)
    assert base.augment_seed(0, 0) != other.augment_seed(0, 0)
