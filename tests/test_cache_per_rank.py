"""``cache_per_rank=True``: each rank caches only its fixed share (DALI's ``stick_to_shard``);
every sample is still seen once per epoch across the ranks, always by the same rank.

The ranks are simulated in one process (``num_replicas=2, rank=r``): no process group needed.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from conftest import write_tree

import gpuaug
from gpuaug import LoaderConfig

N, WORLD = 11, 2


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("per_rank") / "data", {"a": 6, "b": 5}, (12, 14))


def make(root: Path, rank: int, **kwargs) -> gpuaug.GPULoader:
    on_error = kwargs.pop("on_error", "raise")
    dataset = gpuaug.DirectoryDataset(
        root, target_size=(8, 8), class_mode="sparse", on_error=on_error
    )
    options = dict(
        batch_size=2, seed=5, num_workers=0, device="cpu", cache="host", cache_per_rank=True,
        num_replicas=WORLD, rank=rank, progress=False,
    )  # fmt: skip
    options.update(kwargs)
    return gpuaug.GPULoader(dataset, config=LoaderConfig(**options))


def epoch_ids(loader: gpuaug.GPULoader) -> list[int]:
    epoch = loader.epoch
    out = []
    for step, (x, y) in enumerate(loader):
        idx = loader.sampler.batch(epoch, step)
        assert y.tolist() == loader._targets[idx].tolist()
        decoded = torch.stack([loader.dataset.load(i) for i in idx.tolist()])
        assert torch.equal(x, decoded.float())  # the cache rows of these very samples
        out += idx.tolist()
    return out


def test_each_rank_caches_only_its_share(tree):
    loaders = [make(tree, r) for r in range(WORLD)]
    full = make(tree, 0, cache_per_rank=False)
    rows = [len(lo.cache.images) for lo in loaders]
    assert rows == [math.ceil(N / WORLD), N - math.ceil(N / WORLD) + 1]  # 6 and 6: one repeat
    assert len(full.cache.images) == N
    assert loaders[0].cache.nbytes == full.cache.nbytes * rows[0] // N


def test_the_cached_rows_are_the_share_decoded(tree):
    loader = make(tree, 1)
    indices = torch.unique(loader.sampler.fixed_shard())  # the share, its repeat once
    for row, i in enumerate(indices.tolist()):
        assert torch.equal(loader.cache.images[row], loader.dataset.load(i))


@pytest.mark.parametrize("cache", ["device", "host"])
def test_every_sample_once_per_epoch_across_ranks_and_always_on_the_same_rank(tree, cache):
    loaders = [make(tree, r, cache=cache) for r in range(WORLD)]
    epochs = [[epoch_ids(lo) for _ in range(3)] for lo in loaders]
    for e in range(3):
        seen = epochs[0][e] + epochs[1][e]
        assert set(seen) == set(range(N)) and len(seen) == N + 1  # DistributedSampler padding
    for r in range(WORLD):
        assert sorted(epochs[r][0]) == sorted(epochs[r][1]) == sorted(epochs[r][2])
        assert epochs[r][0] != epochs[r][1]  # shuffled within the share


def test_a_per_rank_cache_resumes_exactly(tree):
    full = make(tree, 1)
    want = [x for _ in range(2) for x, _ in full]
    again = make(tree, 1)
    again.load_state_dict(again.state_dict() | {"epoch": 1, "step": 1})
    got = [x for x, _ in again]
    assert all(torch.equal(a, b) for a, b in zip(got, want[4:], strict=True))


def test_a_disk_cache_per_rank_is_one_file_per_share(tree, tmp_path):
    caches = [make(tree, r, cache="disk", cache_dir=tmp_path).cache for r in range(WORLD)]
    assert len(list(tmp_path.glob("*.u8"))) == WORLD
    assert not make(tree, 0, cache="disk", cache_dir=tmp_path).cache.built
    assert all(c.built for c in caches)


def test_a_bad_file_in_the_share_is_skipped_by_its_rank(tmp_path):
    root = write_tree(tmp_path / "d", {"a": 6, "b": 5}, (12, 14))
    path = root / "a" / "img_002.png"
    path.write_bytes(path.read_bytes()[:60])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaders = [make(root, r, on_error="skip") for r in range(WORLD)]
        shapes = [[x.shape[0] for x, _ in lo] for lo in loaders]
    assert shapes == [[2, 2, 2]] * WORLD  # replaced: the same steps and shapes on both ranks
    skipped = [p for lo in loaders for p, _ in lo.last_skipped]
    assert [Path(p).name for p in skipped] == ["img_002.png"]


def test_cache_per_rank_without_a_cache_is_an_error():
    with pytest.raises(ValueError, match=r"`cache_per_rank`=True .* needs `cache`"):
        LoaderConfig(cache_per_rank=True)


def test_a_state_of_another_seed_is_refused_with_a_per_rank_cache(tree):
    state = make(tree, 0).state_dict() | {"seed": 6}
    loader = make(tree, 0, seed=None)
    with pytest.raises(ValueError, match=r"cache_per_rank=True its cached share depends"):
        loader.load_state_dict(state)


def test_describe_states_what_the_per_rank_cache_does_to_shuffling(tree):
    text = make(tree, 0).describe()
    assert "cache_per_rank: the cache holds this rank's fixed share (6 of 11 images" in text
    assert "a sample is always seen by the same rank" in text
