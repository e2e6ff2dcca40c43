"""The ImageNet training recipe per sample, as one module: crop, flip, TrivialAugment, normalise,
erase, mix; and its validation counterpart.

The steps and their order are timm's (``create_transform`` + ``PrefetchLoader`` + ``Mixup`` in
the training loop): `RandomResizedCrop` with a left-right flip, then `TrivialAugmentWide` or
`RandAugment` on whole grey levels, then ``/ 255`` and the mean / std normalisation, then
`RandomErasing`, then `Mixup` (MixUp / CutMix with soft targets). Each step draws its params
per image from one CPU ``torch.Generator`` (seeded per batch, e.g. with
`gpuaug.loader.gpu_loader.GPULoader.augment_seed`), so a batch is a function of its seed and
`TrainRecipe.last_params` replays it.

`RecipeConfig` is a frozen dataclass that round-trips YAML; the presets ``imagenet_rrc`` and
``imagenet_rrc_val`` lie with the augmentation presets (`gpuaug.augment.config.preset_dir`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from gpuaug.augment.auto_augment import OPS, AutoAugmentParams, RandAugment, TrivialAugmentWide
from gpuaug.augment.config import preset_dir
from gpuaug.augment.erasing import ErasingParams, RandomErasing
from gpuaug.augment.mixup import MIX_MODES, MixParams, Mixup
from gpuaug.augment.rrc import CropParams, RandomResizedCrop, center_crop_params, resized_crop

__all__ = [
    "AUTO_AUGMENTS",
    "EvalRecipe",
    "RecipeConfig",
    "RecipeParams",
    "TrainRecipe",
    "is_preset_name",
    "load_recipe",
]

#: `RecipeConfig.auto_augment` values.
AUTO_AUGMENTS = ("trivial_augment_wide", "rand_augment", None)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class RecipeConfig:
    """The settings of a training (``kind="train"``) or validation (``"eval"``) recipe.

    Names follow timm's ``create_transform`` / ``Mixup`` where timm has one.

    Attributes:
        kind: "train" or "eval".
        size: Output side (square) or (rows, columns).
        scale: RandomResizedCrop's area range.
        ratio: RandomResizedCrop's aspect range.
        hflip: Probability of a left-right flip.
        auto_augment: "trivial_augment_wide", "rand_augment" or None.
        num_magnitude_bins: TrivialAugment / RandAugment bins.
        ra_num_ops: RandAugment's ops per image.
        ra_magnitude: RandAugment's magnitude bin.
        mean: Per-channel mean (0..1 scale), subtracted after ``/ 255``.
        std: Per-channel std (0..1 scale).
        re_prob: RandomErasing probability (0: off).
        re_mode: "const", "rand" or "pixel".
        re_count: Largest number of erased boxes.
        mixup_alpha: MixUp's Beta parameter (0: off).
        cutmix_alpha: CutMix's Beta parameter (0: off).
        cutmix_minmax: CutMix's box range, or None.
        mixup_prob: timm's ``prob`` (``--mixup-prob``).
        mixup_switch_prob: timm's ``switch_prob``.
        mixup_mode: "batch", "pair" or "elem".
        label_smoothing: Soft targets' smoothing, applied with MixUp / CutMix (timm's
            ``smoothing``). Without mixing the targets stay class indices and the smoothing
            belongs in the loss (``CrossEntropyLoss(label_smoothing=...)``), as in timm.
        num_classes: Classes of the soft targets (needed when mixing).
        resize_size: "eval": the short side before the centre crop.
        antialias: Filter when shrinking (torchvision's antialias=True).
    """

    kind: str = "train"
    size: int | tuple[int, int] = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    auto_augment: str | None = "trivial_augment_wide"
    num_magnitude_bins: int = 31
    ra_num_ops: int = 2
    ra_magnitude: int = 9
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    re_prob: float = 0.0
    re_mode: str = "const"
    re_count: int = 1
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    cutmix_minmax: tuple[float, float] | None = None
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    label_smoothing: float = 0.1
    num_classes: int | None = None
    resize_size: int = 256
    antialias: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("train", "eval"):
            raise ValueError(f"`kind` must be 'train' or 'eval'; got {self.kind!r}")
        if self.auto_augment not in AUTO_AUGMENTS:
            raise ValueError(
                f"`auto_augment` must be one of {list(AUTO_AUGMENTS)}; got {self.auto_augment!r}"
            )
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(
                f"`mean` and `std` must have one value per channel and std > 0; "
                f"got {self.mean}, {self.std}"
            )
        if self.auto_augment is not None and self.kind == "train" and len(self.mean) not in (1, 3):
            raise ValueError(
                f"`auto_augment`={self.auto_augment!r} runs on 1 or 3 channels (torchvision's "
                f"ops); `mean` / `std` have {len(self.mean)}: set auto_augment=None"
            )
        for name in ("size", "scale", "ratio", "mean", "std", "cutmix_minmax"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        sides = (self.size,) if isinstance(self.size, int) else tuple(self.size)
        if len(sides) not in (1, 2) or not all(_positive_int(v) for v in sides):
            raise ValueError(f"`size` must be a positive int or (rows, columns); got {self.size!r}")
        if self.num_classes is not None and not _positive_int(self.num_classes):
            raise ValueError(f"`num_classes` must be an int >= 1 or None; got {self.num_classes!r}")
        if not _positive_int(self.resize_size):
            raise ValueError(f"`resize_size` must be an int >= 1; got {self.resize_size!r}")
        # the fields the steps' modules know by other names (flip_p, prob, mode, ...)
        for name in ("hflip", "mixup_prob", "mixup_switch_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"`{name}` must be in [0, 1]; got {value!r}")
        if self.mixup_mode not in MIX_MODES:
            raise ValueError(
                f"`mixup_mode` must be one of {list(MIX_MODES)}; got {self.mixup_mode!r}"
            )
        bins = self.num_magnitude_bins
        if self.auto_augment is not None and (not _int(bins) or bins < 2):
            raise ValueError(f"`num_magnitude_bins` must be an int >= 2; got {bins!r}")
        if self.auto_augment == "rand_augment":
            if not _int(self.ra_num_ops) or self.ra_num_ops < 0:
                raise ValueError(f"`ra_num_ops` must be an int >= 0; got {self.ra_num_ops!r}")
            if not _int(self.ra_magnitude) or not 0 <= self.ra_magnitude < bins:
                raise ValueError(
                    f"`ra_magnitude` must be an int in [0, num_magnitude_bins={bins}); "
                    f"got {self.ra_magnitude!r}"
                )

    @property
    def output_size(self) -> tuple[int, int]:
        """(rows, columns) of the output."""
        if isinstance(self.size, int):
            return (self.size, self.size)
        rows, columns = self.size
        return (rows, columns)

    @property
    def mixes(self) -> bool:
        """Whether MixUp or CutMix is on."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0 or self.cutmix_minmax is not None

    @classmethod
    def from_yaml(cls, text_or_path: str | os.PathLike[str]) -> RecipeConfig:
        """A config from YAML text or a file (unknown keys are refused by name)."""
        where = ""
        text = str(text_or_path)
        if isinstance(text_or_path, os.PathLike) or text.endswith((".yaml", ".yml")):
            where = f"{text_or_path}: "
            text = Path(text_or_path).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{where}a recipe must be a YAML mapping; got {type(data).__name__}")
        data = dict(data)
        if "recipe" in data:  # a preset's marker, ``recipe: train`` or ``recipe: eval``
            data.setdefault("kind", data.pop("recipe"))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}unknown recipe keys {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}{error}") from error

    def to_yaml(self) -> str:
        """The config as YAML (``from_yaml`` reads it back)."""
        data: dict[str, Any] = {"recipe": self.kind}
        for f in dataclasses.fields(self)[1:]:  # `kind` is the marker
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return yaml.safe_dump(data, sort_keys=False)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any) -> bool:
    return _int(value) and value >= 1


def load_recipe(
    name_or_path: str | os.PathLike[str] | RecipeConfig, **overrides: Any
) -> RecipeConfig:
    """A recipe from a preset name ("imagenet_rrc", "imagenet_rrc_val") or a YAML path, with
    any of its fields replaced: ``load_recipe("imagenet_rrc", num_classes=10)``.

    Raises:
        ValueError: an unknown preset, or an override that names no `RecipeConfig` field.
    """
    if isinstance(name_or_path, RecipeConfig):
        config = name_or_path
    else:
        text = str(name_or_path)
        if is_preset_name(text):
            path = preset_dir() / f"{text}.yaml"
            if not path.is_file():
                presets = sorted(p.stem for p in preset_dir().glob("*.yaml") if _is_recipe_file(p))
                raise ValueError(
                    f"unknown recipe preset {text!r}; the recipe presets are {presets} (in "
                    f"{preset_dir()})"
                )
            if not _is_recipe_file(path):
                raise ValueError(
                    f"{text!r} is an augmentation preset, not a recipe (a recipe's first key "
                    "is `recipe: train` or `recipe: eval`): pass it as `augment`"
                )
            config = RecipeConfig.from_yaml(path)
        else:
            config = RecipeConfig.from_yaml(Path(name_or_path))
    if not overrides:
        return config
    fields = {f.name for f in dataclasses.fields(RecipeConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"`load_recipe` got {', '.join(map(repr, unknown))}, which no RecipeConfig field "
            f"is named; the fields are {', '.join(sorted(fields))}"
        )
    return dataclasses.replace(config, **overrides)


def _is_recipe_file(path: Path) -> bool:
    """Whether a preset file is a recipe (its ``recipe:`` marker), not an augmentation."""
    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and "recipe" in data


def is_preset_name(text: str) -> bool:
    """Whether ``text`` names a recipe preset (no folder, no YAML suffix), not a file."""
    return os.sep not in text and "/" not in text and not text.endswith((".yaml", ".yml"))


@dataclass(frozen=True)
class RecipeParams:
    """Every step's per-image params of one batch (None for a step that is off)."""

    crop: CropParams
    auto_augment: AutoAugmentParams | None
    erasing: ErasingParams | None
    mix: MixParams | None


def _check_images(images: torch.Tensor, config: RecipeConfig) -> None:
    """Refuses a batch that is not (B, C, H, W) with one channel per value of ``mean``."""
    if images.ndim != 4:
        raise ValueError(f"`images` must be (B, C, H, W); got {tuple(images.shape)}")
    if images.shape[1] != len(config.mean):
        raise ValueError(
            f"`images` have {images.shape[1]} channels; `mean` / `std` have {len(config.mean)}"
        )


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(x / 255 - mean) / std`` as one multiply-add per channel (Python scalars: no copy)."""
    out = torch.empty_like(x)
    for c, (m, s) in enumerate(zip(mean, std, strict=True)):  # a loop over channels
        torch.mul(x[:, c], 1.0 / (255.0 * s), out=out[:, c]).add_(-m / s)  # no temporary
    return out


class TrainRecipe(nn.Module):
    """The training recipe, each step per image (see the module docstring).

    Args:
        config: A `RecipeConfig` of kind "train", or a preset name / YAML path.

    Attributes:
        last_params: The `RecipeParams` of the last ``forward``.

    Shape:
        images: (B, 1 or 3, H, W) uint8 (or float on the 0..255 scale), any device; target:
        (B,) int64 class indices -> images (B, C, *size) float32 normalised, and targets
        (B, num_classes) float32 soft targets when mixing, else the class indices.
    """

    def __init__(self, config: RecipeConfig | str | os.PathLike[str] = "imagenet_rrc") -> None:
        super().__init__()
        config = load_recipe(config)
        if config.kind != "train":
            raise ValueError(f"`config` must be a training recipe; got kind={config.kind!r}")
        if config.mixes and config.num_classes is None:
            raise ValueError("`num_classes` must be set when MixUp or CutMix is on")
        self.config = config
        self.crop = RandomResizedCrop(
            config.size, config.scale, config.ratio, antialias=config.antialias,
            flip_p=config.hflip,
        )  # fmt: skip
        self.auto_augment: TrivialAugmentWide | RandAugment | None
        if config.auto_augment == "trivial_augment_wide":
            self.auto_augment = TrivialAugmentWide(config.num_magnitude_bins)
        elif config.auto_augment == "rand_augment":
            self.auto_augment = RandAugment(
                config.ra_num_ops, config.ra_magnitude, config.num_magnitude_bins
            )
        else:
            self.auto_augment = None
        self.erasing = (
            RandomErasing(config.re_prob, config.re_mode, config.re_count)
            if config.re_prob > 0
            else None
        )
        self.mixup = (
            Mixup(
                config.mixup_alpha,
                config.cutmix_alpha,
                config.cutmix_minmax,
                config.mixup_prob,
                config.mixup_switch_prob,
                config.mixup_mode,
                label_smoothing=config.label_smoothing,
                num_classes=config.num_classes or 0,  # checked above when mixing
            )  # fmt: skip
            if config.mixes
            else None
        )
        self.last_params: RecipeParams | None = None

    def sample_params(
        self,
        images: torch.Tensor,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        sizes: torch.Tensor | None = None,
    ) -> RecipeParams:
        """Draw every step's params for a batch, in a fixed order, from one CPU generator.

        ``sizes`` (B, 2) int on the CPU (the host knows each image's size): each image's own
        (h, w) within a padded batch.
        """
        if generator is None:
            generator = torch.Generator()
            if seed is not None:
                generator.manual_seed(seed)
        b, c, h, w = images.shape
        rows, cols = self.config.output_size
        device = images.device
        heights, widths = (h, w) if sizes is None else (sizes[:, 0], sizes[:, 1])
        crop = self.crop.sample_params(b, heights, widths, generator=generator, device=device)
        auto = None
        if self.auto_augment is not None:
            auto = self.auto_augment.sample_params(
                b, rows, cols, generator=generator, device=device
            )
        erasing = None
        if self.erasing is not None:
            erasing = self.erasing.sample_params(
                b, c, rows, cols, generator=generator, device=device
            )
        mix = None
        if self.mixup is not None:
            mix = self.mixup.sample_params(b, rows, cols, generator=generator, device=device)
        return RecipeParams(crop, auto, erasing, mix)

    def apply(  # type: ignore[override]  # params -> output, not nn.Module.apply(fn)
        self, images: torch.Tensor, target: torch.Tensor | None, params: RecipeParams
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the steps with given params."""
        size = self.config.output_size
        x = resized_crop(images, params.crop, size, antialias=self.config.antialias)
        if params.auto_augment is not None and self.auto_augment is not None:
            x = self.auto_augment.apply(x.round_().clamp_(0, 255), params.auto_augment)
        x = _normalise(x, self.config.mean, self.config.std)
        if params.erasing is not None and self.erasing is not None:
            x = self.erasing.apply(x, params.erasing)
        if params.mix is not None and target is not None and self.mixup is not None:
            x, target = self.mixup.apply(x, target, params.mix)
        return x, target

    def forward(
        self,
        images: torch.Tensor,
        target: torch.Tensor | None = None,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        params: RecipeParams | None = None,
        sizes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment a batch with the params of ``seed`` (or a generator, or given params).

        ``sizes`` (B, 2) gives each image's own (h, w) when a padded batch holds images of
        different sizes (each is cropped from its own pixels).
        """
        _check_images(images, self.config)
        if params is None:
            params = self.sample_params(images, seed=seed, generator=generator, sizes=sizes)
        if target is None and params.mix is not None:
            params = dataclasses.replace(params, mix=None)  # nothing to mix: say none ran
        self.last_params = params
        return self.apply(images, target, params)

    def describe(self, params: RecipeParams | None = None, i: int = 0) -> str:
        """The steps, one a line; with params, image ``i``'s own values (syncs the host)."""
        cfg = self.config
        lines = [
            f"RandomResizedCrop {cfg.output_size} scale={cfg.scale} "
            f"ratio=({cfg.ratio[0]:.4g}, {cfg.ratio[1]:.4g}) hflip={cfg.hflip}"
        ]
        if params is not None:
            p = params.crop
            top, left = p.top_left_px[i].tolist()
            h, w = p.size_px[i].tolist()
            lines[-1] += f": rows {top}..{top + h - 1}, cols {left}..{left + w - 1}"
            lines[-1] += ", flipped" if bool(p.flip_h[i]) else ""
        if self.auto_augment is not None:
            lines.append(f"{type(self.auto_augment).__name__} ({self.auto_augment.extra_repr()})")
            if params is not None and params.auto_augment is not None:
                a = params.auto_augment
                ops = [
                    f"{OPS[int(k)]}({float(m):.4g})"
                    for k, m in zip(a.op[i], a.magnitude[i], strict=True)
                ]
                lines[-1] += ": " + ", ".join(ops)
        lines.append(f"normalise mean={cfg.mean} std={cfg.std}")
        if self.erasing is not None:
            lines.append(f"RandomErasing ({self.erasing.extra_repr()})")
            if params is not None and params.erasing is not None:
                e = params.erasing
                boxes = [
                    "top {} left {} {}x{}".format(*e.box_tlhw_px[i, k].tolist())
                    for k in range(e.active.shape[1])
                    if bool(e.active[i, k])
                ]
                lines[-1] += ": " + ("; ".join(boxes) if boxes else "not erased")
        if self.mixup is not None:
            lines.append(f"Mixup ({self.mixup.extra_repr()})")
            if params is not None and params.mix is not None:
                m = params.mix
                kind = "CutMix" if bool(m.use_cutmix[i]) else "MixUp"
                lines[-1] += f": {kind} with image {int(m.partner[i])}, lam={float(m.lam[i]):.4f}"
        return "\n".join(lines)


class EvalRecipe(nn.Module):
    """The validation counterpart: resize the short side, centre crop, normalise.

    torchvision's / timm's eval transform (``Resize(resize_size)``, ``CenterCrop(size)``,
    ``Normalize``), batched; images of different sizes (a padded batch and ``sizes``) are
    each resized from their own pixels.

    Shape:
        images: (B, C, H, W) uint8 or float 0..255 -> (B, C, *size) float32 normalised.
    """

    def __init__(self, config: RecipeConfig | str | os.PathLike[str] = "imagenet_rrc_val") -> None:
        super().__init__()
        config = load_recipe(config)
        if config.kind != "eval":
            raise ValueError(f"`config` must be a validation recipe; got kind={config.kind!r}")
        self.config = config

    def forward(self, images: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        """The validation batch (deterministic)."""
        _check_images(images, self.config)
        b, _, h, w = images.shape
        if sizes is None:
            heights = torch.full((b,), h, dtype=torch.int64, device=images.device)
            widths = torch.full((b,), w, dtype=torch.int64, device=images.device)
        else:
            heights, widths = sizes[:, 0], sizes[:, 1]
        size = self.config.output_size
        params = center_crop_params(heights, widths, self.config.resize_size, size)
        params = params.to(images.device)  # CPU sizes: the crop is read where the images are
        x = resized_crop(images, params, size, antialias=self.config.antialias)
        return _normalise(x, self.config.mean, self.config.std)

    def describe(self) -> str:
        cfg = self.config
        return (
            f"Resize short side {cfg.resize_size}, CenterCrop {cfg.output_size}\n"
            f"normalise mean={cfg.mean} std={cfg.std}"
        )
