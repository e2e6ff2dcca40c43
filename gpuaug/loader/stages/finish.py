"""The finish stage: augment a device batch and encode its targets.

:func:`augment_module` is the one place where a user's ``augment`` argument (a config, a
preset name, a YAML path, a module or ``None``) becomes a `GPUAugment`;
`gpuaug.flow_from_directory` calls it once and hands the module on.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from gpuaug.augment.config import AugmentConfig, load_config
from gpuaug.augment.module import (
    AugmentDraws,
    AugmentParams,
    GPUAugment,
    params_from_draws,
    sample_draws,
)
from gpuaug.augment.recipe import (
    EvalRecipe,
    RecipeConfig,
    TrainRecipe,
    is_preset_name,
    load_recipe,
)
from gpuaug.augment.targets import apply_boxes, apply_mask
from gpuaug.data.directory import encode_targets
from gpuaug.data.paired import unpack_mask
from gpuaug.device import PinnedStaging
from gpuaug.loader.sampler import mix_seed
from gpuaug.loader.stages.batch import DeviceBatch
from gpuaug.loader.stages.transfer import host_to_device

__all__ = [
    "KORNIA_STREAM",
    "Finisher",
    "augment_module",
    "check_recipe",
    "factory_module",
    "kornia_seed",
    "recipe_module",
    "validation_split_of",
]

#: Mixed into a batch's augmentation seed for its kornia stages' seed (`kornia_seed`).
KORNIA_STREAM = 0x6B6F726E


def kornia_seed(seed: int) -> int:
    """The seed of a batch's kornia stages: ``mix_seed(seed, KORNIA_STREAM)`` of its
    augmentation seed (itself a function of ``(seed, epoch, step, rank)``)."""
    return mix_seed(seed, KORNIA_STREAM)


def augment_module(
    augment: AugmentConfig | GPUAugment | str | os.PathLike[str] | None,
    dtype: torch.dtype = torch.float32,
) -> GPUAugment:
    """A user's ``augment`` argument as a `GPUAugment` (a module is returned as is).

    Args:
        augment: an `AugmentConfig`, a preset name, a YAML path, a `GPUAugment` or ``None``
            (no augmentation: a float conversion).
        dtype: the output dtype of a new module (a given module keeps its own).

    Raises:
        TypeError: any other type.
        ValueError: an unknown preset or a bad YAML file.
    """
    if isinstance(augment, GPUAugment):
        return augment
    if augment is None or isinstance(augment, AugmentConfig):
        return GPUAugment(augment, dtype=dtype)
    if isinstance(augment, str | os.PathLike):
        return GPUAugment(load_config(augment), dtype=dtype)
    raise TypeError(
        "`augment` must be an AugmentConfig, a preset name, a YAML path, a GPUAugment "
        f"or None; got {type(augment).__name__} (kornia augmentations go in "
        "GPUAugment(config, kornia=[...]), after the Keras stage)"
    )


def recipe_module(
    recipe: TrainRecipe | EvalRecipe | RecipeConfig | str | os.PathLike[str] | None,
    num_classes: int | None = None,
) -> TrainRecipe | EvalRecipe | None:
    """A user's ``recipe`` argument as a module: a `TrainRecipe` or `EvalRecipe` as is, a
    `RecipeConfig`, preset name (``"imagenet_rrc"``, ``"imagenet_rrc_val"``) or YAML path by
    its ``kind``.

    A training recipe named by its *preset* takes the data's ``num_classes`` (the preset's
    1000 is ImageNet's); one from a file, a `RecipeConfig` or a module keeps its own, and
    `check_recipe` refuses it when it differs from the data's.

    Raises:
        TypeError: any other type.
        ValueError: an unknown preset or a bad YAML file.
    """
    if recipe is None or isinstance(recipe, TrainRecipe | EvalRecipe):
        return recipe
    if isinstance(recipe, RecipeConfig | str | os.PathLike):
        config = load_recipe(recipe)
        named = isinstance(recipe, str) and is_preset_name(recipe)
        if named and config.kind == "train" and num_classes is not None:
            config = load_recipe(config, num_classes=num_classes)
        return TrainRecipe(config) if config.kind == "train" else EvalRecipe(config)
    raise TypeError(
        "`recipe` must be a TrainRecipe, an EvalRecipe, a RecipeConfig, a recipe preset name, "
        f"a YAML path or None; got {type(recipe).__name__}"
    )


def check_recipe(
    recipe: TrainRecipe | EvalRecipe | None,
    augment: Any,
    dataset: Any,
    config: Any,
    ragged: bool,
) -> None:
    """Checks a loader's ``recipe`` against its other arguments (`gpuaug.GPULoader`).

    Raises:
        ValueError: ``target_size=None`` without a recipe; a recipe with an ``augment``, with
            masks, boxes or a data set's own outputs, with another channel count than its
            ``mean``, mixing without class labels or with another class count, with another
            ``dtype`` than float32 (its output's); a ragged batch with ``cache="device"``.
    """
    if recipe is None:
        if ragged:
            raise ValueError(
                "`target_size`=None keeps each image at its own size; the loader then needs a "
                "`recipe` (gpuaug.augment.recipe.TrainRecipe / EvalRecipe, or a recipe preset "
                "name) that crops every image to one size"
            )
        return
    if augment is not None:
        raise ValueError(
            "`recipe` replaces `augment` (the recipe crops, augments and normalises); pass "
            f"augment=None; got augment={augment!r}"
        )
    if (
        getattr(dataset, "mask_bytes", 0)
        or getattr(dataset, "box_valid", None) is not None
        or getattr(dataset, "batch_outputs", None) is not None
    ):
        raise ValueError("`recipe` is for class labels; this data set has masks, boxes or outputs")
    if len(recipe.config.mean) != dataset.channels:
        raise ValueError(
            f"`recipe` normalises {len(recipe.config.mean)} channels (mean / std); the images "
            f"have {dataset.channels} (color_mode={getattr(dataset, 'color_mode', None)!r})"
        )
    if isinstance(recipe, TrainRecipe) and recipe.mixup is not None:
        if dataset.class_mode not in ("sparse", "categorical"):
            raise ValueError(
                "a `recipe` that mixes (MixUp / CutMix) needs class labels: class_mode "
                f"'sparse' or 'categorical'; got {dataset.class_mode!r}"
            )
        if recipe.config.num_classes != dataset.num_classes:
            raise ValueError(
                f"`recipe`'s num_classes={recipe.config.num_classes} must be the data's "
                f"{dataset.num_classes} classes"
            )
    if getattr(config, "dtype", "float32") != "float32":
        raise ValueError(
            f"a `recipe` outputs float32 (normalised); `dtype`={config.dtype!r} would not be "
            "applied: pass dtype=torch.float32 and cast x (e.g. under autocast)"
        )
    if ragged and getattr(config, "cache", None) == "device":
        raise ValueError(
            "`cache`='device' holds images of one size; with target_size=None use cache='host' "
            "or 'disk' (or None)"
        )


def factory_module(
    augment: AugmentConfig | GPUAugment | str | os.PathLike[str] | None, dtype: Any
) -> GPUAugment:
    """A loader factory's ``augment`` and ``dtype`` arguments as a `GPUAugment`
    (`augment_module`), the dtype checked first so that its error names the argument.

    Raises:
        TypeError: ``dtype`` is not a torch.dtype; as `augment_module`.
    """
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"`dtype` must be a torch.dtype; got {dtype!r}")
    return augment_module(augment, dtype)


def validation_split_of(module: GPUAugment, validation_split: float | None) -> float:
    """A factory's ``validation_split``, or the augmentation config's when not given.

    Raises:
        ValueError: both given, and different.
    """
    config_split = module.config.validation_split
    if validation_split is None:
        return config_split
    if config_split and validation_split != config_split:
        raise ValueError(
            f"`validation_split`={validation_split!r} contradicts the augmentation config's "
            f"validation_split={config_split!r}; give it in one place"
        )
    return validation_split


class Finisher:
    """Augments a `DeviceBatch` with its own seeded generator and encodes its targets.

    The augmentation parameters are drawn from a *CPU* ``torch.Generator`` seeded with the
    batch's seed (``B x 12`` uniforms, copied to the device from pinned memory without a
    sync), so a seeded batch gets the same parameters on every device: a GPU run can be
    checked against the CPU sample for sample.

    Args:
        augment: the `GPUAugment` (on ``device``).
        dataset: the data set (``class_mode``, ``num_classes``; or its own
            ``batch_outputs(x, indices)``, which then makes the whole output).
        device: the loader's device.
    """

    def __init__(self, augment: GPUAugment, dataset: Any, device: torch.device) -> None:
        self.augment = augment
        self.dataset = dataset
        self.device = device
        self.generator = torch.Generator()  # CPU: the draws do not depend on the device
        self.staging = PinnedStaging()  # the draws' pinned buffers, reused batch after batch
        self.classes = torch.arange(int(dataset.num_classes or 0), device=device)
        # gpuaug.data.detection: every sample's padded boxes, on the device once
        self.box_tables = None
        if getattr(dataset, "box_valid", None) is not None:
            tables = (dataset.boxes, dataset.labels, dataset.box_valid)
            self.box_tables = tuple(host_to_device(t, device) for t in tables)
        # A data set with its own outputs (arrays, data frames: raw labels, sample weights)
        # builds them itself from the augmented images and the batch's indices.
        self.outputs = getattr(dataset, "batch_outputs", None)
        # MixUp / CutMix after the augmentation (GPULoader.mix): soft targets from the labels
        self.mix: Any = None
        # A TrainRecipe / EvalRecipe in place of `augment` (GPULoader's `recipe`)
        self.recipe: TrainRecipe | EvalRecipe | None = None

    def draws(self, images: torch.Tensor, seed: int) -> AugmentDraws:
        """A batch's ``B x 12`` uniforms, drawn from a CPU generator seeded ``seed`` and moved
        to the loader's device (through reused pinned buffers, non_blocking)."""
        g = self.generator.manual_seed(seed)
        return sample_draws(images.shape[0], generator=g, device=self.device, staging=self.staging)

    def params(self, images: torch.Tensor, seed: int) -> AugmentParams:
        """The augmentation parameters of a batch: its draws (:meth:`draws`) read by Keras'
        rules (`gpuaug.augment.module.params_from_draws`)."""
        _, _, h, w = images.shape
        return params_from_draws(self.augment.config, self.draws(images, seed), h, w)

    def targets(self, labels: torch.Tensor) -> torch.Tensor | None:
        """The targets of ``class_mode`` from class indices on the device, without a sync
        (``F.one_hot`` reads the largest index back to the host to check it)."""
        mode = self.dataset.class_mode
        if mode == "categorical":
            return (labels[:, None] == self.classes).to(torch.float32)
        return encode_targets(labels, mode, self.dataset.num_classes)

    def __call__(self, batch: DeviceBatch, seed: int) -> tuple[Any, AugmentDraws | None]:
        """``(x, y)`` (or ``x``, per ``class_mode``) and the draws made with ``seed``
        (``draws.params(config, H, W)`` gives the batch's params; ``None`` with a recipe,
        whose ``last_params`` hold them)."""
        if self.recipe is not None:
            return self.run_recipe(batch, seed), None
        images = batch.images
        mask_bytes = getattr(self.dataset, "mask_bytes", 0)
        if mask_bytes:  # gpuaug.data.paired: the mask rides as the last uint8 channel(s)
            images, masks = unpack_mask(images, mask_bytes)
        # The module takes the draws as they are: the fused kernels read them directly (its
        # prologue turns them into matrices); the other backends turn them into params once.
        # The params of the batch are then `self.augment.last_params` (computed lazily on the
        # fused path).
        draws = self.draws(images, seed)
        x = self.augment(images, params=draws, kornia_seed=kornia_seed(seed))
        if mask_bytes:
            params = self.augment.last_params
            assert params is not None  # the forward call above kept them
            cfg = self.augment.config
            masks = apply_mask(masks, params, cfg, mask_fill=self.dataset.mask_fill)
            if self.augment.kornia is not None:  # kornia's data_keys=["mask"], same params
                masks = self.augment.kornia.apply_masks(masks, self.augment.last_kornia_params)
            return (x, masks), draws
        if self.box_tables is not None:  # gather the rows' boxes, map them as the images
            rows = host_to_device(batch.indices, self.device)
            boxes, labels, valid = (t.index_select(0, rows) for t in self.box_tables)
            params = self.augment.last_params
            assert params is not None  # the forward call above kept them
            visibility = self.dataset.min_visibility
            boxes, valid = apply_boxes(
                boxes, params, self.augment.config, *images.shape[-2:],
                valid=valid, min_visibility=visibility,
            )  # fmt: skip
            if self.augment.kornia is not None:  # the corners through kornia's keypoints
                boxes, valid = self.augment.kornia.apply_boxes(
                    boxes, self.augment.last_kornia_params, *x.shape[-2:], valid=valid,
                    min_visibility=visibility,
                )  # fmt: skip
            return (x, (boxes, labels, valid)), draws
        if self.outputs is not None:
            return self.outputs(x, batch.indices), draws
        mode = self.dataset.class_mode
        if mode is None:
            return x, draws
        if mode == "input":
            return (x, x), draws
        if self.mix is not None:  # drawn after the augmentation's draws, from the same seed
            return self.mix(x, batch.labels, generator=self.generator), draws
        return (x, self.targets(batch.labels)), draws

    def run_recipe(self, batch: DeviceBatch, seed: int) -> Any:
        """``(x, y)`` (per ``class_mode``) of the loader's recipe: each image cropped from its
        own pixels (``batch.sizes`` of a ragged batch), the params drawn from a CPU generator
        seeded ``seed`` (``recipe.last_params`` holds them). A training recipe that mixes
        gives soft targets as ``y``."""
        recipe = self.recipe
        assert recipe is not None  # called with a recipe only
        if isinstance(recipe, EvalRecipe):
            x = recipe(batch.images, sizes=batch.sizes)
            y = None
        else:
            g = self.generator.manual_seed(seed)
            mixing = recipe.mixup is not None
            x, y = recipe(
                batch.images, batch.labels if mixing else None, generator=g, sizes=batch.sizes
            )
            if mixing:
                return x, y
        mode = self.dataset.class_mode
        if mode is None:
            return x
        if mode == "input":
            return x, x
        return x, self.targets(batch.labels)
