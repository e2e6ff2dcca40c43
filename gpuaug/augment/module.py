"""Keras' ImageDataGenerator augmentation, per sample, batched on the device.

Two steps, as in Keras (``get_random_transform`` / ``apply_transform``):

- `sample_draws` draws everything random about a batch, one ``torch.rand((B, 12))`` on the
  *generator's* device (the CPU for a ``torch.Generator()``), moved to the batch's device
  without a host sync; `params_from_draws` turns them into `AugmentParams` by Keras' rules
  (`sample_params` does both). The same seed gives the same params on every device;
- `apply` composes rotation, shift, shear, zoom and the flips into one 2x3 matrix per sample
  (`affine_matrix`), warps the batch with one batched sampling call
  (`gpuaug.augment.warp.warp_affine`),
  then applies channel shift, brightness and the normalisation (`standardize`).

`GPUAugment` is the ``nn.Module`` that does both and keeps the last draws for replay.

Backends (`BACKENDS`, chosen in `resolve_backend` and nowhere else): ``"auto"`` (default: the
fused Triton kernel, `gpuaug.augment.backends.triton`, for CUDA tensors when triton imports; the
reference
elsewhere), ``"kornia"`` (the reference: the code in this module and `gpuaug.augment.warp`),
``"triton"`` (the fused kernel: one pass reading uint8 and writing the output once; CPU tensors
only under ``TRITON_INTERPRET=1``), ``"compile"``
(``gpuaug.augment.backends.compile.apply_compiled``), and on a
CPU, by name only, ``"chunked"`` (`gpuaug.augment.backends.chunked`, the reference on cache-sized
slices) and
``"opencv"`` (`gpuaug.augment.backends.opencv`, OpenCV's float32 warp: about 0.01 grey levels with
OpenCV 5).
Every backend writes float32 / bfloat16 / float16 (the reference float64 too) in contiguous or
channels_last strides, and equals the reference within 1e-3 grey levels (except "opencv").

Conventions (pinned by tests against Keras 3's legacy ``ImageDataGenerator``):

- Coordinates: x is horizontal (columns), y is vertical (rows), pixel centres at integers, the
  image centre at ((W - 1) / 2, (H - 1) / 2).
- The matrix maps each *output* pixel to the *input* point it reads, as Keras/scipy: with
  ``T = R(angle) @ Shift(shift_px) @ Shear(shear) @ Zoom(zoom)`` about the centre,
  ``src = c + T (dst - c)``. So a positive ``shift_px[:, 0]`` moves the content left, a zoom
  factor > 1 shows more of the image (content smaller), a positive angle turns the content
  counter-clockwise on screen (y points down). These are exactly Keras' ``theta, tx, ty,
  shear, zx, zy`` (`AugmentParams.to_keras`).
- Order, as Keras: warp -> channel shift -> horizontal flip -> vertical flip -> brightness ->
  ``preprocessing_function`` -> rescale -> samplewise center/std -> featurewise center/std ->
  ZCA. The flips are folded into the warp's matrix (exact: the channel shift between them is
  pointwise with a per-image global min/max, so it commutes with a flip).

Where we differ from Keras, on purpose:

- Keras draws ``tx`` (applied horizontally) from ``height_shift_range`` scaled by the image
  *height*, and ``ty`` (vertical) from ``width_shift_range`` scaled by the *width*, so its
  ``height_shift_range`` moves images sideways. We follow its documentation:
  ``width_shift_range`` -> horizontal shift, a fraction of the width.
- Keras rotates, shears and zooms a non-square image about ((H - 1) / 2, (W - 1) / 2) read as
  (x, y), not about its centre (``transform_matrix_offset_center`` gets (h, w) but the matrix
  is in (x, y)). We use the true centre. For square images both agree.
- ``brightness``: Keras truncates the image to uint8 and lets PIL scale it (truncating
  again); we compute ``clip(x * b, 0, 255)`` in float, so Keras' result is lower by less than
  ``b + 1`` grey levels (about ``(b + 1) / 2`` on average) for 0..255 images.
- ``preprocessing_function`` is called once per batch with a (B, C, H, W) tensor on the
  device, not once per (H, W, C) numpy image.
- Which stages run is decided by the config (a Python-level choice, no host sync): a stage
  the config turns off is skipped whatever the params hold.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gpuaug.augment.config import AugmentConfig, ShiftRange, load_config
from gpuaug.augment.warp import warp_affine
from gpuaug.device import host_to_device

__all__ = [
    "BACKENDS",
    "AugmentDraws",
    "AugmentParams",
    "FitStats",
    "GPUAugment",
    "affine_matrix",
    "apply",
    "params_from_draws",
    "resolve_backend",
    "sample_draws",
    "sample_params",
    "standardize",
]

# Columns of the one uniform draw per batch (the generator's consumption is fixed per sample).
_ANGLE, _SHIFT_X, _SHIFT_Y, _SHEAR, _ZOOM_X, _ZOOM_Y = range(6)
_FLIP_H, _FLIP_V, _CHANNEL, _BRIGHTNESS, _SIGN_X, _SIGN_Y = range(6, 12)
_N_DRAWS = 12


@dataclass(frozen=True)
class AugmentParams:
    """The random parameters of a batch: one row per sample, tensors on the batch's device.

    The fields are exactly Keras' ``get_random_transform`` values (see `to_keras`), with x
    horizontal (columns) and y vertical (rows).

    Attributes:
        angle_deg: Rotation in degrees (Keras ``theta``).
        shift_px: Sampling offset in pixels [x, y] (Keras ``tx``, ``ty``): the output reads
            the input at +shift, so a positive x moves the content left.
        shear_deg: Shear angle in degrees (Keras ``shear``).
        zoom: Zoom factors [x, y] (Keras ``zx``, ``zy``); > 1 makes the content smaller.
        flip_h: Flip left-right.
        flip_v: Flip up-down.
        channel_shift: Intensity added to every channel, 0 when off.
        brightness: Brightness factor, 1 when off.

    Shape:
        angle_deg, shear_deg, channel_shift, brightness: (B,) float32; shift_px, zoom: (B, 2)
        float32; flip_h, flip_v: (B,) bool. All on one device.
    """

    angle_deg: torch.Tensor
    shift_px: torch.Tensor
    shear_deg: torch.Tensor
    zoom: torch.Tensor
    flip_h: torch.Tensor
    flip_v: torch.Tensor
    channel_shift: torch.Tensor
    brightness: torch.Tensor

    def __post_init__(self) -> None:
        n = self.angle_deg.shape[0] if self.angle_deg.ndim == 1 else -1
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"`{f.name}` must be a tensor; got {type(value).__name__}")
            expected = (n, 2) if f.name in ("shift_px", "zoom") else (n,)
            if n < 0 or tuple(value.shape) != expected:
                raise ValueError(
                    f"`{f.name}` must have shape {expected} (B = len(angle_deg)); "
                    f"got {tuple(value.shape)}"
                )
            if value.device != self.angle_deg.device:
                raise ValueError(
                    f"all params must be on one device; `{f.name}` is on {value.device}, "
                    f"`angle_deg` on {self.angle_deg.device}"
                )

    def __len__(self) -> int:
        return self.angle_deg.shape[0]

    @property
    def device(self) -> torch.device:
        """The device the params live on."""
        return self.angle_deg.device

    def _map(self, fn: Any) -> AugmentParams:
        return AugmentParams(
            **{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)}
        )

    def index(self, i: int | slice | torch.Tensor | Sequence[int]) -> AugmentParams:
        """The params of some rows: an int (kept as a batch of one), a slice or an index tensor."""
        if isinstance(i, int | np.integer):
            n = len(self)
            if not -n <= int(i) < n:
                raise IndexError(f"index {int(i)} is out of range for {n} samples")
            j = int(i) % n
            return self._map(lambda t: t[j : j + 1])
        if isinstance(i, slice):
            return self._map(lambda t: t[i])
        index = torch.as_tensor(i, device=self.device)
        return self._map(lambda t: t[index])

    def __getitem__(self, i: int | slice | torch.Tensor | Sequence[int]) -> AugmentParams:
        return self.index(i)

    def to(self, device: torch.device | str) -> AugmentParams:
        """The same params on ``device``."""
        return self._map(lambda t: t.to(device))

    def to_keras(self, i: int) -> dict[str, Any]:
        """Row ``i`` as Keras' ``apply_transform`` parameters (Python scalars; syncs the host).

        ``channel_shift_intensity`` is None when the shift is 0 and ``brightness`` None when the
        factor is 1, which is how Keras marks them off. For a non-square image Keras would turn
        these about a different centre (see the module docstring).
        """
        row = self.index(i)
        channel = float(row.channel_shift[0])
        brightness = float(row.brightness[0])
        return {
            "theta": float(row.angle_deg[0]),
            "tx": float(row.shift_px[0, 0]),
            "ty": float(row.shift_px[0, 1]),
            "shear": float(row.shear_deg[0]),
            "zx": float(row.zoom[0, 0]),
            "zy": float(row.zoom[0, 1]),
            "flip_horizontal": bool(row.flip_h[0]),
            "flip_vertical": bool(row.flip_v[0]),
            "channel_shift_intensity": None if channel == 0 else channel,
            "brightness": None if brightness == 1 else brightness,
        }

    @classmethod
    def from_keras(
        cls, transforms: Sequence[dict[str, Any]], device: torch.device | str | None = None
    ) -> AugmentParams:
        """Params from Keras ``get_random_transform`` dicts, one per sample (missing keys: off)."""

        def col(key: str, default: float) -> torch.Tensor:
            values = [default if t.get(key) is None else float(t[key]) for t in transforms]
            return torch.tensor(values, dtype=torch.float32, device=device)

        return cls(
            angle_deg=col("theta", 0.0),
            shift_px=torch.stack([col("tx", 0.0), col("ty", 0.0)], dim=1),
            shear_deg=col("shear", 0.0),
            zoom=torch.stack([col("zx", 1.0), col("zy", 1.0)], dim=1),
            flip_h=col("flip_horizontal", 0.0) != 0,
            flip_v=col("flip_vertical", 0.0) != 0,
            channel_shift=col("channel_shift_intensity", 0.0),
            brightness=col("brightness", 1.0),
        )

    @classmethod
    def identity(cls, batch_size: int, device: torch.device | str | None = None) -> AugmentParams:
        """Params that change nothing (angle 0, shift 0, zoom 1, no flip, brightness 1)."""
        zeros = torch.zeros(batch_size, device=device)
        return cls(
            angle_deg=zeros,
            shift_px=torch.zeros(batch_size, 2, device=device),
            shear_deg=zeros,
            zoom=torch.ones(batch_size, 2, device=device),
            flip_h=torch.zeros(batch_size, dtype=torch.bool, device=device),
            flip_v=torch.zeros(batch_size, dtype=torch.bool, device=device),
            channel_shift=zeros,
            brightness=torch.ones(batch_size, device=device),
        )


@dataclass(frozen=True)
class FitStats:
    """Dataset statistics from `GPUAugment.fit` (None where not fitted).

    Shape:
        mean, std: (C, 1, 1) float; zca_matrix: (C*H*W, C*H*W) float, acting on images
        flattened channels-first. All on one device.
    """

    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    zca_matrix: torch.Tensor | None = None


@dataclass(frozen=True)
class AugmentDraws:
    """Everything random about a batch: its B x 12 uniform draws (`sample_draws`).

    The params are a pure function of the draws, the config and the image size
    (`params_from_draws`), so keeping the draws is keeping the params: the fused path
    (`gpuaug.augment.backends.triton`) reads the draws in its kernel and `GPUAugment.last_params`
    computes the
    params from them (lazily, with the reference code) when asked.

    Attributes:
        uniforms: The draws, column j for the j-th random quantity of every sample (angle,
            shift x, shift y, shear, zoom x, zoom y, flip h, flip v, channel shift,
            brightness, shift-sign x, shift-sign y).

    Shape:
        uniforms: (B, 12) float32 in [0, 1), any device.
    """

    uniforms: torch.Tensor

    def __post_init__(self) -> None:
        u = self.uniforms
        if not isinstance(u, torch.Tensor):
            raise TypeError(f"`uniforms` must be a tensor; got {type(u).__name__}")
        if u.ndim != 2 or u.shape[1] != _N_DRAWS or u.dtype != torch.float32:
            raise ValueError(
                f"`uniforms` must be (B, {_N_DRAWS}) float32; got {tuple(u.shape)} {u.dtype}"
            )

    def __len__(self) -> int:
        return self.uniforms.shape[0]

    @property
    def device(self) -> torch.device:
        """The device the draws live on."""
        return self.uniforms.device

    def to(self, device: torch.device | str) -> AugmentDraws:
        """The same draws on ``device`` (no host sync for a CPU -> CUDA move)."""
        return AugmentDraws(host_to_device(self.uniforms, device))

    def params(self, config: AugmentConfig, height: int, width: int) -> AugmentParams:
        """The params these draws stand for (`params_from_draws`)."""
        return params_from_draws(config, self, height, width)


# ----------------------------------------------------------------------------- sampling


def _symmetric(u: torch.Tensor, r: float) -> torch.Tensor:
    """Uniform in [-r, r) from u uniform in [0, 1)."""
    return (2.0 * u - 1.0) * r


def _shift(r: ShiftRange, u: torch.Tensor, u_sign: torch.Tensor, size: int) -> torch.Tensor:
    """One axis of Keras' shift rule (``get_random_transform``), batched."""
    if not r:
        return torch.zeros_like(u)
    if isinstance(r, tuple | int):  # Keras: np.random.choice(r) * np.random.choice([-1, 1])
        sign = torch.where(u_sign < 0.5, -1.0, 1.0)
        if isinstance(r, int):  # np.random.choice(n) picks from 0 .. n-1
            value = torch.floor(u * r).clamp_(max=r - 1)
        else:
            k = torch.floor(u * len(r)).clamp_(max=len(r) - 1)
            value = torch.full_like(u, float(r[0]))
            for j, v in enumerate(r[1:], start=1):  # a loop over the choices, not the samples
                value = torch.where(k == j, float(v), value)
        value = value * sign
        # Keras scales when np.max(r) < 1: only a list of fractions can be (an int n is >= 1)
        return value * size if isinstance(r, tuple) and max(r) < 1 else value
    value = _symmetric(u, float(r))
    return value * size if r < 1 else value


def sample_draws(
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> AugmentDraws:
    """Draw a batch's uniforms: one ``torch.rand((batch_size, 12))`` on the generator's device.

    The draws are made where the generator lives (the CPU for ``torch.Generator()`` and for the
    global RNG when ``generator`` is None) and then moved to ``device`` (from pinned memory
    with ``non_blocking=True`` for a CPU -> CUDA move: no host sync). So a CPU generator seeded
    the same way gives the same draws, hence the same params and the same augmentation, on
    every device.

    Args:
        batch_size: B.
        generator: Source of randomness; the CPU global RNG if None.
        device: Where the draws go; defaults to the generator's device, else the CPU.

    Returns:
        The batch's `AugmentDraws` on ``device``.

    Shape:
        -> uniforms (B, 12) float32 in [0, 1), on ``device``.

    Raises:
        ValueError: A negative batch size.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise TypeError(f"`batch_size` must be an int; got {batch_size!r}")
    if batch_size < 0:
        raise ValueError(f"`batch_size` must be >= 0; got {batch_size}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator; got {type(generator).__name__}")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    device = draw_device if device is None else torch.device(device)
    u = torch.rand((int(batch_size), _N_DRAWS), generator=generator, device=draw_device)
    return AugmentDraws(host_to_device(u, device))


def params_from_draws(
    config: AugmentConfig, draws: AugmentDraws, height: int, width: int
) -> AugmentParams:
    """The params a batch's draws stand for, by Keras' ``get_random_transform`` rules.

    A pure function of the draws (the reference code: `sample_params` is this after
    `sample_draws`; the fused Triton path computes the same values in its kernel, and
    `GPUAugment.last_params` comes from here, never from kernel state). Rules (Keras'): angle
    U(-r, r); shifts per `AugmentConfig.width_shift_range` (horizontal, x width) and
    ``height_shift_range`` (vertical, x height); shear U(-s, s); zoom x and y independently
    U(lo, hi) (exactly 1 when lo = hi = 1); each flip with p = 0.5 when on; channel shift
    U(-c, c); brightness U(lo, hi) or 1.

    Shape:
        draws: uniforms (B, 12) -> `AugmentParams` of B rows on the draws' device.
    """
    if not isinstance(config, AugmentConfig):
        raise TypeError(f"`config` must be an AugmentConfig; got {type(config).__name__}")
    if not isinstance(draws, AugmentDraws):
        raise TypeError(f"`draws` must be AugmentDraws; got {type(draws).__name__}")
    if height < 1 or width < 1:
        raise ValueError(f"`height` and `width` must be >= 1; got {height} x {width}")
    u = draws.uniforms
    angle = _symmetric(u[:, _ANGLE], float(config.rotation_range))
    shift_x = _shift(config.width_shift_range, u[:, _SHIFT_X], u[:, _SIGN_X], width)
    shift_y = _shift(config.height_shift_range, u[:, _SHIFT_Y], u[:, _SIGN_Y], height)
    shear = _symmetric(u[:, _SHEAR], float(config.shear_range))
    lo, hi = config.zoom_bounds
    zoom = lo + (hi - lo) * u[:, [_ZOOM_X, _ZOOM_Y]]
    if lo == hi == 1:
        zoom = torch.ones_like(zoom)
    flip_h = (u[:, _FLIP_H] < 0.5) & config.horizontal_flip
    flip_v = (u[:, _FLIP_V] < 0.5) & config.vertical_flip
    channel = _symmetric(u[:, _CHANNEL], float(config.channel_shift_range))
    if config.brightness_range is None:
        brightness = torch.ones_like(u[:, _BRIGHTNESS])
    else:
        b_lo, b_hi = config.brightness_range
        brightness = b_lo + (b_hi - b_lo) * u[:, _BRIGHTNESS]
    return AugmentParams(
        angle_deg=angle,
        shift_px=torch.stack([shift_x, shift_y], dim=1),
        shear_deg=shear,
        zoom=zoom,
        flip_h=flip_h,
        flip_v=flip_v,
        channel_shift=channel,
        brightness=brightness,
    )


def sample_params(
    config: AugmentConfig,
    batch_size: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> AugmentParams:
    """Draw the random parameters of a batch, as Keras' ``get_random_transform`` per sample.

    ``params_from_draws(config, sample_draws(batch_size, generator=..., device=...), ...)``:
    one ``torch.rand((batch_size, 12))`` on the *generator's* device (no loop over samples, no
    host sync), moved to ``device``. So a generator in a given state gives the same params
    whatever ``device`` is: a CPU generator seeded as the loader seeds it reproduces a GPU
    epoch on the CPU, sample for sample. See `params_from_draws` for the rules.

    Args:
        config: The augmentation settings.
        batch_size: B.
        height: Image height H (scales fractional vertical shifts).
        width: Image width W (scales fractional horizontal shifts).
        generator: Source of randomness, on any device; the CPU global RNG if None.
        device: Where the params go; defaults to the generator's device, else CPU.

    Returns:
        The batch's `AugmentParams`, float32 / bool tensors on ``device``.

    Raises:
        ValueError: A negative batch size or non-positive image size.
    """
    if not isinstance(config, AugmentConfig):
        raise TypeError(f"`config` must be an AugmentConfig; got {type(config).__name__}")
    if batch_size < 0:
        raise ValueError(f"`batch_size` must be >= 0; got {batch_size}")
    if height < 1 or width < 1:
        raise ValueError(f"`height` and `width` must be >= 1; got {height} x {width}")
    draws = sample_draws(batch_size, generator=generator, device=device)
    return params_from_draws(config, draws, height, width)


# ----------------------------------------------------------------------------- geometry


def affine_matrix(
    params: AugmentParams, height: int, width: int, *, include_flips: bool = True
) -> torch.Tensor:
    """The per-sample destination -> source pixel matrices, in Keras' composition order.

    ``src = c + R(angle) @ (shift + Shear(shear) @ Zoom(zoom) @ F(dst - c))`` with c the image
    centre ((W - 1) / 2, (H - 1) / 2), ``R = [[cos, -sin], [sin, cos]]``,
    ``Shear = [[1, -sin(shear)], [0, cos(shear)]]``, ``Zoom = diag(zx, zy)`` (Keras'
    ``apply_affine_transform``), and F the flips (``diag(+-1, +-1)``: flipping the output after
    the warp, as Keras does, is the same as reading the warp at the mirrored pixel).

    Args:
        params: The batch's parameters.
        height: H.
        width: W.
        include_flips: Fold ``flip_h`` / ``flip_v`` in (as `apply` does); False gives Keras'
            ``apply_affine_transform`` matrix alone.

    Returns:
        (B, 2, 3) float32 on the params' device, acting on (x = column, y = row, 1).
    """
    device = params.device
    # float64 for the trigonometry where the device has it (B x 6 numbers: free), so the matrix
    # is exact to float32 rounding.
    work = torch.float32 if device.type == "mps" else torch.float64
    theta = torch.deg2rad(params.angle_deg.to(work))
    shear = torch.deg2rad(params.shear_deg.to(work))
    zx, zy = params.zoom[:, 0].to(work), params.zoom[:, 1].to(work)
    tx, ty = params.shift_px[:, 0].to(work), params.shift_px[:, 1].to(work)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # A = R @ Shear @ Zoom = [[cos zx, -zy sin(theta + shear)], [sin zx, zy cos(theta + shear)]]
    a00, a10 = cos * zx, sin * zx
    a01, a11 = -zy * torch.sin(theta + shear), zy * torch.cos(theta + shear)
    if include_flips:
        fx = torch.where(params.flip_h, -1.0, 1.0).to(work)
        fy = torch.where(params.flip_v, -1.0, 1.0).to(work)
        a00, a10 = a00 * fx, a10 * fx
        a01, a11 = a01 * fy, a11 * fy
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # offset = c + R t - A c
    b0 = cx + cos * tx - sin * ty - (a00 * cx + a01 * cy)
    b1 = cy + sin * tx + cos * ty - (a10 * cx + a11 * cy)
    matrix = torch.stack(
        [torch.stack([a00, a01, b0], dim=-1), torch.stack([a10, a11, b1], dim=-1)], dim=1
    )
    return matrix.to(torch.float32)


def _flip(x: torch.Tensor, flip_h: torch.Tensor, flip_v: torch.Tensor) -> torch.Tensor:
    x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
    return torch.where(flip_v[:, None, None, None], x.flip(-2), x)


# ----------------------------------------------------------------------------- apply


def _check_batch(images: Any, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"`{name}` must be a torch.Tensor (B, C, H, W); got {type(images).__name__}"
        )
    if images.ndim != 4:
        raise ValueError(f"`{name}` must be (B, C, H, W); got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"`{name}` must be uint8 or float; got {images.dtype}")


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _augment(x: torch.Tensor, params: AugmentParams, config: AugmentConfig) -> torch.Tensor:
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


#: The backends of `apply` and `GPUAugment`, chosen in `resolve_backend` and nowhere else:
#:
#: - ``"auto"``: ``"triton"`` for CUDA tensors when triton imports and the output dtype is
#:   float32 / bfloat16 / float16; ``"kornia"`` otherwise (the CPU default, and inside
#:   ``torch.compile``).
#: - ``"kornia"``: the reference path (`warp_affine`'s ``grid_sample`` + torch ops, kornia-style
#:   batched params); runs everywhere, in float64 too. Everything else is tested against it.
#: - ``"triton"``: the fused kernel (`gpuaug.augment.backends.triton`): one pass over the batch
#:   that warps,
#:   shifts, brightens, rescales, normalises and writes the output once. CUDA tensors; CPU
#:   tensors only under ``TRITON_INTERPRET=1`` (the interpreter, for tests).
#: - ``"compile"``: ``gpuaug.augment.backends.compile.apply_compiled`` (``torch.compile`` of the
#:   reference).
#: - ``"chunked"``: ``gpuaug.augment.backends.chunked.apply_chunked``, the reference on cache-sized
#:   slices of a
#:   CPU batch (bitwise the reference; one call on other devices). Opt-in.
#: - ``"opencv"``: ``gpuaug.augment.backends.opencv.apply_opencv``, OpenCV's float32 ``warpAffine``
#:   per image
#:   on a thread pool (CPU, uint8 images, fill "nearest" / "reflect" / "constant"; else the
#:   reference): within about 0.01 grey levels of the reference with OpenCV 5 (more on large
#:   images, and with OpenCV 4's 1/32-pixel weights), not bitwise. Opt-in.
BACKENDS: tuple[str, ...] = ("auto", "kornia", "triton", "compile", "chunked", "opencv")

#: The fill modes the ``"opencv"`` backend warps with OpenCV (others run the reference).
OPENCV_FILL_MODES = ("nearest", "reflect", "constant")

#: What each resolved backend is, in a few words (`describe_backend`).
_BACKEND_NOTES = {
    "kornia": "the exact reference (grid_sample + torch ops)",
    "triton": "the fused Triton kernel, one launch per batch (within 1e-3 grey levels of the "
    "reference)",
    "compile": "torch.compile of the reference (within float rounding of it)",
    "chunked": "the reference on cache-sized slices of the batch (bitwise the reference)",
    "opencv": "OpenCV's warpAffine per uint8 image, not bitwise: within about 0.01 grey levels "
    "of the reference with OpenCV 5 (see gpuaug.augment.backends.opencv.warp_bound)",
}


def describe_backend(
    backend: str,
    device: torch.device | str,
    dtype: torch.dtype,
    memory_format: torch.memory_format = torch.contiguous_format,
    config: AugmentConfig | None = None,
) -> str:
    """One line: the backend that runs for ``backend`` on ``device`` (`resolve_backend`), what
    it is, and the output dtype and layout; for a loader's ``describe()``. An ``"opencv"``
    backend that would run the reference here says so, and why
    (`gpuaug.augment.backends.opencv.why_reference`).
    """
    name = resolve_backend(backend, device, dtype)
    asked = repr(name) if backend == name else f"{backend!r} -> {name!r}"
    note = _BACKEND_NOTES[name]
    if name == "opencv":
        from gpuaug.augment.backends.opencv import why_reference

        reason = why_reference(device, dtype, config)
        if reason is not None:
            note = f"but {reason}: {_BACKEND_NOTES['kornia']}"
    layout = "channels_last" if memory_format == torch.channels_last else "contiguous"
    dtype_name = str(dtype).removeprefix("torch.")
    return f"backend: {asked}, {note}; output {dtype_name}, {layout}"


_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MEMORY_FORMATS = (torch.contiguous_format, torch.channels_last)


def _check_backend(backend: Any) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)}; got {backend!r}")
    return backend


def _check_memory_format(memory_format: Any) -> torch.memory_format:
    if not isinstance(memory_format, torch.memory_format) or memory_format not in _MEMORY_FORMATS:
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
    _check_batch(images)
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
    return _check_memory_format(memory_format)


def resolve_backend(backend: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """The backend that runs for ``backend`` on ``device`` with output ``dtype``: the one place
    where a backend is chosen (see `BACKENDS`).

    Returns:
        "kornia", "triton" or "compile" ("auto" resolved).

    Raises:
        ValueError: An unknown backend, or ``"triton"`` where it cannot run (a CPU tensor
            without ``TRITON_INTERPRET=1``, or float64 output).
        ImportError: ``"triton"`` without triton installed.
    """
    backend = _check_backend(backend)
    device = torch.device(device)
    if backend == "auto":
        # Inside torch.compile the reference is what dynamo traces (the kernel's launch is a
        # Python call it would break the graph on).
        if device.type == "cuda" and dtype in _FUSED_DTYPES and not torch.compiler.is_compiling():
            from gpuaug.augment.backends import triton as fused

            if fused.triton_available():
                return "triton"
        return "kornia"
    if backend == "triton":
        from gpuaug.augment.backends import triton as fused

        fused.check_usable(device, dtype)
    return backend


def apply(
    images: torch.Tensor,
    params: AugmentParams | AugmentDraws,
    config: AugmentConfig,
    *,
    stats: FitStats | None = None,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
    backend: str = "auto",
) -> torch.Tensor:
    """Augment a batch with given params, as Keras' ``apply_transform`` + ``standardize``.

    Args:
        images: The batch, read on its 0..255 scale (uint8, or float on that scale).
        params: One row per image, on the images' device: `AugmentParams` (`sample_params`), or
            the `AugmentDraws` they come from (`sample_draws`; the fused path reads these in
            its kernel, the others turn them into params first).
        config: Which stages run, the fill mode and the normalisation.
        stats: Fitted featurewise statistics (`GPUAugment.fit`), if the config uses them.
        dtype: Output dtype (a float dtype). float64 computes in float64 (reference backend
            only), anything else in float32 and rounds once at the end.
        memory_format: ``torch.contiguous_format`` or ``torch.channels_last`` (the output's
            strides).
        backend: "auto", "kornia", "triton", "compile", "chunked" or "opencv" (see `BACKENDS`).

    Returns:
        The augmented, normalised batch.

    Shape:
        images: (B, C, H, W) uint8 or float, any device -> (B, C, H, W) ``dtype`` in
        ``memory_format``, same device.

    Raises:
        ValueError: Not a 4-D batch, params of another length or device, an unknown backend
            or memory format, or a backend that cannot run here.
        TypeError: Images neither uint8 nor float, or a non-float ``dtype``.
    """
    memory_format = check_apply_args(images, params, dtype, memory_format, draws=True)
    name = resolve_backend(backend, images.device, dtype)
    if name == "triton":
        from gpuaug.augment.backends import triton as fused

        return fused.apply_fused(
            images, params, config, stats=stats, dtype=dtype, memory_format=memory_format
        )
    if isinstance(params, AugmentDraws):
        params = params.params(config, images.shape[2], images.shape[3])
    if name == "chunked":
        from gpuaug.augment.backends.chunked import apply_chunked

        return apply_chunked(
            images, params, config, stats=stats, dtype=dtype, memory_format=memory_format
        )
    if name == "opencv":
        from gpuaug.augment.backends.opencv import apply_opencv

        return apply_opencv(
            images, params, config, stats=stats, dtype=dtype, memory_format=memory_format
        )
    if name == "compile":
        try:
            from gpuaug.augment.backends.compile import apply_compiled
        except ImportError as err:
            raise ImportError(
                '`backend="compile"` needs the gpuaug.augment.backends.compile module, which this '
                f'build does not have ({err}); use backend="kornia" or "auto"'
            ) from err
        return apply_compiled(
            images, params, config, stats=stats, dtype=dtype, memory_format=memory_format
        )
    return _apply_reference(images, params, config, stats, dtype, memory_format)


def _apply_reference(
    images: torch.Tensor,
    params: AugmentParams,
    config: AugmentConfig,
    stats: FitStats | None,
    dtype: torch.dtype,
    memory_format: torch.memory_format,
) -> torch.Tensor:
    """The reference ("kornia") backend: warp, pointwise stages, standardize, cast."""
    x = images.to(_work_dtype(dtype))
    x = _augment(x, params, config)
    x = standardize(x, config, stats)
    return x.to(dtype=dtype, memory_format=memory_format)


# ----------------------------------------------------------------------------- module


class GPUAugment(nn.Module):
    """Keras' ImageDataGenerator augmentation as a module: per-sample params, one batched warp.

    ``forward`` draws fresh uniforms for the batch (`sample_draws`: on the generator's device,
    then moved to the batch's), applies them (`apply`) and keeps them, so that ``last_params``
    (computed from the draws by the reference code when first read) replays the batch:
    ``aug(x, params=p)`` or ``aug.apply(x, p)`` reproduces it exactly on the same backend, and
    a CPU generator seeded the same way reproduces the params on every device.

    Args:
        config: An `AugmentConfig`, a preset name or a YAML path (`load_config`); None gives
            no augmentation (a float conversion).
        dtype: Output dtype (float).
        memory_format: ``torch.contiguous_format`` or ``torch.channels_last`` for the output.
        backend: "auto" (the fused Triton kernel on CUDA, else the reference), "kornia" (the
            reference), "triton", "compile", "chunked" or "opencv"; see `BACKENDS`.

    Attributes:
        config: The settings.
        dtype: The output dtype.
        memory_format: The output memory format.
        backend: The backend asked for (resolved per call by `resolve_backend`).
        last_params: The params of the last ``forward`` call (None before one).
        last_draws: The draws of the last ``forward`` call that drew them (None otherwise).
        mean, std, zca_matrix: Buffers set by `fit` (None before).

    Shape:
        images: (B, C, H, W) uint8 or float on the 0..255 scale, any device
        -> (B, C, H, W) ``dtype`` in ``memory_format``, same device.

    Example:
        >>> cfg = AugmentConfig(rotation_range=40, horizontal_flip=True, rescale=1 / 255)
        >>> aug = GPUAugment(cfg)
        >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> y = aug(x, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(aug.apply(x, aug.last_params), y)
        True
    """

    mean: torch.Tensor | None
    std: torch.Tensor | None
    zca_matrix: torch.Tensor | None

    def __init__(
        self,
        config: AugmentConfig | str | os.PathLike[str] | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        memory_format: torch.memory_format = torch.contiguous_format,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if config is None:
            config = AugmentConfig()
        elif not isinstance(config, AugmentConfig):
            config = load_config(config)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"`dtype` must be a float torch.dtype; got {dtype!r}")
        self.config = config
        self.dtype = dtype
        self.memory_format = _check_memory_format(memory_format)
        self.backend = _check_backend(backend)
        self._last_params: AugmentParams | None = None
        self._last_draws: tuple[AugmentDraws, int, int] | None = None
        self.register_buffer("mean", None)
        self.register_buffer("std", None)
        self.register_buffer("zca_matrix", None)

    @property
    def stats(self) -> FitStats:
        """The fitted statistics (None fields where not fitted)."""
        return FitStats(mean=self.mean, std=self.std, zca_matrix=self.zca_matrix)

    @property
    def last_params(self) -> AugmentParams | None:
        """The params of the last ``forward`` call (from its draws, by the reference code)."""
        if self._last_params is None and self._last_draws is not None:
            draws, height, width = self._last_draws
            self._last_params = params_from_draws(self.config, draws, height, width)
        return self._last_params

    @last_params.setter
    def last_params(self, params: AugmentParams | None) -> None:
        self._last_params = params
        self._last_draws = None

    @property
    def last_draws(self) -> AugmentDraws | None:
        """The draws of the last ``forward`` call, if it drew them (None after given params)."""
        return None if self._last_draws is None else self._last_draws[0]

    def sample_draws(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> AugmentDraws:
        """Draw this batch's uniforms on the generator's device, moved to the batch's."""
        _check_batch(images)
        return sample_draws(images.shape[0], generator=generator, device=images.device)

    def sample_params(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> AugmentParams:
        """Draw params for this batch, on its device (`sample_params`)."""
        _check_batch(images)
        b, _, h, w = images.shape
        return sample_params(self.config, b, h, w, generator=generator, device=images.device)

    def apply(self, images: torch.Tensor, params: AugmentParams | AugmentDraws) -> torch.Tensor:
        """Apply given params or draws to a batch (`apply` with this module's settings)."""
        return apply(
            images,
            params,
            self.config,
            stats=self.stats,
            dtype=self.dtype,
            memory_format=self.memory_format,
            backend=self.backend,
        )

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        params: AugmentParams | AugmentDraws | None = None,
    ) -> torch.Tensor:
        """Augment a batch with fresh draws (or given params or draws); kept for replay."""
        if isinstance(params, AugmentParams):
            out = self.apply(images, params)
            self.last_params = params
            return out
        draws = self.sample_draws(images, generator) if params is None else params
        height, width = images.shape[2], images.shape[3]
        if resolve_backend(self.backend, images.device, self.dtype) == "triton":
            out = self.apply(images, draws)  # the kernel reads the draws; params when asked
            self._last_params = None
        else:  # the other backends need the params anyway: keep them
            self._last_params = params_from_draws(self.config, draws, height, width)
            out = self.apply(images, self._last_params)
        self._last_draws = (draws, height, width)
        return out

    @torch.no_grad()
    def fit(
        self,
        x: torch.Tensor | np.ndarray,
        augment: bool = False,
        rounds: int = 1,
        generator: torch.Generator | None = None,
    ) -> GPUAugment:
        """Compute the featurewise statistics on the data's device, as Keras' ``fit``.

        As Keras: ``rescale`` first; with ``augment``, ``rounds`` randomly augmented copies
        (warp, channel shift, flips, brightness; batched, one loop per round); then the
        per-channel mean over (N, H, W) if ``featurewise_center``; the per-channel std of the
        centred data if ``featurewise_std_normalization``; and if ``zca_whitening`` the matrix
        ``W = U diag(sqrt(N) / (s + zca_epsilon)) U^T`` from the SVD of the flattened centred
        data. Computed in float64 (float32 on MPS), stored float32. Keras flattens images
        channels-last, we channels-first; the matrices agree up to that permutation.

        Args:
            x: Sample images (N, C, H, W), channels first, uint8 or float on the 0..255 scale.
            augment: Fit on augmented copies.
            rounds: How many augmented copies with ``augment``.
            generator: Randomness for ``augment``.

        Returns:
            self, with the ``mean``, ``std`` and ``zca_matrix`` buffers set (those the config
            asks for) on ``x``'s device.

        Raises:
            ValueError: ``x`` is not 4-D, or ``rounds`` < 1.
        """
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
                stacklevel=2,
            )
        if not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"`rounds` must be an int >= 1; got {rounds!r}")
        cfg = self.config
        work = torch.float32 if x.device.type == "mps" else torch.float64
        x = x.to(work)
        if cfg.rescale:
            x = x * cfg.rescale
        if augment:
            n, _, h, w = x.shape
            copies = [
                _augment(x, sample_params(cfg, n, h, w, generator=generator, device=x.device), cfg)
                for _ in range(rounds)
            ]
            x = torch.cat(copies)
        stored = torch.float32
        if cfg.featurewise_center:
            mean = x.mean(dim=(0, 2, 3), keepdim=True)[0]
            x = x - mean
            self.mean = mean.to(stored)
        if cfg.featurewise_std_normalization:
            std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)[0]
            x = x / (std + 1e-6)
            self.std = std.to(stored)
        if cfg.zca_whitening:
            n = x.shape[0]
            flat = x.reshape(n, -1)
            _, s, vh = torch.linalg.svd(flat, full_matrices=False)
            u = vh.transpose(0, 1)  # the left singular vectors of flat.T, as Keras takes them
            s_inv = math.sqrt(n) / (s + cfg.zca_epsilon)
            self.zca_matrix = ((u * s_inv) @ u.transpose(0, 1)).to(stored)
        return self

    def extra_repr(self) -> str:
        settings = "; ".join(self.config.describe().splitlines())
        return f"{settings}; dtype={self.dtype}; backend={self.backend}"
