"""The loader: epochs, batches, prefetch and the device side of a data source.

- `gpuaug.loader.gpu_loader`: `GPULoader` and `flow_from_directory`.
- `gpuaug.loader.config`: `LoaderConfig`, the loader's settings.
- `gpuaug.loader.report`: ``describe()`` and ``stats()``.
- `gpuaug.loader.sampler`: `EpochBatchSampler`: epochs, ``steps_per_epoch``, seeds, shards.
- `gpuaug.loader.stages`: the per-batch stages (workers, cache gathers, nvJPEG step, transfer,
  skip rules, finish).
"""
