"""``RaggedCache``: a ``"host"`` or ``"disk"`` cache of images kept at their own sizes.

With ``target_size=None`` (each image at its decoded size, capped by ``max_side``) the images
cannot lie in one ``(N, C, H, W)`` array. They are stored one after the other in one flat
uint8 store, with an ``(N, 3)`` int64 table of ``(offset, H, W)`` per sample:

- ``"host"``: one flat uint8 tensor in host memory (assembled once the build has decoded every
  image);
- ``"disk"``: a flat memory-mapped file written image by image as the build decodes them,
  its table, settings, file list and one CRC-32 per image in the JSON manifest beside it,
  checked as `gpuaug.data.cache.ImageCache`'s are (stale settings or files rebuild it; an
  image's checksum is verified on its first read, a mismatch is a `CacheCorruptedError`).

:meth:`RaggedCache.take_packed` gathers a batch as the loader's workers ship one: one packed
buffer (the images, then ``Wmax`` spare bytes) and its ``(offset, H, W)`` table
(`gpuaug.loader.stages.ragged`), into a pinned buffer when the loader passes one. The gather is
a copy per image on the host (``k`` ``memcpy``), not on the device.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpuaug.data.cache import (
    CacheCorruptedError,
    _host,
    _progress_bar,
    _settings,
    _write_json,
    cache_key,
    check_manifest_samples,
    failed_rows,
    file_manifest,
    open_manifest,
    remove_stale_temp_files,
    resolve_cache_dir,
)

__all__ = ["RAGGED_KINDS", "RaggedCache"]

#: The cache kinds that hold images of different sizes.
RAGGED_KINDS: tuple[str, ...] = ("host", "disk")


class RaggedCache:
    """Images of different sizes, in one flat uint8 store with an ``(offset, H, W)`` table.

    Attributes:
        kind: ``"host"`` or ``"disk"``.
        data: ``(nbytes,)`` uint8: a tensor (host) or a read-only ``numpy.memmap`` (disk).
        table: ``(N, 3)`` int64 numpy, ``(offset, H, W)`` of each sample (zeros for a sample
            that failed).
        channels: ``C``.
        valid: ``(N,)`` bool CPU, False for samples that failed to decode.
        failures: ``[(path, reason), ...]`` of those.
        path: the data file of a disk cache (``None`` otherwise).
        built: True if decoded by this process, False if opened from disk.
    """

    ragged = True

    def __init__(
        self,
        kind: str,
        data: torch.Tensor | np.ndarray,
        table: np.ndarray,
        channels: int,
        valid: torch.Tensor,
        *,
        failures: Sequence[tuple[str, str]] = (),
        path: Path | None = None,
        built: bool = True,
        checksums: np.ndarray | None = None,
        sources: Sequence[tuple[str, int]] | None = None,
    ) -> None:
        self.kind = kind
        self.data = data
        self.table = table
        self.channels = channels
        self.valid = valid
        self.failures = list(failures)
        self.path = path
        self.built = built
        self.checksums = checksums
        self._verified = np.zeros(len(table), dtype=bool) if checksums is not None else None
        self._sources = sources
        self._flat = data.numpy() if isinstance(data, torch.Tensor) else data

    def __len__(self) -> int:
        return len(self.table)

    @property
    def nbytes(self) -> int:
        """Bytes held (the images, unpadded)."""
        return int(self._flat.shape[0])

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def packed_nbytes(self, rows: np.ndarray) -> int:
        """The bytes :meth:`take_packed` of ``rows`` returns (the images plus ``Wmax``)."""
        t = self.table[rows]
        return int((self.channels * t[:, 1] * t[:, 2]).sum() + (t[:, 2].max() if len(t) else 0))

    def take_packed(
        self, rows: torch.Tensor, allocate: Callable[[int], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The images of ``rows`` packed: ``(data, table)`` as
        `gpuaug.loader.stages.ragged.pack_images` makes them.

        Args:
            rows: ``(k,)`` int64 CPU sample indices (valid ones).
            allocate: returns an ``(n,)`` uint8 tensor to pack into (a pinned buffer);
                default ``torch.empty``.

        Shape:
            -> data ``(nbytes,)`` uint8 CPU, table ``(k, 3)`` int64 CPU.
        """
        idx = rows.numpy()
        t = self.table[idx]
        sizes = self.channels * t[:, 1] * t[:, 2]
        n = self.packed_nbytes(idx)
        out = allocate(n) if allocate is not None else torch.empty(n, dtype=torch.uint8)
        flat = out.numpy()
        table = np.zeros((len(idx), 3), dtype=np.int64)
        table[1:, 0] = np.cumsum(sizes[:-1])
        table[:, 1:] = t[:, 1:]
        for i, (src, size) in enumerate(zip(t[:, 0].tolist(), sizes.tolist(), strict=True)):
            dst = int(table[i, 0])
            flat[dst : dst + size] = self._flat[src : src + size]  # a loop on the host only
        end = int(sizes.sum())
        flat[end:n] = 0
        if self.checksums is not None:
            self._check(idx, flat, table[:, 0], sizes)
        return out, torch.from_numpy(table)

    def _check(
        self, idx: np.ndarray, flat: np.ndarray, starts: np.ndarray, sizes: np.ndarray
    ) -> None:
        """Compares the images read for the first time with their stored CRC-32."""
        assert self._verified is not None and self.checksums is not None  # a disk cache
        for index, start, size in zip(idx, starts, sizes, strict=True):
            if self._verified[index] or not bool(self.valid[index]):
                continue
            if zlib.crc32(flat[start : start + size].tobytes()) != int(self.checksums[index]):
                manifest = self.path.with_suffix(".json") if self.path is not None else None
                if manifest is not None:
                    manifest.unlink(missing_ok=True)
                source = self._sources[index][0] if self._sources is not None else "?"
                raise CacheCorruptedError(
                    f"disk cache {str(self.path)!r} is corrupted: image {int(index)} ({source}) "
                    "no longer matches the checksum stored when the cache was built; its "
                    "manifest was deleted, so the next run rebuilds the cache"
                )
            self._verified[index] = True

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        kind: str,
        dataset: Any,
        batches: Iterable[tuple[torch.Tensor, list[torch.Tensor], list[tuple[int, str]]]],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        decoder: str = "cpu",
        progress: bool = True,
    ) -> RaggedCache:
        """Fills a cache from decoded batches that cover every sample once.

        Args:
            kind: ``"host"`` or ``"disk"``.
            dataset: the data set (``target_size=None``; root, samples, channels, ...).
            batches: ``(indices, images, failures)``: ``(b,)`` int64 indices, one ``(C, h, w)``
                uint8 CPU image each, ``[(index, reason), ...]`` of the samples that failed.
            cache_dir, decoder, progress: as `gpuaug.data.cache.ImageCache.build`.

        Raises:
            ValueError: another ``kind``; batches that leave samples out.
        """
        if kind not in RAGGED_KINDS:
            raise ValueError(
                f"`cache` must be one of {RAGGED_KINDS} for images at their own sizes "
                f"(target_size=None); got {kind!r}"
            )
        n, c = len(dataset), int(dataset.channels)
        table = np.zeros((n, 3), dtype=np.int64)
        seen = torch.zeros(n, dtype=torch.bool)
        valid = torch.ones(n, dtype=torch.bool)
        failures: list[tuple[str, str]] = []
        failed_idx: list[list[Any]] = []
        checksums = np.zeros(n, dtype=np.uint32)
        held: list[np.ndarray] = []  # host: the images in arrival order, joined at the end
        path = tmp = None
        f = None
        if kind == "disk":
            folder = resolve_cache_dir(cache_dir)
            path = folder / f"{cache_key(dataset, decoder)}.ragged.u8"
            tmp = path.with_name(f"{path.name}.tmp-{_host()}-{os.getpid()}")
            remove_stale_temp_files(folder)
            f = open(tmp, "wb")  # noqa: SIM115  (closed in the finally below)
        offset = 0
        bar = _progress_bar(n, kind, "cpu", enabled=progress)
        try:
            for indices, images, failed in batches:
                for index, image in zip(indices.tolist(), images, strict=True):
                    rows = np.ascontiguousarray(image.cpu().numpy()).reshape(-1)
                    table[index] = (offset, image.shape[-2], image.shape[-1])
                    checksums[index] = zlib.crc32(rows.tobytes())
                    if f is not None:
                        f.write(rows.tobytes())
                    else:
                        held.append(rows)
                    offset += rows.size
                    seen[index] = True
                for index, reason in failed:
                    seen[index] = True
                    valid[index] = False
                    failures.append((dataset.samples[index][0], str(reason)))
                    failed_idx.append([int(index), str(reason)])
                bar.update(len(indices) + len(failed))
        finally:
            bar.close()
            if f is not None:
                f.close()
        if not bool(seen.all()):
            raise ValueError(f"the cache batches left {int((~seen).sum())} of {n} samples out")
        if kind == "host":
            flat = np.concatenate(held) if held else np.zeros(0, dtype=np.uint8)
            return cls("host", torch.from_numpy(flat), table, c, valid, failures=failures)
        assert path is not None and tmp is not None
        path.with_suffix(".json").unlink(missing_ok=True)
        os.replace(tmp, path)
        manifest = {
            **_settings(dataset, decoder),
            "layout": "ragged",
            "nbytes": offset,
            "table": table.tolist(),
            "files": file_manifest(dataset),
            "failed": failed_idx,
            "checksums": checksums.tolist(),
        }
        _write_json(path.with_suffix(".json"), manifest)
        return cls(
            "disk", _memmap(path, offset), table, c, valid, failures=failures, path=path,
            checksums=checksums, sources=dataset.samples,
        )  # fmt: skip

    @classmethod
    def open(
        cls,
        dataset: Any,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        decoder: str = "cpu",
    ) -> RaggedCache | None:
        """An up-to-date ragged disk cache of ``dataset``, or ``None`` (missing, stale or
        damaged: the caller rebuilds)."""
        found = open_manifest(
            cache_dir,
            f"{cache_key(dataset, decoder)}.ragged.u8",
            lambda manifest: _check_manifest(manifest, dataset, decoder),
        )
        if found is None or found[0].stat().st_size != found[1][0]:
            return None
        path, (nbytes, table, failed, checksums) = found
        valid, failures = failed_rows(dataset, failed)
        return cls(
            "disk", _memmap(path, nbytes), table, int(dataset.channels), valid,
            failures=failures, path=path, built=False, checksums=checksums,
            sources=dataset.samples,
        )  # fmt: skip

    def __repr__(self) -> str:
        where = self.path if self.kind == "disk" else self.device
        return (
            f"{type(self).__name__}(kind={self.kind!r}, {len(self)} images at their own sizes "
            f"= {self.nbytes / 1e6:.1f} MB, at {where}, {int((~self.valid).sum())} invalid)"
        )


def _memmap(path: Path, nbytes: int) -> np.ndarray:
    if nbytes == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(nbytes,))


def _check_manifest(
    manifest: Any, dataset: Any, decoder: str
) -> tuple[int, np.ndarray, list[tuple[int, str]], np.ndarray] | None:
    """``(nbytes, table, failed, checksums)`` of a manifest that matches ``dataset``."""
    if not isinstance(manifest, dict) or manifest.get("layout") != "ragged":
        return None
    if any(manifest.get(k) != v for k, v in _settings(dataset, decoder).items()):
        return None
    n = len(dataset)
    nbytes = manifest.get("nbytes")
    table = np.asarray(manifest.get("table"), dtype=np.int64)
    if type(nbytes) is not int or table.shape != (n, 3) or (table < 0).any():
        return None
    ends = table[:, 0] + int(dataset.channels) * table[:, 1] * table[:, 2]
    if n and int(ends.max()) > nbytes:
        return None
    checked = check_manifest_samples(manifest, dataset)
    if checked is None:
        return None
    failed, checksums = checked
    return nbytes, table, failed, checksums
