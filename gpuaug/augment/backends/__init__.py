"""The augmentation backends: the table `gpuaug.augment.module.apply` dispatches through.

A backend is one module of this package with an ``apply``-shaped function (the images, params
or draws, config, ``stats``, ``dtype``, ``memory_format``; arguments already checked by
`gpuaug.augment.checks.check_apply_args`). It imports only from below (params, reference,
checks, warp, config), never from the dispatcher. `BACKEND_TABLE` names each one; the module is
imported on first use (`backend_function`), so that importing gpuaug does not import triton
or OpenCV; the reference is imported here, so that ``torch.compile`` traces its call. The
dispatcher knows this table, never the kernels.

The backends (`BACKENDS`, chosen in `resolve_backend` and nowhere else):

- ``"auto"``: ``"triton"`` for CUDA tensors when triton imports and the output dtype is
  float32 / bfloat16 / float16; ``"reference"`` otherwise (the CPU default, and inside
  ``torch.compile``).
- ``"reference"``: the reference path (`gpuaug.augment.reference`: `warp_affine`'s
  ``grid_sample`` + torch ops, batched params with a leading ``B``); runs everywhere, in float64
  too. Everything else is tested against it. (Earlier versions called it
  ``"kornia"``, although no kornia code runs in it; that name is refused with a message pointing
  here, and kornia's own augmentations run as kornia stages, `gpuaug.augment.kornia_stages`.)
- ``"triton"``: the fused kernel (`gpuaug.augment.backends.triton`): a prologue that computes
  each image's matrix once, then one pass over the batch that warps, shifts, brightens,
  rescales, normalises and writes the output once. CUDA
  tensors; CPU tensors only under ``TRITON_INTERPRET=1`` (the interpreter, for tests).
- ``"compile"``: `gpuaug.augment.backends.compile` (``torch.compile`` of the reference).
- ``"chunked"``: `gpuaug.augment.backends.chunked`, the reference on cache-sized slices of a
  CPU batch (bitwise the reference; one call on other devices). Opt-in.
- ``"opencv"``: `gpuaug.augment.backends.opencv`, OpenCV's float32 ``warpAffine`` per image on
  a thread pool (CPU, uint8 images, fill "nearest" / "reflect" / "constant"; else the
  reference): within about 0.01 grey levels of the reference with OpenCV 5 (more on large
  images, and with OpenCV 4's 1/32-pixel weights), not bitwise. Opt-in.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.reference import apply_reference

__all__ = [
    "BACKENDS",
    "BACKEND_TABLE",
    "BackendEntry",
    "backend_function",
    "describe_backend",
    "plan_backend",
    "prepare_backend",
    "resolve_backend",
]


@dataclass(frozen=True)
class BackendEntry:
    """One row of the backend table.

    Attributes:
        module: The module that implements it (None: the reference, `gpuaug.augment.reference`).
        function: Its ``apply``-shaped function.
        takes_draws: It reads `AugmentDraws` itself (else the dispatcher turns draws into params
            first).
        note: What it is, in a few words (`describe_backend`).
        prepare: The module's function that starts compiling ahead what a batch kind will
            launch (`prepare_backend`), if it has one.
        plan: The module's function that plans a batch kind once and returns the call that
            runs a batch of it (`plan_backend`), if it has one.
    """

    module: str | None
    function: str
    takes_draws: bool
    note: str
    prepare: str | None = None
    plan: str | None = None


#: The resolved backends and where they live.
BACKEND_TABLE: dict[str, BackendEntry] = {
    "reference": BackendEntry(
        None, "apply_reference", False, "the exact reference (grid_sample + torch ops)"
    ),
    "triton": BackendEntry(
        "gpuaug.augment.backends.triton",
        "apply_fused",
        True,
        "the fused Triton kernel: a per-image prologue and one pass per batch (within 1e-3 grey "
        "levels of the reference)",
        prepare="compile_ahead",
        plan="plan_fused",
    ),
    "compile": BackendEntry(
        "gpuaug.augment.backends.compile",
        "apply_compiled",
        False,
        "torch.compile of the reference (within float rounding of it)",
    ),
    "chunked": BackendEntry(
        "gpuaug.augment.backends.chunked",
        "apply_chunked",
        False,
        "the reference on cache-sized slices of the batch (bitwise the reference)",
    ),
    "opencv": BackendEntry(
        "gpuaug.augment.backends.opencv",
        "apply_opencv",
        False,
        "OpenCV's warpAffine per uint8 image, not bitwise: within about 0.01 grey levels "
        "of the reference with OpenCV 5 (see gpuaug.augment.backends.opencv.warp_bound)",
    ),
}

#: The names `apply` and `GPUAugment` take: "auto" and the table's.
BACKENDS: tuple[str, ...] = ("auto", *BACKEND_TABLE)

_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _module(name: str) -> Any:
    entry = BACKEND_TABLE[name]
    if entry.module is None:
        return importlib.import_module("gpuaug.augment.reference")
    return importlib.import_module(entry.module)


def backend_function(name: str) -> Callable[..., torch.Tensor]:
    """The ``apply``-shaped function of a resolved backend, its module imported on first use.

    Raises:
        ImportError: the backend's module does not import, with the names to use instead.
    """
    entry = BACKEND_TABLE[name]
    if entry.module is None:  # the reference: imported above (torch.compile traces this call)
        return apply_reference
    loaded = sys.modules.get(entry.module)
    if loaded is not None:  # imported before: no import machinery per batch
        return getattr(loaded, entry.function)
    try:
        module = _module(name)
    except ImportError as err:
        raise ImportError(
            f'`backend="{name}"` needs the {entry.module} module, which this build does not '
            f'have ({err}); use backend="reference" or "auto"'
        ) from err
    return getattr(module, entry.function)


def prepare_backend(
    name: str,
    config: AugmentConfig,
    image_shape: tuple[int, int, int],
    dtype: torch.dtype,
    memory_format: torch.memory_format,
    device: torch.device | str,
    stats: Any = None,
    rgbx: bool = False,
) -> Any:
    """Start what a resolved backend can do ahead of its first batch (the fused kernel compiles
    on a background thread; ``rgbx``: for RGBX batches, `gpuaug.data.pixel_layout`); returns
    its future, or None when the backend has nothing to do."""
    entry = BACKEND_TABLE[name]
    if entry.prepare is None:
        return None
    prepare = getattr(_module(name), entry.prepare)
    return prepare(
        config, image_shape, dtype=dtype, memory_format=memory_format, device=device, stats=stats,
        rgbx=rgbx,
    )  # fmt: skip


def plan_backend(
    name: str,
    images: torch.Tensor,
    config: AugmentConfig,
    stats: Any,
    dtype: torch.dtype,
    memory_format: torch.memory_format,
    from_draws: bool,
) -> Callable[[torch.Tensor, Any], torch.Tensor] | None:
    """A resolved backend's plan for batches like ``images`` (same shape, strides, dtype,
    device): a callable ``(images, params or draws) -> output`` that equals its ``apply``-shaped
    function with these settings, checked and planned here once; None for a backend without
    plans (the caller then calls `backend_function` per batch).

    Raises:
        ImportError, ValueError: the backend cannot run this kind of batch (as its function).
    """
    entry = BACKEND_TABLE[name]
    if entry.plan is None:
        return None
    plan = getattr(_module(name), entry.plan)
    return plan(images, config, stats, dtype, memory_format, from_draws)


def check_backend(backend: Any) -> str:
    """``backend`` if it is one of `BACKENDS`.

    Raises:
        ValueError: it is not (``"kornia"``, the reference's old name, with the new one).
    """
    if backend == "kornia":
        raise ValueError(
            '`backend="kornia"` is gone: it named gpuaug\'s own grid_sample reference, which runs '
            'no kornia code; use backend="reference" (or "auto"). kornia\'s own warp_affine is '
            "not offered: its 3x3 bmm turns into a TF32 GEMM under "
            'set_float32_matmul_precision("high") and it has no "wrap" fill. To run kornia '
            "augmentations, give them to GPUAugment(kornia=[...]) (gpuaug.augment.kornia_stages)"
        )
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)}; got {backend!r}")
    return backend


def resolve_backend(backend: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """The backend that runs for ``backend`` on ``device`` with output ``dtype``: the one place
    where a backend is chosen (see `BACKENDS`).

    Returns:
        A name of `BACKEND_TABLE` ("auto" resolved).

    Raises:
        ValueError: An unknown backend, or ``"triton"`` where it cannot run (a CPU tensor
            without ``TRITON_INTERPRET=1``, or float64 output).
        ImportError: ``"triton"`` without triton installed.
    """
    backend = check_backend(backend)
    device = torch.device(device)
    if backend == "auto":
        # Inside torch.compile the reference is what dynamo traces (the kernel's launch is a
        # Python call it would break the graph on).
        if device.type == "cuda" and dtype in _FUSED_DTYPES and not torch.compiler.is_compiling():
            if _module("triton").triton_available():
                return "triton"
        return "reference"
    if backend == "triton":
        _module("triton").check_usable(device, dtype)
    return backend


def describe_backend(
    backend: str,
    device: torch.device | str,
    dtype: torch.dtype,
    memory_format: torch.memory_format = torch.contiguous_format,
    config: AugmentConfig | None = None,
) -> str:
    """One line: the backend that runs for ``backend`` on ``device`` (`resolve_backend`), what
    it is, and the output dtype and layout; for a loader's ``describe()``. An ``"opencv"``
    backend that would run the reference here says so, and why
    (`gpuaug.augment.backends.opencv.why_reference`).
    """
    name = resolve_backend(backend, device, dtype)
    asked = repr(name) if backend == name else f"{backend!r} -> {name!r}"
    note = BACKEND_TABLE[name].note
    if name == "opencv":
        reason = _module("opencv").why_reference(device, dtype, config)
        if reason is not None:
            note = f"but {reason}: {BACKEND_TABLE['reference'].note}"
    layout = "channels_last" if memory_format == torch.channels_last else "contiguous"
    dtype_name = str(dtype).removeprefix("torch.")
    return f"backend: {asked}, {note}; output {dtype_name}, {layout}"
