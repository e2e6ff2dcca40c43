"""The random parameters of a batch: draws, Keras' rules, and the 2x3 matrix per sample.

Two steps, as in Keras' ``get_random_transform``: `sample_draws` draws everything random about
a batch, one ``torch.rand((B, 12))`` on the *generator's* device (the CPU for a
``torch.Generator()``), moved to the batch's device without a host sync; `params_from_draws`
turns them into `AugmentParams` by Keras' rules (`sample_params` does both). The same seed gives
the same params on every device. `affine_matrix` composes rotation, shift, shear, zoom and the
flips into one 2x3 matrix per sample.

Conventions (pinned by tests against Keras 3's legacy ``ImageDataGenerator``):

- Coordinates: x is horizontal (columns), y is vertical (rows), pixel centres at integers, the
  image centre at ((W - 1) / 2, (H - 1) / 2).
- The matrix maps each *output* pixel to the *input* point it reads, as Keras/scipy: with
  ``T = R(angle) @ Shift(shift_px) @ Shear(shear) @ Zoom(zoom)`` about the centre,
  ``src = c + T (dst - c)``. So a positive ``shift_px[:, 0]`` moves the content left, a zoom
  factor > 1 shows more of the image (content smaller), a positive angle turns the content
  counter-clockwise on screen (y points down). These are exactly Keras' ``theta, tx, ty,
  shear, zx, zy`` (`AugmentParams.to_keras`).

Where we differ from Keras, on purpose:

- Keras draws ``tx`` (applied horizontally) from ``height_shift_range`` scaled by the image
  *height*, and ``ty`` (vertical) from ``width_shift_range`` scaled by the *width*, so its
  ``height_shift_range`` moves images sideways. We follow its documentation:
  ``width_shift_range`` -> horizontal shift, a fraction of the width.
- Keras rotates, shears and zooms a non-square image about ((H - 1) / 2, (W - 1) / 2) read as
  (x, y), not about its centre (``transform_matrix_offset_center`` gets (h, w) but the matrix
  is in (x, y)). We use the true centre. For square images both agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gpuaug.augment.config import AugmentConfig, ShiftRange
from gpuaug.device import PinnedStaging, host_to_device, params_to_device

__all__ = [
    "AugmentDraws",
    "AugmentParams",
    "FitStats",
    "affine_matrix",
    "params_from_draws",
    "sample_draws",
    "sample_params",
]

# Columns of the one uniform draw per batch (the generator's consumption is fixed per sample).
_ANGLE, _SHIFT_X, _SHIFT_Y, _SHEAR, _ZOOM_X, _ZOOM_Y = range(6)
_FLIP_H, _FLIP_V, _CHANNEL, _BRIGHTNESS, _SIGN_X, _SIGN_Y = range(6, 12)
_N_DRAWS = 12
_CPU = torch.device("cpu")


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
        """The same params on ``device`` (no host sync for a CPU -> CUDA move)."""
        return params_to_device(self, device)

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

    @classmethod
    def _drawn(cls, uniforms: torch.Tensor) -> AugmentDraws:
        """Draws just made by `sample_draws` ((B, 12) float32 by construction): not checked
        again, a microsecond less per batch."""
        draws = object.__new__(cls)
        object.__setattr__(draws, "uniforms", uniforms)
        return draws

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
    staging: PinnedStaging | None = None,
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
        staging: For a CPU -> CUDA move, reused pinned buffers (`gpuaug.device.PinnedStaging`)
            that ``torch.rand(..., out=)`` fills, instead of a pinned copy per call: the same
            draws.

    Returns:
        The batch's `AugmentDraws` on ``device``.

    Shape:
        -> uniforms (B, 12) float32 in [0, 1), on ``device``.

    Raises:
        ValueError: A negative batch size.
    """
    if type(batch_size) is not int and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer)
    ):
        raise TypeError(f"`batch_size` must be an int; got {batch_size!r}")
    if batch_size < 0:
        raise ValueError(f"`batch_size` must be >= 0; got {batch_size}")
    if generator is None:
        draw_device = _CPU
    elif isinstance(generator, torch.Generator):
        draw_device = generator.device
    else:
        raise TypeError(f"`generator` must be a torch.Generator; got {type(generator).__name__}")
    if device is None:
        device = draw_device
    elif not isinstance(device, torch.device):
        device = torch.device(device)
    shape = (int(batch_size), _N_DRAWS)
    if (
        staging is not None
        and device.type == "cuda"
        and draw_device.type == "cpu"
        and torch.cuda.is_available()  # not for fake CUDA tensors (tracing, tests)
        # under CUDA graph capture an event cannot be queried, and a replay would read a
        # buffer the ring fills again: a pinned copy of its own (`host_to_device`)
        and not torch.cuda.is_current_stream_capturing()
    ):
        u = staging.to_device(
            lambda out: torch.rand(shape, generator=generator, out=out),
            shape,
            torch.float32,
            device,
        )
        return AugmentDraws._drawn(u)
    u = torch.rand(shape, generator=generator, device=draw_device)
    return AugmentDraws._drawn(host_to_device(u, device))


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
