"""Turn a benchmark JSON into Markdown tables, a one-line speed-up summary and a PNG plot.

Usage (from the repository root)::

    python -m benchmarks.report benchmarks/results/cpu.json            # print Markdown + summary
    python -m benchmarks.report benchmarks/results/cpu.json --png out.png

Every number printed here is read from the JSON, and every ratio is computed from the
medians of the same run, so the README can quote them as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "backend_speedups",
    "fastest_peer",
    "find",
    "fmt_rate",
    "headline_rows",
    "main",
    "plot",
    "can_plot",
    "fmt_ratio",
    "ratio_stability",
    "render_markdown",
    "speedups",
    "summary_line",
]

#: The reference backend's names in result files: ``"reference"``, and ``"kornia"`` in results
#: written before it was renamed (it never ran kornia code); the report reads both.
REFERENCE_NAMES = ("reference", "kornia")
FIGURES = {"end_to_end": "end-to-end", "augment_only": "augmentation-only"}
# (numerator, denominator, figure, target ratio on a GPU at the largest headline batch or None)
_RATIOS = (
    ("gpuaug", "torchvision-cpu", "augment_only", 50.0),
    ("gpuaug", "keras-idg", "augment_only", None),
    ("gpuaug-cache-device", "keras-idg", "end_to_end", 10.0),
    ("gpuaug", "keras-idg", "end_to_end", None),
    ("gpuaug", "torchvision-cpu", "end_to_end", None),
    ("gpuaug-decode-gpu", "keras-idg", "end_to_end", None),
    # the same kornia ops after gpuaug's Keras stage vs after kornia's RandomAffine
    ("gpuaug-kornia-stages", "kornia-stages", "augment_only", None),
    ("gpuaug", "dali", "end_to_end", None),
    ("gpuaug", "dali", "augment_only", None),
    # kornia's AugmentationSequential through torch.compile vs the same module eager
    ("kornia-compiled", "kornia-randomaffine", "augment_only", None),
)


def fmt_rate(value: float) -> str:
    """Images/s for a table: thousands separators, 3 significant digits below 100."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(record: dict | None) -> str:
    if record is None:
        return "–"
    if "error" in record:
        return "error"
    r = record["images_per_s"]
    return f"{fmt_rate(r['median'])} ({fmt_rate(r['min'])}–{fmt_rate(r['max'])})"


def _pipelines(doc: dict) -> list[str]:
    """Pipelines that ran, in the JSON's order."""
    return [name for name, info in doc["pipelines"].items() if info["available"]]


def find(
    doc: dict,
    figure: str,
    pipeline: str,
    batch_size: int,
    *,
    scan: str = "headline",
    image_size: Sequence[int] | None = None,
    num_workers: int | None = None,
) -> dict | None:
    """The result record of one measurement of ``scan``, or None."""
    for r in doc["results"]:
        if (
            r["figure"] == figure
            and r["pipeline"] == pipeline
            and r["batch_size"] == batch_size
            and scan in r["scans"]
            and (image_size is None or list(r["image_size"]) == list(image_size))
            and (num_workers is None or r["num_workers"] == num_workers)
        ):
            return r
    return None


def _ratio(a: float, b: float) -> float:
    """a / b to 4 significant digits (a fixed number of decimals loses small ratios)."""
    return float(f"{a / b:.4g}")


def _median(doc: dict, figure: str, pipeline: str, batch_size: int) -> float | None:
    r = _rates(doc, figure, pipeline, batch_size)
    return None if r is None else r["median"]


def _rates(doc: dict, figure: str, pipeline: str, batch_size: int) -> dict | None:
    r = find(doc, figure, pipeline, batch_size)
    if r is None or "images_per_s" not in r:
        return None
    return r["images_per_s"]


def ratio_stability(numerator: dict, denominator: dict) -> dict:
    """How far a ratio of two measurements can be trusted, from their min-max ranges.

    Args:
        numerator, denominator: ``images_per_s`` records (``median``, ``min``, ``max`` and
            optionally ``runs``, the rate of each timed run).

    Returns:
        ``{"range": [lo, hi], "unstable": reason or None}``: ``lo = num.min / den.max`` and
        ``hi = num.max / den.min`` bound the ratio over the runs. It is unstable when either
        side rests on a single run, or when ``hi - lo`` is larger than the ratio itself (the
        runs disagree by more than the effect they measure).
    """
    median = numerator["median"] / denominator["median"]
    lo = numerator["min"] / denominator["max"] if denominator["max"] else float("inf")
    hi = numerator["max"] / denominator["min"] if denominator["min"] else float("inf")
    runs = min(len(numerator.get("runs") or [0, 0]), len(denominator.get("runs") or [0, 0]))
    reason = None
    if runs < 2:
        reason = "one run"
    elif hi - lo > median:
        reason = f"runs give {lo:.2f}x to {hi:.2f}x"
    return {"range": [_ratio(lo, 1), _ratio(hi, 1)], "unstable": reason}


def fmt_ratio(entry: dict) -> str:
    """``2.31x``, or ``40.16x (unstable: one run)`` when :func:`ratio_stability` says so."""
    text = f"{entry['ratio']:.2f}x"
    if entry.get("unstable"):
        text += f" (unstable: {entry['unstable']})"
    return text


def speedups(doc: dict) -> list[dict]:
    """Ratios of median images/s between pipelines of the same run, per headline batch size.

    Returns:
        ``[{"figure", "batch_size", "numerator", "denominator", "ratio", "target"}]``;
        ``target`` is the goal on a GPU (only for the two goals of the issue) or None.
    """
    out = []
    batch_sizes = doc["settings"]["batch_sizes"]
    for num, den, figure, target in _RATIOS:
        for b in batch_sizes:
            a, c = _rates(doc, figure, num, b), _rates(doc, figure, den, b)
            if a is None or c is None or c["median"] == 0:
                continue
            out.append(
                {
                    "figure": figure,
                    "batch_size": b,
                    "numerator": num,
                    "denominator": den,
                    "ratio": _ratio(a["median"], c["median"]),
                    "target": target if b == max(batch_sizes) else None,
                    **ratio_stability(a, c),
                }
            )
    return out + _fastest_peer_ratios(doc)


#: Pipelines that are gpuaug itself (the rest are peers).
_OURS = (
    "gpuaug",
    "gpuaug-opencv",
    "gpuaug-cache-device",
    "gpuaug-decode-gpu",
    "gpuaug-kornia-stages",
)
#: Pipelines with more ops than the book's (kornia stages): compared with each other only.
_EXTRA_OPS = ("kornia-stages", "gpuaug-kornia-stages")


def fastest_peer(doc: dict, figure: str, batch_size: int) -> tuple[str, float] | None:
    """The peer (not gpuaug) with the highest median of a headline measurement, and that median."""
    best = None
    for name in _pipelines(doc):
        if name in _OURS or name in _EXTRA_OPS:
            continue
        value = _median(doc, figure, name, batch_size)
        if value is not None and (best is None or value > best[1]):
            best = (name, value)
    return best


def _fastest_peer_ratios(doc: dict) -> list[dict]:
    out = []
    for figure in FIGURES:
        for b in doc["settings"]["batch_sizes"]:
            peer = fastest_peer(doc, figure, b)
            for name in ("gpuaug", "gpuaug-opencv"):  # the exact default, the opt-in CPU path
                ours = _rates(doc, figure, name, b)
                if peer is None or ours is None or peer[1] == 0:
                    continue
                out.append(
                    {
                        "figure": figure,
                        "batch_size": b,
                        "numerator": name,
                        "denominator": peer[0],
                        "ratio": _ratio(ours["median"], peer[1]),
                        "target": None,
                        "fastest_peer": True,
                        **ratio_stability(ours, _rates(doc, figure, peer[0], b)),
                    }
                )
    return out


def backend_speedups(doc: dict) -> list[dict]:
    """Per headline batch size: the fastest gpuaug backend (any output variant) against the
    reference backend's float32 output (``"reference"``; results written before the rename
    call it ``"kornia"``, `REFERENCE_NAMES`), and against the fastest augmentation-only
    peer, all medians of the same run.

    Returns:
        ``[{"batch_size", "best", "best_images_per_s", "vs", "vs_images_per_s", "ratio"}]``.
    """
    section = doc.get("backends") or {}
    rows = [r for r in section.get("results", []) if "images_per_s" in r]
    out = []
    for b in doc["settings"]["batch_sizes"]:
        at_b = [r for r in rows if r["batch_size"] == b]
        if not at_b:
            continue
        best = max(at_b, key=lambda r: r["images_per_s"]["median"])
        label = f"gpuaug[{best['backend']}, {best['variant']}]"
        best_rate = best["images_per_s"]["median"]
        refs = [r for r in at_b if r["backend"] in REFERENCE_NAMES and r["variant"] == "float32"]
        others = []
        if refs:
            name = f"gpuaug[{refs[0]['backend']}, float32]"
            others.append((name, refs[0]["images_per_s"]))
        peer = fastest_peer(doc, "augment_only", b)
        if peer is not None:
            others.append((peer[0], _rates(doc, "augment_only", peer[0], b)))
        for name, rates in others:
            if rates["median"]:
                out.append(
                    {
                        "batch_size": b,
                        "best": label,
                        "best_images_per_s": best_rate,
                        "vs": name,
                        "vs_images_per_s": rates["median"],
                        "ratio": _ratio(best_rate, rates["median"]),
                        **ratio_stability(best["images_per_s"], rates),
                    }
                )
    return out


def summary_line(doc: dict) -> str:
    """One line: the two goal ratios (and the others) at each headline batch size."""
    parts = []
    for s in doc.get("speedups") or speedups(doc):
        goal = f" (goal {s['target']:g}x on a GPU)" if s["target"] else ""
        fastest = " (fastest peer)" if s.get("fastest_peer") else ""
        parts.append(
            f"{FIGURES[s['figure']]} b={s['batch_size']}: {s['numerator']} / "
            f"{s['denominator']}{fastest} = {fmt_ratio(s)}{goal}"
        )
    head = f"Speed-ups on {doc['device_label']}"
    return head + ": " + ("; ".join(parts) if parts else "none (pipelines missing)") + "."


def headline_rows(doc: dict) -> list[dict]:
    """One row per pipeline that ran: its headline records by ``(figure, batch_size)``."""
    rows = []
    for name in _pipelines(doc):
        cells = {}
        for figure in FIGURES:
            for b in doc["settings"]["batch_sizes"]:
                cells[(figure, b)] = find(doc, figure, name, b)
        rows.append({"pipeline": name, "cells": cells})
    return rows


def _machine_lines(doc: dict) -> list[str]:
    m, s, d = doc["machine"], doc["settings"], doc["data"]
    v = m["versions"]
    gpu = m["gpu"]
    gpu_text = f"{gpu['name']} ({gpu['memory_gib']} GiB, CUDA {gpu['cuda']})" if gpu else "none"
    libs = ", ".join(
        f"{k} {v[k]}"
        for k in (
            "torch",
            "torchvision",
            "kornia",
            "keras",
            "scipy",
            "albumentations",
            "opencv-python-headless",
            "nvidia-dali-cuda120",
            "pillow",
        )
        if v.get(k)
    )
    h, w = s["target_size"]
    return [
        f"- Device: **{doc['device_label']}**; CPU {m['cpu']}, {m['cpu_count']} cores, "
        f"{m['memory_gib']} GiB; GPU: {gpu_text}; torch threads {m['torch_threads']}.",
        f"- Versions: Python {v['python']}, {libs}.",
        f"- Data: {d['num_images']} generated JPEGs, {d['heights'][0]}–{d['heights'][2]} x "
        f"{d['widths'][0]}–{d['widths'][2]} px (median {d['heights'][1]} x {d['widths'][1]}), "
        f"mean {d['mean_kib']} KiB; resized to {h} x {w}.",
        f"- Timing: images/s, median (min–max) of {s['repeats']} timed runs of at least "
        f"{s['min_images']} images each, after warm-up; DataLoader workers "
        f"{s['num_workers']}; run {doc['created']}"
        + (
            f"; load average {m['load_average_start'][0]} at the start, "
            f"{m['load_average_end'][0]} at the end."
            if m.get("load_average_start") and m.get("load_average_end")
            else "."
        ),
    ]


def _compile_and_error_lines(doc: dict) -> list[str]:
    """Under the headline table: compile seconds of compiled peers (kept out of images/s) and
    the reason of each headline measurement that failed (its cell says "error")."""
    headline = [r for r in doc["results"] if "headline" in r["scans"]]
    compiled = [r for r in headline if "compile_seconds" in r]
    failed = [r for r in headline if "error" in r]
    lines = []
    if compiled:
        lines += [
            "",
            "Compiled before the timed runs (not in images/s; dynamo reset, Inductor's on-disk "
            "caches off, until two calls in a row compiled nothing): "
            + "; ".join(
                f"{r['pipeline']} {FIGURES[r['figure']]} b={r['batch_size']}: "
                f"{r['compile_seconds']:.1f} s ({r['compile_graphs']} graphs in "
                f"{r['compile_calls']} calls)"
                for r in compiled
            )
            + ".",
        ]
    if failed:
        lines += [
            "",
            "Failed: "
            + "; ".join(
                f"{r['pipeline']} {FIGURES[r['figure']]} b={r['batch_size']} ({r['error']})"
                for r in failed
            )
            + ".",
        ]
    return lines


def _scan_table(doc: dict, scan: str, figure: str, key: str, values: list) -> list[str]:
    names = [
        n
        for n in _pipelines(doc)
        if any(scan in r["scans"] and r["pipeline"] == n for r in doc["results"])
    ]
    if not names or not values:
        return []
    head = {"batch_size": "batch", "image_size": "size", "num_workers": "workers"}[key]
    lines = [
        "| pipeline | " + " | ".join(f"{head} {v}" for v in values) + " |",
        "|---|" + "---:|" * len(values),
    ]
    for name in names:
        cells = []
        for v in values:
            rec = None
            for r in doc["results"]:
                if r["pipeline"] != name or scan not in r["scans"] or r["figure"] != figure:
                    continue
                got = r["image_size"][0] if key == "image_size" else r[key]
                if got == v:
                    rec = r
            cells.append(_cell(rec))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(doc: dict, png_name: str | None = None) -> str:
    """The report as Markdown: machine, headline table, scaling tables, speed-ups, profile."""
    s = doc["settings"]
    batch_sizes = s["batch_sizes"]
    h, w = s["target_size"]
    lines = [f"### gpuaug benchmark on {doc['device_label']}", ""]
    lines += _machine_lines(doc)
    lines += [
        "",
        f"Images/s at {h} x {w}, median (min–max); end-to-end = JPEG files to an augmented "
        "float batch on the training device; augmentation-only = decoded uint8 batch to "
        "augmented float batch, where the pipeline augments.",
        "",
    ]
    cols = [(f, b) for f in FIGURES for b in batch_sizes]
    lines.append(
        "| pipeline | augments on | " + " | ".join(f"{FIGURES[f]} b={b}" for f, b in cols) + " |"
    )
    lines.append("|---|---|" + "---:|" * len(cols))
    for row in headline_rows(doc):
        where = doc["pipelines"][row["pipeline"]]["augments_on"]
        cells = " | ".join(_cell(row["cells"][c]) for c in cols)
        lines.append(f"| {row['pipeline']} | {where} | {cells} |")
    skipped = [(n, i["skipped_because"]) for n, i in doc["pipelines"].items() if not i["available"]]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{n} ({why})" for n, why in skipped) + "."]
    lines += _compile_and_error_lines(doc)
    lines += ["", summary_line(doc)]

    grid = s["grid_values"]
    scan_b = s["scan_batch"]
    for scan, figure, key, title in (
        (
            "batch_size",
            "augment_only",
            "batch_size",
            f"Augmentation-only images/s vs batch size ({h} x {w})",
        ),
        (
            "image_size",
            "augment_only",
            "image_size",
            f"Augmentation-only images/s vs image size (batch {scan_b})",
        ),
        (
            "num_workers",
            "end_to_end",
            "num_workers",
            f"End-to-end images/s vs DataLoader workers (batch {scan_b}, {h} x {w})",
        ),
    ):
        table = _scan_table(doc, scan, figure, key, grid.get(key, []))
        if table:
            lines += ["", f"#### {title}", ""] + table

    lines += _backend_lines(doc)

    prof = doc.get("profile")
    if prof and "top" in prof:
        lines += [
            "",
            f"#### Where gpuaug's augmentation spends its time ({prof['device']}, batch "
            f"{prof['batch_size']}, torch.profiler, ms per batch)",
            "",
            "| op | calls | self ms | total ms |",
            "|---|---:|---:|---:|",
        ]
        for e in prof["top"][:8]:
            lines.append(
                f"| `{e['name']}` | {e['calls']} | {e['self_ms']:.2f} | {e['total_ms']:.2f} |"
            )
        bd = prof.get("breakdown")
        if bd:
            decode = bd.get("decode_ms_per_image")
            aug, e2e = bd["augment_ms_per_image"], bd["end_to_end_ms_per_image"]
            text = f"Per image at batch {bd['batch_size']} with {bd['num_workers']} workers: "
            if decode is not None:
                text += f"decode + resize + copy (gpuaug with no augmentation) {decode:.2f} ms; "
            text += f"augmentation {aug:.2f} ms; end to end {e2e:.2f} ms."
            if decode is not None and prof["device"] == "cpu" and e2e > decode + aug:
                text += (
                    f" End to end takes more than the sum ({decode + aug:.2f} ms): on a CPU the "
                    "decoding workers and the augmentation share the same "
                    f"{doc['machine']['cpu_count']} cores."
                )
            lines += ["", text]
    elif prof and "error" in prof:
        lines += ["", f"Profile failed: {prof['error']}"]
    if png_name:
        lines += ["", f"![gpuaug benchmark on {doc['device_label']}]({png_name})"]
    return "\n".join(lines) + "\n"


def _bytes(value: int | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1e6:.2f} MB" if value >= 1e6 else f"{value / 1e3:.0f} kB"


def _backend_lines(doc: dict) -> list[str]:
    """The backends table: per gpuaug backend and output variant, speed and counted cost."""
    section = doc.get("backends") or {}
    rows = section.get("results") or []
    if not rows:
        return []
    h, w = section.get("image_size") or doc["settings"]["target_size"]
    gbps = section.get("copy_bandwidth_gbps")
    roof = gbps is not None
    lines = [
        "",
        f"#### gpuaug backends, augmentation-only ({h} x {w}, {doc['device_label']})",
        "",
        "Images/s median (min–max); ops = ATen ops (kernels on a GPU) per batch including the "
        "parameter draws; bytes = read + written per image by those ops; both counted with a "
        "TorchDispatchMode (compile: Inductor's generated kernels and its byte estimate; "
        "triton: launches counted at the launch site), so they are the same on any device. "
        "Max diff: against the reference backend's float32 output on the same params, in grey "
        "levels (0..255)."
        + (
            f" Roofline: the fraction of the device-to-device copy bandwidth measured in this "
            f"run ({gbps} GB/s) that reading the uint8 batch once and writing the output once "
            "would take at this speed."
            if roof
            else ""
        ),
        "",
        "| backend | output | batch | images/s | ops/batch | bytes/image | max diff (grey) |"
        + (" roofline |" if roof else ""),
        "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if roof else ""),
    ]
    for r in rows:
        c = r.get("counts") or {}
        rate = _cell(r) if "images_per_s" in r or "error" in r else "–"
        diff = r.get("max_diff_grey")
        cells = [
            r["backend"],
            r["variant"],
            str(r["batch_size"]),
            rate,
            str(c.get("ops_per_batch", "–")),
            _bytes(c.get("bytes_per_image")),
            "–" if diff is None else f"{diff:.4g}",
        ]
        if roof:
            frac = r.get("roofline_fraction")
            cells.append("–" if frac is None else f"{100 * frac:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    skipped = [(b, why) for b, why in (section.get("backends") or {}).items() if why]
    if skipped:
        lines += ["", "Backends skipped: " + "; ".join(f"{b} ({why})" for b, why in skipped) + "."]
    ratios = doc.get("backend_speedups") or backend_speedups(doc)
    if ratios:
        lines += [
            "",
            "Best backend: "
            + "; ".join(
                f"b={x['batch_size']}: {x['best']} / {x['vs']} = {fmt_ratio(x)}" for x in ratios
            )
            + ".",
        ]
    return lines


# ----------------------------------------------------------------------------- plot


def can_plot() -> bool:
    """Whether matplotlib (the ``[bench]`` extra) imports, so :func:`plot` can draw."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


#: What `gpuaug bench` prints, once and before it measures, when matplotlib is missing.
NO_PLOT_NOTE = (
    "matplotlib is not installed: the results go to .json and .md, with no .png plot "
    '(pip install "gpuaug[bench]" brings it)'
)


def plot(doc: dict, path: str | Path) -> Path:
    """Write the PNG: headline bars (two figures) and the three scaling curves.

    Raises:
        ImportError: matplotlib is not installed (:func:`can_plot`), naming the extra.
    """
    if not can_plot():
        raise ImportError(NO_PLOT_NOTE)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _pipelines(doc)
    s = doc["settings"]
    batch_sizes = s["batch_sizes"]
    colours = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    fig.suptitle(f"gpuaug benchmark on {doc['device_label']} (images/s, median; bars: min–max)")

    for ax, figure in zip(axes[0, :2], FIGURES, strict=True):
        width = 0.8 / max(len(names), 1)
        for i, name in enumerate(names):
            xs, ys, lo, hi = [], [], [], []
            for j, b in enumerate(batch_sizes):
                r = find(doc, figure, name, b)
                if r is None or "images_per_s" not in r:
                    continue
                v = r["images_per_s"]
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(v["median"])
                lo.append(v["median"] - v["min"])
                hi.append(v["max"] - v["median"])
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=name, color=colours[name])
        ax.set_xticks(range(len(batch_sizes)), [f"batch {b}" for b in batch_sizes])
        ax.set_yscale("log")
        ax.set_ylabel("images/s")
        ax.set_title(f"{FIGURES[figure]}, {s['target_size'][0]} x {s['target_size'][1]}")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=8)

    info = axes[0, 2]
    info.axis("off")
    text = "\n".join(line.lstrip("- ").replace("**", "") for line in _machine_lines(doc))
    info.text(0, 1, text, va="top", ha="left", fontsize=8, wrap=True)
    speed = doc.get("speedups") or speedups(doc)
    if speed:
        info.text(
            0,
            0.35,
            "\n".join(
                f"{x['numerator']} / {x['denominator']} "
                f"({FIGURES[x['figure']]}, b={x['batch_size']}): {fmt_ratio(x)}"
                for x in speed
            ),
            va="top",
            ha="left",
            fontsize=8,
        )

    grid = s["grid_values"]
    for ax, (scan, figure, key, xlabel) in zip(
        axes[1],
        (
            ("batch_size", "augment_only", "batch_size", "batch size"),
            ("image_size", "augment_only", "image_size", "image size (px, square)"),
            ("num_workers", "end_to_end", "num_workers", "DataLoader workers"),
        ),
        strict=True,
    ):
        plotted = False
        for name in names:
            pts = []
            for r in doc["results"]:
                if r["pipeline"] == name and r["figure"] == figure and scan in r["scans"]:
                    if "images_per_s" in r:
                        x = r["image_size"][0] if key == "image_size" else r[key]
                        pts.append((x, r["images_per_s"]))
            if not pts:
                continue
            pts.sort(key=lambda p: p[0])
            xs = [p[0] for p in pts]
            med = [p[1]["median"] for p in pts]
            ax.plot(xs, med, marker="o", label=name, color=colours[name])
            ax.fill_between(
                xs,
                [p[1]["min"] for p in pts],
                [p[1]["max"] for p in pts],
                alpha=0.15,
                color=colours[name],
            )
            plotted = True
        ax.set_title(f"{FIGURES[figure]} vs {xlabel}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("images/s")
        if plotted:
            ax.set_yscale("log")
            if key != "num_workers":
                ax.set_xscale("log", base=2)
            values = grid.get(key) or []
            if values:
                ax.set_xticks(values, [str(v) for v in values])
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.grid(which="both", alpha=0.3)

    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown report and the speed-up line of a benchmark JSON; optionally plot."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Print the Markdown table and speed-up summary of a benchmark JSON.",
    )
    parser.add_argument("json", help="a JSON written by benchmarks.bench")
    parser.add_argument("--png", help="also write the plot here")
    parser.add_argument("--md", help="also write the Markdown here")
    args = parser.parse_args(argv)
    doc = json.loads(Path(args.json).read_text())
    png_name = Path(args.png).name if args.png else Path(args.json).with_suffix(".png").name
    text = render_markdown(doc, png_name=png_name)
    if args.md:
        Path(args.md).write_text(text)
    if args.png:
        plot(doc, args.png)
    print(text)  # ends with the one-line speed-up summary (also in the table section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
