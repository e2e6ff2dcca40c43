"""benchmarks/flow_arrays.py: the CIFAR-10-sized ``flow(x, y)`` measurement, on a tiny array."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import flow_arrays  # noqa: E402


def test_cifar_like_is_uint8_nhwc_with_ten_classes():
    x, y = flow_arrays.cifar_like(50, seed=1)
    assert x.shape == (50, 32, 32, 3) and x.dtype.name == "uint8"
    assert y.min() >= 0 and y.max() <= 9 and len(y) == 50


@pytest.mark.keras
def test_run_measures_both_pipelines(tmp_path):
    out = tmp_path / "flow.json"
    code = flow_arrays.main(
        ["--num-images", "64", "--batch-sizes", "16", "--repeats", "1", "--min-images", "16"]
        + ["--device", "cpu", "--out", str(out)]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    rates = {r["pipeline"]: r for r in doc["results"]}
    assert set(rates) == {"keras-idg-flow", "gpuaug-flow"}
    for r in rates.values():
        assert r["batch_size"] == 16 and r["images"] == 16 and r["median"] > 0


def test_unknown_pipeline_is_a_usage_error():
    with pytest.raises(SystemExit) as info:
        flow_arrays.main(["--pipelines", "nope"])
    assert info.value.code == 2
