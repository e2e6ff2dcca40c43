"""The benchmark harness, run end to end at a tiny size on the CPU.

One module-scoped run (8 images of 32 px, batches of 4 and 8, one repeat, no workers) feeds the
checks of the JSON, the Markdown and the PNG; the rest test the timing loop, the planner and
the data folder on their own.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# benchmarks/ is not installed by pip: import it from the checkout, whatever the cwd.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench, counting, report, sm90  # noqa: E402
from benchmarks import data as bench_data  # noqa: E402
from benchmarks import pipelines as P  # noqa: E402

# The suite itself loads the machine; the harness's "machine is busy" warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:the machine is busy:RuntimeWarning")

TINY_ARGS = [
    "--num-images", "8",
    "--image-size", "32",
    "--batch-sizes", "4,8",
    "--repeats", "1",
    "--min-images", "4",
    "--num-workers", "0",
    "--device", "cpu",
    "--grid", "none",
    "--scan-batch-sizes", "4,8",
    "--scan-image-sizes", "24",
    "--scan-workers", "0",
    "--no-progress",
    "--backends", "reference,chunked",
    "--variants", "float32,bfloat16-channels_last",
    # every pipeline but the compiled kornia one (half a minute of compiling per batch size;
    # tests/test_bench_peers.py covers it)
    "--pipelines", ",".join(name for name in P.PIPELINES if name != "kornia-compiled"),
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[int, dict, Path]:
    out_dir = tmp_path_factory.mktemp("bench")
    out = out_dir / "tiny.json"
    status = bench.main([*TINY_ARGS, "--data-dir", str(out_dir / "data"), "--out", str(out)])
    return status, json.loads(out.read_text()), out


def test_tiny_run_exits_zero_with_no_failed_measurement(tiny_run):
    status, doc, _ = tiny_run
    assert [r for r in doc["results"] if "error" in r] == []
    assert status == 0


def test_json_has_the_documented_top_level_keys(tiny_run):
    _, doc, _ = tiny_run
    assert doc["schema"] == bench.SCHEMA
    for key in ("created", "device_label", "machine", "settings", "data", "pipelines"):
        assert key in doc
    for key in ("results", "speedups", "profile"):
        assert key in doc


def test_json_records_the_machine_and_library_versions(tiny_run):
    _, doc, _ = tiny_run
    machine = doc["machine"]
    assert machine["cpu"] and machine["cpu_count"] >= 1
    assert machine["gpu"] is None  # --device cpu
    for lib in ("torch", "torchvision", "kornia", "keras", "python"):
        assert machine["versions"][lib]
    assert len(machine["load_average_start"]) == 3


def test_every_result_has_median_within_min_and_max(tiny_run):
    _, doc, _ = tiny_run
    assert doc["results"]
    for r in doc["results"]:
        rate = r["images_per_s"]
        assert rate["min"] <= rate["median"] <= rate["max"]
        assert len(rate["runs"]) == doc["settings"]["repeats"]
        assert rate["images"] >= 4


def test_core_pipelines_are_measured_in_both_figures_at_each_batch_size(tiny_run):
    _, doc, _ = tiny_run
    for name in ("keras-idg", "torchvision-cpu", "gpuaug"):
        for b in (4, 8):
            assert report.find(doc, "end_to_end", name, b) is not None, (name, b)
            assert report.find(doc, "augment_only", name, b) is not None, (name, b)
    assert report.find(doc, "end_to_end", "gpuaug-cache-device", 8) is not None


def test_the_opt_in_opencv_path_is_measured_and_compared_with_the_fastest_peer(tiny_run):
    pytest.importorskip("cv2")
    _, doc, _ = tiny_run
    for figure in ("end_to_end", "augment_only"):
        assert report.find(doc, figure, "gpuaug-opencv", 8) is not None, figure
    ratios = [
        s for s in doc["speedups"] if s.get("fastest_peer") and s["numerator"] == "gpuaug-opencv"
    ]
    assert {(s["figure"], s["batch_size"]) for s in ratios} == {
        (f, b) for f in ("end_to_end", "augment_only") for b in (4, 8)
    }
    assert all(not s["denominator"].startswith("gpuaug") for s in ratios)


def test_gpu_decode_pipeline_is_skipped_with_a_reason_on_cpu(tiny_run):
    _, doc, _ = tiny_run
    info = doc["pipelines"]["gpuaug-decode-gpu"]
    assert info["available"] is False
    assert "CUDA" in info["skipped_because"]


def test_cache_device_warms_up_for_a_whole_epoch(tiny_run):
    _, doc, _ = tiny_run
    record = report.find(doc, "end_to_end", "gpuaug-cache-device", 4)
    assert record["warmup_batches"] == 2  # 8 images / batch 4


def _headline_table(markdown: str) -> dict[str, list[str]]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| pipeline | augments on"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[2:]
    return rows


def test_markdown_headline_rows_match_the_json_medians(tiny_run):
    _, doc, out = tiny_run
    rows = _headline_table(out.with_suffix(".md").read_text())
    ran = [n for n, info in doc["pipelines"].items() if info["available"]]
    assert list(rows) == ran
    columns = [(f, b) for f in ("end_to_end", "augment_only") for b in (4, 8)]
    for name, cells in rows.items():
        for (figure, b), cell in zip(columns, cells, strict=True):
            record = report.find(doc, figure, name, b)
            if record is None:
                assert cell == "–"
                continue
            shown = float(cell.split()[0].replace(",", ""))
            assert shown == pytest.approx(record["images_per_s"]["median"], rel=0.01, abs=0.01)


def test_summary_line_ratios_are_the_json_median_ratios(tiny_run):
    _, doc, _ = tiny_run
    line = report.summary_line(doc)
    for s in doc["speedups"]:
        a = report.find(doc, s["figure"], s["numerator"], s["batch_size"])["images_per_s"]
        c = report.find(doc, s["figure"], s["denominator"], s["batch_size"])["images_per_s"]
        assert s["ratio"] == pytest.approx(a["median"] / c["median"], rel=1e-3)
        assert f"= {s['ratio']:.2f}x" in line


def test_report_cli_prints_the_same_markdown(tiny_run, capsys):
    _, _, out = tiny_run
    capsys.readouterr()
    assert report.main([str(out)]) == 0
    assert capsys.readouterr().out.strip() == out.with_suffix(".md").read_text().strip()


def test_png_is_a_valid_image(tiny_run):
    _, _, out = tiny_run
    with Image.open(out.with_suffix(".png")) as img:
        assert img.format == "PNG"
        assert img.width > 400 and img.height > 300


def test_profile_lists_top_ops_of_the_gpuaug_augmentation(tiny_run):
    _, doc, out = tiny_run
    profile = doc["profile"]
    assert profile["batch_size"] == 8 and profile["device"] == "cpu"
    assert profile["top"] and all(e["self_ms"] >= 0 for e in profile["top"])
    assert set(profile["breakdown"]) >= {"augment_ms_per_image", "end_to_end_ms_per_image"}
    assert out.with_name("tiny-profile.txt").read_text().strip()


def test_kornia_randomaffine_is_an_augmentation_only_peer(tiny_run):
    _, doc, _ = tiny_run
    for b in (4, 8):
        assert report.find(doc, "augment_only", "kornia-randomaffine", b) is not None
        assert report.find(doc, "end_to_end", "kornia-randomaffine", b) is None


def test_speedups_include_gpuaug_against_the_fastest_peer_of_each_measurement(tiny_run):
    _, doc, _ = tiny_run
    fastest = [s for s in doc["speedups"] if s.get("fastest_peer")]
    assert {(s["figure"], s["batch_size"]) for s in fastest} == {
        (f, b) for f in ("end_to_end", "augment_only") for b in (4, 8)
    }
    for s in fastest:
        peers = [
            r["images_per_s"]["median"]
            for r in doc["results"]
            if r["figure"] == s["figure"]
            and r["batch_size"] == s["batch_size"]
            and "headline" in r["scans"]
            and not r["pipeline"].startswith("gpuaug")
        ]
        best = report.find(doc, s["figure"], s["denominator"], s["batch_size"])
        assert best["images_per_s"]["median"] == max(peers)


def test_backends_table_has_every_backend_variant_and_batch_with_counts(tiny_run):
    _, doc, out = tiny_run
    rows = doc["backends"]["results"]
    got = {(r["backend"], r["variant"], r["batch_size"]) for r in rows}
    assert got == {
        (b, v, n)
        for b in ("reference", "chunked")
        for v in ("float32", "bfloat16-channels_last")
        for n in (4, 8)
    }
    for r in rows:
        assert r["counts"]["ops_per_batch"] > 3
        # at least the uint8 batch read once and the output written once
        floor = 3 * 32 * 32 * (1 + (2 if r["variant"].startswith("bfloat16") else 4))
        assert r["counts"]["bytes_per_image"] > floor
        assert "roofline_fraction" not in r  # CPU: no copy roofline
    chunked = [r for r in rows if r["backend"] == "chunked" and r["variant"] == "float32"]
    assert all(r["max_diff_grey"] == 0 for r in chunked)
    assert "#### gpuaug backends, augmentation-only" in out.with_suffix(".md").read_text()


def test_backend_speedups_compare_the_best_backend_with_the_reference_and_the_fastest_peer(
    tiny_run,
):
    _, doc, _ = tiny_run
    for x in doc["backend_speedups"]:
        assert x["ratio"] == pytest.approx(x["best_images_per_s"] / x["vs_images_per_s"], 1e-3)
    assert {x["vs"] for x in doc["backend_speedups"]} >= {"gpuaug[reference, float32]"}


# ----------------------------------------------------------------------------- units


def test_backend_speedups_read_the_reference_under_its_old_name_in_older_results():
    def row(backend: str, median: float) -> dict:
        rates = {"median": median, "min": median, "max": median, "runs": [median] * 3}
        return {"backend": backend, "variant": "float32", "batch_size": 32, "images_per_s": rates}

    doc = {  # the shape of a result file written before the reference backend's rename
        "settings": {"batch_sizes": [32]},
        "pipelines": {},
        "results": [],
        "backends": {"results": [row("kornia", 100.0), row("chunked", 150.0)]},
    }
    (x,) = report.backend_speedups(doc)
    assert x["vs"] == "gpuaug[kornia, float32]" and x["ratio"] == 1.5


def test_op_counter_counts_work_ops_and_their_bytes_but_not_views():
    x = torch.ones(4, 8)  # 128 bytes

    def batch():
        y = x.view(8, 4).t()  # views: free
        return (y * 2.0).sum()

    counts = counting.count_ops(batch, images=4)
    assert counts["ops_per_batch"] == 2  # mul, sum
    # mul reads 128, writes 128; sum reads 128, writes 4
    assert counts["bytes_read_per_image"] == 256 // 4
    assert counts["bytes_written_per_image"] == 132 // 4


def test_each_triton_launch_counts_as_one_op_reading_its_tensors_once():
    pytest.importorskip("triton")
    import gpuaug
    from gpuaug.augment.backends import triton as fused

    if not fused.triton_available():
        pytest.skip("triton cannot run here")
    aug = gpuaug.GPUAugment(P.gpuaug_config(), backend="triton")
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    counts = counting.count_ops(
        lambda: aug(x), 2, launches=("gpuaug.augment.backends.triton", "_launch")
    )
    assert counts["top_ops"]["triton_launch"] == 2  # the prologue (the matrices), the pass
    # the draws, the two launches: nothing of the interpreter's
    assert counts["ops_per_batch"] <= 4
    assert counts["bytes_per_image"] >= 3 * 8 * 8 * (1 + 4)  # uint8 in, float32 out


def test_opencv_host_calls_are_counted_per_image_with_their_bytes():
    pytest.importorskip("cv2")
    import gpuaug

    aug = gpuaug.GPUAugment(P.gpuaug_config(), backend="opencv")
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    calls = ("gpuaug.augment.backends.opencv", ("_warp_image", "_finish_image"))
    counts = counting.count_ops(lambda: aug(x), 2, host_calls=calls)
    aten_only = counting.count_ops(lambda: aug(x), 2)
    # one warp and one finish per image (3 channels in one OpenCV call), on top of the ATen ops
    assert counts["ops_per_batch"] - aten_only["ops_per_batch"] == 2 * 2
    # per image: warp reads uint8, writes uint8; finish reads uint8, writes float32
    host_bytes = counts["bytes_per_image"] - aten_only["bytes_per_image"]
    assert host_bytes >= 3 * 8 * 8 * (1 + 1 + 1 + 4)


def test_cli_rejects_an_unknown_backend():
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--backends", "numba"])


def test_bench_config_rejects_an_unknown_variant():
    with pytest.raises(ValueError, match="`variants` must be names from"):
        bench.BenchConfig(variants=("float8",))


def test_time_runner_rounds_steps_to_whole_worker_rounds():
    calls = []
    runner = P.Runner(lambda: calls.append(1) or 5, warmup_batches=2, batches_per_round=3)
    rate = bench.time_runner(runner, steps=4, repeats=2, device=torch.device("cpu"))
    assert rate["batches"] == 6
    assert rate["images"] == 30
    assert len(calls) == 2 + 2 * 6


def test_plan_measures_a_job_shared_by_two_scans_once():
    config = bench.BenchConfig(batch_sizes=(32,), target_size=(150, 150))
    grid = {"batch_size": (32, 64), "image_size": (), "num_workers": ()}
    jobs = bench.plan(config, ["torchvision-cpu"], workers=2, grid=grid)
    shared = [j for j in jobs if j.figure == "augment_only" and j.batch_size == 32]
    assert len(shared) == 1
    assert shared[0].scans == ("headline", "batch_size")


def test_bench_config_rejects_zero_repeats():
    with pytest.raises(ValueError, match="`repeats` must be >= 1; got 0"):
        bench.BenchConfig(repeats=0)


def test_bench_config_rejects_an_unknown_pipeline():
    with pytest.raises(ValueError, match="`pipelines` must be names from"):
        bench.BenchConfig(pipelines=("pillow-simd",))


def test_image_folder_is_photo_like_jpegs_in_two_classes(tmp_path):
    info = bench_data.make_image_folder(tmp_path, 4, min_side=64, max_side=96, progress=False)
    files = sorted(tmp_path.glob("*/*.jpg"))
    assert [f.parent.name for f in files] == ["cats", "cats", "dogs", "dogs"]
    with Image.open(files[0]) as img:
        assert img.format == "JPEG" and 64 <= max(img.size) <= 96
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    assert pixels.std() > 5  # not a constant colour
    assert info.num_images == 4


def test_image_folder_with_the_same_settings_is_reused(tmp_path):
    bench_data.make_image_folder(tmp_path, 2, min_side=32, max_side=48, progress=False)
    first = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/*.jpg")}
    bench_data.make_image_folder(tmp_path, 2, min_side=32, max_side=48, progress=False)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/*.jpg")} == first


def test_image_folder_rejects_fewer_than_two_images(tmp_path):
    with pytest.raises(ValueError, match=re.escape("`num_images` must be an int >= 2; got 1")):
        bench_data.make_image_folder(tmp_path, 1, progress=False)


def test_the_default_cpu_run_leaves_out_the_triton_interpreter(monkeypatch):
    """Under TRITON_INTERPRET=1 (the tests' setting) the kernel runs on CPU tensors, about 100x
    slower than the reference: the default backend list says so instead of timing it."""
    monkeypatch.setattr(P, "backend_unavailable", lambda backend, device: None)
    config = bench.BenchConfig(target_size=(8, 8))
    settings = P.Settings(directory=Path("unused"), target_size=(8, 8))
    out = bench.measure_backends(config, settings, torch.device("cpu"), names=[])
    assert "interpreter" in out["backends"]["triton"]
    assert out["backends"]["reference"] is None
    asked = bench.BenchConfig(target_size=(8, 8), backends=("triton",))
    out = bench.measure_backends(asked, settings, torch.device("cpu"), names=[])
    assert out["backends"] == {"triton": None}


def test_gpuaug_kornia_stages_is_measured_against_kornia_alone_with_the_same_ops(tiny_run):
    _, doc, _ = tiny_run
    for b in doc["settings"]["batch_sizes"]:
        assert report.find(doc, "augment_only", "kornia-stages", b) is not None
        assert report.find(doc, "augment_only", "gpuaug-kornia-stages", b) is not None
    pairs = {(x["numerator"], x["denominator"]) for x in doc["speedups"]}
    assert ("gpuaug-kornia-stages", "kornia-stages") in pairs
    assert not any(x["denominator"] == "kornia-stages" for x in doc["speedups"]
                   if x.get("fastest_peer"))  # fmt: skip


def test_dali_is_measured_in_both_figures_or_skipped_with_the_reason(tiny_run):
    _, doc, out = tiny_run
    info = doc["pipelines"]["dali"]
    if not info["available"]:
        assert "nvidia-dali not importable" in info["skipped_because"]
        assert "dali (nvidia-dali not importable" in out.with_suffix(".md").read_text()
        return
    for figure in ("end_to_end", "augment_only"):
        for b in (4, 8):
            assert "images_per_s" in report.find(doc, figure, "dali", b), (figure, b)
    pairs = {(x["numerator"], x["denominator"], x["figure"]) for x in doc["speedups"]}
    assert ("gpuaug", "dali", "end_to_end") in pairs and ("gpuaug", "dali", "augment_only") in pairs


# benchmarks.sm90's call counting (pure Python: no triton needed)
@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("/x/gpuaug/gpuaug/augment/module.py", "gpuaug"),  # a checkout in a folder named gpuaug
        ("/x/gpuaug/.venv/lib/site-packages/torch/nn/modules/module.py", "torch"),
        ("/x/gpuaug/.venv/lib/site-packages/triton/runtime/driver.py", "triton"),
        ("/x/gpuaug/benchmarks/sm90.py", "benchmarks"),
        ("/x/gpuaug/.venv/lib/python3.11/functools.py", "other"),
    ],
)
def test_python_calls_are_counted_by_the_package_folder_that_holds_them(filename, expected):
    site = "/x/gpuaug/.venv/lib/site-packages"
    roots = {
        "gpuaug": Path("/x/gpuaug/gpuaug"),
        "torch": Path(f"{site}/torch"),
        "triton": Path(f"{site}/triton"),
        "benchmarks": Path("/x/gpuaug/benchmarks"),
    }
    assert sm90.package_of(filename, roots) == expected
    # installed from the wheel, the benchmarks are a sub-package of gpuaug: the deeper wins
    wheel = {"gpuaug": Path(f"{site}/gpuaug"), "benchmarks": Path(f"{site}/gpuaug/benchmarks")}
    assert sm90.package_of(f"{site}/gpuaug/benchmarks/sm90.py", wheel) == "benchmarks"
