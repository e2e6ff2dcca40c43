"""gpuaug: Keras' ImageDataGenerator.flow_from_directory for PyTorch, augmented on the GPU.

A torch ``Dataset`` decodes and resizes images (uint8, no augmentation); a batched kornia
pipeline draws fresh random affine parameters per sample and warps the whole batch on the
device in one pass.
"""

from gpuaug.arrays import ArrayDataset
from gpuaug.augment import AugmentParams, FitStats, GPUAugment, apply, sample_params, standardize
from gpuaug.config import AugmentConfig, load_config
from gpuaug.dataframe import DataFrameDataset
from gpuaug.dataset import DirectoryDataset
from gpuaug.generator import ImageDataGenerator
from gpuaug.image import ImageLoadError
from gpuaug.loader import (
    GPULoader,
    LoaderConfig,
    ReplayBatch,
    WorkerCrashError,
    flow_from_directory,
)
from gpuaug.sampler import EpochBatchSampler

__version__ = "0.1.0"

__all__ = [
    "ArrayDataset",
    "AugmentConfig",
    "AugmentParams",
    "DataFrameDataset",
    "DirectoryDataset",
    "EpochBatchSampler",
    "FitStats",
    "GPUAugment",
    "GPULoader",
    "ImageDataGenerator",
    "ImageLoadError",
    "LoaderConfig",
    "ReplayBatch",
    "WorkerCrashError",
    "apply",
    "flow_from_directory",
    "load_config",
    "sample_params",
    "standardize",
    "__version__",
]
