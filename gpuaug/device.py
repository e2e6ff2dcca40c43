"""Host-to-device copies that never make the host wait (`host_to_device`, `PinnedStaging` for
a copy repeated every batch), which CUDA device ``"cuda"`` means, and whether the host can read
a tensor for free."""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any, TypeVar

import torch

__all__ = [
    "PinnedStaging",
    "cuda_index",
    "host_reads_free",
    "host_to_device",
    "params_to_device",
    "resolve_device",
]

_P = TypeVar("_P")


def cuda_index(local_rank: str | None, current: int, count: int) -> tuple[int, str | None]:
    """The CUDA device index ``"cuda"`` (no index) stands for, and a warning to give, if any.

    Under ``torchrun`` without ``torch.cuda.set_device`` every process's current device is 0,
    so ``"cuda"`` would put every rank of a node on GPU 0. The rule:

    - no ``LOCAL_RANK`` (not launched by torchrun): the current device;
    - the current device is not 0 (``set_device`` was called): the current device;
    - ``LOCAL_RANK`` < the visible device count: ``LOCAL_RANK``;
    - otherwise (one GPU visible per process, ``CUDA_VISIBLE_DEVICES`` set by the launcher):
      the current device, with a warning only when several GPUs are visible.

    Args:
        local_rank: the ``LOCAL_RANK`` environment variable (``None``: unset).
        current: ``torch.cuda.current_device()``.
        count: ``torch.cuda.device_count()``.
    """
    if local_rank is None or current != 0:
        return current, None
    try:
        rank = int(local_rank)
    except ValueError:
        return current, f"LOCAL_RANK={local_rank!r} is not an int; using cuda:{current}"
    if 0 <= rank < count:
        return rank, None
    if count > 1:
        return current, (
            f"LOCAL_RANK={rank} but only {count} CUDA devices are visible; using cuda:{current}. "
            "Pass device=f'cuda:{local_rank}' (or call torch.cuda.set_device) to choose"
        )
    return current, None


def resolve_device(
    spec: str | torch.device | None, env: Mapping[str, str] | None = None
) -> torch.device:
    """The device a loader runs on.

    ``None`` is ``"cuda"`` when torch sees a CUDA device, else the CPU. ``"cuda"`` without an
    index is resolved by :func:`cuda_index` (``LOCAL_RANK`` under torchrun, so that each rank
    takes its own GPU). ``env``: the environment (default ``os.environ``).

    Raises:
        ValueError: ``spec`` names CUDA (``"cuda"``, ``"cuda:1"``) and torch finds no CUDA
            device, or fewer than the index asks for.
    """
    if spec is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        spec = "cuda"
    device = torch.device(spec)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        why = (
            "this torch was built without CUDA"
            if not torch.backends.cuda.is_built()
            else "no NVIDIA driver or GPU is visible"
        )
        raise ValueError(
            f"`device` is {str(device)!r} but torch finds no CUDA device "
            f'(torch.cuda.is_available() is False: {why}); pass device="cpu", or leave '
            "`device` unset to use CUDA when there is one and the CPU otherwise"
        )
    count = torch.cuda.device_count()
    if device.index is not None:
        if device.index >= count:
            raise ValueError(
                f"`device` is {str(device)!r} but torch sees {count} CUDA device(s) "
                f"(cuda:0 to cuda:{count - 1}); pass an index below {count}"
            )
        return device
    env = os.environ if env is None else env
    index, warning = cuda_index(env.get("LOCAL_RANK"), torch.cuda.current_device(), count)
    if warning is not None:
        warnings.warn(warning, stacklevel=3)
    return torch.device("cuda", index)


def host_reads_free(t: torch.Tensor) -> bool:
    """Whether the host can read ``t``'s values without waiting for a device (a CPU tensor).

    The one place the augmentation steps choose between their two forms: on the CPU they read
    their per-sample draws on the host and work only where a draw asks for it (the images an op
    applies to, the pixels a box erases); on a device they keep fixed-shape passes over the
    batch, which read nothing back. The ragged unpack (`gpuaug.loader.stages.ragged`) picks its
    CPU form of zeroing the padding here too.
    """
    return t.device.type == "cpu" and not _DEVICE_FORMS[0]


#: ``[n]``: while ``n > 0`` (a `gpuaug.sync_check.SyncCheck` is active) `host_reads_free` says
#: no on the CPU too, so that the check sees the forms a device runs.
_DEVICE_FORMS = [0]


def host_to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` (CPU) on ``device`` without making the host wait.

    To CUDA: from pinned memory (pinned here if it is not, under the target device so that the
    pinned block belongs to it) with ``non_blocking=True``; the caching host allocator keeps a
    pinned block alive until its copy has run. Anything else (CPU, ``meta``): a plain ``to``.

    Shape:
        t: any shape, CPU -> the same values on ``device``.
    """
    device = torch.device(device)
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        if not t.is_pinned():
            # Under the target device, so no context is opened on GPU 0 for a cuda:k copy
            # (nothing to open without CUDA: fake "cuda" tensors in tests).
            where = torch.cuda.device(device) if torch.cuda.is_available() else nullcontext()
            with where:
                t = t.pin_memory()
        return t.to(device, non_blocking=True)
    return t.to(device)


def params_to_device(params: _P, device: torch.device | str) -> _P:
    """A frozen dataclass of per-sample tensors with each tensor field moved by
    `host_to_device` (None fields kept): the ``.to(device)`` of the parameter records."""
    moved = {
        f.name: host_to_device(v, device) if isinstance(v, torch.Tensor) else v
        for f in dataclasses.fields(params)  # type: ignore[arg-type]
        for v in (getattr(params, f.name),)
    }
    return dataclasses.replace(params, **moved)  # type: ignore[type-var]


class PinnedStaging:
    """Reused pinned host buffers for a host -> CUDA copy made again and again (the draws of
    every batch), instead of a pinned block from torch's caching host allocator per copy.

    `to_device` fills a pinned buffer on the host, copies it into a new device tensor with
    ``non_blocking=True`` and records a CUDA event on the current stream after the copy. The
    buffer it fills is the oldest of its ring (one ring per shape, dtype and device) whose event
    has completed (`torch.cuda.Event.query`, which does not wait), so a buffer is never
    overwritten while the copy that reads it may still be in flight. When the host runs ahead
    of the device and no buffer is free, the ring grows, up to ``max_depth`` buffers; past that
    the host waits for the oldest copy (`torch.cuda.Event.synchronize`). The device tensor is
    new each call (the caller may keep it). Thread-safe; copied or pickled, it starts empty.

    Args:
        max_depth: The most buffers per ring (at least 1).
    """

    _RINGS_MAX = 4

    def __init__(self, max_depth: int = 4) -> None:
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
            raise ValueError(f"`max_depth` must be an int >= 1; got {max_depth!r}")
        self.max_depth = max_depth
        # key -> [pinned buffer, event after its last copy], oldest copy first
        self._rings: dict[tuple, collections.deque[tuple[torch.Tensor, Any]]] = {}
        self._lock = threading.Lock()

    def to_device(
        self,
        fill: Callable[[torch.Tensor], object],
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        """A new tensor on CUDA ``device`` holding what ``fill`` wrote into a pinned buffer.

        Shape:
            -> ``shape`` ``dtype`` on ``device``.
        """
        key = (shape, dtype, device)
        with self._lock:
            ring = self._rings.get(key)
            if ring is None:
                if len(self._rings) >= self._RINGS_MAX:
                    self._rings.pop(next(iter(self._rings)))
                ring = self._rings[key] = collections.deque()
            if ring and ring[0][1].query():  # its copy has run: free to fill again
                host, event = ring.popleft()
            elif len(ring) < self.max_depth:
                with torch.cuda.device(device):  # the pinned block belongs to this device
                    host = torch.empty(shape, dtype=dtype, pin_memory=True)
                    event = torch.cuda.Event()
            else:  # the host is max_depth copies ahead: wait for the oldest
                host, event = ring.popleft()
                event.synchronize()
            fill(host)
            out = torch.empty(shape, dtype=dtype, device=device)
            out.copy_(host, non_blocking=True)
            event.record(torch.cuda.current_stream(device))
            ring.append((host, event))
            return out

    def __getstate__(self) -> dict[str, int]:
        return {"max_depth": self.max_depth}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state["max_depth"])  # type: ignore[misc]
