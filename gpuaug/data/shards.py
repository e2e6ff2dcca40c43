"""``ShardDataset``: images in WebDataset-layout tar shards, on a local disk or any fsspec URL.

Layout (WebDataset's): each shard is a tar file; the files of one sample share a *key* (the
member's path up to the first dot of its file name) and differ by extension, e.g.
``000017.jpg`` + ``000017.cls`` (the class index as text) or ``000017.json`` (a field of it
holds the label). ``urls`` is a list, or one string with brace ranges
(``"data/train-{000000..000099}.tar"``, expanded by ``braceexpand``, as WebDataset does), of
local paths or fsspec URLs (``file://``, ``s3://`` with ``s3fs``, ``gs://`` with ``gcsfs``,
``https://`` ...).

Why fsspec + the standard ``tarfile`` and not ``webdataset``'s reader: WebDataset streams each
shard from start to end, which is why it cannot promise every sample exactly once per epoch
across ranks and workers or a resume mid-epoch (it splits *shards* between workers and ranks).
Here a shard *index* is built once (one pass over each shard's tar headers with ``tarfile``,
reading only the small label members) and holds every sample's member offsets and sizes; the
data set is then an ordinary indexed data set (``load(i)`` seeks to sample ``i``'s image in
its shard and reads exactly its bytes), so `gpuaug.GPULoader`'s sampler gives what it gives a
folder: one permutation of all samples per pass, a disjoint shard of it per rank, each batch
read by one worker, ``len(loader)``, ``describe()``, ``replay`` and ``state_dict`` resume.

The cost of random access: one seek + read per sample. On a local disk or a network file
system that is what a folder of files costs too; on object storage it is one ranged GET per
sample (fsspec's block cache does not help a random order), slower than WebDataset's
sequential streaming. Use ``cache="host"`` / ``"disk"`` to read each sample once.

The index is cached in ``cache_dir`` (default ``~/.cache/gpuaug``), keyed by the URLs, the
label rule, and each shard's size and modification time (or ETag) as fsspec reports them; a
changed shard is indexed again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpuaug.data.cache import resolve_cache_dir
from gpuaug.data.image import ImageLoadError, load_image_bytes

__all__ = [
    "IMAGE_EXTENSIONS",
    "INDEX_VERSION",
    "ShardDataset",
    "ShardIndex",
    "expand_urls",
    "index_shards",
    "sample_key",
    "write_shards",
]

#: Member extensions taken as a sample's image, in order of preference.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "tif", "tiff", "gif")
INDEX_VERSION = 1
_OPEN_FILES = 8  # open shard files kept per process
_CLASS_MODES = ("categorical", "binary", "sparse", "input", None)


def expand_urls(urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """The shard list: brace ranges expanded (``"a-{000..002}.tar"`` -> 3 URLs), in order.

    Raises:
        TypeError: ``urls`` is not a string, a path or a sequence of them.
        ValueError: no URL at all.
    """
    from braceexpand import braceexpand

    if isinstance(urls, (str, os.PathLike)):
        items = [os.fspath(urls)]
    elif isinstance(urls, Sequence) and all(isinstance(u, (str, os.PathLike)) for u in urls):
        items = [os.fspath(u) for u in urls]
    else:
        raise TypeError(f"`urls` must be a string, a path or a list of them; got {urls!r}")
    out = [u for item in items for u in braceexpand(item)]
    if not out:
        raise ValueError(f"`urls` must name at least one shard; got {urls!r}")
    return out


def sample_key(name: str) -> tuple[str, str]:
    """``(key, extension)`` of a tar member, WebDataset's rule: the key is the path up to the
    first dot of the file name, the extension the rest, lower-cased
    (``"a/b/0001.seg.png"`` -> ``("a/b/0001", "seg.png")``)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


def _label_rule(label: str) -> tuple[str, str | None]:
    if not isinstance(label, str):
        raise TypeError(f"`label` must be a string; got {label!r}")
    if label in ("cls", "json") or label.startswith("json:"):
        ext, _, field = label.partition(":")
        return ext, (field or "label") if ext == "json" else None
    raise ValueError(f"`label` must be 'cls', 'json' or 'json:<field>'; got {label!r}")


def _parse_label(data: bytes, ext: str, field: str | None, where: str) -> int:
    try:
        if ext == "cls":
            return int(data.decode().strip())
        value = json.loads(data)[field]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{field!r} is {value!r}, not an int")
        return value
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        reason = f"no field {field!r}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"{where}: the label is not a class index ({reason})") from exc


class ShardIndex:
    """Where every sample of a list of shards is: shard number, image offset and size, label.

    Attributes:
        urls: the shards.
        stamps: per shard, what the cache is keyed by (size, mtime or ETag).
        keys: per sample, its key (``str``).
        exts: per sample, its image member's extension.
        shard: ``(n,)`` int32, the shard of each sample.
        offset: ``(n,)`` int64, the byte offset of the image member's data in its shard.
        size: ``(n,)`` int64, its size in bytes.
        label: ``(n,)`` int64, the class index (0 when the shards carry no label).
        per_shard: ``(len(urls),)`` int64, samples per shard.
    """

    def __init__(
        self,
        urls: list[str],
        stamps: list[str],
        keys: list[str],
        exts: list[str],
        shard: np.ndarray,
        offset: np.ndarray,
        size: np.ndarray,
        label: np.ndarray,
    ) -> None:
        self.urls, self.stamps, self.keys, self.exts = urls, stamps, keys, exts
        self.shard, self.offset, self.size, self.label = shard, offset, size, label
        self.per_shard = np.bincount(shard, minlength=len(urls)).astype(np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": INDEX_VERSION,
            "urls": self.urls,
            "stamps": self.stamps,
            "keys": self.keys,
            "exts": self.exts,
            "shard": self.shard.tolist(),
            "offset": self.offset.tolist(),
            "size": self.size.tolist(),
            "label": self.label.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ShardIndex:
        return cls(
            d["urls"],
            d["stamps"],
            d["keys"],
            d["exts"],
            np.asarray(d["shard"], dtype=np.int32),
            np.asarray(d["offset"], dtype=np.int64),
            np.asarray(d["size"], dtype=np.int64),
            np.asarray(d["label"], dtype=np.int64),
        )


def _stamp(url: str) -> str:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"shard {url!r} does not exist") from exc
    when = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("etag")
    if hasattr(when, "timestamp"):
        when = when.timestamp()
    return f"{info.get('size')}:{when}"


_FIELDS = ("keys", "exts", "shard", "offset", "size", "label")
_INDEX_THREADS = 8  # shards indexed at once (reading them waits on storage, not the CPU)


def _index_one(url: str, number: int, label: tuple[str, str | None] | None) -> dict[str, list]:
    import fsspec

    out: dict[str, list[Any]] = {k: [] for k in _FIELDS}
    samples: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    with fsspec.open(url, "rb") as f:
        try:
            tar = tarfile.open(fileobj=f, mode="r:")
        except tarfile.TarError as exc:
            raise ValueError(f"shard {url!r} is not a tar file ({exc})") from exc
        with tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = sample_key(member.name)
                if key not in samples:
                    samples[key] = {}
                    order.append(key)
                entry = samples[key]
                if ext in IMAGE_EXTENSIONS and "image" not in entry:
                    entry["image"] = (ext, member.offset_data, member.size)
                elif label is not None and ext == label[0]:
                    handle = tar.extractfile(member)
                    assert handle is not None  # a regular file member
                    data = handle.read()
                    entry["label"] = _parse_label(data, ext, label[1], f"{url}:{member.name}")
    for key in order:
        entry = samples[key]
        if "image" not in entry:
            continue  # a key with no image member (metadata only): not a sample
        if label is not None and "label" not in entry:
            raise ValueError(
                f"{url}: sample {key!r} has no {label[0]!r} member; every sample needs its label "
                "(or pass class_mode=None / 'input' to read unlabelled shards)"
            )
        ext, offset, size = entry["image"]
        out["keys"].append(key)
        out["exts"].append(ext)
        out["shard"].append(number)
        out["offset"].append(offset)
        out["size"].append(size)
        out["label"].append(entry.get("label", 0))
    return out


def index_shards(urls: list[str], label: str | None = "cls") -> ShardIndex:
    """Reads every shard's tar headers (and label members) once: the `ShardIndex`.

    Up to 8 shards are read at once (threads: the time goes to waiting on storage). A tar
    interleaves headers with data, so on object storage this reads the shards whole.

    Args:
        urls: the shards (see :func:`expand_urls`).
        label: ``"cls"``, ``"json"`` (field ``"label"``), ``"json:<field>"``, or ``None`` (no
            labels).

    Raises:
        FileNotFoundError: a shard that does not exist (named).
        ValueError: a shard that is not a tar file, a sample without its label, a label that
            is not an int (named: shard and member), or shards with no image at all.
    """
    rule = None if label is None else _label_rule(label)
    with ThreadPoolExecutor(min(_INDEX_THREADS, len(urls))) as pool:
        stamps = list(pool.map(_stamp, urls))
        parts = list(pool.map(lambda a: _index_one(a[1], a[0], rule), enumerate(urls)))
    out = {k: [v for part in parts for v in part[k]] for k in _FIELDS}  # in shard order
    if not out["keys"]:
        raise ValueError(
            f"found no image member in {len(urls)} shard(s) ({urls[0]!r}, ...); image members "
            f"end in one of {', '.join('.' + e for e in IMAGE_EXTENSIONS)}"
        )
    return ShardIndex(
        urls,
        stamps,
        out["keys"],
        out["exts"],
        np.asarray(out["shard"], dtype=np.int32),
        np.asarray(out["offset"], dtype=np.int64),
        np.asarray(out["size"], dtype=np.int64),
        np.asarray(out["label"], dtype=np.int64),
    )


def _index_path(urls: list[str], label: str | None, cache_dir: Any) -> Path:
    text = json.dumps({"v": INDEX_VERSION, "urls": urls, "label": label})
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    return resolve_cache_dir(cache_dir) / "shards" / f"{digest}.json"


def load_index(
    urls: list[str], label: str | None, cache_dir: Any = None, use_cache: bool = True
) -> tuple[ShardIndex, bool]:
    """The shards' index from the cache when every shard's stamp still matches, else built
    (and saved). Returns ``(index, from_cache)``."""
    path = _index_path(urls, label, cache_dir) if use_cache else None
    if path is not None and path.exists():
        try:
            cached = ShardIndex.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, OSError):
            cached = None
        if cached is not None and cached.stamps == [_stamp(u) for u in urls]:
            return cached, True
    index = index_shards(urls, label)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(index.to_json()))
        os.replace(tmp, path)  # atomic: a rank reading it never sees half a file
    return index, False


class ShardDataset(torch.utils.data.Dataset):
    """Samples of WebDataset-layout tar shards, decoded and resized (uint8); see the module
    docstring. Implements the data set protocol of `gpuaug.loader.stages`.

    Args:
        urls: shard paths or fsspec URLs, a list or one string with brace ranges.
        target_size: ``(height, width)`` every image is resized to.
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"``.
        class_mode: ``"categorical"``, ``"binary"``, ``"sparse"``, ``"input"`` or ``None``
            (``"input"`` and ``None`` read no label).
        label: where a sample's class index is: ``"cls"`` (``key.cls``, an int as text,
            WebDataset's convention), ``"json"`` (``key.json``'s ``"label"``) or
            ``"json:<field>"``.
        classes: class names in index order (default ``"0"``, ``"1"``, ... up to the largest
            label found).
        interpolation: the resize filter (Keras name).
        on_error: ``"raise"`` or ``"skip"`` images that fail to decode (at load time).
        cache_dir: where the shard index is cached (default ``~/.cache/gpuaug``).
        index_cache: ``False`` indexes the shards again and writes no index.

    Attributes:
        index: the `ShardIndex`; index_from_cache: whether it came from the cache.
        samples: ``[("<url>:<member>", class_index), ...]`` (what messages name).
        targets, classes, class_to_idx, num_classes, root (``urls[0]`` and the count).

    Raises:
        ValueError, TypeError: a bad argument (named), an unreadable index (see
            :func:`index_shards`), a label outside ``classes``.
        FileNotFoundError: a missing shard.
    """

    def __init__(
        self,
        urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        target_size: tuple[int, int] = (256, 256),
        color_mode: str = "rgb",
        class_mode: str | None = "categorical",
        label: str = "cls",
        classes: Sequence[str] | None = None,
        interpolation: str = "nearest",
        on_error: str = "raise",
        cache_dir: str | os.PathLike[str] | None = None,
        index_cache: bool = True,
    ) -> None:
        from gpuaug.data.image import (
            _check_color_mode,
            _check_interpolation,
            _check_target_size,
        )

        self.target_size = _check_target_size(target_size)
        if self.target_size is None:
            raise ValueError("`target_size` must be a pair of ints (height, width); got None")
        _check_color_mode(color_mode)
        _check_interpolation(interpolation)
        if class_mode not in _CLASS_MODES:
            raise ValueError(
                "`class_mode` must be 'categorical', 'binary', 'sparse', 'input' or None; "
                f"got {class_mode!r}"
            )
        if on_error not in ("raise", "skip"):
            raise ValueError(f"`on_error` must be 'raise' or 'skip'; got {on_error!r}")
        self.urls = expand_urls(urls)
        labelled = class_mode not in ("input", None)
        self.label = label if labelled else None
        if labelled:
            _label_rule(label)
        self.index, self.index_from_cache = load_index(
            self.urls, self.label, cache_dir, use_cache=index_cache
        )
        self.color_mode = color_mode
        self.channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[color_mode]
        self.class_mode = class_mode
        self.interpolation = interpolation
        self.on_error = on_error
        self.keep_aspect_ratio = False
        self.draft = False
        top = int(self.index.label.max()) + 1 if len(self.index) else 0
        if classes is None:
            classes = [str(i) for i in range(max(top, 1))]
        self.classes = list(classes)
        if top > len(self.classes) or (labelled and int(self.index.label.min()) < 0):
            raise ValueError(
                f"the shards hold labels in [{int(self.index.label.min())}, {top - 1}] but "
                f"`classes` has {len(self.classes)} names"
            )
        if class_mode == "binary" and len(self.classes) != 2:
            raise ValueError(
                f"class_mode='binary' needs 2 classes; the shards have {len(self.classes)}"
            )
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.num_classes = len(self.classes)
        self.root = (
            self.urls[0] if len(self.urls) == 1 else f"{self.urls[0]} (+{len(self.urls) - 1})"
        )
        self.targets = self.index.label.tolist()
        self.samples = [
            (f"{self.urls[s]}:{k}.{e}", t)
            for s, k, e, t in zip(
                self.index.shard.tolist(),
                self.index.keys,
                self.index.exts,
                self.targets,
                strict=True,
            )
        ]
        self.filenames = [f"{k}.{e}" for k, e in zip(self.index.keys, self.index.exts, strict=True)]
        self._files: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.index)

    def counts(self) -> dict[str, int]:
        """Samples per class name."""
        found = np.bincount(self.index.label, minlength=self.num_classes)
        return {c: int(found[i]) for i, c in enumerate(self.classes)}

    def _file(self, shard: int) -> Any:
        import fsspec

        if self._pid != os.getpid():  # a forked worker: the parent's handles are not ours
            self._files, self._pid = {}, os.getpid()
        f = self._files.pop(shard, None)
        if f is None:
            if len(self._files) >= _OPEN_FILES:
                oldest = next(iter(self._files))
                self._files.pop(oldest).close()
            f = fsspec.open(self.urls[shard], "rb").open()
        self._files[shard] = f  # most recently used last
        return f

    def read_bytes(self, index: int) -> bytes:
        """The encoded image of sample ``index`` (one seek and one read in its shard)."""
        f = self._file(int(self.index.shard[index]))
        f.seek(int(self.index.offset[index]))
        return f.read(int(self.index.size[index]))

    def load(self, index: int) -> torch.Tensor:
        """Sample ``index`` decoded and resized: ``(C, H, W)`` uint8 CPU.

        Raises:
            ImageLoadError: naming ``<url>:<member>``.
        """
        name = self.samples[index][0]
        try:
            data = self.read_bytes(index)
        except OSError as exc:
            raise ImageLoadError(name, f"cannot read it from its shard ({exc})") from exc
        return load_image_bytes(data, name, self.target_size, self.color_mode, self.interpolation)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.load(index), self.targets[index]

    def file_manifest(self) -> list[list[Any]]:
        """What a disk cache of this data set is keyed by: each shard's stamp, then each
        sample's member, offset, size and label (`gpuaug.data.cache.file_manifest`)."""
        out: list[list[Any]] = [
            [u, s, 0, 0, 0, -1] for u, s in zip(self.urls, self.stamps, strict=True)
        ]
        rows = zip(self.samples, self.index.offset, self.index.size, strict=True)
        for (name, target), off, size in rows:
            out.append([name, int(size), int(off), 0, 0, int(target)])
        return out

    @property
    def stamps(self) -> list[str]:
        return self.index.stamps

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}  # open files do not travel to worker processes
        return state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} samples in {len(self.urls)} shard(s), "
            f"{self.num_classes} classes, target_size={self.target_size})"
        )


def write_shards(
    directory: str | os.PathLike[str],
    out: str | os.PathLike[str],
    samples_per_shard: int = 1000,
    prefix: str = "shard",
) -> list[Path]:
    """Writes a class folder (``directory/<class>/<image>``, as `gpuaug.DirectoryDataset`
    reads it) as WebDataset-layout tar shards: ``OUT/<prefix>-000000.tar``, ... each with
    ``<8-digit index>.<ext>`` (the file's bytes, not re-encoded) and ``<index>.cls`` (its class
    index), and ``OUT/classes.json`` (the class names in index order, for ``classes=``).

    Samples are written in the folder's sorted order (a loader shuffles them anyway).

    Returns:
        The shard paths, in order; ``f"{OUT}/{prefix}-{{000000..{last:06d}}}.tar"`` names them.

    Raises:
        ValueError: ``samples_per_shard`` < 1, or an empty folder.
        FileNotFoundError: a missing folder.
    """
    from gpuaug.data.directory import DirectoryDataset

    if isinstance(samples_per_shard, bool) or not isinstance(samples_per_shard, int):
        raise TypeError(f"`samples_per_shard` must be an int; got {samples_per_shard!r}")
    if samples_per_shard < 1:
        raise ValueError(f"`samples_per_shard` must be an int >= 1; got {samples_per_shard}")
    dataset = DirectoryDataset(directory, target_size=None, class_mode="sparse")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    tar = None
    for i, (path, target) in enumerate(dataset.samples):
        if i % samples_per_shard == 0:
            if tar is not None:
                tar.close()
            paths.append(folder / f"{prefix}-{len(paths):06d}.tar")
            tar = tarfile.open(paths[-1], "w", format=tarfile.USTAR_FORMAT)
        assert tar is not None  # opened at i = 0
        ext = Path(path).suffix.lstrip(".").lower() or "img"
        _add_member(tar, f"{i:08d}.{ext}", Path(path).read_bytes())
        _add_member(tar, f"{i:08d}.cls", str(int(target)).encode())
    if tar is not None:
        tar.close()
    (folder / "classes.json").write_text(json.dumps(list(dataset.classes)))
    return paths


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))
