"""The reference path: the plain, readable implementation every backend is tested against.

`apply_reference` warps the batch with one batched sampling call (`gpuaug.augment.warp`), then
applies channel shift, brightness and the normalisation (`standardize`), in float32 (float64
for a float64 output), and casts once.

Order, as Keras: warp -> channel shift -> horizontal flip -> vertical flip -> brightness ->
``preprocessing_function`` -> rescale -> samplewise center/std -> featurewise center/std ->
ZCA. The flips are folded into the warp's matrix (exact: the channel shift between them is
pointwise with a per-image global min/max, so it commutes with a flip).

Where we differ from Keras, on purpose:

- ``brightness``: Keras truncates the image to uint8 and lets PIL scale it (truncating
  again); we compute ``clip(x * b, 0, 255)`` in float, so Keras' result is lower by less than
  ``b + 1`` grey levels (about ``(b + 1) / 2`` on average) for 0..255 images.
- ``preprocessing_function`` is called once per batch with a (B, C, H, W) tensor on the
  device, not once per (H, W, C) numpy image.
- Which stages run is decided by the config (a Python-level choice, no host sync): a stage
  the config turns off is skipped whatever the params hold.
"""

from __future__ import annotations

import warnings

import torch

from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.params import AugmentParams, FitStats, affine_matrix
from gpuaug.augment.warp import warp_affine

__all__ = ["apply_reference", "standardize", "work_dtype"]


def _flip(x: torch.Tensor, flip_h: torch.Tensor, flip_v: torch.Tensor) -> torch.Tensor:
    x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
    return torch.where(flip_v[:, None, None, None], x.flip(-2), x)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def augment_pixels(x: torch.Tensor, params: AugmentParams, config: AugmentConfig) -> torch.Tensor:
    """Warp (+ flips), channel shift, brightness on float images (Keras' apply_transform)."""
    _, _, height, width = x.shape
    if config.has_geometry:
        matrix = affine_matrix(params, height, width, include_flips=config.has_flips)
        x = warp_affine(x, matrix.to(x.dtype), config.fill_mode, config.cval, config.interpolation)
    elif config.has_flips:
        x = _flip(x, params.flip_h, params.flip_v)
    if config.channel_shift_range:
        # Keras' apply_channel_shift: add, then clip to the image's own (all-channel) range.
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = torch.clamp(x + params.channel_shift.to(x.dtype)[:, None, None, None], lo, hi)
    if config.brightness_range is not None:
        x = (x * params.brightness.to(x.dtype)[:, None, None, None]).clamp(0.0, 255.0)
    return x


def standardize(
    x: torch.Tensor, config: AugmentConfig, stats: FitStats | None = None
) -> torch.Tensor:
    """Keras' ``ImageDataGenerator.standardize`` for a float batch, on its device.

    ``preprocessing_function`` -> ``rescale`` -> samplewise center (each image's mean over all
    pixels and channels) -> samplewise std (``/ (std + 1e-6)``) -> featurewise center
    (per-channel mean) -> featurewise std (``/ (std + 1e-6)``) -> ZCA. A featurewise step whose
    statistics were not fitted is skipped with a warning, as Keras does. The rescale and the
    featurewise steps are folded into one multiply-add when nothing sits between them.

    Shape:
        x: (B, C, H, W) float -> (B, C, H, W), same dtype and device.
    """
    stats = stats or FitStats()
    if config.preprocessing_function is not None:
        shape = x.shape
        x = config.preprocessing_function(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                "`preprocessing_function` must return a tensor (B, C, H, W); "
                f"got {type(x).__name__}"
            )
        if x.shape != shape:
            raise ValueError(
                "`preprocessing_function` must return a tensor of the shape it was given, "
                f"(B, C, H, W) = {tuple(shape)}; got {tuple(x.shape)}"
            )
    # A pending affine map x * scale + shift, applied when something non-affine comes next.
    scale: float | torch.Tensor = 1.0
    shift: float | torch.Tensor = 0.0
    pending = False

    def flush(x: torch.Tensor) -> torch.Tensor:
        nonlocal scale, shift, pending
        if pending:
            x = x * scale
            if isinstance(shift, torch.Tensor) or shift != 0.0:
                x = x + shift
        scale, shift, pending = 1.0, 0.0, False
        return x

    if config.rescale:
        scale, pending = float(config.rescale), True
    if config.samplewise_center:
        x = flush(x)
        x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    if config.samplewise_std_normalization:
        x = x / (x.std(dim=(1, 2, 3), keepdim=True, unbiased=False) + 1e-6)
    if config.featurewise_center:
        if stats.mean is None:
            warnings.warn(
                "`featurewise_center` is on but the augmenter has not been fit; call "
                "GPUAugment.fit(x) first. Skipping it.",
                UserWarning,
                stacklevel=3,
            )
        else:
            shift = shift - stats.mean.to(x.device, x.dtype)
            pending = True
    if config.featurewise_std_normalization:
        if stats.std is None:
            warnings.warn(
                "`featurewise_std_normalization` is on but the augmenter has not been fit; "
                "call GPUAugment.fit(x) first. Skipping it.",
                UserWarning,
                stacklevel=3,
            )
        else:
            inv = 1.0 / (stats.std.to(x.device, x.dtype) + 1e-6)
            scale, shift, pending = scale * inv, shift * inv, True
    x = flush(x)
    if config.zca_whitening:
        if stats.zca_matrix is None:
            warnings.warn(
                "`zca_whitening` is on but the augmenter has not been fit; call "
                "GPUAugment.fit(x) first. Skipping it.",
                UserWarning,
                stacklevel=3,
            )
        else:
            b = x.shape[0]
            zca = stats.zca_matrix.to(x.device, x.dtype)
            if zca.shape[0] != x[0].numel():
                raise ValueError(
                    f"the ZCA matrix was fit on images of {zca.shape[0]} values; this batch has "
                    f"{x[0].numel()} per image ({tuple(x.shape[1:])})"
                )
            x = (x.reshape(b, -1) @ zca).reshape(x.shape)
    return x


def apply_reference(
    images: torch.Tensor,
    params: AugmentParams,
    config: AugmentConfig,
    stats: FitStats | None = None,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """The ``"reference"`` backend: warp, pointwise stages, standardize, cast (arguments
    already checked, `gpuaug.augment.checks.check_apply_args`)."""
    x = images.to(work_dtype(dtype))
    x = augment_pixels(x, params, config)
    x = standardize(x, config, stats)
    return x.to(dtype=dtype, memory_format=memory_format)
