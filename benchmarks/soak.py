"""Soak: many short epochs, every cache mode, bad files mixed in; passes exact, resources flat.

Each image of the tree is an 8x8 PNG whose red channel is its id (1..n), so a batch says
exactly which images it holds (no augmentation, no rescale: ``x[:, 0, 0, 0]`` is the id).
Every round runs, for ``cache`` in ``None`` (DataLoader workers), ``"device"``, ``"host"``
and ``"disk"``, a loader with ``steps_per_epoch`` smaller than a pass and ``on_error="skip"``
over a tree holding a non-image (dropped at index time) and a truncated PNG (dropped when
loaded, every pass), and checks that:

- every epoch yields exactly ``steps_per_epoch`` batches;
- every pass (``ceil(n_indexed / batch_size)`` consecutive steps; passes run on across
  epochs) holds every readable image exactly once, with its right label;

and between rounds that the process's RSS, open file descriptors, threads and child
processes stay flat. The loader is used only through its public API.

Usage::

    python -m benchmarks.soak --minutes 5            # rounds until 5 minutes have passed
    python -m benchmarks.soak --rounds 3 --per-class 40 --workers 4
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CACHE_MODES: tuple[str | None, ...] = (None, "device", "host", "disk")


def make_tree(root: Path, per_class: Sequence[int]) -> dict[int, int]:
    """``root/c{k}/img_{id}.png``, 8x8, red = id (1..n), plus two bad files.

    Returns:
        ``{id: class index}`` of the readable images.
    """
    from PIL import Image

    labels: dict[int, int] = {}
    next_id = 1
    for k, count in enumerate(per_class):
        folder = root / f"c{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            pixels = np.zeros((8, 8, 3), dtype=np.uint8)
            pixels[..., 0] = next_id
            pixels[..., 1] = k
            Image.fromarray(pixels).save(folder / f"img_{next_id:03d}.png")
            labels[next_id] = k
            next_id += 1
    if next_id > 255:
        raise ValueError(f"at most 254 images (ids are uint8 pixel values); got {next_id - 1}")
    (root / "c0" / "zz_not_an_image.png").write_text("not an image")
    good = (
        root / "c1" / f"img_{next(i for i, k in labels.items() if k == 1):03d}.png"
    ).read_bytes()
    (root / "c1" / "zz_truncated.png").write_bytes(good[: len(good) // 2])
    return labels


def resources() -> dict[str, int]:
    """RSS (bytes), open fds, OS threads and live child processes of this process."""
    status = Path("/proc/self/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in status}
    children = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            children += len((task / "children").read_text().split())
        except OSError:
            pass
    return {
        "rss": int(fields["VmRSS"][0]) * 1024,
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": int(fields["Threads"][0]),
        "python_threads": threading.active_count(),
        "children": max(children, len(multiprocessing.active_children())),
    }


def soak_round(
    root: Path,
    labels: dict[int, int],
    cache_dir: Path,
    *,
    epochs: int = 6,
    batch_size: int = 4,
    steps_per_epoch: int = 3,
    workers: int = 2,
    modes: Sequence[str | None] = CACHE_MODES,
) -> int:
    """One loader per cache mode, ``epochs`` epochs each; raises AssertionError on any
    inexact pass. Returns the number of batches checked."""
    import gpuaug

    readable = sorted(labels)
    batches = 0
    for mode in modes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the skipped files, every pass
            loader = gpuaug.flow_from_directory(
                root,
                augment=None,
                target_size=(8, 8),
                class_mode="sparse",
                batch_size=batch_size,
                steps_per_epoch=steps_per_epoch,
                num_workers=workers,
                cache=mode,
                cache_dir=cache_dir,
                on_error="skip",
                device="cpu",
                progress=False,
                seed=7,
            )
            indexed = len(loader.dataset)
            steps_per_pass = math.ceil(indexed / batch_size)
            seen: dict[int, list[int]] = {}
            step = 0
            try:
                for epoch in range(epochs):
                    count = 0
                    for x, y in loader:
                        ids = x[:, 0, 0, 0].round().to(int).tolist()
                        got = y.tolist()
                        want = [labels.get(i, -1) for i in ids]
                        assert got == want, f"cache={mode} epoch {epoch}: labels {got} != {want}"
                        seen.setdefault(step // steps_per_pass, []).extend(ids)
                        step += 1
                        count += 1
                    assert count == steps_per_epoch, (
                        f"cache={mode} epoch {epoch}: {count} batches, not {steps_per_epoch}"
                    )
            finally:
                loader.close()
        complete = [p for p in seen if (p + 1) * steps_per_pass <= step]
        for p in complete:
            assert sorted(seen[p]) == readable, (
                f"cache={mode} pass {p}: {len(seen[p])} images, missing "
                f"{sorted(set(readable) - set(seen[p]))}, repeated "
                f"{sorted(i for i in set(seen[p]) if seen[p].count(i) > 1)}"
            )
        assert complete, f"cache={mode}: no complete pass in {epochs} epochs"
        batches += step
    return batches


def check_flat(before: dict[str, int], after: dict[str, int], *, rss_slack: int) -> list[str]:
    """The resources that grew between two rounds (RSS beyond ``rss_slack`` bytes)."""
    grew = []
    for key in ("fds", "threads", "python_threads", "children"):
        if after[key] > before[key]:
            grew.append(f"{key}: {before[key]} -> {after[key]}")
    if after["rss"] - before["rss"] > rss_slack:
        grew.append(f"rss: {before['rss'] / 1e6:.1f} -> {after['rss'] / 1e6:.1f} MB")
    return grew


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="run this long (default 5)")
    parser.add_argument("--rounds", type=int, default=None, help="or this many rounds")
    parser.add_argument("--per-class", type=int, default=30, help="images per class (3 classes)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per loader per round")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument(
        "--rss-slack-mb", type=float, default=64, help="RSS growth allowed after round 2"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gpuaug-soak-"))
    try:
        labels = make_tree(work / "data", [args.per_class, args.per_class, args.per_class - 3])
        deadline = time.monotonic() + args.minutes * 60
        history: list[dict[str, Any]] = []
        round_index = 0
        while (args.rounds is None and time.monotonic() < deadline) or (
            args.rounds is not None and round_index < args.rounds
        ):
            start = time.perf_counter()
            batches = soak_round(
                work / "data",
                labels,
                work / "cache",
                epochs=args.epochs,
                steps_per_epoch=5,
                workers=args.workers,
            )
            res = resources()
            history.append({"round": round_index, "batches": batches, **res})
            print(
                f"round {round_index}: {batches} batches exact in "
                f"{time.perf_counter() - start:.1f} s; rss {res['rss'] / 1e6:.1f} MB, "
                f"fds {res['fds']}, threads {res['threads']}, children {res['children']}",
                flush=True,
            )
            round_index += 1
        problems = []
        if len(history) >= 3:  # round 0 warms up (imports, first workers)
            problems = check_flat(history[1], history[-1], rss_slack=int(args.rss_slack_mb * 1e6))
        print("resources flat" if not problems else f"GREW: {'; '.join(problems)}")
        return 1 if problems else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
