"""DDP without silent divergence, in one process: which GPU ``"cuda"`` means under torchrun, the
store check that names the rank whose data or seed differs, the seed key."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import gpuaug
from gpuaug.device import cuda_index, resolve_device
from gpuaug.loader.agreement import RankMismatchError, check_ranks, data_digest
from gpuaug.loader.sampler import _shared_random_seed


def test_cuda_without_index_is_local_rank_under_torchrun():
    assert cuda_index("3", current=0, count=4) == (3, None)


def test_cuda_without_index_keeps_a_device_set_with_set_device():
    assert cuda_index("3", current=2, count=4) == (2, None)


def test_cuda_without_index_outside_torchrun_is_the_current_device():
    assert cuda_index(None, current=0, count=4) == (0, None)


def test_one_visible_gpu_per_process_is_used_silently():
    assert cuda_index("3", current=0, count=1) == (0, None)


def test_a_local_rank_past_the_visible_gpus_warns():
    index, warning = cuda_index("5", current=0, count=4)
    assert index == 0
    assert "LOCAL_RANK=5 but only 4 CUDA devices are visible" in warning


def _two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_resolve_device_reads_local_rank_from_the_environment(monkeypatch):
    _two_gpus(monkeypatch)
    assert resolve_device("cuda", env={"LOCAL_RANK": "1"}) == torch.device("cuda", 1)


def test_resolve_device_keeps_cpu_and_explicit_indices(monkeypatch):
    assert resolve_device("cpu", env={"LOCAL_RANK": "1"}) == torch.device("cpu")
    _two_gpus(monkeypatch)
    assert resolve_device("cuda:0", env={"LOCAL_RANK": "1"}) == torch.device("cuda", 0)


ENTRY = {"num_samples": 10, "digest": "ab", "seed": 1, "batch_size": 2, "steps_per_epoch": 5}


def test_ranks_with_the_same_entry_pass():
    store = dist.HashStore()
    check_ranks(store, "s", 0, 2, ENTRY)
    check_ranks(store, "s", 1, 2, dict(ENTRY))


def test_the_rank_arriving_second_names_the_rank_whose_data_differs():
    store = dist.HashStore()
    check_ranks(store, "s", 1, 3, ENTRY)
    with pytest.raises(RankMismatchError, match=r"rank 1 and rank 2 .* data set size 10 there, 9"):
        check_ranks(store, "s", 2, 3, ENTRY | {"num_samples": 9})


def test_a_different_seed_is_named():
    store = dist.HashStore()
    check_ranks(store, "s", 0, 2, ENTRY)
    with pytest.raises(RankMismatchError, match=r"rank 0 and rank 1 .* seed 1 there, 2 here"):
        check_ranks(store, "s", 1, 2, ENTRY | {"seed": 2})


def test_a_rank_arriving_first_does_not_wait():
    check_ranks(dist.HashStore(), "s", 0, 64, ENTRY)  # nobody else there yet: returns


def test_the_digest_ignores_where_the_data_is_mounted(make_tree):
    a = gpuaug.DirectoryDataset(make_tree({"x": 3, "y": 2}), target_size=(8, 8))
    b = gpuaug.DirectoryDataset(make_tree({"x": 3, "y": 2}), target_size=(8, 8))
    assert a.root != b.root
    assert data_digest(a) == data_digest(b)


def test_the_digest_sees_another_file_list(make_tree):
    a = gpuaug.DirectoryDataset(make_tree({"x": 3, "y": 2}), target_size=(8, 8))
    b = gpuaug.DirectoryDataset(make_tree({"x": 3, "z": 2}), target_size=(8, 8))
    assert data_digest(a) != data_digest(b)


def test_the_seed_agreement_key_has_no_per_process_count(monkeypatch):
    """A sampler made on one rank only must not shift the seeds the next ones agree on."""
    store = dist.HashStore()
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr("gpuaug.loader.sampler._process_group_store", lambda: store)
    first = _shared_random_seed((10, 2, "data"))
    assert _shared_random_seed((10, 2, "data")) == first
    assert store.get("gpuaug/seed/10-2-data").decode() == str(first)
