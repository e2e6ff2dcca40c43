"""The fused augmentation path: one Triton kernel per batch (two with a channel shift).

`apply_fused` is the ``"triton"`` backend of `gpuaug.augment.module.apply`. It does in one pass what
the reference path (`gpuaug.augment.reference.apply_reference`: `gpuaug.augment.warp.warp_affine` +
torch ops)
does in about 140 ops: for each output pixel, the kernel

1. reads its image's row of the batch's draws (`AugmentDraws`, B x 12 uniforms) and turns it
   into that image's parameters by Keras' rules (the same float32 arithmetic as
   `gpuaug.augment.module.params_from_draws`) and its 2x3 destination -> source matrix (float64
   trigonometry, as `gpuaug.augment.module.affine_matrix`; flips folded in). Given `AugmentParams`
   instead (replay), it reads their row;
2. computes the source point ``a00 x + (a01 y + b0)`` (multiply-adds, no TF32), folds it per
   the fill mode with scipy's semantics exactly as `gpuaug.augment.warp` documents ("nearest" clamp,
   "reflect" half-sample mirror, "constant" hard cut at the edge pixel centres with the same
   ``EDGE_TOLERANCE``, scipy's "wrap" of period n-1), and reads the uint8 (or float) source
   with bilinear or nearest (round half up) interpolation;
3. applies the channel shift (clipped to the warped image's own min/max), the brightness
   (clipped to 0..255), the rescale and the featurewise normalisation (per-channel mean, then
   ``/ (std + 1e-6)``, folded as `gpuaug.augment.module.standardize` folds them);
4. writes the output once, in float32 / bfloat16 / float16 (computed in float32, rounded to
   nearest even at the store) and in contiguous or channels_last strides.

Kernels per batch: one. A channel shift needs each warped image's min and max before it can
shift any pixel, so it adds a first pass of the same kernel that only reduces per-block
min/max (and one small partials buffer): two kernels. The book's settings (rotation, shifts,
shear, zoom, flip, fill, rescale) take one kernel and allocate only the output.

Not fused (they run after the kernel with the reference code, `gpuaug.augment.module.standardize`,
on a float32 intermediate that is then cast to the output dtype and memory format): a
``preprocessing_function``, the samplewise center/std (each needs the whole image's mean/std
after the warp) and ZCA whitening (a (CHW x CHW) matrix product). With any of them, the
kernel stops after the brightness, and the rescale / featurewise steps run in `standardize`
too, since Keras orders them after ``preprocessing_function``.

Exactness: equal to the reference within 1e-3 grey levels (0..255 scale) except at a
discontinuity (a "constant" edge, a "wrap" seam, a nearest tie within 1e-3 px), where a float
ulp can pick the other side (tests/test_fused.py, on the CPU under ``TRITON_INTERPRET=1``;
measured max 5e-5 at 150 x 150 on noise images). To get there the kernel rounds its
coordinates exactly as the reference does: the same float32 operations in the same order
(``a x + (b y + c)``), including ``grid_sample``'s normalise / unnormalise round trip for
bilinear sampling (skipping it would be more accurate by ~1e-5 px at 150 px, but differ from
the reference by up to 6e-3 grey levels on a steep edge). It is compiled with
``enable_fp_fusion=False`` for the same reason: no multiply-add is contracted into an FMA, so
the float32 arithmetic rounds as the reference's separate torch ops and the interpreter's
numpy do.

Streams: everything is enqueued on the current stream; nothing syncs the host.

Why one module (over 600 lines): the kernel, its compile-time plan and its launch are one
backend; the reference it is tested against lives in `gpuaug.augment.reference`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import Any

import torch

from gpuaug.augment.config import AugmentConfig, ShiftRange
from gpuaug.augment.params import AugmentDraws, AugmentParams, FitStats
from gpuaug.augment.reference import standardize
from gpuaug.augment.warp import EDGE_TOLERANCE

try:
    import triton
    import triton.language as tl

    _TRITON_ERROR: Exception | None = None
except Exception as err:  # pragma: no cover - triton missing or broken
    triton = None
    tl = None
    _TRITON_ERROR = err

__all__ = ["FUSED_DTYPES", "apply_fused", "check_usable", "triton_available"]

#: Output dtypes the kernel writes (computed in float32, rounded once at the store).
FUSED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)

_FILL_CODES = {"nearest": 0, "constant": 1, "reflect": 2, "wrap": 3}
_BLOCK_MAX = 1024
_BLOCK_MIN = 128  # one element per thread of 4 warps at least
_PARTS_MIN = 16
_MAX_GRID_Y = 65535


def triton_available() -> bool:
    """True when triton imports (the ``"auto"`` backend then takes this path on CUDA)."""
    return triton is not None


def check_usable(device: torch.device | str, dtype: torch.dtype) -> None:
    """Raise if the fused path cannot run on ``device`` with output ``dtype``.

    Raises:
        ImportError: triton does not import.
        ValueError: A CPU (or other non-CUDA) tensor without ``TRITON_INTERPRET=1``, or an
            output dtype the kernel does not write (float64: use the reference backend).
    """
    if triton is None:
        raise ImportError(
            f'`backend="triton"` needs triton, which does not import here ({_TRITON_ERROR}); '
            'use backend="reference" or "auto"'
        )
    device = torch.device(device)
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f'`backend="triton"` runs on CUDA tensors; got images on {device}. Use '
            'backend="reference" (or "auto") there, or set TRITON_INTERPRET=1 before triton is '
            "imported to run the kernel in Triton's (slow) CPU interpreter, as the tests do"
        )
    if dtype not in FUSED_DTYPES:
        raise ValueError(
            f'`backend="triton"` writes {[str(d) for d in FUSED_DTYPES]}; got dtype={dtype}. '
            'Use backend="reference" for float64'
        )


# ----------------------------------------------------------------------------- the kernel

if triton is not None:

    @triton.jit
    def _shift_value(u, u_sign, table_ptr, r, scale, n, MODE: tl.constexpr):
        """One axis of Keras' shift rule, as `gpuaug.augment.module._shift` (float32)."""
        if MODE == 0:
            value = u * 0.0
        elif MODE == 1:
            value = ((2.0 * u - 1.0) * r) * scale
        else:
            k = tl.minimum(tl.floor(u * n), n - 1.0)
            sign = tl.where(u_sign < 0.5, -1.0, 1.0)
            value = (tl.load(table_ptr + k.to(tl.int32)) * sign) * scale
        return value

    @triton.jit
    def _fold(coord, last, lo_in, hi_in, period, FILL: tl.constexpr):
        """Fold source coordinates into [0, last] as scipy's mode does; also 'inside'."""
        inside = (coord >= lo_in) & (coord <= hi_in)
        if FILL == 2:  # reflect: torch.remainder(coord + 0.5, 2n) (fmod, then into [0, 2n))
            u = (coord + 0.5) % period
            u = tl.where(u < 0.0, u + period, u)
            size = period * 0.5
            u = tl.where(u > size, period - u, u)
            coord = u - 0.5
        elif FILL == 3:  # wrap: scipy's NI_EXTEND_WRAP with period n - 1
            if last > 0.0:
                safe = tl.maximum(last, 1.0)
                low = coord + last * (tl.floor(tl.div_rn(-coord, safe)) + 1.0)
                high = coord - last * tl.floor(tl.div_rn(coord, safe))
                folded = tl.where(coord < 0.0, low, high)
                coord = tl.where(inside, coord, folded)
            else:
                coord = coord * 0.0
        return tl.minimum(tl.maximum(coord, 0.0), last), inside

    # H and W stay runtime values even when 1 (a 1-pixel axis): the kernel does float math on them.
    @triton.jit(do_not_specialize=["H", "W"])
    def _augment_kernel(
        src_ptr,
        out_ptr,
        rows_ptr,
        table_x_ptr,
        table_y_ptr,
        mean_ptr,
        std_ptr,
        part_ptr,
        H,
        W,
        s_b,
        s_c,
        s_h,
        s_w,
        o_b,
        o_c,
        o_h,
        o_w,
        row_stride,
        rotation,
        shift_x_r,
        shift_x_scale,
        shift_x_n,
        shift_y_r,
        shift_y_scale,
        shift_y_n,
        shear_r,
        zoom_lo,
        zoom_span,
        channel_r,
        bright_lo,
        bright_span,
        cval,
        rescale,
        lo_in_x,
        hi_in_x,
        lo_in_y,
        hi_in_y,
        scale_x,
        scale_y,
        n_blocks,
        C: tl.constexpr,
        FROM_DRAWS: tl.constexpr,
        GEOMETRY: tl.constexpr,
        FLIP_H: tl.constexpr,
        FLIP_V: tl.constexpr,
        SHIFT_X: tl.constexpr,
        SHIFT_Y: tl.constexpr,
        FILL: tl.constexpr,
        NEAREST: tl.constexpr,
        WARP: tl.constexpr,
        DIRECT: tl.constexpr,
        PASS: tl.constexpr,
        BRIGHTNESS: tl.constexpr,
        RESCALE: tl.constexpr,
        CENTER: tl.constexpr,
        STD: tl.constexpr,
        NORMALISE: tl.constexpr,
        OUT_BF16: tl.constexpr,
        BLOCK: tl.constexpr,
        PARTS: tl.constexpr,
    ):
        pid = tl.program_id(0)
        b = tl.program_id(1)
        row = rows_ptr + b * row_stride

        # ---- this image's parameters (Keras' rules) and its matrix
        # draws: angle, sx, sy, shear, zx, zy, fh, fv, ch, br, sign x, sign y
        # (gpuaug.augment.module)
        if FROM_DRAWS:
            angle = (2.0 * tl.load(row + 0) - 1.0) * rotation
            tx = _shift_value(
                tl.load(row + 1), tl.load(row + 10), table_x_ptr, shift_x_r, shift_x_scale,
                shift_x_n, SHIFT_X,
            )  # fmt: skip
            ty = _shift_value(
                tl.load(row + 2), tl.load(row + 11), table_y_ptr, shift_y_r, shift_y_scale,
                shift_y_n, SHIFT_Y,
            )  # fmt: skip
            shear = (2.0 * tl.load(row + 3) - 1.0) * shear_r
            zx = zoom_lo + zoom_span * tl.load(row + 4)
            zy = zoom_lo + zoom_span * tl.load(row + 5)
            flip_h = tl.load(row + 6) < 0.5
            flip_v = tl.load(row + 7) < 0.5
            shift = (2.0 * tl.load(row + 8) - 1.0) * channel_r
            bright = bright_lo + bright_span * tl.load(row + 9)
        else:  # an AugmentParams table: angle, sx, sy, shear, zx, zy, fh, fv, ch, br
            angle = tl.load(row + 0)
            tx = tl.load(row + 1)
            ty = tl.load(row + 2)
            shear = tl.load(row + 3)
            zx = tl.load(row + 4)
            zy = tl.load(row + 5)
            flip_h = tl.load(row + 6) != 0.0
            flip_v = tl.load(row + 7) != 0.0
            shift = tl.load(row + 8)
            bright = tl.load(row + 9)

        offs = pid * BLOCK + tl.arange(0, BLOCK)
        valid = offs < H * W
        oy = offs // W
        ox = offs - oy * W
        last_x = (W - 1).to(tl.float32)
        last_y = (H - 1).to(tl.float32)
        inside = valid
        if GEOMETRY:
            theta = angle.to(tl.float64) * 0.017453292519943295  # deg2rad: pi / 180, float64
            shear64 = shear.to(tl.float64) * 0.017453292519943295
            zx64 = zx.to(tl.float64)
            zy64 = zy.to(tl.float64)
            tx64 = tx.to(tl.float64)
            ty64 = ty.to(tl.float64)
            cos = tl.cos(theta)
            sin = tl.sin(theta)
            a00 = cos * zx64
            a10 = sin * zx64
            a01 = -zy64 * tl.sin(theta + shear64)
            a11 = zy64 * tl.cos(theta + shear64)
            if FLIP_H:
                fx = tl.where(flip_h, -1.0, 1.0).to(tl.float64)
                a00 = a00 * fx
                a10 = a10 * fx
            if FLIP_V:
                fy = tl.where(flip_v, -1.0, 1.0).to(tl.float64)
                a01 = a01 * fy
                a11 = a11 * fy
            cx = (W - 1).to(tl.float64) * 0.5
            cy = (H - 1).to(tl.float64) * 0.5
            b0 = cx + cos * tx64 - sin * ty64 - (a00 * cx + a01 * cy)
            b1 = cy + sin * tx64 + cos * ty64 - (a10 * cx + a11 * cy)
            m00 = a00.to(tl.float32)
            m01 = a01.to(tl.float32)
            m02 = b0.to(tl.float32)
            m10 = a10.to(tl.float32)
            m11 = a11.to(tl.float32)
            m12 = b1.to(tl.float32)
            fxs = ox.to(tl.float32)
            fys = oy.to(tl.float32)
            # Rounded as the reference rounds (gpuaug.augment.warp._warp_grid): the same float32
            # ops in
            # the same order, including grid_sample's normalise / unnormalise round trip for
            # bilinear sampling (x -> x * 2 / (n - 1) - 1 -> (g + 1) * (n - 1) / 2, ~1e-5 px at
            # 150 px: up to a few 1e-3 grey levels on a steep edge if skipped).
            if DIRECT:  # "nearest" fill, bilinear: normalised from the small terms, no fold
                gx = (m00 * fxs) * scale_x + ((m01 * fys + m02) * scale_x - 1.0)
                gy = (m10 * fxs) * scale_y + ((m11 * fys + m12) * scale_y - 1.0)
            else:
                sx = m00 * fxs + (m01 * fys + m02)  # the order of gpuaug.augment.warp._source_xy
                sy = m10 * fxs + (m11 * fys + m12)
                sx, in_x = _fold(sx, last_x, lo_in_x, hi_in_x, 2.0 * W, FILL)
                sy, in_y = _fold(sy, last_y, lo_in_y, hi_in_y, 2.0 * H, FILL)
                if FILL == 1:
                    inside = valid & in_x & in_y
                if NEAREST:  # integers: the round trip cannot move them by 0.5
                    sx = tl.minimum(tl.maximum(tl.floor(sx + 0.5), 0.0), last_x)
                    sy = tl.minimum(tl.maximum(tl.floor(sy + 0.5), 0.0), last_y)
                else:
                    gx = sx * scale_x - 1.0
                    gy = sy * scale_y - 1.0
            if not NEAREST:  # grid_sample: unnormalise (align_corners=True), border clamp
                sx = tl.minimum(tl.maximum((gx + 1.0) * (last_x * 0.5), 0.0), last_x)
                sy = tl.minimum(tl.maximum((gy + 1.0) * (last_y * 0.5), 0.0), last_y)
            x0f = tl.floor(sx)
            y0f = tl.floor(sy)
            wx = sx - x0f
            wy = sy - y0f
            x0 = x0f.to(tl.int32)
            y0 = y0f.to(tl.int32)
            x1 = tl.minimum(x0 + 1, W - 1)
            y1 = tl.minimum(y0 + 1, H - 1)
        elif WARP:  # flips only: whatever the params say, only the flips act (exact indices)
            x0 = ox
            y0 = oy
            if FLIP_H:
                x0 = tl.where(flip_h, W - 1 - ox, ox)
            if FLIP_V:
                y0 = tl.where(flip_v, H - 1 - oy, oy)
            x1 = x0
            y1 = y0
            wx = ox.to(tl.float32) * 0.0
            wy = wx
        else:  # no warp at all: read the same pixel
            x0 = ox
            y0 = oy
            x1 = ox
            y1 = oy
            wx = ox.to(tl.float32) * 0.0
            wy = wx

        base = src_ptr + b.to(tl.int64) * s_b
        out_base = out_ptr + b.to(tl.int64) * o_b
        lo = 0.0
        hi = 0.0
        if PASS == 2:  # this image's min / max from the first pass
            k = tl.arange(0, PARTS)
            kmask = k < n_blocks
            part = part_ptr + (b * n_blocks + k) * 2
            lo = tl.min(tl.where(kmask, tl.load(part, mask=kmask, other=0.0), float("inf")))
            hi = tl.max(tl.where(kmask, tl.load(part + 1, mask=kmask, other=0.0), float("-inf")))
        run_min = tl.full([BLOCK], float("inf"), tl.float32)
        run_max = tl.full([BLOCK], float("-inf"), tl.float32)
        for c in tl.static_range(C):
            plane = base + c * s_c
            v00 = tl.load(plane + y0 * s_h + x0 * s_w, mask=valid, other=0).to(tl.float32)
            if NEAREST:
                v = v00
            else:
                v01 = tl.load(plane + y0 * s_h + x1 * s_w, mask=valid, other=0).to(tl.float32)
                v10 = tl.load(plane + y1 * s_h + x0 * s_w, mask=valid, other=0).to(tl.float32)
                v11 = tl.load(plane + y1 * s_h + x1 * s_w, mask=valid, other=0).to(tl.float32)
                v = ((1.0 - wx) * (1.0 - wy)) * v00 + (wx * (1.0 - wy)) * v01
                v = v + ((1.0 - wx) * wy) * v10 + (wx * wy) * v11
            if FILL == 1:
                v = tl.where(inside, v, cval)
            if PASS == 1:
                run_min = tl.minimum(run_min, tl.where(valid, v, float("inf")))
                run_max = tl.maximum(run_max, tl.where(valid, v, float("-inf")))
            else:
                if PASS == 2:
                    v = tl.minimum(tl.maximum(v + shift, lo), hi)
                if BRIGHTNESS:
                    v = tl.minimum(tl.maximum(v * bright, 0.0), 255.0)
                if NORMALISE:
                    scale = 1.0
                    if RESCALE:
                        scale = rescale
                    offset = 0.0
                    if CENTER:
                        offset = 0.0 - tl.load(mean_ptr + c)
                    if STD:
                        inv = tl.div_rn(1.0, tl.load(std_ptr + c) + 1e-6)
                        scale = scale * inv
                        offset = offset * inv
                    v = v * scale + offset
                elif RESCALE:
                    v = v * rescale
                dst = out_base + c * o_c + oy * o_h + ox * o_w
                if OUT_BF16:  # round to nearest even by hand: the interpreter's cast truncates
                    bits = v.to(tl.uint32, bitcast=True)
                    bits = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
                    tl.store(dst, bits.to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=valid)
                else:
                    tl.store(dst, v.to(out_ptr.dtype.element_ty), mask=valid)
        if PASS == 1:
            part = part_ptr + (b * n_blocks + pid) * 2
            tl.store(part, tl.min(run_min))
            tl.store(part + 1, tl.max(run_max))


def _launch(kernel: Any, grid: tuple[int, ...], **kwargs: Any) -> None:
    """The one launch site (tests count launches by patching it)."""
    kernel[grid](**kwargs)


# ----------------------------------------------------------------------------- planning


def _shift_plan(r: ShiftRange, size: int) -> tuple[int, float, float, tuple[float, ...]]:
    """(mode, r, scale, choices) of one shift axis, as `gpuaug.augment.module._shift` reads it."""
    if not r:
        return 0, 0.0, 1.0, ()
    if isinstance(r, int):  # np.random.choice(n): 0 .. n-1, random sign, never scaled
        return 2, 0.0, 1.0, tuple(float(k) for k in range(r))
    if isinstance(r, tuple):
        return 2, 0.0, float(size) if max(r) < 1 else 1.0, tuple(float(v) for v in r)
    return 1, float(r), float(size) if r < 1 else 1.0, ()


@functools.lru_cache(maxsize=64)
def _plan(config: AugmentConfig, height: int, width: int) -> dict[str, Any]:
    """The kernel's scalar and constexpr arguments for a config and image size (cached)."""
    sx_mode, sx_r, sx_scale, sx_choices = _shift_plan(config.width_shift_range, width)
    sy_mode, sy_r, sy_scale, sy_choices = _shift_plan(config.height_shift_range, height)
    lo, hi = config.zoom_bounds
    zoom_lo, zoom_span = (1.0, 0.0) if lo == hi == 1 else (float(lo), float(hi - lo))
    if config.brightness_range is None:
        bright_lo, bright_span = 1.0, 0.0
    else:
        bright_lo = float(config.brightness_range[0])
        bright_span = float(config.brightness_range[1] - config.brightness_range[0])
    eps_x = EDGE_TOLERANCE * max(width, 1)
    eps_y = EDGE_TOLERANCE * max(height, 1)
    return {
        "scalars": {
            "rotation": float(config.rotation_range),
            "shift_x_r": sx_r,
            "shift_x_scale": sx_scale,
            "shift_x_n": float(len(sx_choices)),
            "shift_y_r": sy_r,
            "shift_y_scale": sy_scale,
            "shift_y_n": float(len(sy_choices)),
            "shear_r": float(config.shear_range),
            "zoom_lo": zoom_lo,
            "zoom_span": zoom_span,
            "channel_r": float(config.channel_shift_range),
            "bright_lo": bright_lo,
            "bright_span": bright_span,
            "cval": float(config.cval),
            "rescale": float(config.rescale) if config.rescale else 1.0,
            "lo_in_x": -eps_x,
            "hi_in_x": (width - 1) + eps_x,
            "lo_in_y": -eps_y,
            "hi_in_y": (height - 1) + eps_y,
            "scale_x": 2.0 / (width - 1) if width > 1 else 0.0,
            "scale_y": 2.0 / (height - 1) if height > 1 else 0.0,
        },
        "constexpr": {
            "GEOMETRY": config.has_geometry,
            "FLIP_H": config.horizontal_flip,
            "FLIP_V": config.vertical_flip,
            "SHIFT_X": sx_mode,
            "SHIFT_Y": sy_mode,
            "FILL": _FILL_CODES[config.fill_mode],
            "NEAREST": config.interpolation == "nearest",
            "WARP": config.has_geometry or config.has_flips,
            "DIRECT": config.fill_mode == "nearest" and config.interpolation == "bilinear",
            "BRIGHTNESS": config.brightness_range is not None,
        },
        "choices": (sx_choices, sy_choices),
    }


_TABLES: dict[tuple[tuple[float, ...], torch.device], torch.Tensor] = {}


def _choice_table(choices: tuple[float, ...], device: torch.device) -> torch.Tensor | None:
    """A shift range's choices as a float32 tensor on ``device``, made once and kept."""
    if not choices:
        return None
    key = (choices, device)
    if key not in _TABLES:
        _TABLES[key] = torch.tensor(choices, dtype=torch.float32, device=device)
    return _TABLES[key]


def _unfused_tail(config: AugmentConfig) -> bool:
    """True when a stage after the brightness cannot be fused (it runs in `standardize`)."""
    return (
        config.preprocessing_function is not None
        or config.samplewise_center
        or config.samplewise_std_normalization
        or config.zca_whitening
    )


def _featurewise(
    config: AugmentConfig, stats: FitStats | None, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The fitted mean / std as flat float32 on ``device``; warns and skips as `standardize`."""
    mean = std = None
    if config.featurewise_center:
        if stats is None or stats.mean is None:
            warnings.warn(
                "`featurewise_center` is on but the augmenter has not been fit; call "
                "GPUAugment.fit(x) first. Skipping it.",
                UserWarning,
                stacklevel=4,
            )
        else:
            mean = stats.mean.to(device=device, dtype=torch.float32).reshape(-1)
    if config.featurewise_std_normalization:
        if stats is None or stats.std is None:
            warnings.warn(
                "`featurewise_std_normalization` is on but the augmenter has not been fit; "
                "call GPUAugment.fit(x) first. Skipping it.",
                UserWarning,
                stacklevel=4,
            )
        else:
            std = stats.std.to(device=device, dtype=torch.float32).reshape(-1)
    return mean, std


def _params_table(params: AugmentParams) -> torch.Tensor:
    """(B, 10) float32 rows: angle, shift x, shift y, shear, zoom x, zoom y, flips, channel,
    brightness (the replay path; the draws path reads the draws directly)."""
    columns = [
        params.angle_deg,
        params.shift_px[:, 0],
        params.shift_px[:, 1],
        params.shear_deg,
        params.zoom[:, 0],
        params.zoom[:, 1],
        params.flip_h.to(torch.float32),
        params.flip_v.to(torch.float32),
        params.channel_shift,
        params.brightness,
    ]
    return torch.stack([c.to(torch.float32) for c in columns], dim=1)


def apply_fused(
    images: torch.Tensor,
    params: AugmentParams | AugmentDraws,
    config: AugmentConfig,
    *,
    stats: FitStats | None = None,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Augment a batch with the fused kernel: `gpuaug.augment.module.apply`'s ``"triton"`` backend.

    Takes what `gpuaug.augment.module.apply` takes (already validated there: call that, with
    ``backend="triton"`` or ``"auto"``, rather than this).

    Args:
        images: (B, C, H, W) uint8 or float on the 0..255 scale, any strides.
        params: The batch's `AugmentDraws` (the fast path: one kernel reads them) or
            `AugmentParams` (replay: stacked into a (B, 10) table first).
        config: The settings.
        stats: Fitted featurewise statistics.
        dtype: float32, bfloat16 or float16.
        memory_format: The output's strides (contiguous or channels_last).

    Returns:
        (B, C, H, W) ``dtype`` in ``memory_format``, on the images' device.
    """
    check_usable(images.device, dtype)
    b, c, height, width = images.shape
    tail = _unfused_tail(config)
    kernel_dtype = torch.float32 if tail else dtype
    kernel_format = torch.contiguous_format if tail else memory_format
    out = torch.empty(
        (b, c, height, width), dtype=kernel_dtype, device=images.device, memory_format=kernel_format
    )
    if b and c and height and width:
        _run(images, params, config, stats, out, tail, isinstance(params, AugmentDraws))
    if tail:
        out = standardize(out, config, stats).to(dtype=dtype, memory_format=memory_format)
    return out


def _run(
    images: torch.Tensor,
    params: AugmentParams | AugmentDraws,
    config: AugmentConfig,
    stats: FitStats | None,
    out: torch.Tensor,
    tail: bool,
    from_draws: bool,
) -> None:
    b, c, height, width = images.shape
    device = images.device
    try:
        plan = _plan(config, height, width)
    except TypeError:  # an unhashable preprocessing_function: plan without the cache
        plan = _plan.__wrapped__(config, height, width)
    if isinstance(params, AugmentDraws):
        rows = params.uniforms
    else:
        rows = _params_table(params)
    if rows.stride(1) != 1:
        rows = rows.contiguous()
    mean, std = (None, None) if tail else _featurewise(config, stats, device)
    for name, value in (("mean", mean), ("std", std)):
        if value is not None and value.numel() != c:  # the kernel reads one value per channel
            raise ValueError(
                f"the fitted featurewise {name} has {value.numel()} channels; this batch has {c}"
            )
    table_x = _choice_table(plan["choices"][0], device)
    table_y = _choice_table(plan["choices"][1], device)
    block = min(_BLOCK_MAX, max(_BLOCK_MIN, triton.next_power_of_2(height * width)))
    n_blocks = triton.cdiv(height * width, block)
    channel = bool(config.channel_shift_range)
    parts = torch.empty((b, n_blocks, 2), dtype=torch.float32, device=device) if channel else out
    args = {
        "src_ptr": images,
        "out_ptr": out,
        "rows_ptr": rows,
        "table_x_ptr": table_x if table_x is not None else rows,
        "table_y_ptr": table_y if table_y is not None else rows,
        "mean_ptr": mean if mean is not None else rows,
        "std_ptr": std if std is not None else rows,
        "part_ptr": parts,
        "H": height,
        "W": width,
        "s_b": images.stride(0),
        "s_c": images.stride(1),
        "s_h": images.stride(2),
        "s_w": images.stride(3),
        "o_b": out.stride(0),
        "o_c": out.stride(1),
        "o_h": out.stride(2),
        "o_w": out.stride(3),
        "row_stride": rows.stride(0),
        "n_blocks": n_blocks,
        **plan["scalars"],
        **plan["constexpr"],
        "C": c,
        "FROM_DRAWS": from_draws,
        "RESCALE": bool(config.rescale) and not tail,
        "CENTER": mean is not None,
        "STD": std is not None,
        "NORMALISE": mean is not None or std is not None,
        "OUT_BF16": out.dtype == torch.bfloat16,
        "BLOCK": block,
        "PARTS": max(_PARTS_MIN, triton.next_power_of_2(n_blocks)),
        # No FMA contraction: the float32 arithmetic rounds as the reference's separate ops
        # (and the interpreter's numpy) do, so the GPU agrees with them to the bit on the
        # coordinates. Costs nothing measurable in a kernel bound by memory.
        "enable_fp_fusion": False,
        "num_warps": 4,
    }
    passes = (1, 2) if channel else (0,)  # pass 1: per-block min / max; pass 2 reads them
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        for start in range(0, b, _MAX_GRID_Y):  # CUDA's grid y is at most 65535 images
            stop = min(b, start + _MAX_GRID_Y)
            if (start, stop) != (0, b):  # views of the chunk: no copies
                args |= {
                    "src_ptr": images[start:stop],
                    "out_ptr": out[start:stop],
                    "rows_ptr": rows[start:stop],
                    "part_ptr": parts[start:stop],
                }
            for p in passes:
                _launch(_augment_kernel, (n_blocks, stop - start), PASS=p, **args)
