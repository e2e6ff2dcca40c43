"""The fused augmentation path: a prologue and one Triton kernel per batch (two with a channel
shift).

`apply_fused` is the ``"triton"`` backend of `gpuaug.augment.module.apply`. It does in one pass
what the reference path (`gpuaug.augment.reference.apply_reference`:
`gpuaug.augment.warp.warp_affine` + torch ops) does in about 140 ops:

0. the prologue (`_matrix_kernel`, one thread per image) turns each image's row of the draws
   (`AugmentDraws`, B x 12 uniforms) into its parameters by Keras' rules (the same float32
   arithmetic as `gpuaug.augment.params.params_from_draws`) and its 2x3 destination -> source
   matrix (float64 trigonometry, as `gpuaug.augment.params.affine_matrix`; flips folded in),
   and writes a B x 8 table: the matrix, the channel shift, the brightness (`matrix_table`).
   Given `AugmentParams` instead (replay), it reads their row;
1. the main kernel (`_augment_kernel`) reads its image's row of the table once per thread and,
   for each output pixel, computes the source point ``a00 x + (a01 y + b0)`` (multiply-adds,
   no TF32), folds it per the fill mode with scipy's semantics exactly as `gpuaug.augment.warp`
   documents ("nearest" clamp, "reflect" half-sample mirror, "constant" hard cut at the edge
   pixel centres with the same ``EDGE_TOLERANCE``, scipy's "wrap" of period n-1), and reads
   the uint8 (or float) source with bilinear or nearest (round half up) interpolation;
2. applies the channel shift (clipped to the warped image's own min/max), the brightness
   (clipped to 0..255), the rescale and the featurewise normalisation (per-channel mean, then
   ``/ (std + 1e-6)``, folded as `gpuaug.augment.reference.standardize` folds them);
3. writes the output once, in float32 / bfloat16 / float16 (computed in float32, rounded to
   nearest even at the store) and in contiguous or channels_last strides.

Layout: a program is a tile of BLOCK_H x 8 output pixels of one image (grid: tiles x images),
one pixel per lane, so each warp's load covers 4 rows x 8 columns: the footprint that touches
the fewest 128-byte lines of the source per gather (~5.5 on average for the book's settings
at 150 x 150, against ~23 for 4 pixels per thread along x with 16-byte stores;
`benchmarks.kernel_model` simulates it). The stores are one 4-byte (2-byte) store per value,
each warp's covering 4 rows x 32 bytes. An RGBX source (the first channels of a (B, H, W, 4)
uint8 buffer, 4-byte aligned: `_rgbx`) is read with one 32-bit load per tap for all channels
instead of one byte per tap and channel. The budgets (registers, instructions per pixel, no
spills) are checked on the compiled sm_90 code by tests/test_kernel_budgets.py.

Kernels per batch: the prologue and one. A channel shift needs each warped image's min and max
before it can shift any pixel, so it adds a first pass of the same kernel that only reduces
per-tile min/max (and one small partials buffer): three. The book's settings (rotation,
shifts, shear, zoom, flip, fill, rescale) allocate the output and the B x 8 table.

Host side: what does not change from batch to batch (the scalars, constexprs, strides, the
shift-choice tables, the featurewise vectors) is planned once per (config, stats, input and
output shape / strides / dtype, device) and kept (`_Launches`); `GPUAugment` keeps a
`FusedPlan` per batch kind (`plan_fused`: checked once). The first batch of a kind launches
through Triton; later ones hand the kept compiled kernels' launchers the argument lists kept
from it with the batch's tensors swapped in (`_kept_launcher`): a batch allocates its output
and table, fills in its pointers and launches.

Not fused (they run after the kernel with the reference code,
`gpuaug.augment.reference.standardize`, on a float32 intermediate that is then cast to the
output dtype and memory format): a ``preprocessing_function``, the samplewise center/std
(each needs the whole image's mean/std after the warp) and ZCA whitening (a (CHW x CHW)
matrix product). With any of them, the kernel stops after the brightness, and the rescale /
featurewise steps run in `standardize` too, since Keras orders them after
``preprocessing_function``.

Exactness: equal to the reference within 1e-3 grey levels (0..255 scale) except at a
discontinuity (a "constant" edge, a "wrap" seam, a nearest tie within 1e-3 px), where a float
ulp can pick the other side (tests/test_fused.py, on the CPU under ``TRITON_INTERPRET=1``;
measured max 5e-5 at 150 x 150 on noise images). To get there the kernel rounds its
coordinates exactly as the reference does: the same float32 operations in the same order
(``a x + (b y + c)``), including ``grid_sample``'s normalise / unnormalise round trip for
bilinear sampling (skipping it would be more accurate by ~1e-5 px at 150 px, but differ from
the reference by up to 6e-3 grey levels on a steep edge). It is compiled with
``enable_fp_fusion=False`` for the same reason: none of the kernel's own multiply-adds is
contracted into an FMA, so the float32 arithmetic rounds as the reference's separate torch ops
and the interpreter's numpy do. Two kinds of FMA remain, both exact by construction: the one
each ``%`` ("reflect"'s remainder) lowers to in the PTX, and those ptxas uses to implement a
correctly rounded division (``div.rn``: "wrap", "reflect", the featurewise std).

Streams: everything is enqueued on the current stream; nothing syncs the host.

Why one module (over 600 lines): the kernel, its compile-time plan and its launch are one
backend; the reference it is tested against lives in `gpuaug.augment.reference`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from gpuaug.augment.config import AugmentConfig, ShiftRange
from gpuaug.augment.params import AugmentDraws, AugmentParams, FitStats
from gpuaug.augment.reference import standardize
from gpuaug.augment.warp import EDGE_TOLERANCE

try:
    import triton
    import triton.language as tl
    from triton import knobs as _KNOBS
    from triton.runtime.driver import driver as _DRIVER

    _TRITON_ERROR: Exception | None = None
except Exception as err:  # pragma: no cover - triton missing or broken
    triton = None
    tl = None
    _KNOBS = _DRIVER = None
    _TRITON_ERROR = err

__all__ = [
    "FUSED_DTYPES",
    "FusedPlan",
    "apply_fused",
    "check_usable",
    "compile_ahead",
    "matrix_table",
    "plan_fused",
    "triton_available",
]

#: Output dtypes the kernel writes (computed in float32, rounded once at the store).
FUSED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)

_FILL_CODES = {"nearest": 0, "constant": 1, "reflect": 2, "wrap": 3}
_NUM_WARPS = 4
_BLOCK_W = 8  # columns of a program's tile: a warp covers 4 rows x 8 columns
_BLOCK_HEIGHTS = (64, 32, 16)  # rows of a program's tile (16 = one pixel per thread)
_MATRIX_BLOCK = 128  # images per program of the prologue
_MATRIX_COLUMNS = 8  # a00, a01, b0, a10, a11, b1, channel shift, brightness
_PARTS_MIN = 16
_MAX_GRID_Y = 65535


def triton_available() -> bool:
    """True when triton imports (the ``"auto"`` backend then takes this path on CUDA)."""
    return triton is not None


_USABLE: set[tuple[torch.device, torch.dtype]] = set()


def check_usable(device: torch.device | str, dtype: torch.dtype) -> None:
    """Raise if the fused path cannot run on ``device`` with output ``dtype``.

    A (CUDA device, dtype) that passed once is remembered (the check runs once per batch kind,
    not per call); a CPU device is checked every time (``TRITON_INTERPRET`` may change).

    Raises:
        ImportError: triton does not import.
        ValueError: A CPU (or other non-CUDA) tensor without ``TRITON_INTERPRET=1``, or an
            output dtype the kernel does not write (float64: use the reference backend).
    """
    if (device, dtype) in _USABLE:
        return
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
    if device.type == "cuda":
        _USABLE.add((device, dtype))


# ----------------------------------------------------------------------------- the kernel

if triton is not None:

    @triton.jit
    def _shift_value(u, u_sign, table_ptr, r, scale, n, MODE: tl.constexpr):
        """One axis of Keras' shift rule, as `gpuaug.augment.params._shift` (float32)."""
        if MODE == 0:
            value = u * 0.0
        elif MODE == 1:
            value = ((2.0 * u - 1.0) * r) * scale
        else:
            k = tl.minimum(tl.floor(u * n), n - 1.0)
            sign = tl.where(u_sign < 0.5, -1.0, 1.0)
            value = (tl.load(table_ptr + k.to(tl.int32)) * sign) * scale
        return value

    @triton.jit(do_not_specialize=["B", "H", "W"])
    def _matrix_kernel(
        rows_ptr,
        table_x_ptr,
        table_y_ptr,
        mat_ptr,
        B,
        H,
        W,
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
        FROM_DRAWS: tl.constexpr,
        GEOMETRY: tl.constexpr,
        FLIP_H: tl.constexpr,
        FLIP_V: tl.constexpr,
        SHIFT_X: tl.constexpr,
        SHIFT_Y: tl.constexpr,
        BLOCK_B: tl.constexpr,
    ):
        """The prologue: one `_MATRIX_COLUMNS` row per image (its matrix, shift, brightness)."""
        i = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        keep = i < B
        row = rows_ptr + i * row_stride
        # draws: angle, sx, sy, shear, zx, zy, fh, fv, ch, br, sign x, sign y
        # (gpuaug.augment.params); Keras' rules in float32, as `params_from_draws`
        if FROM_DRAWS:
            angle = (2.0 * tl.load(row + 0, mask=keep, other=0.5) - 1.0) * rotation
            tx = _shift_value(
                tl.load(row + 1, mask=keep, other=0.5), tl.load(row + 10, mask=keep, other=0.5),
                table_x_ptr, shift_x_r, shift_x_scale, shift_x_n, SHIFT_X,
            )  # fmt: skip
            ty = _shift_value(
                tl.load(row + 2, mask=keep, other=0.5), tl.load(row + 11, mask=keep, other=0.5),
                table_y_ptr, shift_y_r, shift_y_scale, shift_y_n, SHIFT_Y,
            )  # fmt: skip
            shear = (2.0 * tl.load(row + 3, mask=keep, other=0.5) - 1.0) * shear_r
            zx = zoom_lo + zoom_span * tl.load(row + 4, mask=keep, other=0.0)
            zy = zoom_lo + zoom_span * tl.load(row + 5, mask=keep, other=0.0)
            flip_h = tl.load(row + 6, mask=keep, other=1.0) < 0.5
            flip_v = tl.load(row + 7, mask=keep, other=1.0) < 0.5
            shift = (2.0 * tl.load(row + 8, mask=keep, other=0.5) - 1.0) * channel_r
            bright = bright_lo + bright_span * tl.load(row + 9, mask=keep, other=0.0)
        else:  # an AugmentParams table: angle, sx, sy, shear, zx, zy, fh, fv, ch, br
            angle = tl.load(row + 0, mask=keep, other=0.0)
            tx = tl.load(row + 1, mask=keep, other=0.0)
            ty = tl.load(row + 2, mask=keep, other=0.0)
            shear = tl.load(row + 3, mask=keep, other=0.0)
            zx = tl.load(row + 4, mask=keep, other=1.0)
            zy = tl.load(row + 5, mask=keep, other=1.0)
            flip_h = tl.load(row + 6, mask=keep, other=0.0) != 0.0
            flip_v = tl.load(row + 7, mask=keep, other=0.0) != 0.0
            shift = tl.load(row + 8, mask=keep, other=0.0)
            bright = tl.load(row + 9, mask=keep, other=1.0)
        fx = tl.where(flip_h, -1.0, 1.0)
        fy = tl.where(flip_v, -1.0, 1.0)
        if not FLIP_H:
            fx = fx * 0.0 + 1.0
        if not FLIP_V:
            fy = fy * 0.0 + 1.0
        out = mat_ptr + i * 8
        if GEOMETRY:  # float64, as `gpuaug.augment.params.affine_matrix`; flips folded in
            theta = angle.to(tl.float64) * 0.017453292519943295  # deg2rad: pi / 180, float64
            shear64 = shear.to(tl.float64) * 0.017453292519943295
            zx64 = zx.to(tl.float64)
            zy64 = zy.to(tl.float64)
            tx64 = tx.to(tl.float64)
            ty64 = ty.to(tl.float64)
            cos = tl.cos(theta)
            sin = tl.sin(theta)
            a00 = (cos * zx64) * fx.to(tl.float64)
            a10 = (sin * zx64) * fx.to(tl.float64)
            a01 = (-zy64 * tl.sin(theta + shear64)) * fy.to(tl.float64)
            a11 = (zy64 * tl.cos(theta + shear64)) * fy.to(tl.float64)
            cx = (W - 1).to(tl.float64) * 0.5
            cy = (H - 1).to(tl.float64) * 0.5
            b0 = cx + cos * tx64 - sin * ty64 - (a00 * cx + a01 * cy)
            b1 = cy + sin * tx64 + cos * ty64 - (a10 * cx + a11 * cy)
            tl.store(out + 0, a00.to(tl.float32), mask=keep)
            tl.store(out + 1, a01.to(tl.float32), mask=keep)
            tl.store(out + 2, b0.to(tl.float32), mask=keep)
            tl.store(out + 3, a10.to(tl.float32), mask=keep)
            tl.store(out + 4, a11.to(tl.float32), mask=keep)
            tl.store(out + 5, b1.to(tl.float32), mask=keep)
        else:  # flips only: the signs, read as exact integer index maps by the main kernel
            zero = fx * 0.0
            tl.store(out + 0, fx, mask=keep)
            tl.store(out + 1, zero, mask=keep)
            tl.store(out + 2, zero, mask=keep)
            tl.store(out + 3, zero, mask=keep)
            tl.store(out + 4, fy, mask=keep)
            tl.store(out + 5, zero, mask=keep)
        tl.store(out + 6, shift, mask=keep)
        tl.store(out + 7, bright, mask=keep)

    @triton.jit
    def _tap(pointer, valid, MASKED: tl.constexpr):
        """One source value as float32 (masked where the index may leave the image)."""
        if MASKED:
            value = tl.load(pointer, mask=valid, other=0)
        else:
            value = tl.load(pointer)
        return value.to(tl.float32)

    @triton.jit
    def _word(pointer, valid, MASKED: tl.constexpr):
        """One RGBX pixel as a 32-bit word (masked where the index may leave the image)."""
        if MASKED:
            value = tl.load(pointer, mask=valid, other=0)
        else:
            value = tl.load(pointer)
        return value

    @triton.jit
    def _byte(word, c: tl.constexpr):
        """Channel ``c`` of an RGBX word (little-endian: R in the low byte) as float32."""
        return ((word >> (8 * c)) & 0xFF).to(tl.float32)

    @triton.jit
    def _fold(coord, last, lo_in, hi_in, period, FILL: tl.constexpr):
        """Fold source coordinates into [0, last] as scipy's mode does; also 'inside'."""
        inside = (coord >= lo_in) & (coord <= hi_in)
        if FILL == 2:  # reflect: torch.remainder(coord + 0.5, 2n) (fmod, then into [0, 2n))
            u = (coord + 0.5) % period  # lowers to div + trunc + one fma: the exact remainder
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

    # H and W stay runtime values even when 1 (a 1-pixel axis): the kernel does float math on
    # them. The strides are not specialised on their divisibility either, so that the layout
    # Triton picks (one pixel per lane, a 4 x 8 pixel footprint per warp) is the same for every
    # image size.
    @triton.jit(
        do_not_specialize=[
            "H", "W", "s_b", "s_c", "s_h", "s_w", "o_b", "o_c", "o_h", "o_w", "n_blocks",
        ]
    )  # fmt: skip
    def _augment_kernel(
        src_ptr,
        out_ptr,
        mat_ptr,
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
        GEOMETRY: tl.constexpr,
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
        WORDS: tl.constexpr,
        BLOCK_H: tl.constexpr,
        BLOCK_W: tl.constexpr,
        PARTS: tl.constexpr,
    ):
        pid = tl.program_id(0)
        b = tl.program_id(1)
        # ---- this image's row of the prologue's table: 8 floats, the same for every pixel
        row = mat_ptr + b * 8
        m00 = tl.load(row + 0)
        m01 = tl.load(row + 1)
        m02 = tl.load(row + 2)
        m10 = tl.load(row + 3)
        m11 = tl.load(row + 4)
        m12 = tl.load(row + 5)

        # A program is a BLOCK_H x BLOCK_W tile of the image (no division per pixel); with
        # BLOCK_W = 8 and 4 warps, each warp's load covers 4 rows x 8 columns, the compact
        # footprint that touches the fewest 128-byte lines of the source (benchmarks/kernel_model).
        tiles_x = tl.cdiv(W, BLOCK_W)
        tile_y = pid // tiles_x
        tile_x = pid - tile_y * tiles_x
        oy = tile_y * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
        ox = tile_x * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
        valid = (oy < H) & (ox < W)
        last_x = (W - 1).to(tl.float32)
        last_y = (H - 1).to(tl.float32)
        inside = valid
        if GEOMETRY:
            fxs = ox.to(tl.float32)
            fys = oy.to(tl.float32)
            # Rounded as the reference rounds (gpuaug.augment.warp._warp_grid): the same float32
            # ops in the same order, including grid_sample's normalise / unnormalise round trip
            # for bilinear sampling (x -> x * 2 / (n - 1) - 1 -> (g + 1) * (n - 1) / 2, ~1e-5 px
            # at 150 px: up to a few 1e-3 grey levels on a steep edge if skipped).
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
        elif WARP:  # flips only (the table holds the signs): exact indices
            x0 = tl.where(m00 < 0.0, W - 1 - ox, ox)
            y0 = tl.where(m11 < 0.0, H - 1 - oy, oy)
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

        if WORDS:  # an RGBX source: 4 bytes per pixel, one 32-bit load per tap (strides in words)
            base = src_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + b.to(tl.int64) * s_b
        else:
            base = src_ptr + b.to(tl.int64) * s_b
        out_base = out_ptr + b.to(tl.int64) * o_b
        # the four taps' offsets in a plane, and their weights, shared by every channel
        t00 = y0 * s_h + x0 * s_w
        if not NEAREST:
            t01 = y0 * s_h + x1 * s_w
            t10 = y1 * s_h + x0 * s_w
            t11 = y1 * s_h + x1 * s_w
            w00 = (1.0 - wx) * (1.0 - wy)
            w01 = wx * (1.0 - wy)
            w10 = (1.0 - wx) * wy
            w11 = wx * wy
        dst0 = oy * o_h + ox * o_w
        lo = 0.0
        hi = 0.0
        shift = 0.0
        bright = 1.0
        if PASS == 2:  # this image's min / max from the first pass
            shift = tl.load(row + 6)
            k = tl.arange(0, PARTS)
            kmask = k < n_blocks
            part = part_ptr + (b * n_blocks + k) * 2
            lo = tl.min(tl.where(kmask, tl.load(part, mask=kmask, other=0.0), float("inf")))
            hi = tl.max(tl.where(kmask, tl.load(part + 1, mask=kmask, other=0.0), float("-inf")))
        if BRIGHTNESS:
            bright = tl.load(row + 7)
        run_min = tl.full([BLOCK_H, BLOCK_W], float("inf"), tl.float32)
        run_max = tl.full([BLOCK_H, BLOCK_W], float("-inf"), tl.float32)
        # With a warp the taps are clamped into the image for every lane, the tile's padding
        # included: the gathers need no mask (nor the select that a masked load adds).
        if WORDS:  # every channel of a tap in one load
            q00 = _word(base + t00, valid, not GEOMETRY)
            if not NEAREST:
                q01 = _word(base + t01, valid, not GEOMETRY)
                q10 = _word(base + t10, valid, not GEOMETRY)
                q11 = _word(base + t11, valid, not GEOMETRY)
        for c in tl.static_range(C):
            if WORDS:
                v00 = _byte(q00, c)
            else:
                plane = base + c * s_c
                v00 = _tap(plane + t00, valid, not GEOMETRY)
            if NEAREST:
                v = v00
            else:
                if WORDS:
                    v01 = _byte(q01, c)
                    v10 = _byte(q10, c)
                    v11 = _byte(q11, c)
                else:
                    v01 = _tap(plane + t01, valid, not GEOMETRY)
                    v10 = _tap(plane + t10, valid, not GEOMETRY)
                    v11 = _tap(plane + t11, valid, not GEOMETRY)
                v = w00 * v00 + w01 * v01
                v = v + w10 * v10 + w11 * v11
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
                dst = out_base + c * o_c + dst0
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


def _launch(
    kernel: Any,
    grid: tuple[int, ...],
    *,
    launch_slot: dict[str, Any] | None = None,
    launch_guard: tuple[Any, ...] | None = (),
    **kwargs: Any,
) -> None:
    """The one launch site through Triton (tests count launches by patching it).

    ``kernel[grid](**kwargs)``: Triton binds the arguments, computes the specialisation and
    finds (or compiles) the kernel, ~40-85 us of Python for these ~40 arguments. It returns the
    compiled kernel, which ``launch_slot`` (one per launch kind, in `_Launches`) keeps as a
    `_Kept` with ``launch_guard`` (what Triton specialises on that can change between batches of
    one kind: the pointers' 16-byte alignment, the draws' row stride) and the arguments in the
    kernel's order, so that later batches of the kind launch it from there
    (`_kept_launcher`).
    """
    compiled = kernel[grid](**kwargs)
    slot = launch_slot
    if slot is not None and not slot.get("slow") and hasattr(compiled, "function"):
        slot["kept"] = _Kept(compiled, launch_guard, kernel.arg_names, kwargs)


_POINTERS = ("rows_ptr", "src_ptr", "out_ptr", "mat_ptr", "part_ptr")


class _Kept:
    """A compiled kernel kept for one launch kind: what its launcher needs but the batch's
    tensors and stream (`_kept_launcher` calls it)."""

    __slots__ = ("args", "compiled", "driver", "function", "guard", "packed", "run", "via", "where")

    def __init__(
        self, compiled: Any, guard: tuple[Any, ...] | None, names: list[str], kwargs: dict
    ) -> None:
        self.compiled = compiled
        self.guard = guard
        self.args = [kwargs[name] for name in names]
        # where a batch's tensors go, in `_POINTERS` order (the prologue: rows, table; the main
        # kernel: source, output, table, partials)
        self.where = tuple(names.index(name) for name in _POINTERS if name in names)
        self.run = compiled.run  # the launcher (loads the module on first use)
        self.function = compiled.function
        self.packed = compiled.packed_metadata
        self.driver = _active_driver()  # a kernel compiled under another driver is not launched
        self.via = _launch  # a patched _launch (tests counting launches) never takes this path


def _active_driver() -> Any:
    return _DRIVER.active


# ----------------------------------------------------------------------------- planning


def _shift_plan(r: ShiftRange, size: int) -> tuple[int, float, float, tuple[float, ...]]:
    """(mode, r, scale, choices) of one shift axis, as `gpuaug.augment.params._shift` reads it."""
    if not r:
        return 0, 0.0, 1.0, ()
    if isinstance(r, int):  # np.random.choice(n): 0 .. n-1, random sign, never scaled
        return 2, 0.0, 1.0, tuple(float(k) for k in range(r))
    if isinstance(r, tuple):
        return 2, 0.0, float(size) if max(r) < 1 else 1.0, tuple(float(v) for v in r)
    return 1, float(r), float(size) if r < 1 else 1.0, ()


def _plan(config: AugmentConfig, height: int, width: int) -> dict[str, Any]:
    """Both kernels' scalar and constexpr arguments for a config and image size."""
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
        "matrix": {
            "H": height,
            "W": width,
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
            "GEOMETRY": config.has_geometry,
            "FLIP_H": config.horizontal_flip,
            "FLIP_V": config.vertical_flip,
            "SHIFT_X": sx_mode,
            "SHIFT_Y": sy_mode,
            "BLOCK_B": _MATRIX_BLOCK,
            "num_warps": 4,
        },
        "main": {
            "H": height,
            "W": width,
            "cval": float(config.cval),
            "rescale": float(config.rescale) if config.rescale else 1.0,
            "lo_in_x": -eps_x,
            "hi_in_x": (width - 1) + eps_x,
            "lo_in_y": -eps_y,
            "hi_in_y": (height - 1) + eps_y,
            "scale_x": 2.0 / (width - 1) if width > 1 else 0.0,
            "scale_y": 2.0 / (height - 1) if height > 1 else 0.0,
            "GEOMETRY": config.has_geometry,
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


_UNFIT = (
    "`{name}` is on but the augmenter has not been fit; call GPUAugment.fit(x) first. Skipping it."
)


def _featurewise(
    config: AugmentConfig, stats: FitStats | None, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None, tuple[str, ...]]:
    """The fitted mean / std as flat float32 on ``device``, and the warnings for the unfitted
    ones (skipped, as `standardize` skips them)."""
    mean = std = None
    unfit = []
    if config.featurewise_center:
        if stats is None or stats.mean is None:
            unfit.append(_UNFIT.format(name="featurewise_center"))
        else:
            mean = stats.mean.to(device=device, dtype=torch.float32).reshape(-1)
    if config.featurewise_std_normalization:
        if stats is None or stats.std is None:
            unfit.append(_UNFIT.format(name="featurewise_std_normalization"))
        else:
            std = stats.std.to(device=device, dtype=torch.float32).reshape(-1)
    return mean, std, tuple(unfit)


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


@dataclass(frozen=True)
class _Launches:
    """Everything about a batch's launches that does not change from batch to batch.

    Built once per (config, stats, input shape / strides / dtype, output dtype / strides,
    device, draws or params) and kept in `_LAUNCHES` (and by a `FusedPlan`), so that a batch
    only allocates its output and matrix table, fills in four pointers and launches (`run`).
    """

    keep: tuple[Any, ...]  # the objects whose ids are in the key: alive while cached
    matrix_args: dict[str, Any]
    main_args: dict[str, Any]
    passes: tuple[int, ...]
    n_blocks: int
    channel: bool
    unfit: tuple[str, ...]
    slots: dict[Any, dict[str, Any]]  # per launch (prologue, each pass): see `_launch`

    def run(self, images: torch.Tensor, rows: torch.Tensor, out: torch.Tensor) -> None:
        """Launch a batch's kernels: ``rows`` its draws (or params table), ``out`` its output.

        The kernels kept from an earlier batch of the kind when every launch's guard matches
        (`_Kept`), else through Triton (`_launch`), which keeps them for the next batch.
        """
        if self.unfit:
            for message in self.unfit:
                warnings.warn(message, UserWarning, stacklevel=4)
        if rows.stride(1) != 1:
            rows = rows.contiguous()
        b = images.shape[0]
        device = out.device
        table = torch.empty((b, _MATRIX_COLUMNS), dtype=torch.float32, device=device)
        parts = (
            torch.empty((b, self.n_blocks, 2), dtype=torch.float32, device=device)
            if self.channel
            else table
        )
        # the kept compiled kernels (`_kept_launcher`) once every launch of the kind is kept;
        # it launches nothing and says False when this batch does not fit them
        fast = self.slots["prologue"].get("fast")
        if device.type == "cuda":
            with torch.cuda.device(device):
                if fast is None or not fast(images, rows, table, parts, out):
                    self._launch_through_triton(images, rows, table, parts, out)
        elif fast is None or not fast(images, rows, table, parts, out):
            self._launch_through_triton(images, rows, table, parts, out)

    def _launch_through_triton(
        self,
        images: torch.Tensor,
        rows: torch.Tensor,
        table: torch.Tensor,
        parts: torch.Tensor,
        out: torch.Tensor,
    ) -> None:
        """Launch the batch with ``kernel[grid](...)`` (`_launch`), keeping the kernels (and,
        once they are all kept, the batch's launcher: `_kept_launcher`)."""
        b = images.shape[0]
        self.slots["prologue"].pop("fast", None)
        _prologue(rows, table, self.matrix_args, self.slots["prologue"])
        for start in range(0, b, _MAX_GRID_Y):  # CUDA's grid y is at most 65535 images
            stop = min(b, start + _MAX_GRID_Y)
            whole = (start, stop) == (0, b)  # else views of the chunk: no copies
            pointers = {
                "src_ptr": images if whole else images[start:stop],
                "out_ptr": out if whole else out[start:stop],
                "mat_ptr": table if whole else table[start:stop],
                "part_ptr": parts if whole else parts[start:stop],
            }
            guard = _aligned(*pointers.values()) if whole else None  # chunks: not kept
            for p in self.passes:
                _launch(
                    _augment_kernel,
                    (self.n_blocks, stop - start),
                    launch_slot=self.slots[p] if whole else None,
                    launch_guard=guard,
                    PASS=p,
                    **pointers,
                    **self.main_args,
                )
        kept = [self.slots[k].get("kept") for k in ("prologue", *self.passes)]
        if b <= _MAX_GRID_Y and all(kept):
            first, *mains = (k for k in kept if k is not None)
            fast = _kept_launcher(first, mains, self.n_blocks, b, self.slots)
            if fast is not None:
                self.slots["prologue"]["fast"] = fast


def _kept_launcher(
    prologue: _Kept, mains: list[_Kept], n_blocks: int, b: int, slots: dict[Any, dict[str, Any]]
) -> Any:
    """A batch's launches from the kept compiled kernels (the prologue, then each pass), built
    once for a `_Launches`: None when they cannot be launched together.

    What ``JITFunction.run`` does once it has found a kernel, without the binding and the
    specialisation: each compiled kernel's launcher (``CompiledKernel.run``) gets the grid, the
    stream, the function handle, the packed metadata, the launch metadata, the two launch hooks
    and every argument in the kernel's order (tests/test_kernel_budgets.py checks that it gets
    what Triton's own launch hands it); a batch only swaps its tensors into a copy of the kept
    argument list. The returned ``launch(images, rows, table, parts, out)`` launches and returns
    True, or launches nothing and returns False: another active driver, a patched `_launch`
    (tests counting launches), or a pointer alignment / row stride other than the kept guards.
    If a launcher refuses the arguments (another triton's calling convention), the kind goes
    back to Triton's launch for good.
    """
    driver0 = prologue.driver
    guard = mains[0].guard if mains else None
    if any(k.guard != guard or k.driver is not driver0 for k in mains) or prologue.guard is None:
        return None
    p_run, p_function, p_packed = prologue.run, prologue.function, prologue.packed
    p_args, (i_rows, i_table) = prologue.args, prologue.where
    p_guard, p_grid = prologue.guard, (-(-b // _MATRIX_BLOCK), 1, 1)
    m_grid = (n_blocks, b, 1)
    passes = [(k.run, k.function, k.packed, k.args, k.where, k.compiled) for k in mains]

    def launch(
        images: torch.Tensor,
        rows: torch.Tensor,
        table: torch.Tensor,
        parts: torch.Tensor,
        out: torch.Tensor,
    ) -> bool:
        drv = _DRIVER.active
        if drv is not driver0 or prologue.via is not _launch:
            return False
        table_aligned = table.data_ptr() % 16 == 0
        if p_guard != (rows.data_ptr() % 16 == 0, table_aligned, rows.stride(0)) or guard != (
            images.data_ptr() % 16 == 0,
            out.data_ptr() % 16 == 0,
            table_aligned,
            parts.data_ptr() % 16 == 0,
        ):
            return False
        stream = drv.get_current_stream(drv.get_current_device())
        runtime = _KNOBS.runtime
        enter, leave = runtime.launch_enter_hook, runtime.launch_exit_hook
        # no hook, or an empty hook chain (triton 3.4+), never reads the launch metadata
        idle = not (enter and getattr(enter, "calls", True)) and not (
            leave and getattr(leave, "calls", True)
        )
        args = p_args.copy()
        args[i_rows] = rows
        args[i_table] = table
        try:
            metadata = None if idle else prologue.compiled.launch_metadata(p_grid, stream, *args)
            p_run(*p_grid, stream, p_function, p_packed, metadata, enter, leave, *args)
            for run, function, packed, kept_args, where, compiled in passes:
                args = kept_args.copy()
                i_src, i_out, i_mat, i_part = where
                args[i_src] = images
                args[i_out] = out
                args[i_mat] = table
                args[i_part] = parts
                metadata = None if idle else compiled.launch_metadata(m_grid, stream, *args)
                run(*m_grid, stream, function, packed, metadata, enter, leave, *args)
        except (TypeError, ValueError):  # not this triton's launcher convention
            for slot in slots.values():  # the whole batch again through Triton, from now on
                slot.clear()
                slot["slow"] = True
            return False
        return True

    return launch


_LAUNCHES: dict[tuple[Any, ...], _Launches] = {}
_LAUNCHES_MAX = 64


def _version(t: torch.Tensor | None) -> tuple[int, int]:
    return (0, 0) if t is None else (id(t), t._version)


def _launches(
    images: torch.Tensor,
    config: AugmentConfig,
    stats: FitStats | None,
    out: torch.Tensor,
    tail: bool,
    from_draws: bool,
) -> _Launches:
    """The cached `_Launches` of this batch's kind (built on first sight)."""
    fields = (None, None) if stats is None or tail else (stats.mean, stats.std)
    if stats is not None and any(t is not None and t.is_inference() for t in fields):
        # made under torch.inference_mode: no version counter to see an in-place change by,
        # so built for this call and not kept
        return _build_launches(images, config, stats, out, tail, from_draws, fields)
    key = (
        id(config),
        _version(fields[0]),
        _version(fields[1]),
        images.shape,
        images.stride(),
        images.dtype,
        images.data_ptr() % 4 == 0,  # an RGBX source is read in words only when aligned
        images.device,
        out.dtype,
        out.stride(),
        tail,
        from_draws,
    )
    found = _LAUNCHES.get(key)
    if found is None:
        found = _build_launches(images, config, stats, out, tail, from_draws, fields)
        if len(_LAUNCHES) >= _LAUNCHES_MAX:
            _LAUNCHES.pop(next(iter(_LAUNCHES)))
        _LAUNCHES[key] = found
    return found


def _build_launches(
    images: torch.Tensor,
    config: AugmentConfig,
    stats: FitStats | None,
    out: torch.Tensor,
    tail: bool,
    from_draws: bool,
    fields: tuple[Any, Any],
) -> _Launches:
    b, c, height, width = images.shape
    device = images.device
    plan = _plan(config, height, width)
    mean, std, unfit = (None, None, ()) if tail else _featurewise(config, stats, device)
    for name, value in (("mean", mean), ("std", std)):
        if value is not None and value.numel() != c:  # the kernel reads one value per channel
            raise ValueError(
                f"the fitted featurewise {name} has {value.numel()} channels; this batch has {c}"
            )
    table_x = _choice_table(plan["choices"][0], device)
    table_y = _choice_table(plan["choices"][1], device)
    block_h = _block_height(height)
    n_blocks = triton.cdiv(height, block_h) * triton.cdiv(width, _BLOCK_W)
    channel = bool(config.channel_shift_range)
    words = _rgbx(images)
    placeholder = _placeholder(device)
    matrix_args = {
        "table_x_ptr": table_x if table_x is not None else placeholder,
        "table_y_ptr": table_y if table_y is not None else placeholder,
        "FROM_DRAWS": from_draws,
        **plan["matrix"],
    }
    main_args = {
        "mean_ptr": mean if mean is not None else placeholder,
        "std_ptr": std if std is not None else placeholder,
        "s_b": images.stride(0) // 4 if words else images.stride(0),  # words: see WORDS
        "s_c": images.stride(1),
        "s_h": images.stride(2) // 4 if words else images.stride(2),
        "s_w": 1 if words else images.stride(3),
        "o_b": out.stride(0),
        "o_c": out.stride(1),
        "o_h": out.stride(2),
        "o_w": out.stride(3),
        "n_blocks": n_blocks,
        **plan["main"],
        "C": c,
        "RESCALE": bool(config.rescale) and not tail,
        "CENTER": mean is not None,
        "STD": std is not None,
        "NORMALISE": mean is not None or std is not None,
        "OUT_BF16": out.dtype == torch.bfloat16,
        "WORDS": words,
        "BLOCK_H": block_h,
        "BLOCK_W": _BLOCK_W,
        "PARTS": max(_PARTS_MIN, triton.next_power_of_2(n_blocks)),
        # No FMA contraction: the float32 arithmetic rounds as the reference's separate ops
        # (and the interpreter's numpy) do, so the GPU agrees with them to the bit on the
        # coordinates. The one fma left is the exact remainder that "reflect"'s `%` lowers to.
        "enable_fp_fusion": False,
        "num_warps": _NUM_WARPS,
    }
    return _Launches(
        keep=(config, *fields),
        matrix_args=matrix_args,
        main_args=main_args,
        passes=(1, 2) if channel else (0,),  # pass 1: per-block min / max; pass 2 reads them
        n_blocks=n_blocks,
        channel=channel,
        unfit=unfit,
        slots={"prologue": {}, **{p: {} for p in (1, 2, 0)}},
    )


def _rgbx(images: torch.Tensor) -> bool:
    """Whether the batch is the first channels of a 4-byte-per-pixel uint8 buffer (RGBX):
    then the kernel reads each tap's channels with one 32-bit load.

    Such a batch is ``x4.permute(0, 3, 1, 2)[:, :3]`` of a (B, H, W, 4) uint8 tensor whose
    pixels start on 4-byte boundaries: strides (4HW', 1, 4W', 4) for any row pitch W' >= W.
    """
    b, c, _, _ = images.shape
    s_b, s_c, s_h, s_w = images.stride()
    return (
        images.dtype == torch.uint8
        and c <= 4
        and s_c == 1
        and s_w == 4
        and s_h % 4 == 0
        and (s_b % 4 == 0 or b == 1)
        and images.data_ptr() % 4 == 0
    )


def _block_height(height: int) -> int:
    """The tile height that pads the image's rows least (the taller one on a tie)."""
    return min(_BLOCK_HEIGHTS, key=lambda h: (triton.cdiv(height, h) * h, -h))


_PLACEHOLDERS: dict[torch.device, torch.Tensor] = {}


def _placeholder(device: torch.device) -> torch.Tensor:
    """A one-float tensor for pointer arguments a variant never reads."""
    if device not in _PLACEHOLDERS:
        _PLACEHOLDERS[device] = torch.zeros(1, dtype=torch.float32, device=device)
    return _PLACEHOLDERS[device]


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
    ``backend="triton"`` or ``"auto"``, rather than this). `plan_fused` is the same for a batch
    kind planned once.

    Args:
        images: (B, C, H, W) uint8 or float on the 0..255 scale, any strides.
        params: The batch's `AugmentDraws` (the prologue reads them) or `AugmentParams`
            (replay: stacked into a (B, 10) table first).
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
        from_draws = isinstance(params, AugmentDraws)
        plan = _launches(images, config, stats, out, tail, from_draws)
        plan.run(images, _rows(params), out)
    if tail:
        out = standardize(out, config, stats).to(dtype=dtype, memory_format=memory_format)
    return out


def _rows(params: AugmentParams | AugmentDraws) -> torch.Tensor:
    """What the prologue reads: the (B, 12) draws, or the params' (B, 10) table."""
    return params.uniforms if isinstance(params, AugmentDraws) else _params_table(params)


class FusedPlan:
    """`apply_fused` for one kind of batch, planned once (`plan_fused`).

    Checks that the kernel can run (`check_usable`) and builds the launches (`_Launches`) when
    made, so that a call allocates the output, launches and returns: ``plan(images, params)``
    equals ``apply_fused(images, params, config, stats=..., dtype=..., memory_format=...)``
    for a batch of the kind it was planned for. The caller (`GPUAugment`) keys its plans on
    what the kind is made of and checks nothing per call but the key.
    """

    def __init__(
        self,
        images: torch.Tensor,
        config: AugmentConfig,
        stats: FitStats | None,
        dtype: torch.dtype,
        memory_format: torch.memory_format,
        from_draws: bool,
    ) -> None:
        check_usable(images.device, dtype)
        self.config = config
        self.stats = stats
        self.dtype = dtype
        self.memory_format = memory_format
        self.tail = _unfused_tail(config)
        self.kernel_dtype = torch.float32 if self.tail else dtype
        self.kernel_format = torch.contiguous_format if self.tail else memory_format
        self.shape = tuple(images.shape)
        self.device = images.device
        self.from_draws = from_draws
        self.launches: _Launches | None = None
        if all(self.shape):
            strides = torch.empty(  # the output's strides, nothing allocated
                self.shape, dtype=self.kernel_dtype, device="meta", memory_format=self.kernel_format
            )
            self.launches = _launches(images, config, stats, strides, self.tail, from_draws)

    def __call__(self, images: torch.Tensor, params: AugmentParams | AugmentDraws) -> torch.Tensor:
        out = torch.empty(
            self.shape,
            dtype=self.kernel_dtype,
            device=self.device,
            memory_format=self.kernel_format,
        )
        if self.launches is not None:
            if isinstance(params, AugmentDraws) != self.from_draws:
                kind = "AugmentDraws" if self.from_draws else "AugmentParams"
                raise TypeError(f"this plan reads {kind}; got {type(params).__name__}")
            rows = _rows(params)
            self.launches.run(images, rows, out)
        if self.tail:
            out = standardize(out, self.config, self.stats)
            out = out.to(dtype=self.dtype, memory_format=self.memory_format)
        return out


def plan_fused(
    images: torch.Tensor,
    config: AugmentConfig,
    stats: FitStats | None,
    dtype: torch.dtype,
    memory_format: torch.memory_format,
    from_draws: bool,
) -> FusedPlan:
    """The `FusedPlan` of batches like ``images`` (shape, strides, dtype, device, its pointer's
    4-byte alignment), read through draws (``from_draws``) or params.

    Raises:
        ImportError, ValueError: as `check_usable`; ValueError for fitted statistics of
            another channel count.
    """
    return FusedPlan(images, config, stats, dtype, memory_format, from_draws)


def _aligned(*tensors: torch.Tensor) -> tuple[bool, ...]:
    """Each tensor's 16-byte alignment: what Triton specialises a pointer argument on."""
    return tuple(t.data_ptr() % 16 == 0 for t in tensors)


def _prologue(
    rows: torch.Tensor,
    table: torch.Tensor,
    matrix_args: dict[str, Any],
    slot: dict[str, Any] | None = None,
) -> None:
    """Launch the prologue through Triton: ``table`` gets one row of `_MATRIX_COLUMNS` floats
    per row of ``rows`` (draws or a params table)."""
    if rows.stride(1) != 1:
        rows = rows.contiguous()
    b = rows.shape[0]
    _launch(
        _matrix_kernel,
        (-(-b // _MATRIX_BLOCK),),
        launch_slot=slot,
        launch_guard=(*_aligned(rows, table), rows.stride(0)),
        rows_ptr=rows,
        mat_ptr=table,
        B=b,
        row_stride=rows.stride(0),
        **matrix_args,
    )


def matrix_table(
    params: AugmentParams | AugmentDraws, config: AugmentConfig, height: int, width: int
) -> torch.Tensor:
    """What the prologue computes: each image's matrix, channel shift and brightness.

    The main kernel reads this row per image instead of recomputing the matrix per pixel.
    Columns: ``a00, a01, b0, a10, a11, b1`` (`gpuaug.augment.params.affine_matrix`, flips
    folded in; with flips alone, ``a00`` and ``a11`` are the signs and the rest 0), then the
    channel shift and the brightness factor (`gpuaug.augment.params.params_from_draws`).

    Shape:
        params: B rows on a CUDA device (or the CPU under ``TRITON_INTERPRET=1``)
        -> (B, 8) float32, same device.
    """
    check_usable(params.device, torch.float32)
    plan = _plan(config, height, width)
    table = torch.empty((len(params), _MATRIX_COLUMNS), dtype=torch.float32, device=params.device)
    if len(params):
        matrix_args = {
            "table_x_ptr": _choice_table(plan["choices"][0], params.device)
            if plan["choices"][0]
            else _placeholder(params.device),
            "table_y_ptr": _choice_table(plan["choices"][1], params.device)
            if plan["choices"][1]
            else _placeholder(params.device),
            "FROM_DRAWS": isinstance(params, AugmentDraws),
            **plan["matrix"],
        }
        device = params.device
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            _prologue(_rows(params), table, matrix_args)
    return table


# ----------------------------------------------------------------------------- compile ahead

_AHEAD: list[ThreadPoolExecutor] = []
_AHEAD_LOCK = threading.Lock()


def _compiles_on(device: torch.device) -> bool:
    """Whether a launch on ``device`` compiles (CUDA; the interpreter compiles nothing)."""
    return device.type == "cuda" and os.environ.get("TRITON_INTERPRET") != "1"


def compile_ahead(
    config: AugmentConfig,
    image_shape: tuple[int, int, int],
    *,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
    device: torch.device | str = "cuda",
    stats: FitStats | None = None,
    rgbx: bool = False,
) -> Future | None:
    """Compile (or load from Triton's cache) the kernels a batch of this kind will launch, on a
    background thread, so that the first batch does not wait 1-3 s for the compiler.

    The kernels depend on the config, the image size (tile height), the channel count, the
    output dtype and which fitted statistics exist, not on the batch size or the strides (they
    are not specialised on): this compiles them with a batch of one, from a planar uint8 source
    or (``rgbx``) an RGBX one (`_rgbx`: another kernel, reading words). Under
    ``TRITON_INTERPRET=1`` or off CUDA nothing compiles.

    Args:
        config: The settings.
        image_shape: (C, H, W) of the batches.
        dtype: The output dtype.
        memory_format: The output's memory format.
        device: Where the batches will be.
        stats: The fitted statistics, if any (a later ``fit`` may compile another variant).
        rgbx: The batches will be RGBX (a `gpuaug.GPULoader` with ``layout="rgbx"``).

    Returns:
        A future whose result is the list of compiled kernels (the prologue, then each pass),
        or None when nothing compiles here.
    """
    device = torch.device(device)
    if triton is None or not _compiles_on(device) or dtype not in FUSED_DTYPES:
        return None
    with _AHEAD_LOCK:
        if not _AHEAD:
            _AHEAD.append(ThreadPoolExecutor(1, thread_name_prefix="gpuaug-compile"))
    return _AHEAD[0].submit(
        _compile_kinds, config, _shape3(image_shape), dtype, memory_format, device, stats, rgbx
    )


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    c, h, w = shape
    return (int(c), int(h), int(w))


def _compile_kinds(
    config: AugmentConfig,
    image_shape: tuple[int, int, int],
    dtype: torch.dtype,
    memory_format: torch.memory_format,
    device: torch.device,
    stats: FitStats | None,
    rgbx: bool = False,
) -> list[Any]:
    c, height, width = image_shape
    if rgbx:  # the first channels of a (1, H, W, 4) buffer, as the loader hands them
        pixels = torch.zeros((1, height, width, 4), dtype=torch.uint8, device=device)
        images = pixels.permute(0, 3, 1, 2)[:, :c]
    else:
        images = torch.zeros((1, c, height, width), dtype=torch.uint8, device=device)
    tail = _unfused_tail(config)
    out = torch.empty(
        (1, c, height, width),
        dtype=torch.float32 if tail else dtype,
        device=device,
        memory_format=torch.contiguous_format if tail else memory_format,
    )
    fields = (None, None) if stats is None or tail else (stats.mean, stats.std)
    plan = _build_launches(images, config, stats, out, tail, True, fields)
    rows = torch.zeros((1, 12), dtype=torch.float32, device=device)
    table = torch.zeros((1, _MATRIX_COLUMNS), dtype=torch.float32, device=device)
    parts = torch.zeros((1, plan.n_blocks, 2), dtype=torch.float32, device=device)
    where = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with where:
        compiled = [
            _matrix_kernel.warmup(
                rows_ptr=rows, mat_ptr=table, B=1, row_stride=12, grid=(1,), **plan.matrix_args
            )
        ]
        for p in plan.passes:
            pointers = {"src_ptr": images, "out_ptr": out, "mat_ptr": table, "part_ptr": parts}
            compiled.append(
                _augment_kernel.warmup(grid=(1, 1), PASS=p, **pointers, **plan.main_args)
            )
    return compiled
