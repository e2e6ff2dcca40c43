"""A missing optional package is named with the `pip install "gpuaug[...]"` that brings it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import gpuaug
from gpuaug.augment.backends.opencv import why_reference

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import pipelines  # noqa: E402


def test_missing_pandas_names_the_dataframe_extra(monkeypatch):
    from gpuaug.data import dataframe

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r'pip install "gpuaug\[dataframe\]"'):
        dataframe.import_pandas()


def test_missing_opencv_names_the_opencv_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    reason = why_reference("cpu", torch.float32, gpuaug.AugmentConfig(rotation_range=10))
    assert 'pip install "gpuaug[opencv]"' in reason


def test_missing_keras_peer_is_skipped_naming_the_bench_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)
    monkeypatch.setitem(sys.modules, "keras.src.legacy.preprocessing.image", None)
    assert 'pip install "gpuaug[bench]"' in pipelines._keras_unavailable(None)


def test_missing_albumentations_peer_is_skipped_naming_the_bench_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "albumentations", None)
    assert 'pip install "gpuaug[bench]"' in pipelines._albumentations_unavailable(None)
