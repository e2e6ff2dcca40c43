"""``ImageCache``: every image of a data set decoded once, kept as uint8 for every later epoch.

Small data sets fit easily (Chollet's 2000 cats and dogs at 150x150 RGB are 2000 x 67,500 B =
135 MB). The loader decodes them once (its workers, with a tqdm bar) and then each epoch is
index sampling, a gather and the augmentation, with no file access and no worker process.

Three places to keep them (``cache=`` of `gpuaug.flow_from_directory`):

- ``"device"``: one ``(N, C, H, W)`` uint8 tensor on the loader's device (GPU memory); a batch
  is an ``index_select`` there. Fastest; rebuilt by every process that starts. Before it is
  built, :func:`check_device_cache_fits` compares its size with ``torch.cuda.mem_get_info``
  and raises a ``ValueError`` that names the size and suggests ``"host"`` or ``"disk"``.
- ``"host"``: the same tensor in ordinary (pageable) host memory; a batch is gathered on the
  CPU straight into one of a few reusable pinned buffers (``index_select(out=...)``) and copied
  to the device ahead of use. For data sets larger than GPU memory. (The cache itself is not
  pinned: torch's caching host allocator rounds a pinned block up to a power of two, so a
  40 GB cache would pin 64 GB, and a gather from pinned memory returns pageable memory anyway.)
- ``"disk"``: a memory-mapped uint8 file plus a JSON manifest, kept between runs. The files
  live in ``cache_dir`` (default ``$GPUAUG_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpuaug``, else
  ``~/.cache/gpuaug``; never inside the image folder), named by a hash of the folder and the
  decode settings. The manifest lists every file (path relative to the root, size, mtime and
  ctime in ns, inode), the class indices, ``target_size``, ``color_mode``, ``interpolation``,
  the decoder, the cache format version and a CRC-32 of every decoded image; if any of these
  differs when the loader starts (a file added, removed, modified or renamed; other
  settings), the cache is rebuilt.

How the disk cache stays honest:

- *Source files replaced behind its back.* ``cp -p``, ``rsync -a`` and ``touch -r`` restore
  a file's mtime, but no user call can set its ctime, and a replaced file (``rsync``'s
  rename) gets a new inode: keying on size + mtime + ctime + inode sees every content write
  at the cost of the one ``stat`` per file the check already made. (A content hash of the
  source files would see them too but reads every file, as long as decoding them.) ctime
  also moves on ``chmod``/``chown`` or a new hard link: the cache is then rebuilt, the safe
  side.
- *Cache bytes overwritten.* Each image's CRC-32 (``zlib.crc32`` of its decoded bytes:
  2.1 GB/s measured on the 2-core dev box, 31 us for a 150x150 RGB image, about 2% of
  decoding its JPEG, so xxhash is not worth a dependency) is stored when the cache is
  built and checked **lazily, on the first read of each image** by this process
  (:meth:`ImageCache.gather`), not on open: checking on open would read the whole file
  before the first batch (minutes for a cache of tens of GB), while the first epoch
  reads every image anyway. A mismatch raises :class:`CacheCorruptedError` naming the
  cache file, the image and its source file, and deletes the manifest so the next start
  rebuilds. :meth:`ImageCache.verify` checks everything at once.
- *A tampered manifest.* One that fails to parse or to check (wrong types, indices out of
  range, a size that does not match the data file) counts as missing: the cache is rebuilt.

Layout: a cache keeps its images planar (``(N, C, H, W)``) or, for the loader's ``layout="rgbx"``
(`gpuaug.data.pixel_layout`), as one ``(N, H, W, 4)`` buffer of RGB plus a padding byte, 4/3
the bytes, so that each batch is a gather of whole rows already in the layout the fused kernel
reads fastest. A disk cache's layout is part of its key and manifest: a planar and an RGBX
cache of one folder are two files.

Files that fail to decode while the cache is built follow the data set's ``on_error``: an
``ImageLoadError`` (``"raise"``), or (``"skip"``) they are marked invalid and left out of every
batch, keeping labels aligned.

Why one module (over 600 lines): the device, host and disk stores are one `ImageCache`, built by
one loop and read by one gather; the disk store's manifest and checksums are what sets it apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from gpuaug.data.pixel_layout import LAYOUTS, as_layout, rgbx_pixels, rgbx_view

_T = TypeVar("_T")

__all__ = [
    "CACHE_KINDS",
    "CACHE_VERSION",
    "CacheCorruptedError",
    "ImageCache",
    "cache_key",
    "check_device_cache_fits",
    "default_cache_dir",
    "file_manifest",
    "resolve_cache_dir",
]

#: Allowed ``cache`` values (besides ``None``).
CACHE_KINDS: tuple[str, ...] = ("device", "host", "disk")
#: Bumped when the on-disk format changes; older caches are rebuilt.
CACHE_VERSION = 2


class CacheCorruptedError(ValueError):
    """A disk cache image whose bytes no longer match the checksum stored when it was built."""


def default_cache_dir() -> Path:
    """``$GPUAUG_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpuaug``, else ``~/.cache/gpuaug``."""
    env = os.environ.get("GPUAUG_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gpuaug"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder, created if needed: ``cache_dir``, else :func:`default_cache_dir`.

    Raises:
        ValueError: the folder is a file, or cannot be created; the message names the
            setting it came from (``cache_dir``, ``$GPUAUG_CACHE_DIR`` or ``$XDG_CACHE_HOME``).
    """
    if cache_dir is not None:
        folder, setting = Path(cache_dir).expanduser(), "`cache_dir`"
    else:
        folder = default_cache_dir()
        if os.environ.get("GPUAUG_CACHE_DIR"):
            setting = "$GPUAUG_CACHE_DIR"
        elif os.environ.get("XDG_CACHE_HOME"):
            setting = "$XDG_CACHE_HOME (+ /gpuaug)"
        else:
            setting = "the default cache folder (~/.cache/gpuaug; set $GPUAUG_CACHE_DIR)"
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"{setting} must be a folder for gpuaug's caches; got {str(folder)!r}, which is a "
            "file (point it at a folder, or unset it)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"{setting} must be a folder gpuaug can create; got {str(folder)!r}: "
            f"{exc.strerror or exc}"
        ) from exc
    return folder


def file_manifest(dataset: Any) -> list[list[Any]]:
    """``[[relative_path, size, mtime_ns, ctime_ns, inode, class_index], ...]`` per sample.

    One ``stat`` per file. ctime and inode catch a file replaced with its mtime restored
    (``cp -p``, ``rsync -a``): see the module docstring.
    """
    own = getattr(dataset, "file_manifest", None)
    if own is not None:  # gpuaug.data.shards: members of tar shards, not files
        return own()
    root = Path(dataset.root)
    out = []
    for path, target in dataset.samples:
        st = os.stat(path)
        out.append(
            [
                os.path.relpath(path, root),
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
                int(target),
            ]
        )
    for path in getattr(dataset, "mask_paths", ()):  # gpuaug.data.paired: a changed mask counts too
        st = os.stat(path)
        out.append(
            [os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, -1]
        )
    return out


def image_checksums(images: np.ndarray) -> np.ndarray:
    """CRC-32 (``zlib.crc32``) of each image's bytes (a row of a cache's stored array).

    Shape:
        images ``(b, C, H, W)`` (or ``(b, H, W, 4)``) uint8 numpy, C-contiguous -> ``(b,)``
        uint32.
    """
    images = np.ascontiguousarray(images)
    return np.fromiter((zlib.crc32(row) for row in images), dtype=np.uint32, count=len(images))


def _settings(dataset: Any, decoder: str, layout: str = "planar") -> dict[str, Any]:
    settings = {
        "version": CACHE_VERSION,
        "root": str(Path(dataset.root).resolve()),
        "target_size": None if dataset.target_size is None else list(dataset.target_size),
        "color_mode": dataset.color_mode,
        "interpolation": dataset.interpolation,
        "decoder": decoder,
        "classes": list(dataset.classes),
    }
    if getattr(dataset, "keep_aspect_ratio", False):  # only when on: older caches stay valid
        settings["keep_aspect_ratio"] = True
    if getattr(dataset, "draft", False):  # other pixels than a full-size decode
        settings["draft"] = True
    if getattr(dataset, "max_side", None) is not None:  # images at their own, capped, size
        settings["max_side"] = int(dataset.max_side)
    if layout != "planar":  # only when not planar: older caches stay valid
        settings["layout"] = layout
    return settings


def cache_key(dataset: Any, decoder: str = "cpu", layout: str = "planar") -> str:
    """The file stem of a data set's disk cache: a hash of its root, subset and settings
    (its pixel layout among them)."""
    settings = _settings(dataset, decoder, layout)
    settings["subset"] = getattr(dataset, "subset", None)
    settings["validation_split"] = getattr(dataset, "validation_split", 0.0)
    text = json.dumps(settings, sort_keys=True)
    name = Path(dataset.root).resolve().name or "root"
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _shape(dataset: Any) -> tuple[int, int, int, int]:
    if dataset.target_size is None:
        raise ValueError("a cache needs a fixed `target_size`; got None")
    h, w = dataset.target_size
    # a data set with masks (gpuaug.data.paired) stores them as extra uint8 channels
    channels = int(dataset.channels) + int(getattr(dataset, "mask_bytes", 0))
    return len(dataset), channels, int(h), int(w)


def _stored_shape(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """The shape of the array a cache of images ``shape`` (N, C, H, W) keeps in ``layout``."""
    n, c, h, w = shape
    return (n, h, w, 4) if layout == "rgbx" else (n, c, h, w)


#: Device memory left free after a device cache (the batches, the augmentation, the model).
DEVICE_HEADROOM = 0.1


def check_device_cache_fits(
    shape: Sequence[int], device: torch.device | str, layout: str = "planar"
) -> None:
    """Raises if a ``cache="device"`` of ``shape`` uint8 (kept in ``layout``) would not fit in
    ``device``'s free memory.

    Allows at most ``1 - DEVICE_HEADROOM`` of the memory ``torch.cuda.mem_get_info`` reports
    free. A non-CUDA device is not checked.

    Raises:
        ValueError: the cache does not fit; the message gives the size needed and what is free
            and suggests ``cache="host"`` or ``"disk"``.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return
    need = int(np.prod(_stored_shape(shape, layout)))
    free, total = torch.cuda.mem_get_info(device)
    if need > (1 - DEVICE_HEADROOM) * free:
        n, c, h, w = shape
        kept = "" if layout == "planar" else f" ({layout}: 4 bytes per pixel)"
        raise ValueError(
            f"cache='device' needs {need / 2**30:.2f} GiB for {n} images of {c}x{h}x{w} uint8"
            f"{kept}, "
            f"but {device} has {free / 2**30:.2f} GiB free (of {total / 2**30:.2f} GiB; "
            f"{DEVICE_HEADROOM:.0%} is kept for the batches and the model); use cache='host' "
            "(host memory) or cache='disk' (a memory-mapped file), or a smaller `target_size`"
        )


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Deletes the data files that builders killed mid-build left in ``folder``
    (``*.u8.tmp-HOST-PID`` of this machine, or ``*.u8.tmp-PID``, whose process no longer
    runs); returns them. A build in progress, here or on another machine sharing the
    folder, keeps its file."""
    removed = []
    host = _host()
    for tmp in folder.glob("*.u8.tmp-*"):
        owner = tmp.name.split(".u8.tmp-", 1)[1]
        name, _, pid = owner.rpartition("-")
        if not pid.isdigit() or name not in ("", host) or _running(int(pid)):
            continue
        try:
            tmp.unlink()
        except OSError:  # gone already, or not ours to remove
            continue
        removed.append(tmp)
    return removed


def _host() -> str:
    return socket.gethostname().replace(os.sep, "_") or "localhost"


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, another user's
        return True
    return True


class ImageCache:
    """uint8 images of a whole data set, on the device, in host memory, or memory-mapped.

    Build one with :meth:`build` (or :meth:`open` an up-to-date disk cache); the loader does
    both. :meth:`gather` returns the images of a batch of sample indices.

    Args:
        kind: ``"device"``, ``"host"`` or ``"disk"``.
        images: what the cache keeps: ``(N, C, H, W)`` (planar) or, with ``layout="rgbx"``,
            the ``(N, H, W, 4)`` uint8 buffer; a tensor or a ``numpy.memmap``.
        valid: see below.
        layout: ``"planar"`` or ``"rgbx"`` (`gpuaug.data.pixel_layout`).

    Attributes:
        kind: ``"device"``, ``"host"`` or ``"disk"``.
        images: ``(N, C, H, W)`` uint8: a tensor (device or host) or a read-only
            ``numpy.memmap`` (disk); for RGBX a strided view of :attr:`pixels`.
        pixels: the array the bytes are in (:attr:`images` itself when planar).
        layout: ``"planar"`` or ``"rgbx"``; :meth:`take` returns batches in it.
        valid: ``(N,)`` bool, CPU: False for files that failed to decode (``on_error="skip"``).
        failures: ``[(path, reason), ...]`` for those files.
        path: the data file of a disk cache (``None`` otherwise).
        built: True if decoded by this process, False if opened from disk.
    """

    def __init__(
        self,
        kind: str,
        images: torch.Tensor | np.ndarray,
        valid: torch.Tensor,
        *,
        failures: Sequence[tuple[str, str]] = (),
        path: Path | None = None,
        built: bool = True,
        checksums: np.ndarray | None = None,
        sources: Sequence[tuple[str, int]] | None = None,
        layout: str = "planar",
    ) -> None:
        if kind not in CACHE_KINDS:
            raise ValueError(f"`cache` must be one of {CACHE_KINDS} or None; got {kind!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"`layout` must be one of {LAYOUTS}; got {layout!r}")
        self.kind = kind
        self.layout = layout
        self.pixels = images
        if layout == "planar":
            self.images = images
        elif isinstance(images, torch.Tensor):
            self.images = rgbx_view(images)
        else:
            self.images = images.transpose(0, 3, 1, 2)[:, :3]
        self.valid = valid
        self.failures = list(failures)
        self.path = path
        self.built = built
        # Disk caches: the stored CRC-32 of each image, checked on its first read.
        self.checksums = checksums
        self._verified = np.zeros(len(checksums), dtype=bool) if checksums is not None else None
        self._sources = sources

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held (``N * C * H * W``; ``N * H * W * 4`` for RGBX)."""
        return int(np.prod(self.pixels.shape))

    @property
    def device(self) -> torch.device:
        """Where :meth:`gather` returns its images."""
        if isinstance(self.images, torch.Tensor):
            return self.images.device
        return torch.device("cpu")

    def gather(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images of a batch, without those that failed to decode.

        Args:
            indices: sample indices.

        Returns:
            ``(images, kept)``: ``kept`` are the indices whose image is returned, in order.

        Shape:
            indices ``(b,)`` int64 CPU -> images ``(b', C, H, W)`` uint8 on :attr:`device`,
            kept ``(b',)`` int64 CPU, ``b' <= b``.
        """
        idx = indices.to("cpu", torch.int64).numpy()
        ok = self.valid.numpy()[idx]
        if not ok.all():
            idx = idx[ok]
        kept = torch.from_numpy(np.ascontiguousarray(idx))
        return self.take(kept.to(self.device)), kept

    def take(self, indices: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The images at ``indices`` (valid or not), as one gather.

        Args:
            indices: sample indices, on :attr:`device` (a device cache) or the CPU.
            out: where to gather (host and disk caches: e.g. a pinned buffer, so the batch is
                copied once on the CPU); ``None`` allocates.

        Shape:
            indices ``(b,)`` int64 -> ``(b, C, H, W)`` uint8 on :attr:`device` (or ``out``),
            in :attr:`layout` (``out`` must have it too).
        """
        rgbx = self.layout == "rgbx"
        target = None if out is None else (rgbx_pixels(out) if rgbx else out)
        if isinstance(self.pixels, torch.Tensor):
            if out is None or target is None:
                gathered = self.pixels.index_select(0, indices)
                return rgbx_view(gathered) if rgbx else gathered
            torch.index_select(self.pixels, 0, indices, out=target)
            return out
        idx = indices.numpy()
        if target is None:
            rows = np.take(self.pixels, idx, axis=0)
        else:
            rows = target.numpy()
            np.take(self.pixels, idx, axis=0, out=rows)
        if self.checksums is not None:  # a disk cache: first reads are checked
            self._check_rows(idx, rows)
        if out is not None:
            return out
        batch = torch.from_numpy(rows)
        return rgbx_view(batch) if rgbx else batch

    def _check_rows(self, indices: np.ndarray, rows: np.ndarray) -> None:
        """Compare the images read for the first time with their stored CRC-32.

        ``rows[i]`` is image ``indices[i]``; images that failed to decode when the cache was
        built (invalid: never served) are not checked.
        """
        assert self._verified is not None and self.checksums is not None  # a disk cache
        first = ~self._verified[indices] & self.valid.numpy()[indices]
        if not first.any():
            return
        todo = indices[first]
        sums = image_checksums(rows[first])
        wrong = np.flatnonzero(sums != self.checksums[todo])
        if len(wrong):
            self._corrupted(int(todo[wrong[0]]), len(wrong))
        self._verified[todo] = True

    def _corrupted(self, index: int, count: int) -> None:
        manifest = self.path.with_suffix(".json") if self.path is not None else None
        if manifest is not None:
            manifest.unlink(missing_ok=True)  # the next start rebuilds the cache
        source = self._sources[index][0] if self._sources is not None else "?"
        raise CacheCorruptedError(
            f"disk cache {str(self.path)!r} is corrupted: image {index} ({source}) no longer "
            f"matches the checksum stored when the cache was built"
            + (f" ({count} images of this batch differ)" if count > 1 else "")
            + "; its manifest was deleted, so the next run rebuilds the cache"
        )

    def verify(self) -> None:
        """Check every valid image of a disk cache against its stored CRC-32 (reads it all).

        Raises:
            CacheCorruptedError: the first image that differs (the manifest is deleted).
        """
        if self.checksums is None:
            return
        valid = self.valid.numpy()
        step = 256
        for start in range(0, len(self), step):
            idx = np.arange(start, min(start + step, len(self)))
            idx = idx[valid[idx]]
            self._check_rows(idx, np.ascontiguousarray(self.pixels[idx]))

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        kind: str,
        dataset: Any,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor | None, list[tuple[int, str]]]],
        *,
        device: torch.device | str = "cpu",
        cache_dir: str | os.PathLike[str] | None = None,
        decoder: str = "cpu",
        pin_memory: bool = False,
        progress: bool = True,
        layout: str = "planar",
    ) -> ImageCache:
        """Fills a cache from decoded batches that cover every sample once.

        Args:
            kind: ``"device"``, ``"host"`` or ``"disk"``.
            dataset: the `gpuaug.DirectoryDataset` (root, samples, target_size, channels...).
            batches: ``(indices, images, failures)``: indices ``(b,)`` int64, images
                ``(b, C, H, W)`` uint8 on any device (the samples that decoded), failures
                ``[(index, reason), ...]`` (the samples that did not).
            device: the device of a ``"device"`` cache.
            cache_dir: folder of a ``"disk"`` cache (default :func:`default_cache_dir`).
            decoder: ``"cpu"`` or ``"gpu"``, recorded in the disk manifest.
            pin_memory: pin a ``"host"`` cache (the loader does not: it gathers into a few
                pinned buffers instead, see the module docstring).
            progress: show a tqdm bar.
            layout: ``"planar"`` or ``"rgbx"`` (3 channels): how the cache keeps the images
                (batches in either layout are taken).

        Raises:
            ValueError: unknown ``kind`` or ``layout``; RGBX for other than 3 channels; a data
                set without a fixed ``target_size``; batches that leave samples out; a device
                cache that does not fit (:func:`check_device_cache_fits`, checked before
                anything is decoded).
        """
        if kind not in CACHE_KINDS:
            raise ValueError(f"`cache` must be one of {CACHE_KINDS} or None; got {kind!r}")
        shape = _shape(dataset)
        if layout not in LAYOUTS:
            raise ValueError(f"`layout` must be one of {LAYOUTS}; got {layout!r}")
        if layout == "rgbx" and shape[1] != 3:
            raise ValueError(f"an RGBX cache holds 3 channels; got {shape[1]}")
        if kind == "device":
            check_device_cache_fits(shape, device, layout)
        n = shape[0]
        stored = _stored_shape(shape, layout)
        path = tmp = None
        if kind == "device":
            images: Any = torch.empty(stored, dtype=torch.uint8, device=device)
        elif kind == "host":  # every row is written whole (an RGBX one with its padding)
            images = torch.empty(stored, dtype=torch.uint8, pin_memory=pin_memory)
        else:
            folder = resolve_cache_dir(cache_dir)
            path = folder / f"{cache_key(dataset, decoder, layout)}.u8"
            tmp = path.with_name(f"{path.name}.tmp-{_host()}-{os.getpid()}")
            remove_stale_temp_files(folder)
            images = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=stored)
        seen = torch.zeros(n, dtype=torch.bool)
        valid = torch.ones(n, dtype=torch.bool)
        failures: list[tuple[str, str]] = []
        failed_idx: list[list[Any]] = []
        checksums = np.zeros(n, dtype=np.uint32) if kind == "disk" else None
        bar = _progress_bar(n, kind, device, enabled=progress)
        try:
            for indices, batch, failed in batches:
                indices = indices.to("cpu", torch.int64)
                if len(indices):
                    assert batch is not None  # images come with their indices
                    if layout == "rgbx":  # whole pixels (a planar batch is interleaved here)
                        batch = rgbx_pixels(as_layout(batch, "rgbx"))
                    if isinstance(images, torch.Tensor):
                        images.index_copy_(0, indices.to(images.device), batch.to(images.device))
                    else:
                        assert checksums is not None  # kind == "disk"
                        rows = np.ascontiguousarray(batch.cpu().numpy())
                        images[indices.numpy()] = rows
                        checksums[indices.numpy()] = image_checksums(rows)
                    seen[indices] = True
                for index, reason in failed:
                    seen[index] = True
                    valid[index] = False
                    # a failed mask names itself (gpuaug.loader.stages.batch.FailureReason)
                    name = getattr(reason, "path", None) or dataset.samples[index][0]
                    failures.append((name, str(reason)))
                    failed_idx.append([int(index), str(reason)])
                bar.update(len(indices) + len(failed))
        finally:
            bar.close()
        if not bool(seen.all()):
            missing = int((~seen).sum())
            raise ValueError(f"the cache batches left {missing} of {n} samples out")
        if kind != "disk":
            return cls(kind, images, valid, failures=failures, layout=layout)
        assert isinstance(images, np.memmap) and checksums is not None
        assert path is not None and tmp is not None
        images.flush()
        del images
        # No manifest while the data file changes: a crash in between leaves no cache.
        path.with_suffix(".json").unlink(missing_ok=True)
        os.replace(tmp, path)
        manifest = {
            **_settings(dataset, decoder, layout),
            "shape": list(shape),
            "files": file_manifest(dataset),
            "failed": failed_idx,
            "checksums": checksums.tolist(),
        }
        _write_json(path.with_suffix(".json"), manifest)
        mm = np.memmap(path, dtype=np.uint8, mode="r", shape=stored)
        return cls(
            "disk",
            mm,
            valid,
            failures=failures,
            path=path,
            checksums=checksums,
            sources=dataset.samples,
            layout=layout,
        )

    @classmethod
    def open(
        cls,
        dataset: Any,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        decoder: str = "cpu",
        layout: str = "planar",
    ) -> ImageCache | None:
        """An up-to-date disk cache of ``dataset`` kept in ``layout``, or ``None`` (missing,
        stale or damaged).

        A manifest that does not parse or check (wrong types, indices out of range, a data
        file of the wrong size, a checksum list of the wrong length) counts as missing, so
        the caller rebuilds. Image checksums are verified lazily, on each image's first read
        (see the module docstring).

        Raises:
            ValueError: ``cache_dir`` (or ``$GPUAUG_CACHE_DIR``) names a file.
        """
        found = open_manifest(
            cache_dir,
            f"{cache_key(dataset, decoder, layout)}.u8",
            lambda manifest: _check_manifest(manifest, dataset, decoder, layout),
        )
        if found is None:
            return None
        path, (shape, failed, checksums) = found
        stored = _stored_shape(shape, layout)
        if path.stat().st_size != int(np.prod(stored)):
            return None
        valid, failures = failed_rows(dataset, failed)
        mm = np.memmap(path, dtype=np.uint8, mode="r", shape=stored)
        return cls(
            "disk",
            mm,
            valid,
            failures=failures,
            path=path,
            built=False,
            checksums=checksums,
            sources=dataset.samples,
            layout=layout,
        )

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        where = self.path if self.kind == "disk" else self.device
        return (
            f"{type(self).__name__}(kind={self.kind!r}, {n} x {c}x{h}x{w} uint8 "
            f"{self.layout} = "
            f"{self.nbytes / 1e6:.1f} MB, at {where}, {int((~self.valid).sum())} invalid)"
        )


def _check_manifest(
    manifest: Any, dataset: Any, decoder: str, layout: str = "planar"
) -> tuple[tuple[int, ...], list[tuple[int, str]], np.ndarray] | None:
    """``(shape, failed, checksums)`` of a manifest that matches ``dataset``; else ``None``.

    Every field is type- and range-checked, so a hand-edited manifest can only cause a
    rebuild, never an error.
    """
    if not isinstance(manifest, dict):
        return None
    settings = _settings(dataset, decoder, layout)
    if any(manifest.get(k) != v for k, v in settings.items()) or (
        layout == "planar" and "layout" in manifest
    ):
        return None
    shape = list(_shape(dataset))
    if manifest.get("shape") != shape:
        return None
    checked = check_manifest_samples(manifest, dataset)
    if checked is None:
        return None
    failed, checksums = checked
    return tuple(shape), failed, checksums


def check_manifest_samples(
    manifest: dict[str, Any], dataset: Any
) -> tuple[list[tuple[int, str]], np.ndarray] | None:
    """The per-sample fields every disk cache's manifest has, checked against ``dataset``:
    ``(failed, checksums)``, or ``None`` when one is malformed or the files changed."""
    n = len(dataset)
    failed_raw, sums = manifest.get("failed"), manifest.get("checksums")
    if not isinstance(failed_raw, list) or not isinstance(sums, list) or len(sums) != n:
        return None
    failed = []
    for item in failed_raw:
        if not (isinstance(item, list) and len(item) == 2):
            return None
        index, reason = item
        if type(index) is not int or not 0 <= index < n or not isinstance(reason, str):
            return None
        failed.append((index, reason))
    if not all(type(v) is int and 0 <= v < 2**32 for v in sums):
        return None
    try:
        if manifest.get("files") != file_manifest(dataset):
            return None
    except OSError:  # a file vanished between indexing and now
        return None
    return failed, np.array(sums, dtype=np.uint32)


def open_manifest(
    cache_dir: str | os.PathLike[str] | None, name: str, check: Callable[[Any], _T | None]
) -> tuple[Path, _T] | None:
    """The data file ``name`` of a disk cache and what ``check`` makes of its JSON manifest,
    or ``None`` when either file is missing or the manifest does not parse or check (the
    caller rebuilds).

    Raises:
        ValueError: ``cache_dir`` (or ``$GPUAUG_CACHE_DIR``) names a file.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if folder.exists() and not folder.is_dir():
        resolve_cache_dir(cache_dir)  # raises, naming the setting
    path = folder / name
    manifest_path = path.with_suffix(".json")
    if not (path.is_file() and manifest_path.is_file()):
        return None
    try:
        checked = check(json.loads(manifest_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError, IndexError, OverflowError):
        return None
    return None if checked is None else (path, checked)


def failed_rows(
    dataset: Any, failed: Sequence[tuple[int, str]]
) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """A manifest's failed samples as a cache's ``valid`` mask and ``(path, reason)`` list."""
    valid = torch.ones(len(dataset), dtype=torch.bool)
    failures = []
    for index, reason in failed:
        valid[index] = False
        failures.append((dataset.samples[index][0], reason))
    return valid, failures


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _progress_bar(total: int, kind: str, device: torch.device | str, *, enabled: bool):
    from tqdm.auto import tqdm

    where = {"device": str(device), "host": "host memory", "disk": "disk"}[kind]
    return tqdm(
        total=total,
        desc=f"gpuaug: caching {total} images ({where})",
        unit="img",
        disable=not enabled,
    )
