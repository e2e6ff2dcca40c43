"""RandomResizedCrop per sample on the device, and its validation counterpart.

torchvision's ``RandomResizedCrop`` draws one crop per call (``get_params``, ten tries in Python
then a centre-crop fallback). Here every image of a batch draws its own crop by the same rule, all
ten tries at once, from a ``torch.Generator``:

- ``target_area = H W U(scale)``, ``aspect = exp(U(log ratio))``,
  ``w = round(sqrt(target_area aspect))``, ``h = round(sqrt(target_area / aspect))``; the first
  try with ``0 < w <= W`` and ``0 < h <= H`` is kept, with ``top`` uniform in ``0 .. H - h`` and
  ``left`` in ``0 .. W - w``;
- no try fits: the centre crop of the largest box within ``ratio`` (the whole image when its
  own ratio is within it), torchvision's fallback.

Each image may have its own size (``heights``, ``widths``), so a batch of different sizes held
in one padded tensor is cropped from each image's own pixels.

The crop is resized (and flipped) by `resized_crop`, in one of two forms chosen by device
(`gpuaug.device.host_reads_free`). On the CPU, `resized_crop_per_crop`: torch's ``interpolate``
once per distinct crop, reading only the crop's pixels; it is what torchvision's
``resized_crop`` runs on a float image. On a device, `resized_crop_matrices`: separable
per-image resampling matrices, one per axis (``(B, S, H)`` and ``(B, S, W)``), applied with two
batched matrix products, with fixed shapes and nothing read back to the host. The weights
are torchvision's bilinear ones: with ``antialias=True`` the triangle filter widened by the
shrink factor (torchvision's / PIL's ``antialias=True``), else plain bilinear
(``align_corners=False``); reads are limited to the crop (as when torchvision crops, then
resizes). On CUDA the products follow ``torch.backends.cuda.matmul.allow_tf32``: with TF32 on
(``torch.set_float32_matmul_precision("high")``) they run with a 10-bit mantissa and the result
moves (``tests/test_recipe_cuda.py`` bounds it by one grey level; not yet measured on a GPU).

`center_crop_params` gives the validation transform (torchvision / timm eval: resize the short
side to ``resize_size``, then a centre crop of ``crop_size``) as the same kind of params.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gpuaug.device import host_reads_free, params_to_device

__all__ = [
    "CropParams",
    "RandomResizedCrop",
    "axis_weights",
    "center_crop_params",
    "resized_crop",
    "resized_crop_matrices",
    "resized_crop_per_crop",
    "sample_crop_params",
]

_TRIES = 10


@dataclass(frozen=True)
class CropParams:
    """Each image's crop and flip, and the size of the resized image it is part of.

    A random resized crop maps ``[top, top + h) x [left, left + w)`` onto the whole output
    (``out_total = size``, ``out_offset = 0``). The validation transform resizes the whole image
    to ``out_total`` and keeps the output window starting at ``out_offset`` (a centre crop);
    the window's pixels outside the resized region are zeros (``CenterCrop``'s padding).

    Attributes:
        top_left_px: (top, left) of the region read, in the image's own pixels.
        size_px: (h, w) of that region.
        out_total: (rows, columns) the region is resized to.
        out_offset: (row, column) of the output window in the resized region.
        flip_h: Flip left-right after resizing.

    Shape:
        top_left_px, size_px, out_total, out_offset: (B, 2) int64; flip_h: (B,) bool. One device.
    """

    top_left_px: torch.Tensor
    size_px: torch.Tensor
    out_total: torch.Tensor
    out_offset: torch.Tensor
    flip_h: torch.Tensor

    def __len__(self) -> int:
        return self.flip_h.shape[0]

    def to(self, device: torch.device | str) -> CropParams:
        """The same params on ``device`` (no host sync for a CPU -> CUDA move)."""
        return params_to_device(self, device)


def _check_pair(name: str, value: Sequence[float], positive: bool) -> tuple[float, float]:
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"`{name}` must be a pair (lo, hi); got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if lo > hi or (positive and lo <= 0) or lo < 0:
        bound = "0 < lo <= hi" if positive else "0 <= lo <= hi"
        raise ValueError(f"`{name}` must be a pair {bound}; got {value!r}")
    return lo, hi


def _sizes(value: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.float64)
    return torch.full((batch,), float(value), dtype=torch.float64, device=device)


def sample_crop_params(
    batch_size: int,
    heights: int | torch.Tensor,
    widths: int | torch.Tensor,
    size: tuple[int, int],
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> CropParams:
    """Draw each image's crop by torchvision's ``RandomResizedCrop.get_params`` rule.

    Consumption is fixed per image: a (B, 10 x 2 + 3) uniform (area and aspect of each try,
    top, left, flip), on the generator's device.

    Args:
        batch_size: B.
        heights: Each image's height (an int for all, or a (B,) tensor on the generator's
            device or the CPU).
        widths: Each image's width.
        size: The output (rows, columns).
        scale: The crop's area range, fractions of the image (torchvision's default).
        ratio: The crop's aspect (w / h) range, drawn log-uniform.
        flip_p: Probability of a left-right flip.
        generator: Source of randomness; the CPU global RNG if None.
        device: Where the params go; the generator's device if None.

    Returns:
        The batch's `CropParams`.
    """
    scale = _check_pair("scale", scale, positive=False)
    ratio = _check_pair("ratio", ratio, positive=True)
    if not 0.0 <= flip_p <= 1.0:
        raise ValueError(f"`flip_p` must be in [0, 1]; got {flip_p}")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((batch_size, 2 * _TRIES + 3), generator=generator, device=draw_device).to(
        torch.float64
    )
    height = _sizes(heights, batch_size, draw_device)
    width = _sizes(widths, batch_size, draw_device)
    tries = u[:, : 2 * _TRIES].reshape(batch_size, _TRIES, 2)
    area = (height * width)[:, None]
    target = area * (scale[0] + (scale[1] - scale[0]) * tries[..., 0])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * tries[..., 1])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = torch.argmax(fits.to(torch.uint8), dim=1, keepdim=True)
    found = fits.any(dim=1)
    h = torch.gather(h, 1, first)[:, 0]
    w = torch.gather(w, 1, first)[:, 0]
    top = torch.minimum(torch.floor(u[:, -3] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u[:, -2] * (width - w + 1)), width - w)
    # torchvision's fallback: the centre crop within `ratio`
    in_ratio = width / height
    fb_w = torch.where(in_ratio > ratio[1], torch.round(height * ratio[1]), width)
    fb_h = torch.where(in_ratio < ratio[0], torch.round(width / ratio[0]), height)
    fb_top = torch.div(height - fb_h, 2, rounding_mode="floor")
    fb_left = torch.div(width - fb_w, 2, rounding_mode="floor")
    h, w = torch.where(found, h, fb_h), torch.where(found, w, fb_w)
    top, left = torch.where(found, top, fb_top), torch.where(found, left, fb_left)
    out = torch.tensor([size], dtype=torch.int64, device=draw_device).expand(batch_size, 2)
    params = CropParams(
        top_left_px=torch.stack([top, left], dim=1).to(torch.int64),
        size_px=torch.stack([h, w], dim=1).to(torch.int64),
        out_total=out.contiguous(),
        out_offset=torch.zeros((batch_size, 2), dtype=torch.int64, device=draw_device),
        flip_h=u[:, -1] < flip_p,
    )
    return params if device is None else params.to(device)


def center_crop_params(
    heights: torch.Tensor, widths: torch.Tensor, resize_size: int, crop_size: int | tuple[int, int]
) -> CropParams:
    """The validation transform as params: resize the short side, then a centre crop.

    torchvision's ``Resize(resize_size)`` (short side to ``resize_size``, the long side
    ``int(resize_size * long / short)``) then ``CenterCrop(crop_size)`` (offset
    ``int(round((resized - crop) / 2))``), as timm's and torchvision's eval transforms.

    Shape:
        heights, widths: (B,) int, any device -> `CropParams` of B rows on that device.
    """
    if isinstance(crop_size, int):
        crop_size = (crop_size, crop_size)
    h = heights.to(torch.int64)
    w = widths.to(torch.int64)
    short_is_h = h <= w
    long_side = torch.where(short_is_h, w, h).to(torch.float64)
    short_side = torch.where(short_is_h, h, w).to(torch.float64)
    new_long = torch.floor(resize_size * long_side / short_side).to(torch.int64)
    new_h = torch.where(short_is_h, resize_size, new_long)
    new_w = torch.where(short_is_h, new_long, resize_size)
    off_h = _centre_offset(new_h, crop_size[0])
    off_w = _centre_offset(new_w, crop_size[1])
    zeros = torch.zeros_like(h)
    return CropParams(
        top_left_px=torch.stack([zeros, zeros], dim=1),
        size_px=torch.stack([h, w], dim=1),
        out_total=torch.stack([new_h, new_w], dim=1),
        out_offset=torch.stack([off_h, off_w], dim=1),
        flip_h=torch.zeros_like(h, dtype=torch.bool),
    )


def _centre_offset(resized: torch.Tensor, crop: int) -> torch.Tensor:
    """``CenterCrop``'s offset of a ``crop`` window in a ``resized`` side: ``int(round((resized
    - crop) / 2))``, or, for a crop larger than the side, minus the zero rows it pads before it
    (``(crop - resized) // 2``)."""
    inside = torch.round((resized - crop).to(torch.float64) / 2.0).to(torch.int64)
    padded = -torch.div(crop - resized, 2, rounding_mode="floor")
    return torch.where(resized < crop, padded, inside)


def axis_weights(
    in_size: int,
    start: torch.Tensor,
    length: torch.Tensor,
    out_total: torch.Tensor,
    out_offset: torch.Tensor,
    out_size: int,
    *,
    antialias: bool = True,
) -> torch.Tensor:
    """Resampling weights along one axis, per image: (B, out_size, in_size) float32.

    Output index ``o`` is resized-region pixel ``o + out_offset``; its centre reads the source at
    ``start + (o + out_offset + 0.5) * length / out_total`` (half-pixel centres). Bilinear
    weights (the triangle filter); with ``antialias`` and a shrink (``length > out_total``) the
    triangle is widened by the shrink factor, as torchvision's / PIL's ``antialias=True``. Only
    source pixels in ``[start, start + length)`` are read; each row sums to 1.
    """
    f64 = torch.float64
    start, length = start.to(f64)[:, None, None], length.to(f64)[:, None, None]
    out_total, out_offset = out_total.to(f64)[:, None, None], out_offset.to(f64)[:, None, None]
    o = torch.arange(out_size, dtype=f64, device=start.device)[None, :, None]
    x = torch.arange(in_size, dtype=f64, device=start.device)[None, None, :]
    scale = length / out_total
    support = torch.clamp(scale, min=1.0) if antialias else torch.ones_like(scale)
    centre = (o + out_offset + 0.5) * scale  # in the region's coordinates
    if antialias:
        # PIL / torchvision: taps xmin = int(centre - support + 0.5) .. xmax, clipped to the region
        lo = torch.clamp(torch.trunc(centre - support + 0.5), min=0.0)
        hi = torch.minimum(torch.trunc(centre + support + 0.5), length)
        rel = x - start
        weight = torch.clamp(1.0 - torch.abs((rel - centre + 0.5) / support), min=0.0)
        weight = torch.where((rel >= lo) & (rel < hi), weight, 0.0)
    else:
        # align_corners=False bilinear, the source clamped to the region (torch's interpolate)
        src = torch.clamp(centre - 0.5, min=0.0)
        src = torch.minimum(src, length - 1)
        rel = x - start
        weight = torch.clamp(1.0 - torch.abs(rel - src), min=0.0)
        weight = torch.where((rel >= 0) & (rel < length), weight, 0.0)
    # outside the resized region (a centre crop larger than it): zeros, CenterCrop's padding
    inside = (o + out_offset >= 0) & (o + out_offset < out_total)
    weight = torch.where(inside, weight, 0.0)
    total = weight.sum(dim=2, keepdim=True)
    return (weight / torch.where(total > 0, total, 1.0)).to(torch.float32)


def resized_crop(
    images: torch.Tensor,
    params: CropParams,
    size: tuple[int, int],
    *,
    antialias: bool = True,
) -> torch.Tensor:
    """Crop, resize and flip each image by its params.

    The form follows where the images are (params on another device are copied to theirs
    first). On a device: `resized_crop_matrices` (two batched matrix products, nothing read
    back to the host). On the CPU: `resized_crop_per_crop` (torch's ``interpolate`` once per
    distinct crop, reading only the crop's pixels), which is torchvision's own resampling of a
    float image; the two agree within the float rounding of their sums (`tests/test_rrc.py`).

    Same arguments, result and shapes as `resized_crop_matrices`.
    """
    if images.ndim != 4:
        raise ValueError(f"`images` must be (B, C, H, W); got {tuple(images.shape)}")
    if len(params) != images.shape[0]:
        raise ValueError(f"`params` are for {len(params)} images; the batch has {images.shape[0]}")
    if params.size_px.device != images.device:  # e.g. CPU params for device images
        params = params.to(images.device)
    if host_reads_free(images):  # the form follows where the pixels are
        return resized_crop_per_crop(images, params, size, antialias=antialias)
    return resized_crop_matrices(images, params, size, antialias=antialias)


def resized_crop_per_crop(
    images: torch.Tensor,
    params: CropParams,
    size: tuple[int, int],
    *,
    antialias: bool = True,
) -> torch.Tensor:
    """`resized_crop` with torch's ``interpolate`` (bilinear, ``align_corners=False``), once
    per distinct crop (a loop over crops: the images sharing a crop, e.g. a validation batch of
    one size, are resized together).

    The crop box, output size and window are read on the host (``tolist``), so this is the CPU
    form. Only each crop's pixels are read and cast to float32. Same arguments, result and
    shapes as `resized_crop_matrices`.
    """
    rows, cols = size
    batch, channels = images.shape[:2]
    p = params
    boxes = torch.cat([p.top_left_px, p.size_px, p.out_total, p.out_offset], dim=1).tolist()
    crops: dict[tuple[int, ...], list[int]] = {}
    for i, box in enumerate(boxes):
        crops.setdefault(tuple(box), []).append(i)
    out = torch.empty((batch, channels, rows, cols), dtype=torch.float32, device=images.device)
    for (top, left, h, w, total_h, total_w, off_h, off_w), members in crops.items():
        region = images[:, :, top : top + h, left : left + w]
        if len(members) == 1:
            region = region[members[0] : members[0] + 1]
        else:
            region = region.index_select(0, torch.tensor(members, device=images.device))
        resized = F.interpolate(
            region.to(torch.float32), size=(total_h, total_w), mode="bilinear",
            align_corners=False, antialias=antialias,
        )  # fmt: skip
        window = resized[:, :, max(off_h, 0) : off_h + rows, max(off_w, 0) : off_w + cols]
        if window.shape[-2:] != (rows, cols):  # a centre crop larger than the resized region
            pad_top, pad_left = max(-off_h, 0), max(-off_w, 0)  # CenterCrop's zero padding
            pad_bottom = rows - pad_top - window.shape[-2]
            pad_right = cols - pad_left - window.shape[-1]
            window = F.pad(window, (pad_left, pad_right, pad_top, pad_bottom))
        if len(members) == 1:
            out[members[0]] = window[0]
        else:
            out.index_copy_(0, torch.tensor(members, device=images.device), window)
    flipped = [i for i, f in enumerate(p.flip_h.tolist()) if f]
    if flipped:
        index = torch.tensor(flipped, device=images.device)
        out.index_copy_(0, index, out.index_select(0, index).flip(-1))
    return out


def resized_crop_matrices(
    images: torch.Tensor,
    params: CropParams,
    size: tuple[int, int],
    *,
    antialias: bool = True,
) -> torch.Tensor:
    """Crop, resize and flip each image by its params: two batched matrix products.

    Args:
        images: The batch (uint8 or float). Images of different sizes lie top-left in a padded
            tensor; each is read only inside its own crop.
        params: One crop per image (`sample_crop_params`, `center_crop_params`).
        size: The output (rows, columns).
        antialias: Widen the filter when shrinking (torchvision's ``antialias=True``).

    Returns:
        float32 on the images' scale (not rounded).

    Shape:
        images: (B, C, H, W), any device; params on the same device
        -> (B, C, size[0], size[1]) float32, same device.
    """
    rows, cols = size
    _, _, height, width = images.shape
    p = params
    wy = axis_weights(
        height,
        p.top_left_px[:, 0],
        p.size_px[:, 0],
        p.out_total[:, 0],
        p.out_offset[:, 0],
        rows,
        antialias=antialias,
    )
    wx = axis_weights(
        width,
        p.top_left_px[:, 1],
        p.size_px[:, 1],
        p.out_total[:, 1],
        p.out_offset[:, 1],
        cols,
        antialias=antialias,
    )
    wx = torch.where(p.flip_h[:, None, None], wx.flip(1), wx)
    x = images.to(torch.float32)
    batch, channels = x.shape[:2]
    # columns first (W -> cols shrinks the larger operand): (B, C*H, W) @ (B, W, cols)
    along_x = torch.bmm(x.reshape(batch, channels * height, width), wx.transpose(1, 2))
    # then rows: (B, 1, rows, H) @ (B, C, H, cols)
    return torch.matmul(wy[:, None], along_x.view(batch, channels, height, cols))


class RandomResizedCrop(nn.Module):
    """torchvision's ``RandomResizedCrop`` (+ an optional flip), a crop drawn per image.

    Args:
        size: The output size, an int (square) or (rows, columns).
        scale: The crop's area range, fractions of the image.
        ratio: The crop's aspect (w / h) range.
        antialias: Widen the filter when shrinking (torchvision's default True).
        flip_p: Probability of a left-right flip (0: none; timm's default ``hflip=0.5``).

    Attributes:
        last_params: The `CropParams` of the last ``forward``.

    Shape:
        images: (B, C, H, W) uint8 or float, any device; ``sizes`` (B, 2) int (each image's
        (h, w) when they differ) -> (B, C, *size) float32 on the images' scale, same device.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        *,
        antialias: bool = True,
        flip_p: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(size, int):
            size = (size, size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"`size` must be an int or a pair of ints >= 1; got {size!r}")
        self.size = (int(size[0]), int(size[1]))
        self.scale = _check_pair("scale", scale, positive=False)
        self.ratio = _check_pair("ratio", ratio, positive=True)
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"`flip_p` must be in [0, 1]; got {flip_p}")
        self.antialias = bool(antialias)
        self.flip_p = float(flip_p)
        self.last_params: CropParams | None = None

    def sample_params(
        self,
        batch_size: int,
        heights: int | torch.Tensor,
        widths: int | torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> CropParams:
        """Draw each image's crop (`sample_crop_params`)."""
        return sample_crop_params(
            batch_size,
            heights,
            widths,
            self.size,
            scale=self.scale,
            ratio=self.ratio,
            flip_p=self.flip_p,
            generator=generator,
            device=device,
        )

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        params: CropParams | None = None,
        sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Crop with fresh params (or given ones), kept in ``last_params``."""
        if images.ndim != 4:
            raise ValueError(f"`images` must be (B, C, H, W); got {tuple(images.shape)}")
        if params is None:
            b, _, h, w = images.shape
            heights: int | torch.Tensor
            widths: int | torch.Tensor
            if sizes is None:
                heights, widths = h, w
            else:
                cpu = sizes.to("cpu") if generator is None else sizes.to(generator.device)
                heights, widths = cpu[:, 0], cpu[:, 1]
            params = self.sample_params(
                b, heights, widths, generator=generator, device=images.device
            )
        self.last_params = params
        return resized_crop(images, params, self.size, antialias=self.antialias)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, scale={self.scale}, ratio=({self.ratio[0]:.4g}, "
            f"{self.ratio[1]:.4g}), antialias={self.antialias}, flip_p={self.flip_p}"
        )
