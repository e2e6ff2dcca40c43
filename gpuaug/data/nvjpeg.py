"""Batched JPEG decoding on the GPU (nvJPEG through ``torchvision.io.decode_jpeg``).

With ``decode="gpu"`` the loader's workers only read file bytes and check each JPEG
(`gpuaug.data.jpeg`): a broken JPEG is a failure record from the worker, as with
``decode="cpu"``; a JPEG that nvJPEG cannot decode and every non-JPEG file are decoded on the
CPU by the worker. The main process decodes the remaining JPEGs of a batch with a
:class:`JpegDecoder`: one background thread and its own CUDA stream, so batch ``k + 1`` is
decoded while batch ``k`` trains (:meth:`JpegDecoder.submit` / :meth:`DecodeJob.result`).

How a batch is decoded (:func:`decode_jpegs`):

- **Pixel budget.** The batch is cut into chunks of consecutive images whose decoded
  full-resolution pixels stay under ``pixel_budget`` (an image larger than the budget is a
  chunk of its own); each chunk is one ``decode_jpeg`` call, and its full-resolution images
  are freed once they are resized, so 256 x 12 MP photos never sit in GPU memory at once.
- **Batched orientation and resize.** The images of a chunk are grouped by (stored size,
  EXIF orientation); each group is stacked, turned upright and resized in one call. A chunk of
  same-sized photos is one resize whatever the batch size; the number of calls is the number
  of distinct (size, orientation) pairs, never one per image unless every image differs.
- **Failures.** A chunk whose ``decode_jpeg`` call fails is split in halves and each half
  retried (bisection: about ``2 log2(n)`` extra calls to find one bad image, not ``n``); an
  image that fails alone is decoded on the CPU from its path with ``load_image`` on the
  decoder's thread, and only if that fails too is it a bad file (``ImageLoadError``). The
  worker-side check makes this path rare.
- **Out of memory** is never taken for a bad file: it is re-raised as
  ``torch.OutOfMemoryError`` saying what to change (``pixel_budget``, ``batch_size``,
  ``decode="cpu"``).

The pixels are close to, not identical with, the CPU path: libjpeg-turbo (PIL) and nvJPEG
round the inverse DCT and chroma upsampling differently (a few grey levels), and the GPU
resize differs from PIL's ``Image.resize``: ``torch.nn.functional.interpolate`` with
``antialias=True`` uses PIL's filters and support (a triangle for ``"bilinear"``, ``a = -0.5``
cubic for ``"bicubic"``, widened by the downscale factor) but, on the GPU, computes both
passes in float32 and rounds once, where PIL rounds and clips to 0..255 between its
horizontal and vertical pass. Measured on a 1200 x 900 photo against PIL: ``"bilinear"`` at
most 1 grey level apart; ``"bicubic"`` up to 6 (the cubic's overshoot that PIL clips after
the first pass); ``"nearest"`` (torch's ``nearest-exact``) picks PIL's source pixel except
where the sampling position falls exactly on a pixel boundary, where floating-point rounding
may pick the neighbour (177 of 1500 columns for 1200 -> 1500, 1 of 37 for 100 -> 37). Only
these three filters exist on the GPU.

:func:`decode_jpegs` and :func:`decode_jpeg_batch` also run with ``device="cpu"``
(torchvision's CPU decoder), which is how their plumbing is tested without CUDA.

Why one module (over 600 lines): chunking by pixel budget, bisection of failed chunks, the
out-of-memory message and the decoder thread are one pipeline around one decode call.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from gpuaug.data.image import ImageLoadError, _check_color_mode, capped_size, load_image
from gpuaug.data.jpeg import _Frame, _walk_jpeg
from gpuaug.data.pixel_layout import LAYOUTS, empty_batch
from gpuaug.device import host_to_device

__all__ = [
    "DECODERS",
    "DEFAULT_PIXEL_BUDGET",
    "GPU_INTERPOLATIONS",
    "DecodeJob",
    "DecodedJpegs",
    "JpegDecoder",
    "apply_orientation",
    "check_decode",
    "decode_jpeg_batch",
    "decode_jpegs",
]

#: torchvision 0.29 deprecates its image decoders in favour of TorchCodec's, with a
#: ``DeprecationWarning`` at every call. gpuaug's users did not call it and cannot act on it
#: (``-W error`` would even turn it into a failed decode), so this one message, from this one
#: module, is ignored; the replacement is planned in the documentation ("GPU JPEG decoding").
_DEPRECATION_FILTER = dict(
    action="ignore",
    message=r"The image decoding and encoding capabilities of TorchVision are deprecated",
    category=DeprecationWarning,
    module=r"torchvision\.io\.image",
)
warnings.filterwarnings(**_DEPRECATION_FILTER)  # type: ignore[arg-type]

#: Allowed ``decode`` values.
DECODERS: tuple[str, ...] = ("cpu", "gpu")

#: Keras interpolation names that the GPU resize supports -> torchvision modes.
GPU_INTERPOLATIONS: dict[str, InterpolationMode] = {
    "nearest": InterpolationMode.NEAREST_EXACT,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}

#: Decoded full-resolution pixels per ``decode_jpeg`` call. 64 MP is 192 MB of RGB; while a
#: same-size group is turned upright and resized, its stacked and flipped uint8 copies and the
#: float32 copy the resize makes bring the peak to at most 7 bytes per decoded value (1.3 GB).
#: 256 ImageNet-sized photos are one call; 12 MP photos go 5 at a time.
DEFAULT_PIXEL_BUDGET: int = 64_000_000


def check_decode(
    decode: str,
    interpolation: str,
    device: torch.device | str,
    *,
    keep_aspect_ratio: bool = False,
    draft: bool = False,
) -> None:
    """Validates a ``decode`` choice against the data set's loading options and the device.

    Raises:
        ValueError: ``decode`` not in ``("cpu", "gpu")``; ``"gpu"`` with ``keep_aspect_ratio``
            (nvJPEG resizes the whole image) or ``draft`` (nvJPEG decodes full size), without
            CUDA (or with a non-CUDA ``device``), or with an interpolation the GPU resize lacks.
    """
    if decode not in DECODERS:
        raise ValueError(f"`decode` must be 'cpu' or 'gpu'; got {decode!r}")
    if decode == "cpu":
        return
    if keep_aspect_ratio:
        raise ValueError("`keep_aspect_ratio`=True needs decode='cpu'; got decode='gpu'")
    if draft:
        raise ValueError("`draft`=True needs decode='cpu' (nvJPEG decodes full size); got 'gpu'")
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


def apply_orientation(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turns decoded images upright for an EXIF orientation (as ``PIL.ImageOps.exif_transpose``).

    Shape:
        ``(..., C, H, W)`` any dtype/device -> ``(..., C, H, W)`` or ``(..., C, W, H)``, same
        dtype/device (one image or a stack of same-size images with the same orientation).
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


# ---------------------------------------------------------------------- main-process side
def _read_mode(color_mode: str) -> ImageReadMode:
    return ImageReadMode.GRAY if color_mode == "grayscale" else ImageReadMode.RGB


def _decode(
    data: list[torch.Tensor], mode: ImageReadMode, device: torch.device
) -> list[torch.Tensor]:
    """The one call of ``torchvision.io.decode_jpeg`` (tests replace it with a fake).

    torchvision 0.29 warns at every call that its decoders are deprecated (in favour of
    TorchCodec's). That warning is ignored by the filter `_DEPRECATION_FILTER` installs at
    import: no ``warnings.catch_warnings`` here, since it swaps the process's filters, which
    races with the training thread's own warnings when this runs on the decoder thread.
    """
    return list(decode_jpeg(data, mode=mode, device=device))


def _resize(images: torch.Tensor, size: list[int], mode: InterpolationMode) -> torch.Tensor:
    """One batched resize of same-size images (tests count its calls)."""
    return TF.resize(images, size, interpolation=mode, antialias=True)


def _is_oom(exc: BaseException) -> bool:
    # torchvision's nvJPEG op catches the allocator's OutOfMemoryError and re-raises it as a
    # plain RuntimeError("Error while decoding JPEG images: CUDA out of memory ..."): test
    # the text as well as the type.
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _wait_for(stream: torch.cuda.Stream | None) -> None:
    """Blocks this (decoder) thread until ``stream``'s queued work is done.

    torchvision allocates ``decode_jpeg``'s outputs with ``torch::empty`` on the caller's
    current stream (here ``stream``) but has nvJPEG write them on its own internal stream,
    which does not wait for ours (it only makes our stream wait for it afterwards). The caching
    allocator hands a block freed on our stream straight back for a new allocation on it,
    while kernels queued on it may still read that block: the previous chunk's images, freed
    right after their resize was queued. nvJPEG would overwrite them mid-resize. So our stream
    must be idle before each decode. An event sync waits for it on this thread only (the
    training thread is not blocked; ``torch.cuda.set_sync_debug_mode`` ignores event syncs,
    which are deliberate here).
    """
    if stream is None:
        return
    done = torch.cuda.Event(blocking=True)  # sleep, not spin, while waiting
    done.record(stream)
    done.synchronize()


@dataclass(frozen=True)
class DecodedJpegs:
    """A decoded batch (:func:`decode_jpegs`, :meth:`DecodeJob.result`).

    Attributes:
        images: ``(n, C, H, W)`` uint8 on the decoder's device, in input order; the row of a
            failed image is left unset (not meaningful). Without a ``target_size``: the
            images at their own sizes packed into one ``(nbytes,)`` buffer
            (`gpuaug.loader.stages.ragged` layout), described by ``table``.
        failed: ``(position in the input, ImageLoadError)`` for each file neither nvJPEG nor
            the CPU could decode, in input order.
        table: without a ``target_size``: ``(n, 3)`` int64 CPU ``(offset, H, W)`` of each
            image in ``images`` (zeros for a failed one); else ``None``.
    """

    images: torch.Tensor
    failed: tuple[tuple[int, ImageLoadError], ...]
    table: torch.Tensor | None = None


def _chunks(pixels: Sequence[int], budget: int) -> list[range]:
    """Consecutive runs whose summed pixels stay within ``budget`` (at least one image each)."""
    out, start, total = [], 0, 0
    for i, p in enumerate(pixels):
        if i > start and total + p > budget:
            out.append(range(start, i))
            start, total = i, 0
        total += p
    if start < len(pixels):
        out.append(range(start, len(pixels)))
    return out


def _oom_message(n: int, chunk: range, pixels: Sequence[int], budget: int) -> str:
    mp = sum(pixels[i] for i in chunk) / 1e6
    return (
        f"decode='gpu' ran out of GPU memory decoding JPEGs {chunk.start}..{chunk.stop - 1} of "
        f"a batch of {n} ({mp:.1f} megapixels at full resolution; pixel_budget = "
        f"{budget / 1e6:.1f} MP). Lower the decoder's `pixel_budget`, use a smaller "
        "`batch_size`, or decode='cpu' (PIL in the workers, no GPU memory)"
    )


class _Batch:
    """The state of one :func:`decode_jpegs` call."""

    def __init__(
        self,
        data: list[torch.Tensor],
        device: torch.device,
        target_size: tuple[int, int] | None,
        color_mode: str,
        interpolation: str,
        orientations: Sequence[int],
        paths: Sequence[str] | None,
        max_side: int | None = None,
        layout: str = "planar",
    ) -> None:
        self.data, self.device, self.target_size = data, device, target_size
        self.max_side = max_side
        self.layout = layout
        self.color_mode, self.interpolation = color_mode, interpolation
        self.orientations, self.paths = orientations, paths
        self.mode = _read_mode(color_mode)
        self.resize_mode = GPU_INTERPOLATIONS[interpolation]
        self.stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
        self.failed: dict[int, ImageLoadError] = {}
        self.out: torch.Tensor | None = None  # (n, C, H, W) when target_size is set
        self.kept: list[torch.Tensor | None] = [None] * len(data)  # target_size None

    def decode(self, positions: list[int]) -> list[tuple[int, torch.Tensor]]:
        """Decodes ``positions``; a failing call is bisected down to the bad images."""
        _wait_for(self.stream)
        try:
            images = _decode([self.data[i] for i in positions], self.mode, self.device)
            return list(zip(positions, images, strict=True))
        except RuntimeError as exc:
            if _is_oom(exc):
                raise
        if self.stream is not None:
            # nvJPEG may still be writing into the failed call's freed outputs on its own
            # stream; wait for the device before anything reuses them (rare path).
            torch.cuda.synchronize(self.device)
        if len(positions) == 1:
            self._fallback(positions[0])
            return []
        half = len(positions) // 2
        return self.decode(positions[:half]) + self.decode(positions[half:])

    def _fallback(self, i: int) -> None:
        """An image nvJPEG refuses: PIL on this thread, from its path, else a bad file."""
        path = self.paths[i] if self.paths is not None else f"<image {i} of the batch>"
        try:
            if self.paths is None:
                raise ImageLoadError(path, "decode_jpeg failed and no path to retry on the CPU")
            image = load_image(
                path, self.target_size, self.color_mode, self.interpolation,
                max_side=self.max_side,
            )  # fmt: skip
        except ImageLoadError as exc:
            self.failed[i] = exc
            return
        self._store([i], image.unsqueeze(0).to(self.device, non_blocking=True))

    def finish(self, decoded: list[tuple[int, torch.Tensor]]) -> None:
        """Orients and resizes ``decoded`` group by group, freeing each image as it goes."""
        groups: dict[tuple[tuple[int, ...], int], list[int]] = {}
        for k, (i, image) in enumerate(decoded):
            groups.setdefault((tuple(image.shape), self.orientations[i]), []).append(k)
        for (_, orientation), ks in groups.items():
            stack = torch.stack([decoded[k][1] for k in ks])
            positions = [decoded[k][0] for k in ks]
            for k in ks:
                decoded[k] = (decoded[k][0], _FREED)  # drop the full-resolution image
            stack = apply_orientation(stack, orientation)
            if self.target_size is not None and tuple(stack.shape[-2:]) != self.target_size:
                stack = _resize(stack, list(self.target_size), self.resize_mode)
            elif self.max_side is not None and max(stack.shape[-2:]) > self.max_side:
                w, h = capped_size(stack.shape[-1], stack.shape[-2], self.max_side)
                stack = _resize(stack, [h, w], self.resize_mode)
            if self.color_mode == "rgba":  # JPEG has no alpha: opaque, as PIL's RGB -> RGBA
                alpha = torch.full_like(stack[:, :1], 255)
                stack = torch.cat([stack, alpha], dim=1)
            self._store(positions, stack)
            del stack

    def _store(self, positions: list[int], images: torch.Tensor) -> None:
        if self.target_size is None:
            for i, image in zip(positions, images.unbind(0), strict=True):
                self.kept[i] = image.contiguous()
            return
        if self.out is None:  # the resize's copy into it is the one that interleaves RGBX
            c = images.shape[1]
            shape = (len(self.data), c, *self.target_size)
            self.out = empty_batch(self.layout, shape, device=self.device)
        if positions == list(range(positions[0], positions[0] + len(positions))):
            self.out[positions[0] : positions[0] + len(positions)] = images
            return
        index = host_to_device(torch.tensor(positions, dtype=torch.int64), self.device)
        self.out.index_copy_(0, index, images)


def _check_args(
    n: int,
    color_mode: str,
    interpolation: str,
    orientations: Sequence[int] | None,
    paths: Sequence[str] | None,
    pixel_budget: int,
) -> None:
    _check_color_mode(color_mode)
    if interpolation not in GPU_INTERPOLATIONS:
        raise ValueError(
            f"`interpolation` must be one of {', '.join(map(repr, GPU_INTERPOLATIONS))} for "
            f"GPU decoding; got {interpolation!r}"
        )
    if isinstance(pixel_budget, bool) or not isinstance(pixel_budget, int) or pixel_budget < 1:
        raise ValueError(f"`pixel_budget` must be a positive int (pixels); got {pixel_budget!r}")
    for name, seq in (("orientations", orientations), ("paths", paths)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"`{name}` must have one entry per image ({n}); got {len(seq)}")


def _check_layout(layout: str, color_mode: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"`layout` must be one of {', '.join(map(repr, LAYOUTS))}; got {layout!r}")
    if layout == "rgbx" and color_mode != "rgb":
        raise ValueError(f"`layout`='rgbx' needs color_mode='rgb'; got {color_mode!r}")


#: What replaces a decoded image once it is resized (an empty tensor, so nothing is kept).
_FREED = torch.empty(0, dtype=torch.uint8)


def _pixels(data: torch.Tensor) -> int:
    """Full-resolution pixels of an encoded JPEG, from its frame header (0 if unreadable)."""
    frame = _walk_jpeg(memoryview(data.numpy().data))  # no copy of the file
    return frame.height_px * frame.width_px if isinstance(frame, _Frame) else 0


def _run(batch: _Batch, budget: int) -> None:
    pixels = [_pixels(d) for d in batch.data]
    n = len(batch.data)
    for chunk in _chunks(pixels, budget):
        try:
            decoded = batch.decode(list(chunk))
            batch.finish(decoded)
            del decoded
        except RuntimeError as exc:
            if _is_oom(exc):
                raise torch.OutOfMemoryError(_oom_message(n, chunk, pixels, budget)) from exc
            raise


def decode_jpegs(
    data: Sequence[torch.Tensor],
    device: torch.device | str,
    target_size: tuple[int, int] | None,
    color_mode: str = "rgb",
    interpolation: str = "nearest",
    *,
    orientations: Sequence[int] | None = None,
    paths: Sequence[str] | None = None,
    pixel_budget: int = DEFAULT_PIXEL_BUDGET,
    max_side: int | None = None,
    layout: str = "planar",
) -> DecodedJpegs:
    """Decodes a batch of JPEGs on ``device`` into one ``(n, C, H, W)`` tensor, on this thread.

    See the module docstring for the chunking, batched resize and failure handling.
    :class:`JpegDecoder` runs this on a background thread and stream.

    Args:
        data: the encoded files (:func:`read_file_bytes`), on the CPU.
        device: where to decode and resize (``"cuda"``: nvJPEG; ``"cpu"``: libjpeg-turbo).
        target_size: ``(height, width)`` of every output image; ``None``: each image at its
            own (upright) size, packed into one buffer (see :class:`DecodedJpegs`).
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"`` (opaque alpha added).
        interpolation: ``"nearest"``, ``"bilinear"`` or ``"bicubic"``.
        orientations: EXIF orientation per image (:func:`inspect_jpeg`); default all 1.
        paths: the files, for the CPU fallback and error messages.
        pixel_budget: the most full-resolution pixels decoded by one ``decode_jpeg`` call.
        max_side: with ``target_size=None``, images whose long side is longer are resized
            to a long side of ``max_side`` (`gpuaug.data.image.capped_size`).
        layout: ``"planar"`` or ``"rgbx"`` (``color_mode="rgb"``): the output's layout
            (`gpuaug.data.pixel_layout`).

    Returns:
        The images and the failures (:class:`DecodedJpegs`).

    Shape:
        ``data``: list of ``(nbytes,)`` uint8 CPU -> ``(n, C, H, W)`` uint8 on ``device``.

    Raises:
        ValueError: an interpolation the GPU resize lacks, a bad ``color_mode`` or
            ``pixel_budget``, or ``orientations``/``paths`` of the wrong length.
        torch.OutOfMemoryError: the GPU ran out of memory; the message says what to change.
    """
    data = list(data)
    _check_args(len(data), color_mode, interpolation, orientations, paths, pixel_budget)
    _check_layout(layout, color_mode)
    device = torch.device(device)
    orientations = [1] * len(data) if orientations is None else orientations
    if target_size is None:
        if layout != "planar":
            raise ValueError(
                f"`layout` must be 'planar' without a target_size (images packed at their own "
                f"sizes); got {layout!r}"
            )
        batch = _Batch(data, device, None, color_mode, interpolation, orientations, paths, max_side)
        _run(batch, pixel_budget)
        return _packed(batch)
    target_size = (int(target_size[0]), int(target_size[1]))
    batch = _Batch(
        data, device, target_size, color_mode, interpolation, orientations, paths, layout=layout
    )
    _run(batch, pixel_budget)
    if batch.out is None:  # empty, or every image failed
        c = {"grayscale": 1, "rgb": 3, "rgba": 4}[color_mode]
        batch.out = empty_batch(layout, (len(data), c, *target_size), device=device)
    return DecodedJpegs(batch.out, tuple(sorted(batch.failed.items())))


def _packed(batch: _Batch) -> DecodedJpegs:
    """The kept images of a ``target_size=None`` decode, packed (one ``torch.cat``)."""
    table = torch.zeros((len(batch.data), 3), dtype=torch.int64)
    parts, offset, wmax = [], 0, 0
    for i, image in enumerate(batch.kept):
        if image is None or i in batch.failed:
            continue
        _, h, w = image.shape
        table[i] = torch.tensor([offset, h, w])
        parts.append(image.reshape(-1))
        offset += image.numel()
        wmax = max(wmax, w)
    parts.append(torch.zeros(wmax, dtype=torch.uint8, device=batch.device))  # ragged.unpack's
    packed = torch.cat(parts)
    batch.kept = [None] * len(batch.data)
    return DecodedJpegs(packed, tuple(sorted(batch.failed.items())), table)


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
    pixel_budget: int = DEFAULT_PIXEL_BUDGET,
) -> list[torch.Tensor | ImageLoadError]:
    """Decodes JPEGs on ``device`` as a list, upright and resized there (synchronous).

    The list form of :func:`decode_jpegs` (same chunking, batched resize and failure
    handling), which also keeps each image's own size when ``target_size`` is ``None``.

    Args:
        data, device, color_mode, interpolation, orientations, paths, pixel_budget: see
            :func:`decode_jpegs`.
        target_size: ``(height, width)``, or ``None`` to keep each image's (upright) size.
        on_error: ``"raise"`` (an ``ImageLoadError`` naming the file) or ``"return"`` (the
            ``ImageLoadError`` takes that image's place in the result, for the caller's policy).

    Returns:
        One ``(C, H, W)`` uint8 tensor on ``device`` per input (an ``ImageLoadError`` where
        ``on_error="return"`` and the file is unreadable).

    Raises:
        ValueError: as :func:`decode_jpegs`, or a bad ``on_error``.
        ImageLoadError: a file neither decoder can read (``on_error="raise"``).
        torch.OutOfMemoryError: as :func:`decode_jpegs`.
    """
    if on_error not in ("raise", "return"):
        raise ValueError(f"`on_error` must be 'raise' or 'return'; got {on_error!r}")
    data = list(data)
    _check_args(len(data), color_mode, interpolation, orientations, paths, pixel_budget)
    if not data:
        return []
    device = torch.device(device)
    orientations = [1] * len(data) if orientations is None else orientations
    size = None if target_size is None else (int(target_size[0]), int(target_size[1]))
    batch = _Batch(data, device, size, color_mode, interpolation, orientations, paths)
    _run(batch, pixel_budget)
    if on_error == "raise" and batch.failed:
        raise batch.failed[min(batch.failed)]
    out: list[torch.Tensor | ImageLoadError] = []
    for i in range(len(data)):
        if i in batch.failed:
            out.append(batch.failed[i])
        else:
            image = batch.kept[i] if batch.out is None else batch.out[i]
            assert image is not None  # every sample not failed has its image
            out.append(image)
    return out


# ---------------------------------------------------------------------- background decoding
class DecodeJob:
    """A batch being decoded by a :class:`JpegDecoder`; :meth:`result` waits for it."""

    def __init__(self, future: Future, device: torch.device) -> None:
        self._future = future
        self._device = device

    def done(self) -> bool:
        """Whether the decode thread has finished queueing this batch's work."""
        return self._future.done()

    def cancel(self) -> None:
        """Drops the batch: unstarted, it never runs; running, this waits for it to end (so
        no decode is in flight when the caller forks new worker processes). No error."""
        if not self._future.cancel():
            wait([self._future])

    def result(self) -> DecodedJpegs:
        """The decoded batch, safe to use on the calling thread's current stream.

        Blocks until the decoder thread has queued the batch (the GPU may still be running it:
        the caller's current stream is made to wait for the decoder's stream, no host sync),
        and marks the output as used on the caller's stream so the caching allocator does not
        recycle it for the decoder while the caller still reads it.

        Raises:
            torch.OutOfMemoryError, ValueError: as :func:`decode_jpegs`, raised here.
        """
        decoded, ready = self._future.result()
        if ready is not None:
            current = torch.cuda.current_stream(self._device)
            current.wait_event(ready)
            decoded.images.record_stream(current)
        return decoded


class JpegDecoder:
    """Decodes batches of JPEGs on a background thread and CUDA stream, one batch ahead.

    The loader submits batch ``k + 1`` as soon as its bytes arrive from the workers and asks
    for the result when it needs the batch, so the main (training) thread never waits for a
    whole decode::

        decoder = JpegDecoder("cuda", (224, 224), "rgb", "bilinear")
        job = decoder.submit(jpeg_bytes, orientations, paths)  # returns at once
        ...  # train on the previous batch
        batch = job.result()  # DecodedJpegs; the caller's stream waits for the decode

    One thread: batches are decoded in submission order; torchvision serialises nvJPEG
    behind a lock anyway. Errors (out of memory included) are raised by ``result()``.

    Args:
        device: where to decode (``"cuda"``: nvJPEG; ``"cpu"``: libjpeg-turbo, for tests).
        target_size, color_mode, interpolation, pixel_budget, max_side, layout: see
            :func:`decode_jpegs`.
    """

    def __init__(
        self,
        device: torch.device | str,
        target_size: tuple[int, int] | None,
        color_mode: str = "rgb",
        interpolation: str = "nearest",
        *,
        pixel_budget: int = DEFAULT_PIXEL_BUDGET,
        max_side: int | None = None,
        layout: str = "planar",
    ) -> None:
        _check_args(0, color_mode, interpolation, None, None, pixel_budget)
        _check_layout(layout, color_mode)
        self.layout = layout
        self.device = torch.device(device)
        self.target_size = (
            None if target_size is None else (int(target_size[0]), int(target_size[1]))
        )
        self.max_side = max_side
        self.color_mode = color_mode
        self.interpolation = interpolation
        self.pixel_budget = pixel_budget
        cuda = self.device.type == "cuda"
        # Created once, on the decoder's device: all its allocations and kernels go here.
        self._stream = torch.cuda.Stream(self.device) if cuda else None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(
        self,
        data: Sequence[torch.Tensor],
        orientations: Sequence[int] | None = None,
        paths: Sequence[str] | None = None,
    ) -> DecodeJob:
        """Queues a batch for decoding and returns at once.

        Args:
            data, orientations, paths: see :func:`decode_jpegs`.
        """
        data = list(data)
        _check_args(len(data), self.color_mode, self.interpolation, orientations, paths, 1)
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="gpuaug-nvjpeg")
            future = self._executor.submit(self._work, data, orientations, paths)
        return DecodeJob(future, self.device)

    def _work(
        self,
        data: list[torch.Tensor],
        orientations: Sequence[int] | None,
        paths: Sequence[str] | None,
    ) -> tuple[DecodedJpegs, torch.cuda.Event | None]:
        if self._stream is None:
            return self._decode(data, orientations, paths), None
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            decoded = self._decode(data, orientations, paths)
            ready = torch.cuda.Event()
            ready.record(self._stream)
        return decoded, ready

    def _decode(
        self,
        data: list[torch.Tensor],
        orientations: Sequence[int] | None,
        paths: Sequence[str] | None,
    ) -> DecodedJpegs:
        return decode_jpegs(
            data,
            self.device,
            self.target_size,
            self.color_mode,
            self.interpolation,
            orientations=orientations,
            paths=paths,
            pixel_budget=self.pixel_budget,
            max_side=self.max_side,
            layout=self.layout,
        )

    def close(self) -> None:
        """Waits for queued batches and stops the thread (a later ``submit`` restarts it)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def __enter__(self) -> JpegDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"JpegDecoder(device={str(self.device)!r}, target_size={self.target_size}, "
            f"color_mode={self.color_mode!r}, interpolation={self.interpolation!r}, "
            f"pixel_budget={self.pixel_budget}, layout={self.layout!r})"
        )
