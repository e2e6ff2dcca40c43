"""The finish stage: augment a device batch and encode its targets.

:func:`augment_module` is the one place where a user's ``augment`` argument (a config, a
preset name, a YAML path, a module or ``None``) becomes a `GPUAugment`;
`gpuaug.flow_from_directory` calls it once and hands the module on.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from gpuaug.augment import AugmentParams, GPUAugment, sample_params
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
        self.classes = torch.arange(int(dataset.num_classes or 0), device=device)
        # A data set with its own outputs (arrays, data frames: raw labels, sample weights)
        # builds them itself from the augmented images and the batch's indices.
        self.outputs = getattr(dataset, "batch_outputs", None)

    def params(self, images: torch.Tensor, seed: int) -> AugmentParams:
        """The augmentation parameters of a batch, drawn from a CPU generator seeded ``seed``."""
        b, _, h, w = images.shape
        g = self.generator.manual_seed(seed)
        return sample_params(self.augment.config, b, h, w, generator=g, device=self.device)

    def targets(self, labels: torch.Tensor) -> torch.Tensor | None:
        """The targets of ``class_mode`` from class indices on the device, without a sync
        (``F.one_hot`` reads the largest index back to the host to check it)."""
        mode = self.dataset.class_mode
        if mode == "categorical":
            return (labels[:, None] == self.classes).to(torch.float32)
        return encode_targets(labels, mode, self.dataset.num_classes)

    def __call__(self, batch: DeviceBatch, seed: int) -> tuple[Any, AugmentParams]:
        """``(x, y)`` (or ``x``, per ``class_mode``) and the params drawn with ``seed``."""
        params = self.params(batch.images, seed)
        x = self.augment.apply(batch.images, params)
        if self.outputs is not None:
            return self.outputs(x, batch.indices), params
        mode = self.dataset.class_mode
        if mode is None:
            return x, params
        if mode == "input":
            return (x, x), params
        return (x, self.targets(batch.labels)), params
