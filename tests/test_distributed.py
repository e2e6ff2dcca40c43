"""Under torch.distributed: disjoint shards per epoch, equal lengths, per-rank augmentation.

Two CPU processes on the gloo backend, rendezvous through a file in tmp_path.
"""

from __future__ import annotations

import json
import math
import time
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


def _rank_main(rank: int, root: str, rdv: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=WORLD)
    try:
        common = {
            "augment": AUG,
            "target_size": (8, 8),
            "batch_size": 2,
            "device": "cpu",
            "num_workers": 0,
            "progress": False,
        }
        seeded = gpuaug.flow_from_directory(root, seed=7, **common)
        unseeded = gpuaug.flow_from_directory(root, seed=None, **common)
        mine = {
            "rank": rank,
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


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    base = tmp_path_factory.mktemp("ddp")
    root = write_tree(base / "data", {"a": 4, "b": 3}, (10, 10))
    out = base / "result.json"
    ctx = tmp.start_processes(
        _rank_main,
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
    config = gpuaug.loader.LoaderConfig(batch_size=2, num_workers=0, num_replicas=2, rank=1)
    text = gpuaug.GPULoader(dataset, config=config).describe()
    assert "distributed: rank 1 of 2" in text
    assert "shard of 4 images per pass (1 image(s) repeated to make the shards equal)" in text
