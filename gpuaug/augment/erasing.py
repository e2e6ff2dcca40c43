"""RandomErasing per sample, batched: timm's ``RandomErasing`` without the loop over images.

timm's ``RandomErasing`` (``timm/data/random_erasing.py``) runs on a normalised batch in its
GPU ``PrefetchLoader``, one image at a time in Python, drawing from Python's ``random``. Here
the same rule runs for the whole batch at once:

- each image is erased with probability ``re_prob`` (timm: skipped when ``random() > p``);
- it gets ``count`` boxes, ``count`` uniform in ``min_count .. re_count`` (timm's
  ``max_count``; fixed when they agree);
- each box tries up to 10 times: ``target_area = U(min_area, max_area) * H * W / count``,
  ``aspect = exp(U(log min_aspect, log max_aspect))``, ``h = round(sqrt(area * aspect))``,
  ``w = round(sqrt(area / aspect))`` (round half to even, as Python's ``round``), kept at the
  first try with ``h < H`` and ``w < W``; then ``top`` uniform in ``0 .. H - h``, ``left`` in
  ``0 .. W - w``; a box with no valid try is dropped (as timm);
- the box is filled per ``re_mode``: ``"const"`` 0, ``"rand"`` one standard normal colour per
  channel, ``"pixel"`` a standard normal per pixel and channel; a later box overwrites an earlier
  one where they overlap (timm's order).

All draws are made at once (all 10 tries of every box), so the generator's consumption is fixed
per sample: ``2 + 22 * re_count`` uniforms per image, plus ``re_count * C`` normals in "rand"
mode and one 62-bit seed per image in "pixel" mode. The "pixel" noise is computed on the images'
device from those seeds (`hashed_normals`: a SplitMix64 hash of (seed, pixel index), then
Box-Muller), not drawn from a device generator, so the params stay small, no value is read back
to the host, and the same seed gives the same noise on every device. On a device the hash runs
over the whole batch (a fixed shape) and each erased pixel keeps its value; on the CPU only the
erased pixels are listed and hashed (`hashed_normals_at`), with the same values.

The erasing runs after the normalisation (as timm), as a separate pass over the batch; it is
not fused into the augmentation kernel's write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gpuaug.device import host_reads_free, params_to_device

__all__ = [
    "RE_MODES",
    "ErasingParams",
    "RandomErasing",
    "erasing_boxes",
    "hashed_normals",
    "hashed_normals_at",
]

#: timm's ``mode`` values: a constant 0, a random colour per box, random per pixel.
RE_MODES = ("const", "rand", "pixel")

#: timm's tries per box.
_ATTEMPTS = 10


@dataclass(frozen=True)
class ErasingParams:
    """The boxes a batch erases, and what fills them (replayable with `RandomErasing.apply`).

    Attributes:
        box_tlhw_px: Each box's top row, left column, height and width in pixels.
        active: Which boxes are erased (the image was picked, the box is within its count and
            one of its tries fitted).
        colour: The fill of each box per channel ("rand"; zeros for "const" and "pixel").
        noise_seed: Each image's seed of the per-pixel noise ("pixel"), else None.

    Shape:
        box_tlhw_px: (B, K, 4) int64; active: (B, K) bool; colour: (B, K, C) float32;
        noise_seed: (B,) int64; K = ``re_count``. All on the batch's device.
    """

    box_tlhw_px: torch.Tensor
    active: torch.Tensor
    colour: torch.Tensor
    noise_seed: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.active.shape[0]

    def to(self, device: torch.device | str) -> ErasingParams:
        """The same params on ``device``."""
        return params_to_device(self, device)


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 (wrapping multiplication)."""
    z = z + _signed(0x9E3779B97F4A7C15)
    z = (z ^ _shift_right(z, 30)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ _shift_right(z, 27)) * _signed(0x94D049BB133111EB)
    return z ^ _shift_right(z, 31)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def hashed_normals(seed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normals per image from a counter-based hash: the same values on every device.

    Element ``n`` of image ``b`` is Box-Muller of the two 24-bit halves of
    ``splitmix64(splitmix64(seed[b]) + n)``.

    Shape:
        seed: (B,) int64, any device; shape: (B, ...) -> ``shape`` float32, the seed's device.
    """
    count = 1
    for n in shape[1:]:
        count *= n
    index = torch.arange(count, device=seed.device, dtype=torch.int64)
    return _normals_from_keys(_splitmix64(seed)[:, None] + index[None, :]).reshape(shape)


def hashed_normals_at(seed: torch.Tensor, image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Elements of `hashed_normals` picked one by one: the normal of element ``index[n]`` (the
    flat index within one image) of image ``image[n]``; equal to those of the whole tensor.

    Shape:
        seed: (B,) int64; image, index: (N,) int64, same device -> (N,) float32.
    """
    return _normals_from_keys(_splitmix64(seed)[image] + index)


def _normals_from_keys(keys: torch.Tensor) -> torch.Tensor:
    """Box-Muller of the two 24-bit halves of ``splitmix64(keys)``, float32, same shape."""
    z = _splitmix64(keys)
    scale = 2.0**-24
    u1 = (_shift_right(z, 40).to(torch.float32) + 0.5) * scale  # (0, 1): log is finite
    u2 = (((z >> 8) & 0xFFFFFF).to(torch.float32) + 0.5) * scale
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * torch.pi) * u2)


def _fill_pixels(images: torch.Tensor, covered: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """``images`` with each covered pixel (every channel) set to its `hashed_normals` value,
    hashing only those pixels: the same result as the whole-batch hash and a ``torch.where``.

    The covered pixels are listed on the host (``nonzero``), so this is the CPU form.

    Shape:
        images: (B, C, H, W) float; covered: (B, H, W) bool; seed: (B,) int64 -> like images.
    """
    batch, channels, height, width = images.shape
    image, row, col = torch.nonzero(covered, as_tuple=True)
    plane = height * width
    channel = torch.arange(channels, device=images.device, dtype=torch.int64)[:, None]
    index = channel * plane + (row * width + col)[None, :]  # (C, N) within an image
    image = image.expand(channels, -1)
    out = images.clone(memory_format=torch.contiguous_format)  # any strides in: flat rows
    flat = out.view(batch, channels * plane)
    flat[image, index] = hashed_normals_at(seed, image, index).to(images.dtype)
    return out


def erasing_boxes(
    uniforms: torch.Tensor,
    height: int,
    width: int,
    *,
    re_prob: float,
    re_count: int,
    min_count: int = 1,
    min_area: float = 0.02,
    max_area: float = 1 / 3,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's box rule, for a whole batch, from its uniforms (see the module docstring).

    Column layout of ``uniforms`` per image: 0 picks the image (``<= re_prob``), 1 the count,
    then for box k: ``2 + 20 k + 2 a`` the area and ``3 + 20 k + 2 a`` the aspect of try a, and
    ``2 + 20 K + 2 k`` / ``3 + 20 K + 2 k`` its top and left. Computed in float64, in the same
    order of operations as timm's Python floats.

    Returns:
        ``(box_tlhw_px, active)``: (B, K, 4) int64 and (B, K) bool, on the uniforms' device.
    """
    k_boxes = re_count
    u = uniforms.to(torch.float64)
    batch = u.shape[0]
    picked = u[:, 0] <= re_prob
    if min_count == re_count:
        count = torch.full((batch,), float(min_count), dtype=torch.float64, device=u.device)
    else:
        span = re_count - min_count + 1
        count = min_count + torch.floor(u[:, 1] * span).clamp_(max=span - 1)
    tries = u[:, 2 : 2 + 2 * _ATTEMPTS * k_boxes].reshape(batch, k_boxes, _ATTEMPTS, 2)
    max_aspect = max_aspect or 1 / min_aspect
    lo, hi = math.log(min_aspect), math.log(max_aspect)
    area = float(height * width)
    target = (min_area + (max_area - min_area) * tries[..., 0]) * area / count[:, None, None]
    aspect = torch.exp(lo + (hi - lo) * tries[..., 1])
    h = torch.round(torch.sqrt(target * aspect))
    w = torch.round(torch.sqrt(target / aspect))
    fits = (w < width) & (h < height)
    first = torch.argmax(fits.to(torch.uint8), dim=2, keepdim=True)  # the first try that fits
    found = fits.any(dim=2)
    h = torch.gather(h, 2, first)[..., 0]
    w = torch.gather(w, 2, first)[..., 0]
    place = u[:, 2 + 2 * _ATTEMPTS * k_boxes :].reshape(batch, k_boxes, 2)
    top = torch.floor(place[..., 0] * (height - h + 1)).clamp_(min=0)
    top = torch.minimum(top, (height - h).clamp(min=0))
    left = torch.floor(place[..., 1] * (width - w + 1)).clamp_(min=0)
    left = torch.minimum(left, (width - w).clamp(min=0))
    index = torch.arange(k_boxes, device=u.device, dtype=torch.float64)
    active = picked[:, None] & (index[None, :] < count[:, None]) & found
    box = torch.stack([top, left, h, w], dim=-1).to(torch.int64)
    return box, active


class RandomErasing(nn.Module):
    """timm's ``RandomErasing``, drawn per sample and applied to the whole batch at once.

    Meant for a normalised float batch (after `GPUAugment`), as timm applies it. Parameter names
    are those of timm's ``create_transform`` (``re_prob``, ``re_mode``, ``re_count``,
    ``re_num_splits``) and of its ``RandomErasing`` (``min_area``, ``max_area``, ``min_aspect``,
    ``max_aspect``, ``min_count``); ``re_count`` is timm's ``max_count``.

    Args:
        re_prob: Probability that an image is erased.
        re_mode: "const" (0), "rand" (a normal colour per box and channel) or "pixel" (normal
            per pixel).
        re_count: The largest number of boxes per image (timm's ``max_count``).
        min_count: The smallest number of boxes per image (when erased).
        min_area: The smallest box area, a fraction of the image (divided by the count).
        max_area: The largest box area, a fraction of the image (divided by the count).
        min_aspect: The smallest aspect ratio h / w.
        max_aspect: The largest; ``1 / min_aspect`` when None.
        re_num_splits: timm's augmentation splits: the first ``B // re_num_splits`` images are
            left alone when it is > 1 (the clean split).

    Attributes:
        last_params: The `ErasingParams` of the last ``forward`` (None before one).

    Shape:
        images: (B, C, H, W) float, any device -> (B, C, H, W), same dtype and device.

    Example:
        >>> erase = RandomErasing(re_prob=1.0, re_mode="pixel")
        >>> x = torch.zeros(4, 3, 32, 32)
        >>> y = erase(x, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(erase.apply(x, erase.last_params), y)
        True
    """

    def __init__(
        self,
        re_prob: float = 0.5,
        re_mode: str = "const",
        re_count: int = 1,
        *,
        min_count: int = 1,
        min_area: float = 0.02,
        max_area: float = 1 / 3,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
        re_num_splits: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(re_prob, bool) or not isinstance(re_prob, int | float):
            raise TypeError(f"`re_prob` must be a float; got {re_prob!r}")
        if not 0.0 <= re_prob <= 1.0:
            raise ValueError(f"`re_prob` must be in [0, 1]; got {re_prob}")
        if not isinstance(re_mode, str) or re_mode.lower() not in RE_MODES:
            raise ValueError(f"`re_mode` must be one of {list(RE_MODES)}; got {re_mode!r}")
        for name, value in (("re_count", re_count), ("min_count", min_count)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"`{name}` must be an int; got {value!r}")
            if value < 1:
                raise ValueError(f"`{name}` must be >= 1; got {value}")
        if min_count > re_count:
            raise ValueError(
                f"`min_count` must be <= `re_count`; got min_count={min_count}, re_count={re_count}"
            )
        if not 0.0 < min_area <= max_area:
            raise ValueError(
                f"`min_area` and `max_area` must satisfy 0 < min_area <= max_area; "
                f"got {min_area}, {max_area}"
            )
        if min_aspect <= 0 or (max_aspect is not None and max_aspect <= 0):
            raise ValueError(
                f"`min_aspect` and `max_aspect` must be > 0; got {min_aspect}, {max_aspect}"
            )
        if isinstance(re_num_splits, bool) or not isinstance(re_num_splits, int):
            raise TypeError(f"`re_num_splits` must be an int; got {re_num_splits!r}")
        if re_num_splits < 0:
            raise ValueError(f"`re_num_splits` must be >= 0; got {re_num_splits}")
        self.re_prob = float(re_prob)
        self.re_mode = re_mode.lower()
        self.re_count = re_count
        self.min_count = min_count
        self.min_area = float(min_area)
        self.max_area = float(max_area)
        self.min_aspect = float(min_aspect)
        self.max_aspect = None if max_aspect is None else float(max_aspect)
        self.re_num_splits = re_num_splits
        self.last_params: ErasingParams | None = None

    @property
    def draws_per_sample(self) -> int:
        """The uniforms one image consumes (fixed, whatever is drawn)."""
        return 2 + 2 * _ATTEMPTS * self.re_count + 2 * self.re_count

    def sample_uniforms(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The batch's uniforms, (B, `draws_per_sample`) float32 on the generator's device."""
        device = generator.device if generator is not None else torch.device("cpu")
        return torch.rand((batch_size, self.draws_per_sample), generator=generator, device=device)

    def params_from_uniforms(
        self,
        uniforms: torch.Tensor,
        channels: int,
        height: int,
        width: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> ErasingParams:
        """The params for given uniforms (the colours / noise seed from ``generator``)."""
        box, active = erasing_boxes(
            uniforms,
            height,
            width,
            re_prob=self.re_prob,
            re_count=self.re_count,
            min_count=self.min_count,
            min_area=self.min_area,
            max_area=self.max_area,
            min_aspect=self.min_aspect,
            max_aspect=self.max_aspect,
        )
        batch = uniforms.shape[0]
        if self.re_num_splits > 1:
            clean = batch // self.re_num_splits
            rows = torch.arange(batch, device=active.device)[:, None]
            active = active & (rows >= clean)
        draw_device = uniforms.device
        noise_seed = None
        if self.re_mode == "rand":
            shape = (batch, self.re_count, channels)
            colour = torch.randn(shape, generator=generator, device=draw_device)
        else:
            colour = torch.zeros((batch, self.re_count, channels), device=draw_device)
        if self.re_mode == "pixel":
            noise_seed = torch.randint(0, 2**62, (batch,), generator=generator, device=draw_device)
        params = ErasingParams(box, active, colour, noise_seed)
        return params if device is None else params.to(device)

    def sample_params(
        self,
        batch_size: int,
        channels: int,
        height: int,
        width: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> ErasingParams:
        """Draw a batch's params on the generator's device, moved to ``device``."""
        uniforms = self.sample_uniforms(batch_size, generator)
        return self.params_from_uniforms(
            uniforms, channels, height, width, generator=generator, device=device
        )

    def apply(  # type: ignore[override]  # params -> output, not nn.Module.apply(fn)
        self, images: torch.Tensor, params: ErasingParams
    ) -> torch.Tensor:
        """Erase the boxes of ``params`` (a new tensor; ``images`` is left unchanged)."""
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(
                f"`images` must be a (B, C, H, W) float batch; got {tuple(images.shape)} "
                f"{images.dtype}"
            )
        batch, channels, height, width = images.shape
        if len(params) != batch or params.colour.shape[-1] != channels:
            raise ValueError(
                f"`params` are for {len(params)} images of {params.colour.shape[-1]} channels; "
                f"the batch has {batch} of {channels}"
            )
        device = images.device
        box = params.box_tlhw_px
        rows = torch.arange(height, device=device)
        cols = torch.arange(width, device=device)
        top, left, h, w = box[..., 0], box[..., 1], box[..., 2], box[..., 3]
        in_rows = (rows >= top[..., None]) & (rows < (top + h)[..., None])  # (B, K, H)
        in_cols = (cols >= left[..., None]) & (cols < (left + w)[..., None])  # (B, K, W)
        in_rows = in_rows & params.active[..., None]
        if self.re_mode == "pixel":
            assert params.noise_seed is not None  # drawn for "pixel"
            covered = (in_rows[..., :, None] & in_cols[..., None, :]).any(dim=1)
            if host_reads_free(covered):  # the CPU: hash only the erased pixels
                return _fill_pixels(images, covered, params.noise_seed)
            fill = hashed_normals(params.noise_seed, tuple(images.shape))
            return torch.where(covered[:, None], fill.to(images.dtype), images)
        out = images
        colour = params.colour.to(images.dtype)
        for k in range(box.shape[1]):  # a loop over the boxes of an image, not over images
            covered = in_rows[:, k, :, None] & in_cols[:, k, None, :]  # (B, H, W)
            out = torch.where(covered[:, None], colour[:, k, :, None, None], out)
        return out if out is not images else images.clone()

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        params: ErasingParams | None = None,
    ) -> torch.Tensor:
        """Erase with fresh params (or given ones); they are kept in ``last_params``."""
        if params is None:
            if images.ndim != 4:
                raise ValueError(f"`images` must be (B, C, H, W); got {tuple(images.shape)}")
            b, c, h, w = images.shape
            params = self.sample_params(b, c, h, w, generator=generator, device=images.device)
        self.last_params = params
        return self.apply(images, params)

    def extra_repr(self) -> str:
        return (
            f"re_prob={self.re_prob}, re_mode={self.re_mode!r}, re_count={self.re_count}, "
            f"min_count={self.min_count}, area=({self.min_area:.3g}, {self.max_area:.3g}), "
            f"min_aspect={self.min_aspect}"
        )
