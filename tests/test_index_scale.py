"""benchmarks/index_scale.py at a tiny N: it runs, its numbers are consistent, it cleans up."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import index_scale  # noqa: E402


@pytest.mark.keras
def test_index_scale_runs_at_a_tiny_n(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUAUG_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "links"
    out = tmp_path / "results"
    assert (
        index_scale.main(["--n", "300", "--classes", "3", "--root", str(root), "--out", str(out)])
        == 0
    )
    doc = json.loads((out / "index_scale-300.json").read_text())
    assert doc["n"] == 300 and doc["classes"] == 3
    g = doc["gpuaug"]
    assert g["index_first_s"] > 0 and g["index_cached_s"] > 0 and g["first_batch_s"] > 0
    assert g["index_first_verified"] == "header"  # 300 files: below verify="auto"'s limit
    parts = g["first_batch_construct_s"] + g["first_batch_next_s"]
    assert g["first_batch_s"] == pytest.approx(parts, abs=0.002)
    assert 0 < g["bytes_per_sample"] < doc["legacy"]["bytes_per_sample"]
    assert set(g["header_check"]) == {"serial", "thread", "process"}
    assert doc["keras"]["index_s"] > 0
    text = (out / "index_scale-300.md").read_text()
    assert "gpuaug, cached (second construction)" in text and "Keras" in text
    assert not root.exists()  # removed without --keep


def test_build_folder_links_every_file_and_is_reused(tmp_path):
    root = tmp_path / "links"
    assert index_scale.build_folder(root, 25, 4) > 0
    files = sorted(p for p in root.rglob("*.jpg"))
    assert len(files) == 25 and len({p.stat().st_ino for p in files}) == index_scale.SOURCES
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["c000", "c001", "c002", "c003"]
    assert index_scale.build_folder(root, 25, 4) == 0.0
