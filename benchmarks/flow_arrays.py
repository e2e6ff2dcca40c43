"""``flow(x, y)`` on a CIFAR-10-sized array: gpuaug vs Keras, end to end.

Usage (from the repository root)::

    python -m benchmarks.flow_arrays                       # 50,000 x 32 x 32 x 3, batch 128
    python -m benchmarks.flow_arrays --num-images 5000 --batch-sizes 32,256 --out /tmp/f.json

The data is random uint8 ``(N, 32, 32, 3)`` with integer labels, as ``keras.datasets.cifar10``
gives (no download). Both sides get :data:`benchmarks.pipelines.BOOK_AUGMENT` (rotation 40,
shifts 0.2, shear 0.2, zoom 0.2, horizontal flip, fill nearest, rescale 1/255):

- ``keras-idg-flow``: Keras 3 ``ImageDataGenerator(**BOOK_AUGMENT).flow(x, y)``: scipy warp per
  image in one process; the NHWC float32 batch is copied to the device as a PyTorch user would.
- ``gpuaug-flow``: ``gpuaug.ImageDataGenerator(**BOOK_AUGMENT).flow(x, y)``: the array is placed
  on the device once (``cache="device"``); each batch is an index gather plus one batched warp.

End to end = the array in memory to an augmented float batch (and its labels) on the training
device. Timing as :func:`benchmarks.bench.time_runner` (warm-up, then ``--repeats`` timed runs).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from . import pipelines as P
from .bench import _sync, time_runner

__all__ = ["cifar_like", "gpuaug_flow", "keras_flow", "main", "run"]


def cifar_like(num_images: int = 50_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random ``(N, 32, 32, 3)`` uint8 images and ``(N,)`` int64 labels in 0..9."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (num_images, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, num_images).astype(np.int64)
    return x, y


@contextlib.contextmanager
def gpuaug_flow(
    x: np.ndarray, y: np.ndarray, batch_size: int, device: torch.device, seed: int = 0
) -> Iterator[P.Runner]:
    """``gpuaug.ImageDataGenerator(**BOOK_AUGMENT).flow(x, y)`` on ``device``."""
    import gpuaug

    generator = gpuaug.ImageDataGenerator(device=device, **P.BOOK_AUGMENT)
    loader = generator.flow(x, y, batch_size=batch_size, shuffle=True, seed=seed)
    batches = P._forever(loader)

    def step() -> int:
        xb, _ = next(batches)
        return int(xb.shape[0])

    try:
        yield P.Runner(step, warmup_batches=2)
    finally:
        batches.close()


@contextlib.contextmanager
def keras_flow(
    x: np.ndarray, y: np.ndarray, batch_size: int, device: torch.device, seed: int = 0
) -> Iterator[P.Runner]:
    """Keras 3 ``ImageDataGenerator(**BOOK_AUGMENT).flow(x, y)``; batches copied to ``device``."""
    generator = P._keras_generator()
    with contextlib.redirect_stdout(io.StringIO()):
        iterator = generator.flow(x, y, batch_size=batch_size, shuffle=True, seed=seed)
    non_blocking = device.type == "cuda"

    def step() -> int:
        xb, yb = next(iterator)
        xt = torch.from_numpy(xb).to(device, non_blocking=non_blocking).permute(0, 3, 1, 2)
        torch.from_numpy(yb).to(device, non_blocking=non_blocking)
        return int(xt.shape[0])

    yield P.Runner(step)


PIPELINES = {"keras-idg-flow": keras_flow, "gpuaug-flow": gpuaug_flow}


def run(
    num_images: int = 50_000,
    batch_sizes: tuple[int, ...] = (128,),
    repeats: int = 3,
    min_images: int = 2048,
    device: str | None = None,
    pipelines: tuple[str, ...] = tuple(PIPELINES),
    seed: int = 0,
) -> dict:
    """Measure each pipeline at each batch size; returns a JSON-ready dict of images/s."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    x, y = cifar_like(num_images, seed)
    results = []
    for name in pipelines:
        if name.startswith("keras"):
            reason = P._keras_unavailable(None)
            if reason:
                results.append({"pipeline": name, "skipped": reason})
                continue
        for b in batch_sizes:
            steps = max(1, -(-min_images // b))
            started = time.perf_counter()
            with PIPELINES[name](x, y, b, dev, seed) as runner:
                timing = time_runner(runner, steps=steps, repeats=repeats, device=dev)
            _sync(dev)
            results.append(
                {
                    "pipeline": name,
                    "batch_size": b,
                    **timing,
                    "wall_seconds": round(time.perf_counter() - started, 2),
                }
            )
    return {
        "schema": "gpuaug-bench-flow-arrays/1",
        "settings": {
            "num_images": num_images,
            "image_shape": [32, 32, 3],
            "batch_sizes": list(batch_sizes),
            "repeats": repeats,
            "min_images": min_images,
            "device": str(dev),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "augment": P.BOOK_AUGMENT,
        },
        "results": results,
    }


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.flow_arrays",
        description="ImageDataGenerator.flow(x, y) on a CIFAR-10-sized array: gpuaug vs Keras.",
    )
    parser.add_argument("--num-images", type=int, default=50_000)
    parser.add_argument("--batch-sizes", type=_ints, default=(128,), metavar="B,B")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-images", type=int, default=2048)
    parser.add_argument("--device")
    parser.add_argument("--pipelines", type=lambda t: tuple(t.split(",")), default=tuple(PIPELINES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args(argv)
    unknown = [p for p in args.pipelines if p not in PIPELINES]
    if unknown:
        parser.error(f"unknown pipelines {unknown}; choose from {list(PIPELINES)}")
    doc = run(
        args.num_images,
        args.batch_sizes,
        args.repeats,
        args.min_images,
        args.device,
        args.pipelines,
        args.seed,
    )
    for r in doc["results"]:
        if "skipped" in r:
            print(f"{r['pipeline']}: skipped ({r['skipped']})")
        else:
            print(
                f"{r['pipeline']:<16} b={r['batch_size']:<5} {r['median']:>12,.0f} images/s "
                f"(min {r['min']:,.0f}, max {r['max']:,.0f}) on {doc['settings']['device']}"
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
