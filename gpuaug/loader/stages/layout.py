"""Which pixel layout a loader's batches are assembled in (``LoaderConfig.layout``).

The layouts (`gpuaug.data.pixel_layout`): ``"planar"`` ``(B, C, H, W)``, or ``"rgbx"``, the RGB
channels of a ``(B, H, W, 4)`` buffer. The source makes the batch in its layout where it
assembles it (the workers' collate, a cache built in it and gathered by whole rows, nvJPEG's
output buffer), so no stage converts a batch on its way to the augmentation.

The trade: an RGBX batch is 4/3 the bytes of a planar one over PCIe and in a host or device
cache, and the fused Triton kernel reads it with one 32-bit load per bilinear tap instead of
three one-byte gathers (modelled about 2x faster for the book's settings at 150x150,
benchmarks/results/kernel_model.md). The copy runs on a side stream, off the training
stream, and the kernel on it; so ``"auto"`` picks RGBX where the fused kernel will read the
batch, and planar everywhere else:

- RGBX: the loader's device is CUDA, its augmentation resolves to the ``"triton"`` backend,
  and the images are 3-channel uint8 with no mask packed beside them;
- planar: a loader running a ``recipe`` (its crop reads the batch, not the kernel), any
  other backend (the reference, the CPU ones read either layout at the same speed), other
  channel counts (grayscale, RGBA, masks riding as extra channels), float arrays, a
  ``"disk"`` cache (where reading the file is the likely limit, and an existing planar cache
  stays valid) and an in-memory array served from host memory (kept as given, no second copy
  of it).

``layout="rgbx"`` or ``"planar"`` forces a layout (RGBX needs 3-channel uint8 images).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from gpuaug.augment.backends import resolve_backend
from gpuaug.augment.module import GPUAugment

__all__ = ["LayoutChoice", "choose_layout"]


class LayoutChoice(NamedTuple):
    """The layout a loader assembles batches in, and why (for ``describe()``)."""

    layout: str
    reason: str


def _images_dtype(dataset: Any) -> torch.dtype:
    images = getattr(dataset, "images", None)  # gpuaug.data.arrays: the array as given
    dtype = getattr(images, "dtype", torch.uint8)
    return dtype if isinstance(dtype, torch.dtype) else torch.uint8


def _why_not_rgbx(dataset: Any) -> str | None:
    """Why ``dataset``'s images cannot be RGBX at all, or ``None``."""
    if getattr(dataset, "target_size", ()) is None:
        return "images at their own sizes (target_size=None) travel packed, planar"
    if getattr(dataset, "mask_bytes", 0):
        return "the masks ride as extra uint8 channels beside the image"
    channels = int(dataset.channels)
    if channels != 3:
        return f"{channels} channel(s) (RGBX holds 3)"
    dtype = _images_dtype(dataset)
    if dtype != torch.uint8:
        return f"the images are {str(dtype).removeprefix('torch.')}, not uint8"
    return None


def _why_no_gain(
    augment: GPUAugment, device: torch.device, recipe: bool, backend: str | None
) -> str | None:
    """Why the fused kernel will not read this loader's batches (so RGBX gains nothing), or
    ``None`` when it will."""
    if recipe:
        return (
            "the recipe, not the fused Triton kernel, reads the batch (RGBX would only add "
            "1/3 the bytes)"
        )
    if backend is None:
        dtype = torch.float32 if augment.kornia is not None else augment.dtype
        backend = resolve_backend(augment.backend, device, dtype)
    if backend != "triton" or device.type != "cuda":
        return (
            f"the {backend!r} backend augments on {device} (RGBX speeds up only the fused "
            "Triton kernel on CUDA)"
        )
    return None


def choose_layout(
    asked: str,
    augment: GPUAugment,
    dataset: Any,
    device: torch.device,
    cache: str | None,
    *,
    backend: str | None = None,
    recipe: bool = False,
) -> LayoutChoice:
    """The layout of a loader's batches (see the module docstring).

    Args:
        asked: ``LoaderConfig.layout``: ``"auto"``, ``"planar"`` or ``"rgbx"``.
        augment: the loader's `GPUAugment`.
        dataset: the data set (``channels``; ``mask_bytes``, an array's ``images``).
        device: the loader's device.
        cache: ``LoaderConfig.cache``.
        backend: the backend ``augment`` resolves to on ``device``, if already known (else
            resolved here; the kernel model passes ``"triton"`` for a CUDA machine).
        recipe: the loader runs a ``recipe`` in place of ``augment`` (its crop, not the fused
            kernel, reads the batch).

    Raises:
        ValueError: ``"rgbx"`` for images that cannot be RGBX (naming why).
    """
    impossible = _why_not_rgbx(dataset)
    if asked == "planar":
        return LayoutChoice("planar", "layout='planar' was asked for")
    if asked == "rgbx":
        if impossible is not None:
            raise ValueError(
                f"`layout`='rgbx' needs 3-channel uint8 images of one size; got {impossible}"
            )
        gain = _why_no_gain(augment, device, recipe, backend)
        if gain is None:
            return LayoutChoice("rgbx", "layout='rgbx' was asked for")
        return LayoutChoice("rgbx", f"layout='rgbx' was asked for, with no gain here: {gain}")
    if impossible is not None:
        return LayoutChoice("planar", impossible)
    gain = _why_no_gain(augment, device, recipe, backend)
    if gain is not None:
        return LayoutChoice("planar", gain)
    if cache == "disk":
        return LayoutChoice(
            "planar",
            "a disk cache stays at 3 bytes per pixel on disk and in the page cache (pass "
            "layout='rgbx' for the kernel's faster reads at 4/3 the bytes)",
        )
    if cache is not None and getattr(dataset, "as_cache", None) is not None and cache != "device":
        return LayoutChoice("planar", "an in-memory array served from host memory, as given")
    return LayoutChoice(
        "rgbx",
        "the fused Triton kernel augments these 3-channel uint8 batches on CUDA and reads an "
        "RGBX pixel with one 32-bit load per tap (modelled about 2x faster than planar; 4/3 "
        "the bytes copied and cached)",
    )
