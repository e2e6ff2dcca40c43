"""examples/train_segmentation.py: the paired folders, the U-Net, and a tiny 1-epoch run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("skimage")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_segmentation.py"
EPOCH_LINE = re.compile(
    r"^epoch 1/1\s+train loss \d+\.\d{4} acc [01]\.\d{3}\s+val loss \d+\.\d{4} acc [01]\.\d{3}"
    r"\s+\d+\.\d+s$",
    re.MULTILINE,
)


def load_example():
    spec = importlib.util.spec_from_file_location("train_segmentation", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_folders_pair_coins_and_astronaut_crops_with_palette_masks(tmp_path):
    root = load_example().make_segmentation_folders(tmp_path / "seg", train=4, val=2, crop=32)
    for split, count in (("train", 4), ("val", 2)):
        images = sorted(p.stem for p in (root / split / "images").iterdir())
        masks = sorted((root / split / "masks").iterdir())
        assert images == [p.stem for p in masks] and len(images) == count
        labels = set()
        for mask in masks:
            with Image.open(mask) as img:
                assert img.mode == "P"
                labels |= set(np.unique(np.asarray(img)).tolist())
        assert labels <= {0, 1, 2} and {1, 2} <= labels


def test_unet_keeps_the_spatial_size():
    model = load_example().TinyUNet(3, 3)
    assert model(torch.zeros(2, 3, 16, 24)).shape == (2, 3, 16, 24)


def test_one_tiny_epoch_trains_and_saves_the_preview(tmp_path):
    command = [
        sys.executable, str(EXAMPLE), "--epochs", "1", "--train", "8", "--val", "4",
        "--size", "16", "16", "--batch-size", "4", "--device", "cpu",
        "--data-dir", str(tmp_path / "seg"), "--preview", str(tmp_path / "grid.png"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert EPOCH_LINE.search(result.stdout), result.stdout
    assert "train: 8 pairs  val: 4 pairs" in result.stdout
    assert "augmentation: ON (images and masks)" in result.stdout
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.mode == "RGB" and grid.width > 100
