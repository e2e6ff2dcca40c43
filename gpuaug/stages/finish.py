"""The finish stage: augment a device batch and encode its targets.

:func:`augment_module` is the one place where a user's ``augment`` argument (a config, a
preset name, a YAML path, a module or ``None``) becomes a `GPUAugment`;
`gpuaug.flow_from_directory` calls it once and hands the module on.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from gpuaug.augment import AugmentParams, GPUAugment
from gpuaug.config import AugmentConfig, load_config
from gpuaug.dataset import encode_targets
from gpuaug.stages.batch import DeviceBatch

__all__ = ["Finisher", "augment_module"]


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
        f"or None; got {type(augment).__name__}"
    )


class Finisher:
    """Augments a `DeviceBatch` with its own seeded generator and encodes its targets.

    Args:
        augment: the `GPUAugment` (on ``device``).
        dataset: the data set (``targets``, ``class_mode``, ``num_classes``; or its own
            ``batch_outputs(x, indices)``, which then makes the whole output).
        device: the loader's device.
    """

    def __init__(self, augment: GPUAugment, dataset: Any, device: torch.device) -> None:
        self.augment = augment
        self.dataset = dataset
        self.device = device
        # A data set with its own outputs (arrays, data frames: raw labels, sample weights)
        # builds them itself from the augmented images and the batch's indices.
        self.outputs = getattr(dataset, "batch_outputs", None)
        if self.outputs is None:
            self.targets = torch.as_tensor(list(dataset.targets), dtype=torch.int64)
        self.generator = torch.Generator(device=device)

    def __call__(self, batch: DeviceBatch, seed: int) -> tuple[Any, AugmentParams]:
        """``(x, y)`` (or ``x``, per ``class_mode``) and the params drawn with ``seed``."""
        g = self.generator.manual_seed(seed)
        params = self.augment.sample_params(batch.images, generator=g)
        x = self.augment.apply(batch.images, params)
        if self.outputs is not None:
            return self.outputs(x, batch.indices), params
        mode = self.dataset.class_mode
        if mode is None:
            return x, params
        if mode == "input":
            return (x, x), params
        cls = self.targets[batch.indices].to(self.device, non_blocking=True)
        y = encode_targets(cls, mode, self.dataset.num_classes)
        return (x, y), params
