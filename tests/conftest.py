"""Shared test fixtures: small generated image trees and the CUDA marker.

Images are small (<= 48 px) and few, so the whole suite stays fast on a 2-core CPU.
"""

from __future__ import annotations

import os

# Keras 3 must be told its backend before it is first imported (the parity tests use it).
os.environ.setdefault("KERAS_BACKEND", "torch")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

# Without CUDA, Triton kernels (gpuaug.augment.backends.triton) run in Triton's CPU interpreter in
# the tests. It
# must be on before anything imports triton (torch's fake tensors, dynamo,
# gpuaug.augment.backends.triton):
# triton.language's own helpers (tl.min, ...) are made interpretable only at their import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def textured_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo-like uint8 RGB image: smooth gradients plus noise, never a constant colour."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    fx, fy = rng.uniform(0.05, 0.3, size=2)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    base = np.stack(
        [
            127 + 100 * np.sin(fx * xx + fy * yy + phase[c]) * np.cos(0.5 * fy * xx - phase[c])
            for c in range(3)
        ],
        axis=-1,
    )
    noise = rng.normal(0, 12, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_tree(
    root: Path,
    classes: dict[str, int],
    size: tuple[int, int] = (24, 32),
    ext: str = "png",
    seed: int = 0,
) -> Path:
    """Write `root/<class>/img_<i>.<ext>` images; sizes are (height, width)."""
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            arr = textured_image(rng, *size)
            Image.fromarray(arr).save(d / f"img_{i:03d}.{ext}")
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """Two classes, 5 + 3 small PNGs: `cats/` and `dogs/`."""
    return write_tree(tmp_path / "data", {"cats": 5, "dogs": 3})


@pytest.fixture
def make_tree(tmp_path: Path):
    """Factory: make_tree({"a": 3, "b": 2}, size=(h, w), ext="jpg") -> root."""
    counter = iter(range(10_000))

    def _make(classes: dict[str, int], **kwargs) -> Path:
        return write_tree(tmp_path / f"tree{next(counter)}", classes, **kwargs)

    return _make


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; torch.cuda.is_available() is False")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
