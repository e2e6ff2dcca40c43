"""`apply` and `GPUAugment`: Keras' ImageDataGenerator augmentation, per sample, batched.

Two steps, as in Keras (``get_random_transform`` / ``apply_transform``): the draws and params
(`gpuaug.augment.params`), then `apply`, which checks its arguments once, chooses the backend
(`gpuaug.augment.backends.resolve_backend`, the one place a backend is chosen) and runs it. The
reference (`gpuaug.augment.reference`) runs everywhere; the fast paths beside it
(`gpuaug.augment.backends`) are tested against it. Every backend writes float32 / bfloat16 /
float16 (the reference float64 too) in contiguous or channels_last strides, and equals the
reference within 1e-3 grey levels (except "opencv").

`GPUAugment` is the ``nn.Module`` that does both and keeps the last draws for replay; its
``fit`` computes the featurewise statistics (`gpuaug.augment.fit`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from gpuaug.augment.backends import (
    BACKEND_TABLE,
    BACKENDS,
    backend_function,
    check_backend,
    describe_backend,
    plan_backend,
    prepare_backend,
    resolve_backend,
)
from gpuaug.augment.checks import check_apply_args, check_batch, check_memory_format
from gpuaug.augment.config import AugmentConfig, load_config
from gpuaug.augment.fit import fit_stats
from gpuaug.augment.kornia_stages import KorniaStages, split_for_kornia
from gpuaug.augment.params import (
    AugmentDraws,
    AugmentParams,
    FitStats,
    affine_matrix,
    params_from_draws,
    sample_draws,
    sample_params,
)
from gpuaug.augment.reference import standardize
from gpuaug.device import PinnedStaging

__all__ = [
    "BACKENDS",
    "AugmentDraws",
    "AugmentParams",
    "FitStats",
    "GPUAugment",
    "affine_matrix",
    "apply",
    "describe_backend",
    "params_from_draws",
    "resolve_backend",
    "sample_draws",
    "sample_params",
    "standardize",
]


def apply(
    images: torch.Tensor,
    params: AugmentParams | AugmentDraws,
    config: AugmentConfig,
    *,
    stats: FitStats | None = None,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
    backend: str = "auto",
) -> torch.Tensor:
    """Augment a batch with given params, as Keras' ``apply_transform`` + ``standardize``.

    Args:
        images: The batch, read on its 0..255 scale (uint8, or float on that scale).
        params: One row per image, on the images' device: `AugmentParams` (`sample_params`), or
            the `AugmentDraws` they come from (`sample_draws`; the fused path reads these in
            its kernel, the others turn them into params first).
        config: Which stages run, the fill mode and the normalisation.
        stats: Fitted featurewise statistics (`GPUAugment.fit`), if the config uses them.
        dtype: Output dtype (a float dtype). float64 computes in float64 (reference backend
            only), anything else in float32 and rounds once at the end.
        memory_format: ``torch.contiguous_format`` or ``torch.channels_last`` (the output's
            strides).
        backend: "auto", "reference", "triton", "compile", "chunked" or "opencv" (see `BACKENDS`).

    Returns:
        The augmented, normalised batch.

    Shape:
        images: (B, C, H, W) uint8 or float, any device -> (B, C, H, W) ``dtype`` in
        ``memory_format``, same device.

    Raises:
        ValueError: Not a 4-D batch, params of another length or device, an unknown backend
            or memory format, or a backend that cannot run here.
        TypeError: Images neither uint8 nor float, or a non-float ``dtype``.
    """
    if config.kornia:
        raise ValueError(
            "`apply` runs the Keras stage only and this config has kornia stages, which draw "
            "their own parameters: use GPUAugment (forward, or apply with `kornia_params`)"
        )
    memory_format = check_apply_args(images, params, dtype, memory_format, draws=True)
    name = resolve_backend(backend, images.device, dtype)
    return _run_backend(name, images, params, config, stats, dtype, memory_format)


def _run_backend(
    name: str,
    images: torch.Tensor,
    params: AugmentParams | AugmentDraws,
    config: AugmentConfig,
    stats: FitStats | None,
    dtype: torch.dtype,
    memory_format: torch.memory_format,
) -> torch.Tensor:
    """`apply` after its checks, on the resolved backend ``name``."""
    if isinstance(params, AugmentDraws) and not BACKEND_TABLE[name].takes_draws:
        params = params.params(config, images.shape[2], images.shape[3])
    run = backend_function(name)
    return run(images, params, config, stats=stats, dtype=dtype, memory_format=memory_format)


_PLANS_MAX = 16


def _version(t: torch.Tensor | None) -> tuple[int, int] | None:
    """A tensor's identity and in-place version (None for None)."""
    return None if t is None else (id(t), t._version)


class _Last:
    """What the last ``forward`` call keeps for replay (plain attributes: a module's own
    ``__setattr__`` costs microseconds per call)."""

    __slots__ = ("draws", "params")

    def __init__(self) -> None:
        self.params: AugmentParams | None = None
        self.draws: tuple[AugmentDraws, int, int] | None = None


class GPUAugment(nn.Module):
    """Keras' ImageDataGenerator augmentation as a module: per-sample params, one batched warp.

    ``forward`` draws fresh uniforms for the batch (`sample_draws`: on the generator's device,
    then moved to the batch's), applies them (`apply`) and keeps them, so that ``last_params``
    (computed from the draws by the reference code when first read) replays the batch:
    ``aug(x, params=p)`` or ``aug.apply(x, p)`` reproduces it exactly on the same backend, and
    a CPU generator seeded the same way reproduces the params on every device.

    A backend with plans (the fused kernel) is checked and planned once per kind of batch
    (shape, strides, dtype, device, alignment; the module's settings and fitted statistics):
    a later ``forward`` of the kind draws, allocates and launches, nothing else
    (docs/kernel.md, host time per call). CPU draws for a CUDA batch go through the module's
    reused pinned buffers (`gpuaug.device.PinnedStaging`).

    Args:
        config: An `AugmentConfig`, a preset name or a YAML path (`load_config`); None gives
            no augmentation (a float conversion).
        dtype: Output dtype (float).
        memory_format: ``torch.contiguous_format`` or ``torch.channels_last`` for the output.
        backend: "auto" (the fused Triton kernel on CUDA, else the reference), "reference"
            (the torch reference), "triton", "compile", "chunked" or "opencv"; see `BACKENDS`.
        kornia: kornia stages to run after the Keras stage (replaces the config's
            ``kornia``; see `AugmentConfig.kornia` and `gpuaug.augment.kornia_stages` for the
            order, the [0, 1] range and the seeding). None keeps the config's.

    Attributes:
        config: The settings.
        dtype: The output dtype.
        memory_format: The output memory format.
        backend: The backend asked for (resolved once per device by `resolve_backend`).
        last_params: The params of the last ``forward`` call (None before one).
        last_draws: The draws of the last ``forward`` call that drew them (None otherwise).
        kornia: The `KorniaStages` (None without kornia stages).
        last_kornia_params: kornia's ``_params`` of the last ``forward`` (None without kornia
            stages): ``aug.apply(x, aug.last_params, aug.last_kornia_params)`` replays it.
        mean, std, zca_matrix: Buffers set by `fit` (None before).

    Shape:
        images: (B, C, H, W) uint8 or float on the 0..255 scale, any device
        -> (B, C, H, W) ``dtype`` in ``memory_format``, same device.

    Example:
        >>> cfg = AugmentConfig(rotation_range=40, horizontal_flip=True, rescale=1 / 255)
        >>> aug = GPUAugment(cfg)
        >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> y = aug(x, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(aug.apply(x, aug.last_params), y)
        True
    """

    mean: torch.Tensor | None
    std: torch.Tensor | None
    zca_matrix: torch.Tensor | None

    def __init__(
        self,
        config: AugmentConfig | str | os.PathLike[str] | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        memory_format: torch.memory_format = torch.contiguous_format,
        backend: str = "auto",
        kornia: Any = None,
    ) -> None:
        super().__init__()
        if config is None:
            config = AugmentConfig()
        elif not isinstance(config, AugmentConfig):
            config = load_config(config)
        if kornia is not None:
            config = dataclasses.replace(config, kornia=kornia)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"`dtype` must be a float torch.dtype; got {dtype!r}")
        self.config = config
        self.dtype = dtype
        self.memory_format = check_memory_format(memory_format)
        self.backend = check_backend(backend)
        self._last = _Last()
        self._plans: dict[tuple[Any, ...], tuple[Any, AugmentConfig]] = {}
        self._staging = PinnedStaging()
        self.register_buffer("mean", None)
        self.register_buffer("std", None)
        self.register_buffer("zca_matrix", None)
        self.kornia: KorniaStages | None = None
        if config.kornia:
            self.kornia = KorniaStages(config.kornia)
            self._keras_config, self._tail_config = split_for_kornia(config)

    def __getstate__(self) -> dict[str, Any]:
        """A copy or pickle starts without the plans (compiled kernels, device tensors) and the
        pinned buffers: it makes its own."""
        state = super().__getstate__()
        state.update(_plans={}, _resolved={}, _staging=PinnedStaging())
        return state

    @property
    def stats(self) -> FitStats:
        """The fitted statistics (None fields where not fitted)."""
        return FitStats(mean=self.mean, std=self.std, zca_matrix=self.zca_matrix)

    @property
    def last_params(self) -> AugmentParams | None:
        """The params of the last ``forward`` call (from its draws, by the reference code)."""
        last = self._last
        if last.params is None and last.draws is not None:
            draws, height, width = last.draws
            last.params = params_from_draws(self.config, draws, height, width)
        return last.params

    @last_params.setter
    def last_params(self, params: AugmentParams | None) -> None:
        self._last.params = params
        self._last.draws = None

    @property
    def last_draws(self) -> AugmentDraws | None:
        """The draws of the last ``forward`` call, if it drew them (None after given params)."""
        return None if self._last.draws is None else self._last.draws[0]

    def sample_draws(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> AugmentDraws:
        """Draw this batch's uniforms on the generator's device, moved to the batch's."""
        check_batch(images)
        return sample_draws(
            images.shape[0], generator=generator, device=images.device, staging=self._staging
        )

    def sample_params(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> AugmentParams:
        """Draw params for this batch, on its device (`sample_params`)."""
        check_batch(images)
        b, _, h, w = images.shape
        return sample_params(self.config, b, h, w, generator=generator, device=images.device)

    @property
    def last_kornia_params(self) -> list[Any] | None:
        """kornia's ``_params`` of the last call (None without kornia stages or before one)."""
        return None if self.kornia is None else self.kornia.last_params

    def apply(  # type: ignore[override]  # Keras' apply_transform, not nn.Module.apply(fn)
        self,
        images: torch.Tensor,
        params: AugmentParams | AugmentDraws,
        kornia_params: list[Any] | None = None,
    ) -> torch.Tensor:
        """Apply given params or draws to a batch (`apply` with this module's settings); with
        kornia stages, ``kornia_params`` (`last_kornia_params`) too.

        Raises:
            ValueError: kornia stages and no ``kornia_params``.
        """
        if self.kornia is not None:
            if kornia_params is None:
                raise ValueError(
                    "this GPUAugment has kornia stages: give their `kornia_params` "
                    "(last_kornia_params of the call to replay) with the params"
                )
            return self._with_kornia(images, params, kornia_params=kornia_params)
        check_apply_args(images, params, self.dtype, self.memory_format, draws=True)
        name = self._resolved_backend(images.device)
        c = self.config  # the fitted stats only where a step reads them (a batch skips 3 lookups)
        fitted = c.featurewise_center or c.featurewise_std_normalization or c.zca_whitening
        stats = self.stats if fitted else None
        return _run_backend(name, images, params, c, stats, self.dtype, self.memory_format)

    def _with_kornia(
        self,
        images: torch.Tensor,
        params: AugmentParams | AugmentDraws,
        seed: int | None = None,
        kornia_params: list[Any] | None = None,
    ) -> torch.Tensor:
        """The Keras stage as float32 [0, 1], the kornia stages, then the normalisation
        (`gpuaug.augment.kornia_stages`)."""
        assert self.kornia is not None
        x = apply(images, params, self._keras_config, dtype=torch.float32, backend=self.backend)
        x = self.kornia(x, seed=seed, params=kornia_params)
        x = standardize(x, self._tail_config, self.stats)
        return x.to(dtype=self.dtype, memory_format=self.memory_format)

    def prepare(
        self, image_shape: tuple[int, int, int], device: torch.device | str, layout: str = "planar"
    ) -> Any:
        """Start compiling, on a background thread, what batches of ``image_shape`` (C, H, W)
        on ``device`` in pixel ``layout`` (``"planar"`` or ``"rgbx"``,
        `gpuaug.data.pixel_layout`) will launch (the fused kernels; nothing for the other
        backends).

        Returns:
            A ``concurrent.futures.Future`` (its result: the compiled kernels), or None when
            nothing needs compiling (the reference backend, a CPU device, the interpreter).
        """
        device = torch.device(device)
        c = self.config
        fitted = c.featurewise_center or c.featurewise_std_normalization
        stats = self.stats if fitted else None
        channels, height, width = image_shape
        shape = (int(channels), int(height), int(width))
        if self.kornia is not None:  # the Keras stage runs as float32 [0, 1], unnormalised
            name = resolve_backend(self.backend, device, torch.float32)
            return prepare_backend(
                name, self._keras_config, shape, torch.float32, torch.contiguous_format,
                device, None, rgbx=layout == "rgbx",
            )  # fmt: skip
        name = self._resolved_backend(device)
        return prepare_backend(
            name, c, shape, self.dtype, self.memory_format, device, stats, rgbx=layout == "rgbx"
        )

    def _resolved_backend(self, device: torch.device) -> str:
        """`resolve_backend` for this module's backend and dtype, once per device (every call
        while ``torch.compile`` traces, where "auto" resolves differently)."""
        if torch.compiler.is_compiling():
            return resolve_backend(self.backend, device, self.dtype)
        cache = self.__dict__.setdefault("_resolved", {})
        key = (self.backend, self.dtype, device)  # the attributes may be reassigned
        if key not in cache:
            cache[key] = resolve_backend(self.backend, device, self.dtype)
        return cache[key]

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        params: AugmentParams | AugmentDraws | None = None,
        kornia_seed: int | None = None,
    ) -> torch.Tensor:
        """Augment a batch with fresh draws (or given params or draws); kept for replay.

        With kornia stages, their draws are seeded with ``kornia_seed``; without it, with one
        int64 drawn from ``generator`` after the draws (a CUDA generator makes that a host
        sync: pass a CPU one, or the seed), or, without either, from the global RNG as kornia
        does on its own. The caller's global RNG is left as it was whenever a seed is known.
        """
        if self.kornia is not None:
            return self._forward_kornia(images, generator, params, kornia_seed)
        if isinstance(params, AugmentParams):
            out = self.apply(images, params)
            self.last_params = params
            return out
        planned = self._planned(images)
        if planned is not None and (params is None or self._fits(images, params)):
            b, _, height, width = images.shape
            if params is None:
                draws = sample_draws(
                    b, generator=generator, device=images.device, staging=self._staging
                )
            else:
                draws = params
            out = planned(images, draws)  # the kernel reads the draws; params when asked
            last = self._last
            last.params = None
            last.draws = (draws, height, width)
            return out
        draws = self.sample_draws(images, generator) if params is None else params
        height, width = images.shape[2], images.shape[3]
        last = self._last
        if self._resolved_backend(images.device) == "triton":
            out = self.apply(images, draws)  # the kernel reads the draws; params when asked
            last.params = None
        else:  # the other backends need the params anyway: keep them
            last.params = params_from_draws(self.config, draws, height, width)
            out = self.apply(images, last.params)
        last.draws = (draws, height, width)
        return out

    def _planned(self, images: Any) -> Any:
        """The backend's plan (`plan_backend`) for draws and batches of this kind, made on first
        sight and kept: None for a backend without plans, or while ``torch.compile`` traces.

        The key is everything a plan depends on: the batch's shape, strides, dtype, device and
        pointer alignment (4 bytes, for an interleaved source: RGBX), this module's settings
        (which may be reassigned) and the fitted statistics' identity and version (refit or
        changed in place). A call that finds its plan runs it without any other check.
        """
        if type(images) is not torch.Tensor or torch.compiler.is_compiling():
            return None  # a subclass (FakeTensor, ...) has no pointer to key on: `apply`
        c = self.config
        fitted = c.featurewise_center or c.featurewise_std_normalization or c.zca_whitening
        stats = self.stats if fitted else None
        if stats is None:
            versions = None
        else:
            fields = (stats.mean, stats.std, stats.zca_matrix)
            if any(t is not None and t.is_inference() for t in fields):
                # made under torch.inference_mode: no version counter to see an in-place
                # change by, so no plan is kept (each call goes through `apply`)
                return None
            versions = tuple(map(_version, fields))
        key = (
            images.shape,
            images.stride(),
            images.dtype,
            images.device,
            # an RGBX source (uint8, channels 1 byte apart) is read in words only when aligned
            images.data_ptr() % 4 == 0 if images.stride(1) == 1 else None,
            id(c),
            self.dtype,
            self.memory_format,
            self.backend,
            versions,
        )
        found = self._plans.get(key)
        if found is None:
            check_batch(images)
            check_memory_format(self.memory_format)
            if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
                raise TypeError(f"`dtype` must be a float dtype; got {self.dtype}")
            name = self._resolved_backend(images.device)
            plan = plan_backend(
                name, images, c, stats, self.dtype, self.memory_format, from_draws=True
            )
            if len(self._plans) >= _PLANS_MAX:
                self._plans.pop(next(iter(self._plans)))
            found = self._plans[key] = (plan, c)  # the config kept alive: its id is in the key
        return found[0]

    @staticmethod
    def _fits(images: torch.Tensor, draws: Any) -> bool:
        """Whether given draws fit the batch (else `apply`'s checks say why)."""
        return (
            isinstance(draws, AugmentDraws)
            and len(draws) == images.shape[0]
            and draws.device == images.device
        )

    def _forward_kornia(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None,
        params: AugmentParams | AugmentDraws | None,
        seed: int | None,
    ) -> torch.Tensor:
        if isinstance(params, AugmentParams):
            keras: AugmentParams | AugmentDraws = params
        else:
            keras = self.sample_draws(images, generator) if params is None else params
        if seed is None and generator is not None:
            seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
        out = self._with_kornia(images, keras, seed=seed)
        if isinstance(keras, AugmentParams):
            self.last_params = keras
        else:
            self._last.params = None
            self._last.draws = (keras, images.shape[2], images.shape[3])
        return out

    @torch.no_grad()
    def fit(
        self,
        x: torch.Tensor | np.ndarray,
        augment: bool = False,
        rounds: int = 1,
        generator: torch.Generator | None = None,
    ) -> GPUAugment:
        """Compute the featurewise statistics on the data's device, as Keras' ``fit``.

        As Keras: ``rescale`` first; with ``augment``, ``rounds`` randomly augmented copies
        (warp, channel shift, flips, brightness; batched, one loop per round); then the
        per-channel mean over (N, H, W) if ``featurewise_center``; the per-channel std of the
        centred data if ``featurewise_std_normalization``; and if ``zca_whitening`` the matrix
        ``W = U diag(sqrt(N) / (s + zca_epsilon)) U^T`` from the SVD of the flattened centred
        data. Computed in float64 (float32 on MPS), stored float32. Keras flattens images
        channels-last, we channels-first; the matrices agree up to that permutation.

        Args:
            x: Sample images (N, C, H, W), channels first, uint8 or float on the 0..255 scale.
            augment: Fit on augmented copies.
            rounds: How many augmented copies with ``augment``.
            generator: Randomness for ``augment``.

        Returns:
            self, with the ``mean``, ``std`` and ``zca_matrix`` buffers set (those the config
            asks for) on ``x``'s device.

        Raises:
            ValueError: ``x`` is not 4-D, or ``rounds`` < 1.
        """
        stats = fit_stats(self.config, x, augment=augment, rounds=rounds, generator=generator)
        for name in ("mean", "std", "zca_matrix"):
            value = getattr(stats, name)
            if value is not None:
                setattr(self, name, value)
        return self

    def extra_repr(self) -> str:
        settings = "; ".join(self.config.describe().splitlines())  # kornia stages included
        return f"{settings}; dtype={self.dtype}; backend={self.backend}"
