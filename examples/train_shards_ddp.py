"""Train over tar shards on many GPUs or nodes with torchrun; kill it, start it again, it resumes.

    # shards from a class folder (or any WebDataset-layout shards):
    gpuaug shard data/train shards/ --samples-per-shard 1000
    # one node, 4 GPUs (CPU-only: the gloo backend is used):
    torchrun --nproc-per-node 4 examples/train_shards_ddp.py \
        "shards/shard-{000000..000009}.tar" --ckpt run/ckpt.pt
    # two nodes: the same command on each, with a rendezvous both can reach
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d \
        --rdzv-endpoint HOST:29400 --rdzv-id job1 examples/train_shards_ddp.py ...

Rank 0 writes ``--ckpt`` (model, optimizer and ``loader.state_dict()``) every
``--save-every`` steps; on start every rank loads it if it exists, so after a kill the next
batch of each rank is the one the uninterrupted run would have had. ``--record DIR`` writes the
sample labels each rank saw per (epoch, step) (the tests use it).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import gpuaug


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shards", help="shard URLs, brace ranges allowed")
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--save-every", type=int, default=1)
    p.add_argument("--stop-at", type=int, default=None, help="exit at this global step (a kill)")
    p.add_argument("--record", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> None:
    args = parse()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = "cuda" if cuda else "cpu"  # "cuda" is cuda:LOCAL_RANK under torchrun
    loader = gpuaug.flow_from_shards(
        args.shards,
        augment=gpuaug.AugmentConfig(rotation_range=15, horizontal_flip=True, rescale=1 / 255),
        target_size=(args.size, args.size),
        batch_size=args.batch_size,
        class_mode="sparse",
        seed=args.seed,
        device=device,
        num_workers=args.workers,
        progress=False,
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * args.size**2, loader.dataset.num_classes))
    model = nn.parallel.DistributedDataParallel(model.to(loader.device))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    step = 0
    if args.ckpt.exists():
        ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
        model.module.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        loader.load_state_dict(ckpt["loader"])
        step = ckpt["step"]
    seen: list[list[int]] = []
    while loader.epoch < args.epochs:
        epoch = loader.epoch
        first = loader.state_dict()["step"]
        for i, (x, y) in enumerate(loader, first):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            seen.append([epoch, i, *y.tolist()])
            if rank == 0 and step % args.save_every == 0:
                state = {
                    "model": model.module.state_dict(),
                    "opt": opt.state_dict(),
                    "loader": loader.state_dict(),
                    "step": step,
                }
                args.ckpt.parent.mkdir(parents=True, exist_ok=True)
                torch.save(state, f"{args.ckpt}.tmp")
                os.replace(f"{args.ckpt}.tmp", args.ckpt)
            if step == args.stop_at:
                break
        if step == args.stop_at:
            break
    if args.record is not None:
        args.record.mkdir(parents=True, exist_ok=True)
        with open(args.record / f"rank{rank}.jsonl", "a") as f:
            f.write(json.dumps(seen) + "\n")
    dist.barrier()  # no rank tears the group down while another still saves
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
