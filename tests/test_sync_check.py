"""SyncCheck catches what makes the host wait for the GPU, and the loader's hot path has none.

The checker is tested with negative controls (each forbidden op is caught) and positive ones
(the sync-free spellings are not). Then two epochs of every loader mode run under it after a
warm-up epoch: no cache, device / host / disk caches, decode="gpu" with the decoder on the CPU.
On this CPU-only machine "meta" stands in for a GPU as a copy destination.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image, write_tree
from PIL import Image

import gpuaug
import gpuaug.loader.gpu_loader as loader_mod
from gpuaug.sync_check import SyncCheck, sync_reason

aten = torch.ops.aten


def caught(fn) -> list[str]:
    with SyncCheck() as check:
        fn()
    return [e.reason for e in check.events]


# ---------------------------------------------------------------- negative controls
def test_catches_item():
    t = torch.arange(4.0)
    assert caught(lambda: t.sum().item()) == ["item"]


def test_catches_bool_of_a_tensor():
    t = torch.arange(4.0)
    assert caught(lambda: bool(t.any())) == ["item"]


def test_catches_tolist():
    t = torch.arange(4)
    assert "item" in caught(lambda: t.tolist())


def test_catches_a_boolean_mask_index():
    t = torch.arange(4.0)
    assert caught(lambda: t[t > 1]) == ["bool-mask index"]


def test_catches_a_boolean_mask_assignment():
    t = torch.arange(4.0)

    def assign():
        t[t > 1] = 0.0

    assert "bool-mask index" in caught(assign)


def test_catches_nonzero():
    t = torch.arange(4.0)
    assert caught(lambda: t.nonzero()) == ["nonzero"]


def test_catches_masked_select():
    t = torch.arange(4.0)
    assert caught(lambda: t.masked_select(t > 1)) == ["data-dependent size"]


def test_catches_repeat_interleave_without_output_size():
    t, r = torch.arange(3.0), torch.tensor([1, 2, 1])
    assert "data-dependent size" in caught(lambda: t.repeat_interleave(r))
    assert "data-dependent size" not in caught(lambda: t.repeat_interleave(r, output_size=4))


def test_catches_a_blocking_copy_to_another_device():
    t = torch.arange(4.0)
    assert caught(lambda: t.to("meta")) == ["blocking copy"]


def test_catches_a_non_blocking_copy_from_pageable_memory():
    t = torch.arange(4.0)
    assert caught(lambda: t.to("meta", non_blocking=True)) == ["pageable copy"]


def test_catches_copy_into_a_tensor_on_another_device():
    src, dst = torch.arange(4.0), torch.empty(4, device="meta")
    assert caught(lambda: dst.copy_(src)) == ["blocking copy"]


def test_judges_a_device_to_host_copy_as_a_sync():
    src = torch.empty(4, device="meta")
    reason = sync_reason(aten._to_copy.default, (src,), {"device": torch.device("cpu")})
    assert reason == "device-to-host copy"


def test_raise_now_points_at_the_offending_line():
    t = torch.arange(4.0)
    with pytest.raises(AssertionError, match=r"_local_scalar_dense.*test_sync_check\.py"):
        with SyncCheck(raise_now=True):
            t.sum().item()


def test_assert_clean_lists_the_offending_ops():
    t = torch.arange(4.0)
    with SyncCheck() as check:
        t.nonzero()
    with pytest.raises(AssertionError, match=r"(?s)1 op\(s\).*aten\.nonzero"):
        check.assert_clean()


# ---------------------------------------------------------------- positive controls
def test_sync_free_ops_are_not_flagged():
    t = torch.arange(8.0).reshape(4, 2)
    idx = torch.tensor([3, 0])

    def work():
        t.index_select(0, idx)
        t[idx]
        torch.where(t > 2, t, 0.0)
        t.sum()
        t[1:3]
        torch.stack([t[0], t[2]])
        t.numpy()

    assert caught(work) == []


def test_same_device_copies_are_not_flagged():
    t = torch.arange(4.0)
    assert caught(lambda: torch.empty(4).copy_(t)) == []


# ---------------------------------------------------------------- the loader's hot path
AUG = gpuaug.AugmentConfig(
    rotation_range=30,
    width_shift_range=0.1,
    zoom_range=0.2,
    horizontal_flip=True,
    channel_shift_range=10,
    brightness_range=(0.8, 1.2),
)


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory) -> Path:
    """7 PNGs and 4 JPEGs in two classes (the JPEGs take the nvJPEG path with decode="gpu")."""
    root = write_tree(tmp_path_factory.mktemp("sync") / "data", {"a": 4, "b": 3}, (20, 24))
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(textured_image(rng, 20, 24)).save(root / "a" / f"j{i}.jpg", quality=90)
    return root


MODES = [
    pytest.param({"num_workers": 0}, id="no-cache"),
    pytest.param({"num_workers": 2}, id="no-cache-workers"),
    pytest.param({"cache": "device"}, id="device-cache"),
    pytest.param({"cache": "host"}, id="host-cache"),
    pytest.param({"cache": "disk"}, id="disk-cache"),
    pytest.param({"decode": "gpu", "num_workers": 2}, id="decode-gpu"),
    pytest.param({"num_workers": 2, "layout": "rgbx"}, id="rgbx-workers"),
    pytest.param({"cache": "device", "layout": "rgbx"}, id="rgbx-device-cache"),
    pytest.param({"cache": "host", "layout": "rgbx"}, id="rgbx-host-cache"),
    pytest.param({"decode": "gpu", "num_workers": 2, "layout": "rgbx"}, id="rgbx-decode-gpu"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("class_mode", ["categorical", "sparse"])
def test_two_epochs_dispatch_no_host_sync(mixed_tree, tmp_path, monkeypatch, mode, class_mode):
    # decode="gpu" on CPU
    monkeypatch.setattr(loader_mod, "check_decode", lambda *args, **kwargs: None)
    kwargs = {
        "target_size": (16, 16),
        "batch_size": 4,
        "seed": 3,
        "device": "cpu",
        "num_workers": 0,
        "progress": False,
        "cache_dir": tmp_path,
        "class_mode": class_mode,
        **mode,
    }
    loader = gpuaug.flow_from_directory(mixed_tree, augment=AUG, **kwargs)
    list(loader)  # warm-up: workers, cache, first pass
    with SyncCheck() as check:
        n = sum(len(x) for _ in range(2) for x, _ in loader)
    loader.close()
    assert n == 2 * 11
    check.assert_clean()


def test_under_the_check_the_steps_take_their_device_forms_and_the_cpu_form_returns_after():
    from gpuaug.device import host_reads_free

    t = torch.zeros(2)
    assert host_reads_free(t)
    with SyncCheck():
        assert not host_reads_free(t)
        with SyncCheck():  # nested
            assert not host_reads_free(t)
        assert not host_reads_free(t)
    assert host_reads_free(t)
    with SyncCheck(device_forms=False):
        assert host_reads_free(t)
