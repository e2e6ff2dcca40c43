"""Ragged batches: images of different sizes as one packed uint8 buffer and a size table.

With ``target_size=None`` every image keeps its own (decoded, optionally capped) size. A batch
then travels as one flat uint8 buffer, the images' ``(C, H, W)`` bytes one after the other,
and a ``(k, 3)`` int64 table of ``(offset, H, W)`` per image: in the workers, through shared
memory, pinned memory and the transfer stage exactly as a stacked batch does (one tensor, one
file descriptor). Only ``k * C * H * W`` bytes are copied, not the padded ``k * C * Hmax *
Wmax``.

On the device, :func:`unpack` places the images top-left in a zero-padded ``(k, C, Hmax,
Wmax)`` tensor with one ``index_select``: the buffer is viewed as overlapping rows of
``Wmax`` bytes (``as_strided`` with strides ``(1, 1)``: row ``r`` starts at byte ``r``), each
output row ``(image, channel, y)`` picks the row starting at ``offset + c H W + y W``, and
the bytes past each image's height and width are zeroed (:func:`zero_padding`).
No Python loop over the images, and nothing makes the host wait: ``Hmax`` and ``Wmax`` are
read from the table on the host, which knows it. The buffer carries ``Wmax`` spare bytes at its end
(:func:`pack_images` adds them) so that the view stays inside it.

:func:`unpack_reference` is the obvious per-image loop the tests compare :func:`unpack` with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from gpuaug.device import host_reads_free, host_to_device

__all__ = [
    "pack_images",
    "pack_table",
    "packed_nbytes",
    "unpack",
    "unpack_reference",
    "zero_padding",
]


def pack_table(shapes: Sequence[tuple[int, int, int]]) -> torch.Tensor:
    """The ``(k, 3)`` int64 ``(offset, H, W)`` table of images of ``(C, H, W)`` ``shapes``
    packed one after the other."""
    sizes = np.array([c * h * w for c, h, w in shapes], dtype=np.int64)
    table = np.zeros((len(shapes), 3), dtype=np.int64)
    if len(shapes):
        table[1:, 0] = np.cumsum(sizes[:-1])
        table[:, 1] = [h for _, h, _ in shapes]
        table[:, 2] = [w for _, _, w in shapes]
    return torch.from_numpy(table)


def packed_nbytes(table: torch.Tensor, channels: int) -> int:
    """The bytes a packed buffer of ``table`` needs: its images plus ``Wmax`` spare bytes."""
    if len(table) == 0:
        return 0
    t = table.numpy()
    end = int((t[:, 0] + channels * t[:, 1] * t[:, 2]).max())
    return end + int(t[:, 2].max())


def pack_images(
    images: Sequence[torch.Tensor],
    allocate: Callable[[int], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack ``(C, H, W)`` uint8 images of any sizes into one buffer (one ``torch.cat``).

    Args:
        images: the images (the same ``C``).
        allocate: returns an uninitialised ``(n,)`` uint8 tensor (shared memory in a worker);
            default ``torch.empty``.

    Returns:
        ``(data, table)``: ``(nbytes,)`` uint8 (the images, then ``Wmax`` zero bytes) and the
        ``(k, 3)`` int64 ``(offset, H, W)`` table.
    """
    if not images:
        return torch.empty(0, dtype=torch.uint8), torch.empty((0, 3), dtype=torch.int64)
    channels = {int(im.shape[0]) for im in images}
    if len(channels) != 1 or any(im.ndim != 3 for im in images):
        raise ValueError(
            f"packed images must be (C, H, W) with one C; got {[tuple(i.shape) for i in images]}"
        )
    table = pack_table([tuple(int(v) for v in im.shape) for im in images])  # type: ignore[misc]
    wmax = int(table[:, 2].max())
    n = sum(im.numel() for im in images) + wmax
    out = allocate(n) if allocate is not None else torch.empty(n, dtype=torch.uint8)
    parts = [im.reshape(-1) for im in images] + [torch.zeros(wmax, dtype=torch.uint8)]
    torch.cat(parts, out=out)
    return out, table


def unpack(
    data: torch.Tensor, table: torch.Tensor, channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of a packed buffer, top-left in a zero-padded batch (one ``index_select``).

    Args:
        data: ``(nbytes,)`` uint8, on the device the batch is made on, with at least
            :func:`packed_nbytes` bytes (else it is extended by one copy).
        table: ``(k, 3)`` int64 CPU ``(offset, H, W)`` of each output row, in the batch's
            order (a row may name any image of ``data``, in any order).
        channels: ``C``.

    Returns:
        ``(images, sizes)``: ``(k, C, Hmax, Wmax)`` uint8 on ``data``'s device, zero outside
        each image, and ``(k, 2)`` int64 CPU ``(H, W)`` of each row.
    """
    k = len(table)
    sizes = table[:, 1:].clone()
    if k == 0:
        return torch.empty((0, channels, 0, 0), dtype=torch.uint8, device=data.device), sizes
    t = table.numpy()
    hmax, wmax = int(t[:, 1].max()), int(t[:, 2].max())
    data = data.reshape(-1).contiguous()  # the view below reads it as flat bytes
    need = packed_nbytes(table, channels)
    if data.numel() < need:  # no spare bytes at the end (a buffer packed elsewhere)
        data = torch.cat([data, data.new_zeros(need - data.numel())])
    device = data.device
    tab = host_to_device(table, device)
    off, h, w = tab[:, 0], tab[:, 1], tab[:, 2]
    y = torch.arange(hmax, device=device)
    c = torch.arange(channels, device=device)
    rows_y = torch.minimum(y[None, :], h[:, None] - 1)  # rows past H read the last (masked)
    starts = off[:, None, None] + c[None, :, None] * (h * w)[:, None, None]
    starts = starts + rows_y[:, None, :] * w[:, None, None]  # (k, C, Hmax)
    windows = data.as_strided((data.numel() - wmax + 1, wmax), (1, 1))
    images = windows.index_select(0, starts.reshape(-1)).view(k, channels, hmax, wmax)
    return zero_padding(images, h, w, two_passes=host_reads_free(images), y=y), sizes


def zero_padding(
    images: torch.Tensor,
    h: torch.Tensor,
    w: torch.Tensor,
    *,
    two_passes: bool,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """Zeroes ``images`` (k, C, Hmax, Wmax) in place past each image's ``h`` rows and ``w``
    columns ((k,) int64 on its device).

    ``two_passes``: multiply by a (k, 1, Hmax, 1) and a (k, 1, 1, Wmax) 0/1 mask, the CPU form
    (ten times faster there than a ``masked_fill_``); else one ``masked_fill_`` with a
    broadcast mask, one pass over the batch, the device form. The same result. ``y``: the
    caller's ``arange(Hmax)``, when it has one.
    """
    hmax, wmax = images.shape[-2:]
    y = torch.arange(hmax, device=images.device) if y is None else y
    x = torch.arange(wmax, device=images.device)
    if two_passes:
        images.mul_((y[None, :] < h[:, None]).to(torch.uint8)[:, None, :, None])
        return images.mul_((x[None, :] < w[:, None]).to(torch.uint8)[:, None, None, :])
    outside = (y[None, :, None] >= h[:, None, None]) | (x[None, None, :] >= w[:, None, None])
    return images.masked_fill_(outside[:, None], 0)


def unpack_reference(
    data: torch.Tensor, table: torch.Tensor, channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`unpack` by a loop over the images (slow; for the tests)."""
    t = table.tolist()
    hmax = max((h for _, h, _ in t), default=0)
    wmax = max((w for _, _, w in t), default=0)
    out = torch.zeros((len(t), channels, hmax, wmax), dtype=torch.uint8, device=data.device)
    for i, (o, h, w) in enumerate(t):
        out[i, :, :h, :w] = data[o : o + channels * h * w].view(channels, h, w)
    return out, table[:, 1:].clone()
