"""Keras' ``fit``: the featurewise statistics (mean, std, ZCA matrix) of sample images."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.params import FitStats, sample_params
from gpuaug.augment.reference import augment_pixels

__all__ = ["fit_stats"]


@torch.no_grad()
def fit_stats(
    config: AugmentConfig,
    x: torch.Tensor | np.ndarray,
    *,
    augment: bool = False,
    rounds: int = 1,
    generator: torch.Generator | None = None,
) -> FitStats:
    """The featurewise statistics of ``x`` on its device, as Keras' ``fit`` (see
    `gpuaug.augment.module.GPUAugment.fit`, which stores them).

    Returns:
        `FitStats` with the fields the config asks for (float32, on ``x``'s device); None
        elsewhere.
    """
    mean_out = std_out = zca_out = None
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`x` must be a tensor or numpy array; got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"`x` must be (N, C, H, W); got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3, 4):
        warnings.warn(
            f"expected images (N, C, H, W) with 1, 3 or 4 channels on axis 1; got shape "
            f"{tuple(x.shape)} ({x.shape[1]} channels)",
            UserWarning,
            stacklevel=3,
        )
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"`rounds` must be an int >= 1; got {rounds!r}")
    cfg = config
    work = torch.float32 if x.device.type == "mps" else torch.float64
    x = x.to(work)
    if cfg.rescale:
        x = x * cfg.rescale
    if augment:
        n, _, h, w = x.shape
        copies = [
            augment_pixels(
                x, sample_params(cfg, n, h, w, generator=generator, device=x.device), cfg
            )
            for _ in range(rounds)
        ]
        x = torch.cat(copies)
    stored = torch.float32
    if cfg.featurewise_center:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)[0]
        x = x - mean
        mean_out = mean.to(stored)
    if cfg.featurewise_std_normalization:
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)[0]
        x = x / (std + 1e-6)
        std_out = std.to(stored)
    if cfg.zca_whitening:
        n = x.shape[0]
        flat = x.reshape(n, -1)
        _, s, vh = torch.linalg.svd(flat, full_matrices=False)
        u = vh.transpose(0, 1)  # the left singular vectors of flat.T, as Keras takes them
        s_inv = math.sqrt(n) / (s + cfg.zca_epsilon)
        zca_out = ((u * s_inv) @ u.transpose(0, 1)).to(stored)
    return FitStats(mean=mean_out, std=std_out, zca_matrix=zca_out)
