"""``SyncCheck``: records every op that forces a host sync or a blocking copy.

The GPU hot path of gpuaug (sources -> transfer -> finish, see `gpuaug.loader.stages`) must never
make
the CPU wait for the GPU: no ``.item()``, ``.tolist()``, ``bool(t)``, ``nonzero``, boolean-mask
indexing, data-dependent output sizes, or a copy between host and device that is not an
asynchronous copy from (or to) pinned memory. ``SyncCheck`` is a
``torch.utils._python_dispatch.TorchDispatchMode`` that sees every aten op dispatched while it
is active and records the ones that would do that, with the line of gpuaug that issued it::

    with SyncCheck() as check:
        for x, y in loader:
            ...
    check.assert_clean()   # AssertionError listing each offending op and where it came from

It works on any device, including a CPU-only machine, where a host sync cannot happen for
real: the ops that *would* sync on a GPU are recorded all the same (``_local_scalar_dense`` of a
CPU tensor counts too: a value read on the host to take a decision is a sync on the GPU), and
a copy to another device (``"meta"`` stands in for a GPU in tests) is judged by its source
(pinned or not) and its ``non_blocking`` flag. What it cannot see: ``torch.cuda.synchronize()``,
``Event.synchronize()``, ``Stream.synchronize()`` (no aten op) and work done in other processes
(DataLoader workers). While it is active, the augmentation steps take the forms they take on
a device even on the CPU (`gpuaug.device.host_reads_free` says no): on the CPU they would
otherwise read their draws on the host, which is free there. On a GPU,
``torch.cuda.set_sync_debug_mode("error")`` is the complementary check (`benchmarks.gpu_check`).

Recorded (the ``reason`` of each `SyncEvent`):

- ``"item"``: ``aten._local_scalar_dense`` (``.item()``, ``.tolist()``, ``int(t)``, ``bool(t)``,
  ``if t:``), ``aten.is_nonzero``, ``aten.equal``;
- ``"nonzero"``: ``aten.nonzero``, ``aten.argwhere``, ``aten.nonzero_numpy``;
- ``"bool-mask index"``: ``aten.index`` / ``index_put`` with a bool or uint8 index tensor;
- ``"data-dependent size"``: ``masked_select``, ``repeat_interleave`` without ``output_size``,
  ``unique`` and friends, ``bincount`` without ``minlength`` covering it;
- ``"blocking copy"``: ``_to_copy`` / ``copy_`` between devices without ``non_blocking=True``;
  ``"pageable copy"``: a host -> device copy whose source is not pinned (``non_blocking`` is
  then silently synchronous); ``"device-to-host copy"``: any copy from a device to the host.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from gpuaug.device import _DEVICE_FORMS

__all__ = ["SyncCheck", "SyncEvent", "sync_reason"]

aten = torch.ops.aten

_PACKAGE = str(Path(__file__).resolve().parent)

_ITEM = {
    aten._local_scalar_dense.default,
    aten.is_nonzero.default,
    aten.equal.default,
}
_NONZERO_NAMES = {"nonzero", "nonzero_numpy", "argwhere"}
_SIZE_NAMES = {
    "masked_select",
    "unique",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "unique_dim_consecutive",
    "bincount",
}
_INDEX_NAMES = {"index", "index_put", "index_put_", "_index_put_impl", "_unsafe_index"}


@dataclass(frozen=True)
class SyncEvent:
    """One recorded op.

    Attributes:
        op: the aten overload, e.g. ``"aten._local_scalar_dense.default"``.
        reason: why it syncs (see the module docstring).
        where: the innermost gpuaug source line that issued it (else the innermost caller).
    """

    op: str
    reason: str
    where: str

    def __str__(self) -> str:
        return f"{self.op} ({self.reason}) at {self.where}"


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return []


def _copy_reason(src: torch.Tensor, dst_device: torch.device, non_blocking: bool) -> str | None:
    if src.device == dst_device:
        return None
    if dst_device.type == "cpu":
        return "device-to-host copy"
    if not non_blocking:
        return "blocking copy"
    if src.device.type == "cpu" and not src.is_pinned():
        return "pageable copy"
    return None


def sync_reason(func: Any, args: tuple, kwargs: dict) -> str | None:
    """Why ``func(*args, **kwargs)`` forces a host sync or a blocking copy; ``None`` if not."""
    if func in _ITEM:
        return "item"
    name = func._schema.name.split("::")[-1]
    if name in _NONZERO_NAMES:
        return "nonzero"
    if name in _SIZE_NAMES:
        return "data-dependent size"
    if name == "repeat_interleave":
        if kwargs.get("output_size") is None and len(args) < 4 and _tensors(args[:2]):
            repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
            if isinstance(repeats, torch.Tensor) or func is aten.repeat_interleave.Tensor:
                return "data-dependent size"
        return None
    if name in _INDEX_NAMES:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        for t in _tensors(indices):
            if t.dtype in (torch.bool, torch.uint8):
                return "bool-mask index"
        return None
    if name == "_to_copy":
        src = args[0]
        device = kwargs.get("device")
        if device is None or not isinstance(src, torch.Tensor):
            return None
        return _copy_reason(src, torch.device(device), bool(kwargs.get("non_blocking", False)))
    if name == "copy_" or name == "copy":
        dst, src = args[0], args[1]
        if not isinstance(src, torch.Tensor) or not isinstance(dst, torch.Tensor):
            return None
        non_blocking = bool(args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        return _copy_reason(src, dst.device, non_blocking)
    return None


_TORCH = str(Path(torch.__file__).resolve().parent)
_THIS = str(Path(__file__).resolve())


def _where() -> str:
    frames = [
        f
        for f in traceback.extract_stack()
        if f.filename != _THIS and not f.filename.startswith(_TORCH)
    ]
    mine = [f for f in frames if f.filename.startswith(_PACKAGE)]
    frame = mine[-1] if mine else frames[-1] if frames else None
    if frame is None:
        return "<unknown>"
    return f"{Path(frame.filename).name}:{frame.lineno} ({frame.name}: {frame.line})"


class _TolistMode(TorchFunctionMode):
    """``Tensor.tolist`` reads a CPU tensor without dispatching an aten op: caught here."""

    def __init__(self, check: SyncCheck) -> None:
        super().__init__()
        self.check = check

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func is torch.Tensor.tolist:
            self.check._record("Tensor.tolist", "item")
        return func(*args, **(kwargs or {}))


class SyncCheck(TorchDispatchMode):
    """A dispatch mode that records ops forcing a host sync or a blocking copy.

    Args:
        raise_now: raise ``AssertionError`` at the first offending op (its traceback shows the
            caller) instead of recording it.
        device_forms: run the augmentation steps' device forms on the CPU too (the default:
            what a GPU would run); ``False`` records what their CPU forms read on the host.

    Attributes:
        events: the recorded `SyncEvent` s, in order.
    """

    def __init__(self, *, raise_now: bool = False, device_forms: bool = True) -> None:
        super().__init__()
        self.raise_now = raise_now
        self.device_forms = device_forms
        self.events: list[SyncEvent] = []
        self._tolist = _TolistMode(self)

    def __enter__(self) -> SyncCheck:
        self._tolist.__enter__()
        try:
            out = super().__enter__()
        except BaseException:
            self._tolist.__exit__(None, None, None)
            raise
        _DEVICE_FORMS[0] += self.device_forms  # the forms a device runs, on the CPU too
        return out

    def __exit__(self, *exc: object) -> None:
        _DEVICE_FORMS[0] -= self.device_forms
        try:
            super().__exit__(*exc)
        finally:
            self._tolist.__exit__(*exc)

    def _record(self, op: str, reason: str) -> None:
        event = SyncEvent(op, reason, _where())
        if self.raise_now:
            raise AssertionError(f"host sync in the hot path: {event}")
        self.events.append(event)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        reason = sync_reason(func, args, kwargs)
        if reason is not None:
            self._record(str(func), reason)
        return func(*args, **kwargs)

    def assert_clean(self) -> None:
        """Raises ``AssertionError`` listing the recorded ops, if any."""
        if self.events:
            listed = "\n  ".join(map(str, self.events[:30]))
            more = f"\n  ... and {len(self.events) - 30} more" if len(self.events) > 30 else ""
            raise AssertionError(
                f"{len(self.events)} op(s) that force a host sync or a blocking copy:\n  "
                f"{listed}{more}"
            )
