"""gpuaug: Keras' ImageDataGenerator.flow_from_directory for PyTorch, augmented on the GPU.

A torch ``Dataset`` decodes and resizes images (uint8, no augmentation); per batch, fresh
random affine parameters are drawn per sample and the whole batch is warped on the device in
one pass (a fused Triton kernel on CUDA, the torch reference elsewhere). Masks, boxes and
keypoints follow the same per-sample transform (`gpuaug.augment.targets`).

The public names below are imported on first use (PEP 562), so ``import gpuaug`` and the
``gpuaug`` command's ``--help`` / ``--version`` do not import torch.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module that defines it (imported when the name is first read).
_EXPORTS = {
    "AugmentConfig": "gpuaug.augment.config",
    "load_config": "gpuaug.augment.config",
    "AugmentDraws": "gpuaug.augment.module",
    "AugmentParams": "gpuaug.augment.module",
    "FitStats": "gpuaug.augment.module",
    "GPUAugment": "gpuaug.augment.module",
    "apply": "gpuaug.augment.module",
    "params_from_draws": "gpuaug.augment.module",
    "sample_draws": "gpuaug.augment.module",
    "sample_params": "gpuaug.augment.module",
    "standardize": "gpuaug.augment.module",
    "apply_boxes": "gpuaug.augment.targets",
    "apply_keypoints": "gpuaug.augment.targets",
    "apply_mask": "gpuaug.augment.targets",
    "ArrayDataset": "gpuaug.data.arrays",
    "DataFrameDataset": "gpuaug.data.dataframe",
    "DetectionDataset": "gpuaug.data.detection",
    "DirectoryDataset": "gpuaug.data.directory",
    "ImageLoadError": "gpuaug.data.image",
    "PairedDataset": "gpuaug.data.paired",
    "ImageDataGenerator": "gpuaug.keras.generator",
    "flow_from_detection_file": "gpuaug.loader.factories",
    "flow_from_directory": "gpuaug.loader.factories",
    "flow_from_paired_directories": "gpuaug.loader.factories",
    "flow_from_shards": "gpuaug.loader.factories",
    "GPULoader": "gpuaug.loader.gpu_loader",
    "LoaderConfig": "gpuaug.loader.gpu_loader",
    "ReplayBatch": "gpuaug.loader.gpu_loader",
    "WorkerCrashError": "gpuaug.loader.gpu_loader",
    "EpochBatchSampler": "gpuaug.loader.sampler",
}

# The sub-packages `import gpuaug` used to bring in eagerly: `gpuaug.augment.config` and the
# like keep working as attribute chains after a bare `import gpuaug`.
_SUBPACKAGES = ("augment", "data", "device", "keras", "loader")

__all__ = [
    "ArrayDataset",
    "AugmentConfig",
    "AugmentDraws",
    "AugmentParams",
    "DataFrameDataset",
    "DetectionDataset",
    "DirectoryDataset",
    "EpochBatchSampler",
    "FitStats",
    "GPUAugment",
    "GPULoader",
    "ImageDataGenerator",
    "ImageLoadError",
    "LoaderConfig",
    "PairedDataset",
    "ReplayBatch",
    "WorkerCrashError",
    "apply",
    "apply_boxes",
    "apply_keypoints",
    "apply_mask",
    "flow_from_detection_file",
    "flow_from_directory",
    "flow_from_paired_directories",
    "flow_from_shards",
    "load_config",
    "params_from_draws",
    "sample_draws",
    "sample_params",
    "standardize",
    "__version__",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(module), name)
    elif name in _SUBPACKAGES:
        value = _importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later reads skip __getattr__
    return value


def __dir__() -> list[str]:
    # What the eager `import gpuaug` listed: the module's dunders, the public names and the
    # sub-packages, not this module's helpers.
    hidden = {"__getattr__", "__dir__"}
    dunders = {n for n in globals() if n.startswith("__") and n.endswith("__")} - hidden
    return sorted(dunders | set(__all__) | set(_SUBPACKAGES))


if _TYPE_CHECKING:  # the static view: what type checkers and IDEs see
    from gpuaug.augment.config import AugmentConfig, load_config
    from gpuaug.augment.module import (
        AugmentDraws,
        AugmentParams,
        FitStats,
        GPUAugment,
        apply,
        params_from_draws,
        sample_draws,
        sample_params,
        standardize,
    )
    from gpuaug.augment.targets import apply_boxes, apply_keypoints, apply_mask
    from gpuaug.data.arrays import ArrayDataset
    from gpuaug.data.dataframe import DataFrameDataset
    from gpuaug.data.detection import DetectionDataset
    from gpuaug.data.directory import DirectoryDataset
    from gpuaug.data.image import ImageLoadError
    from gpuaug.data.paired import PairedDataset
    from gpuaug.keras.generator import ImageDataGenerator
    from gpuaug.loader.factories import (
        flow_from_detection_file,
        flow_from_directory,
        flow_from_paired_directories,
        flow_from_shards,
    )
    from gpuaug.loader.gpu_loader import GPULoader, LoaderConfig, ReplayBatch, WorkerCrashError
    from gpuaug.loader.sampler import EpochBatchSampler
