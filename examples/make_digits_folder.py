"""Write scikit-learn's bundled digits as a class-per-folder PNG tree (no download).

``sklearn.datasets.load_digits`` ships 1797 8x8 grey images of the digits 0-9 inside the
scikit-learn wheel. This script upscales them (bicubic) and writes::

    OUT/train/0/00012.png ... OUT/train/9/...
    OUT/val/0/00003.png   ... OUT/val/9/...

which is the layout ``gpuaug.flow_from_directory`` (and Keras) expects. The split is
stratified and seeded; ``train_per_class`` keeps only the first N training images of each
class, a small training set on which a convnet over-fits quickly.

Usage::

    python examples/make_digits_folder.py digits_data --size 64 --train-per-class 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["make_digits_folder"]

_DONE = ".complete"


def make_digits_folder(
    out_dir: str | Path,
    *,
    size: int = 64,
    val_fraction: float = 0.3,
    train_per_class: int | None = None,
    val_per_class: int | None = None,
    seed: int = 0,
) -> Path:
    """Write the digits as ``out_dir/train/<digit>/*.png`` and ``out_dir/val/<digit>/*.png``.

    A folder already written with the same settings (it holds a ``.complete`` marker that
    records them) is reused as is.

    Args:
        out_dir: Folder to write into (created if missing).
        size: Side of the square PNGs, in pixels (the originals are 8x8).
        val_fraction: Fraction of each class held out for validation.
        train_per_class: Keep only this many training images per class (None: all).
        val_per_class: Keep only this many validation images per class (None: all).
        seed: Seeds the stratified split.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ValueError: for a ``size`` < 8, ``val_fraction`` outside (0, 1) or a non-positive
            ``train_per_class`` / ``val_per_class``.
    """
    from sklearn.datasets import load_digits

    if size < 8:
        raise ValueError(f"`size` must be >= 8 (the digits are 8x8); got {size}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"`val_fraction` must be in (0, 1); got {val_fraction}")
    for name, value in (("train_per_class", train_per_class), ("val_per_class", val_per_class)):
        if value is not None and value < 1:
            raise ValueError(f"`{name}` must be >= 1 or None; got {value}")

    out = Path(out_dir)
    settings = (
        f"size={size} val_fraction={val_fraction} train_per_class={train_per_class} "
        f"val_per_class={val_per_class} seed={seed}\n"
    )
    marker = out / _DONE
    if marker.is_file() and marker.read_text() == settings:
        return out
    if out.exists() and any(out.iterdir()) and not marker.is_file():
        raise ValueError(
            f"`out_dir` {str(out)!r} exists, is not empty and was not written by this script"
        )

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    labels = digits.target
    rng = np.random.default_rng(seed)
    marker.unlink(missing_ok=True)
    for split in ("train", "val"):
        for path in (out / split).glob("*/*.png"):
            path.unlink()
    for digit in range(10):
        indices = rng.permutation(np.flatnonzero(labels == digit))
        n_val = max(1, round(len(indices) * val_fraction))
        parts = {"val": indices[:n_val], "train": indices[n_val:]}
        if train_per_class is not None:
            parts["train"] = parts["train"][:train_per_class]
        if val_per_class is not None:
            parts["val"] = parts["val"][:val_per_class]
        for split, chosen in parts.items():
            folder = out / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for index in chosen:
                picture = Image.fromarray(images[index], mode="L")
                picture = picture.resize((size, size), Image.Resampling.BICUBIC)
                picture.save(folder / f"{index:05d}.png")
    marker.write_text(settings)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write train/ and val/ into")
    parser.add_argument("--size", type=int, default=64, help="side of the PNGs (default: 64)")
    parser.add_argument("--val-fraction", type=float, default=0.3, help="held out (0.3)")
    parser.add_argument("--train-per-class", type=int, default=None, help="default: all")
    parser.add_argument("--val-per-class", type=int, default=None, help="default: all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        out = make_digits_folder(
            args.out_dir,
            size=args.size,
            val_fraction=args.val_fraction,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            seed=args.seed,
        )
    except ValueError as err:
        parser.error(str(err))
    for split in ("train", "val"):
        count = sum(1 for _ in (out / split).glob("*/*.png"))
        print(f"{out / split}: {count} images in 10 class folders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
