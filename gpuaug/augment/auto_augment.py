"""TrivialAugmentWide and RandAugment with an op and a magnitude drawn per image, batched.

torchvision's ``TrivialAugmentWide`` / ``RandAugment`` (``transforms/v2/_auto_augment.py``)
pick one op (and magnitude) per call, so a batched tensor gets the same op on every image.
Here every image draws its own, by torchvision's rules and op tables:

- ``TrivialAugmentWide(num_magnitude_bins=31)``: one op uniform over the 14 ops (Identity,
  ShearX/Y, TranslateX/Y, Rotate, Brightness, Color, Contrast, Sharpness, Posterize, Solarize,
  AutoContrast, Equalize), a magnitude bin uniform in ``0 .. num_magnitude_bins - 1``, and for a
  signed op a negative sign with probability 1/2;
- ``RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=31)``: ``num_ops`` rounds, each
  picking an op per image (same 14 ops, RandAugment's magnitude table) at the fixed bin
  ``magnitude``, with a random sign for signed ops.

Each op is torchvision's functional op on uint8 images (``torchvision.transforms.v2
.functional``), written for a batch with per-image parameters and no loop over images:

- geometric ops (shear, translate, rotate) become one 2x3 matrix per image (torchvision's
  ``_get_inverse_affine_matrix``, in float64), applied with the reference warp
  (`gpuaug.augment.warp.warp_affine`, nearest) on the batch padded by one pixel of ``fill``:
  that reproduces torchvision's ``grid_sample(mode="nearest", padding_mode="zeros",
  align_corners=False)``, where a point up to half a pixel outside the image still reads the
  edge pixel;
- colour ops take a per-image factor: brightness, color (saturation), contrast and sharpness
  blend as torchvision's ``_blend``; posterize with a per-image bit mask; solarize with a
  per-image threshold; autocontrast per channel; equalize with per-channel histograms
  (torchvision's batched LUT).

A round has two forms with the same result (`apply_round` picks by device, in
`gpuaug.device.host_reads_free`):

- on the CPU, `apply_round_grouped`: the images are grouped by op (a loop over the 14 ops, not
  over images), the geometric ops share one warp of their images and each colour op runs only
  on the images that drew it;
- on a device, `apply_round_reference`: every op runs on the whole batch and each image keeps
  its own op's result (``torch.where``): fixed shapes, nothing read back to the host, at the
  cost of one warp and one pass of each colour op per round. It is also the reference the
  grouped form is tested against, bit for bit.

Only ``interpolation="nearest"`` (torchvision's default) is implemented. The ops run on the
uint8 batch before `gpuaug.augment.module.GPUAugment`'s warp and normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gpuaug.augment.warp import warp_affine
from gpuaug.device import host_reads_free, host_to_device, params_to_device

__all__ = [
    "OPS",
    "AutoAugmentParams",
    "RandAugment",
    "TrivialAugmentWide",
    "apply_round",
    "apply_round_grouped",
    "apply_round_reference",
    "magnitude_table",
]

#: torchvision's op names, in its tables' order (the op index of `AutoAugmentParams`).
OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
_OP = {name: i for i, name in enumerate(OPS)}
_SIGNED: tuple[str, ...] = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_SIGNED += ("Brightness", "Color", "Contrast", "Sharpness")
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_COLOUR = OPS[6:]  # Brightness .. Equalize


def magnitude_table(policy: str, num_bins: int, height: int, width: int) -> torch.Tensor:
    """torchvision's magnitudes per op and bin ("wide": TrivialAugmentWide, "rand": RandAugment).

    Returns:
        (len(OPS), num_bins) float64: row = op (`OPS` order), 0 for ops without a magnitude.
    """
    wide = policy == "wide"
    table = torch.zeros((len(OPS), num_bins), dtype=torch.float64)

    def lin(hi: float) -> torch.Tensor:  # torchvision builds these in float32, then float()
        return torch.linspace(0.0, hi, num_bins).to(torch.float64)

    shear, rotate, colour = (0.99, 135.0, 0.99) if wide else (0.3, 30.0, 0.9)
    table[_OP["ShearX"]] = table[_OP["ShearY"]] = lin(shear)
    table[_OP["TranslateX"]] = lin(32.0 if wide else 150.0 / 331.0 * width)
    table[_OP["TranslateY"]] = lin(32.0 if wide else 150.0 / 331.0 * height)
    table[_OP["Rotate"]] = lin(rotate)
    for name in ("Brightness", "Color", "Contrast", "Sharpness"):
        table[_OP[name]] = lin(colour)
    steps = 6 if wide else 4
    posterize = (8 - (torch.arange(num_bins) / ((num_bins - 1) / steps))).round().int()
    table[_OP["Posterize"]] = posterize.to(torch.float64)
    table[_OP["Solarize"]] = torch.linspace(1.0, 0.0, num_bins).to(torch.float64)
    return table


@dataclass(frozen=True)
class AutoAugmentParams:
    """The ops and magnitudes a batch gets, one per image and round (replayable).

    Attributes:
        op: Index into `OPS` per image and round.
        magnitude: torchvision's ``magnitude`` argument of ``_apply_image_or_video_transform``
            (signed; degrees for Rotate, pixels for Translate, bits for Posterize, a fraction of
            255 for Solarize, the factor - 1 for the blends, tan of the angle for Shear).

    Shape:
        op: (B, R) int64; magnitude: (B, R) float64; R = rounds (1 for TrivialAugmentWide).
    """

    op: torch.Tensor
    magnitude: torch.Tensor

    def __len__(self) -> int:
        return self.op.shape[0]

    def to(self, device: torch.device | str) -> AutoAugmentParams:
        """The same params on ``device``."""
        return params_to_device(self, device)

    def names(self, i: int) -> list[str]:
        """The op names of image ``i`` (syncs the host)."""
        return [OPS[int(k)] for k in self.op[i]]


# ----------------------------------------------------------------------------- geometric ops


def _inverse_affine(
    center: tuple[torch.Tensor, torch.Tensor],
    angle_deg: torch.Tensor,
    translate: tuple[torch.Tensor, torch.Tensor],
    shear_deg: tuple[torch.Tensor, torch.Tensor],
) -> list[torch.Tensor]:
    """torchvision's ``_get_inverse_affine_matrix`` (scale 1, inverted), batched, float64."""
    rot = torch.deg2rad(angle_deg)
    sx, sy = torch.deg2rad(shear_deg[0]), torch.deg2rad(shear_deg[1])
    cx, cy = center
    tx, ty = translate
    cos_sy = torch.cos(sy)
    tan_sx = torch.tan(sx)
    rot_minus_sy = rot - sy
    cx_plus_tx, cy_plus_ty = cx + tx, cy + ty
    a = torch.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + torch.sin(rot))
    c = torch.sin(rot_minus_sy) / cos_sy
    d = torch.cos(rot) - c * tan_sx
    m = [d, -b, torch.zeros_like(d), -c, a, torch.zeros_like(d)]
    m[2] = m[2] + cx - m[0] * cx_plus_tx - m[1] * cy_plus_ty
    m[5] = m[5] + cy - m[3] * cx_plus_tx - m[4] * cy_plus_ty
    return m


def geometric_matrix(op: torch.Tensor, magnitude: torch.Tensor, height: int, width: int):
    """The destination -> source pixel matrix (B, 2, 3) float64 of each image's op.

    Identity for a colour op. torchvision's matrix acts on coordinates about the image centre
    ((W - 1) / 2, (H - 1) / 2 in pixel indices); ours on pixel indices (`gpuaug.augment.warp`).
    """
    zero = torch.zeros_like(magnitude)
    is_shear_x, is_shear_y = op == _OP["ShearX"], op == _OP["ShearY"]
    is_tx, is_ty, is_rot = op == _OP["TranslateX"], op == _OP["TranslateY"], op == _OP["Rotate"]
    shear_deg = torch.rad2deg(torch.atan(magnitude))
    shear = (torch.where(is_shear_x, shear_deg, zero), torch.where(is_shear_y, shear_deg, zero))
    # shears turn about the top-left corner (center=[0, 0]): -size / 2 about the centre
    is_shear = is_shear_x | is_shear_y
    center = (
        torch.where(is_shear, -width * 0.5, 0.0).to(magnitude),
        torch.where(is_shear, -height * 0.5, 0.0).to(magnitude),
    )
    shift = torch.trunc(magnitude)  # int(magnitude)
    translate = (torch.where(is_tx, shift, zero), torch.where(is_ty, shift, zero))
    # F.rotate calls the matrix with -angle; angle % 360 as torchvision (exact multiples of 90)
    angle = torch.where(is_rot, -torch.remainder(magnitude, 360.0), zero)
    m = _inverse_affine(center, angle, translate, shear)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a00, a01, a10, a11 = m[0], m[1], m[3], m[4]
    b0 = cx + m[2] - (a00 * cx + a01 * cy)
    b1 = cy + m[5] - (a10 * cx + a11 * cy)
    row0 = torch.stack([a00, a01, b0], dim=-1)
    row1 = torch.stack([a10, a11, b1], dim=-1)
    return torch.stack([row0, row1], dim=1)


def _warp_nearest_zeros(images: torch.Tensor, matrix: torch.Tensor, fill: float) -> torch.Tensor:
    """``grid_sample(nearest, zeros, align_corners=False)`` semantics with the reference warp.

    Padding by one pixel of ``fill`` and warping with "constant" fill moves the cut from the
    edge pixel centres to half a pixel beyond them, as ``grid_sample`` has it.
    """
    padded = F.pad(images, (1, 1, 1, 1), value=fill)
    m = matrix.clone()
    # dst_p = dst + 1, src_p = src + 1: b' = b + 1 - A @ (1, 1)
    m[:, 0, 2] = m[:, 0, 2] + 1.0 - m[:, 0, 0] - m[:, 0, 1]
    m[:, 1, 2] = m[:, 1, 2] + 1.0 - m[:, 1, 0] - m[:, 1, 1]
    out = warp_affine(padded, m.to(padded.dtype), "constant", fill, "nearest")
    return out[..., 1:-1, 1:-1]


# ----------------------------------------------------------------------------- colour ops


def _grey(x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_rgb_to_grayscale_image`` (float32, not cast), floored as for uint8."""
    if x.shape[1] == 1:
        return x.clone()
    r, g, b = x.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1).floor_()


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend``: ``x * r + other * (1 - r)``, clamped (not cast).

    ``addcmul`` rounds as torchvision's ``add_(other, alpha=1 - r)`` (one fused multiply-add),
    which a separate multiply and add would not (one grey level off at a few pixels in 10^4).
    """
    r = ratio.to(torch.float32)[:, None, None, None]
    one_minus = (1.0 - ratio).to(torch.float32)[:, None, None, None]
    return torch.addcmul(x.mul(r), other, one_minus).clamp_(0, 255)


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_sharpness_image`` with a per-image factor (float32 result)."""
    channels, height, width = x.shape[1:]
    if height <= 2 or width <= 2:
        return x.clone()
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.full((3, 3), a, dtype=x.dtype, device=x.device)  # no host -> device copy
    kernel[1, 1] = b
    blurred = F.conv2d(x, kernel.expand(channels, 1, 3, 3), groups=channels).round_()
    out = x.clone()
    view = out[..., 1:-1, 1:-1]
    one_minus = (1.0 - factor).to(torch.float32)[:, None, None, None]
    view.copy_(torch.addcmul(view, blurred.sub_(view), one_minus))
    return out.clamp_(0, 255)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``autocontrast_image`` (float32, truncated to whole values)."""
    minimum = x.amin(dim=(-2, -1), keepdim=True)
    maximum = x.amax(dim=(-2, -1), keepdim=True)
    same = maximum == minimum
    inv_scale = (maximum - minimum).mul_(1.0 / 255)
    minimum = torch.where(same, 0.0, minimum)
    inv_scale = torch.where(same, 1.0, inv_scale)
    return (x - minimum).div_(inv_scale).clamp_(0, 255).trunc_()


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``equalize_image`` (PIL's LUT), per image and channel, on whole values."""
    batch, channels, height, width = x.shape
    flat = x.to(torch.int64).flatten(2)  # (B, C, N)
    hist = torch.zeros((batch, channels, 256), dtype=torch.int64, device=x.device)
    hist.scatter_add_(2, flat, torch.ones_like(flat))
    cum = hist.cumsum(dim=2)
    last = cum.argmax(dim=2, keepdim=True)  # the last non-empty bin
    step = torch.div(flat.shape[2] - hist.gather(2, last), 255, rounding_mode="floor")
    lut = torch.div(cum[..., :-1] + step // 2, step.clamp(min=1), rounding_mode="floor")
    lut = torch.cat([torch.zeros_like(lut[..., :1]), lut.clamp_(0, 255)], dim=2)
    equalized = lut.gather(2, flat).view(batch, channels, height, width).to(x.dtype)
    return torch.where(step[..., None] != 0, equalized, x)


def _colour_op(name: str, x: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """Colour op ``name`` on float32 images holding whole values, one magnitude per image.

    Shape:
        x: (n, C, H, W) float32; mag: (n,) float64, same device -> (n, C, H, W) float32.
    """
    factor = 1.0 + mag
    if name == "Brightness":
        return x.mul(factor.to(torch.float32)[:, None, None, None]).clamp_(0, 255)
    if name == "Color":
        if x.shape[1] != 3:  # adjust_saturation leaves a one-channel image as it is
            return x
        return _blend(x, _grey(x), factor)
    if name == "Contrast":
        mean = torch.mean(_grey(x) if x.shape[1] == 3 else x, dim=(-3, -2, -1), keepdim=True)
        return _blend(x, mean, factor)
    if name == "Sharpness":
        return _sharpness(x, factor)
    if name == "Posterize":
        bits = mag.to(torch.int64).clamp(0, 8)
        mask = (((1 << bits) - 1) << (8 - bits))[:, None, None, None]
        return (x.to(torch.int64) & mask).to(torch.float32)
    if name == "Solarize":
        threshold = (255.0 * mag).to(torch.float32)[:, None, None, None]
        return torch.where(x >= threshold, 255.0 - x, x)
    if name == "AutoContrast":
        return _autocontrast(x)
    if name == "Equalize":
        return _equalize(x)
    raise ValueError(f"`name` must be a colour op of {list(_COLOUR)}; got {name!r}")


def _to_dtype(out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.uint8:
        return out.to(torch.uint8)  # whole values in 0..255 (truncated as torchvision's .to)
    return out.trunc().to(dtype)


def apply_round_reference(
    images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor, fill: float = 0.0
) -> torch.Tensor:
    """`apply_round` computing every op for every image, each keeping its own (``torch.where``).

    The obviously-correct form, and the device path: fixed shapes, nothing read back to the
    host. Same arguments and result as `apply_round`.
    """
    dtype = images.dtype
    x = images.to(torch.float32)
    _, _, height, width = x.shape
    mag = magnitude.to(torch.float64)
    is_geo = torch.zeros_like(op, dtype=torch.bool)
    for name in _GEOMETRIC:
        is_geo = is_geo | (op == _OP[name])
    matrix = geometric_matrix(op, mag, height, width)
    out = torch.where(is_geo[:, None, None, None], _warp_nearest_zeros(x, matrix, fill), x)
    for name in _COLOUR:  # a loop over ops, not over images
        out = torch.where((op == _OP[name])[:, None, None, None], _colour_op(name, x, mag), out)
    return _to_dtype(out, dtype)


def apply_round_grouped(
    images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor, fill: float = 0.0
) -> torch.Tensor:
    """`apply_round` computing each op only for the images that drew it.

    The images are grouped by op (one sort, the group sizes read on the host); the geometric
    ops share one warp of their images, each colour op runs on its own images, and each result
    is written back in place. Every op treats each image on its own, so the result equals
    `apply_round_reference`. Reading the group sizes is a host sync when ``op`` lives on a
    device: `apply_round` takes this path only for CPU tensors.
    """
    dtype = images.dtype
    x = images.to(torch.float32)
    _, _, height, width = x.shape
    mag = magnitude.to(torch.float64)
    counts = torch.bincount(op, minlength=len(OPS)).tolist()  # host read: a CPU tensor
    groups = dict(zip(OPS, torch.argsort(op, stable=True).split(counts), strict=True))
    out = x.clone()
    geo = torch.cat([groups[name] for name in _GEOMETRIC])
    if geo.numel():
        matrix = geometric_matrix(op[geo], mag[geo], height, width)
        out.index_copy_(0, geo, _warp_nearest_zeros(x.index_select(0, geo), matrix, fill))
    for name in _COLOUR:  # a loop over ops, not over images
        index = groups[name]
        if index.numel():
            result = _colour_op(name, x.index_select(0, index), mag[index])
            out.index_copy_(0, index, result)
    if dtype == torch.uint8:
        return out.to(torch.uint8)
    return out.trunc_().to(dtype)


def apply_round(
    images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor, fill: float = 0.0
) -> torch.Tensor:
    """One op per image, torchvision's ``_apply_image_or_video_transform`` for the batch.

    On the CPU (CPU images: ``op`` is read on the host for free) each op runs only on the
    images that drew it (`apply_round_grouped`); on a device every op runs on the whole batch
    and each image keeps its own (`apply_round_reference`: fixed shapes, no host sync). Both
    give the same result.

    Args:
        images: The batch, uint8 (or float holding whole values 0..255).
        op: Index into `OPS` per image.
        magnitude: Signed magnitude per image (see `AutoAugmentParams`).
        fill: The value outside the image for the geometric ops.

    Returns:
        The batch after each image's op, in the images' dtype.

    Shape:
        images: (B, C, H, W); op: (B,) int64; magnitude: (B,) float64 (copied to the images'
        device if elsewhere) -> (B, C, H, W), same dtype and device.
    """
    if op.device != images.device:  # e.g. CPU draws for device images
        op, magnitude = host_to_device(op, images.device), host_to_device(magnitude, images.device)
    if host_reads_free(images):  # the form follows where the pixels are
        return apply_round_grouped(images, op, magnitude, fill)
    return apply_round_reference(images, op, magnitude, fill)


# ----------------------------------------------------------------------------- modules


class _PerSampleAutoAugment(nn.Module):
    """Shared draw / apply / replay of the two policies."""

    policy = "wide"

    def __init__(self, num_magnitude_bins: int, interpolation: str, fill: float) -> None:
        super().__init__()
        if isinstance(num_magnitude_bins, bool) or not isinstance(num_magnitude_bins, int):
            raise TypeError(f"`num_magnitude_bins` must be an int; got {num_magnitude_bins!r}")
        if num_magnitude_bins < 2:
            raise ValueError(f"`num_magnitude_bins` must be >= 2; got {num_magnitude_bins}")
        if interpolation != "nearest":
            raise ValueError(
                f"`interpolation` must be 'nearest' (torchvision's default; the only one "
                f"implemented); got {interpolation!r}"
            )
        if isinstance(fill, bool) or not isinstance(fill, int | float):
            raise TypeError(f"`fill` must be a number (one value for all channels); got {fill!r}")
        self.num_magnitude_bins = num_magnitude_bins
        self.interpolation = interpolation
        self.fill = float(fill)
        self.last_params: AutoAugmentParams | None = None

    rounds = 1

    def _bins(self, u: torch.Tensor) -> torch.Tensor:
        n = self.num_magnitude_bins
        return torch.floor(u * n).long().clamp_(max=n - 1)

    def sample_params(
        self,
        batch_size: int,
        height: int,
        width: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> AutoAugmentParams:
        """Draw each image's ops and magnitudes: a (B, rounds, 3) uniform on the generator's
        device (op, bin, sign), moved to ``device``."""
        draw_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand((batch_size, self.rounds, 3), generator=generator, device=draw_device)
        op = torch.floor(u[..., 0] * len(OPS)).long().clamp_(max=len(OPS) - 1)
        table = magnitude_table(self.policy, self.num_magnitude_bins, height, width)
        table = table.to(draw_device)
        magnitude = table[op, self._bins(u[..., 1])]
        signed = torch.zeros(len(OPS), dtype=torch.bool, device=draw_device)
        signed[[_OP[name] for name in _SIGNED]] = True
        negative = signed[op] & (u[..., 2] <= 0.5)  # torchvision: torch.rand(()) <= 0.5
        magnitude = torch.where(negative, -magnitude, magnitude)
        params = AutoAugmentParams(op, magnitude)
        return params if device is None else params.to(device)

    def apply(  # type: ignore[override]  # params -> output, not nn.Module.apply(fn)
        self, images: torch.Tensor, params: AutoAugmentParams
    ) -> torch.Tensor:
        """Apply given params, round after round."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"`images` must be (B, 1 or 3, H, W); got shape {tuple(images.shape)}")
        if len(params) != images.shape[0]:
            raise ValueError(
                f"`params` are for {len(params)} images; the batch has {images.shape[0]}"
            )
        out = images
        for r in range(params.op.shape[1]):  # a loop over rounds, not over images
            out = apply_round(out, params.op[:, r], params.magnitude[:, r], self.fill)
        return out

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        params: AutoAugmentParams | None = None,
    ) -> torch.Tensor:
        """Augment with fresh params (or given ones), kept in ``last_params``."""
        if params is None:
            if images.ndim != 4:
                raise ValueError(f"`images` must be (B, C, H, W); got {tuple(images.shape)}")
            b, _, h, w = images.shape
            params = self.sample_params(b, h, w, generator=generator, device=images.device)
        out = self.apply(images, params)
        self.last_params = params
        return out


class TrivialAugmentWide(_PerSampleAutoAugment):
    """torchvision's ``TrivialAugmentWide``, with an op and magnitude drawn per image.

    Args:
        num_magnitude_bins: The number of magnitude values (torchvision's default 31).
        interpolation: "nearest" (torchvision's default; the only one implemented).
        fill: The value outside the image after a geometric op (torchvision's None = 0).

    Attributes:
        last_params: The `AutoAugmentParams` of the last ``forward`` (None before one).

    Shape:
        images: (B, 1 or 3, H, W) uint8, any device -> the same shape, dtype and device.

    Example:
        >>> ta = TrivialAugmentWide()
        >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> y = ta(x, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(ta.apply(x, ta.last_params), y)
        True
    """

    policy = "wide"

    def __init__(
        self, num_magnitude_bins: int = 31, interpolation: str = "nearest", fill: float = 0.0
    ) -> None:
        super().__init__(num_magnitude_bins, interpolation, fill)

    def extra_repr(self) -> str:
        return f"num_magnitude_bins={self.num_magnitude_bins}, per-sample op and magnitude"


class RandAugment(_PerSampleAutoAugment):
    """torchvision's ``RandAugment``, with each round's op drawn per image.

    Args:
        num_ops: Rounds (ops applied one after another).
        magnitude: The magnitude bin, fixed (torchvision's); the sign is drawn per image.
        num_magnitude_bins: The number of magnitude values.
        interpolation: "nearest" (the only one implemented).
        fill: The value outside the image after a geometric op.

    Shape:
        images: (B, 1 or 3, H, W) uint8, any device -> the same shape, dtype and device.
    """

    policy = "rand"

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: int = 9,
        num_magnitude_bins: int = 31,
        interpolation: str = "nearest",
        fill: float = 0.0,
    ) -> None:
        super().__init__(num_magnitude_bins, interpolation, fill)
        if isinstance(num_ops, bool) or not isinstance(num_ops, int) or num_ops < 0:
            raise ValueError(f"`num_ops` must be an int >= 0; got {num_ops!r}")
        if isinstance(magnitude, bool) or not isinstance(magnitude, int):
            raise TypeError(f"`magnitude` must be an int bin; got {magnitude!r}")
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(
                f"`magnitude` must be in [0, num_magnitude_bins); got {magnitude} with "
                f"num_magnitude_bins={num_magnitude_bins}"
            )
        self.rounds = num_ops
        self.num_ops = num_ops
        self.magnitude = magnitude

    def _bins(self, u: torch.Tensor) -> torch.Tensor:
        return torch.full_like(u, self.magnitude, dtype=torch.long)

    def extra_repr(self) -> str:
        return (
            f"num_ops={self.num_ops}, magnitude={self.magnitude}, "
            f"num_magnitude_bins={self.num_magnitude_bins}, per-sample ops"
        )
