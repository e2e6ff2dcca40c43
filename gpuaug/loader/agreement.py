"""Under torch.distributed: every rank must see the same data and seed, or the shards overlap.

A loader checks it once, at its first batch, through the process group's key-value store and
never with a collective (a loader made on some ranks only cannot deadlock, and nothing runs on
the per-batch path). Each rank writes what defines its shards (data set size, a digest of the
file list, seed, batch size, steps) under a key that names the loader by ``shuffle``,
``drop_last``, the world size and how many such loaders this process made before; then it
reads the entries the other ranks have written so far and raises, naming the rank that
differs. For any two ranks
the one that writes second reads the other's entry (each writes before it reads), so a
difference is always found, by at least one rank, without any rank waiting.

The digest is of the file names relative to the data set's root (the first, middle and last
sample) and of the class names: ranks that mount the same data at different paths agree.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from gpuaug.loader.sampler import _process_group_store

__all__ = [
    "RankMismatchError",
    "check_rank_agreement",
    "check_ranks",
    "data_digest",
    "loader_slot",
    "rank_slot",
]

_COUNTS: dict[str, int] = {}


class RankMismatchError(ValueError):
    """Two ranks of one torch.distributed job built the same loader over different data or
    with different seeds (their shards would overlap silently)."""


def _relative(path: str, root: str) -> str:
    if not root:
        return os.path.basename(path)
    try:
        return os.path.relpath(path, root).replace(os.sep, "/")
    except ValueError:  # another drive (Windows)
        return os.path.basename(path)


def data_digest(dataset: Any) -> str:
    """A short digest of what a data set holds: its size, class names and a few file names
    relative to its root (cheap for a million files: three names are read)."""
    n = len(dataset)
    parts: list[str] = [str(n)]
    parts += sorted(map(str, getattr(dataset, "class_to_idx", {}) or {}))
    samples = getattr(dataset, "samples", None)
    root = str(getattr(dataset, "root", "") or "")
    if samples is not None and n:
        for i in sorted({0, n // 2, n - 1}):
            parts.append(_relative(str(samples[i][0]), root))
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def loader_slot(settings: tuple[object, ...]) -> str:
    """The store key of a new loader with these settings in this process (settings plus the
    number of such loaders made before): the same on every rank that builds its loaders in
    the same order."""
    name = "-".join(map(str, settings))
    count = _COUNTS.get(name, 0)
    _COUNTS[name] = count + 1
    return f"gpuaug/check/{name}/{count}"


def _describe_difference(mine: dict[str, Any], theirs: dict[str, Any]) -> str:
    labels = {
        "num_samples": "data set size",
        "digest": "file list digest",
        "seed": "seed",
        "batch_size": "batch size",
        "steps_per_epoch": "steps per epoch",
    }
    diffs = [
        f"{label} {theirs.get(key)!r} there, {mine.get(key)!r} here"
        for key, label in labels.items()
        if mine.get(key) != theirs.get(key)
    ]
    return "; ".join(diffs)


def check_ranks(store: Any, slot: str, rank: int, world: int, mine: dict[str, Any]) -> None:
    """Writes this rank's entry under ``slot`` and compares it with the ranks' entries there.

    Args:
        store: the process group's store (``set``, ``check``, ``get``).
        slot: the loader's key (:func:`loader_slot`).
        rank, world: this rank and the world size.
        mine: this rank's ``num_samples``, ``digest``, ``seed``, ``batch_size``,
            ``steps_per_epoch``.

    Raises:
        RankMismatchError: another rank wrote a different entry; the message names it.
    """
    store.set(f"{slot}/{rank}", json.dumps(mine, sort_keys=True))
    for other in range(world):
        if other == rank:
            continue
        key = f"{slot}/{other}"
        if not store.check([key]):  # not there yet: that rank reads ours when it arrives
            continue
        theirs = json.loads(store.get(key))
        if theirs != mine:
            raise RankMismatchError(
                f"rank {other} and rank {rank} built this loader differently: "
                f"{_describe_difference(mine, theirs)}. Their shards would overlap or miss "
                "samples. Give every rank the same data set and the same seed (or seed=None, "
                "agreed across ranks), and build the loaders in the same order on every rank "
                "(loaders are matched by shuffle, drop_last and the order they were made in: a "
                "loader with this loader's shuffle and drop_last made before it on some ranks "
                "only shifts the match; make it after, or with other settings)"
            )


def rank_slot(sampler: Any) -> str | None:
    """The key a loader with this sampler checks its ranks under (:func:`loader_slot`), or
    ``None`` outside a torch.distributed job of several ranks (nothing to check)."""
    import torch.distributed as dist

    if sampler.num_replicas < 2 or not (dist.is_available() and dist.is_initialized()):
        return None
    # Only settings a rank cannot get wrong without the others noticing anyway: the size, the
    # batch size and the steps are what the check compares, so they must not pick the key.
    return loader_slot((sampler.shuffle, sampler.drop_last, sampler.num_replicas))


def check_rank_agreement(sampler: Any, slot: str, digest: str) -> None:
    """:func:`check_ranks` for a loader's sampler, through the default process group's store
    (nothing when there is no store to reach).

    Raises:
        RankMismatchError: another rank's loader differs (named in the message).
    """
    store = _process_group_store()
    if store is None:
        return
    mine = {
        "num_samples": int(sampler.num_samples),
        "digest": digest,
        "seed": int(sampler.seed),
        "batch_size": int(sampler.batch_size),
        "steps_per_epoch": int(sampler.steps_per_epoch),
    }
    check_ranks(store, slot, sampler.rank, sampler.num_replicas, mine)
