"""One batched affine warp with Keras' (scipy.ndimage's) fill modes and interpolation.

Keras' ``apply_affine_transform`` hands each channel of each image to
``scipy.ndimage.affine_transform`` with ``mode=fill_mode`` and ``order`` 1 (bilinear) or 0
(nearest). `warp_affine` reproduces those semantics for a whole batch with one
``F.grid_sample`` call. The matrix is the *destination -> source* map in pixel coordinates
(x = column, y = row, pixel centres at integers), one per sample, as scipy takes it.

Fill modes (scipy >= 1.6 semantics, checked against scipy 1.17). Every mode folds the source
coordinate into [0, n-1] in pixel units (`_fold`), then samples once with ``F.grid_sample``
(``align_corners=True``, ``padding_mode="border"``):

====================  ===========================================  =================================
``fill_mode``         scipy's behaviour at a source coordinate x   how we fold it
====================  ===========================================  =================================
"nearest"             clamp x to [0, n-1]                           clamp
"reflect"             half-sample symmetric: ``d c b a | a b c d``  mirror about -0.5 and n-0.5
                      (mirror about -0.5 and n-0.5)                 (period 2n), then clamp
"constant"            ``cval`` wherever x < 0 or x > n-1 (a hard    clamp, sample, then ``cval``
                      cut at the edge pixel centres; no blending    where x left [0, n-1]
                      with cval, unlike grid_sample "zeros" or      (+- a few ulps, below)
                      kornia "fill")
"wrap"                period n-1 (scipy's ``wrap``, not             fold x into [0, n-1] as scipy
                      ``grid-wrap``): the first and last samples    does, then clamp
                      coincide, a discontinuity at every multiple
                      of n-1
====================  ===========================================  =================================

No matrix product anywhere: the source coordinates are broadcast multiply-adds
(``a00 * x + (a01 * y + b0)``), never ``einsum`` / ``bmm``, which
``torch.set_float32_matmul_precision("high")`` would turn into TF32 GEMMs (10-bit mantissa:
0.08 px at 150 px, enough to break Keras parity, the constant/wrap edges and nearest ties).
(kornia's ``warp_affine`` was used for "nearest"/"reflect" before; its 3x3 ``bmm`` in
``normalize_homography`` has the same problem, so it is gone.)

``interpolation="nearest"`` always takes the own-grid path, which rounds half up like scipy
(``floor(x + 0.5)``); ``grid_sample``'s "nearest" rounds half to even.

Tolerance at discontinuities: the grid is computed in float32, so a coordinate that is exactly on
an edge in float64 (a whole-pixel shift) can land an ulp outside. For "constant" and "wrap" a
coordinate within ``EDGE_TOLERANCE * n`` px (about 1e-6 n) of [0, n-1] counts as inside. Apart
from float32 rounding, that is the only place where we differ from scipy, and only there. At a
discontinuity (the "constant" edge, the "wrap" seam, a nearest-interpolation tie at .5) a float32
rounding error can still pick the other side: such pixels are measure-zero for random
parameters, and the parity tests exclude points within 1e-3 px of one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gpuaug.augment.config import FILL_MODES, INTERPOLATIONS

__all__ = ["EDGE_TOLERANCE", "FILL_MODES", "invert_affine", "source_coordinates", "warp_affine"]


#: Source coordinates within ``EDGE_TOLERANCE * n`` px outside [0, n-1] count as inside for
#: "constant" and "wrap" (n = the axis length; 3e-5 px at 32 px, 1.4e-4 px at 150 px): a few
#: float32 ulps of the coordinate, so whole-pixel shifts and flips land exactly as in float64.
EDGE_TOLERANCE = 2.0**-20


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """Invert a batch of 2x3 affine matrices in closed form (no host sync, no LAPACK).

    Shape:
        matrix: (B, 2, 3) float -> (B, 2, 3), same dtype and device.
    """
    a, b, tx = matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2]
    c, d, ty = matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    itx = -(ia * tx + ib * ty)
    ity = -(ic * tx + id_ * ty)
    row0 = torch.stack([ia, ib, itx], dim=-1)
    row1 = torch.stack([ic, id_, ity], dim=-1)
    return torch.stack([row0, row1], dim=1)


def source_coordinates(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The source pixel coordinates each output pixel reads: ``matrix @ (x, y, 1)``.

    Computed as broadcast multiply-adds ``a00 * x + (a01 * y + b0)``, not a matrix product, so
    the result does not depend on ``torch.backends.cuda.matmul.allow_tf32`` /
    ``torch.set_float32_matmul_precision`` (a TF32 GEMM would move points by ~0.08 px at 150 px).

    Shape:
        matrix: (B, 2, 3) dst->src, pixel units -> (B, H, W, 2) [x, y], same dtype and device.
    """
    x, y = _source_xy(matrix, height, width)
    return torch.stack([x, y], dim=-1)


def _source_terms(
    matrix: torch.Tensor, axis: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two small terms of one source coordinate: ``a * x`` (B, 1, W) and ``b * y + c``
    (B, H, 1), so that the coordinate is their broadcast sum (one full-size pass)."""
    xs = torch.arange(width, device=matrix.device, dtype=matrix.dtype)
    ys = torch.arange(height, device=matrix.device, dtype=matrix.dtype)
    along_x = matrix[:, axis, 0, None, None] * xs[None, None, :]
    along_y = matrix[:, axis, 1, None, None] * ys[None, :, None] + matrix[:, axis, 2, None, None]
    return along_x, along_y


def _source_xy(matrix: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The source x and y of every output pixel, (B, H, W) each: ``a x + (b y + c)``.

    The same float32 operations in the same order as the fused kernel
    (`gpuaug.augment.backends.triton`).
    """
    x = torch.add(*_source_terms(matrix, 0, height, width))
    y = torch.add(*_source_terms(matrix, 1, height, width))
    return x, y


def _fold(
    coord: torch.Tensor, size: int, fill_mode: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fold source coordinates along one axis into [0, size-1] as scipy's ``mode`` does.

    Returns the folded coordinate and, for "constant", a mask of the points inside.
    """
    last = float(size - 1)
    eps = EDGE_TOLERANCE * max(size, 1)
    if fill_mode == "nearest":
        return coord.clamp(0.0, last), None
    if fill_mode == "constant":
        inside = (coord >= -eps) & (coord <= last + eps)
        return coord.clamp(0.0, last), inside
    if fill_mode == "reflect":
        period = 2.0 * size
        u = torch.remainder(coord + 0.5, period)
        u = torch.where(u > size, period - u, u)
        return (u - 0.5).clamp(0.0, last), None
    if fill_mode == "wrap":
        if size == 1:
            return torch.zeros_like(coord), None
        # scipy's NI_EXTEND_WRAP (sz = n - 1): x < 0 -> x + sz * (trunc(-x / sz) + 1);
        # x > sz -> x - sz * trunc(x / sz)
        low = coord + last * (torch.floor(-coord / last) + 1.0)
        high = coord - last * torch.floor(coord / last)
        inside = (coord >= -eps) & (coord <= last + eps)
        folded = torch.where(coord < 0, low, high)
        return torch.where(inside, coord.clamp(0.0, last), folded), None
    raise ValueError(f"`fill_mode` must be one of {list(FILL_MODES)}; got {fill_mode!r}")


def _store(out: torch.Tensor, op, a: torch.Tensor, b: torch.Tensor | float) -> None:
    """``op(a, b, out=out)``; inside ``torch.compile`` ``out.copy_(op(a, b))`` instead (dynamo
    cannot trace ``out=`` into a strided view, and Inductor fuses the copy anyway)."""
    if torch.compiler.is_compiling():
        out.copy_(op(a, b))
    else:
        op(a, b, out=out)


def _warp_grid(
    images: torch.Tensor,
    matrix: torch.Tensor,
    fill_mode: str,
    cval: float,
    interpolation: str,
) -> torch.Tensor:
    """Build the sampling grid ourselves (any fill mode) and sample once.

    The grid is written in place, one axis at a time, into a (B, H, W, 2) buffer (no ``stack``).
    With "nearest" fill and bilinear interpolation (the book's settings) no fold is needed
    (``grid_sample``'s border padding clamps exactly as scipy's "nearest"), so each axis is one
    full-size pass: the normalisation to [-1, 1] is applied to the two small terms first.
    """
    batch, _, height, width = images.shape
    m = matrix.to(images.dtype)
    grid = torch.empty((batch, height, width, 2), dtype=images.dtype, device=images.device)
    inside: torch.Tensor | None = None
    for axis, size in ((0, width), (1, height)):
        out = grid[..., axis]
        if size == 1:  # align_corners=True maps any value to the only pixel
            out.zero_()
            if fill_mode == "constant":
                coord = torch.add(*_source_terms(m, axis, height, width))
                _, inside_axis = _fold(coord, size, fill_mode)
                assert inside_axis is not None  # "constant" gives the inside mask
                inside = inside_axis if inside is None else inside & inside_axis
            continue
        # Normalise for align_corners=True: pixel 0 -> -1, pixel n-1 -> +1.
        scale = 2.0 / (size - 1)
        along_x, along_y = _source_terms(m, axis, height, width)
        if fill_mode == "nearest" and interpolation == "bilinear":
            _store(out, torch.add, along_x * scale, along_y * scale - 1.0)
            continue
        coord, inside_axis = _fold(torch.add(along_x, along_y), size, fill_mode)
        if inside_axis is not None:
            inside = inside_axis if inside is None else inside & inside_axis
        if interpolation == "nearest":
            coord = torch.floor(coord + 0.5).clamp_(0, size - 1)
        _store(out, torch.sub, coord * scale, 1.0)
    out = F.grid_sample(
        images,
        grid,
        mode="nearest" if interpolation == "nearest" else "bilinear",
        padding_mode="border",
        align_corners=True,
    )
    if inside is not None:
        out.masked_fill_(~inside.unsqueeze(1), cval)  # a Python scalar: no H2D copy
    return out


def warp_affine(
    images: torch.Tensor,
    matrix_dst_to_src: torch.Tensor,
    fill_mode: str = "nearest",
    cval: float = 0.0,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Warp a batch with one affine matrix per sample, as Keras/scipy would, in one batched call.

    This is the reference warp (the ``"reference"`` backend of `gpuaug.augment.module.apply`); the
    fused
    Triton path (`gpuaug.augment.backends.triton`) is tested against it.

    Output pixel (x, y) takes the input value at ``matrix @ (x, y, 1)`` (x = column, y = row,
    pixel centres at integer coordinates), filled per ``fill_mode`` where that point lies
    outside the image (see the module docstring for each mode's exact semantics).

    Args:
        images: The batch to warp (float; cast uint8 first).
        matrix_dst_to_src: Per-sample destination -> source maps in pixel units.
        fill_mode: "nearest", "constant", "reflect" or "wrap" (scipy's semantics).
        cval: The value outside the image for "constant".
        interpolation: "bilinear" (scipy order 1) or "nearest" (order 0, rounding half up).

    Returns:
        The warped batch.

    Shape:
        images: (B, C, H, W) float, any device; matrix_dst_to_src: (B, 2, 3) float, same device
        -> (B, C, H, W), the dtype and device of ``images``.

    Raises:
        ValueError: Unknown fill mode or interpolation, or mismatched shapes.
        TypeError: Integer images.
    """
    if images.ndim != 4:
        raise ValueError(f"`images` must be (B, C, H, W); got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"`images` must be a float tensor; got {images.dtype}")
    if matrix_dst_to_src.shape != (images.shape[0], 2, 3):
        raise ValueError(
            f"`matrix_dst_to_src` must be ({images.shape[0]}, 2, 3) for this batch; "
            f"got {tuple(matrix_dst_to_src.shape)}"
        )
    if fill_mode not in FILL_MODES:
        raise ValueError(f"`fill_mode` must be one of {list(FILL_MODES)}; got {fill_mode!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"`interpolation` must be one of {list(INTERPOLATIONS)}; got {interpolation!r}"
        )
    if images.shape[0] == 0:
        return images.clone()
    return _warp_grid(images, matrix_dst_to_src, fill_mode, cval, interpolation)
