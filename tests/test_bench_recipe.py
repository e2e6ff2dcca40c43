"""The recipe benchmark runs every available pipeline on one folder and reports ratios."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import recipe as bench_recipe


def _args(folder, pipelines: str) -> argparse.Namespace:
    return argparse.Namespace(
        folder=str(folder), images=8, batch_size=4, workers=0, size=16, load_size=24,
        max_side=40, steps=1, repeats=1, device="cpu", pipelines=pipelines,
    )  # fmt: skip


@pytest.mark.slow
def test_each_pipeline_reports_images_per_second_and_its_ratio_to_gpuaug(make_tree):
    pytest.importorskip("timm")
    root = make_tree({"a": 4, "b": 4}, size=(40, 48), ext="jpg")
    results = bench_recipe.run(_args(root, "gpuaug,torchvision-v2,timm"))
    pipelines = results["pipelines"]
    assert pipelines["gpuaug"]["ratio_to_gpuaug"] == 1.0
    for name in ("torchvision-v2", "timm"):
        assert pipelines[name]["median"] > 0 and pipelines[name]["ratio_to_gpuaug"] > 0
    assert "| gpuaug |" in bench_recipe.markdown(results)


def test_gpuaug_runs_the_loaders_recipe_mode_and_the_resized_form_beside_it(make_tree):
    root = make_tree({"a": 4, "b": 4}, size=(40, 56), ext="jpg")
    results = bench_recipe.run(_args(root, "gpuaug,gpuaug-resized"))
    ragged, resized = results["pipelines"]["gpuaug"], results["pipelines"]["gpuaug-resized"]
    assert ragged["ratio_to_gpuaug"] == 1.0 and resized["ratio_to_gpuaug"] > 0
    assert "own sizes" in ragged["notes"] and results["settings"]["max_side"] == 40


def test_an_unavailable_pipeline_is_skipped_with_its_reason(make_tree, monkeypatch):
    monkeypatch.setitem(
        bench_recipe.PIPELINES, "dali-cpu",
        (None, lambda a: "nvidia-dali is not installed", "RRC+flip+normalise only"),
    )  # fmt: skip
    results = bench_recipe.run(_args(make_tree({"a": 2, "b": 2}), "dali-cpu"))
    assert results["pipelines"]["dali-cpu"]["skipped"] == "nvidia-dali is not installed"


def test_threads_sets_the_main_processs_intra_op_threads_and_is_recorded(make_tree, monkeypatch):
    import torch

    monkeypatch.setitem(
        bench_recipe.PIPELINES, "dali-cpu",
        (None, lambda a: "nvidia-dali is not installed", "RRC+flip+normalise only"),
    )  # fmt: skip
    before = torch.get_num_threads()
    args = _args(make_tree({"a": 2, "b": 2}), "dali-cpu")
    try:
        args.threads = 1
        results = bench_recipe.run(args)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert results["settings"]["threads"] == 1
    assert "main-process intra-op threads 1" in bench_recipe.markdown(results)
    args.threads = 0
    with pytest.raises(ValueError, match="`--threads` must be >= 1"):
        bench_recipe.run(args)
