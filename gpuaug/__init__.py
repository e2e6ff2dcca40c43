"""gpuaug: Keras' ImageDataGenerator.flow_from_directory for PyTorch, augmented on the GPU.

A torch ``Dataset`` decodes and resizes images (uint8, no augmentation); a batched kornia
pipeline draws fresh random affine parameters per sample and warps the whole batch on the
device in one pass.
"""

from gpuaug.dataset import DirectoryDataset
from gpuaug.image import ImageLoadError

__version__ = "0.1.0"

__all__ = [
    "DirectoryDataset",
    "ImageLoadError",
    "__version__",
]
