"""Validation without augmentation: the deterministic part of an augmentation.

Keras augments a ``subset="validation"`` loader exactly like the training one, and offers no
switch (a long-standing complaint). Here a validation loader runs only the deterministic
stages of the training augmentation: ``rescale``, ``preprocessing_function`` and the
samplewise / featurewise normalisations, the latter with the statistics ``fit`` computed for
training (the module shares the training module's ``mean``, ``std`` and ``zca_matrix``
tensors). `gpuaug.flow_from_directory(..., augment_validation=True)` and
``ImageDataGenerator.flow*(..., augment=True)`` turn the augmentation back on.
"""

from __future__ import annotations

import dataclasses

from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.module import GPUAugment

__all__ = ["RANDOM_FIELDS", "deterministic_config", "share_stats", "validation_module", "note"]

#: The random stages of an `AugmentConfig` and their "off" values.
RANDOM_FIELDS: dict[str, object] = {
    "rotation_range": 0,
    "width_shift_range": 0.0,
    "height_shift_range": 0.0,
    "brightness_range": None,
    "shear_range": 0.0,
    "zoom_range": 0.0,
    "channel_shift_range": 0.0,
    "horizontal_flip": False,
    "vertical_flip": False,
    "kornia": (),  # kornia stages are random too (gpuaug.augment.kornia_stages)
}


def deterministic_config(config: AugmentConfig) -> AugmentConfig:
    """``config`` with every random stage off; rescale, preprocessing and normalisation kept."""
    return dataclasses.replace(config, **RANDOM_FIELDS)  # type: ignore[arg-type]


def share_stats(source: GPUAugment, target: GPUAugment) -> None:
    """Makes ``target`` use ``source``'s fitted statistics (the same tensors)."""
    for name in ("mean", "std", "zca_matrix"):
        setattr(target, name, getattr(source, name))


def validation_module(module: GPUAugment) -> GPUAugment:
    """A module running ``module``'s deterministic stages with its fitted statistics."""
    out = GPUAugment(
        deterministic_config(module.config),
        dtype=module.dtype,
        memory_format=module.memory_format,
        backend=module.backend,
    )
    share_stats(module, out)
    return out


def note(why: str, how: str) -> str:
    """The line `GPULoader.describe` shows for a loader without random augmentation."""
    return (
        f"random augmentation off ({why}): only the deterministic stages run (rescale, "
        f"preprocessing_function, normalisation with the fitted statistics); {how} to turn it on"
    )
