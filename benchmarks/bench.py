"""Benchmark runner: gpuaug vs Keras ImageDataGenerator, torchvision, albumentations, kornia, DALI.

Usage (from the repository root)::

    python -m benchmarks.bench                 # default run: ./gpuaug-bench/<device>.*
    python -m benchmarks.bench --out benchmarks/results/cpu.json   # to commit results
    python -m benchmarks.bench --grid full     # the full scaling grid (default with CUDA)
    gpuaug bench --num-images 64 --repeats 1 --grid none --out /tmp/b.json

One run measures every pipeline of :mod:`benchmarks.pipelines` on the same generated folder of
JPEGs with the same augmentation settings, then writes:

- ``<out>.json``: machine, settings, every measurement (median, min, max images/s over
  ``--repeats`` timed runs), the speed-ups, and a profile of the gpuaug augmentation;
- ``<out>.md``: the Markdown tables (also printed), see :mod:`benchmarks.report`;
- ``<out>.png``: the plot;
- ``<out>-profile.txt``: the profiler table.

Timing: each measurement builds its pipeline, runs its warm-up batches untimed (worker
start-up; a whole epoch for a cache), then times ``--repeats`` runs of
``ceil(--min-images / batch)`` batches each with ``time.perf_counter``, synchronising CUDA
before each clock read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

# libkineto (torch.profiler) prints a spurious "gpuGetDeviceCount failed" error on machines
# without a GPU unless told to keep quiet; it reads this once, when torch is first imported.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import torch  # noqa: E402

from . import data as bench_data  # noqa: E402
from . import pipelines as P  # noqa: E402

__all__ = ["BenchConfig", "GRIDS", "build_parser", "machine_info", "main", "run"]

SCHEMA = "gpuaug-bench/2"
#: gpuaug backends of the backends table, in order ("auto" is the headline "gpuaug" row).
BACKENDS: tuple[str, ...] = ("reference", "chunked", "opencv", "compile", "triton")
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Scaling grids. "quick" fits the default run in a few minutes on a 2-core CPU; "full" is the
# default when CUDA is present. Worker counts above the machine's CPU count are dropped.
GRIDS: dict[str, dict[str, tuple[int, ...]]] = {
    "none": {"batch_size": (), "image_size": (), "num_workers": ()},
    "quick": {
        "batch_size": (32, 64, 128, 256, 512, 1024),
        "image_size": (64, 128, 256, 512),
        "num_workers": (0, 1, 2, 4),
    },
    "full": {
        "batch_size": (32, 64, 128, 256, 512, 1024),
        "image_size": (64, 128, 256, 384, 512),
        "num_workers": (0, 1, 2, 4, 8, 16),
    },
}


@dataclass(frozen=True)
class BenchConfig:
    """Everything one benchmark run needs.

    Attributes:
        num_images: JPEGs in the generated folder.
        data_dir: folder to write (and reuse on later runs with the same settings); None: a
            temporary folder, deleted at the end.
        target_size: ``(height, width)`` of the headline runs.
        batch_sizes: batch sizes of the headline table.
        repeats: timed runs per measurement (median, min and max are reported).
        min_images: images per timed run, at least one batch.
        num_workers: DataLoader workers for the torch pipelines (None: the CPU count).
        device: the training device (None: cuda when available, else cpu).
        pipelines: names from :data:`benchmarks.pipelines.PIPELINES` (None: all).
        grid: "quick", "full" or "none" (None: "full" with CUDA, else "quick").
        scan_batch_sizes: batch sizes of the batch-size scan (None: the grid's).
        scan_image_sizes: square image sizes of the image-size scan (None: the grid's).
        scan_workers: worker counts of the workers scan (None: the grid's).
        scan_batch: batch size of the image-size and workers scans (None: first headline).
        profile: profile the gpuaug augmentation at the largest headline batch size.
        seed: seed for the images, shuffling and augmentation.
        progress: show tqdm progress bars.
        backends: gpuaug backends to measure one by one in the backends table (None: every
            one that runs on the device; () for none).
        variants: output dtype / memory format of each backend measurement, names from
            :data:`benchmarks.pipelines.VARIANTS`.
    """

    num_images: int = 1024
    data_dir: str | None = None
    target_size: tuple[int, int] = (150, 150)
    batch_sizes: tuple[int, ...] = (32, 256)
    repeats: int = 3
    min_images: int = 256
    num_workers: int | None = None
    device: str | None = None
    pipelines: tuple[str, ...] | None = None
    grid: str | None = None
    scan_batch_sizes: tuple[int, ...] | None = None
    scan_image_sizes: tuple[int, ...] | None = None
    scan_workers: tuple[int, ...] | None = None
    scan_batch: int | None = None
    profile: bool = True
    seed: int = 0
    progress: bool = True
    backends: tuple[str, ...] | None = None
    variants: tuple[str, ...] = ("float32", "bfloat16", "float32-channels_last")

    def __post_init__(self) -> None:
        _check_positive("num_images", self.num_images, minimum=2)
        _check_positive("repeats", self.repeats)
        _check_positive("min_images", self.min_images)
        if len(self.target_size) != 2:
            raise ValueError(f"`target_size` must be (height, width); got {self.target_size!r}")
        for side in self.target_size:
            _check_positive("target_size", side)
        if not self.batch_sizes:
            raise ValueError("`batch_sizes` must name at least one batch size; got ()")
        for b in self.batch_sizes:
            _check_positive("batch_sizes", b)
        if self.num_workers is not None:
            _check_positive("num_workers", self.num_workers, minimum=0)
        if self.grid is not None and self.grid not in GRIDS:
            raise ValueError(f"`grid` must be one of {sorted(GRIDS)}; got {self.grid!r}")
        if self.pipelines is not None:
            unknown = [p for p in self.pipelines if p not in P.PIPELINES]
            if unknown:
                raise ValueError(
                    f"`pipelines` must be names from {list(P.PIPELINES)}; got unknown {unknown}"
                )
        for name in ("scan_batch_sizes", "scan_image_sizes"):
            for v in getattr(self, name) or ():
                _check_positive(name, v)
        for v in self.scan_workers or ():
            _check_positive("scan_workers", v, minimum=0)
        if self.scan_batch is not None:
            _check_positive("scan_batch", self.scan_batch)
        unknown = [v for v in self.variants if v not in P.VARIANTS]
        if unknown or not self.variants:
            raise ValueError(
                f"`variants` must be names from {list(P.VARIANTS)}; got {list(self.variants)}"
            )
        if self.backends is not None:
            unknown = [b for b in self.backends if b not in BACKENDS]
            if unknown:
                raise ValueError(f"`backends` must be names from {list(BACKENDS)}; got {unknown}")


def _check_positive(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}; got {value}")


@dataclass(frozen=True)
class _Job:
    """One measurement to make; jobs equal in all fields are measured once."""

    figure: str  # "end_to_end" | "augment_only"
    pipeline: str
    batch_size: int
    image_size: tuple[int, int]
    num_workers: int
    scans: tuple[str, ...] = field(default=(), compare=False)

    @property
    def key(self) -> tuple:
        return (self.figure, self.pipeline, self.batch_size, self.image_size, self.num_workers)


# ----------------------------------------------------------------------------- machine


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other processes competing for the cores)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info(device: torch.device) -> dict:
    """The machine and library versions, for the JSON and the report header."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    gpu = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
        }
    versions = {
        name: _version(name)
        for name in (
            "torch",
            "torchvision",
            "kornia",
            "keras",
            "numpy",
            "scipy",
            "pillow",
            "albumentations",
            "opencv-python-headless",
            "nvidia-dali-cuda120",
            "gpuaug",
        )
    }
    versions["python"] = platform.python_version()
    return {
        "load_average_start": _load_average(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "memory_gib": _memory_gib(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "device": str(device),
        "gpu": gpu,
        "versions": versions,
    }


def device_label(machine: dict) -> str:
    """A short name of the training device: the GPU's name, else ``CPU (model, N cores)``."""
    if machine.get("gpu"):
        return machine["gpu"]["name"]
    return f"CPU only ({machine['cpu']}, {machine['cpu_count']} cores)"


# ----------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runner(runner: P.Runner, *, steps: int, repeats: int, device: torch.device) -> dict:
    """Run the warm-up batches, then ``repeats`` timed runs of ``steps`` batches.

    ``steps`` is rounded up to a multiple of ``runner.batches_per_round``.

    Returns:
        ``{"median", "min", "max"}`` images/s, ``"runs"`` (images/s of each run),
        ``"seconds"`` (each run's wall time) and ``"images"`` (images per run).
    """
    rounds = max(1, runner.batches_per_round)
    steps = math.ceil(steps / rounds) * rounds
    for _ in range(runner.warmup_batches):
        runner.step()
    _sync(device)
    rates, seconds, images = [], [], 0
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        images = 0
        for _ in range(steps):
            images += runner.step()
        _sync(device)
        elapsed = time.perf_counter() - start
        seconds.append(round(elapsed, 6))
        rates.append(images / elapsed)
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "runs": rates,
        "seconds": seconds,
        "images": images,
        "batches": steps,
    }


# ----------------------------------------------------------------------------- planning


def _resolve(config: BenchConfig) -> tuple[torch.device, str, int, dict[str, tuple]]:
    if config.device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"`device` is {config.device!r} but CUDA is not available")
    grid_name = config.grid or ("full" if device.type == "cuda" else "quick")
    grid = dict(GRIDS[grid_name])
    workers = config.num_workers if config.num_workers is not None else (os.cpu_count() or 1)
    cpus = os.cpu_count() or 1
    grid["num_workers"] = tuple(w for w in grid["num_workers"] if w <= max(cpus, 1))
    for key, override in (
        ("batch_size", config.scan_batch_sizes),
        ("image_size", config.scan_image_sizes),
        ("num_workers", config.scan_workers),
    ):
        if override is not None:
            grid[key] = tuple(override)
    return device, grid_name, workers, grid


def plan(config: BenchConfig, names: Sequence[str], workers: int, grid: dict) -> list[_Job]:
    """The measurements of one run, deduplicated (a job in several scans is run once)."""
    size = tuple(config.target_size)
    scan_batch = config.scan_batch or config.batch_sizes[0]
    jobs: dict[tuple, _Job] = {}

    def add(job: _Job, scan: str) -> None:
        old = jobs.get(job.key)
        jobs[job.key] = replace(job, scans=(old.scans if old else ()) + (scan,))

    def workers_for(name: str, w: int) -> int:
        return w if P.PIPELINES[name].uses_workers else 0

    for b in config.batch_sizes:
        for name in names:
            if P.PIPELINES[name].end_to_end is not None:
                add(_Job("end_to_end", name, b, size, workers_for(name, workers)), "headline")
            if P.PIPELINES[name].augment_only is not None:
                add(_Job("augment_only", name, b, size, 0), "headline")
    for name in names:
        if P.PIPELINES[name].augment_only is None or not P.PIPELINES[name].scanned:
            continue
        for b in grid["batch_size"]:
            add(_Job("augment_only", name, b, size, 0), "batch_size")
        for s in grid["image_size"]:
            add(_Job("augment_only", name, scan_batch, (s, s), 0), "image_size")
    for name in names:
        pipe = P.PIPELINES[name]
        # The cache makes the workers idle after the first epoch: nothing to scan.
        if (
            not pipe.uses_workers
            or pipe.end_to_end is None
            or not pipe.scanned
            or name == "gpuaug-cache-device"
        ):
            continue
        for w in grid["num_workers"]:
            add(_Job("end_to_end", name, scan_batch, size, w), "num_workers")
    return list(jobs.values())


# ----------------------------------------------------------------------------- profile


def profile_augment(
    directory: Path, batch_size: int, target_size: tuple[int, int], device: torch.device, seed: int
) -> dict:
    """Where gpuaug's augmentation spends its time: torch.profiler over 3 batched calls.

    Returns:
        ``{"batch_size", "image_size", "device", "calls", "sort_by", "top": [{"name", "calls",
        "self_ms", "total_ms", "self_cpu_ms"}], "table"}``; times are per augmented batch
        (averaged over the calls), device time on CUDA (``self_cpu_ms``: host time), else CPU.
    """
    from torch.profiler import ProfilerActivity, profile

    import gpuaug

    calls = 3
    augment = gpuaug.GPUAugment(P.gpuaug_config()).to(device)
    x = P.decoded_batch(directory, batch_size, target_size).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for _ in range(2):
            augment(x, generator=generator)
        _sync(device)
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            for _ in range(calls):
                augment(x, generator=generator)
            _sync(device)
    events = prof.key_averages()
    on_gpu = device.type == "cuda"
    sort_by = "self_device_time_total" if on_gpu else "self_cpu_time_total"

    def self_us(e) -> float:
        return float(e.self_device_time_total if on_gpu else e.self_cpu_time_total)

    def total_us(e) -> float:
        return float(e.device_time_total if on_gpu else e.cpu_time_total)

    ranked = sorted(events, key=self_us, reverse=True)[:15]
    top = [
        {
            "name": e.key,
            "calls": int(e.count) // calls,
            "self_ms": round(self_us(e) / 1000 / calls, 3),
            "total_ms": round(total_us(e) / 1000 / calls, 3),
            "self_cpu_ms": round(float(e.self_cpu_time_total) / 1000 / calls, 3),
        }
        for e in ranked
    ]
    return {
        "batch_size": batch_size,
        "image_size": list(target_size),
        "device": str(device),
        "calls": calls,
        "sort_by": sort_by,
        "top": top,
        "table": events.table(sort_by=sort_by, row_limit=20),
    }


def _breakdown(results: list[dict], config: BenchConfig, workers: int) -> dict | None:
    """ms per image of decode (gpuaug without augmentation), augmentation and end to end."""
    b = max(config.batch_sizes)
    size = list(config.target_size)

    def median(figure: str, pipeline: str) -> float | None:
        for r in results:
            if (
                r["figure"] == figure
                and r["pipeline"] == pipeline
                and r["batch_size"] == b
                and r["image_size"] == size
                and (figure == "augment_only" or r["num_workers"] == workers)
                and "images_per_s" in r
            ):
                return r["images_per_s"]["median"]
        return None

    e2e = median("end_to_end", "gpuaug")
    aug = median("augment_only", "gpuaug")
    decode = median("end_to_end", "gpuaug-no-augment")
    if e2e is None or aug is None:
        return None
    out = {
        "batch_size": b,
        "num_workers": workers,
        "end_to_end_ms_per_image": round(1000 / e2e, 3),
        "augment_ms_per_image": round(1000 / aug, 3),
    }
    if decode is not None:
        out["decode_ms_per_image"] = round(1000 / decode, 3)
    return out


# ----------------------------------------------------------------------------- backends


def copy_bandwidth(device: torch.device, nbytes: int = 512 * 2**20, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + written), measured now on ``device``."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    _sync(device)
    return 2 * nbytes * repeats / (time.perf_counter() - start)


def _count(step, backend: str, images: int, settings: P.Settings, batch, variant: str) -> dict:
    """Ops and bytes of one augmented batch (see :mod:`benchmarks.counting`)."""
    from . import counting

    device = settings.device
    if backend == "compile":
        from torch._inductor import config as inductor_config

        from gpuaug.augment.backends import compile as compiled

        dtype, memory_format = P.VARIANTS[variant]
        from gpuaug.augment.module import sample_params

        b, _, h, w = batch.shape
        gpu_config = P.gpuaug_config()
        compiled.clear_cache()
        torch._dynamo.reset()
        with inductor_config.patch(fx_graph_cache=False):
            fresh, _ = P.gpuaug_backend_step(settings, batch, backend, dtype, memory_format)
            # The draws and their params run eagerly, outside the compiled graph.
            return counting.count_compiled(
                lambda: sample_params(gpu_config, b, h, w, device=device),
                images,
                compile_first=fresh,
            )
    if backend == "triton":
        return counting.count_ops(
            step, images, launches=("gpuaug.augment.backends.triton", "_launch")
        )
    if backend == "opencv":
        calls = ("gpuaug.augment.backends.opencv", ("_warp_image", "_finish_image"))
        return counting.count_ops(step, images, host_calls=calls)
    return counting.count_ops(step, images)


def _reference_diff(batch: torch.Tensor, settings: P.Settings, backend: str, variant: str):
    """Max |backend - reference float32| over one batch, in grey levels (0..255), same params."""
    from gpuaug.augment.module import apply, sample_params

    config = P.gpuaug_config()
    dtype, memory_format = P.VARIANTS[variant]
    x = batch.to(settings.device)
    b, _, h, w = x.shape
    g = torch.Generator(device=settings.device).manual_seed(settings.seed)
    params = sample_params(config, b, h, w, generator=g, device=settings.device)
    with torch.no_grad():
        ref = apply(x, params, config, backend="reference")
        out = apply(x, params, config, dtype=dtype, memory_format=memory_format, backend=backend)
    scale = 1.0 / config.rescale if config.rescale else 1.0
    return round(float((out.float() - ref).abs().max()) * scale, 6)


def measure_backends(
    config: BenchConfig, settings: P.Settings, device: torch.device, names: Sequence[str]
) -> dict:
    """Augmentation-only throughput, ops, bytes and exactness of each gpuaug backend and variant.

    Returns:
        ``{"backends": {name: reason or None}, "variants", "copy_bandwidth_gbps" (CUDA only),
        "results": [{"backend", "variant", "dtype", "memory_format", "batch_size",
        "images_per_s", "counts", "max_diff_grey", "roofline_fraction", ...}]}``.
    """
    requested = config.backends if config.backends is not None else BACKENDS
    availability = {b: P.backend_unavailable(b, device) for b in requested}
    if config.backends is None and device.type == "cpu" and availability.get("triton") is None:
        # Under TRITON_INTERPRET=1 the kernel runs on CPU tensors in Triton's interpreter: a
        # test tool (about 100x slower than the reference), not a speed to report.
        availability["triton"] = (
            "on a CPU only Triton's interpreter runs it (a test tool, not a speed); "
            "ask for it with --backends triton"
        )
    out: dict = {
        "backends": availability,
        "variants": list(config.variants),
        "image_size": list(config.target_size),
        "results": [],
    }
    runnable = [b for b, why in availability.items() if why is None]
    if not runnable or "gpuaug" not in names:
        return out
    bandwidth = copy_bandwidth(device) if device.type == "cuda" else None
    if bandwidth:
        out["copy_bandwidth_gbps"] = round(bandwidth / 1e9, 1)
    counts_cache: dict[tuple, dict] = {}
    for b in config.batch_sizes:
        batch = P.decoded_batch(settings.directory, b, tuple(config.target_size))
        job_settings = replace(settings, batch_size=b)
        steps = max(1, math.ceil(config.min_images / b))
        for backend in runnable:
            for variant in config.variants:
                dtype, memory_format = P.VARIANTS[variant]
                record = {
                    "backend": backend,
                    "variant": variant,
                    "dtype": str(dtype).removeprefix("torch."),
                    "memory_format": str(memory_format).removeprefix("torch."),
                    "batch_size": b,
                }
                try:
                    context = P.gpuaug_backend_augment_only(
                        job_settings, batch, backend, dtype, memory_format
                    )
                    with context as runner:
                        record["images_per_s"] = time_runner(
                            runner, steps=steps, repeats=config.repeats, device=device
                        )
                    step, _ = P.gpuaug_backend_step(
                        job_settings, batch, backend, dtype, memory_format
                    )
                    key = (backend, variant) if backend == "compile" else (backend, variant, b)
                    if key not in counts_cache:
                        counts_cache[key] = _count(step, backend, b, job_settings, batch, variant)
                    record["counts"] = counts_cache[key]
                    record["max_diff_grey"] = _reference_diff(batch, job_settings, backend, variant)
                    if bandwidth:
                        c, h, w = batch.shape[1:]
                        floor_bytes = c * h * w * (1 + dtype.itemsize)  # uint8 in + output once
                        record["roofline_images_per_s"] = round(bandwidth / floor_bytes)
                        record["roofline_fraction"] = round(
                            record["images_per_s"]["median"] * floor_bytes / bandwidth, 4
                        )
                except Exception as err:  # noqa: BLE001 - one backend must not lose the run
                    record["error"] = f"{type(err).__name__}: {err}"
                    warnings.warn(
                        f"backend {backend} {variant} b={b}: {record['error']}",
                        RuntimeWarning,
                        stacklevel=1,
                    )
                out["results"].append(record)
    return out


# ----------------------------------------------------------------------------- run


def run(config: BenchConfig) -> dict:
    """Run the benchmark and return the results document (see the module docstring).

    Raises:
        ValueError: if the device is cuda without CUDA, or a setting is out of range.
    """
    from . import report

    device, grid_name, workers, grid = _resolve(config)
    machine = machine_info(device)
    load = machine["load_average_start"]
    if load and load[0] > 0.5 * (os.cpu_count() or 1):
        warnings.warn(
            f"the machine is busy (1-minute load average {load[0]} on {os.cpu_count()} cores): "
            "other processes will slow the CPU pipelines and make timings noisy",
            RuntimeWarning,
            stacklevel=2,
        )
    requested = list(config.pipelines or P.PIPELINES)
    tmp = None
    if config.data_dir is None:
        tmp = tempfile.mkdtemp(prefix="gpuaug-bench-")
        directory = Path(tmp)
    else:
        directory = Path(config.data_dir)
    try:
        folder = bench_data.make_image_folder(
            directory, config.num_images, seed=config.seed, progress=config.progress
        )
        settings = P.Settings(
            directory=directory,
            target_size=tuple(config.target_size),
            batch_size=config.batch_sizes[0],
            num_workers=workers,
            device=device,
            seed=config.seed,
        )
        pipelines_info, names = {}, []
        for name in requested:
            pipe = P.PIPELINES[name]
            reason = pipe.unavailable(settings)
            pipelines_info[name] = {
                "available": reason is None,
                "skipped_because": reason,
                "augments_on": "cpu" if pipe.augments_on == "cpu" else str(device),
                "uses_workers": pipe.uses_workers,
                "notes": pipe.notes,
            }
            if reason is None:
                names.append(name)
        jobs = plan(config, names, workers, grid)
        results = _measure(jobs, settings, config, device)
        if "gpuaug" in names:
            # Decode-only reference for the profile's breakdown: gpuaug with no augmentation.
            b = max(config.batch_sizes)
            results.extend(
                _measure(
                    [
                        _Job(
                            "end_to_end",
                            "gpuaug-no-augment",
                            b,
                            settings.target_size,
                            workers,
                            scans=("breakdown",),
                        )
                    ],
                    settings,
                    config,
                    device,
                )
            )
        backends = measure_backends(config, settings, device, names)
        profile = None
        if config.profile and "gpuaug" in names:
            try:
                profile = profile_augment(
                    directory, max(config.batch_sizes), settings.target_size, device, config.seed
                )
            except Exception as err:  # noqa: BLE001 - the profile is extra; record the failure
                profile = {"error": f"{type(err).__name__}: {err}"}
            if profile is not None:
                profile["breakdown"] = _breakdown(results, config, workers)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    doc = {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device_label": device_label(machine),
        "machine": machine,
        "settings": {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            "device": str(device),
            "num_workers": workers,
            "grid": grid_name,
            "grid_values": {k: list(v) for k, v in grid.items()},
            "scan_batch": config.scan_batch or config.batch_sizes[0],
            "augment": dict(P.BOOK_AUGMENT),
            "timing": "images/s; median, min, max over `repeats` timed runs of "
            "ceil(min_images / batch_size) batches after the warm-up batches",
        },
        "data": folder.to_dict() | {"root": None if tmp else str(directory)},
        "pipelines": pipelines_info,
        "results": results,
        "backends": backends,
        "profile": profile,
    }
    machine["load_average_end"] = _load_average()
    doc["speedups"] = report.speedups(doc)
    doc["backend_speedups"] = report.backend_speedups(doc)
    return doc


def _measure(
    jobs: list[_Job], settings: P.Settings, config: BenchConfig, device: torch.device
) -> list[dict]:
    from tqdm.auto import tqdm

    batches: dict[tuple, torch.Tensor] = {}
    results = []
    bar = tqdm(jobs, desc="benchmark", unit="job", disable=not config.progress)
    for job in bar:
        bar.set_postfix_str(
            f"{job.figure} {job.pipeline} b={job.batch_size} "
            f"{job.image_size[0]}px w={job.num_workers}",
            refresh=True,
        )
        job_settings = replace(
            settings,
            batch_size=job.batch_size,
            target_size=job.image_size,
            num_workers=job.num_workers,
        )
        record = {
            "figure": job.figure,
            "pipeline": job.pipeline,
            "batch_size": job.batch_size,
            "image_size": list(job.image_size),
            "num_workers": job.num_workers,
            "scans": list(job.scans),
        }
        steps = max(1, math.ceil(config.min_images / job.batch_size))
        try:
            if job.figure == "augment_only":
                key = (job.batch_size, job.image_size)
                if key not in batches:
                    batches[key] = P.decoded_batch(settings.directory, *key)
                factory = P.PIPELINES[job.pipeline].augment_only
                context = factory(job_settings, batches[key])
            elif job.pipeline == "gpuaug-no-augment":
                context = _gpuaug_no_augment(job_settings)
            else:
                context = P.PIPELINES[job.pipeline].end_to_end(job_settings)
            with context as runner:
                record["warmup_batches"] = runner.warmup_batches
                record.update(runner.measured)  # e.g. compile_seconds, outside the timings
                record["images_per_s"] = time_runner(
                    runner, steps=steps, repeats=config.repeats, device=device
                )
        except Exception as err:  # noqa: BLE001 - one failing pipeline must not lose the run
            record["error"] = f"{type(err).__name__}: {err}"
            warnings.warn(
                f"{job.figure} {job.pipeline} b={job.batch_size}: {record['error']}",
                RuntimeWarning,
                stacklevel=1,
            )
        results.append(record)
    bar.close()
    return results


def _gpuaug_no_augment(settings: P.Settings):
    """gpuaug's loader with ``augment=None``: decode, collate, copy, cast; the decode cost."""
    import contextlib

    import gpuaug

    @contextlib.contextmanager
    def context():
        loader = gpuaug.flow_from_directory(
            str(settings.directory),
            augment=None,
            target_size=settings.target_size,
            batch_size=settings.batch_size,
            class_mode="binary",
            seed=settings.seed,
            interpolation="nearest",
            device=settings.device,
            num_workers=settings.num_workers,
            progress=False,
        )
        batches = P._forever(loader)

        def step() -> int:
            x, _ = next(batches)
            return int(x.shape[0])

        rounds = max(1, settings.num_workers)
        try:
            yield P.Runner(step, warmup_batches=rounds, batches_per_round=rounds)
        finally:
            batches.close()

    return context()


# ----------------------------------------------------------------------------- CLI


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers; got {text!r}"
        ) from err
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer; got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    names = tuple(v for v in text.replace(" ", "").split(",") if v)
    unknown = [n for n in names if n not in P.PIPELINES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown pipeline(s) {unknown or text!r}; choose from {', '.join(P.PIPELINES)}"
        )
    return names


def _backend_names(text: str) -> tuple[str, ...]:
    names = tuple(v for v in text.replace(" ", "").split(",") if v)
    if names == ("none",):
        return ()
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown backend(s) {unknown or text!r}; choose from {', '.join(BACKENDS)} or none"
        )
    return names


def _variant_names(text: str) -> tuple[str, ...]:
    names = tuple(v for v in text.replace(" ", "").split(",") if v)
    unknown = [n for n in names if n not in P.VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown variant(s) {unknown or text!r}; choose from {', '.join(P.VARIANTS)}"
        )
    return names


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The benchmark's argument parser (also used by ``gpuaug bench``)."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m benchmarks.bench",
        description="Throughput of gpuaug against Keras ImageDataGenerator, torchvision, "
        "albumentations, kornia (eager and torch.compile) and NVIDIA DALI on one folder of "
        "generated JPEGs, with the same augmentation "
        "(rotation 40, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip, fill nearest, "
        "rescale 1/255). Writes JSON, Markdown and PNG.",
        epilog="pipelines: " + ", ".join(P.PIPELINES),
    )
    d = BenchConfig()
    add = parser.add_argument
    add(
        "--num-images",
        type=int,
        default=d.num_images,
        help="JPEGs to generate (default: %(default)s)",
    )
    add("--data-dir", help="where to write the JPEGs and reuse them later (default: a temp dir)")
    add(
        "--image-size",
        type=_ints,
        default=d.target_size,
        metavar="H[,W]",
        help="target size of the headline runs (default: 150)",
    )
    add(
        "--batch-sizes",
        type=_ints,
        default=d.batch_sizes,
        metavar="B,B",
        help="headline batch sizes (default: 32,256)",
    )
    add(
        "--repeats",
        type=int,
        default=d.repeats,
        help="timed runs per measurement (default: %(default)s)",
    )
    add(
        "--min-images",
        type=int,
        default=d.min_images,
        help="images per timed run, at least one batch (default: %(default)s)",
    )
    add("--num-workers", type=int, help="DataLoader workers, torch pipelines (default: CPU count)")
    add("--device", help="training device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    add("--pipelines", type=_names, help="comma-separated subset (default: all available)")
    add("--grid", choices=sorted(GRIDS), help="scaling grid (default: full with CUDA, else quick)")
    add("--full", action="store_true", help="same as --grid full")
    add("--scan-batch-sizes", type=_ints, metavar="B,B", help="override the grid's batch sizes")
    add("--scan-image-sizes", type=_ints, metavar="S,S", help="override the grid's image sizes")
    add("--scan-workers", type=_ints, metavar="W,W", help="override the grid's worker counts")
    add("--scan-batch", type=int, help="batch size of the image-size and workers scans")
    add("--no-profile", action="store_true", help="skip the profile of the gpuaug augmentation")
    add(
        "--backends",
        type=_backend_names,
        help="gpuaug backends of the backends table, comma-separated, or 'none' "
        f"(default: those of {','.join(BACKENDS)} that run on the device)",
    )
    add(
        "--variants",
        type=_variant_names,
        default=",".join(d.variants),
        help=f"output dtype/layout per backend, from {','.join(P.VARIANTS)} (default: %(default)s)",
    )
    add("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    add("--no-progress", action="store_true", help="no progress bars")
    add(
        "--out",
        help="output JSON path; .md, .png and -profile.txt are written beside it "
        "(default: ./gpuaug-bench/<cpu|cuda>.json; the committed results are replaced only "
        "when asked: --out benchmarks/results/cpu.json)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """A :class:`BenchConfig` from parsed arguments."""
    size = tuple(args.image_size)
    if len(size) == 1:
        size = (size[0], size[0])
    return BenchConfig(
        num_images=args.num_images,
        data_dir=args.data_dir,
        target_size=size,
        batch_sizes=tuple(args.batch_sizes),
        repeats=args.repeats,
        min_images=args.min_images,
        num_workers=args.num_workers,
        device=args.device,
        pipelines=args.pipelines,
        grid="full" if args.full else args.grid,
        scan_batch_sizes=args.scan_batch_sizes,
        scan_image_sizes=args.scan_image_sizes,
        scan_workers=args.scan_workers,
        scan_batch=args.scan_batch,
        profile=not args.no_profile,
        seed=args.seed,
        progress=not args.no_progress,
        backends=args.backends,
        variants=tuple(args.variants),
    )


def write_outputs(doc: dict, out: Path) -> dict[str, Path]:
    """Write ``out`` (JSON), and beside it the Markdown, the PNG (when matplotlib imports:
    `report.can_plot`) and the profile table."""
    from . import report

    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": out, "md": out.with_suffix(".md")}
    if report.can_plot():
        paths["png"] = out.with_suffix(".png")
    out.write_text(json.dumps(doc, indent=1) + "\n")
    png_name = paths["png"].name if "png" in paths else None
    paths["md"].write_text(report.render_markdown(doc, png_name=png_name))
    if "png" in paths:
        report.plot(doc, paths["png"])
    if doc.get("profile") and doc["profile"].get("table"):
        paths["profile"] = out.with_name(out.stem + "-profile.txt")
        paths["profile"].write_text(doc["profile"]["table"])
    return paths


def default_results_dir() -> Path:
    """``./gpuaug-bench`` in the working folder, from a checkout and from an installed wheel
    alike: a run never replaces the committed ``benchmarks/results/`` unless ``--out`` says so."""
    return Path.cwd() / "gpuaug-bench"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    from . import report

    # Through the CLI (`gpuaug bench ...`) the usage line should name that command.
    via_cli = Path(sys.argv[0]).name == "gpuaug"
    parser = build_parser("gpuaug bench" if via_cli else None)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    if not report.can_plot():  # said before the minutes of measuring, not after
        print(f"{parser.prog}: note: {report.NO_PLOT_NOTE}", file=sys.stderr)
    started = time.perf_counter()
    doc = run(config)
    doc["settings"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    out = (
        Path(args.out)
        if args.out
        else default_results_dir() / f"{torch.device(doc['settings']['device']).type}.json"
    )
    paths = write_outputs(doc, out)
    print(report.render_markdown(doc, png_name=paths["png"].name if "png" in paths else None))
    failed = [r for r in doc["results"] if "error" in r]
    failed += [
        {"figure": "backend", "pipeline": f"{r['backend']} {r['variant']}", **r}
        for r in (doc.get("backends") or {}).get("results", [])
        if "error" in r
    ]
    for r in failed:
        print(
            f"FAILED {r['figure']} {r['pipeline']} b={r['batch_size']}: {r['error']}",
            file=sys.stderr,
        )
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
