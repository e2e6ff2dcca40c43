"""GPULoader.mix: MixUp / CutMix after the augmentation, soft targets, exact replay, no sync."""

from __future__ import annotations

import pytest
import torch

import gpuaug
from gpuaug.augment.mixup import Mixup
from gpuaug.sync_check import SyncCheck


def _loader(make_tree, class_mode: str = "sparse"):
    root = make_tree({"a": 5, "b": 5}, size=(20, 24))
    return gpuaug.flow_from_directory(
        root, augment=gpuaug.AugmentConfig(rotation_range=20, horizontal_flip=True),
        target_size=(20, 24), class_mode=class_mode, batch_size=4, seed=0, device="cpu",
        num_workers=0, progress=False,
    )  # fmt: skip


def test_a_mixed_loader_yields_soft_targets_and_replays_them(make_tree):
    loader = _loader(make_tree)
    loader.mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", num_classes=2)
    batches = list(loader)
    assert [tuple(y.shape) for _, y in batches] == [(4, 2), (4, 2), (2, 2)]
    for _, y in batches:
        torch.testing.assert_close(y.sum(1), torch.ones(y.shape[0]))
    again = loader.replay(0, 1)
    assert torch.equal(again.x, batches[1][0]) and torch.equal(again.y, batches[1][1])


def test_describe_names_the_mixing_step(make_tree):
    loader = _loader(make_tree)
    loader.mix = Mixup(mixup_alpha=0.8, mode="elem", num_classes=2)
    assert "then Mixup(mixup_alpha=0.8" in loader.describe()


def test_mixing_changes_the_images_and_the_targets(make_tree):
    plain = list(_loader(make_tree))
    loader = _loader(make_tree)
    loader.mix = Mixup(mixup_alpha=1.0, mode="elem", label_smoothing=0.0, num_classes=2)
    mixed = list(loader)
    assert not torch.equal(mixed[0][0], plain[0][0])
    assert mixed[0][1].dtype == torch.float32 and (mixed[0][1] < 1).any()


def test_a_mixed_epoch_makes_no_host_sync(make_tree):
    loader = _loader(make_tree)
    loader.mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", num_classes=2)
    with SyncCheck() as check:
        for _ in loader:
            pass
    check.assert_clean()


def test_mix_needs_class_labels_and_the_datas_class_count(make_tree):
    with pytest.raises(ValueError, match="`mix` needs class labels"):
        _loader(make_tree, class_mode="binary").mix = Mixup(num_classes=2)
    with pytest.raises(ValueError, match="`mix.num_classes` must be the data's 2 classes"):
        _loader(make_tree).mix = Mixup(num_classes=1000)
