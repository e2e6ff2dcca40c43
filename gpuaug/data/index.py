"""The file index of a `gpuaug.DirectoryDataset`: compact, checked on all cores, cached on disk.

A folder of a million images must not cost a minute and a gigabyte every time a loader is
built. This module holds the three parts that make it cheap:

- **Compact samples.** :class:`SampleList` keeps ``(path, class_index)`` pairs in a few numpy
  arrays (file names in one byte buffer, a folder index and a class index per sample) instead
  of one tuple, one path string and one int object per sample: about 30 bytes per sample
  instead of about 200, and nothing that worker processes' reference counting copies page
  by page. ``samples[i]`` still gives ``(path, class_index)``; ``len``, iteration, slicing
  and ``==`` against a list work as on the list it replaces. :class:`TargetList` does the
  same for the class indices (``targets.array`` is the int32 array, no copy).
- **Header checks on every core.** :func:`check_files` runs ``check_image_header`` (or the
  full decode) in chunks of 2048 files: in threads for small jobs, in a process pool
  (``fork``, Linux) from 20,000 files, falling back to threads if a child dies. PIL parses a
  JPEG header in Python (``JpegImagePlugin._open``: about 60% of the ~50 us a file, profiled)
  under the GIL, so threads do not help with files in the page cache (measured: 50,000 files,
  serial 5.32 s, threads 5.35 s); processes can scale with free cores (they could not on the
  2-core, fully loaded dev box: 5.30 s; see ``benchmarks/results/index_scale.md``). Threads
  still help where opening a file waits on the network (NFS).
- **An index cache.** The walk of the class folders and the check results are stored under
  ``<gpuaug cache dir>/index/`` (see :func:`gpuaug.data.cache.default_cache_dir`), keyed on the
  real path of the root, the classes asked for, the extensions and the link/hidden settings.
  It is valid while every folder the walk visited (the root, each class folder and each
  sub-folder) has the ``mtime_ns`` it had then: adding, removing or renaming a file or a
  folder changes its parent folder's mtime, so one ``stat`` per *folder* (not per file)
  proves the listing unchanged. What this does not see: a file rewritten in place under the
  same name (its folder's mtime stays). Its header check result is then reused; a file that
  became unreadable is still reported when it is loaded (``ImageLoadError``, or skipped with
  ``on_error="skip"``). A listing whose folders changed less than two seconds before the walk
  is not cached (a coarse-mtime file system could hide a later change, as git's "racily
  clean" rule). A ``verify="full"`` result is stored whatever the colour mode (a file
  that decodes converts to every mode). Files are replaced atomically (a temporary file,
  then ``os.replace``), so concurrent writers and readers are safe; a file that fails to
  load or to check is ignored and rewritten.

Why one module (over 600 lines): the compact sample list, the parallel header check and the
on-disk cache are one index format, written and read by the same few functions.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, overload

import numpy as np

__all__ = [
    "INDEX_CACHE_MIN_FILES",
    "FolderListing",
    "SampleList",
    "TargetList",
    "check_files",
    "list_folders",
    "load_listing",
    "save_listing",
]

#: Listings of at least this many files are cached by default (``index_cache=None``).
INDEX_CACHE_MIN_FILES = 10_000
#: Format of the index cache files; older ones are rebuilt.
INDEX_CACHE_VERSION = 1
#: A folder modified less than this long before the walk makes the listing uncacheable.
_RACY_NS = 2_000_000_000
#: Files per check task, and the file count from which processes are used instead of threads.
_CHUNK = 2048
_PROCESS_MIN_FILES = 20_000

# Per-file check states stored in the index cache.
UNCHECKED, HEADER_OK, FULL_OK, FULL_BAD, HEADER_BAD = 0, 1, 2, 3, 4


# ----------------------------------------------------------------------------- compact views


def _encode_names(names: Sequence[str]) -> tuple[bytes, np.ndarray]:
    """File names -> one NUL-separated byte buffer and the start of each name (n + 1 starts)."""
    if not names:
        return b"", np.zeros(1, dtype=np.int64)
    blob = os.fsencode("\0".join(names)) + b"\0"
    ends = np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 0)
    starts = np.empty(len(ends) + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends + 1
    return blob, starts


class TargetList(Sequence[int]):
    """Read-only class indices backed by an int32 array; compares equal to a list of ints.

    ``targets.array`` is the stored int32 array (no copy); ``numpy.asarray(targets)`` and
    ``torch.tensor(targets)`` give int64, as a list of ints would; indexing gives Python ints.
    """

    def __init__(self, array: np.ndarray) -> None:
        self._array = np.asarray(array, dtype=np.int32)
        self._array.flags.writeable = False

    def __len__(self) -> int:
        return len(self._array)

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> list[int]: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._array[index].tolist()
        return int(self._array[index])

    def __iter__(self) -> Iterator[int]:
        return iter(self._array.tolist())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        # int64, as a list of Python ints converts (torch.tensor(targets) -> int64, as one_hot
        # and cross_entropy want); the stored array stays int32.
        return self._array.astype(np.int64 if dtype is None else dtype)

    @property
    def array(self) -> np.ndarray:
        """The stored read-only int32 array (no copy)."""
        return self._array

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TargetList):
            return bool(np.array_equal(self._array, other._array))
        if isinstance(other, Sequence | np.ndarray) and not isinstance(other, str):
            return len(other) == len(self) and self._array.tolist() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        more = ", ..." if len(self) > 8 else ""
        return f"TargetList({self._array[:8].tolist()}{more}, n={len(self)})"


class SampleList(Sequence[tuple[str, int]]):
    """Read-only ``(path, class_index)`` pairs, stored as arrays (about 30 bytes a sample).

    Behaves as the list of tuples it replaces: ``samples[i] -> (path, class_index)``, ``len``,
    iteration, ``samples[a:b]`` (a list), ``==`` against a list or another ``SampleList``.
    Paths are ``os.path.join(folder, name)`` with the folder as the walk gave it (relative
    when the data set's root is).

    Attributes:
        folders: the distinct folders, ``folder_index`` points into it.
        folder_index: ``(n,)`` int32. starts: ``(n + 1,)`` int64 byte offsets into ``names``.
        names: the file names, NUL-terminated, file-system encoded. targets: ``(n,)`` int32.
    """

    def __init__(
        self,
        folders: Sequence[str],
        folder_index: np.ndarray,
        names: bytes,
        starts: np.ndarray,
        targets: np.ndarray,
    ) -> None:
        self.folders = list(folders)
        self.folder_index = np.asarray(folder_index, dtype=np.int32)
        self.names = bytes(names)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.int32)
        n = len(self.folder_index)
        if len(self.targets) != n or len(self.starts) != n + 1:
            raise ValueError(
                f"a SampleList needs n folder indices, n targets and n + 1 name starts; got "
                f"{n}, {len(self.targets)} and {len(self.starts)}"
            )
        for array in (self.folder_index, self.starts, self.targets):
            array.flags.writeable = False

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, int]]) -> SampleList:
        """A ``SampleList`` of ``(path, class_index)`` pairs (paths split at the last sep)."""
        folders: dict[str, int] = {}
        folder_index, names, targets = [], [], []
        for path, target in pairs:
            folder, name = os.path.split(path)
            folder_index.append(folders.setdefault(folder, len(folders)))
            names.append(name)
            targets.append(int(target))
        blob, starts = _encode_names(names)
        return cls(list(folders), np.array(folder_index), blob, starts, np.array(targets))

    def __len__(self) -> int:
        return len(self.folder_index)

    def path(self, index: int) -> str:
        """The path of sample ``index``."""
        start, stop = self.starts[index], self.starts[index + 1] - 1
        name = os.fsdecode(self.names[start:stop])
        return os.path.join(self.folders[self.folder_index[index]], name)

    @overload
    def __getitem__(self, index: int) -> tuple[str, int]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[str, int]]: ...
    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sample index {index} out of range for {n} samples")
        index %= n
        return self.path(index), int(self.targets[index])

    def paths(self) -> list[str]:
        """Every path, in order (one string per sample: for small jobs and tests)."""
        return [p for p, _ in self]

    def paths_at(self, indices: np.ndarray) -> list[str]:
        """The paths of the samples at ``indices`` (the names buffer is split once)."""
        names = os.fsdecode(self.names).split("\0")
        join, folders, fidx = os.path.join, self.folders, self.folder_index.tolist()
        return [join(folders[fidx[i]], names[i]) for i in np.asarray(indices).tolist()]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        names = os.fsdecode(self.names).split("\0")[:-1]  # the buffer ends with a NUL
        join, folders = os.path.join, self.folders
        for name, f, t in zip(
            names, self.folder_index.tolist(), self.targets.tolist(), strict=True
        ):
            yield join(folders[f], name), t

    def take(self, indices: np.ndarray) -> SampleList:
        """A new ``SampleList`` of the samples at ``indices`` (int array or bool mask), in order."""
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        indices = indices.astype(np.int64, copy=False)
        lengths = self.starts[indices + 1] - self.starts[indices]
        starts = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        source = np.frombuffer(self.names, dtype=np.uint8)
        offset = np.repeat(self.starts[indices] - starts[:-1], lengths)
        gathered = source[offset + np.arange(int(starts[-1]), dtype=np.int64)]
        return SampleList(
            self.folders,
            self.folder_index[indices],
            gathered.tobytes(),
            starts,
            self.targets[indices],
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SampleList):
            return len(self) == len(other) and list(self) == list(other)
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and list(self) == [tuple(o) for o in other]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays and the name buffer (not the few folder strings)."""
        return (
            len(self.names)
            + self.folder_index.nbytes
            + self.starts.nbytes
            + self.targets.nbytes
            + sum(sys.getsizeof(f) for f in self.folders)
        )

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self[:2])
        return f"SampleList([{head}{', ...' if len(self) > 2 else ''}], n={len(self)})"


# ----------------------------------------------------------------------------- the walk


@dataclass
class FolderListing:
    """Every image file of the class folders, in Keras' order, and how to tell it is current.

    Attributes:
        classes: class names in index order.
        samples: every file of every class (before subsets and checks), class by class.
        class_starts: ``(K + 1,)`` int64: class ``k`` is ``samples[class_starts[k]:
            class_starts[k + 1]]``.
        stamps: ``{folder (relative to the root, "." for it): mtime_ns}`` of every folder
            visited.
        state: ``(n,)`` uint8 check state per file (UNCHECKED ... HEADER_BAD).
        reasons: ``{file index: reason}`` for the files found bad.
        cacheable: False when a folder changed too recently to trust its mtime.
    """

    classes: list[str]
    samples: SampleList
    class_starts: np.ndarray
    stamps: dict[str, int]
    state: np.ndarray
    reasons: dict[int, str] = field(default_factory=dict)
    cacheable: bool = True

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.class_starts)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk_class(
    top: str, follow_links: bool, include_hidden: bool, stamps: dict[str, int], root: str
) -> list[tuple[str, list[str]]]:
    """``[(dirpath, filenames)]`` of ``os.walk(top)``; link cycles and hidden folders cut;
    records each folder's mtime in ``stamps``."""
    out = []
    ancestors: dict[str, frozenset[str]] = {top: frozenset()}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=follow_links):
        try:
            stamps[os.path.relpath(dirpath, root)] = os.stat(dirpath).st_mtime_ns
        except OSError:
            stamps[os.path.relpath(dirpath, root)] = -1
        keep = dirnames if include_hidden else [d for d in dirnames if not _is_hidden(d)]
        if follow_links:
            chain = ancestors.pop(dirpath, frozenset()) | {os.path.realpath(dirpath)}
            uncut = []
            for d in keep:
                child = os.path.join(dirpath, d)
                if os.path.realpath(child) not in chain:  # a link back to an ancestor: a cycle
                    uncut.append(d)
                    ancestors[child] = chain
            keep = uncut
        dirnames[:] = keep
        out.append((dirpath, filenames))
    out.sort(key=lambda t: t[0])  # Keras: sorted(os.walk(...), key=lambda x: x[0])
    return out


def list_folders(
    root: str,
    classes: Sequence[str],
    extensions: tuple[str, ...],
    follow_links: bool,
    include_hidden: bool,
) -> FolderListing:
    """Walk the class folders of ``root`` in Keras' order (see `gpuaug.data.directory`).

    Args:
        root: the root folder (as given: paths are joined to it).
        classes: class folder names in index order.
        extensions: lower-case suffixes with the dot (``(".png", ...)``).
        follow_links: descend into linked folders (cycles cut).
        include_hidden: also descend into sub-folders whose name starts with ``"."``.
    """
    started = time.time_ns()
    stamps: dict[str, int] = {".": os.stat(root).st_mtime_ns}
    folders: list[str] = []
    folder_index: list[np.ndarray] = []
    names: list[str] = []
    targets: list[np.ndarray] = []
    class_starts = [0]
    for k, name in enumerate(classes):
        count = 0
        for dirpath, filenames in _walk_class(
            os.path.join(root, name), follow_links, include_hidden, stamps, root
        ):
            kept = sorted(f for f in filenames if f.lower().endswith(extensions))
            if not kept:
                continue
            folder_index.append(np.full(len(kept), len(folders), dtype=np.int32))
            folders.append(dirpath)
            names.extend(kept)
            count += len(kept)
        targets.append(np.full(count, k, dtype=np.int32))
        class_starts.append(class_starts[-1] + count)
    blob, starts = _encode_names(names)
    samples = SampleList(
        folders,
        np.concatenate(folder_index) if folder_index else np.zeros(0, np.int32),
        blob,
        starts,
        np.concatenate(targets) if targets else np.zeros(0, np.int32),
    )
    newest = max(stamps.values())
    return FolderListing(
        classes=list(classes),
        samples=samples,
        class_starts=np.array(class_starts, dtype=np.int64),
        stamps=stamps,
        state=np.zeros(len(samples), dtype=np.uint8),
        cacheable=newest < started - _RACY_NS,
    )


# ----------------------------------------------------------------------------- checks


def _check_chunk(paths: Sequence[str], verify: str, color_mode: str) -> list[tuple[int, str]]:
    """``[(position, reason)]`` of the files of ``paths`` that fail the check."""
    from PIL import Image

    from gpuaug.data.image import ImageLoadError, check_image_header, decode_check

    check = (
        check_image_header if verify == "header" else partial(decode_check, color_mode=color_mode)
    )
    bad = []
    with warnings.catch_warnings():
        # Bombs become ImageLoadError; silence PIL's own warning for those it only warns about.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for i, path in enumerate(paths):
            try:
                check(path)
            except ImageLoadError as exc:
                bad.append((i, exc.reason or str(exc)))
    return bad


def _pool(n_files: int, workers: int | None, executor: str) -> tuple[Executor | None, int]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = workers or min(32, cores or 1)
    if executor == "auto":
        # fork only on Linux: macOS lists it but forking there can crash system frameworks.
        can_fork = sys.platform.startswith("linux")
        executor = "process" if can_fork and n_files >= _PROCESS_MIN_FILES else "thread"
    if workers <= 1 or n_files <= _CHUNK or executor == "serial":
        return None, 1
    if executor == "process":
        # fork: the children need nothing but PIL and the paths; spawn would re-import torch.
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")), workers
    return ThreadPoolExecutor(workers), workers


def check_files(
    paths: Sequence[str],
    verify: str,
    color_mode: str = "rgb",
    *,
    workers: int | None = None,
    executor: str = "auto",
) -> dict[int, str]:
    """``{position: reason}`` for the files of ``paths`` that fail the ``verify`` check.

    Args:
        paths: the files.
        verify: ``"header"`` (PIL reads the header), ``"full"`` (decode every pixel) or
            ``"none"``.
        color_mode: the colour mode a ``"full"`` check converts to.
        workers: parallel workers (default: the usable cores, at most 32).
        executor: ``"auto"`` (processes from 20,000 files where ``fork`` exists, else threads),
            ``"process"``, ``"thread"`` or ``"serial"``.
    """
    if verify == "none" or not len(paths):
        return {}
    if executor not in ("auto", "process", "thread", "serial"):
        raise ValueError(
            f"`executor` must be 'auto', 'process', 'thread' or 'serial'; got {executor!r}"
        )
    pool, workers = _pool(len(paths), workers, executor)
    run = partial(_check_chunk, verify=verify, color_mode=color_mode)
    if pool is None:
        return dict(run(paths))
    chunks = [list(paths[i : i + _CHUNK]) for i in range(0, len(paths), _CHUNK)]
    out: dict[int, str] = {}
    try:
        with pool:
            with warnings.catch_warnings():
                # Python >= 3.12 warns about fork() in a process with threads; the children
                # only read file headers with PIL and exit, they never touch those locks.
                warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
                results = list(pool.map(run, chunks))
    except BrokenProcessPool:  # a child killed (memory limits, seccomp...): use threads
        with ThreadPoolExecutor(workers or 1) as threads:
            results = list(threads.map(run, chunks))
    for c, bad in enumerate(results):
        out.update((c * _CHUNK + i, reason) for i, reason in bad)
    return out


def verify_listing(
    listing: FolderListing,
    indices: np.ndarray,
    verify: str,
    color_mode: str,
    *,
    workers: int | None = None,
    executor: str = "auto",
) -> tuple[dict[int, str], bool]:
    """Check the files at ``indices`` whose state does not answer ``verify`` yet.

    Returns:
        ``({file index: reason}, changed)`` for the bad files among ``indices``; ``changed``
        says whether the states were updated (the cache should be rewritten).
    """
    if verify == "none" or len(indices) == 0:
        return {}, False
    state = listing.state
    # A full-check failure does not say whether the header alone would pass: recheck it.
    answered = (
        (HEADER_OK, FULL_OK, HEADER_BAD)
        if verify == "header"
        else (
            FULL_OK,
            FULL_BAD,
            HEADER_BAD,
        )
    )
    todo = indices[~np.isin(state[indices], answered)]
    changed = len(todo) > 0
    if changed:
        samples = listing.samples
        bad = check_files(
            samples.paths_at(todo) if len(todo) > 64 else [samples.path(int(i)) for i in todo],
            verify,
            color_mode,
            workers=workers,
            executor=executor,
        )
        state[todo] = HEADER_OK if verify == "header" else FULL_OK
        for pos, reason in bad.items():
            index = int(todo[pos])
            state[index] = HEADER_BAD if verify == "header" else FULL_BAD
            listing.reasons[index] = reason
    bad_states = (HEADER_BAD,) if verify == "header" else (FULL_BAD, HEADER_BAD)
    found = indices[np.isin(state[indices], bad_states)]
    return {int(i): listing.reasons.get(int(i), "unreadable") for i in found}, changed


# ----------------------------------------------------------------------------- the cache


def listing_key(
    root: str,
    classes: Sequence[str],
    extensions: Sequence[str],
    follow_links: bool,
    include_hidden: bool,
) -> str:
    """The file stem of a listing's cache: the root's folder name and a hash of the settings."""
    settings = {
        "version": INDEX_CACHE_VERSION,
        "root": os.path.realpath(root),
        "as_given": root,  # paths in the listing are joined to the root as given
        "classes": list(classes),
        "extensions": sorted(extensions),
        "follow_links": follow_links,
        "include_hidden": include_hidden,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    name = Path(os.path.realpath(root)).name or "root"
    return f"{name}-{digest}"


def _stamps_match(root: str, stamps: dict[str, int]) -> bool:
    for rel, mtime in stamps.items():
        try:
            if os.stat(os.path.join(root, rel)).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True


def load_listing(path: Path, root: str) -> FolderListing | None:
    """The cached listing at ``path`` if it loads, is consistent and its folders are unchanged;
    else ``None`` (a missing, corrupt, foreign or stale file is never an error)."""
    try:
        # Opened here, not by np.load: np.load leaves its handle open when a damaged zip
        # makes it raise.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode("utf-8"))
            arrays = {k: data[k] for k in ("folder_index", "starts", "names", "targets", "state")}
            class_starts = data["class_starts"]
        if meta.get("version") != INDEX_CACHE_VERSION:
            return None
        stamps = {str(k): int(v) for k, v in meta["stamps"].items()}
        if not _stamps_match(root, stamps):
            return None
        samples = SampleList(
            [str(f) for f in meta["folders"]],
            arrays["folder_index"],
            arrays["names"].tobytes(),
            arrays["starts"],
            arrays["targets"],
        )
        n, k = len(samples), len(meta["classes"])
        state = np.array(arrays["state"], dtype=np.uint8)
        class_starts = np.asarray(class_starts, dtype=np.int64)
        consistent = (
            len(state) == n
            and class_starts.shape == (k + 1,)
            and class_starts[0] == 0
            and class_starts[-1] == n
            and bool(np.all(np.diff(class_starts) >= 0))
            and samples.starts[0] == 0
            and samples.starts[-1] == len(samples.names)
            and bool(np.all(np.diff(samples.starts) >= 1))
            and (
                n == 0
                or (
                    0 <= samples.folder_index.min()
                    and samples.folder_index.max() < len(samples.folders)
                )
            )
            and bool(np.all(state <= HEADER_BAD))
            and bool(
                np.array_equal(samples.targets, np.repeat(np.arange(k), np.diff(class_starts)))
            )
        )
        if not consistent:
            return None
        reasons = {int(i): str(r) for i, r in meta["reasons"].items()}
        if any(not 0 <= i < n for i in reasons):
            return None
        return FolderListing(
            classes=[str(c) for c in meta["classes"]],
            samples=samples,
            class_starts=class_starts,
            stamps=stamps,
            state=state,
            reasons=reasons,
        )
    except Exception:  # any damage (truncated zip, bad JSON, wrong dtype...): rebuild
        return None


def save_listing(path: Path, listing: FolderListing) -> None:
    """Write ``listing`` to ``path`` atomically (a unique temporary file, then ``os.replace``)."""
    samples = listing.samples
    meta = {
        "version": INDEX_CACHE_VERSION,
        "classes": listing.classes,
        "folders": samples.folders,
        "stamps": listing.stamps,
        "reasons": {str(i): r for i, r in listing.reasons.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    unique = f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
    tmp = path.with_name(f"{path.name}.tmp-{unique}")
    try:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                folder_index=samples.folder_index,
                starts=samples.starts,
                names=np.frombuffer(samples.names, dtype=np.uint8),
                targets=samples.targets,
                state=listing.state,
                class_starts=listing.class_starts,
            )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
