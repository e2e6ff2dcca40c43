"""`python -m benchmarks.gpu_check`: runs end to end without CUDA, says what it skipped, and
fails loudly when a check fails. The CUDA checks themselves only run on a GPU."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_check

CUDA_ONLY = [name for name, check in gpu_check.CHECKS.items() if check.cuda_only]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    # on a GPU machine the quick run would also run `pytest -m cuda` and the benchmark
    extra = ["--skip", "cuda_tests,benchmark"] if torch.cuda.is_available() else []
    rc = gpu_check.main(["--quick", "--out", str(out), *extra])
    return rc, out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run without CUDA")
def test_quick_run_without_cuda_exits_zero_and_writes_one_json(quick_run):
    rc, out = quick_run
    (path,) = out.glob("gpu-check-*.json")
    doc = json.loads(path.read_text())
    assert rc == 0 and path.name == "gpu-check-cpu.json"
    assert doc["schema"] == "gpuaug-gpu-check/1"
    assert set(doc["versions"]) >= {"torch", "torchvision", "triton", "kornia"}
    assert list(doc["checks"]) == list(gpu_check.CHECKS)
    assert doc["summary"] == {"pass": 2, "fail": 0, "skipped": len(CUDA_ONLY)}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run without CUDA")
def test_cuda_only_checks_say_skipped_no_cuda_not_pass(quick_run):
    _, out = quick_run
    checks = json.loads((out / "gpu-check-cpu.json").read_text())["checks"]
    assert {name: checks[name]["verdict"] for name in CUDA_ONLY} == dict.fromkeys(
        CUDA_ONLY, "skipped: no CUDA"
    )
    assert checks["jpeg_check_parity"]["verdict"] == "pass"
    assert checks["benchmark"]["verdict"] == "pass"
    assert (out / "bench-cpu.json").is_file()


def test_jpeg_check_parity_lists_the_broken_photos(quick_run):
    _, out = quick_run
    (path,) = out.glob("gpu-check-*.json")
    metrics = json.loads(path.read_text())["checks"]["jpeg_check_parity"]["metrics"]
    refused = set(metrics["refused"])
    assert {"garbage.jpg", "garbage-soi.jpg"} <= refused
    assert any(name.endswith("-truncated.jpg") for name in refused)
    assert any(name.endswith("-no-eoi.jpg") for name in refused)
    assert metrics["routes"]["cpu"] >= 1  # CMYK goes to PIL in the worker


def test_a_failing_check_gives_a_non_zero_exit_and_its_detail(tmp_path, monkeypatch, capsys):
    def broken(ctx):
        return {"verdict": "fail", "detail": "injected"}

    monkeypatch.setitem(gpu_check.CHECKS, "jpeg_check_parity", gpu_check.Check(broken, False))
    rc = gpu_check.main(["--quick", "--out", str(tmp_path), "--only", "jpeg_check_parity"])
    (path,) = tmp_path.glob("gpu-check-*.json")
    check = json.loads(path.read_text())["checks"]["jpeg_check_parity"]
    assert rc == 1 and check["verdict"] == "fail" and check["detail"] == "injected"
    assert "0 passed, 1 failed" in capsys.readouterr().out


def test_a_crashing_check_is_a_failure_not_a_crash(tmp_path, monkeypatch):
    def crash(ctx):
        raise RuntimeError("boom")

    monkeypatch.setitem(gpu_check.CHECKS, "benchmark", gpu_check.Check(crash, False))
    rc = gpu_check.main(["--quick", "--out", str(tmp_path), "--only", "benchmark"])
    check = json.loads(next(tmp_path.glob("gpu-check-*.json")).read_text())["checks"]["benchmark"]
    assert rc == 1 and check["detail"].startswith("RuntimeError: boom")


def test_unknown_check_name_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"unknown check\(s\) \['nope'\]"):
        gpu_check.run_checks(gpu_check.QUICK, tmp_path, only={"nope"})


def test_overlap_counts_copy_time_under_kernels_on_other_streams():
    def ev(cat, name, ts, dur, stream):
        return {
            "ph": "X",
            "cat": cat,
            "name": name,
            "ts": ts,
            "dur": dur,
            "args": {"stream": stream},
        }

    trace = {
        "traceEvents": [
            ev("gpu_memcpy", "Memcpy HtoD (Pinned -> Device)", 0, 100, 13),
            ev("kernel", "conv", 50, 100, 7),  # covers 50..100 of the copy
            ev("kernel", "gemm", 60, 10, 7),  # inside the first: not counted twice
            ev("kernel", "same_stream", 0, 100, 13),  # same stream: cannot overlap
            ev("gpu_memcpy", "Memcpy DtoH (Device -> Pinned)", 0, 100, 13),  # not HtoD
        ]
    }
    assert gpu_check._overlap(trace) == (100, 50)


def test_photo_set_has_every_variant(tmp_path):
    kinds = gpu_check.make_photo_set(tmp_path, 0.01, 1)
    assert set(kinds.values()) >= {
        "baseline",
        "progressive",
        "grayscale",
        "CMYK",
        *(f"EXIF {o}" for o in range(2, 9)),
        "truncated",
        "garbage",
    }
    assert all((tmp_path / name).is_file() for name in kinds)


@pytest.fixture
def cuda_faked_on_cpu(monkeypatch):
    """The CUDA-only checks' plumbing on the CPU: CUDA memory/sync calls become no-ops and the
    loader accepts decode="gpu" (torchvision's CPU decoder stands in for nvJPEG)."""
    import gpuaug.loader.gpu_loader as loader_mod

    monkeypatch.setattr(loader_mod, "check_decode", lambda *args, **kwargs: None)
    for name in ("synchronize", "reset_peak_memory_stats", "set_sync_debug_mode"):
        monkeypatch.setattr(torch.cuda, name, lambda *args, **kwargs: None)
    for name in ("max_memory_allocated", "memory_allocated", "get_sync_debug_mode"):
        monkeypatch.setattr(torch.cuda, name, lambda *args, **kwargs: 0)
    monkeypatch.setattr(gpu_check, "_pinned_bytes", lambda: 0)
    monkeypatch.setattr(gpu_check, "machine", lambda cuda, device: {"device": "fake"})


@pytest.mark.usefixtures("cuda_faked_on_cpu")
def test_cuda_only_checks_run_end_to_end_with_cuda_faked_on_cpu(tmp_path):
    settings = gpu_check.CheckSettings(**{**gpu_check.asdict(gpu_check.QUICK), "device": "cpu"})
    doc = gpu_check.run_checks(settings, tmp_path, skip={"cuda_tests", "benchmark"}, cuda=True)
    verdicts = {name: check["verdict"] for name, check in doc["checks"].items()}
    assert doc["complete"] and (tmp_path / "gpu-check-cuda.json").is_file()
    for name in (
        "sync_free_epochs",
        "cpu_gpu_parity",
        "jpeg_check_parity",
        "nvjpeg_vs_cpu",
        "decode_peak_memory",
        "host_cache_pinned",
        "tf32_warp",
    ):
        assert verdicts[name] == "pass", (name, doc["checks"][name])
    modes = doc["checks"]["sync_free_epochs"]["metrics"]["modes"]
    assert set(modes) == set(gpu_check.LOADER_MODES) and "ragged + recipe, decode=gpu" in modes
    # a CPU profile has no host-to-device copies: a clean verdict, not a crash
    profile = doc["checks"]["copy_overlap_profile"]
    assert profile["verdict"] == "fail" and profile["detail"].startswith("no host-to-device")
    assert (tmp_path / "profile.txt").is_file()
    nvjpeg = doc["checks"]["nvjpeg_vs_cpu"]["metrics"]["batch_16"]
    assert nvjpeg["images"] == 16 - nvjpeg["skipped"] and nvjpeg["skipped"] > 0
    by_kind = nvjpeg["worst_mean_abs_diff_by_kind"]
    assert {"baseline", "progressive", "CMYK", "EXIF 6"} <= set(by_kind) and "?" not in by_kind


def test_without_out_the_results_go_to_gpuaug_bench_in_the_working_folder(tmp_path, monkeypatch):
    """A run never replaces the committed benchmarks/results/ unless --out says so."""
    monkeypatch.chdir(tmp_path)
    rc = gpu_check.main(["--quick", "--only", "jpeg_check_parity"])
    assert rc == 0
    assert [p.name for p in (tmp_path / "gpuaug-bench").glob("gpu-check-*.json")]
