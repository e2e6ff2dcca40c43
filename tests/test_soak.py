"""Soak, test-sized: many short epochs with workers, every cache mode, bad files mixed in.

The loop lives in ``benchmarks/soak.py`` (``python -m benchmarks.soak --minutes 5`` runs it
longer); here three rounds must give exact passes and flat resources between rounds 1 and 2
(round 0 warms up imports and allocators).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import soak  # noqa: E402


def test_every_pass_is_exact_and_resources_stay_flat(tmp_path):
    labels = soak.make_tree(tmp_path / "data", [7, 6, 5])
    history = []
    for _ in range(3):
        batches = soak.soak_round(tmp_path / "data", labels, tmp_path / "cache", epochs=6)
        assert batches == 4 * 6 * 3  # 4 cache modes x 6 epochs x 3 steps, none missing
        history.append(soak.resources())
    assert history[-1]["children"] == 0
    assert soak.check_flat(history[1], history[2], rss_slack=32_000_000) == []


def test_the_soak_sees_a_lost_sample(tmp_path, monkeypatch):
    """The check is not vacuous: a loader that drops a sample per pass fails it."""
    import pytest

    labels = soak.make_tree(tmp_path / "data", [3, 3, 2])
    labels_missing = dict(labels)
    labels_missing[250] = 0  # an image no loader can yield
    with pytest.raises(AssertionError, match="missing \\[250\\]"):
        soak.soak_round(tmp_path / "data", labels_missing, tmp_path / "cache", modes=[None])
