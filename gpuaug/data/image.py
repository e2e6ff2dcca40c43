"""Decoding one image file into a uint8 tensor, the way Keras' ``load_img`` does.

``load_image`` opens a file with PIL, applies its EXIF orientation, converts it to the
requested colour mode, resizes it to ``target_size`` with a PIL filter named as in Keras and
returns a contiguous ``uint8`` tensor ``(C, H, W)``. Without an EXIF orientation tag the
pixels are exactly those of ``keras.utils.load_img(path, color_mode, target_size,
interpolation)`` (same PIL calls, same order: open -> convert -> resize), with these
deliberate differences:

- **EXIF orientation is applied** (Keras ignores it, so a portrait phone photo comes out
  lying on its side there).
- **16-bit images become 8-bit**: a 16-bit or 32-bit integer grayscale image (PIL modes
  ``I;16*`` and ``I``) is clipped to ``[0, 65535]`` and scaled by 1/257 with rounding
  (65535 -> 255, 32896 -> 128), for every colour mode. Keras keeps ``I;16`` values as they
  are for ``grayscale`` and lets PIL clip them to 255 for ``rgb``/``rgba`` (a white image).
  Pillow itself decodes 16-bit RGB(A) PNGs to 8 bits by keeping the high byte; that is
  what both libraries get.
- **Palette images with transparency** are converted through RGBA (the same pixels, without
  Pillow's "Palette images with Transparency" warning).

Alpha is dropped, not composited, when an image with transparency is read as ``rgb`` or
``grayscale`` (as Keras, torchvision and PIL's ``convert`` do). Multi-frame files (GIF, TIFF)
give their first frame.

Errors: every failure is an :class:`ImageLoadError` naming the file and the reason.
:func:`check_image_header` is the cheap check (PIL reads the header only: it catches
zero-byte, non-image and unknown-format files, zero-sized images and decompression bombs);
:func:`load_image` decodes the pixels and so also catches truncated or corrupt data. An image
with more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (89,478,485 by default) is refused as a
possible decompression bomb; set ``PIL.Image.MAX_IMAGE_PIXELS`` higher (or to ``None``) to
accept larger trusted files. Setting ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` makes
truncated files load (grey-filled) instead of failing, as in PIL.
"""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps

__all__ = [
    "COLOR_MODES",
    "IMAGE_EXTENSIONS",
    "INTERPOLATIONS",
    "KERAS_IMAGE_EXTENSIONS",
    "ImageLoadError",
    "aspect_crop_box",
    "capped_size",
    "check_image_header",
    "check_max_side",
    "decode_check",
    "load_image",
    "open_image",
    "pil_to_mode",
    "pil_to_tensor",
]

#: File extensions (lower case, no dot) indexed by default, matched case-insensitively.
#: A superset of Keras' list: Keras does not read ``gif`` and ``webp``.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    "png",
    "jpg",
    "jpeg",
    "bmp",
    "ppm",
    "tif",
    "tiff",
    "gif",
    "webp",
)

#: The extensions Keras' ``flow_from_directory`` indexes (``DirectoryIterator.white_list_formats``).
KERAS_IMAGE_EXTENSIONS: tuple[str, ...] = ("png", "jpg", "jpeg", "bmp", "ppm", "tif", "tiff")

#: Keras interpolation names -> PIL resampling filters (``keras.utils.load_img``).
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}

#: Keras colour modes -> number of channels of the decoded tensor.
COLOR_MODES: dict[str, int] = {"grayscale": 1, "rgb": 3, "rgba": 4}

_PIL_MODE = {"grayscale": "L", "rgb": "RGB", "rgba": "RGBA"}
_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_ORIENTATION_TAG = ExifTags.Base.Orientation


class ImageLoadError(RuntimeError):
    """A file that cannot be read as an image.

    Attributes:
        path: the file.
        reason: why it failed (e.g. ``"cannot identify image file"``, ``"image file is
            truncated"``).

    When re-raised from a ``DataLoader`` worker process, torch rebuilds the exception from
    its message alone, so ``path`` then holds the whole message and ``reason`` is ``None``.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str | None = None) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        message = self.path if reason is None else f"cannot read image file '{self.path}': {reason}"
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def _check_color_mode(color_mode: str) -> None:
    if color_mode not in COLOR_MODES:
        raise ValueError(
            f"`color_mode` must be one of {', '.join(map(repr, COLOR_MODES))}; got {color_mode!r}"
        )


def _check_interpolation(interpolation: str) -> None:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"`interpolation` must be one of {', '.join(map(repr, INTERPOLATIONS))}; "
            f"got {interpolation!r}"
        )


def _check_target_size(target_size) -> tuple[int, int] | None:
    if target_size is None:
        return None
    if not isinstance(target_size, (tuple, list)) or len(target_size) != 2:
        raise TypeError(
            f"`target_size` must be a (height, width) pair or None; got {target_size!r}"
        )
    for v in target_size:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(
                f"`target_size` must hold two ints (height, width); got {target_size!r}"
            )
        if v < 1:
            raise ValueError(
                f"`target_size` must hold two positive ints (height, width); got {target_size!r}"
            )
    return int(target_size[0]), int(target_size[1])


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _bomb_reason(width: int, height: int) -> str | None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return (
            f"{width}x{height} = {width * height} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS = "
            f"{limit} (possible decompression bomb); raise that limit if the file is trusted"
        )
    return None


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words (for error messages)."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO / named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "not a plain file")


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Opens an image file and reads its header only (PIL is lazy); pixels are not decoded.

    Args:
        path: the image file.

    Returns:
        The open ``PIL.Image.Image``; the caller closes it (use it as a context manager).

    Raises:
        ImageLoadError: the file is missing, not a regular file (a FIFO, a device, a folder:
            never opened, since a FIFO would block), empty, not an image PIL can identify,
            has a zero width or height, or has more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            # Opening a FIFO would block until a writer comes; a device could be endless.
            raise ImageLoadError(path, f"not a regular file ({_file_kind(st.st_mode)})")
        if st.st_size == 0:
            raise ImageLoadError(path, "the file is empty (0 bytes)")
        img = Image.open(path)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"possible decompression bomb: {exc}") from exc
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        reason = _reason(exc)
        if os.path.basename(path).startswith("._"):
            reason += " (a '._*' file is macOS metadata, not an image)"
        raise ImageLoadError(path, reason) from exc
    width, height = img.size
    problem = _bomb_reason(width, height)
    if problem is None and (width < 1 or height < 1):
        problem = f"the image has a zero width or height ({width}x{height})"
    if problem is not None:
        img.close()
        raise ImageLoadError(path, problem)
    return img


def check_image_header(path: str | os.PathLike[str]) -> None:
    """Checks that a file has a readable image header, without decoding its pixels.

    Cheap (tens of microseconds for a JPEG): it catches zero-byte, non-image and
    unknown-format files, zero-sized images and decompression bombs, but not truncated or
    corrupt pixel data (:func:`load_image` finds those).

    Args:
        path: the image file.

    Raises:
        ImageLoadError: naming the file and the reason.
    """
    open_image(path).close()


def _to_8bit_grayscale(img: Image.Image) -> Image.Image:
    """16/32-bit integer grayscale -> 8-bit "L": clip to [0, 65535], scale by 1/257, round."""
    arr = np.asarray(img).astype(np.int64)
    arr = (np.clip(arr, 0, 65535) + 128) // 257
    return Image.fromarray(arr.astype(np.uint8), mode="L")


def pil_to_mode(img: Image.Image, color_mode: str) -> Image.Image:
    """Converts a PIL image to ``"L"``, ``"RGB"`` or ``"RGBA"`` for a Keras colour mode.

    Same result as Keras' ``load_img`` conversions (``img.convert(mode)``) except: 16-bit and
    32-bit integer grayscale images are scaled to 8 bits (``round(v / 257)``, clipped to
    ``[0, 65535]`` first) instead of being kept (grayscale) or clipped at 255 (rgb, rgba);
    palette images with transparency go through RGBA (same pixels, no PIL warning). Alpha is
    dropped, not composited, for ``rgb`` and ``grayscale``.

    Args:
        img: any PIL image (palette, LA, CMYK, 16-bit, with alpha, ...).
        color_mode: ``"grayscale"``, ``"rgb"`` or ``"rgba"``.

    Returns:
        A PIL image in mode ``"L"``, ``"RGB"`` or ``"RGBA"`` (``img`` itself if already so).

    Raises:
        ValueError: unknown ``color_mode``, or PIL cannot convert from ``img.mode``.
    """
    _check_color_mode(color_mode)
    target = _PIL_MODE[color_mode]
    if img.mode == target:
        return img
    if img.mode in _HIGH_BIT_DEPTH_MODES:
        img = _to_8bit_grayscale(img)
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == target else img.convert(target)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """An ``L``/``RGB``/``RGBA`` PIL image as a contiguous uint8 tensor.

    Shape:
        ``(H, W)`` image -> ``(C, H, W)`` uint8, CPU, contiguous (C = 1, 3 or 4).
    """
    arr = np.asarray(img)
    chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.array(chw, dtype=np.uint8, order="C", copy=True))


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright); unreadable EXIF counts as upright, as in Keras."""
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:
        return 1


def aspect_crop_box(
    size: tuple[int, int], target_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The centred box of an image with ``target_size``'s aspect ratio, as Keras' ``load_img``.

    Keras' ``keep_aspect_ratio=True``: the largest centred crop whose width / height ratio is
    the target's (integer arithmetic, Keras' exact rounding), which the resize then maps onto
    ``target_size``, so nothing is stretched.

    Args:
        size: the image's ``(width, height)`` (PIL's order).
        target_size: ``(height, width)`` (Keras' order).

    Returns:
        ``(left, upper, right, lower)`` for ``PIL.Image.resize(..., box=...)``.
    """
    width, height = size
    target_height, target_width = target_size
    crop_height = min(height, (width * target_height) // target_width)
    crop_width = min(width, (height * target_width) // target_height)
    left = (width - crop_width) // 2
    upper = (height - crop_height) // 2
    return (left, upper, left + crop_width, upper + crop_height)


def _draft(img: Image.Image, target_size: tuple[int, int]) -> None:
    """Ask a JPEG for the smallest DCT scale that keeps it >= ``target_size`` once upright."""
    if img.format != "JPEG":
        return
    height, width = target_size
    if _orientation(img) in (5, 6, 7, 8):  # EXIF turns it a quarter: the file's axes swap
        height, width = width, height
    img.draft(None, (width, height))


def check_max_side(max_side: int | None, target_size: tuple[int, int] | None) -> int | None:
    """``max_side`` checked: ``None``, or an int >= 1 with ``target_size=None``.

    Raises:
        TypeError: not an int.
        ValueError: ``max_side <= 0``, or given with a ``target_size`` (the image is then
            resized to that size and ``max_side`` would mean nothing).
    """
    if max_side is None:
        return None
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)):
        raise TypeError(f"`max_side` must be an int (pixels) or None; got {max_side!r}")
    if max_side <= 0:
        raise ValueError(f"`max_side` must be a positive number of pixels; got {max_side!r}")
    if target_size is not None:
        raise ValueError(
            f"`max_side`={max_side!r} caps the long side of images kept at their own size; it "
            f"needs target_size=None (got target_size={tuple(target_size)!r})"
        )
    return int(max_side)


def capped_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(width, height)`` with the long side brought down to ``max_side`` (the short side
    ``max(1, round(short * max_side / long))``); unchanged when the long side fits."""
    long_side = max(width, height)
    if long_side <= max_side:
        return width, height
    scale = max_side / long_side
    if width >= height:
        return max_side, max(1, round(height * scale))
    return max(1, round(width * scale)), max_side


def load_image(
    path: str | os.PathLike[str],
    target_size: tuple[int, int] | None,
    color_mode: str = "rgb",
    interpolation: str = "nearest",
    keep_aspect_ratio: bool = False,
    draft: bool = False,
    max_side: int | None = None,
) -> torch.Tensor:
    """Decodes an image file to a uint8 tensor, resized as Keras' ``load_img`` does.

    Steps: open -> decode -> EXIF orientation -> :func:`pil_to_mode` -> ``img.resize((w, h),
    filter)`` (of the centred crop with ``keep_aspect_ratio``) when the size differs from
    ``target_size``. No augmentation.

    ``draft=True`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
    ``PIL.Image.draft``) when the file is at least twice ``target_size`` on both sides; the
    scaled decode stays at least ``target_size``, and the resize does the rest. On 2-12
    megapixel photos resized to 150 x 150 and 256 x 256 decode + resize was 1.5x to 11x faster
    (more for larger files; measured on a loaded 2-core machine: ``python -m
    benchmarks.decode_draft``). It changes pixels beyond what a resize does (the DCT scaling
    averages blocks first): against the plain path, bilinear resizes differ by 0.2-0.6 grey
    levels on average (at most 4-28), nearest by about 2.5 on average (at most 125: nearest
    picks other source pixels). Hence opt-in; other formats ignore it.

    Args:
        path: the image file.
        target_size: ``(height, width)`` to resize to, or ``None`` to keep the file's size.
        color_mode: ``"rgb"`` (3 channels), ``"grayscale"`` (1) or ``"rgba"`` (4).
        interpolation: PIL filter by its Keras name: ``"nearest"`` (Keras' default),
            ``"bilinear"``, ``"bicubic"``, ``"lanczos"``, ``"box"`` or ``"hamming"``.
        keep_aspect_ratio: crop the centre of the image to ``target_size``'s aspect ratio
            before resizing (Keras' ``keep_aspect_ratio=True``; :func:`aspect_crop_box`),
            instead of stretching it. No effect without ``target_size``.
        draft: decode a large JPEG at a reduced scale first (see above); off by default.
            With ``max_side``, the scale kept is the smallest whose long side is still
            ``>= max_side``.
        max_side: with ``target_size=None``: an image whose long side is longer is resized
            (``interpolation``) so that its long side is ``max_side``, keeping its aspect
            ratio (:func:`capped_size`); smaller images keep their size.

    Returns:
        The image, contiguous and ready for pinned memory.

    Shape:
        file -> ``(C, H, W)`` uint8, CPU; ``(H, W) = target_size`` when given.

    Raises:
        ValueError: bad ``color_mode`` or ``interpolation``; ``max_side <= 0`` or given with
            a ``target_size``.
        TypeError: ``target_size`` is not a pair of ints.
        ImageLoadError: the file cannot be opened or decoded (missing, empty, not an image,
            truncated, corrupt, decompression bomb, unsupported mode); names the file.
    """
    target_size = _check_target_size(target_size)
    _check_color_mode(color_mode)
    _check_interpolation(interpolation)
    if not isinstance(keep_aspect_ratio, bool):
        raise TypeError(f"`keep_aspect_ratio` must be a bool; got {keep_aspect_ratio!r}")
    max_side = check_max_side(max_side, target_size)
    with open_image(path) as img:
        return _decode_opened(
            img, path, target_size, color_mode, interpolation, keep_aspect_ratio, draft, max_side
        )


def _decode_opened(
    img: Image.Image,
    name: str | os.PathLike[str],
    target_size: tuple[int, int] | None,
    color_mode: str,
    interpolation: str,
    keep_aspect_ratio: bool,
    draft: bool,
    max_side: int | None = None,
) -> torch.Tensor:
    """:func:`load_image`'s steps after the header: decode, orient, convert, resize."""
    try:
        if draft and target_size is not None:
            _draft(img, target_size)
        elif draft and max_side is not None and img.format == "JPEG":
            img.draft(None, capped_size(*img.size, max_side))  # the file's axes: no turn needed
        img.load()
        out = img
        if _orientation(out) in range(2, 9):
            out = ImageOps.exif_transpose(out)
        out = pil_to_mode(out, color_mode)
        if target_size is not None:
            size = (target_size[1], target_size[0])
            if out.size != size:
                box = aspect_crop_box(out.size, target_size) if keep_aspect_ratio else None
                out = out.resize(size, INTERPOLATIONS[interpolation], box=box)
        elif max_side is not None:
            size = capped_size(*out.size, max_side)
            if out.size != size:
                out = out.resize(size, INTERPOLATIONS[interpolation])
        return pil_to_tensor(out)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib.error...
        raise ImageLoadError(name, _reason(exc)) from exc


def load_image_bytes(
    data: bytes,
    name: str,
    target_size: tuple[int, int] | None,
    color_mode: str = "rgb",
    interpolation: str = "nearest",
) -> torch.Tensor:
    """:func:`load_image` of an encoded image held in memory (a tar shard's member).

    Args:
        data: the encoded file (JPEG, PNG, ...).
        name: what error messages call it (``"shard-000.tar:key.jpg"``).
        target_size, color_mode, interpolation: as :func:`load_image`.

    Shape:
        bytes -> ``(C, H, W)`` uint8, CPU.

    Raises:
        ImageLoadError: empty, not an image, truncated, corrupt, a decompression bomb; names
            ``name``.
    """
    target_size = _check_target_size(target_size)
    _check_color_mode(color_mode)
    _check_interpolation(interpolation)
    if not data:
        raise ImageLoadError(name, "the file is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(name, f"possible decompression bomb: {exc}") from exc
    except Exception as exc:
        raise ImageLoadError(name, _reason(exc)) from exc
    with img:
        width, height = img.size
        problem = _bomb_reason(width, height)
        if problem is None and (width < 1 or height < 1):
            problem = f"the image has a zero width or height ({width}x{height})"
        if problem is not None:
            raise ImageLoadError(name, problem)
        return _decode_opened(img, name, target_size, color_mode, interpolation, False, False)


def decode_check(path: str | os.PathLike[str], color_mode: str = "rgb") -> None:
    """Fully decodes a file and converts it to ``color_mode`` (no resize), to find bad data.

    Raises:
        ImageLoadError: as :func:`load_image`.
    """
    with open_image(path) as img:
        try:
            img.load()
            pil_to_mode(img, color_mode)
        except Exception as exc:
            raise ImageLoadError(path, _reason(exc)) from exc
