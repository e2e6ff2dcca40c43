"""gpuaug: Keras' ImageDataGenerator.flow_from_directory for PyTorch, augmented on the GPU.

A torch ``Dataset`` decodes and resizes images (uint8, no augmentation); per batch, fresh
random affine parameters are drawn per sample and the whole batch is warped on the device in
one pass (a fused Triton kernel on CUDA, the torch reference elsewhere). Masks, boxes and
keypoints follow the same per-sample transform (`gpuaug.augment.targets`).
"""

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
from gpuaug.loader.gpu_loader import (
    GPULoader,
    LoaderConfig,
    ReplayBatch,
    WorkerCrashError,
)
from gpuaug.loader.sampler import EpochBatchSampler

__version__ = "0.1.0"

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
