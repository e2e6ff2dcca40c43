"""The augmentation backends beside the reference: each module is one backend.

- `gpuaug.augment.backends.triton`: the fused Triton kernel (``backend="triton"``).
- `gpuaug.augment.backends.compile`: ``torch.compile`` of the reference (``"compile"``).
- `gpuaug.augment.backends.chunked`: the reference on cache-sized slices (``"chunked"``).
- `gpuaug.augment.backends.opencv`: OpenCV's ``warpAffine`` per image (``"opencv"``).
"""
