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
  decode settings. The manifest lists every file (path relative to the root, size, mtime in
  ns), the class indices, ``target_size``, ``color_mode``, ``interpolation``, the decoder and
  the cache format version; if any of these differs when the loader starts (a file added,
  removed, modified or renamed; other settings), the cache is rebuilt.

Files that fail to decode while the cache is built follow the data set's ``on_error``: an
``ImageLoadError`` (``"raise"``), or (``"skip"``) they are marked invalid and left out of every
batch, keeping labels aligned.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CACHE_KINDS",
    "CACHE_VERSION",
    "ImageCache",
    "cache_key",
    "check_device_cache_fits",
    "default_cache_dir",
    "file_manifest",
]

#: Allowed ``cache`` values (besides ``None``).
CACHE_KINDS: tuple[str, ...] = ("device", "host", "disk")
#: Bumped when the on-disk format changes; older caches are rebuilt.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$GPUAUG_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpuaug``, else ``~/.cache/gpuaug``."""
    env = os.environ.get("GPUAUG_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gpuaug"


def file_manifest(dataset: Any) -> list[list[Any]]:
    """``[[relative_path, size, mtime_ns, class_index], ...]`` for every sample, in order."""
    root = Path(dataset.root)
    out = []
    for path, target in dataset.samples:
        st = os.stat(path)
        out.append([os.path.relpath(path, root), st.st_size, st.st_mtime_ns, int(target)])
    return out


def _settings(dataset: Any, decoder: str) -> dict[str, Any]:
    settings = {
        "version": CACHE_VERSION,
        "root": str(Path(dataset.root).resolve()),
        "target_size": list(dataset.target_size),
        "color_mode": dataset.color_mode,
        "interpolation": dataset.interpolation,
        "decoder": decoder,
        "classes": list(dataset.classes),
    }
    if getattr(dataset, "keep_aspect_ratio", False):  # only when on: older caches stay valid
        settings["keep_aspect_ratio"] = True
    return settings


def cache_key(dataset: Any, decoder: str = "cpu") -> str:
    """The file stem of a data set's disk cache: a hash of its root, subset and settings."""
    settings = _settings(dataset, decoder)
    settings["subset"] = getattr(dataset, "subset", None)
    settings["validation_split"] = getattr(dataset, "validation_split", 0.0)
    text = json.dumps(settings, sort_keys=True)
    name = Path(dataset.root).resolve().name or "root"
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _shape(dataset: Any) -> tuple[int, int, int, int]:
    if dataset.target_size is None:
        raise ValueError("a cache needs a fixed `target_size`; got None")
    h, w = dataset.target_size
    return len(dataset), int(dataset.channels), int(h), int(w)


#: Device memory left free after a device cache (the batches, the augmentation, the model).
DEVICE_HEADROOM = 0.1


def check_device_cache_fits(shape: Sequence[int], device: torch.device | str) -> None:
    """Raises if a ``cache="device"`` of ``shape`` uint8 would not fit in ``device``'s free memory.

    Allows at most ``1 - DEVICE_HEADROOM`` of the memory ``torch.cuda.mem_get_info`` reports
    free. A non-CUDA device is not checked.

    Raises:
        ValueError: the cache does not fit; the message gives the size needed and what is free
            and suggests ``cache="host"`` or ``"disk"``.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return
    need = int(np.prod(shape))
    free, total = torch.cuda.mem_get_info(device)
    if need > (1 - DEVICE_HEADROOM) * free:
        n, c, h, w = shape
        raise ValueError(
            f"cache='device' needs {need / 2**30:.2f} GiB for {n} images of {c}x{h}x{w} uint8, "
            f"but {device} has {free / 2**30:.2f} GiB free (of {total / 2**30:.2f} GiB; "
            f"{DEVICE_HEADROOM:.0%} is kept for the batches and the model); use cache='host' "
            "(host memory) or cache='disk' (a memory-mapped file), or a smaller `target_size`"
        )


class ImageCache:
    """uint8 images of a whole data set, on the device, in host memory, or memory-mapped.

    Build one with :meth:`build` (or :meth:`open` an up-to-date disk cache); the loader does
    both. :meth:`gather` returns the images of a batch of sample indices.

    Attributes:
        kind: ``"device"``, ``"host"`` or ``"disk"``.
        images: ``(N, C, H, W)`` uint8: a tensor (device or host) or a read-only
            ``numpy.memmap`` (disk).
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
    ) -> None:
        if kind not in CACHE_KINDS:
            raise ValueError(f"`cache` must be one of {CACHE_KINDS} or None; got {kind!r}")
        self.kind = kind
        self.images = images
        self.valid = valid
        self.failures = list(failures)
        self.path = path
        self.built = built

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held (``N * C * H * W``)."""
        return int(np.prod(self.images.shape))

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
            indices ``(b,)`` int64 -> ``(b, C, H, W)`` uint8 on :attr:`device` (or ``out``).
        """
        if isinstance(self.images, torch.Tensor):
            if out is None:
                return self.images.index_select(0, indices)
            return torch.index_select(self.images, 0, indices, out=out)
        idx = indices.numpy()
        if out is None:
            return torch.from_numpy(np.take(self.images, idx, axis=0))
        np.take(self.images, idx, axis=0, out=out.numpy())
        return out

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        kind: str,
        dataset: Any,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]],
        *,
        device: torch.device | str = "cpu",
        cache_dir: str | os.PathLike[str] | None = None,
        decoder: str = "cpu",
        pin_memory: bool = False,
        progress: bool = True,
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

        Raises:
            ValueError: unknown ``kind``; a data set without a fixed ``target_size``; batches
                that leave samples out; a device cache that does not fit
                (:func:`check_device_cache_fits`, checked before anything is decoded).
        """
        if kind not in CACHE_KINDS:
            raise ValueError(f"`cache` must be one of {CACHE_KINDS} or None; got {kind!r}")
        shape = _shape(dataset)
        if kind == "device":
            check_device_cache_fits(shape, device)
        n = shape[0]
        path = tmp = None
        if kind == "device":
            images: Any = torch.empty(shape, dtype=torch.uint8, device=device)
        elif kind == "host":
            images = torch.empty(shape, dtype=torch.uint8, pin_memory=pin_memory)
        else:
            folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{cache_key(dataset, decoder)}.u8"
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            images = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        seen = torch.zeros(n, dtype=torch.bool)
        valid = torch.ones(n, dtype=torch.bool)
        failures: list[tuple[str, str]] = []
        failed_idx: list[list[Any]] = []
        bar = _progress_bar(n, kind, device, enabled=progress)
        try:
            for indices, batch, failed in batches:
                indices = indices.to("cpu", torch.int64)
                if len(indices):
                    if isinstance(images, torch.Tensor):
                        images.index_copy_(0, indices.to(images.device), batch.to(images.device))
                    else:
                        images[indices.numpy()] = batch.cpu().numpy()
                    seen[indices] = True
                for index, reason in failed:
                    seen[index] = True
                    valid[index] = False
                    failures.append((dataset.samples[index][0], reason))
                    failed_idx.append([int(index), reason])
                bar.update(len(indices) + len(failed))
        finally:
            bar.close()
        if not bool(seen.all()):
            missing = int((~seen).sum())
            raise ValueError(f"the cache batches left {missing} of {n} samples out")
        if kind != "disk":
            return cls(kind, images, valid, failures=failures)
        images.flush()
        del images
        os.replace(tmp, path)
        manifest = {
            **_settings(dataset, decoder),
            "shape": list(shape),
            "files": file_manifest(dataset),
            "failed": failed_idx,
        }
        _write_json(path.with_suffix(".json"), manifest)
        mm = np.memmap(path, dtype=np.uint8, mode="r", shape=shape)
        return cls("disk", mm, valid, failures=failures, path=path)

    @classmethod
    def open(
        cls,
        dataset: Any,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        decoder: str = "cpu",
    ) -> ImageCache | None:
        """An up-to-date disk cache of ``dataset``, or ``None`` (missing or stale)."""
        folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        path = folder / f"{cache_key(dataset, decoder)}.u8"
        manifest_path = path.with_suffix(".json")
        if not (path.is_file() and manifest_path.is_file()):
            return None
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not _manifest_matches(manifest, dataset, decoder):
            return None
        shape = tuple(manifest["shape"])
        if path.stat().st_size != int(np.prod(shape)):
            return None
        valid = torch.ones(shape[0], dtype=torch.bool)
        failures = []
        for index, reason in manifest["failed"]:
            valid[index] = False
            failures.append((dataset.samples[index][0], reason))
        mm = np.memmap(path, dtype=np.uint8, mode="r", shape=shape)
        return cls("disk", mm, valid, failures=failures, path=path, built=False)

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        where = self.path if self.kind == "disk" else self.device
        return (
            f"{type(self).__name__}(kind={self.kind!r}, {n} x {c}x{h}x{w} uint8 = "
            f"{self.nbytes / 1e6:.1f} MB, at {where}, {int((~self.valid).sum())} invalid)"
        )


def _manifest_matches(manifest: dict[str, Any], dataset: Any, decoder: str) -> bool:
    settings = _settings(dataset, decoder)
    if any(manifest.get(k) != v for k, v in settings.items()):
        return False
    if manifest.get("shape") != list(_shape(dataset)):
        return False
    try:
        return manifest.get("files") == file_manifest(dataset)
    except OSError:  # a file vanished between indexing and now
        return False


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
