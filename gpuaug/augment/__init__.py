"""Augmentation: Keras' ``ImageDataGenerator`` transform, drawn per sample, applied per batch.

- `gpuaug.augment.config`: `AugmentConfig` (the ``ImageDataGenerator`` parameters), presets
  and YAML.
- `gpuaug.augment.module`: the draws and params, the reference path, `apply` (where a backend is
  chosen) and the `GPUAugment` module.
- `gpuaug.augment.warp`: the reference batched affine warp for each fill mode.
- `gpuaug.augment.targets`: masks, boxes and keypoints under the images' per-sample transform.
- `gpuaug.augment.validation`: the deterministic part of an augmentation, for validation data.
- `gpuaug.augment.rrc`, `auto_augment`, `erasing`, `mixup`: the ImageNet recipe's steps per
  sample (RandomResizedCrop, TrivialAugmentWide / RandAugment, RandomErasing, MixUp / CutMix);
  `gpuaug.augment.recipe` runs them in timm's order (`TrainRecipe`, `EvalRecipe`).
- `gpuaug.augment.backends`: the fast paths beside the reference (triton, compile, chunked,
  opencv), each tested against it.
"""
