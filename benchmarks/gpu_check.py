"""One command that validates gpuaug on a GPU: ``python -m benchmarks.gpu_check --out DIR``.

Run from the repository root. Each check is a small function below; each gives a verdict,
``"pass"``, ``"fail"`` (with a ``detail``) or ``"skipped: <why>"``, plus its measurements.
Without CUDA the CUDA-only checks say ``"skipped: no CUDA"`` (they do not pass) and the rest
still run, so the command is exercised on any machine. Everything goes into one JSON,
``<out>/gpu-check-<cuda|cpu>.json`` (default ``benchmarks/results/``), beside the logs it
writes (``cuda-tests.log``, ``profile.txt``, ``profile-trace.json``, ``bench-*.json``). Exit
status 1 when any check fails, else 0.

Checks, in order:

- ``cuda_tests``: ``pytest -m cuda`` (the tests marked for a GPU).
- ``sync_free_epochs``: two epochs of every loader mode (no cache, ``cache="device"``,
  ``"host"``, ``"disk"``, ``decode="gpu"``, ``layout="planar"``, and images at their own sizes
  cropped by the ImageNet recipe: alone, with ``cache="host"``, with ``decode="gpu"``) under
  ``torch.cuda.set_sync_debug_mode("error")`` after a warm-up epoch: any synchronising CUDA
  call in the hot path raises.
- ``cpu_gpu_parity``: the same seeded, augmented epoch on the GPU and on the CPU, equal within
  1e-3 grey levels image for image, for every ``fill_mode`` (needs the augmentation's uniforms
  drawn on a CPU generator).
- ``jpeg_check_parity`` (also without CUDA): on real photos (scikit-image's samples upscaled to
  >= 1 MP, saved as baseline, progressive, 4:4:4, grayscale, CMYK, EXIF orientations 2-8,
  truncated, without end marker, garbage), the files a ``decode="gpu"`` worker refuses
  (:func:`gpuaug.data.jpeg.read_gpu_jpeg`) are exactly those ``decode="cpu"`` refuses.
- ``nvjpeg_vs_cpu``: the same photos (hard-linked up to the batch size) through the loader
  with ``decode="gpu"`` and ``decode="cpu"`` at batch 256 and 1024 with 4 workers: image for
  image within :data:`NVJPEG_MEAN_TOL` / :data:`NVJPEG_MAX_TOL` grey levels (nvJPEG's IDCT and
  chroma upsampling differ from libjpeg-turbo's), and the same skip list; peak
  ``torch.cuda.max_memory_allocated`` of each run.
- ``decode_peak_memory``: one batch of 256 photos through :func:`gpuaug.data.nvjpeg.decode_jpegs`
  stays within the memory its pixel budget allows (not the whole batch at full resolution).
- ``host_cache_pinned``: pinned host memory of a ``cache="host"`` loader after an epoch is about
  the cache's ``nbytes`` or less (not 2x: the caching host allocator rounds to powers of two).
- ``tf32_warp``: the augmentation with TF32 matmuls allowed equals the one without.
- ``copy_overlap_profile``: a short ``torch.profiler`` run of a ``cache="host"`` loader under a
  compute load; the host-to-device copies must overlap kernels on another stream.
- ``benchmark``: ``benchmarks.bench`` with a quick setting, written beside the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # quiet libkineto without a GPU

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

__all__ = ["CHECKS", "CheckSettings", "main", "run_checks"]

SCHEMA = "gpuaug-gpu-check/1"
REPO_ROOT = Path(__file__).resolve().parent.parent
PASS, FAIL, NO_CUDA = "pass", "fail", "skipped: no CUDA"

#: Same seeded epoch on CPU and GPU: largest allowed difference, grey levels (0..255 scale).
PARITY_TOL = 1e-3
#: nvJPEG vs PIL after the resize: per-image mean |difference| and largest pixel difference.
NVJPEG_MEAN_TOL = 1.5
NVJPEG_MAX_TOL = 40.0
#: The augmentation of the checks (the book's Keras settings, without rescale).
AUGMENT = {
    "rotation_range": 40,
    "width_shift_range": 0.2,
    "height_shift_range": 0.2,
    "shear_range": 0.2,
    "zoom_range": 0.2,
    "horizontal_flip": True,
}
QUICK_BENCH = "--num-images 256 --repeats 2 --min-images 256 --batch-sizes 32,256 --grid none"
#: Without CUDA the benchmark only shows that it runs (the CPU numbers are not the point here).
CPU_BENCH = (
    "--num-images 32 --repeats 1 --min-images 32 --batch-sizes 32 --grid none --no-profile "
    "--pipelines gpuaug,gpuaug-cache-device"
)


@dataclass(frozen=True)
class CheckSettings:
    """The sizes of one run (``--quick`` shrinks them for a CPU smoke test).

    Attributes:
        photo_megapixels: size of the generated photos (>= 1 for the real check).
        photo_sources: how many scikit-image photos to derive the variants from.
        decode_batch_sizes: batch sizes of ``nvjpeg_vs_cpu``.
        num_workers: DataLoader workers of the loader checks.
        target_size: output size of the decode checks.
        small_images: JPEGs in the folder of the loader-mode, parity and profile checks (300:
            a host cache of 8.3 MB, which a power-of-two pin would round to 16.8 MB).
        small_size: output size (square) of those checks.
        bench_args: arguments of ``benchmarks.bench`` (``--out`` is added); ``None``:
            :data:`QUICK_BENCH` with CUDA, :data:`CPU_BENCH` without.
        device: the CUDA device to check.
    """

    photo_megapixels: float = 1.2
    photo_sources: int = 3
    decode_batch_sizes: tuple[int, ...] = (256, 1024)
    num_workers: int = 4
    target_size: tuple[int, int] = (224, 224)
    small_images: int = 300
    small_size: int = 96
    bench_args: str | None = None
    device: str = "cuda"


QUICK = CheckSettings(
    photo_megapixels=0.01,
    photo_sources=1,
    decode_batch_sizes=(16,),
    num_workers=0,
    target_size=(32, 32),
    small_images=12,
    small_size=32,
    bench_args="--num-images 8 --repeats 1 --min-images 8 --batch-sizes 8 --grid none "
    "--no-profile --pipelines gpuaug",
)


@dataclass
class Context:
    """What the checks share: settings, folders (made once), and the output directory."""

    settings: CheckSettings
    out: Path
    work: Path
    cuda: bool
    notes: dict[str, Any] = field(default_factory=dict)
    _small: Path | None = None
    _photos: dict[str, str] | None = None

    @property
    def device(self) -> torch.device:
        return torch.device(self.settings.device if self.cuda else "cpu")

    def small_folder(self) -> Path:
        if self._small is None:
            from . import data as bench_data

            self._small = self.work / "small"
            s = self.settings.small_size
            bench_data.make_image_folder(
                self._small, self.settings.small_images, min_side=s, max_side=2 * s, progress=False
            )
        return self._small

    def photos(self) -> dict[str, str]:
        """``{file name: kind}`` of the photo variants in ``work/photos/a`` (made once)."""
        if self._photos is None:
            self._photos = make_photo_set(
                self.work / "photos" / "a",
                self.settings.photo_megapixels,
                self.settings.photo_sources,
            )
        return self._photos


# ---------------------------------------------------------------------- photos
def _sources(count: int) -> list[tuple[str, np.ndarray]]:
    from . import data as bench_data

    photos = [p for p in bench_data.sample_photos() if p[0] in ("astronaut", "coffee", "chelsea")]
    photos += [p for p in bench_data.sample_photos() if p not in photos]
    if not photos:  # no scikit-image: textured stand-ins
        rng = np.random.default_rng(0)
        photos = [(f"synthetic{i}", bench_data.synthetic_image(rng)) for i in range(count)]
    return photos[:count]


def _jpeg(img: Image.Image, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=kwargs.pop("quality", 90), **kwargs)
    return buf.getvalue()


def make_photo_set(folder: Path, megapixels: float, sources: int) -> dict[str, str]:
    """Writes the JPEG variants of real photos into ``folder``; returns ``{name: kind}``.

    Each source photo is upscaled (bicubic) to about ``megapixels`` and saved as: baseline,
    progressive, 4:4:4, grayscale, CMYK, EXIF orientations 2-8, truncated at 60 %, and
    without its final end-of-image marker; plus one file of random bytes and one of random
    bytes after a JPEG start marker, both named ``.jpg``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, str] = {}

    def write(name: str, data: bytes, kind: str) -> None:
        (folder / name).write_bytes(data)
        kinds[name] = kind

    for name, array in _sources(sources):
        h, w = array.shape[:2]
        scale = (megapixels * 1e6 / (h * w)) ** 0.5
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        img = Image.fromarray(array).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        base = _jpeg(img)
        write(f"{name}-baseline.jpg", base, "baseline")
        write(f"{name}-progressive.jpg", _jpeg(img, progressive=True), "progressive")
        write(f"{name}-444.jpg", _jpeg(img, subsampling=0), "4:4:4")
        write(f"{name}-grey.jpg", _jpeg(img.convert("L")), "grayscale")
        write(f"{name}-cmyk.jpg", _jpeg(img.convert("CMYK")), "CMYK")
        for orientation in range(2, 9):
            exif = Image.Exif()
            exif[0x0112] = orientation
            write(f"{name}-exif{orientation}.jpg", _jpeg(img, exif=exif), f"EXIF {orientation}")
        write(f"{name}-truncated.jpg", base[: len(base) * 3 // 5], "truncated")
        write(f"{name}-no-eoi.jpg", base[:-2], "no end marker")
    rng = np.random.default_rng(1)
    write("garbage.jpg", rng.bytes(5000), "garbage")
    write("garbage-soi.jpg", b"\xff\xd8\xff\xe0" + rng.bytes(5000), "garbage after SOI")
    return kinds


def replicate(src: Path, dst: Path, count: int) -> Path:
    """``dst/a`` and ``dst/b`` holding ``count`` hard links (copies if links fail) of ``src``'s
    files, alternating, so a big batch reads real photos without writing them again."""
    files = sorted(src.iterdir())
    for k in range(count):
        target = dst / "ab"[k % 2] / f"{k:05d}-{files[k % len(files)].name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(files[k % len(files)], target)
            except OSError:
                target.write_bytes(files[k % len(files)].read_bytes())
    return dst


# ---------------------------------------------------------------------- helpers
def _verdict(ok: bool, detail: str = "", **metrics: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"verdict": PASS if ok else FAIL}
    if detail and not ok:
        out["detail"] = detail
    if metrics:
        out["metrics"] = metrics
    return out


def _loader(root: Path, ctx: Context, **kwargs: Any):
    import gpuaug

    kwargs = {
        "target_size": (ctx.settings.small_size, ctx.settings.small_size),
        "batch_size": 32,
        "seed": 0,
        "device": ctx.device,
        "num_workers": min(2, ctx.settings.num_workers),
        "class_mode": "sparse",
        "progress": False,
        **kwargs,
    }
    return gpuaug.flow_from_directory(root, **kwargs)


@contextlib.contextmanager
def sync_debug_error() -> Iterator[None]:
    """``torch.cuda.set_sync_debug_mode("error")`` inside, the previous mode after."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def _short(exc: BaseException, frames: int = 3) -> str:
    tb = traceback.extract_tb(exc.__traceback__)[-frames:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(tb))
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]} (at {where})"


def _epochs(loader: Any, count: int) -> int:
    batches = 0
    for _ in range(count):
        for _batch in loader:
            batches += 1
    return batches


# ---------------------------------------------------------------------- the checks
def check_cuda_tests(ctx: Context) -> dict[str, Any]:
    """``pytest -m cuda``: every test marked for a GPU."""
    log = ctx.out / "cuda-tests.log"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    log.write_text(proc.stdout + proc.stderr)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    summary = lines[-1] if lines else ""
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return _verdict(
        proc.returncode == 0,
        "; ".join(failed[:10]) or "\n".join(lines[-15:]),
        summary=summary,
        log=log.name,
    )


_RAGGED: dict[str, Any] = {
    "target_size": None, "max_side": 160, "recipe": "imagenet_rrc", "interpolation": "bilinear",
}  # fmt: skip
LOADER_MODES: dict[str, dict[str, Any]] = {
    "no cache": {},
    "cache=device": {"cache": "device"},
    "cache=host": {"cache": "host"},
    "cache=disk": {"cache": "disk"},
    "decode=gpu": {"decode": "gpu", "interpolation": "bilinear"},
    "layout=planar": {"layout": "planar"},
    # images at their own sizes, packed, cropped from the full image by the ImageNet recipe
    "ragged + recipe": _RAGGED,
    "ragged + recipe, cache=host": {**_RAGGED, "cache": "host"},
    "ragged + recipe, decode=gpu": {**_RAGGED, "decode": "gpu"},
}


def check_sync_free_epochs(ctx: Context) -> dict[str, Any]:
    """Two epochs per loader mode under ``set_sync_debug_mode("error")``, after a warm-up."""
    from gpuaug import AugmentConfig

    results, bad = {}, []
    for name, extra in LOADER_MODES.items():
        if extra.get("cache") == "disk":
            extra = {**extra, "cache_dir": ctx.work / "disk-cache"}
        augment = None if "recipe" in extra else AugmentConfig(**AUGMENT)
        loader = _loader(ctx.small_folder(), ctx, augment=augment, **extra)
        try:
            _epochs(loader, 1)  # warm-up: caches, workers, cuDNN/kernel selection
            torch.cuda.synchronize()
            with sync_debug_error():
                batches = _epochs(loader, 2)
            torch.cuda.synchronize()
            results[name] = f"ok ({batches} batches)"
        except Exception as exc:  # noqa: BLE001 - each mode reports its own failure
            results[name] = _short(exc)
            bad.append(f"{name}: {results[name]}")
        finally:
            loader.close()
    return _verdict(not bad, "; ".join(bad), modes=results)


def check_cpu_gpu_parity(ctx: Context) -> dict[str, Any]:
    """The same seeded augmented epoch on the GPU and the CPU, every fill mode."""
    from gpuaug import AugmentConfig
    from gpuaug.augment.config import FILL_MODES

    worst, bad = {}, []
    for fill in FILL_MODES:
        config = AugmentConfig(**AUGMENT, fill_mode=fill, cval=128.0)
        runs = {}
        for device in (ctx.device, torch.device("cpu")):
            loader = _loader(ctx.small_folder(), ctx, augment=config, seed=7, device=device)
            runs[device.type] = [x.float().cpu() for x, _ in loader]
            loader.close()
        diffs = [
            (g - c).abs().flatten(1).amax(1)
            for g, c in zip(runs[ctx.device.type], runs["cpu"], strict=True)
        ]
        per_image = torch.cat(diffs)
        worst[fill] = float(per_image.max())
        over = int((per_image > PARITY_TOL).sum())
        if over:
            bad.append(
                f"fill_mode={fill}: {over} of {len(per_image)} images differ by more than "
                f"{PARITY_TOL} (max {worst[fill]:.3g})"
            )
    return _verdict(not bad, "; ".join(bad), max_abs_diff=worst, tolerance=PARITY_TOL)


def check_jpeg_check_parity(ctx: Context) -> dict[str, Any]:
    """The files a ``decode="gpu"`` worker refuses are exactly those ``decode="cpu"`` does."""
    from gpuaug.data.image import ImageLoadError, load_image
    from gpuaug.data.jpeg import read_gpu_jpeg

    kinds = ctx.photos()
    folder = ctx.work / "photos" / "a"
    gpu_refuses, cpu_refuses, routes = set(), set(), {"nvjpeg": 0, "cpu": 0}
    for name in sorted(kinds):
        path = folder / name
        try:  # the decode="gpu" worker: bytes for nvJPEG, else PIL as with decode="cpu"
            if read_gpu_jpeg(path) is not None:
                routes["nvjpeg"] += 1
            else:
                routes["cpu"] += 1
                load_image(path, ctx.settings.target_size)
        except ImageLoadError:
            gpu_refuses.add(name)
        try:
            load_image(path, ctx.settings.target_size)
        except ImageLoadError:
            cpu_refuses.add(name)
    detail = (
        f"refused only with decode='gpu': {sorted(gpu_refuses - cpu_refuses)}; "
        f"only with decode='cpu': {sorted(cpu_refuses - gpu_refuses)}"
    )
    return _verdict(
        gpu_refuses == cpu_refuses,
        detail,
        files=len(kinds),
        refused=sorted(cpu_refuses),
        routes=routes,
    )


def _decode_epoch(root: Path, ctx: Context, decode: str, batch: int) -> dict[str, Any]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Skipped N unreadable files"
        loader = _loader(
            root,
            ctx,
            augment=None,
            decode=decode,
            batch_size=batch,
            shuffle=False,
            on_error="skip",
            num_workers=ctx.settings.num_workers,
            interpolation="bilinear",
            target_size=ctx.settings.target_size,
        )
        batches = [x for x, _ in loader]
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    found = [*loader.dataset.skipped, *loader.last_skipped]  # at indexing, in the epoch
    skipped = sorted(Path(p).name for p, _ in found)
    dropped = {p for p, _ in loader.last_skipped}
    names = [Path(p).name for p, _ in loader.dataset.samples if p not in dropped]  # row order
    loader.close()
    peak = torch.cuda.max_memory_allocated()
    return {
        "batches": batches,
        "skipped": skipped,
        "names": names,
        "seconds": seconds,
        "peak": peak,
    }


def check_nvjpeg_vs_cpu(ctx: Context) -> dict[str, Any]:
    """``decode="gpu"`` vs ``"cpu"`` on real photos: pixels, skip lists, peak memory."""
    ctx.photos()
    metrics, bad = {}, []
    for batch in ctx.settings.decode_batch_sizes:
        root = replicate(ctx.work / "photos" / "a", ctx.work / f"photos-{batch}", batch)
        gpu = _decode_epoch(root, ctx, "gpu", batch)
        cpu = _decode_epoch(root, ctx, "cpu", batch)
        worst_mean = worst_max = 0.0
        by_kind: dict[str, float] = {}
        if gpu["skipped"] != cpu["skipped"]:
            only_gpu = sorted(set(gpu["skipped"]) - set(cpu["skipped"]))[:5]
            only_cpu = sorted(set(cpu["skipped"]) - set(gpu["skipped"]))[:5]
            bad.append(f"batch {batch}: skipped only with gpu {only_gpu}, only with cpu {only_cpu}")
        else:
            means, maxes = [], []
            for xg, xc in zip(gpu["batches"], cpu["batches"], strict=True):
                diff = (xg.float() - xc.float()).abs().flatten(1)
                means += diff.mean(1).tolist()
                maxes += diff.amax(1).tolist()
            worst_mean, worst_max = max(means, default=0.0), max(maxes, default=0.0)
            kinds = ctx.photos()
            for name, mean in zip(gpu["names"], means, strict=True):  # "00012-coffee-444.jpg"
                kind = kinds.get(name.split("-", 1)[1], "?")
                by_kind[kind] = round(max(by_kind.get(kind, 0.0), mean), 3)
            if worst_mean > NVJPEG_MEAN_TOL or worst_max > NVJPEG_MAX_TOL:
                bad.append(
                    f"batch {batch}: per-image mean |diff| up to {worst_mean:.2f} "
                    f"(tolerance {NVJPEG_MEAN_TOL}), max {worst_max:.0f} ({NVJPEG_MAX_TOL})"
                )
        metrics[f"batch_{batch}"] = {
            "images": sum(len(x) for x in gpu["batches"]),
            "skipped": len(cpu["skipped"]),
            "worst_image_mean_abs_diff": round(worst_mean, 3),
            "worst_mean_abs_diff_by_kind": by_kind,
            "max_abs_diff": round(worst_max, 1),
            "peak_allocated_mb": {
                "gpu_decode": round(gpu["peak"] / 2**20, 1),
                "cpu_decode": round(cpu["peak"] / 2**20, 1),
            },
            "epoch_seconds": {
                "gpu_decode": round(gpu["seconds"], 2),
                "cpu_decode": round(cpu["seconds"], 2),
            },
        }
        del gpu, cpu
    return _verdict(
        not bad,
        "; ".join(bad),
        tolerance={"mean": NVJPEG_MEAN_TOL, "max": NVJPEG_MAX_TOL},
        **metrics,
    )


def check_decode_peak_memory(ctx: Context) -> dict[str, Any]:
    """256 photos through ``decode_jpegs``: peak memory bounded by the pixel budget."""
    from gpuaug.data.jpeg import read_gpu_jpeg
    from gpuaug.data.nvjpeg import DEFAULT_PIXEL_BUDGET, decode_jpegs

    ctx.photos()
    root = replicate(ctx.work / "photos" / "a", ctx.work / "photos-256", 256)
    data, full = [], 0
    for path in sorted(root.rglob("*.jpg")):
        with contextlib.suppress(Exception):
            routed = read_gpu_jpeg(path)
            if routed is not None:
                data.append(routed[0])
                full += routed[1].height_px * routed[1].width_px * 3
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = decode_jpegs(data, ctx.device, ctx.settings.target_size, "rgb", "bilinear")
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    # a chunk at full resolution: decoded, stacked by size, turned upright (uint8 each), and
    # the float32 copy the resize makes; plus the output
    bound = out.images.nbytes + DEFAULT_PIXEL_BUDGET * 3 * (1 + 1 + 1 + 4) + 64 * 2**20
    return _verdict(
        peak <= bound,
        f"peak {peak / 2**20:.0f} MB over the pixel-budget bound {bound / 2**20:.0f} MB",
        images=len(data),
        peak_mb=round(peak / 2**20, 1),
        bound_mb=round(bound / 2**20, 1),
        full_resolution_batch_mb=round(full / 2**20, 1),
    )


def _pinned_bytes() -> int | None:
    stats = torch.cuda.host_memory_stats() if hasattr(torch.cuda, "host_memory_stats") else {}
    for key in ("allocated_bytes.current", "reserved_bytes.current"):
        if key in stats:
            return int(stats[key])
    return None


def check_host_cache_pinned(ctx: Context) -> dict[str, Any]:
    """Pinned host memory of a ``cache="host"`` loader: about ``nbytes`` or less, not 2x."""
    before = _pinned_bytes()
    if before is None:
        return {"verdict": "skipped: torch.cuda.host_memory_stats unavailable"}
    loader = _loader(ctx.small_folder(), ctx, cache="host")
    _epochs(loader, 1)
    torch.cuda.synchronize()
    pinned = (_pinned_bytes() or 0) - before
    nbytes = loader.cache.nbytes
    loader.close()
    ratio = pinned / nbytes
    return _verdict(
        ratio <= 1.25,
        f"{pinned / 1e6:.1f} MB pinned for a {nbytes / 1e6:.1f} MB cache ({ratio:.2f}x)",
        pinned_mb=round(pinned / 1e6, 2),
        cache_mb=round(nbytes / 1e6, 2),
        ratio=round(ratio, 3),
    )


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls (and cuDNN convolutions) on or off inside; restored after."""
    saved = (
        torch.get_float32_matmul_precision(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cuda.matmul.allow_tf32 = saved[1]
        torch.backends.cudnn.allow_tf32 = saved[2]


def check_tf32_warp(ctx: Context) -> dict[str, Any]:
    """The augmentation with TF32 allowed equals the one without, every fill mode."""
    from gpuaug import AugmentConfig, GPUAugment
    from gpuaug.augment.config import FILL_MODES

    loader = _loader(ctx.small_folder(), ctx, augment=None, shuffle=False)
    images = next(iter(loader))[0].to(torch.uint8)
    loader.close()
    worst, bad = {}, []
    for fill in FILL_MODES:
        augment = GPUAugment(AugmentConfig(**AUGMENT, fill_mode=fill, cval=128.0)).to(ctx.device)
        outs = []
        for enabled in (False, True):
            g = torch.Generator(ctx.device).manual_seed(3)
            with tf32(enabled):
                params = augment.sample_params(images, generator=g)
                outs.append(augment.apply(images, params).float())
        worst[fill] = float((outs[0] - outs[1]).abs().max())
        if worst[fill] > PARITY_TOL:
            bad.append(f"fill_mode={fill}: TF32 changes the output by up to {worst[fill]:.3g}")
    return _verdict(not bad, "; ".join(bad), max_abs_diff=worst)


def _overlap(trace: dict) -> tuple[float, float]:
    """(host-to-device copy time, part of it overlapping kernels on other streams), in us."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
    copies = [e for e in events if e.get("cat") == "gpu_memcpy" and "HtoD" in e.get("name", "")]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    total = covered = 0.0
    for c in copies:
        start, end = c["ts"], c["ts"] + c["dur"]
        stream = c.get("args", {}).get("stream")
        spans = sorted(
            (max(start, k["ts"]), min(end, k["ts"] + k["dur"]))
            for k in kernels
            if k.get("args", {}).get("stream") != stream
            and k["ts"] < end
            and k["ts"] + k["dur"] > start
        )
        total += c["dur"]
        reach = start
        for lo, hi in spans:  # union of the overlapping spans
            lo = max(lo, reach)
            if hi > lo:
                covered += hi - lo
                reach = hi
    return total, covered


def check_copy_overlap_profile(ctx: Context) -> dict[str, Any]:
    """``torch.profiler`` on a ``cache="host"`` loader under load: copies overlap kernels."""
    from torch.profiler import ProfilerActivity, profile

    loader = _loader(ctx.small_folder(), ctx, cache="host", batch_size=64)
    _epochs(loader, 1)  # warm-up (the cache is built)
    weight = torch.randn(64, 3, 3, 3, device=ctx.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for x, _ in loader:  # a stand-in training step per batch
            y = x
            for _ in range(20):
                y = torch.nn.functional.conv2d(x, weight, padding=1).relu().mean(1, keepdim=True)
                x = x + y
        torch.cuda.synchronize()
    loader.close()
    trace_path = ctx.out / "profile-trace.json"
    prof.export_chrome_trace(str(trace_path))
    table = prof.key_averages().table(sort_by="device_time_total", row_limit=15)
    (ctx.out / "profile.txt").write_text(table)
    total, covered = _overlap(json.loads(trace_path.read_text()))
    fraction = covered / total if total else 0.0
    return _verdict(
        total > 0 and fraction > 0,
        f"no host-to-device copy overlapped a kernel ({total:.0f} us of copies)",
        copy_us=round(total, 1),
        overlapped_fraction=round(fraction, 3),
        table="profile.txt",
        trace=trace_path.name,
    )


def check_benchmark(ctx: Context) -> dict[str, Any]:
    """``benchmarks.bench`` with a quick setting, written beside the JSON."""
    from . import bench

    out = ctx.out / f"bench-{ctx.device.type}.json"
    given = ctx.settings.bench_args
    given = given if given is not None else QUICK_BENCH if ctx.cuda else CPU_BENCH
    args = [*shlex.split(given), "--no-progress", "--out", str(out)]
    if "--device" not in args:
        args += ["--device", str(ctx.device)]
    with contextlib.redirect_stdout(io.StringIO()):
        rc = bench.main(args)
    return _verdict(rc == 0, f"benchmarks.bench exited with {rc}", args=args, json=out.name)


@dataclass(frozen=True)
class Check:
    """One check: its function and whether it needs CUDA."""

    run: Callable[[Context], dict[str, Any]]
    cuda_only: bool


#: The checks, in the order they run.
CHECKS: dict[str, Check] = {
    "cuda_tests": Check(check_cuda_tests, True),
    "sync_free_epochs": Check(check_sync_free_epochs, True),
    "cpu_gpu_parity": Check(check_cpu_gpu_parity, True),
    "jpeg_check_parity": Check(check_jpeg_check_parity, False),
    "nvjpeg_vs_cpu": Check(check_nvjpeg_vs_cpu, True),
    "decode_peak_memory": Check(check_decode_peak_memory, True),
    "host_cache_pinned": Check(check_host_cache_pinned, True),
    "tf32_warp": Check(check_tf32_warp, True),
    "copy_overlap_profile": Check(check_copy_overlap_profile, True),
    "benchmark": Check(check_benchmark, False),
}


# ---------------------------------------------------------------------- running
def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine(cuda: bool, device: str) -> dict[str, Any]:
    """The device and the library versions."""
    info: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu (no CUDA)",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_cuda_build": torch.version.cuda,
        "versions": {
            name: _version(name)
            for name in (
                "torch",
                "torchvision",
                "triton",
                "kornia",
                "keras",
                "albumentations",
                "numpy",
                "pillow",
                "scikit-image",
                "gpuaug",
            )
        },
    }
    if cuda:
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
        }
    return info


def run_checks(
    settings: CheckSettings,
    out: Path,
    *,
    only: set[str] | None = None,
    skip: set[str] = frozenset(),
    cuda: bool | None = None,
) -> dict[str, Any]:
    """Runs the checks; returns the JSON document (also written to ``out``)."""
    unknown = ((only or set()) | set(skip)) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)}; the checks are {list(CHECKS)}")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu-check-{'cuda' if cuda else 'cpu'}.json"
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **machine(cuda, settings.device),
        "settings": asdict(settings),
        "complete": False,
        "checks": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpuaug-gpu-check-") as work:
        ctx = Context(settings, out, Path(work), cuda)
        for name, check in CHECKS.items():
            t0 = time.perf_counter()
            if (only is not None and name not in only) or name in skip:
                verdict = {"verdict": "skipped: not selected"}
            elif check.cuda_only and not cuda:
                verdict = {"verdict": NO_CUDA}
            else:
                try:
                    verdict = check.run(ctx)
                except Exception as exc:  # noqa: BLE001 - a crashing check is a failed check
                    verdict = {"verdict": FAIL, "detail": _short(exc, frames=4)}
            verdict["seconds"] = round(time.perf_counter() - t0, 2)
            doc["checks"][name] = verdict
            print(f"{name:22s} {verdict['verdict']}  {verdict.get('detail', '')}", flush=True)
            _write(doc, path, started)  # after every check: a run cut short keeps its verdicts
    doc["complete"] = True
    _write(doc, path, started)
    doc["path"] = str(path)
    return doc


def _write(doc: dict[str, Any], path: Path, started: float) -> None:
    counts = {"pass": 0, "fail": 0, "skipped": 0}
    for v in doc["checks"].values():
        counts["skipped" if v["verdict"].startswith("skipped") else v["verdict"]] += 1
    doc["summary"] = counts
    doc["wall_seconds"] = round(time.perf_counter() - started, 1)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def _names(text: str) -> set[str]:
    return {n.strip() for n in text.split(",") if n.strip()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check",
        description="Validate gpuaug on a GPU: cuda tests, sync-free epochs, CPU/GPU parity, "
        "nvJPEG vs PIL, memory, TF32, copy overlap, benchmark. Writes one JSON.",
        epilog="checks: " + ", ".join(CHECKS),
    )
    add = parser.add_argument
    add(
        "--out",
        default=None,
        help="output folder (default: ./gpuaug-bench/; --out benchmarks/results to replace the "
        "committed results)",
    )
    add("--quick", action="store_true", help="tiny sizes: a smoke test of the command itself")
    add("--only", type=_names, help="comma-separated checks to run (default: all)")
    add("--skip", type=_names, default=set(), help="comma-separated checks to leave out")
    add("--device", default="cuda", help="the CUDA device to check (default: cuda)")
    add("--photo-mp", type=float, help="megapixels of the generated photos (default: 1.2)")
    add("--bench-args", help=f"arguments of benchmarks.bench (default with CUDA: {QUICK_BENCH!r})")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 1 if any check failed, else 0."""
    args = build_parser().parse_args(argv)
    settings = QUICK if args.quick else CheckSettings()
    overrides: dict[str, Any] = {"device": args.device}
    if args.photo_mp is not None:
        overrides["photo_megapixels"] = args.photo_mp
    if args.bench_args is not None:
        overrides["bench_args"] = args.bench_args
    settings = CheckSettings(**{**asdict(settings), **overrides})
    out = Path(args.out) if args.out is not None else Path.cwd() / "gpuaug-bench"
    doc = run_checks(settings, out, only=args.only, skip=args.skip)
    s = doc["summary"]
    print(f"{s['pass']} passed, {s['fail']} failed, {s['skipped']} skipped; wrote {doc['path']}")
    return 1 if s["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
