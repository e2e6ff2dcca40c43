"""MixUp and CutMix per sample with soft labels: timm's ``Mixup`` without the loop over images.

timm's ``Mixup`` (``timm/data/mixup.py``) draws its lambdas with NumPy and, in "elem" mode,
mixes one image at a time in Python; each image is paired with its mirror in the batch
(``x.flip(0)``). Here the same rules run for the whole batch at once, from a
``torch.Generator``:

- the pairing is a permutation drawn from the generator (``torch.randperm``), not the flip:
  image i is mixed with image ``partner[i]``. A permutation can pair an image with itself (then
  it is left as it is, with its own label);
- "elem": per image, CutMix with probability ``switch_prob`` when both ``mixup_alpha`` and
  ``cutmix_alpha`` are > 0 (else whichever is on), ``lam ~ Beta(alpha, alpha)`` of that
  method, and the mix happens with probability ``prob`` (else ``lam = 1``); "batch": the same
  draws once for the whole batch (timm's order: ``prob`` first); "pair": the same draws once
  per pair of images, the pairs taken from the permutation (``perm[0]`` with ``perm[1]``,
  ``perm[2]`` with ``perm[3]``, ...; timm pairs i with B-1-i): both images of a pair share
  the method, lambda and box, and each is mixed with the other (with an odd batch the last
  image of the permutation is left as it is);
- MixUp: ``lam * x + (1 - lam) * x[partner]``;
- CutMix: timm's ``rand_bbox`` (a box of ``int(H sqrt(1 - lam))`` x ``int(W sqrt(1 - lam))``
  about a uniform centre, clipped to the image) or, with ``cutmix_minmax``, its
  ``rand_bbox_minmax``; the partner's pixels are pasted in the box and, with ``correct_lam``
  (or ``cutmix_minmax``), ``lam = 1 - box area / image area``;
- targets: ``lam * y + (1 - lam) * y[partner]`` with ``y`` the one-hot labels smoothed by
  ``label_smoothing`` (``off = s / num_classes``, ``on = 1 - s + off``), (B, num_classes).

Masks follow CutMix (the partner's mask is pasted in the same box); MixUp blends pixels, which
a mask of class indices cannot follow, so masks with ``mixup_alpha > 0`` are refused.

The Beta draws use ``torch._sample_dirichlet`` (the sampler behind ``torch.distributions.Beta``,
which takes a generator; the public ``Beta.sample`` does not).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gpuaug.device import host_reads_free, params_to_device

__all__ = ["MIX_MODES", "MixParams", "Mixup", "mixup_target"]

#: timm's modes: one draw for the batch, one per pair of images, one per image.
MIX_MODES = ("batch", "pair", "elem")


@dataclass(frozen=True)
class MixParams:
    """What a batch mixes, and how much (replayable with `Mixup.apply`).

    Attributes:
        lam: The weight of each image's own content and label (1: not mixed); for CutMix the
            corrected value when ``correct_lam``.
        partner: The image each one is mixed with (a permutation of ``0 .. B-1``).
        use_cutmix: CutMix (True) or MixUp (False), per image.
        box_yyxx_px: The CutMix box per image, timm's ``(yl, yh, xl, xh)`` (rows ``yl`` to
            ``yh - 1``, columns ``xl`` to ``xh - 1``); empty where not CutMix.

    Shape:
        lam: (B,) float32; partner: (B,) int64; use_cutmix: (B,) bool; box_yyxx_px: (B, 4)
        int64. All on the batch's device.
    """

    lam: torch.Tensor
    partner: torch.Tensor
    use_cutmix: torch.Tensor
    box_yyxx_px: torch.Tensor

    def __len__(self) -> int:
        return self.lam.shape[0]

    def to(self, device: torch.device | str) -> MixParams:
        """The same params on ``device`` (no host sync for a CPU -> CUDA move)."""
        return params_to_device(self, device)


def _pairs(perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The partner and the pair index of each image, pairing ``perm[2k]`` with ``perm[2k + 1]``.

    With an odd batch the last image of ``perm`` is its own partner, with pair index B // 2.

    Shape:
        perm: (B,) int64 -> (B,) int64, (B,) int64, same device.
    """
    batch = perm.shape[0]
    position = torch.empty_like(perm)
    position[perm] = torch.arange(batch, device=perm.device)
    other = position ^ 1  # the other place of the pair
    other = torch.where(other < batch, other, position)
    return perm[other], position // 2


def mixup_target(
    target: torch.Tensor,
    num_classes: int,
    lam: torch.Tensor,
    partner: torch.Tensor,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """timm's ``mixup_target`` with a pairing: ``lam * y + (1 - lam) * y[partner]``.

    Shape:
        target: (B,) int class indices; lam: (B,) float; partner: (B,) int64
        -> (B, num_classes) float32, the target's device.
    """
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    y1 = torch.full((target.shape[0], num_classes), off_value, device=target.device)
    y1.scatter_(1, target.long().view(-1, 1), on_value)
    y2 = y1[partner]
    weight = lam.to(torch.float32)[:, None]
    return y1 * weight + y2 * (1.0 - weight)


class Mixup(nn.Module):
    """timm's ``Mixup`` (MixUp / CutMix with soft labels), drawn per sample on the batch.

    Parameter names and defaults are timm's. Use it after the augmentation (on the float
    batch), where the labels are.

    Args:
        mixup_alpha: MixUp's Beta parameter; MixUp is on when > 0.
        cutmix_alpha: CutMix's Beta parameter; CutMix is on when > 0.
        cutmix_minmax: CutMix box side range, fractions of the image (timm's
            ``rand_bbox_minmax``); CutMix is on and ``cutmix_alpha`` is forced to 1 (as timm).
        prob: Probability of mixing an image ("elem"), a pair ("pair") or the batch ("batch").
        switch_prob: Probability of CutMix rather than MixUp when both are on.
        mode: "elem" (per image), "pair" (per pair of images, each mixed with the other) or
            "batch" (one lambda for the batch).
        correct_lam: Correct CutMix's lambda to the clipped box's area.
        label_smoothing: Label smoothing of the soft targets.
        num_classes: The number of classes of the targets.

    Attributes:
        last_params: The `MixParams` of the last ``forward`` (None before one).

    Shape:
        images: (B, C, H, W) float; target: (B,) int64 class indices; mask: (B, H, W) or
        (B, 1, H, W), any dtype. All on one device -> images (B, C, H, W) same dtype, targets
        (B, num_classes) float32 (and the mask, same shape and dtype).

    Example:
        >>> mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", num_classes=10)
        >>> x, y = torch.rand(8, 3, 32, 32), torch.arange(8)
        >>> x_mixed, soft = mix(x, y, generator=torch.Generator().manual_seed(0))
        >>> soft.shape
        torch.Size([8, 10])
    """

    def __init__(
        self,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: tuple[float, float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"`{name}` must be a float >= 0; got {value!r}")
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2 or not 0.0 <= cutmix_minmax[0] < cutmix_minmax[1] <= 1.0:
                raise ValueError(
                    f"`cutmix_minmax` must be a pair 0 <= lo < hi <= 1; got {cutmix_minmax!r}"
                )
            cutmix_alpha = 1.0  # timm: minmax forces CutMix on
            cutmix_minmax = (float(cutmix_minmax[0]), float(cutmix_minmax[1]))
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError(
                "one of `mixup_alpha` > 0, `cutmix_alpha` > 0 or `cutmix_minmax` must be set; "
                "got mixup_alpha=0, cutmix_alpha=0, cutmix_minmax=None"
            )
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1]; got {value}")
        if mode not in MIX_MODES:
            raise ValueError(f"`mode` must be one of {list(MIX_MODES)}; got {mode!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1); got {label_smoothing}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be an int >= 1; got {num_classes!r}")
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.cutmix_minmax = cutmix_minmax
        self.prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.mode = mode
        self.correct_lam = bool(correct_lam)
        self.label_smoothing = float(label_smoothing)
        self.num_classes = num_classes
        self.last_params: MixParams | None = None

    # ------------------------------------------------------------------ draws

    def _beta(self, alpha: float, n: int, generator, device) -> torch.Tensor:
        concentration = torch.full((n, 2), alpha, dtype=torch.float64, device=device)
        return torch._sample_dirichlet(concentration, generator=generator)[:, 0]

    def sample_params(
        self,
        batch_size: int,
        height: int,
        width: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> MixParams:
        """Draw a batch's pairing, methods, lambdas and boxes (on the generator's device).

        Consumption per batch is fixed: a permutation of B, then ``n`` = B ("elem"), B // 2
        ("pair") or 1 ("batch") of each: a switch uniform, a CutMix and a MixUp Beta, a
        ``prob`` uniform, and four box uniforms.
        """
        draw_device = generator.device if generator is not None else torch.device("cpu")
        n = {"elem": batch_size, "pair": batch_size // 2, "batch": 1}[self.mode]
        perm = torch.randperm(batch_size, generator=generator, device=draw_device)
        switch = torch.rand(n, generator=generator, device=draw_device, dtype=torch.float64)
        lam_cut = self._beta(self.cutmix_alpha or 1.0, n, generator, draw_device)
        lam_mix = self._beta(self.mixup_alpha or 1.0, n, generator, draw_device)
        mixes = torch.rand(n, generator=generator, device=draw_device, dtype=torch.float64)
        box_u = torch.rand((n, 4), generator=generator, device=draw_device, dtype=torch.float64)
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = switch < self.switch_prob
        else:
            use_cutmix = torch.full((n,), self.cutmix_alpha > 0, device=draw_device)
        lam = torch.where(use_cutmix, lam_cut, lam_mix)
        # timm keeps "elem" / "pair" lambdas in float32, the "batch" lambda as a Python float
        work = torch.float64 if self.mode == "batch" else torch.float32
        lam = torch.where(mixes < self.prob, lam.to(work), torch.ones((), dtype=work))
        box = self._boxes(lam, box_u, height, width)
        use_cutmix = use_cutmix & (lam < 1)
        box = torch.where(use_cutmix[:, None], box, torch.zeros_like(box))
        if self.correct_lam or self.cutmix_minmax is not None:
            area = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])
            cut_lam = 1.0 - area.to(torch.float64) / float(height * width)
            lam = torch.where(use_cutmix, cut_lam.to(work), lam)
        partner = perm
        if self.mode == "batch":
            lam, use_cutmix, box = (
                lam.expand(batch_size),
                use_cutmix.expand(batch_size),
                box.expand(batch_size, 4),
            )
        elif self.mode == "pair":
            partner, pair = _pairs(perm)
            # one row more, unmixed, for the image left alone in an odd batch
            lam = torch.cat([lam, torch.ones(1, dtype=lam.dtype, device=lam.device)])[pair]
            use_cutmix = torch.cat([use_cutmix, use_cutmix.new_zeros(1)])[pair]
            box = torch.cat([box, box.new_zeros(1, 4)])[pair]
        params = MixParams(
            lam.to(torch.float32).contiguous(),
            partner,
            use_cutmix.contiguous(),
            box.contiguous(),
        )
        return params if device is None else params.to(device)

    def _boxes(self, lam: torch.Tensor, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """timm's ``rand_bbox`` / ``rand_bbox_minmax`` from uniforms: (n, 4) (yl, yh, xl, xh)."""
        if self.cutmix_minmax is not None:
            lo, hi = self.cutmix_minmax
            lo_h, hi_h, lo_w, hi_w = (
                int(height * lo),
                int(height * hi),
                int(width * lo),
                int(width * hi),
            )
            cut_h = lo_h + torch.floor(u[:, 0] * max(hi_h - lo_h, 0)).long()
            cut_w = lo_w + torch.floor(u[:, 1] * max(hi_w - lo_w, 0)).long()
            yl = torch.floor(u[:, 2] * (height - cut_h + 1)).long()
            xl = torch.floor(u[:, 3] * (width - cut_w + 1)).long()
            return torch.stack([yl, yl + cut_h, xl, xl + cut_w], dim=1)
        ratio = torch.sqrt(1.0 - lam)
        cut_h = (height * ratio).long()  # int(): truncation of a non-negative value
        cut_w = (width * ratio).long()
        cy = torch.floor(u[:, 0] * height).long().clamp_(max=height - 1)
        cx = torch.floor(u[:, 1] * width).long().clamp_(max=width - 1)
        yl = (cy - cut_h // 2).clamp(0, height)
        yh = (cy + (cut_h + 1) // 2).clamp(0, height)
        xl = (cx - cut_w // 2).clamp(0, width)
        xh = (cx + (cut_w + 1) // 2).clamp(0, width)
        return torch.stack([yl, yh, xl, xh], dim=1)

    # ------------------------------------------------------------------ apply

    def _in_box(self, params: MixParams, height: int, width: int, device) -> torch.Tensor:
        rows = torch.arange(height, device=device)
        cols = torch.arange(width, device=device)
        box = params.box_yyxx_px
        in_rows = (rows >= box[:, 0, None]) & (rows < box[:, 1, None])
        in_cols = (cols >= box[:, 2, None]) & (cols < box[:, 3, None])
        inside = in_rows[:, :, None] & in_cols[:, None, :]
        return inside & params.use_cutmix[:, None, None]  # (B, H, W)

    def apply(  # type: ignore[override]  # params -> output, not nn.Module.apply(fn)
        self,
        images: torch.Tensor,
        target: torch.Tensor,
        params: MixParams,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Mix with given params: ``(images, soft targets)``, plus the mask when one is given.

        Raises:
            ValueError: Shapes that do not fit, or a mask with MixUp on.
            TypeError: Integer images.
        """
        if images.ndim != 4:
            raise ValueError(f"`images` must be (B, C, H, W); got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(
                f"`images` must be float (mix after the augmentation); got {images.dtype}"
            )
        batch, _, height, width = images.shape
        if target.shape != (batch,) or target.is_floating_point():
            raise ValueError(
                f"`target` must be ({batch},) integer class indices; got {tuple(target.shape)} "
                f"{target.dtype}"
            )
        if len(params) != batch:
            raise ValueError(f"`params` are for {len(params)} images; the batch has {batch}")
        if host_reads_free(target) and batch:
            # on a device this check would wait for it; there the one-hot scatter asserts
            low, high = (int(v) for v in torch.aminmax(target))
            if low < 0 or high >= self.num_classes:
                raise ValueError(
                    f"`target` holds classes {low}..{high}; "
                    f"`num_classes`={self.num_classes} allows 0..{self.num_classes - 1}"
                )
        if mask is not None:
            if self.mixup_alpha > 0:
                raise ValueError(
                    "MixUp blends two images, and a mask of class indices cannot be blended: "
                    "with `mask`, set `mixup_alpha=0` (CutMix pastes the partner's mask in its box)"
                )
            if mask.shape[0] != batch or tuple(mask.shape[-2:]) != (height, width):
                raise ValueError(
                    f"`mask` must be ({batch}, H, W) or ({batch}, 1, H, W) like the images; "
                    f"got {tuple(mask.shape)}"
                )
        partner = params.partner
        # one weight per pixel, the image's share: a MixUp image's lam everywhere; a CutMix
        # image's 1 outside its box (itself) and 0 inside (the partner). lerp is exact at both
        # ends, so CutMix copies finite pixels bit for bit (an inf or NaN in either image
        # makes the pixel NaN). Two passes: the partner gather, the lerp.
        lam = torch.where(params.use_cutmix, 1.0, params.lam).to(images.dtype)[:, None, None]
        inside = self._in_box(params, height, width, images.device)  # False unless CutMix
        weight = torch.where(inside, 0.0, lam)[:, None]  # (B, 1, H, W)
        out = images[partner].lerp_(images, weight)
        soft = mixup_target(target, self.num_classes, params.lam, partner, self.label_smoothing)
        if mask is None:
            return out, soft
        where = inside if mask.ndim == 3 else inside[:, None]
        return out, soft, torch.where(where, mask[partner], mask)

    def forward(
        self,
        images: torch.Tensor,
        target: torch.Tensor,
        generator: torch.Generator | None = None,
        params: MixParams | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Mix with fresh params (or given ones), kept in ``last_params`` for replay."""
        if params is None:
            if images.ndim != 4:
                raise ValueError(f"`images` must be (B, C, H, W); got {tuple(images.shape)}")
            b, _, h, w = images.shape
            params = self.sample_params(b, h, w, generator=generator, device=images.device)
        out = self.apply(images, target, params, mask)
        self.last_params = params
        return out

    def extra_repr(self) -> str:
        return (
            f"mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
            f"cutmix_minmax={self.cutmix_minmax}, prob={self.prob}, "
            f"switch_prob={self.switch_prob}, mode={self.mode!r}, "
            f"label_smoothing={self.label_smoothing}, num_classes={self.num_classes}"
        )
