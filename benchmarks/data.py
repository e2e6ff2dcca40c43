"""A folder of photo-like JPEGs of varied size, so that decode cost in the benchmark is real.

The images are crops of the sample photographs that ship inside scikit-image (astronaut,
coffee, chelsea, rocket, ...: no download), rescaled to a random size and colour-jittered,
then saved as JPEG at a random quality. They are split between two class folders (``cats/``
and ``dogs/``), the layout of the Cats vs Dogs example that the augmentation settings come from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["FolderInfo", "make_image_folder", "sample_photos", "synthetic_image"]

CLASSES = ("cats", "dogs")
SPEC_FILE = ".gpuaug-bench.json"

# skimage.data loaders that read a file shipped with scikit-image (checked offline).
_COLOUR_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
)
_GREY_PHOTOS = ("camera", "coins", "moon", "clock", "grass", "gravel", "brick", "page")


@dataclass(frozen=True)
class FolderInfo:
    """What :func:`make_image_folder` wrote.

    Attributes:
        root: the folder (one subfolder per class).
        num_images: files written, over all classes.
        seed: the seed that drew them.
        min_side: smallest allowed length of an image's longer side, pixels.
        max_side: largest allowed length of an image's longer side, pixels.
        heights: (min, median, max) image height, pixels.
        widths: (min, median, max) image width, pixels.
        mean_kib: mean JPEG file size, KiB.
        sources: the scikit-image photographs the crops came from.
    """

    root: str
    num_images: int
    seed: int
    min_side: int
    max_side: int
    heights: tuple[int, int, int]
    widths: tuple[int, int, int]
    mean_kib: float
    sources: tuple[str, ...]

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def sample_photos() -> tuple[tuple[str, np.ndarray], ...]:
    """The scikit-image sample photographs available offline, as RGB uint8 ``(H, W, 3)``.

    Grey photographs are tinted with a fixed colour so that every source has three distinct
    channels. Photographs that need the optional ``pooch`` download are left out.

    Returns:
        ``(name, image)`` pairs; empty only when scikit-image is missing.
    """
    try:
        import skimage.data as skdata
    except ImportError:
        return ()
    photos: list[tuple[str, np.ndarray]] = []
    for name in _COLOUR_PHOTOS + _GREY_PHOTOS:
        try:
            image = np.asarray(getattr(skdata, name)())
        except Exception:  # noqa: BLE001 - any photo that will not load offline is skipped
            continue
        if image.dtype != np.uint8:
            continue
        if image.ndim == 2:
            tint = np.array([1.0, 0.9, 0.75], dtype=np.float32)
            image = (image[..., None].astype(np.float32) * tint).astype(np.uint8)
        image = np.ascontiguousarray(image[..., :3])
        photos.append((name, image))
    return tuple(photos)


def _procedural(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured RGB image (smooth waves plus noise) for when no photograph is available."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    fx, fy = rng.uniform(0.01, 0.08, size=2)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    base = np.stack(
        [127 + 100 * np.sin(fx * xx + fy * yy + p) * np.cos(0.5 * fy * xx - p) for p in phase],
        axis=-1,
    )
    return np.clip(base + rng.normal(0, 10, size=base.shape), 0, 255).astype(np.uint8)


def synthetic_image(
    rng: np.random.Generator, *, min_side: int = 300, max_side: int = 500
) -> np.ndarray:
    """One photo-like image: a random crop of a sample photo, rescaled and colour-jittered.

    Args:
        rng: the random generator (the only source of randomness).
        min_side: smallest length of the longer side, pixels.
        max_side: largest length of the longer side, pixels.

    Returns:
        The image.

    Shape:
        -> ``(H, W, 3)`` uint8 numpy, ``max(H, W)`` in ``[min_side, max_side]``, aspect ratio
        between 1:2 and 2:1.
    """
    long_side = int(rng.integers(min_side, max_side + 1))
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))  # width / height
    if aspect >= 1:
        out_w, out_h = long_side, max(1, round(long_side / aspect))
    else:
        out_h, out_w = long_side, max(1, round(long_side * aspect))

    photos = sample_photos()
    if photos:
        _, source = photos[int(rng.integers(len(photos)))]
        h, w = source.shape[:2]
        frac = rng.uniform(0.4, 1.0)
        crop_w = max(8, min(w, round(np.sqrt(frac * h * w * aspect))))
        crop_h = max(8, min(h, round(crop_w / aspect)))
        y0 = int(rng.integers(0, h - crop_h + 1))
        x0 = int(rng.integers(0, w - crop_w + 1))
        crop = Image.fromarray(source[y0 : y0 + crop_h, x0 : x0 + crop_w])
        image = np.asarray(crop.resize((out_w, out_h), Image.BILINEAR), dtype=np.float32)
    else:
        image = _procedural(rng, out_h, out_w).astype(np.float32)

    # Colour jitter: per-channel gain, saturation, brightness, gamma; then mild sensor noise.
    grey = image.mean(axis=-1, keepdims=True)
    image = grey + (image - grey) * rng.uniform(0.6, 1.4)
    image = image * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-20, 20)
    image = 255.0 * (np.clip(image, 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)
    image = image + rng.normal(0, 3.0, size=image.shape)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return np.clip(image, 0, 255).astype(np.uint8)


def make_image_folder(
    root: str | Path,
    num_images: int,
    *,
    seed: int = 0,
    min_side: int = 300,
    max_side: int = 500,
    progress: bool = True,
) -> FolderInfo:
    """Write ``num_images`` JPEGs into ``root/cats`` and ``root/dogs`` (alternating).

    A folder written before with the same settings (recorded in ``root/.gpuaug-bench.json``)
    is reused as it is.

    Args:
        root: the folder to write; created if missing.
        num_images: how many images, >= 2.
        seed: seed of the generator that draws crops, sizes, jitter and JPEG quality.
        min_side: smallest length of an image's longer side, pixels (>= 16).
        max_side: largest length of an image's longer side, pixels (>= ``min_side``).
        progress: show a tqdm progress bar.

    Returns:
        What was written (sizes, mean file size, source photographs).

    Raises:
        ValueError: if ``num_images``, ``min_side`` or ``max_side`` is out of range.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 2:
        raise ValueError(f"`num_images` must be an int >= 2; got {num_images!r}")
    if min_side < 16:
        raise ValueError(f"`min_side` must be >= 16; got {min_side}")
    if max_side < min_side:
        raise ValueError(f"`max_side` must be >= `min_side` ({min_side}); got {max_side}")
    root = Path(root)
    spec = {"num_images": num_images, "seed": seed, "min_side": min_side, "max_side": max_side}
    spec_path = root / SPEC_FILE
    if spec_path.is_file():
        try:
            saved = json.loads(spec_path.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("spec") == spec:
            info = saved["info"]
            return FolderInfo(
                **{
                    **info,
                    "root": str(root),
                    "heights": tuple(info["heights"]),
                    "widths": tuple(info["widths"]),
                    "sources": tuple(info["sources"]),
                }
            )

    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    for name in CLASSES:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.jpg"):
            old.unlink()
    heights, widths, sizes = [], [], []
    for i in tqdm(range(num_images), desc="writing JPEGs", disable=not progress, leave=False):
        image = synthetic_image(rng, min_side=min_side, max_side=max_side)
        path = root / CLASSES[i % len(CLASSES)] / f"img_{i:05d}.jpg"
        Image.fromarray(image).save(path, quality=int(rng.integers(80, 96)))
        heights.append(image.shape[0])
        widths.append(image.shape[1])
        sizes.append(path.stat().st_size)

    def stats(values: list[int]) -> tuple[int, int, int]:
        return int(np.min(values)), int(np.median(values)), int(np.max(values))

    info = FolderInfo(
        root=str(root),
        num_images=num_images,
        seed=seed,
        min_side=min_side,
        max_side=max_side,
        heights=stats(heights),
        widths=stats(widths),
        mean_kib=round(float(np.mean(sizes)) / 1024, 1),
        sources=tuple(name for name, _ in sample_photos()) or ("procedural",),
    )
    spec_path.write_text(json.dumps({"spec": spec, "info": info.to_dict()}, indent=1))
    return info
