"""JPEG draft decoding: decode + resize time and pixel differences, ``draft=False`` vs ``True``.

Usage (from the repository root)::

    python -m benchmarks.decode_draft                 # 2, 6 and 12 MP photos -> 150 and 256 px
    python -m benchmarks.decode_draft --repeats 5 --sizes 150

The photos are scikit-image's (astronaut, coffee, chelsea, rocket) upscaled bicubically to
1920 x 1080, 3000 x 2000 and 4000 x 3000 and saved as JPEG quality 90. Each line gives the best
of ``--repeats`` mean times per image of `gpuaug.data.image.load_image` without and with
``draft``, and the max / mean absolute pixel difference between the two outputs (grey levels).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gpuaug.data.image import load_image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
MEGAPIXELS = {"2 MP": (1920, 1080), "6 MP": (3000, 2000), "12 MP": (4000, 3000)}


def make_photos(directory: Path) -> dict[str, list[Path]]:
    """The upscaled JPEGs, by megapixel label."""
    from skimage import data

    out: dict[str, list[Path]] = {label: [] for label in MEGAPIXELS}
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)())
        for label, size in MEGAPIXELS.items():
            path = directory / f"{name}-{size[0]}x{size[1]}.jpg"
            if not path.exists():
                image.resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
            out[label].append(path)
    return out


def measure(paths: list[Path], size: int, interpolation: str, repeats: int) -> dict:
    """Best-of-``repeats`` ms per image, plain and draft, and their pixel differences."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for draft in (False, True):  # interleaved: both see the same machine load
            start = time.perf_counter()
            for p in paths:
                load_image(p, (size, size), interpolation=interpolation, draft=draft)
            times[draft].append((time.perf_counter() - start) / len(paths) * 1e3)
    diffs = []
    for p in paths:
        a = load_image(p, (size, size), interpolation=interpolation).int()
        b = load_image(p, (size, size), interpolation=interpolation, draft=True).int()
        diffs.append((a - b).abs().numpy())
    d = np.stack(diffs)
    plain, draft = min(times[False]), min(times[True])
    return {
        "plain_ms": plain,
        "draft_ms": draft,
        "speedup": plain / draft,
        "max_diff": int(d.max()),
        "mean_diff": float(d.mean()),
        "median_speedup_all_repeats": statistics.median(
            a / b for a, b in zip(times[False], times[True], strict=True)
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_draft", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="150,256", help="square target sizes (default 150,256)")
    parser.add_argument("--dir", help="where to keep the photos (default: a temp dir)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.dir or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        photos = make_photos(directory)
        print(
            "| target | resize | photos | plain ms | draft ms | speed-up | max diff | mean diff |"
        )
        print("|---|---|---|---:|---:|---:|---:|---:|")
        for size in sizes:
            for interpolation in ("nearest", "bilinear"):
                for label, paths in photos.items():
                    r = measure(paths, size, interpolation, args.repeats)
                    print(
                        f"| {size} px | {interpolation} | {label} | {r['plain_ms']:.1f} | "
                        f"{r['draft_ms']:.1f} | {r['speedup']:.1f}x | {r['max_diff']} | "
                        f"{r['mean_diff']:.2f} |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
