"""Index scale: building the index of a million-file folder, first and cached, next to Keras.

Builds (or reuses) a folder of ``--n`` hard links (default 1,000,000) to a few small JPEGs,
``root/c000 .. c{K-1}/img_{i}.jpg``: hard links cost a directory entry, not an inode or any
data, so a million of them take a few hundred MB of directory blocks. Then measures, in one
process:

- **legacy index**: what the 0.1 index held (a sorted walk, one ``(path, class)`` tuple and
  one int per sample), for the memory before;
- **gpuaug, first**: ``DirectoryDataset()`` (default ``verify="auto"``: no up-front header
  check from 20,000 files, bad files are named when first loaded) with an empty index cache:
  the walk and the cache written;
- **gpuaug, first with ``verify="header"``**: the walk plus the header check of every file,
  *extrapolated* from the measured per-file check time (``n`` x the best of the 50,000-file
  checks below) rather than run (124 s at 1,000,000 files when it was the default);
- **gpuaug, cached**: the same construction again (the listing from the cache: one ``stat``
  per folder);
- **gpuaug, no check**: ``verify="none"`` without the cache (the walk alone);
- **memory**: bytes per sample retained by the index (``tracemalloc``), legacy vs now;
- **first batch**: ``flow_from_directory(...)`` (index from the cache) to its first batch
  (CPU, no workers), and Keras' ``flow_from_directory`` to its first batch;
- **Keras index**: ``ImageDataGenerator().flow_from_directory`` on the same folder.

Writes ``benchmarks/results/index_scale.json`` and ``.md`` (``--out`` to change). Usage::

    python -m benchmarks.index_scale                 # 1,000,000 files
    python -m benchmarks.index_scale --n 200000 --classes 100
    python -m benchmarks.index_scale --n 2000 --no-keras --out /tmp/r   # a quick check
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SOURCES = 8  # distinct JPEGs the links point to (at least)
LINKS_PER_SOURCE = 50_000  # ext4 allows 65,000 hard links to one inode
SOURCE_SIZE = (48, 64)  # (height, width) of each, a few kB


def build_folder(root: Path, n: int, classes: int) -> float:
    """``root/c{k:03d}/img_{i:07d}.jpg`` hard links to a few JPEGs; reused when complete.

    Returns:
        Seconds spent creating it (0 when reused).
    """
    from PIL import Image

    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == f"{n} {classes}":
        return 0.0
    if root.exists():
        shutil.rmtree(root)
    start = time.perf_counter()
    sources_dir = root.parent / f"{root.name}-sources"
    sources_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sources = []
    for s in range(_sources(n)):
        path = sources_dir / f"src{s}.jpg"
        pixels = rng.integers(0, 256, (*SOURCE_SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, quality=85)
        sources.append(str(path))
    per_class = np.full(classes, n // classes)
    per_class[: n % classes] += 1
    i = 0
    for k, count in enumerate(per_class.tolist()):
        folder = root / f"c{k:03d}"
        folder.mkdir(parents=True)
        base = str(folder)
        for j in range(count):
            os.link(sources[i % len(sources)], f"{base}/img_{j:07d}.jpg")
            i += 1
    marker.write_text(f"{n} {classes}")  # a hidden file: not indexed
    return time.perf_counter() - start


def _sources(n: int) -> int:
    return max(SOURCES, -(-n // LINKS_PER_SOURCE))


def _settle(root: Path) -> float:
    """Wait until every folder's mtime is 2 s old (the index cache's 'racily clean' rule)."""
    newest = max(os.stat(root).st_mtime, *(e.stat().st_mtime for e in os.scandir(root)))
    wait = max(0.0, newest + 2.1 - time.time())
    time.sleep(wait)
    return wait


def legacy_index(root: Path) -> tuple[list[tuple[str, int]], list[int]]:
    """The 0.1 index: sorted walks, a list of ``(path, class)`` tuples and a list of ints."""
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(root / d) and d[0] != ".")
    samples: list[tuple[str, int]] = []
    for k, name in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(root / name), key=lambda t: t[0]):
            samples.extend(
                (os.path.join(dirpath, f), k) for f in sorted(files) if f.lower().endswith(".jpg")
            )
    return samples, [t for _, t in samples]


def _retained(build) -> tuple[Any, int]:
    """``(result, bytes it retains)`` of ``build()``, by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return result, after - before


def _timed(build) -> tuple[Any, float]:
    start = time.perf_counter()
    result = build()
    return result, time.perf_counter() - start


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(
    n: int,
    classes: int,
    root: Path,
    *,
    keras: bool = True,
    cache_dir: Path | None = None,
    target_size: tuple[int, int] = (64, 64),
) -> dict[str, Any]:
    """Run every measurement; returns the results document (see the module docstring)."""
    created_s = build_folder(root, n, classes)
    settle_s = _settle(root)
    cache_dir = cache_dir or Path(tempfile.mkdtemp(prefix="gpuaug-index-cache-"))
    os.environ["GPUAUG_CACHE_DIR"] = str(cache_dir)
    shutil.rmtree(cache_dir / "index", ignore_errors=True)

    import gpuaug
    from gpuaug.data.directory import DirectoryDataset
    from gpuaug.data.index import _pool

    out: dict[str, Any] = {
        "n": n,
        "classes": classes,
        "root": str(root),
        "folder_created_s": round(created_s, 2),
        "settle_wait_s": round(settle_s, 2),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "gpuaug": gpuaug.__version__,
    }
    kw = {"target_size": target_size, "class_mode": "sparse"}

    (legacy, targets), legacy_bytes = _retained(lambda: legacy_index(root))
    assert len(legacy) == n
    del legacy, targets
    _, legacy_s = _timed(lambda: legacy_index(root))
    gc.collect()

    dataset, now_bytes = _retained(
        lambda: DirectoryDataset(root, verify="none", index_cache=False, **kw)
    )
    assert len(dataset) == n
    del dataset
    gc.collect()

    _, none_s = _timed(lambda: DirectoryDataset(root, verify="none", index_cache=False, **kw))
    first, first_s = _timed(lambda: DirectoryDataset(root, index_cache=True, **kw))
    verified = first.verified
    cache_file = first.index_cache_path
    assert cache_file is not None and cache_file.is_file(), "the index cache was not written"
    del first
    gc.collect()
    cached, cached_s = _timed(lambda: DirectoryDataset(root, index_cache=True, **kw))
    assert cached.index_cached and len(cached) == n
    _, executor_workers = _pool(n, None, "auto")
    del cached
    gc.collect()

    # Header checks: the same files in one thread, in threads, in processes.
    from gpuaug.data.index import check_files

    sample = DirectoryDataset(root, verify="none", index_cache=True, **kw).samples
    m = min(n, 50_000)
    paths = [sample.path(i) for i in range(m)]
    check_files(paths[:2000], "header", executor="serial")  # warm the imports
    executors = {}
    for executor in ("serial", "thread", "process"):
        _, seconds = _timed(lambda e=executor, p=paths: check_files(p, "header", executor=e))
        executors[executor] = {"files": m, "s": round(seconds, 3), "us_per_file": seconds / m * 1e6}
    del sample, paths

    def make_loader():
        return gpuaug.flow_from_directory(
            root, target_size=target_size, batch_size=32, device="cpu", num_workers=0,
            progress=False, class_mode="sparse",
        )  # fmt: skip

    loader, construct_s = _timed(make_loader)
    (batch, _), next_s = _timed(lambda: next(iter(loader)))
    first_batch_s = construct_s + next_s
    assert batch.shape[0] == 32
    best_us = min(r["us_per_file"] for r in executors.values())
    out["gpuaug"] = {
        "version": gpuaug.__version__,
        "index_first_s": round(first_s, 3),
        "index_first_verified": verified,
        "index_first_header_extrapolated_s": round(none_s + n * best_us / 1e6, 1),
        "first_batch_construct_s": round(construct_s, 3),
        "first_batch_next_s": round(next_s, 3),
        "index_cached_s": round(cached_s, 3),
        "index_no_check_s": round(none_s, 3),
        "check_workers": executor_workers,
        "index_cache_mb": round(cache_file.stat().st_size / 1e6, 1),
        "bytes_per_sample": round(now_bytes / n, 1),
        "first_batch_s": round(first_batch_s, 3),
        "header_check": executors,
    }
    out["legacy"] = {"index_s": round(legacy_s, 3), "bytes_per_sample": round(legacy_bytes / n, 1)}

    if keras:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        from keras.src.legacy.preprocessing.image import ImageDataGenerator

        it, keras_s = _timed(
            lambda: ImageDataGenerator().flow_from_directory(
                str(root), target_size=target_size, batch_size=32, class_mode="sparse"
            )
        )
        assert it.samples == n
        _, keras_batch_s = _timed(lambda: next(it))
        out["keras"] = {"index_s": round(keras_s, 3), "first_batch_s": round(keras_batch_s, 3)}
    out["max_rss_mb"] = round(_max_rss_mb(), 1)
    return out


def markdown(doc: dict[str, Any]) -> str:
    g, legacy, k = doc["gpuaug"], doc["legacy"], doc.get("keras")
    rows = [
        (f"gpuaug, first (default verify='auto' ran {g['index_first_verified']!r}: walk + "
         "cache write; bad files named when first loaded)", f"{g['index_first_s']:.2f} s"),
        ("gpuaug, first with verify='header' (walk + header check of every file; "
         "extrapolated: walk + n x best us per file below, not run)",
         f"~{g['index_first_header_extrapolated_s']:.0f} s"),
        ("gpuaug, cached (second construction)", f"{g['index_cached_s']:.2f} s"),
        ("gpuaug, `verify='none'`, no cache (the walk)", f"{g['index_no_check_s']:.2f} s"),
        ("legacy 0.1-style index (walk + list of tuples, no check)", f"{legacy['index_s']:.2f} s"),
    ]  # fmt: skip
    if k:
        rows.append(("Keras `flow_from_directory` (no check)", f"{k['index_s']:.2f} s"))
    lines = [
        f"# Index scale: {doc['n']:,} files in {doc['classes']} class folders",
        "",
        f"Machine: {doc['machine']['cpus']} CPUs, Python {doc['machine']['python']}, load "
        f"average {doc['machine']['load_average']}. Files: hard links to "
        f"{_sources(doc['n'])} JPEGs of {SOURCE_SIZE[1]}x{SOURCE_SIZE[0]}.",
        "",
        "| index build | time |",
        "|---|---|",
        *(f"| {a} | {b} |" for a, b in rows),
        "",
        "| memory | bytes per sample (tracemalloc, retained) |",
        "|---|---|",
        f"| legacy list of `(path, class)` tuples + list of ints | {legacy['bytes_per_sample']} |",
        f"| gpuaug `SampleList` + `TargetList` | {g['bytes_per_sample']} |",
        "",
        "| first batch (32 images, 64x64, CPU, no workers) | time |",
        "|---|---|",
        f"| gpuaug `flow_from_directory` (index from cache) to first batch | "
        f"{g['first_batch_s']:.2f} s |",
        f"| of which: building the loader (index from cache, sampler, augmentation) | "
        f"{g['first_batch_construct_s']:.2f} s |",
        f"| of which: `next(iter(loader))` (first permutation, 32 decodes, augment) | "
        f"{g['first_batch_next_s']:.2f} s |",
    ]
    if k:
        lines.append(f"| Keras: first `next(it)` after indexing | {k['first_batch_s']:.2f} s |")
    lines += [
        "",
        f"| header check of {g['header_check']['serial']['files']:,} files "
        f"({g['check_workers']} workers) | time | us per file |",
        "|---|---|---|",
        *(
            f"| {name} | {r['s']:.2f} s | {r['us_per_file']:.1f} |"
            for name, r in g["header_check"].items()
        ),
    ]
    lines += ["", f"Index cache file: {g['index_cache_mb']} MB. Peak RSS: {doc['max_rss_mb']} MB."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.index_scale", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="files (default 1,000,000)")
    parser.add_argument("--classes", type=int, default=100, help="class folders (default 100)")
    parser.add_argument(
        "--root", type=Path, default=None, help="folder to build (default: a temp folder by N)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder for a next run")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras rows")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where JSON/MD go (default: ./gpuaug-bench/; --out benchmarks/results to replace "
        "the committed results)",
    )
    args = parser.parse_args(argv)
    if args.n < args.classes or args.classes < 1:
        parser.error(f"--n must be >= --classes >= 1; got {args.n} and {args.classes}")
    root = args.root or Path(tempfile.gettempdir()) / f"gpuaug-index-scale-{args.n}"
    try:
        doc = run(args.n, args.classes, root, keras=not args.no_keras)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(root.parent / f"{root.name}-sources", ignore_errors=True)
    if args.out is None:  # a run never replaces the committed results unless --out says so
        args.out = Path.cwd() / "gpuaug-bench"
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "index_scale" if args.n == 1_000_000 else f"index_scale-{args.n}"
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = markdown(doc)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
