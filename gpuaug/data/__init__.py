"""Data sources: what the loader reads samples from, decoded to uint8 without augmentation.

- `gpuaug.data.image`: one image: open, verify, EXIF, mode conversion, resize.
- `gpuaug.data.jpeg`: JPEG files checked without decoding (the workers' side of ``decode="gpu"``).
- `gpuaug.data.nvjpeg`: batched nvJPEG decode on the GPU (``decode="gpu"``).
- `gpuaug.data.index`: the compact, cached index of a large folder.
- `gpuaug.data.directory`: `DirectoryDataset`, Keras' class folders.
- `gpuaug.data.arrays`: `ArrayDataset`, the arrays behind ``flow(x, y)``.
- `gpuaug.data.dataframe`: `DataFrameDataset`, behind ``flow_from_dataframe``.
- `gpuaug.data.paired`: `PairedDataset`, images + masks folders.
- `gpuaug.data.detection`: `DetectionDataset`, images + boxes from a COCO JSON or CSV.
- `gpuaug.data.cache`: the device / host / disk store of decoded images.
"""
