"""Shards under torch.distributed: 2 and 4 gloo processes x 2 workers see every sample once per
epoch (plus the stated padding); torchrun with 2 "nodes" x 2 processes on 127.0.0.1, killed
mid-epoch and started again, resumes with exactly the batches of the uninterrupted run."""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as tmp
from test_shards import N, write

import gpuaug

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def _rank_main(rank: int, world: int, urls: str, rdv: str, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{rdv}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )  # fmt: skip
    try:
        loader = gpuaug.flow_from_shards(
            urls, target_size=(8, 8), batch_size=2, class_mode="sparse", seed=4,
            device="cpu", num_workers=2, cache_dir=Path(out).parent / "cache", progress=False,
        )  # fmt: skip
        epochs = [[int(i) for _, y in loader for i in y] for _ in range(2)]
        Path(f"{out}.{rank}").write_text(json.dumps(epochs))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def urls(tmp_path_factory) -> str:
    return write(tmp_path_factory.mktemp("ddp_shards") / "s")


@pytest.mark.parametrize("world", [2, 4])
def test_every_sample_once_per_epoch_across_ranks_and_workers(urls, tmp_path, world):
    out = tmp_path / "ids"
    ctx = tmp.start_processes(
        _rank_main, args=(world, urls, str(tmp_path / "rdv"), str(out)), nprocs=world,
        join=False, start_method="fork",
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{world} processes did not finish in 120 s")
    per_rank = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(world)]
    padding = world * math.ceil(N / world) - N
    for epoch in range(2):
        seen = Counter(i for r in per_rank for i in r[epoch])
        assert set(seen) == set(range(N))
        assert sum(seen.values()) == N + padding  # DistributedSampler's padding, no more
    assert per_rank[0][0] != per_rank[0][1]  # a new order each epoch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(urls: str, tmp_path: Path, run_id: str, *extra: str) -> None:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id,
        str(REPO / "examples" / "train_shards_ddp.py"), urls, "--ckpt", str(tmp_path / "ckpt.pt"),
        "--record", str(tmp_path / "log"), "--workers", "0", "--size", "8", "--batch-size", "2",
        "--epochs", "3", *extra,
    ]  # fmt: skip
    nodes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    try:
        outs = [node.communicate(timeout=240)[0].decode() for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, text in zip(nodes, outs, strict=True):
        assert node.returncode == 0, text[-3000:]


def test_torchrun_two_nodes_killed_mid_epoch_resumes_the_uninterrupted_batches(urls, tmp_path):
    # 15 samples, 4 ranks: 4 a rank (1 repeated), 2 steps an epoch; killed at epoch 1, step 1
    _torchrun(urls, tmp_path, "first", "--stop-at", "3")
    _torchrun(urls, tmp_path, "second")
    n_steps = math.ceil(math.ceil(N / 4) / 2)
    dataset = gpuaug.flow_from_shards(
        urls, target_size=(8, 8), class_mode="sparse", device="cpu", num_workers=0,
        cache_dir=tmp_path / "cache", progress=False,
    ).dataset  # fmt: skip
    for rank in range(4):
        runs = [json.loads(line) for line in (tmp_path / "log" / f"rank{rank}.jsonl").open()]
        assert [len(r) for r in runs] == [3, 3]  # killed after 3 batches; 3 left after resume
        seen = runs[0] + runs[1]
        sampler = gpuaug.EpochBatchSampler(N, 2, seed=0, num_replicas=4, rank=rank)
        want = [
            [e, s, *(dataset.targets[i] for i in sampler.batch(e, s).tolist())]
            for e in range(3)
            for s in range(n_steps)
        ]
        assert seen == want, f"rank {rank}"
