"""The argument checks that `gpuaug.augment.module.apply` and every backend share."""

from __future__ import annotations

from typing import Any

import torch

from gpuaug.augment.params import AugmentDraws, AugmentParams

__all__ = ["MEMORY_FORMATS", "check_apply_args", "check_batch", "check_memory_format"]

MEMORY_FORMATS = (torch.contiguous_format, torch.channels_last)


def check_batch(images: Any, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"`{name}` must be a torch.Tensor (B, C, H, W); got {type(images).__name__}"
        )
    if images.ndim != 4:
        raise ValueError(f"`{name}` must be (B, C, H, W); got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"`{name}` must be uint8 or float; got {images.dtype}")


def check_memory_format(memory_format: Any) -> torch.memory_format:
    if not isinstance(memory_format, torch.memory_format) or memory_format not in MEMORY_FORMATS:
        raise ValueError(
            "`memory_format` must be torch.contiguous_format or torch.channels_last; "
            f"got {memory_format!r}"
        )
    return memory_format


def check_apply_args(
    images: Any,
    params: Any,
    dtype: Any,
    memory_format: Any,
    *,
    draws: bool = False,
) -> torch.memory_format:
    """Checks the arguments every backend's ``apply`` takes, with `apply`'s messages.

    Args:
        images, params, dtype, memory_format: as `apply` takes them.
        draws: accept `AugmentDraws` as well as `AugmentParams` (the dispatcher and the fused
            kernel read draws; the other backends take params).

    Returns:
        ``memory_format``, checked.

    Raises:
        TypeError: images not a uint8 or float tensor, params of another type, a non-float
            ``dtype``.
        ValueError: not a 4-D batch, params of another length or device, an unknown
            ``memory_format``.
    """
    check_batch(images)
    kinds = (AugmentParams, AugmentDraws) if draws else (AugmentParams,)
    if not isinstance(params, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise TypeError(f"`params` must be {names}; got {type(params).__name__}")
    if len(params) != images.shape[0]:
        raise ValueError(
            f"`params` has {len(params)} rows but the batch has {images.shape[0]} images"
        )
    if params.device != images.device:
        raise ValueError(
            f"`params` are on {params.device} but the images on {images.device}; "
            "use params.to(images.device)"
        )
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a float dtype; got {dtype}")
    return check_memory_format(memory_format)
