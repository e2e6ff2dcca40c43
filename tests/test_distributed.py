"""Under torch.distributed: disjoint shards per epoch, equal lengths, per-rank augmentation;
no collective in a constructor; the same steps and shapes on every rank whatever files fail;
one rank builds the disk cache.

Two CPU processes on the gloo backend, rendezvous through a file in tmp_path.
"""

from __future__ import annotations

import datetime
import json
import math
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp
from conftest import write_tree

import gpuaug

WORLD = 2
N_IMAGES = 7  # odd: DistributedSampler pads one image so both ranks get 4
AUG = gpuaug.AugmentConfig(rotation_range=40, horizontal_flip=True)


def _run_epochs(loader, epochs: int) -> dict:
    out = {"seed": loader.seed, "len": len(loader), "epochs": []}
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        indices, angles, steps = [], [], 0
        for step, (x, _) in enumerate(loader):
            r = loader.replay(epoch, step)
            if not torch.equal(r.x, x):
                raise AssertionError(f"replay differs at epoch {epoch} step {step}")
            indices += r.indices.tolist()
            angles += r.params.angle_deg.tolist()
            steps += 1
        out["epochs"].append({"indices": indices, "angles": angles, "steps": steps})
    return out


_COLLECTIVES = (
    "broadcast",
    "broadcast_object_list",
    "all_gather",
    "all_gather_object",
    "all_reduce",
    "barrier",
    "gather_object",
    "scatter_object_list",
)


class CountingCollectives:
    """Counts the torch.distributed collectives called inside the block (by name)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __enter__(self) -> CountingCollectives:
        self.saved = {name: getattr(dist, name) for name in _COLLECTIVES}
        for name, fn in self.saved.items():

            def counting(*args, _name=name, _fn=fn, **kwargs):
                self.calls.append(_name)
                return _fn(*args, **kwargs)

            setattr(dist, name, counting)
        return self

    def __exit__(self, *exc) -> None:
        for name, fn in self.saved.items():
            setattr(dist, name, fn)


def _init(rank: int, rdv: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{rdv}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=30),
    )


def _rank_main(rank: int, root: str, rdv: str, out: str) -> None:
    _init(rank, rdv)
    try:
        common = {
            "augment": AUG,
            "target_size": (8, 8),
            "batch_size": 2,
            "device": "cpu",
            "num_workers": 0,
            "progress": False,
        }
        with CountingCollectives() as counted:
            seeded = gpuaug.flow_from_directory(root, seed=7, **common)
            unseeded = gpuaug.flow_from_directory(root, seed=None, **common)
        if rank == 0:  # a loader made on one rank only (a validation loader, a preview)
            with counted:
                lonely = gpuaug.flow_from_directory(root, seed=None, **{**common, "batch_size": 3})
            next(iter(lonely))
        mine = {
            "rank": rank,
            "collectives_in_constructors": counted.calls,
            "stats": seeded.stats(),
            "seeded": _run_epochs(seeded, 2),
            "unseeded": _run_epochs(unseeded, 1),
        }
        gathered: list = [None] * WORLD
        dist.all_gather_object(gathered, mine)
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def _launch(fn, base: Path, root: Path) -> list[dict]:
    out = base / "result.json"
    ctx = tmp.start_processes(
        fn,
        args=(str(root), str(base / "rdv"), str(out)),
        nprocs=WORLD,
        join=False,
        start_method="fork",
    )
    deadline = time.monotonic() + 60
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the distributed processes did not finish in 60 s")
    return sorted(json.loads(out.read_text()), key=lambda r: r["rank"])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    base = tmp_path_factory.mktemp("ddp")
    root = write_tree(base / "data", {"a": 4, "b": 3}, (10, 10))
    return _launch(_rank_main, base, root)


def test_each_rank_knows_its_rank_and_world(ranks):
    assert [(r["stats"]["rank"], r["stats"]["num_replicas"]) for r in ranks] == [(0, 2), (1, 2)]


def test_every_rank_has_the_same_epoch_length(ranks):
    per_pass = math.ceil(N_IMAGES / WORLD)
    assert {r["seeded"]["len"] for r in ranks} == {math.ceil(per_pass / 2)}
    for e in range(2):
        assert {r["seeded"]["epochs"][e]["steps"] for r in ranks} == {2}
        assert {len(r["seeded"]["epochs"][e]["indices"]) for r in ranks} == {per_pass}


def test_shards_are_disjoint_except_the_padding_and_cover_everything(ranks):
    for e in range(2):
        shards = [r["seeded"]["epochs"][e]["indices"] for r in ranks]
        flat = shards[0] + shards[1]
        assert set(flat) == set(range(N_IMAGES))
        assert len(flat) - len(set(flat)) == WORLD * math.ceil(N_IMAGES / WORLD) - N_IMAGES


def test_shards_change_between_epochs(ranks):
    r0 = ranks[0]["seeded"]["epochs"]
    assert r0[0]["indices"] != r0[1]["indices"]


def test_each_rank_draws_its_own_augmentation(ranks):
    assert ranks[0]["seeded"]["epochs"][0]["angles"] != ranks[1]["seeded"]["epochs"][0]["angles"]


def test_seed_none_is_shared_by_all_ranks(ranks):
    assert ranks[0]["unseeded"]["seed"] == ranks[1]["unseeded"]["seed"]
    shards = [r["unseeded"]["epochs"][0]["indices"] for r in ranks]
    assert set(shards[0]) | set(shards[1]) == set(range(N_IMAGES))


def test_describe_explains_the_shard_without_a_process_group(make_tree):
    root = make_tree({"a": 4, "b": 3}, size=(10, 10))
    dataset = gpuaug.DirectoryDataset(root, target_size=(8, 8))
    config = gpuaug.loader.gpu_loader.LoaderConfig(
        batch_size=2, num_workers=0, num_replicas=2, rank=1
    )
    text = gpuaug.GPULoader(dataset, config=config).describe()
    assert "distributed: rank 1 of 2" in text
    assert "shard of 4 images per pass (1 image(s) repeated to make the shards equal)" in text


def test_no_collective_runs_in_a_constructor(ranks):
    assert [r["collectives_in_constructors"] for r in ranks] == [[], []]


# ---------------------------------------------------------------- faults and the disk cache
BAD = ("a/img_000.png", "a/img_002.png")  # indices 0 and 2: rank 0's first batch unshuffled


class SlowDataset(gpuaug.DirectoryDataset):
    """Decodes slowly, so that the two ranks build their caches at the same time."""

    def load(self, index):
        time.sleep(0.05)
        return super().load(index)


def _faults_main(rank: int, root: str, rdv: str, out: str) -> None:
    _init(rank, rdv)
    try:
        shapes = {}
        for cache in (None, "host"):
            ds = gpuaug.DirectoryDataset(root, target_size=(8, 8), on_error="skip")
            config = gpuaug.LoaderConfig(
                batch_size=2, shuffle=False, seed=1, num_workers=0, cache=cache, progress=False
            )
            loader = gpuaug.GPULoader(ds, config=config)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                shapes[str(cache)] = [list(x.shape) for x, _ in loader]
            shapes[f"{cache}-skipped"] = sorted(Path(p).name for p, _ in loader.last_skipped)
        ds = SlowDataset(Path(root).parent / "good", target_size=(8, 8))
        config = gpuaug.LoaderConfig(
            batch_size=2,
            seed=3,
            num_workers=0,
            cache="disk",
            cache_dir=str(Path(root).parent / "cache"),
            progress=False,
        )
        with CountingCollectives() as counted:
            disk = gpuaug.GPULoader(ds, config=config)
        x0, _ = next(iter(disk))
        mine = {
            "rank": rank,
            "shapes": shapes,
            "built": disk.cache.built,
            "pixels": disk.cache.gather(torch.arange(len(ds)))[0].sum().item(),
            "replay_ok": torch.equal(disk.replay(0, 0).x, x0),
            "collectives": counted.calls,
        }
        gathered: list = [None] * WORLD
        dist.all_gather_object(gathered, mine)
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def faults(tmp_path_factory) -> list[dict]:
    base = tmp_path_factory.mktemp("ddp_faults")
    root = write_tree(base / "data", {"a": 4, "b": 4}, (10, 10))
    for rel in BAD:
        path = root / rel
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    write_tree(base / "good", {"a": 4, "b": 3}, (10, 10))
    return _launch(_faults_main, base, root)


@pytest.mark.parametrize("cache", ["None", "host"])
def test_skip_runs_the_same_steps_and_shapes_on_every_rank(faults, cache):
    """Rank 0's first batch is two bad files: it still yields a full batch, as rank 1 does."""
    assert faults[0]["shapes"][cache] == faults[1]["shapes"][cache] == [[2, 3, 8, 8]] * 2


def test_skip_lists_the_bad_files_on_the_rank_that_met_them(faults):
    assert faults[0]["shapes"]["None-skipped"] == ["img_000.png", "img_002.png"]
    assert faults[1]["shapes"]["None-skipped"] == []


def test_one_rank_builds_the_disk_cache_and_the_other_opens_it(faults):
    assert sorted(r["built"] for r in faults) == [False, True]
    assert faults[0]["pixels"] == faults[1]["pixels"]
    assert all(r["replay_ok"] for r in faults)
    assert [r["collectives"] for r in faults] == [[], []]
