"""``LoaderConfig``: how a `gpuaug.GPULoader` batches, orders, caches and decodes."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch

from gpuaug.data.cache import CACHE_KINDS
from gpuaug.data.nvjpeg import DECODERS
from gpuaug.data.pixel_layout import LAYOUT_CHOICES
from gpuaug.device import resolve_device

__all__ = ["DTYPES", "LoaderConfig", "dtype_name", "resolve_device"]

#: ``LoaderConfig.dtype`` names -> torch dtypes.
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def _default_num_workers() -> int:
    return min(4, os.cpu_count() or 1)


def _check_int_or_none(name: str, value: Any, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int or None; got {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum} or None; got {value!r}")


@dataclass(frozen=True)
class LoaderConfig:
    """How a :class:`GPULoader` batches, orders, caches and decodes (no augmentation here).

    Args:
        batch_size: samples per batch.
        shuffle: a new random order every pass (else file order every pass).
        seed: base seed of the order and the augmentation; ``None``: drawn at random when the
            loader is made (then in ``loader.seed`` and ``describe()``); under
            torch.distributed every rank gets the same one, agreed through the process group's
            store without a collective (pass the same int on every rank to rely on nothing).
        steps_per_epoch: batches per epoch; ``None``: one pass over the data. Passes continue
            across epoch boundaries, so no image is dropped or repeated within a pass.
        drop_last: drop the short last batch of each pass.
        num_workers: decoding worker processes; ``None``: ``min(4, os.cpu_count())``; 0 decodes
            in the main process. Workers stay alive between epochs.
        prefetch_factor: batches decoded ahead per worker.
        timeout: seconds to wait for a worker's batch before raising (0: wait for ever; a dead
            worker is detected either way).
        cache: ``None``, ``"device"``, ``"host"`` or ``"disk"`` (see `gpuaug.data.cache`).
        cache_dir: folder of a ``"disk"`` cache (default ``~/.cache/gpuaug``).
        decode: ``"cpu"`` (PIL in the workers) or ``"gpu"`` (nvJPEG; needs CUDA).
        device: where batches are augmented and returned; ``None``: ``"cuda"`` if available,
            else ``"cpu"``. ``"cuda"`` without an index is ``cuda:LOCAL_RANK`` under torchrun
            when ``set_device`` was not called (see `gpuaug.device.cuda_index`), else the
            current CUDA device. Under DDP pass
            ``f"cuda:{local_rank}"``: everything the loader allocates (streams, pinned
            buffers, the pin-memory thread) goes to that device, no ``set_device`` needed.
        dtype: the output float dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        progress: show a progress bar while a cache is built.
        num_replicas: the distributed world's size; ``None``: from ``torch.distributed``
            when initialised, else 1.
        rank: this process's rank; ``None``: from ``torch.distributed`` when initialised,
            else 0.
        augment_seed: base seed of the augmentation alone; ``None``: ``seed`` (which then
            seeds both the order and the augmentation).
        cache_per_rank: under several ranks, each rank keeps a fixed share of the samples
            for the whole run and caches only that share (``1 / num_replicas`` of the decode
            work and memory of a full cache), as DALI's ``stick_to_shard``: every pass is
            shuffled *within* each rank's share, samples never move between ranks (see
            `gpuaug.loader.sampler`). Needs ``cache``.
        layout: how the uint8 batches' pixels lie in memory (`gpuaug.data.pixel_layout`):
            ``"planar"`` (``(B, C, H, W)`` contiguous), ``"rgbx"`` (each pixel's R, G, B and a
            padding byte in one 4-byte word, which the fused Triton kernel reads with one
            load per tap: 4/3 the bytes over PCIe and in a cache; 3-channel images only) or
            ``"auto"``: RGBX where it is modelled to pay, planar elsewhere (see
            `gpuaug.loader.stages.layout`; ``describe()`` says which and why). The values
            of the batches do not depend on it.

    Raises:
        ValueError: a value out of range or not among the allowed ones.
        TypeError: a value of the wrong type.
    """

    batch_size: int = 32
    shuffle: bool = True
    seed: int | None = None
    steps_per_epoch: int | None = None
    drop_last: bool = False
    num_workers: int | None = None
    prefetch_factor: int = 2
    timeout: float = 0.0
    cache: str | None = None
    cache_dir: str | None = None
    decode: str = "cpu"
    device: str | None = None
    dtype: str = "float32"
    progress: bool = True
    num_replicas: int | None = None
    rank: int | None = None
    augment_seed: int | None = None
    cache_per_rank: bool = False
    layout: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise TypeError(f"`batch_size` must be an int; got {self.batch_size!r}")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1; got {self.batch_size!r}")
        for name in ("shuffle", "drop_last", "progress", "cache_per_rank"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool; got {getattr(self, name)!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise TypeError(f"`seed` must be an int or None; got {self.seed!r}")
        if self.augment_seed is not None and (
            isinstance(self.augment_seed, bool) or not isinstance(self.augment_seed, int)
        ):
            raise TypeError(f"`augment_seed` must be an int or None; got {self.augment_seed!r}")
        _check_int_or_none("steps_per_epoch", self.steps_per_epoch, 1)
        _check_int_or_none("num_workers", self.num_workers, 0)
        _check_int_or_none("prefetch_factor", self.prefetch_factor, 1)
        _check_int_or_none("num_replicas", self.num_replicas, 1)
        _check_int_or_none("rank", self.rank, 0)
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float):
            raise TypeError(f"`timeout` must be a number of seconds; got {self.timeout!r}")
        if self.timeout < 0:
            raise ValueError(f"`timeout` must be >= 0 seconds; got {self.timeout!r}")
        if self.cache not in (*CACHE_KINDS, None):
            raise ValueError(
                f"`cache` must be 'device', 'host', 'disk' or None; got {self.cache!r}"
            )
        if self.cache_per_rank and self.cache is None:
            raise ValueError(
                "`cache_per_rank`=True caches each rank's share: it needs `cache` "
                "('device', 'host' or 'disk'); got cache=None"
            )
        if self.cache_dir is not None and not isinstance(self.cache_dir, str | os.PathLike):
            raise TypeError(f"`cache_dir` must be a path or None; got {self.cache_dir!r}")
        if self.decode not in DECODERS:
            raise ValueError(f"`decode` must be 'cpu' or 'gpu'; got {self.decode!r}")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as exc:
                raise ValueError(f"`device` must name a torch device; got {self.device!r}") from exc
        if self.layout not in LAYOUT_CHOICES:
            raise ValueError(
                f"`layout` must be one of {', '.join(map(repr, LAYOUT_CHOICES))}; "
                f"got {self.layout!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(
                f"`dtype` must be one of {', '.join(map(repr, DTYPES))}; got {self.dtype!r}"
            )

    @property
    def workers(self) -> int:
        """``num_workers`` with ``None`` resolved."""
        return _default_num_workers() if self.num_workers is None else self.num_workers

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (YAML/JSON-ready)."""
        out = dataclasses.asdict(self)
        if out["cache_dir"] is not None:
            out["cache_dir"] = os.fspath(out["cache_dir"])
        return out

    @classmethod
    def from_arguments(
        cls,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        **fields: Any,
    ) -> LoaderConfig:
        """A config from a factory's user-facing arguments (``flow_from_directory`` and the
        other ``flow_*`` functions): a path-like ``cache_dir``, a ``torch.device`` and a
        ``torch.dtype`` become the stored forms; every other field is passed as is.

        Raises:
            TypeError: ``dtype`` not a torch.dtype; as the constructor otherwise.
        """
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"`dtype` must be a torch.dtype; got {dtype!r}")
        return cls(
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
            device=str(device) if device is not None else None,
            dtype=dtype_name(dtype),
            **fields,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoaderConfig:
        """The inverse of :meth:`to_dict`; unknown keys are a ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown LoaderConfig field(s): {', '.join(unknown)}")
        return cls(**data)


def dtype_name(dtype: torch.dtype) -> str:
    """The `LoaderConfig.dtype` name of a torch dtype (``torch.float16`` -> ``"float16"``)."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(
        f"`dtype` must be torch.float32, torch.float16 or torch.bfloat16; got {dtype!r}"
    )
