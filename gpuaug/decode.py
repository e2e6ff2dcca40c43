"""Batched JPEG decoding on the GPU (nvJPEG through ``torchvision.io.decode_jpeg``).

With ``decode="gpu"`` the loader's workers only read file bytes (:func:`read_file_bytes`) and,
for JPEGs, the EXIF orientation (:func:`jpeg_orientation`, a header read); the main process
decodes a whole batch at once with ``torchvision.io.decode_jpeg(list, device="cuda")``, turns
each image upright, and resizes it on the GPU (:func:`decode_jpeg_batch`). Files that are not
JPEGs (checked by their first bytes, not their name) are decoded on the CPU by the workers with
:func:`gpuaug.image.load_image`, as with ``decode="cpu"``; a JPEG that nvJPEG refuses (CMYK, a
rare subsampling, corrupt data) is retried with the CPU decoder, and only if that fails too is
it a bad file (``ImageLoadError``).

The pixels are close to, not identical with, the CPU path: libjpeg-turbo (PIL) and nvJPEG
round the inverse DCT and chroma upsampling differently (a few levels), and the GPU resize
(``torchvision.transforms.v2.functional.resize`` with ``antialias=True``) approximates PIL's
filters. Only ``"nearest"`` (exact: PIL's and torch's ``nearest-exact`` pick the same source
pixel), ``"bilinear"`` and ``"bicubic"`` exist on the GPU.

:func:`decode_jpeg_batch` also runs with ``device="cpu"`` (torchvision's CPU decoder), which is
how its plumbing is tested on machines without CUDA.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from gpuaug.image import ImageLoadError, _check_color_mode, load_image

__all__ = [
    "DECODERS",
    "GPU_INTERPOLATIONS",
    "apply_orientation",
    "check_decode",
    "decode_jpeg_batch",
    "is_jpeg",
    "jpeg_orientation",
    "read_file_bytes",
]

#: Allowed ``decode`` values.
DECODERS: tuple[str, ...] = ("cpu", "gpu")

#: Keras interpolation names that the GPU resize supports -> torchvision modes.
GPU_INTERPOLATIONS: dict[str, InterpolationMode] = {
    "nearest": InterpolationMode.NEAREST_EXACT,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}

_JPEG_MAGIC = b"\xff\xd8\xff"
_ORIENTATION_TAG = 0x0112


def check_decode(decode: str, interpolation: str, device: torch.device | str) -> None:
    """Validates a ``decode`` choice against the interpolation and device.

    Raises:
        ValueError: ``decode`` not in ``("cpu", "gpu")``; ``"gpu"`` without CUDA (or with a
            non-CUDA ``device``); ``"gpu"`` with an interpolation the GPU resize lacks.
    """
    if decode not in DECODERS:
        raise ValueError(f"`decode` must be 'cpu' or 'gpu'; got {decode!r}")
    if decode == "cpu":
        return
    if not torch.cuda.is_available():
        raise ValueError("decode='gpu' needs CUDA; torch.cuda.is_available() is False")
    if torch.device(device).type != "cuda":
        raise ValueError(f"decode='gpu' needs a CUDA `device`; got {str(device)!r}")
    if interpolation not in GPU_INTERPOLATIONS:
        raise ValueError(
            f"decode='gpu' resizes on the GPU, which supports `interpolation` "
            f"{', '.join(map(repr, GPU_INTERPOLATIONS))}; got {interpolation!r} "
            "(use decode='cpu' for PIL's filters)"
        )


def read_file_bytes(path: str | os.PathLike[str]) -> torch.Tensor:
    """The raw bytes of a file, as ``decode_jpeg`` takes them.

    Shape:
        -> ``(nbytes,)`` uint8, CPU.

    Raises:
        ImageLoadError: the file cannot be read, or is empty.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ImageLoadError(path, f"{type(exc).__name__}: {exc}") from exc
    if not data:
        raise ImageLoadError(path, "the file is empty (0 bytes)")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def is_jpeg(data: bytes | torch.Tensor) -> bool:
    """Whether the bytes start with a JPEG SOI marker (``FF D8 FF``), whatever the file name."""
    head = bytes(data[:3].tolist()) if isinstance(data, torch.Tensor) else bytes(data[:3])
    return head == _JPEG_MAGIC


def jpeg_orientation(data: bytes | torch.Tensor) -> int:
    """The EXIF orientation tag (1..8) of an encoded image; 1 when absent or unreadable.

    Reads the header only (PIL is lazy), tens of microseconds.
    """
    raw = data.numpy().tobytes() if isinstance(data, torch.Tensor) else bytes(data)
    try:
        with Image.open(io.BytesIO(raw)) as img:
            value = int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # no or broken EXIF: decode as stored, as PIL does
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turns a decoded image upright for its EXIF orientation (as ``PIL.ImageOps.exif_transpose``).

    Shape:
        ``(C, H, W)`` any dtype/device -> ``(C, H, W)`` or ``(C, W, H)``, same dtype/device.
    """
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1).flip(-2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return image.transpose(-1, -2).flip(-1)
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return image.transpose(-1, -2).flip(-2)
    return image


def _read_mode(color_mode: str) -> ImageReadMode:
    return ImageReadMode.GRAY if color_mode == "grayscale" else ImageReadMode.RGB


def _finish(
    image: torch.Tensor,
    orientation: int,
    target_size: tuple[int, int] | None,
    color_mode: str,
    mode: InterpolationMode,
) -> torch.Tensor:
    image = apply_orientation(image, orientation)
    if target_size is not None and tuple(image.shape[-2:]) != tuple(target_size):
        image = TF.resize(image, list(target_size), interpolation=mode, antialias=True)
    if color_mode == "rgba":  # JPEG has no alpha: opaque, as PIL's RGB -> RGBA
        alpha = torch.full_like(image[:1], 255)
        image = torch.cat([image, alpha])
    return image.contiguous()


def _decode(
    data: list[torch.Tensor], mode: ImageReadMode, device: torch.device
) -> list[torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's decoder notice
        out = decode_jpeg(data, mode=mode, device=device)
    return list(out)


def decode_jpeg_batch(
    data: Sequence[torch.Tensor],
    device: torch.device | str,
    target_size: tuple[int, int] | None,
    color_mode: str = "rgb",
    interpolation: str = "nearest",
    *,
    orientations: Sequence[int] | None = None,
    paths: Sequence[str] | None = None,
    on_error: str = "raise",
) -> list[torch.Tensor | ImageLoadError]:
    """Decodes a batch of JPEGs on ``device`` (nvJPEG on CUDA), upright and resized there.

    The whole list goes to ``decode_jpeg`` at once; if that fails, each image is retried alone,
    and one that still fails is decoded on the CPU from ``paths[i]`` with
    :func:`gpuaug.image.load_image` (CMYK and other JPEGs nvJPEG refuses). Only a file that
    the CPU cannot read either is an error.

    Args:
        data: the encoded files, e.g. from :func:`read_file_bytes`.
        device: where to decode and resize (``"cuda"``: nvJPEG; ``"cpu"``: libjpeg-turbo).
        target_size: ``(height, width)``, or ``None`` to keep each image's size.
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"`` (opaque alpha added).
        interpolation: ``"nearest"``, ``"bilinear"`` or ``"bicubic"``.
        orientations: EXIF orientation per image (:func:`jpeg_orientation`); default all 1.
        paths: the files, for the CPU fallback and error messages.
        on_error: ``"raise"`` (an ``ImageLoadError`` naming the file) or ``"return"`` (the
            ``ImageLoadError`` takes that image's place in the result, for the caller's policy).

    Returns:
        One ``(C, H, W)`` uint8 tensor on ``device`` per input (an ``ImageLoadError`` where
        ``on_error="return"`` and the file is unreadable).

    Shape:
        ``data``: list of ``(nbytes,)`` uint8 CPU -> list of ``(C, H, W)`` uint8 on ``device``.

    Raises:
        ValueError: an interpolation the GPU resize lacks, a bad ``color_mode`` or ``on_error``,
            or ``orientations``/``paths`` of the wrong length.
        ImageLoadError: a file neither decoder can read (``on_error="raise"``).
    """
    _check_color_mode(color_mode)
    if interpolation not in GPU_INTERPOLATIONS:
        raise ValueError(
            f"`interpolation` must be one of {', '.join(map(repr, GPU_INTERPOLATIONS))} for "
            f"GPU decoding; got {interpolation!r}"
        )
    if on_error not in ("raise", "return"):
        raise ValueError(f"`on_error` must be 'raise' or 'return'; got {on_error!r}")
    data = list(data)
    n = len(data)
    if orientations is None:
        orientations = [1] * n
    for name, seq in (("orientations", orientations), ("paths", paths)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"`{name}` must have one entry per image ({n}); got {len(seq)}")
    if n == 0:
        return []
    device = torch.device(device)
    mode = _read_mode(color_mode)
    resize_mode = GPU_INTERPOLATIONS[interpolation]
    decoded: list[torch.Tensor | None]
    try:
        decoded = list(_decode(data, mode, device))
    except RuntimeError:
        decoded = []
        for one in data:
            try:
                decoded.append(_decode([one], mode, device)[0])
            except RuntimeError:
                decoded.append(None)
    out: list[torch.Tensor | ImageLoadError] = []
    for i, image in enumerate(decoded):
        if image is not None:
            out.append(_finish(image, orientations[i], target_size, color_mode, resize_mode))
            continue
        path = paths[i] if paths is not None else f"<image {i} of the batch>"
        try:
            if paths is None:
                raise ImageLoadError(path, "decode_jpeg failed and no path to retry on the CPU")
            cpu = load_image(path, target_size, color_mode, interpolation)
        except ImageLoadError as exc:
            if on_error == "raise":
                raise
            out.append(exc)
            continue
        out.append(cpu.to(device))
    return out
