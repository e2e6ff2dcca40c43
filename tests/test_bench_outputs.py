"""What a benchmark run leaves behind: no plot without matplotlib (said up front), results in
./gpuaug-bench/ by default, and ratios that rest on noise marked as unstable."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench, report  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:the machine is busy:RuntimeWarning")

QUICK = [
    "--num-images", "8", "--image-size", "32", "--batch-sizes", "4", "--min-images", "4",
    "--repeats", "1", "--grid", "none", "--pipelines", "gpuaug", "--num-workers", "0",
    "--no-profile", "--no-progress", "--backends", "reference", "--variants", "float32",
    "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_without_matplotlib(tmp_path_factory):
    """One quick run with matplotlib made unimportable, from a fresh working folder."""
    cwd = tmp_path_factory.mktemp("work")
    patch = pytest.MonkeyPatch()
    patch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    patch.chdir(cwd)
    err = io.StringIO()
    try:
        patch.setattr(sys, "stderr", err)
        status = bench.main([*QUICK, "--data-dir", str(cwd / "data")])
    finally:
        patch.undo()
    return status, cwd, err.getvalue()


def test_bench_without_matplotlib_exits_zero(run_without_matplotlib):
    status, _, _ = run_without_matplotlib
    assert status == 0


def test_bench_without_matplotlib_writes_json_and_md_but_no_png(run_without_matplotlib):
    _, cwd, _ = run_without_matplotlib
    out = cwd / "gpuaug-bench"
    assert (out / "cpu.json").is_file() and (out / "cpu.md").is_file()
    assert not (out / "cpu.png").exists()
    assert "cpu.png" not in (out / "cpu.md").read_text()


def test_bench_without_matplotlib_says_so_before_measuring(run_without_matplotlib):
    _, _, err = run_without_matplotlib
    lines = err.splitlines()
    note = [i for i, line in enumerate(lines) if "matplotlib is not installed" in line]
    assert len(note) == 1 and 'pip install "gpuaug[bench]"' in lines[note[0]]
    assert note[0] < next(i for i, line in enumerate(lines) if line.startswith("wrote "))


def test_default_results_folder_is_gpuaug_bench_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bench.default_results_dir() == tmp_path / "gpuaug-bench"


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "gpuaug\[bench\]"'):
        report.plot({}, tmp_path / "x.png")


def _rates(*runs: float) -> dict:
    ordered = sorted(runs)
    return {"median": ordered[len(ordered) // 2], "min": ordered[0], "max": ordered[-1],
            "runs": list(runs)}  # fmt: skip


def test_a_ratio_from_one_run_is_unstable():
    assert report.ratio_stability(_rates(400.0), _rates(10.0))["unstable"] == "one run"


def test_a_ratio_whose_range_is_wider_than_itself_is_unstable():
    # 400 / 10 = 40x, but the runs allow 300 / 40 = 7.5x to 500 / 10 = 50x: 42.5 > 40.
    stability = report.ratio_stability(_rates(300.0, 400.0, 500.0), _rates(10.0, 10.0, 40.0))
    assert stability["unstable"] == "runs give 7.50x to 50.00x"
    assert stability["range"] == [7.5, 50.0]


def test_a_ratio_with_tight_runs_is_stable():
    stability = report.ratio_stability(_rates(390.0, 400.0, 410.0), _rates(95.0, 100.0, 105.0))
    assert stability["unstable"] is None


def test_an_unstable_ratio_is_printed_with_its_reason():
    entry = {"ratio": 40.16, "unstable": "one run"}
    assert report.fmt_ratio(entry) == "40.16x (unstable: one run)"
    assert report.fmt_ratio({"ratio": 2.5, "unstable": None}) == "2.50x"


def test_the_summary_line_marks_a_one_run_ratio(run_without_matplotlib):
    _, cwd, _ = run_without_matplotlib
    doc = json.loads((cwd / "gpuaug-bench" / "cpu.json").read_text())
    doc["pipelines"]["keras-idg"] = {"available": True}
    record = next(r for r in doc["results"] if r["figure"] == "augment_only")
    doc["results"].append({**record, "pipeline": "keras-idg"})
    doc.pop("speedups", None)
    assert "(unstable: one run)" in report.summary_line(doc)
