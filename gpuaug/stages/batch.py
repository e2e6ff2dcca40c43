"""The records passed between the loader's stages.

A *source* (worker processes, a host or disk cache) yields a `HostBatch`: uint8 images on the
host plus, with ``decode="gpu"``, JPEG bytes still to decode. The *transfer* stage turns it into
a `DeviceBatch` (uint8 on the loader's device), which the *finish* stage augments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from gpuaug.image import ImageLoadError

__all__ = ["DeviceBatch", "HostBatch", "settle_failures"]


@dataclass
class HostBatch:
    """One batch as a source yields it (host memory; built in a worker or the main process).

    Attributes:
        indices: ``(b,)`` int64 CPU: the data set indices of the samples that did not fail, in
            batch order.
        images: ``(k, C, H, W)`` uint8 CPU, the decoded images, or ``None`` when ``k == 0``.
        image_pos: ``(k,)`` int64 CPU: the row of ``indices`` each image belongs to.
        jpegs: the encoded JPEGs still to decode (``decode="gpu"``), ``(nbytes,)`` uint8 each.
        jpeg_pos: the row of ``indices`` each JPEG belongs to.
        orient: the EXIF orientation of each JPEG.
        failures: ``[(index, reason), ...]`` of the samples that failed.
    """

    indices: torch.Tensor
    images: torch.Tensor | None
    image_pos: torch.Tensor
    jpegs: list[torch.Tensor] = field(default_factory=list)
    jpeg_pos: list[int] = field(default_factory=list)
    orient: list[int] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def decoded(
        cls,
        indices: torch.Tensor,
        images: torch.Tensor | None,
        failures: list[tuple[int, str]],
    ) -> HostBatch:
        """A batch whose images are all decoded, row ``i`` for ``indices[i]``."""
        return cls(
            indices=indices,
            images=images if images is not None and len(indices) else None,
            image_pos=torch.arange(len(indices)),
            failures=failures,
        )

    def pin_memory(self) -> HostBatch:
        """The DataLoader's pin-memory hook: pins the images (not the JPEG bytes)."""
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


class DeviceBatch(NamedTuple):
    """One batch on the loader's device, ready to augment.

    Attributes:
        images: ``(b, C, H, W)`` uint8 on the device.
        indices: ``(b,)`` int64 CPU: the data set index of each row.
    """

    images: torch.Tensor
    indices: torch.Tensor


def settle_failures(
    bad: list[tuple[int, str]], dataset: Any, failures: list[tuple[int, str]]
) -> None:
    """Applies the data set's ``on_error`` to a batch's failed samples.

    ``"raise"``: an `ImageLoadError` naming the first failed file (lowest index); ``"skip"``:
    the failures are appended to ``failures`` (the epoch's list, reported at its end).
    """
    if not bad:
        return
    if dataset.on_error == "raise":
        index, reason = min(bad)
        raise ImageLoadError(dataset.samples[index][0], reason)
    failures.extend(bad)
