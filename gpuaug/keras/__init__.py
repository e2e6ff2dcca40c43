"""Keras' ``ImageDataGenerator`` class on gpuaug's loader.

- `gpuaug.keras.generator`: `ImageDataGenerator` and its methods.
- `gpuaug.keras.iterator`: `KerasIterator`, the loader its ``flow*`` methods return.
- `gpuaug.keras.saving`: ``save_to_dir``.
"""
