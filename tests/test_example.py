"""examples/train_small_convnet.py: the model, the digits folder, and a 1-epoch run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
EPOCH_LINE = re.compile(
    r"^epoch 1/1\s+train loss \d+\.\d{4} acc [01]\.\d{3}\s+val loss \d+\.\d{4} acc [01]\.\d{3}"
    r"\s+\d+\.\d+s$",
    re.MULTILINE,
)


def load_module(name: str):
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(EXAMPLES))


def run_example(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(EXAMPLES / "train_small_convnet.py"), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize(("size", "blocks"), [(64, 4), (48, 4), (32, 3), (150, 4)])
def test_model_keeps_as_many_chollet_blocks_as_the_input_allows(size, blocks):
    model = load_module("train_small_convnet").SmallConvNet(1, 10, (size, size))
    assert model.blocks == blocks
    assert model(torch.zeros(2, 1, size, size)).shape == (2, 10)


def test_digits_folder_has_a_stratified_train_and_val_split(tmp_path):
    make = load_module("make_digits_folder").make_digits_folder
    root = make(tmp_path / "digits", size=16, train_per_class=3, val_per_class=2)
    for split, per_class in (("train", 3), ("val", 2)):
        folders = sorted(p.name for p in (root / split).iterdir())
        assert folders == [str(d) for d in range(10)]
        assert all(len(list((root / split / d).glob("*.png"))) == per_class for d in folders)
    train = {p.name for p in (root / "train").glob("*/*.png")}
    val = {p.name for p in (root / "val").glob("*/*.png")}
    assert not train & val


def test_one_epoch_on_digits_prints_loss_and_accuracy(tmp_path):
    result = run_example(
        "--epochs", "1", "--train-per-class", "4", "--val-per-class", "3",
        "--target-size", "32", "32", "--batch-size", "16", "--workers", "0",
        "--device", "cpu", "--data-dir", tmp_path / "digits",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert EPOCH_LINE.search(result.stdout), result.stdout
    assert "augmentation: ON" in result.stdout


def test_own_folder_with_validation_split_trains_without_augmentation(make_tree):
    root = make_tree({"cats": 6, "dogs": 6}, size=(24, 24), ext="jpg")
    result = run_example(
        "--data", root, "--validation-split", "0.5", "--no-augment", "--epochs", "1",
        "--target-size", "24", "24", "--batch-size", "4", "--workers", "0", "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert EPOCH_LINE.search(result.stdout), result.stdout
    assert "train: 6 images  val: 6 images" in result.stdout
    assert "augmentation: OFF" in result.stdout
