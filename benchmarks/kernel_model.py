"""The fused kernel's performance model: what it should take on an H100 / H200, from the CPU.

No GPU has run this code. Every number here is computed, from three things a CPU can see:

1. the compiled sm_90 code (`benchmarks.sm90`: registers, SASS instructions per pixel, loads,
   stores), exactly what a first launch on an H100 / H200 would build;
2. a simulation of the kernel's gathers (`lines_per_gather`): the book's random parameters
   drawn as the loader draws them, each warp's 32 source addresses per load instruction, and
   how many distinct 128-byte lines they touch (each one an L1 wavefront);
3. the hardware's published rates (`HARDWARE`).

The modelled kernel time is the largest of three bounds, assumed to overlap perfectly (an
optimistic model, stated as such):

- DRAM: the bytes the kernel moves (its uint8 source, 4 bytes a pixel for an RGBX source, and
  the output) at the peak bandwidth. The *copy roofline* is the same bound for the bytes any
  design must move: uint8 RGB in, the output dtype out;
- L1: the wavefronts (distinct 128-byte lines per warp load / store instruction, summed) at one
  per SM per clock;
- issue: warp instructions at four per SM per clock;

plus, per extra dependent kernel (the prologue, a channel shift's first pass), a launch gap
(`LAUNCH_GAP_S`) and the prologue's own latency (its SASS instructions one after the other at
`PROLOGUE_CYCLES_PER_INSTRUCTION`). The host side is measured on this CPU
(`benchmarks.sm90.host_seconds`: everything of a launch but the driver call).

Which source the kernel reads depends on the loader path: `loader_paths` asks the loader's own
rule (`gpuaug.loader.stages.layout.choose_layout`, ``layout="auto"``, as it decides on a CUDA
machine where the ``"auto"`` backend is the fused kernel) for each path, and the headline table
gives each path's modelled kernel row and the bytes it copies and caches.

Regenerate ``benchmarks/results/kernel_model.{json,md}`` with::

    python -m benchmarks.kernel_model

(about a minute; it compiles every variant for sm_90 and needs ``TRITON_INTERPRET`` unset).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "HARDWARE",
    "Hardware",
    "lines_per_gather",
    "loader_paths",
    "main",
    "model",
    "warp_footprints",
]


@dataclass(frozen=True)
class Hardware:
    """One GPU's published rates (SXM parts, boost clock)."""

    name: str
    sms: int
    clock_hz: float
    dram_bytes_per_s: float


HARDWARE = (
    Hardware("H100 SXM", 132, 1.98e9, 3.35e12),
    Hardware("H200", 132, 1.98e9, 4.8e12),
)

LAUNCH_GAP_S = 1e-6  # between two kernels queued on one stream
PROLOGUE_CYCLES_PER_INSTRUCTION = 8  # a dependent float64 chain: no overlap within a thread
DRAM_LATENCY_S = 1e-6  # the prologue's draws read, once
LINE_BYTES = 128


# ----------------------------------------------------------------------------- gathers


def warp_footprints(kind: str, height: int, width: int) -> np.ndarray:
    """The output pixels (flat indices) of each warp load instruction, one row of 32 per
    instruction; -1 where a lane is outside the image.

    kinds: ``"tile4x8"`` (the kernel: one pixel per lane, 4 rows x 8 columns per warp),
    ``"row32"`` (32 consecutive pixels of the flattened image, one per lane) and ``"vec4"``
    (4 consecutive pixels per lane, as 16-byte stores want: lanes 4 apart, 128 pixels wide).
    """
    n = height * width
    if kind == "row32":
        g = np.arange(0, n, 32)[:, None] + np.arange(32)[None, :]
    elif kind == "vec4":
        starts = np.arange(0, n, 128)
        g = starts[:, None, None] + np.arange(4)[None, :, None] + 4 * np.arange(32)[None, None, :]
        g = g.reshape(-1, 32)
    elif kind == "tile4x8":
        rows = []
        for y in range(0, height, 4):
            for x in range(0, width, 8):
                ys, xs = np.mgrid[y : y + 4, x : x + 8]
                flat = np.where((ys < height) & (xs < width), ys * width + xs, -1)
                rows.append(flat.ravel())
        return np.array(rows)
    else:
        raise ValueError(f"`kind` must be 'tile4x8', 'row32' or 'vec4'; got {kind!r}")
    return np.where(g < n, g, -1)


def _taps(matrix: np.ndarray, height: int, width: int, nearest: bool) -> list[np.ndarray]:
    """Flat source indices of each tap (1 nearest, 4 bilinear) for every output pixel."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    sx = np.clip(matrix[0, 0] * xx + matrix[0, 1] * yy + matrix[0, 2], 0, width - 1)
    sy = np.clip(matrix[1, 0] * xx + matrix[1, 1] * yy + matrix[1, 2], 0, height - 1)
    if nearest:
        return [(np.floor(sy + 0.5) * width + np.floor(sx + 0.5)).astype(np.int64).ravel()]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    return [(y * width + x).ravel() for y, x in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))]


def lines_per_gather(
    matrices: np.ndarray,
    height: int,
    width: int,
    *,
    footprint: str = "tile4x8",
    source: str = "planar_u8",
    nearest: bool = False,
) -> float:
    """Mean distinct 128-byte source lines per warp gather instruction.

    Args:
        matrices: (N, 2, 3) destination -> source matrices (the batch's, from its draws).
        height, width: The image size.
        footprint: The warp layout (`warp_footprints`).
        source: ``"planar_u8"`` (uint8 NCHW: one 1-byte load per tap and channel) or
            ``"rgbx_u32"`` (4 bytes per pixel: one 4-byte load per tap for all channels).
        nearest: Nearest interpolation (one tap) instead of bilinear (four).
    """
    groups = warp_footprints(footprint, height, width)
    lanes = groups >= 0
    safe = np.where(lanes, groups, 0)
    planes = 3 if source == "planar_u8" else 1
    counts = []
    for m in matrices:
        for tap in _taps(m, height, width, nearest):
            for c in range(planes):
                if source == "planar_u8":
                    address = c * height * width + tap
                else:
                    address = tap * 4
                lines = address[safe] // LINE_BYTES
                lines = np.where(lanes, lines, -1)
                srt = np.sort(lines, axis=1)
                distinct = (np.diff(srt, axis=1) != 0).sum(axis=1) + 1 - (srt[:, 0] < 0)
                counts.append(distinct.mean())
    return float(np.mean(counts))


def _store_lines(height: int, width: int, bytes_per_value: int) -> float:
    """Mean distinct 128-byte lines per warp store instruction of one plane (tile4x8)."""
    groups = warp_footprints("tile4x8", height, width)
    lanes = groups >= 0
    lines = np.where(lanes, groups * bytes_per_value // LINE_BYTES, -1)
    srt = np.sort(lines, axis=1)
    return float(((np.diff(srt, axis=1) != 0).sum(axis=1) + 1 - (srt[:, 0] < 0)).mean())


def _book_matrices(batch: int, height: int, width: int, config: Any) -> np.ndarray:
    import torch

    from gpuaug.augment.params import affine_matrix, params_from_draws, sample_draws

    draws = sample_draws(batch, generator=torch.Generator().manual_seed(0))
    params = params_from_draws(config, draws, height, width)
    return affine_matrix(params, height, width).double().numpy()


# ----------------------------------------------------------------------------- loader paths

#: (path, ``LoaderConfig.cache``, an in-memory array?, ``LoaderConfig.layout``), book settings.
#: An assumed host -> device copy rate (PCIe 5 x16 in practice, pinned memory), for the copy
#: times of `loader_paths` only.
PCIE_BYTES_PER_S = 25e9

LOADER_PATHS: tuple[tuple[str, str | None, bool, str], ...] = (
    ("workers, decode='cpu' (PIL)", None, False, "auto"),
    ("workers + nvJPEG, decode='gpu'", "jpeg", False, "auto"),
    ("cache='host'", "host", False, "auto"),
    ("cache='device'", "device", False, "auto"),
    ("cache='disk'", "disk", False, "auto"),
    ("flow(x) uint8, cache='device'", "device", True, "auto"),
    ("flow(x) uint8, cache='host'", "host", True, "auto"),
    ("cache='disk', layout='rgbx'", "disk", False, "rgbx"),
    ("any path, layout='planar'", None, False, "planar"),
)


class _Images:
    """The members of a data set the layout rule reads: 3-channel uint8 images, no masks."""

    channels = 3
    mask_bytes = 0


class _Arrays(_Images):
    """An in-memory array (`gpuaug.data.arrays`): the rule reads only that it has ``as_cache``."""

    def as_cache(self, kind: str, device: Any, layout: str = "planar") -> Any:
        raise NotImplementedError


def loader_paths(rows: dict[str, dict[str, Any]], hardware: str = "H100 SXM") -> list[dict]:
    """Per loader path: the layout the loader assembles (its own rule, on CUDA with the fused
    kernel), the kernel row that reads it and what the path moves per batch and keeps.

    Args:
        rows: `model`'s rows by variant name (``book_fp32`` and ``book_fp32_rgbx`` needed).
        hardware: Which modelled GPU's numbers to give.
    """
    import torch

    from gpuaug.augment.config import AugmentConfig
    from gpuaug.augment.module import GPUAugment
    from gpuaug.loader.stages.layout import choose_layout

    planar, rgbx = rows["book_fp32"], rows["book_fp32_rgbx"]
    h, w = (int(v) for v in planar["image"].split("x"))
    batch = planar["batch"]
    aug = GPUAugment(AugmentConfig())
    out = []
    for path, cache, array, asked in LOADER_PATHS:
        images = _Arrays() if array else _Images()
        jpeg = cache == "jpeg"  # decode="gpu": the files are copied, decoded on the device
        kept = None if jpeg else cache
        # "auto" resolves to the fused kernel on a CUDA machine with triton
        choice = choose_layout(asked, aug, images, torch.device("cuda"), kept, backend="triton")
        row = rgbx if choice.layout == "rgbx" else planar
        per_pixel = 4 if choice.layout == "rgbx" else 3
        copied = None if jpeg else 0 if cache == "device" else batch * h * w * per_pixel
        copy_us = None if copied is None else round(copied / PCIE_BYTES_PER_S * 1e6, 1)
        m = row["models"][hardware]
        out.append(
            {
                "path": path,
                "layout": choice.layout,
                "why": choice.reason,
                "variant": row["variant"],
                "modelled_us": m["modelled_us"],
                "fraction_of_roofline": m["fraction_of_roofline"],
                "host_to_device_bytes_per_batch": copied,  # None: the JPEG files
                "copy_us_at_assumed_rate": copy_us,
                "cache_bytes_per_image": h * w * per_pixel if kept is not None else 0,
            }
        )
    return out


# ----------------------------------------------------------------------------- the model


def _times(
    hw: Hardware,
    *,
    pixels: int,
    bytes_moved: float,
    wavefronts_per_pixel: float,
    instructions_per_pixel: float,
) -> dict[str, float]:
    dram = bytes_moved / hw.dram_bytes_per_s
    l1 = pixels * wavefronts_per_pixel / (hw.sms * hw.clock_hz)
    issue = pixels * instructions_per_pixel / 32 / (hw.sms * 4 * hw.clock_hz)
    return {"dram_s": dram, "l1_s": l1, "issue_s": issue, "kernel_s": max(dram, l1, issue)}


def model(
    variants: list[str] | None = None,
    *,
    batch: int = 256,
    sample: int = 16,
    host: bool = True,
) -> dict[str, Any]:
    """Compile, simulate and model each variant (all of `benchmarks.sm90.VARIANTS` by default).

    Args:
        variants: Names from `benchmarks.sm90.VARIANTS`.
        batch: The batch size modelled.
        sample: Images whose gathers are simulated (their draws are the book's first).
        host: Also measure the host time of a call (`benchmarks.sm90.host_seconds`).

    Returns:
        A JSON-ready dict: the hardware, the assumptions, one row per variant, the layout
        comparison and the host time.
    """
    import dataclasses

    import torch

    from . import sm90

    names = variants or list(sm90.VARIANTS)
    rows = []
    for name in names:
        config, images, dtype, _ = sm90._variant_inputs(name, batch)
        _, c, height, width = images.shape
        kernels = sm90.variant_stats(name)
        prologue = kernels[0]
        passes = [k for k in kernels if k["name"] == "_augment_kernel"]
        nearest = config.interpolation == "nearest"
        rgbx = bool(sm90.VARIANTS[name].get("rgbx"))
        matrices = _book_matrices(sample, height, width, config)
        source = "rgbx_u32" if rgbx else "planar_u8"
        lines = lines_per_gather(matrices, height, width, nearest=nearest, source=source)
        taps = 1 if nearest else 4
        loads_per_tap = 1 if rgbx else c
        out_bytes = torch.empty((), dtype=dtype).element_size()
        pixels = batch * height * width
        per_pixel_store = c * _store_lines(height, width, out_bytes) / 32
        per_pixel_gather = loads_per_tap * taps * lines / 32
        matrix_loads = 6 / (32 * passes[-1]["pixels_per_thread"])
        bytes_in = pixels * (4 if rgbx else c)  # uint8 planes, or 4-byte RGBX pixels
        bytes_out = pixels * c * out_bytes
        copy_bytes = pixels * c + bytes_out  # the roofline: uint8 RGB in, the output out
        row: dict[str, Any] = {
            "variant": name,
            "image": f"{height}x{width}",
            "dtype": str(dtype).removeprefix("torch."),
            "batch": batch,
            "kernels": [
                {
                    k: kernel[k]
                    for k in (
                        "name",
                        "pass",
                        "registers",
                        "stack_bytes",
                        "instructions",
                        "instructions_per_pixel",
                        "global_loads",
                        "stores",
                        "pixels_per_thread",
                        "compile_s",
                    )
                }
                for kernel in kernels
            ],
            "source": source,
            "gathers_per_pixel": loads_per_tap * taps,
            "lines_per_gather": round(lines, 2),
            "wavefronts_per_32_pixels": round(
                32 * (per_pixel_gather + per_pixel_store + matrix_loads), 1
            ),
            "bytes_moved": bytes_in + bytes_out,
            "roofline_bytes": copy_bytes,
            "models": {},
        }
        for hw in HARDWARE:
            roofline = copy_bytes / hw.dram_bytes_per_s
            total = 0.0
            parts = []
            for k in passes:
                # the first pass of a channel shift reads (no stores), the second reads again
                stores = per_pixel_store if k["pass"] != 1 else 0.0
                t = _times(
                    hw,
                    pixels=pixels,
                    bytes_moved=bytes_in + (bytes_out if k["pass"] != 1 else 0),
                    wavefronts_per_pixel=per_pixel_gather + stores + matrix_loads,
                    instructions_per_pixel=k["instructions_per_pixel"],
                )
                parts.append(t)
                total += t["kernel_s"]
            prologue_s = (
                LAUNCH_GAP_S
                + DRAM_LATENCY_S
                + prologue["instructions"] * PROLOGUE_CYCLES_PER_INSTRUCTION / hw.clock_hz
            )
            total += prologue_s + LAUNCH_GAP_S * (len(passes) - 1)
            row["models"][hw.name] = {
                "copy_roofline_us": round(roofline * 1e6, 1),
                "prologue_us": round(prologue_s * 1e6, 1),
                "passes": [{key: round(value * 1e6, 1) for key, value in t.items()} for t in parts],
                "modelled_us": round(total * 1e6, 1),
                "fraction_of_roofline": round(roofline / total, 3),
                "images_per_s": round(batch / total),
            }
        rows.append(row)

    # the layouts considered, for the book's settings (one 150 x 150 batch, same instructions)
    book = sm90._variant_inputs("book_fp32", batch)[0]
    matrices = _book_matrices(sample, 150, 150, book)
    layouts = []
    for footprint, source, note in (
        ("row32", "planar_u8", "one pixel per lane along the flattened image (the old kernel)"),
        ("vec4", "planar_u8", "4 pixels per lane along x, for 16-byte stores"),
        ("tile4x8", "planar_u8", "the kernel: one pixel per lane, 4 x 8 pixels per warp"),
        ("tile4x8", "rgbx_u32", "the same from a 4-byte RGBX source (book_fp32_rgbx)"),
    ):
        lines = lines_per_gather(matrices, 150, 150, footprint=footprint, source=source)
        gathers = 12 if source == "planar_u8" else 4
        layouts.append(
            {
                "footprint": footprint,
                "source": source,
                "note": note,
                "lines_per_gather": round(lines, 2),
                "gather_wavefronts_per_32_pixels": round(gathers * lines, 1),
                "l1_bound_us": {
                    hw.name: round(
                        batch * 150 * 150 * gathers * lines / 32 / (hw.sms * hw.clock_hz) * 1e6,
                        1,
                    )
                    for hw in HARDWARE
                },
            }
        )
    result: dict[str, Any] = {
        "note": "Modelled, not measured: no GPU has run this code.",
        "command": "python -m benchmarks.kernel_model",
        "triton": __import__("triton").__version__,
        "torch": torch.__version__,
        "hardware": [dataclasses.asdict(hw) for hw in HARDWARE],
        "assumptions": {
            "bounds": "kernel = max(DRAM, L1 wavefronts at 1/SM/clock, issue at 4 warp "
            "instructions/SM/clock), perfect overlap",
            "launch_gap_s": LAUNCH_GAP_S,
            "prologue_cycles_per_instruction": PROLOGUE_CYCLES_PER_INSTRUCTION,
            "dram_latency_s": DRAM_LATENCY_S,
            "gathers_simulated_on": f"{sample} images of the book's draws (seed 0)",
        },
        "variants": rows,
        "layouts": layouts,
    }
    by_name = {row["variant"]: row for row in rows}
    if "book_fp32" in by_name and "book_fp32_rgbx" in by_name:
        result["loader_paths"] = loader_paths(by_name)
    if host:
        result["host"] = host_section(batch)
    return result


def host_section(batch: int = 256) -> dict[str, Any]:
    """The host time of a call (`benchmarks.sm90.host_seconds`, both allocations) and what a
    steady-state call runs, counted (`benchmarks.sm90.steady_state_calls`)."""
    from . import sm90

    seconds = sm90.host_seconds("book_fp32", batch)
    calls = sm90.steady_state_calls("book_fp32")

    def in_us(times: dict[str, float]) -> dict[str, float]:
        return {
            **{f"{key}_us": round(value * 1e6, 1) for key, value in times.items()},
            "python_per_empty": round(times["python"] / times["empty"], 2),
        }

    cached = seconds.pop("cached")
    return {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "what": "one GPUAugment call, launches through Triton to a launcher that does nothing "
        "(the driver call excluded), CPU tensors",
        **in_us(seconds),
        "cached": None if cached is None else in_us(cached),
        "python_calls": calls["python_calls"],
        "python_calls_by_package": calls["by_file"],
        "torch_ops": calls["torch_ops"],
    }


def _markdown(result: dict[str, Any]) -> str:
    hw_names = [hw["name"] for hw in result["hardware"]]
    lines = [
        "# The fused kernel's model (modelled, not measured)",
        "",
        f"{result['note']} Regenerate: `{result['command']}` (triton {result['triton']}, "
        f"torch {result['torch']}). Method: `benchmarks/kernel_model.py`.",
        "",
    ]
    if "loader_paths" in result:
        paths = result["loader_paths"]
        batch = result["variants"][0]["batch"]
        lines += [
            f"## What each loader path hands the kernel (book settings, float32 out, {batch} x "
            f"150 x 150, {hw_names[0]})",
            "",
            "The layout is the loader's own choice (`LoaderConfig.layout='auto'` on a CUDA "
            "machine where the augmentation runs the fused kernel; "
            "`gpuaug.loader.stages.layout`). Copied: host -> device per batch, on a side "
            "stream, off the training stream (its time at an assumed "
            f"{PCIE_BYTES_PER_S / 1e9:g} GB/s; decode='gpu' copies the JPEG files and writes "
            "the decoded pixels on the device); cache: bytes kept per image.",
            "",
            "| loader path | layout | kernel row | modelled kernel us | % of fp32 copy roofline | "
            "copied MB / batch (us) | cache B / image |",
            "|---" * 7 + "|",
        ]
        for p in paths:
            copied = p["host_to_device_bytes_per_batch"]
            copy = (
                "the JPEG files"
                if copied is None
                else f"{copied / 1e6:.2f} ({p['copy_us_at_assumed_rate']:.0f})"
            )
            lines.append(
                f"| {p['path']} | {p['layout']} | {p['variant']} | {p['modelled_us']} | "
                f"{100 * p['fraction_of_roofline']:.0f}% | {copy} | "
                f"{p['cache_bytes_per_image'] or '-'} |"
            )
        lines += [""]
    lines += [
        "## Every variant",
        "",
        "| variant | dtype | main kernel regs | instr / px | gathers / px | lines / gather | "
        "wavefronts / 32 px | "
        + " | ".join(f"{n} modelled us (roofline us, %)" for n in hw_names)
        + " |",
        "|---" * (7 + len(hw_names)) + "|",
    ]
    for row in result["variants"]:
        mains = [k for k in row["kernels"] if k["name"] == "_augment_kernel"]
        regs = "/".join(str(k["registers"]) for k in mains)
        ipp = "/".join(str(k["instructions_per_pixel"]) for k in mains)
        cells = [
            f"{m['modelled_us']} ({m['copy_roofline_us']}, {100 * m['fraction_of_roofline']:.0f}%)"
            for m in (row["models"][n] for n in hw_names)
        ]
        lines.append(
            f"| {row['variant']} | {row['dtype']} | {regs} | {ipp} | {row['gathers_per_pixel']} | "
            f"{row['lines_per_gather']} | {row['wavefronts_per_32_pixels']} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        f"Batch {result['variants'][0]['batch']}. A channel shift's two passes are shown as "
        "a/b. Prologue (each image's matrix, one thread per image): "
        f"{result['variants'][0]['kernels'][0]['registers']} registers, "
        f"{result['variants'][0]['kernels'][0]['instructions']} instructions, modelled "
        f"{result['variants'][0]['models'][hw_names[0]]['prologue_us']} us with its launch gap.",
        "",
        "## Warp layouts (book settings, 150 x 150)",
        "",
        "| footprint | source | lines / gather | gather wavefronts / 32 px | "
        + " | ".join(f"{n} L1 bound us" for n in hw_names)
        + " | |",
        "|---" * (5 + len(hw_names)) + "|",
    ]
    for lay in result["layouts"]:
        lines.append(
            f"| {lay['footprint']} | {lay['source']} | {lay['lines_per_gather']} | "
            f"{lay['gather_wavefronts_per_32_pixels']} | "
            + " | ".join(str(lay["l1_bound_us"][n]) for n in hw_names)
            + f" | {lay['note']} |"
        )
    if "host" in result:
        lines += _host_markdown(result["host"])
    lines += [
        "",
        "Assumptions: " + "; ".join(f"{k}: {v}" for k, v in result["assumptions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def _host_markdown(h: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Host time per call (measured on this CPU)",
        "",
        f"{h['what']}; {h['machine']}: whole call {h['forward_us']} us, of which "
        f"`torch.rand` of the draws {h['rand_us']} us and the output's `torch.empty` "
        f"{h['empty_us']} us; the rest (gpuaug's and Triton's Python) {h['python_us']} us "
        f"= {h['python_per_empty']} x that `torch.empty`.",
    ]
    c = h.get("cached")
    if c is not None:
        lines += [
            "",
            "With the output's 69 MB block served again from the heap (as torch's CUDA caching "
            "allocator serves a batch's output; by default each CPU output is a fresh mmap whose "
            f"munmap slows the Python after it): whole call {c['forward_us']} us, `torch.rand` "
            f"{c['rand_us']} us, `torch.empty` {c['empty_us']} us, the Python {c['python_us']} us "
            f"= {c['python_per_empty']} x that `torch.empty`.",
        ]
    if "python_calls" in h:
        packages = ", ".join(f"{k} {v}" for k, v in sorted(h["python_calls_by_package"].items()))
        lines += [
            "",
            f"Counted, one steady-state call: {h['python_calls']} Python function calls "
            f"({packages}; the stand-in driver's are under benchmarks) and the torch operators "
            f"{', '.join(h['torch_ops'])}.",
        ]
    return lines


def _host_only(out: Path, batch: int) -> None:
    """Measure the host section again into the committed results, leaving the rest as it is."""
    path = out / "kernel_model.json"
    result = json.loads(path.read_text())
    result["host"] = host_section(batch)
    path.write_text(json.dumps(result, indent=1) + "\n")
    (out / "kernel_model.md").write_text(_markdown(result))


def main(argv: list[str] | None = None) -> int:
    """Write ``kernel_model.json`` and ``kernel_model.md`` under ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--no-host", action="store_true", help="skip the host-time measurement")
    parser.add_argument(
        "--host-only",
        action="store_true",
        help="measure the host time again into the existing results, nothing else",
    )
    parser.add_argument("variants", nargs="*", help="default: every variant of benchmarks.sm90")
    args = parser.parse_args(argv)
    if args.host_only:
        _host_only(Path(args.out), args.batch)
        print((Path(args.out) / "kernel_model.md").read_text())
        return 0
    result = model(args.variants or None, batch=args.batch, host=not args.no_host)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernel_model.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "kernel_model.md").write_text(_markdown(result))
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
