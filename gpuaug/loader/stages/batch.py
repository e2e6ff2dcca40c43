"""The records passed between the loader's stages, and the ``on_error`` rules for a batch.

A *source* (worker processes, a host or disk cache) yields a `HostBatch`: uint8 images on the
host plus, with ``decode="gpu"``, the batch's JPEG files as one byte buffer still to decode.
The *transfer* stage turns it into a `DeviceBatch` (uint8 on the loader's device), which the
*finish* stage augments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from gpuaug.data.pixel_layout import pinned

__all__ = ["DeviceBatch", "FailureReason", "HostBatch", "failed_path"]


class FailureReason(str):
    """Why a sample failed (the text), and which file failed when it is not the sample's own
    image (a paired data set's mask): ``path``, else ``None``. A ``str`` everywhere a failure
    record ``(index, reason)`` is read; it pickles across worker processes with its path."""

    path: str | None

    def __new__(cls, reason: str, path: str | None = None) -> FailureReason:
        obj = super().__new__(cls, reason)
        obj.path = path
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (FailureReason, (str(self), self.path))


def failed_path(dataset: Any, index: int, reason: str) -> str:
    """The file a failure record ``(index, reason)`` names: the failed file itself (a mask),
    else sample ``index``'s file."""
    return getattr(reason, "path", None) or dataset.samples[index][0]


@dataclass
class HostBatch:
    """One batch as a source yields it (host memory; built in a worker or the main process).

    Attributes:
        indices: ``(b,)`` int64 CPU: the data set indices of the samples that did not fail, in
            batch order.
        images: ``(k, C, H, W)`` uint8 CPU, the decoded images, or ``None`` when ``k == 0``;
            planar, or an RGBX view (`gpuaug.data.pixel_layout`) in the loader's layout.
        image_pos: the row of ``indices`` each image belongs to (``k`` ints).
        jpeg_data: the encoded JPEGs still to decode (``decode="gpu"``), concatenated: one
            ``(nbytes,)`` uint8 CPU tensor per batch (one shared-memory file descriptor, not
            one per file), or ``None``.
        jpeg_offsets: ``(m + 1,)`` int64 CPU: JPEG ``i`` is ``jpeg_data[o[i]:o[i + 1]]``.
        jpeg_pos: the row of ``indices`` each JPEG belongs to (``m`` ints).
        orient: the EXIF orientation of each JPEG.
        failures: ``[(index, reason), ...]`` of the samples that failed (a `FailureReason`
            names a failed file other than the sample's image).
        on_copied: called (with no argument) once the transfer stage has queued the copy of
            ``images`` to the device (a pinned staging buffer is then free to reuse after the
            copy); ``None`` if nothing to do.
        decode_job: the JPEGs' decode already submitted to the loader's
            `gpuaug.data.nvjpeg.JpegDecoder` (`gpuaug.loader.stages.jpeg_decode.decode_ahead`), or
            ``None``.
        packed: a ragged batch (``target_size=None``): the decoded images of different sizes
            as one ``(nbytes,)`` uint8 CPU buffer (`gpuaug.loader.stages.ragged`), ``images``
            then ``None``; else ``None``.
        packed_table: ``(k, 3)`` int64 CPU ``(offset, H, W)`` of each image of ``packed``
            (row ``i`` for ``image_pos[i]``).
    """

    indices: torch.Tensor
    images: torch.Tensor | None
    image_pos: list[int]
    jpeg_data: torch.Tensor | None = None
    jpeg_offsets: torch.Tensor | None = None
    jpeg_pos: list[int] = field(default_factory=list)
    orient: list[int] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    on_copied: Any = None
    decode_job: Any = None
    packed: torch.Tensor | None = None
    packed_table: torch.Tensor | None = None

    @classmethod
    def decoded(
        cls,
        indices: torch.Tensor,
        images: torch.Tensor | None,
        failures: list[tuple[int, str]],
        on_copied: Any = None,
    ) -> HostBatch:
        """A batch whose images are all decoded, row ``i`` for ``indices[i]``."""
        b = len(indices)
        return cls(
            indices=indices,
            images=images if images is not None and b else None,
            image_pos=list(range(b)),
            failures=failures,
            on_copied=on_copied,
        )

    @property
    def num_jpegs(self) -> int:
        return len(self.jpeg_pos)

    @property
    def jpegs(self) -> list[torch.Tensor]:
        """The JPEG files as views into :attr:`jpeg_data` (no copy)."""
        if self.jpeg_data is None or self.jpeg_offsets is None:
            return []
        o = self.jpeg_offsets.numpy()
        return [self.jpeg_data[int(o[i]) : int(o[i + 1])] for i in range(len(o) - 1)]

    def pin_memory(self) -> HostBatch:
        """The DataLoader's pin-memory hook: pins the images and indices, not the JPEG bytes
        (nvJPEG reads host memory itself)."""
        if self.images is not None:  # in its pixel layout (an RGBX batch as its whole buffer)
            self.images = pinned(self.images)
        if self.packed is not None:
            self.packed = self.packed.pin_memory()
        self.indices = self.indices.pin_memory()
        return self


class DeviceBatch(NamedTuple):
    """One batch on the loader's device, ready to augment.

    Attributes:
        images: ``(b, C, H, W)`` uint8 on the device, in the loader's pixel layout.
        indices: ``(b,)`` int64 CPU: the data set index of each row.
        labels: ``(b,)`` int64 on the device: the class index of each row.
        sizes: a ragged batch: ``(b, 2)`` int64 CPU, each row's own ``(h, w)``; the image lies
            top-left in ``images`` (``H, W`` the largest), zero beyond. ``None``: every row is
            ``(H, W)``.
    """

    images: torch.Tensor
    indices: torch.Tensor
    labels: torch.Tensor
    sizes: torch.Tensor | None = None
