"""The benchmark's DALI and torch.compile-d kornia peers, on tiny inputs on the CPU.

DALI's tests skip when ``nvidia.dali`` does not import (``pip install "gpuaug[dali]"``); its
GPU path needs CUDA and is not run here. The real kornia compile takes about half a minute on
two cores (slow); the warm-up and failure logic are tested with stand-ins for the compiler.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench, report  # noqa: E402
from benchmarks import pipelines as P  # noqa: E402
from benchmarks import recipe as bench_recipe  # noqa: E402


def _settings(root: Path, size: int = 32, batch: int = 4, workers: int = 0) -> P.Settings:
    return P.Settings(
        directory=root, target_size=(size, size), batch_size=batch, num_workers=workers
    )


def _smooth_batch(n: int, size: int) -> torch.Tensor:
    """uint8 (n, 3, size, size) gradients with no jump: a warp moves values by < 1 grey/px."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = []
    for i in range(n):
        chans = [xx * 6 + i, yy * 6, (xx + yy) * 3 + 10 * i]
        images.append(np.clip(np.stack(chans), 0, 255).astype(np.uint8))
    return torch.from_numpy(np.stack(images))


# ----------------------------------------------------------------------------- DALI


def test_dali_is_skipped_with_the_reason_and_the_install_line_when_it_does_not_import(
    monkeypatch, tmp_path
):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # import nvidia.dali -> ImportError
    reason = P.PIPELINES["dali"].unavailable(_settings(tmp_path))
    assert reason is not None
    assert "nvidia-dali not importable" in reason and 'pip install "gpuaug[dali]"' in reason


def test_dali_augment_only_batches_are_float_chw_in_unit_range_and_augmented(tmp_path):
    pytest.importorskip("nvidia.dali")
    from benchmarks import dali

    batch = _smooth_batch(4, 32)
    with dali.augment_only_batches(_settings(tmp_path), batch) as batches:
        first, second = next(batches).clone(), next(batches).clone()
    assert first.shape == (4, 3, 32, 32) and first.dtype == torch.float32
    assert first.device.type == "cpu"
    assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    assert not torch.allclose(first, batch.float() / 255)  # it warped
    assert not torch.equal(first, second)  # new draws each batch


def test_dali_end_to_end_batches_come_from_the_folder_with_class_labels(make_tree):
    pytest.importorskip("nvidia.dali")
    from benchmarks import dali

    root = make_tree({"a": 3, "b": 3}, size=(40, 48), ext="jpg")
    with dali.end_to_end_batches(_settings(root, size=24, batch=4, workers=1)) as batches:
        x, y = next(batches)
    assert x.shape == (4, 3, 24, 24) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.1
    assert set(y.flatten().tolist()) <= {0, 1}


def _dali_draws(batch: torch.Tensor, seed: int = 3):
    """One run of a pipeline feeding ``batch`` to :func:`benchmarks.dali.augment`: its output,
    the per-sample matrices and draws, as numpy."""
    from nvidia.dali import fn, pipeline_def

    from benchmarks import dali

    size = (int(batch.shape[2]), int(batch.shape[3]))
    data = np.ascontiguousarray(batch.permute(0, 2, 3, 1).numpy())

    @pipeline_def(batch_size=len(batch), num_threads=1, device_id=None, seed=seed)
    def pipe():
        images = fn.external_source(source=lambda: data, batch=True, layout="HWC")
        out, matrix, params = dali.augment(images, size)
        return (out, matrix, *params.values())

    p = pipe()
    p.build()
    outs = [np.array(o.as_tensor()) for o in p.run()]
    keys = ("theta_deg", "tx_px", "ty_px", "shear_deg", "zx", "zy", "flip")
    return outs[0], outs[1], dict(zip(keys, outs[2:], strict=True))


def test_dali_draws_a_different_matrix_for_each_sample_within_keras_ranges():
    pytest.importorskip("nvidia.dali")
    _, matrices, params = _dali_draws(_smooth_batch(6, 32))
    assert matrices.shape == (6, 2, 3)
    flat = matrices.reshape(6, -1)
    assert all(not np.allclose(flat[i], flat[j]) for i in range(6) for j in range(i))
    assert np.all(np.abs(params["theta_deg"]) <= 40)
    assert np.all(np.abs(params["tx_px"]) <= 0.2 * 32) and np.all(np.abs(params["ty_px"]) <= 6.4)
    assert np.all(np.abs(params["shear_deg"]) <= 0.2)
    assert np.all((params["zx"] >= 0.8) & (params["zx"] <= 1.2))


def test_dali_warp_is_keras_apply_affine_transform_of_the_same_draws_within_a_grey_level():
    """The geometry is Keras': Keras' own apply_affine_transform on DALI's drawn parameters
    (flipped where DALI flipped) gives the same image, up to DALI's uint8 rounding."""
    pytest.importorskip("nvidia.dali")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from keras.src.legacy.preprocessing.image import apply_affine_transform

    batch = _smooth_batch(4, 40)
    out, _, params = _dali_draws(batch)
    for i in range(len(batch)):
        image = batch[i].permute(1, 2, 0).numpy().astype(np.float32)
        keras = apply_affine_transform(
            image,
            theta=float(params["theta_deg"][i]),
            tx=float(params["tx_px"][i]),
            ty=float(params["ty_px"][i]),
            shear=float(params["shear_deg"][i]),
            zx=float(params["zx"][i]),
            zy=float(params["zy"][i]),
            row_axis=0,
            col_axis=1,
            channel_axis=2,
            fill_mode="nearest",
            order=1,
        )
        if params["flip"][i]:
            keras = keras[:, ::-1]
        ours = out[i].transpose(1, 2, 0) * 255.0
        assert np.abs(ours - keras).max() <= 1.0, i


def test_the_recipe_dali_pipeline_runs(make_tree):
    pytest.importorskip("nvidia.dali")
    root = make_tree({"a": 4, "b": 4}, size=(40, 48), ext="jpg")
    args = argparse.Namespace(
        folder=str(root), images=8, batch_size=4, workers=1, size=16, load_size=24, steps=2,
        repeats=1, device="cpu", pipelines="dali-cpu",
    )  # fmt: skip
    entry = bench_recipe.run(args)["pipelines"]["dali-cpu"]
    assert "skipped" not in entry and entry["median"] > 0 and entry["images"] == 8


# ----------------------------------------------------------------------------- kornia compiled


def test_compile_warmup_counts_only_the_calls_that_compiled(monkeypatch):
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch._dynamo, "reset", lambda: None)
    calls = []

    def call():  # compiles a graph on its first two calls, then runs compiled code
        calls.append(1)
        if len(calls) <= 2:
            counters["stats"]["unique_graphs"] += 1

    measured = P.compile_warmup(call)
    assert measured["compile_graphs"] == 2
    assert measured["compile_calls"] == 4  # two compiling calls, then two quiet ones
    assert measured["compile_seconds"] >= 0


def test_a_failed_compile_is_recorded_with_its_reason_not_raised(monkeypatch, tmp_path):
    pytest.importorskip("kornia")

    def broken(module, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler found\nlong traceback follows")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    settings = _settings(tmp_path, size=16)
    batch = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    monkeypatch.setattr(P, "decoded_batch", lambda directory, b, size: batch)
    job = bench._Job("augment_only", "kornia-compiled", 4, (16, 16), 0, scans=("headline",))
    config = bench.BenchConfig(repeats=1, min_images=4, progress=False)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        (record,) = bench._measure([job], settings, config, torch.device("cpu"))
    assert (
        record["error"] == "RuntimeError: torch.compile failed: RuntimeError: no C++ compiler found"
    )
    doc = {"results": [record]}
    text = "\n".join(report._compile_and_error_lines(doc))
    assert "kornia-compiled augmentation-only b=4 (RuntimeError: torch.compile failed" in text


def test_compile_seconds_are_reported_beside_the_timings_not_in_them(monkeypatch, tmp_path):
    """With an identity compiler (no real compile) the plumbing is checked fast: the runner's
    measured numbers land in the record and in the report line."""
    pytest.importorskip("kornia")
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: module)
    settings = _settings(tmp_path, size=16)
    batch = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    monkeypatch.setattr(P, "decoded_batch", lambda directory, b, size: batch)
    job = bench._Job("augment_only", "kornia-compiled", 4, (16, 16), 0, scans=("headline",))
    config = bench.BenchConfig(repeats=1, min_images=4, progress=False)
    (record,) = bench._measure([job], settings, config, torch.device("cpu"))
    assert record["compile_graphs"] == 0 and record["compile_calls"] == 2
    assert record["images_per_s"]["median"] > 0
    text = "\n".join(report._compile_and_error_lines({"results": [record]}))
    assert "kornia-compiled augmentation-only b=4: 0.0 s (0 graphs in 2 calls)" in text


def test_the_compiled_kornia_peer_is_left_out_of_the_scans():
    config = bench.BenchConfig(batch_sizes=(32,))
    grid = {"batch_size": (32, 64), "image_size": (64,), "num_workers": (0,)}
    jobs = bench.plan(config, ["kornia-randomaffine", "kornia-compiled"], 0, grid)
    compiled = [j for j in jobs if j.pipeline == "kornia-compiled"]
    eager = [j for j in jobs if j.pipeline == "kornia-randomaffine"]
    assert [j.scans for j in compiled] == [("headline",)]
    assert len(eager) == 3  # batch 32 (headline + scan), batch 64, size 64


@pytest.mark.slow
def test_the_compiled_kornia_peer_compiles_and_augments(tmp_path):
    pytest.importorskip("kornia")
    if P.PIPELINES["kornia-compiled"].unavailable(_settings(tmp_path)):
        pytest.skip(P.PIPELINES["kornia-compiled"].unavailable(_settings(tmp_path)))
    batch = _smooth_batch(4, 16)
    call, measured = P.kornia_compiled_step(_settings(tmp_path, size=16), batch)
    out = call()
    assert out.shape == (4, 3, 16, 16) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert measured["compile_graphs"] >= 1 and measured["compile_seconds"] > 0
    assert not torch.equal(out, call())  # the draws are not frozen into the graph
