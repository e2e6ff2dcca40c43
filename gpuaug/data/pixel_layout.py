"""How a uint8 batch's pixels lie in memory: planar or RGBX.

Every source hands the augmentation a ``(B, C, H, W)`` uint8 tensor; two layouts of it exist:

- ``"planar"``: a contiguous ``(B, C, H, W)`` tensor, one plane per channel (what
  ``default_collate`` stacks).
- ``"rgbx"``: the first 3 channels of a ``(B, H, W, 4)`` uint8 buffer, viewed as
  ``(B, 3, H, W)`` with strides ``(4HW, 1, 4W, 4)``: each pixel's R, G, B and a padding byte
  (``X``, always 0 here) in one aligned 4-byte word. An ordinary strided tensor for torch (the
  reference path and the CPU backends read it as they read any strides); the fused Triton
  kernel (`gpuaug.augment.backends.triton`) reads each bilinear tap's three channels with one
  32-bit load instead of three one-byte gathers. It holds 4/3 the bytes of a planar batch.

The functions here make, copy, gather and move batches without leaving their layout (a plain
``index_select`` or ``.to(device)`` of an RGBX view returns a *planar* tensor: the view is not
dense, so torch does not keep its strides). A batch's layout is read from its strides
(:func:`layout_of`), never stored beside it.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from gpuaug.device import host_to_device

__all__ = [
    "LAYOUTS",
    "LAYOUT_CHOICES",
    "as_layout",
    "empty_batch",
    "interleave",
    "is_rgbx",
    "layout_of",
    "move",
    "pinned",
    "rgbx_pixels",
    "rgbx_view",
    "take",
]

#: The layouts a batch can have.
LAYOUTS: tuple[str, ...] = ("planar", "rgbx")
#: What ``LoaderConfig.layout`` takes: a layout, or ``"auto"`` (the loader chooses).
LAYOUT_CHOICES: tuple[str, ...] = ("auto", *LAYOUTS)


def rgbx_view(pixels: torch.Tensor) -> torch.Tensor:
    """The RGB channels of a ``(B, H, W, 4)`` uint8 buffer as a ``(B, 3, H, W)`` view.

    Shape:
        pixels ``(B, H, W, 4)`` uint8, contiguous, any device -> ``(B, 3, H, W)``, strides
        ``(4HW, 1, 4W, 4)``, the same memory.
    """
    return pixels.permute(0, 3, 1, 2)[:, :3]


def is_rgbx(images: torch.Tensor) -> bool:
    """Whether ``images`` is an RGBX batch: :func:`rgbx_view` of a contiguous 4-byte-per-pixel
    buffer (3 uint8 channels, strides ``(4HW, 1, 4W, 4)``, pixels on 4-byte boundaries)."""
    if images.dim() != 4 or images.dtype != torch.uint8 or images.shape[1] != 3:
        return False
    _, _, h, w = images.shape
    s_b, s_c, s_h, s_w = images.stride()
    return (
        s_c == 1
        and s_w == 4
        and s_h == 4 * w
        and (s_b == 4 * h * w or images.shape[0] <= 1)
        and images.data_ptr() % 4 == 0
    )


def layout_of(images: torch.Tensor) -> str:
    """``"rgbx"`` for an RGBX batch (:func:`is_rgbx`), else ``"planar"``."""
    return "rgbx" if is_rgbx(images) else "planar"


def rgbx_pixels(images: torch.Tensor) -> torch.Tensor:
    """The ``(B, H, W, 4)`` buffer behind an RGBX batch (the same memory, padding included).

    Raises:
        ValueError: ``images`` is not an RGBX batch.
    """
    if not is_rgbx(images):
        raise ValueError(
            "`images` must be an RGBX batch (3 uint8 channels of a (B, H, W, 4) buffer, strides "
            f"(4HW, 1, 4W, 4)); got {images.dtype} {tuple(images.shape)} with strides "
            f"{images.stride()}"
        )
    b, _, h, w = images.shape
    return images.as_strided((b, h, w, 4), (4 * h * w, 4 * w, 4, 1))


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"`layout` must be one of {', '.join(map(repr, LAYOUTS))}; got {layout!r}")


def empty_batch(
    layout: str,
    shape: tuple[int, int, int, int],
    *,
    device: torch.device | str = "cpu",
    out: torch.Tensor | None = None,
    zero_padding: bool = True,
) -> torch.Tensor:
    """A ``(B, C, H, W)`` uint8 batch to fill, in ``layout``; an RGBX one has its padding bytes
    set to 0 unless ``zero_padding=False`` (for a caller that writes whole pixels, as
    :func:`interleave` does); the pixels are left uninitialised, as ``torch.empty``'s.

    Args:
        layout: ``"planar"`` or ``"rgbx"`` (``C`` must be 3).
        shape: ``(B, C, H, W)``.
        device: where to allocate.
        out: a uint8 tensor to use instead (its first ``B * C' * H * W`` bytes, ``C'`` = 4
            for RGBX; e.g. a pinned or shared-memory buffer).

    Raises:
        ValueError: an unknown layout, RGBX with ``C != 3``, or ``out`` too small.
    """
    _check_layout(layout)
    b, c, h, w = (int(s) for s in shape)
    if layout == "rgbx" and c != 3:
        raise ValueError(f"an RGBX batch has 3 channels; got shape {tuple(shape)}")
    stored = (b, h, w, 4) if layout == "rgbx" else (b, c, h, w)
    n = int(np.prod(stored))
    if out is None:
        flat = torch.empty(n, dtype=torch.uint8, device=device)
    else:
        if out.dtype != torch.uint8 or out.numel() < n:
            raise ValueError(f"`out` must be a uint8 tensor of at least {n} elements; got {out}")
        flat = out.reshape(-1)[:n]
    if layout == "planar":
        return flat.view(stored)
    pixels = flat.view(stored)
    if zero_padding:
        pixels[..., 3] = 0
    return rgbx_view(pixels)


def interleave(images: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Writes a batch into the RGBX batch ``out``, whole pixels (padding byte 0); returns ``out``.

    On the CPU each pixel is assembled as one 32-bit word from the three planes (numpy, three
    passes: 0.03 ms per 150 x 150 image against 0.07 ms for torch's strided ``copy_``,
    measured on the 2-core test machine); elsewhere ``copy_``.

    Shape:
        images ``(B, 3, H, W)`` uint8, any strides; out an RGBX batch of that shape.
    """
    pixels = rgbx_pixels(out)
    if images.device.type != "cpu" or out.device.type != "cpu" or sys.byteorder != "little":
        pixels[..., 3] = 0
        out.copy_(images)
        return out
    src = images.numpy()
    words = pixels.numpy().view(np.uint32)[..., 0]  # (B, H, W): R in the low byte
    scratch = np.empty(words.shape[1:], dtype=np.uint32)
    for i in range(len(src)):
        word = words[i]
        np.left_shift(src[i, 2], 16, out=word, dtype=np.uint32)
        np.left_shift(src[i, 1], 8, out=scratch, dtype=np.uint32)
        word |= scratch
        word |= src[i, 0]
    return out


def as_layout(images: torch.Tensor, layout: str) -> torch.Tensor:
    """``images`` in ``layout``: itself when it is already, else a copy on its device.

    Shape:
        images ``(B, C, H, W)`` uint8, any strides -> the same values, in ``layout``.

    Raises:
        ValueError: an unknown layout, or RGBX for other than 3 uint8 channels.
    """
    _check_layout(layout)
    if layout == "planar":
        return images if images.is_contiguous() else images.contiguous()
    if is_rgbx(images):
        return images
    if images.dtype != torch.uint8:
        raise ValueError(f"an RGBX batch is uint8; got {images.dtype}")
    shape = tuple(images.shape)
    out = empty_batch("rgbx", shape, device=images.device, zero_padding=False)  # type: ignore[arg-type]
    return interleave(images, out)


def take(images: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None = None) -> Any:
    """Rows ``index`` of a batch or cache, in its layout (one gather of whole pixels for RGBX).

    Args:
        images: ``(N, C, H, W)`` uint8 (or any dtype, planar).
        index: ``(b,)`` int64 on ``images``' device.
        out: a batch of the result's shape and layout to gather into (e.g. one in a pinned
            buffer); ``None`` allocates.

    Shape:
        -> ``(b, C, H, W)``, the layout of ``images`` (``out`` if given).
    """
    if not is_rgbx(images):
        if out is None:
            return images.index_select(0, index)
        return torch.index_select(images, 0, index, out=out)
    pixels = rgbx_pixels(images)
    if out is None:
        return rgbx_view(pixels.index_select(0, index))
    torch.index_select(pixels, 0, index, out=rgbx_pixels(out))
    return out


def move(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``images`` on ``device`` in the same layout (`gpuaug.device.host_to_device`: pinned,
    ``non_blocking``); an RGBX batch moves as its whole ``(B, H, W, 4)`` buffer."""
    if not is_rgbx(images):
        return host_to_device(images, device)
    return rgbx_view(host_to_device(rgbx_pixels(images), device))


def pinned(images: torch.Tensor) -> torch.Tensor:
    """``images`` copied to pinned host memory in the same layout (an RGBX batch as its whole
    buffer: ``Tensor.pin_memory`` of the strided view would keep only the bytes it spans)."""
    if not is_rgbx(images):
        return images.pin_memory()
    return rgbx_view(rgbx_pixels(images).pin_memory())
