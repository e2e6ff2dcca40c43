"""Two gloo processes: each rank's state resumes its own stream exactly; a rank whose data set
differs is named at the first batch; a loader made on one rank only shifts no seed; a per-rank
cache holds the rank's share only."""

from __future__ import annotations

import datetime
import json
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp
from conftest import write_tree

import gpuaug

pytestmark = pytest.mark.slow

WORLD = 2
AUG = gpuaug.AugmentConfig(rotation_range=40, horizontal_flip=True)
COMMON = dict(
    augment=AUG, target_size=(8, 8), batch_size=2, device="cpu", num_workers=0, progress=False
)


def _init(rank: int, rdv: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{rdv}", rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=30),
    )  # fmt: skip


def _digest(x: torch.Tensor) -> float:
    return float(x.double().sum())


def _resume_main(rank: int, root: str, rdv: str, out: str) -> None:
    _init(rank, rdv)
    try:
        if rank == 0:  # same settings, one rank only: must not shift the seed agreement
            gpuaug.flow_from_directory(root, seed=None, **COMMON)
        full = gpuaug.flow_from_directory(root, seed=None, steps_per_epoch=3, **COMMON)
        want = [_digest(x) for _ in range(2) for x, _ in full]
        first = gpuaug.flow_from_directory(root, seed=None, steps_per_epoch=3, **COMMON)
        it = iter(first)
        for _ in range(4):  # epoch 1, step 1
            try:
                next(it)
            except StopIteration:
                it = iter(first)
                next(it)
        state = first.state_dict()
        states: list = [None] * WORLD
        dist.all_gather_object(states, state)
        got = {}
        # its own state, and the other rank's (Lightning saves rank 0's)
        for source in range(WORLD):
            again = gpuaug.flow_from_directory(root, seed=None, steps_per_epoch=3, **COMMON)
            again.load_state_dict(states[source])
            got[source] = [_digest(x) for x, _ in again]
        per_rank = gpuaug.flow_from_directory(
            root, seed=3, cache="host", **COMMON
        )  # a full cache: the reference
        share = gpuaug.GPULoader(
            per_rank.dataset, config=gpuaug.LoaderConfig(
                batch_size=2, seed=3, num_workers=0, device="cpu", cache="host",
                cache_per_rank=True, progress=False,
            ),
        )  # fmt: skip
        share_ids = [
            [i for s in range(len(share)) for i in share.replay(e, s).indices.tolist()]
            for e in range(2)
        ]
        mine = {
            "rank": rank, "seed": full.seed, "want": want, "got": got, "state": state,
            "share_rows": len(share.cache.images), "full_rows": len(per_rank.cache.images),
            "share_ids": share_ids,
        }  # fmt: skip
        gathered: list = [None] * WORLD
        dist.all_gather_object(gathered, mine)
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def _mismatch_main(rank: int, root: str, rdv: str, out: str) -> None:
    _init(rank, rdv)
    try:
        data = Path(root) / ("full" if rank == 0 else "short")
        loader = gpuaug.flow_from_directory(data, seed=1, **COMMON)
        if rank == 1:
            time.sleep(0.5)  # arrives second: it must see rank 0's entry
        try:
            next(iter(loader))
            error = None
        except Exception as exc:  # noqa: BLE001 - what it is goes to the result
            error = f"{type(exc).__name__}: {exc}"
        Path(f"{out}.{rank}").write_text(json.dumps({"rank": rank, "error": error}))
    except Exception:
        Path(f"{out}.{rank}").write_text(
            json.dumps({"rank": rank, "error": traceback.format_exc()})
        )
    finally:
        dist.destroy_process_group()


def _launch(fn, base: Path, root: Path) -> Path:
    out = base / "result.json"
    ctx = tmp.start_processes(
        fn, args=(str(root), str(base / "rdv"), str(out)), nprocs=WORLD, join=False,
        start_method="fork",
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the distributed processes did not finish in 60 s")
    return out


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> list[dict]:
    base = tmp_path_factory.mktemp("ddp_resume")
    root = write_tree(base / "data", {"a": 4, "b": 3}, (10, 10))
    out = _launch(_resume_main, base, root)
    return sorted(json.loads(out.read_text()), key=lambda r: r["rank"])


def test_a_loader_on_one_rank_only_shifts_no_seed(resumed):
    assert resumed[0]["seed"] == resumed[1]["seed"]


def test_each_rank_resumes_its_own_stream_exactly(resumed):
    for r in resumed:
        start = 3 + 1  # epoch 1, step 1 of 3-step epochs
        assert r["got"][str(r["rank"])] == r["want"][start:]


def test_a_rank_resumes_exactly_from_another_ranks_state(resumed):
    for r in resumed:
        assert r["got"][str(1 - r["rank"])] == r["want"][4:]


def test_each_rank_saves_its_own_rank_and_the_same_position(resumed):
    states = [r["state"] for r in resumed]
    assert [s["rank"] for s in states] == [0, 1]
    assert {(s["epoch"], s["step"], s["seed"]) for s in states} == {(1, 1, resumed[0]["seed"])}


def test_a_rank_with_another_data_set_size_is_named(tmp_path):
    write_tree(tmp_path / "data" / "full", {"a": 4, "b": 3}, (10, 10))
    write_tree(tmp_path / "data" / "short", {"a": 4, "b": 2}, (10, 10))
    out = _launch(_mismatch_main, tmp_path, tmp_path / "data")
    errors = [json.loads(Path(f"{out}.{r}").read_text())["error"] for r in range(WORLD)]
    assert errors[0] is None  # rank 0 arrived first: nothing to compare with yet
    assert errors[1].startswith("RankMismatchError: rank 0 and rank 1 built this loader")
    assert "data set size 7 there, 6 here" in errors[1]


def test_a_per_rank_cache_holds_a_share_and_every_sample_is_seen_once(resumed):
    assert [r["full_rows"] for r in resumed] == [7, 7]
    assert [r["share_rows"] for r in resumed] == [4, 4]  # 7 images: one repeated
    for e in range(2):
        seen = resumed[0]["share_ids"][e] + resumed[1]["share_ids"][e]
        assert set(seen) == set(range(7)) and len(seen) == 8
    for r in resumed:
        assert set(r["share_ids"][0]) == set(r["share_ids"][1])  # the same share every epoch
