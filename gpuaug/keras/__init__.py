"""Keras' ``ImageDataGenerator`` class on gpuaug's loader.

- `gpuaug.keras.generator`: `ImageDataGenerator`, its methods and iterators.
- `gpuaug.keras.saving`: ``save_to_dir``.
"""
