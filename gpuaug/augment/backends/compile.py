"""The ``"compile"`` backend: `gpuaug.augment.module.apply` under ``torch.compile(fullgraph=True)``.

`apply_compiled` has `apply`'s signature and semantics and runs the same reference code (the
torch / ``grid_sample`` path), traced whole by dynamo and compiled by Inductor (C++ on the CPU,
Triton on CUDA). It equals eager `apply` within float rounding (tested to 1e-4 on the 0..1
scale on the CPU).

One compiled callable per ``(config, dtype, memory_format)``, built on first use and kept for
the life of the process (a lock guards the cache, so loader threads may share it). Each gets a
code object of its own, so dynamo's recompile limit (8 per code object) counts per setting,
not across all of them.

Recompilation: the batch dimension is marked dynamic (``torch._dynamo.mark_dynamic``, which
tags the given images and params tensors themselves) on every call, so an epoch whose last
batch is short runs the same graph: one compilation per setting and image size, whatever the
batch sizes. Dynamo specialises sizes 0 and 1, so a batch of one
is padded to two (its own row repeated; every stage is per sample, so the kept row is exact)
and an empty batch returns an empty output without compiling. A new image size, dtype, memory
format, device or set of fitted statistics compiles a new graph.

What traces whole (``fullgraph=True``): `apply`, ``GPUAugment.apply``, ``GPUAugment(x)``
drawing from the global RNG, and ``GPUAugment(x, params=p)``. A ``torch.Generator`` argument
cannot be traced by dynamo (a graph break; an error under ``fullgraph=True``): draw outside
the compiled region (``draws = aug.sample_draws(x, generator)``) and compile
``aug.apply(x, draws)``.

Compile is for users who compile their training step or want one fused program on a GPU;
on a 2-core CPU it measured 0.8x to 1.2x of eager: see the ``"chunked"`` and ``"opencv"``
backends (`gpuaug.augment.backends`) for a CPU speed-up.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable

import torch

from gpuaug.augment.checks import check_apply_args
from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.params import AugmentParams, FitStats
from gpuaug.augment.reference import apply_reference

__all__ = ["apply_compiled", "clear_cache"]

_LOCK = threading.Lock()
_CACHE: dict[tuple, Callable[..., torch.Tensor]] = {}
_PARAM_FIELDS = (
    "angle_deg",
    "shift_px",
    "shear_deg",
    "zoom",
    "flip_h",
    "flip_v",
    "channel_shift",
    "brightness",
)


def _config_key(config: AugmentConfig) -> object:
    try:
        hash(config)
    except TypeError:  # an unhashable preprocessing_function: one entry per config object
        return ("id", id(config))
    return config


def _fresh_function(fn: Callable) -> Callable:
    """``fn`` with a code object of its own (dynamo keeps its cache and limit per code object)."""
    code = fn.__code__.replace()
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _build(
    config: AugmentConfig, dtype: torch.dtype, memory_format: torch.memory_format
) -> Callable[..., torch.Tensor]:
    def augment(
        images: torch.Tensor,
        params: AugmentParams,
        mean: torch.Tensor | None,
        std: torch.Tensor | None,
        zca_matrix: torch.Tensor | None,
    ) -> torch.Tensor:
        stats = FitStats(mean=mean, std=std, zca_matrix=zca_matrix)
        return apply_reference(images, params, config, stats, dtype, memory_format)

    return torch.compile(_fresh_function(augment), fullgraph=True)


def compiled_for(
    config: AugmentConfig,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Callable[..., torch.Tensor]:
    """The cached compiled callable of one setting (built on first use; thread-safe)."""
    key = (_config_key(config), dtype, memory_format)
    with _LOCK:
        fn = _CACHE.get(key)
        if fn is None:
            fn = _CACHE[key] = _build(config, dtype, memory_format)
    return fn


def clear_cache() -> None:
    """Forget every compiled callable (dynamo's own caches are left to ``torch._dynamo.reset``)."""
    with _LOCK:
        _CACHE.clear()


def apply_compiled(
    images: torch.Tensor,
    params: AugmentParams,
    config: AugmentConfig,
    *,
    stats: FitStats | None = None,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """`gpuaug.augment.module.apply`, compiled with ``torch.compile(fullgraph=True)``, batch
    dynamic.

    Args:
        images: The batch, read on its 0..255 scale (uint8, or float on that scale).
        params: One row per image, on the images' device (`gpuaug.augment.module.sample_params`).
        config: Which stages run, the fill mode and the normalisation.
        stats: Fitted featurewise statistics, if the config uses them.
        dtype: Output dtype (a float dtype); float64 computes in float64, others in float32.
        memory_format: ``torch.contiguous_format`` or ``torch.channels_last`` for the output.

    Returns:
        The augmented batch, as `apply` returns it (within float rounding), in
        ``memory_format``.

    Shape:
        images: (B, C, H, W) uint8 or float, any device -> (B, C, H, W) ``dtype``, same device.

    Raises:
        ValueError: Not a 4-D batch, params of another length or device, or an unknown
            ``memory_format``.
        TypeError: Images neither uint8 nor float, params not `AugmentParams`, a non-float
            ``dtype`` or a config that is not an `AugmentConfig`.
    """
    # Validate eagerly, with apply's messages, so a bad call fails before any tracing.
    if not isinstance(config, AugmentConfig):
        raise TypeError(f"`config` must be an AugmentConfig; got {type(config).__name__}")
    memory_format = check_apply_args(images, params, dtype, memory_format)
    batch = images.shape[0]
    if batch == 0:
        return apply_reference(images, params, config, stats, dtype, memory_format)
    if batch == 1:  # dynamo specialises a size of 1: pad to 2 and keep the first row
        images = torch.cat([images, images])
        params = params.index(torch.zeros(2, dtype=torch.long, device=params.device))
    torch._dynamo.mark_dynamic(images, 0)
    for name in _PARAM_FIELDS:
        torch._dynamo.mark_dynamic(getattr(params, name), 0)
    stats = stats or FitStats()
    fn = compiled_for(config, dtype, memory_format)
    out = fn(images, params, stats.mean, stats.std, stats.zca_matrix)
    return out[:1] if batch == 1 else out
