"""JPEG files, checked without decoding: what the workers do for ``decode="gpu"``.

With ``decode="gpu"`` the loader's workers only read a file's bytes (:func:`read_file_bytes`)
and check its structure and header (:func:`inspect_jpeg`: start and end markers, frame header,
PIL header, EXIF orientation), which is cheap; :func:`read_gpu_jpeg` routes each file: a
broken JPEG is a failure record from the worker, a JPEG that nvJPEG cannot decode (CMYK,
arithmetic coding, 12-bit) and every non-JPEG file are decoded on the CPU by the worker, and
the rest go to the batched decode (`gpuaug.data.nvjpeg`).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import torch
from PIL import Image, ImageFile

from gpuaug.data.image import ImageLoadError, _bomb_reason, _reason

__all__ = [
    "JpegInfo",
    "inspect_jpeg",
    "is_jpeg",
    "jpeg_orientation",
    "jpeg_problem",
    "read_file_bytes",
    "read_gpu_jpeg",
]

_JPEG_MAGIC = b"\xff\xd8\xff"
_ORIENTATION_TAG = 0x0112
# Frame headers (SOF0..SOF15 but DHT C4, JPG C8, DAC CC); nvJPEG decodes the Huffman-coded
# baseline, extended-sequential and progressive ones, 8-bit, with 1 or 3 components.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_NVJPEG_SOF = frozenset({0xC0, 0xC1, 0xC2})
_SOS, _EOI = 0xDA, 0xD9
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0..7: no length field


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


def _as_bytes(data: bytes | bytearray | torch.Tensor) -> bytes | bytearray:
    return data.numpy().tobytes() if isinstance(data, torch.Tensor) else data


def is_jpeg(data: bytes | torch.Tensor) -> bool:
    """Whether the bytes start with a JPEG SOI marker (``FF D8 FF``), whatever the file name."""
    head = bytes(data[:3].tolist()) if isinstance(data, torch.Tensor) else bytes(data[:3])
    return head == _JPEG_MAGIC


@dataclass(frozen=True)
class _Frame:
    """What the marker walk finds before the first scan."""

    sof: int  # the frame marker (0xC0 baseline, 0xC2 progressive, ...)
    precision_bits: int
    height_px: int
    width_px: int
    components: int
    scan_start: int  # byte offset of the first scan's entropy-coded data


def _walk_jpeg(raw: bytes | bytearray | memoryview) -> _Frame | str:
    """Walks the marker segments from SOI to the first SOS; a reason string if malformed."""
    n = len(raw)
    if raw[:2] != b"\xff\xd8":
        return "not a JPEG: no start-of-image marker (FF D8)"
    pos, frame = 2, None
    while True:
        if pos >= n:
            return "truncated: the JPEG header ends before the image data"
        if raw[pos] != 0xFF:
            return f"corrupt JPEG header: no marker at byte {pos}"
        while pos < n and raw[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            return "truncated: the JPEG header ends before the image data"
        marker = raw[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker == _EOI:
            return "corrupt JPEG: end-of-image marker before any image data"
        if pos + 2 > n:
            return "truncated: the JPEG header ends before the image data"
        length = (raw[pos] << 8) | raw[pos + 1]
        if length < 2 or pos + length > n:
            return "truncated or corrupt JPEG header (a segment runs past the end of the file)"
        if marker in _SOF_MARKERS and length >= 8:
            frame = (
                marker,
                raw[pos + 2],
                (raw[pos + 3] << 8) | raw[pos + 4],
                (raw[pos + 5] << 8) | raw[pos + 6],
                raw[pos + 7],
            )
        if marker == _SOS:
            if frame is None:
                return "corrupt JPEG: image data before the frame header (SOF)"
            return _Frame(*frame, scan_start=pos + length)
        pos += length


def _check_structure(raw: bytes | bytearray) -> tuple[_Frame | None, str | None]:
    frame = _walk_jpeg(raw)
    if isinstance(frame, str):
        return None, frame
    if frame.width_px < 1 or frame.height_px < 1:
        return frame, f"the image has a zero width or height ({frame.width_px}x{frame.height_px})"
    if not ImageFile.LOAD_TRUNCATED_IMAGES and raw.rfind(b"\xff\xd9", frame.scan_start) < 0:
        return frame, "truncated: no end-of-image marker (FF D9) after the image data"
    return frame, None


def jpeg_problem(data: bytes | bytearray | torch.Tensor) -> str | None:
    """Why a JPEG file is broken, from its bytes; ``None`` when its structure is sound.

    Hardware decoders return grey or garbage blocks for truncated data instead of failing, so
    the loader's workers call this on every JPEG with ``decode="gpu"``: the file must start
    with SOI, its header segments up to the first scan must be well formed (frame header
    before the scan, no segment running past the end) and an end-of-image marker (``FF D9``)
    must follow the first scan (entropy-coded data cannot contain ``FF D9``, so this is the
    end of the image, or of a later scan's data). PIL refuses exactly these truncated files
    (``"image file is truncated"``, even when only the final marker is missing), unless
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is set, which this check follows too. Corrupt bits
    inside complete scan data pass, as with PIL (libjpeg only warns). Microseconds: a marker
    walk over the header and one ``rfind``.
    """
    return _check_structure(_as_bytes(data))[1]


@dataclass(frozen=True)
class JpegInfo:
    """The worker-side verdict on one JPEG (:func:`inspect_jpeg`).

    Attributes:
        problem: why the file is broken (``decode="cpu"`` refuses it too), or ``None``.
        gpu: nvJPEG can decode it (8-bit Huffman baseline/extended/progressive, 1 or 3
            components); ``False``: decode it on the CPU (CMYK, arithmetic coding, 12-bit).
        orientation: EXIF orientation 1..8 (1 when absent or unreadable).
        height_px, width_px: the stored size (before orientation), for the pixel budget.
    """

    problem: str | None
    gpu: bool
    orientation: int
    height_px: int = 0
    width_px: int = 0


def inspect_jpeg(data: bytes | bytearray | torch.Tensor) -> JpegInfo:
    """Checks a JPEG's structure (:func:`jpeg_problem`) and header (PIL, lazy), in a worker.

    The header check is the one :func:`gpuaug.data.image.open_image` makes with ``decode="cpu"``
    (identify, zero size, ``PIL.Image.MAX_IMAGE_PIXELS``), so both decode modes skip the same
    files. Tens of microseconds; no pixel is decoded.
    """
    raw = _as_bytes(data)
    frame, problem = _check_structure(raw)
    if frame is None or problem is not None:
        return JpegInfo(problem, False, 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # -> problem below
            img = Image.open(io.BytesIO(raw))
        with img:
            problem = _bomb_reason(*img.size)
            orientation = _exif_orientation(img)
    except Image.DecompressionBombError as exc:
        return JpegInfo(f"possible decompression bomb: {exc}", False, 1)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError...
        return JpegInfo(_reason(exc), False, 1)
    gpu = frame.sof in _NVJPEG_SOF and frame.precision_bits == 8 and frame.components in (1, 3)
    return JpegInfo(problem, gpu and problem is None, orientation, frame.height_px, frame.width_px)


def read_gpu_jpeg(path: str | os.PathLike[str]) -> tuple[torch.Tensor, JpegInfo] | None:
    """What a ``decode="gpu"`` worker does with a file: its bytes for nvJPEG, or ``None``.

    Returns ``(bytes, info)`` for a sound JPEG nvJPEG can decode; ``None`` for any other
    file (not a JPEG, whatever its name; or a JPEG only the CPU decodes, e.g. CMYK): the
    worker then decodes it with PIL as with ``decode="cpu"``.

    Shape:
        -> ``(nbytes,)`` uint8, CPU, and a :class:`JpegInfo`.

    Raises:
        ImageLoadError: the file cannot be read, is empty, or is a broken JPEG
            (:func:`inspect_jpeg`); the reason names the problem.
    """
    path = os.fspath(path)
    data = read_file_bytes(path)
    if not is_jpeg(data):
        return None
    info = inspect_jpeg(data)
    if info.problem is not None:
        raise ImageLoadError(path, info.problem)
    return (data, info) if info.gpu else None


def _exif_orientation(img: Image.Image) -> int:
    try:
        value = int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # no or broken EXIF: decode as stored, as PIL does
        return 1
    return value if 1 <= value <= 8 else 1


def jpeg_orientation(data: bytes | torch.Tensor) -> int:
    """The EXIF orientation tag (1..8) of an encoded image; 1 when absent or unreadable.

    Reads the header only (PIL is lazy), tens of microseconds.
    """
    try:
        with Image.open(io.BytesIO(_as_bytes(data))) as img:
            return _exif_orientation(img)
    except Exception:
        return 1
