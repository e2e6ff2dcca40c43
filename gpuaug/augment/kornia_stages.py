"""kornia stages: kornia augmentations run on the device batch after the Keras stage, seeded.

A config's ``kornia`` field (`AugmentConfig.kornia`: kornia augmentation modules, one
``kornia.augmentation.AugmentationSequential``, or YAML specs ``{name: ColorJiggle,
brightness: 0.2, ...}``, `KorniaSpec`) becomes a `KorniaStages` module inside `GPUAugment`.
kornia is imported here only, when such a module is built: ``import gpuaug`` never imports it.

Order in `GPUAugment` with kornia stages (``x`` read on its 0..255 scale):

1. the Keras stage (warp + flips, channel shift, brightness) with ``rescale=1/255`` and no
   normalisation, written by the backend as float32 in [0, 1] (the fused kernel reads the
   uint8 batch and writes this once: no extra full-batch uint8 -> float copy);
2. the kornia stages, per sample (``same_on_batch=False``), on that float32 [0, 1] batch:
   kornia expects float images in [0, 1] (its colour ops clamp to it);
3. back to the Keras scale and the normalisation: ``x 255`` folded into ``rescale`` (one
   multiply-add with the featurewise mean / std), or, with a ``preprocessing_function``,
   ``x 255`` first (it sees the 0..255 scale, as without kornia), then ``rescale``, samplewise,
   featurewise (statistics fitted on the Keras scale by `GPUAugment.fit`, without the kornia
   stages) and ZCA; cast to the module's dtype and memory format.

Seeding: kornia draws from the global torch RNG (it takes no ``generator``). `KorniaStages`
runs it inside ``torch.random.fork_rng`` seeded with the batch's kornia seed (a loader derives it
from ``(seed, epoch, step, rank)``), so a batch's kornia draws are a function of that seed, and
the caller's global RNG (CPU, and the batch's CUDA device) is left exactly as it was. The
drawn parameters (kornia's ``_params``, a list of ``ParamItem``) are kept for replay:
``stages(x, params=p)`` applies them again, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "KorniaSpec",
    "KorniaStages",
    "describe_kornia",
    "import_kornia",
    "applied_ops",
    "normalise_kornia",
    "split_for_kornia",
]

#: The data keys kornia takes for the targets gpuaug moves with the images.
MASK_KEY = "mask"


def import_kornia() -> Any:
    """``kornia.augmentation``, or an ImportError saying how to install it."""
    try:
        return importlib.import_module("kornia.augmentation")
    except ImportError as err:
        raise ImportError(
            "kornia stages (`kornia=` of AugmentConfig / GPUAugment, a preset's `kornia:` "
            f"list) need kornia, which does not import here ({err}): pip install kornia "
            '(or pip install "gpuaug[kornia]")'
        ) from err


def _as_kornia_arg(value: Any) -> Any:
    """YAML lists as the tuples kornia's arguments take (hashable, as the config is)."""
    if isinstance(value, list | tuple):
        return tuple(_as_kornia_arg(v) for v in value)
    return value


@dataclass(frozen=True)
class KorniaSpec:
    """A kornia augmentation by name, as a YAML preset gives it (``{name: ColorJiggle, ...}``).

    Attributes:
        name: A class of ``kornia.augmentation`` (checked when the stages are built).
        args: Its keyword arguments, ``(key, value)`` pairs, lists as tuples.
    """

    name: str
    args: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "`kornia`") -> KorniaSpec:
        """A spec from ``{name: ..., **kwargs}``.

        Raises:
            ValueError: no string ``name``.
        """
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"{where} must name a kornia.augmentation class: {{name: ColorJiggle, "
                f"brightness: 0.2, ...}}; got {dict(data)!r}"
            )
        args = tuple((str(k), _as_kornia_arg(v)) for k, v in data.items() if k != "name")
        return cls(name, args)

    def to_dict(self) -> dict[str, Any]:
        """``{name: ..., **kwargs}``, tuples as lists (for YAML)."""

        def plain(v: Any) -> Any:
            return [plain(x) for x in v] if isinstance(v, tuple) else v

        return {"name": self.name, **{k: plain(v) for k, v in self.args}}


def normalise_kornia(value: Any) -> tuple[Any, ...]:
    """A config's ``kornia`` setting as a tuple of kornia modules and `KorniaSpec`, without
    importing kornia: None -> (); one module (an ``AugmentationSequential``) -> (module,);
    mappings -> `KorniaSpec`.

    Raises:
        TypeError: not None, a module, or a list of modules / mappings.
        ValueError: a mapping without a ``name``.
    """
    if value is None:
        return ()
    if isinstance(value, nn.Module | KorniaSpec | Mapping):
        value = [value]
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(
            "`kornia` must be a list of kornia augmentations or specs {name: ..., args}, or "
            f"a kornia AugmentationSequential; got {type(value).__name__}"
        )
    out: list[Any] = []
    for i, item in enumerate(value):
        if isinstance(item, Mapping):
            item = KorniaSpec.from_dict(item, f"`kornia[{i}]`")
        elif not isinstance(item, nn.Module | KorniaSpec):
            raise TypeError(
                f"`kornia[{i}]` must be a kornia augmentation module or a mapping "
                f"{{name: ..., args}}; got {type(item).__name__}"
            )
        out.append(item)
    return tuple(out)


def describe_kornia(specs: Sequence[Any]) -> list[str]:
    """One line per kornia stage, with its ranges and probability, without importing kornia
    (a spec's settings as given; a module's own ``repr``, which kornia writes with them)."""
    lines = []
    for spec in specs:
        if isinstance(spec, KorniaSpec):
            args = ", ".join(f"{k}={v!r}" for k, v in spec.args)
            lines.append(f"kornia: {spec.name}({args})")
        else:
            lines.append("kornia: " + " ".join(repr(spec).split()))
    return lines


class _FromUnitRange:
    """A ``preprocessing_function`` called on the 0..255 scale from a [0, 1] batch."""

    def __init__(self, function: Any) -> None:
        self.function = function
        self.__name__ = getattr(function, "__name__", repr(function))

    def __call__(self, x: torch.Tensor) -> Any:
        return self.function(x * 255.0)


def split_for_kornia(config: Any) -> tuple[Any, Any]:
    """An `AugmentConfig` with kornia stages as the two configs around them: the Keras stage
    (``rescale=1/255``, no normalisation: its output is float [0, 1]) and the normalisation
    after them (``rescale`` times 255, or a ``preprocessing_function`` handed the 0..255 scale
    back; samplewise, featurewise, ZCA as configured), for `gpuaug.augment.reference.standardize`.
    """
    keras = dataclasses.replace(
        config,
        kornia=(),
        rescale=1.0 / 255.0,
        preprocessing_function=None,
        samplewise_center=False,
        samplewise_std_normalization=False,
        featurewise_center=False,
        featurewise_std_normalization=False,
        zca_whitening=False,
    )
    function = config.preprocessing_function
    if function is None:
        rescale = (config.rescale or 1.0) * 255.0
        if abs(rescale - 1.0) < 1e-9:  # rescale 1/255 (to float32's precision): nothing left
            rescale = None
        tail = dataclasses.replace(config, kornia=(), rescale=rescale)
    else:
        tail = dataclasses.replace(
            config, kornia=(), preprocessing_function=_FromUnitRange(function)
        )
    return keras, tail


def _build_op(K: Any, spec: Any, where: str) -> nn.Module:
    if isinstance(spec, nn.Module):
        if not isinstance(spec, K.base._BasicAugmentationBase | K.AugmentationSequential):
            raise TypeError(
                f"{where} must be a kornia.augmentation module; got {type(spec).__name__} "
                "(other modules go in preprocessing_function or your own model)"
            )
        return spec
    if isinstance(spec, Mapping):
        spec = KorniaSpec.from_dict(spec, where)
    if not isinstance(spec, KorniaSpec):
        raise TypeError(
            f"{where} must be a kornia augmentation module or a mapping {{name: ..., args}}; "
            f"got {type(spec).__name__}"
        )
    name = spec.name
    cls = getattr(K, name, None)
    if not (isinstance(cls, type) and issubclass(cls, K.base._BasicAugmentationBase)):
        raise ValueError(
            f"{where}: `name` must name a kornia.augmentation class (ColorJiggle, "
            f"RandomErasing, RandomGaussianBlur, RandomResizedCrop, RandomPerspective, ...); "
            f"got {name!r}"
        )
    kwargs = dict(spec.args)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise TypeError(f"{where}: kornia.augmentation.{name}: {err}") from err


def _leaf_ops(module: nn.Module, K: Any) -> Iterator[nn.Module]:
    for child in module.children():
        if isinstance(child, K.base._BasicAugmentationBase):
            yield child
        else:
            yield from _leaf_ops(child, K)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global RNG of the CPU and of ``device`` seeded ``seed`` inside, restored after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if devices:  # only this device's generator (torch.manual_seed would seed every GPU)
            index = device.index if device.index is not None else torch.cuda.current_device()
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def applied_ops(params: Sequence[Any] | None, batch_size: int) -> list[list[str]]:
    """Per sample, the kornia ops that ran on it (kornia's ``batch_prob`` of each op > 0.5),
    by class name, from kornia's ``_params`` (for previews' captions).

    An op whose parameters hold no per-sample ``batch_prob`` (a nested container) is listed
    for every sample.
    """
    out: list[list[str]] = [[] for _ in range(batch_size)]
    for item in params or ():
        name = item.name.rsplit("_", 1)[0]
        data = item.data
        prob = data.get("batch_prob") if isinstance(data, Mapping) else None
        if isinstance(prob, torch.Tensor) and prob.numel() == batch_size:
            on = (prob.reshape(-1) > 0.5).tolist()
        else:
            on = [True] * batch_size
        for i, applied in enumerate(on):
            if applied:
                out[i].append(name)
    return out


def _check_params(params: list[Any] | None) -> list[Any]:
    if params is None:
        raise ValueError(
            "no kornia params to move the targets with: run the images through the kornia "
            "stages first (their last_params)"
        )
    return params


class KorniaStages(nn.Module):
    """kornia augmentations as one seeded, replayable stage on a float [0, 1] batch.

    Args:
        stages: A ``kornia.augmentation.AugmentationSequential`` (used as is), or a sequence of
            kornia augmentation modules and / or specs ``{"name": "ColorJiggle", "brightness":
            0.2, ...}`` (a class of ``kornia.augmentation`` and its keyword arguments; YAML
            lists become tuples), chained in an ``AugmentationSequential``.

    Attributes:
        sequential: The ``AugmentationSequential`` that runs.
        names: The class name of each kornia op, in order.
        geometric: Whether any op moves pixels, i.e. is not one of kornia's intensity ops (then
            masks, boxes and keypoints go through the stages too).
        last_params: kornia's ``_params`` of the last call (a list of ``ParamItem``).

    Shape:
        images: (B, C, H, W) float32 in [0, 1], any device -> (B, C, H', W') float32, same
        device ((H', W') = (H, W) unless an op resizes, e.g. ``RandomResizedCrop(size)``).

    Raises:
        ImportError: kornia does not import.
        ValueError: an unknown kornia class, an op with ``same_on_batch=True`` (gpuaug's stages
            are per sample), a 3-D op, or no op.
        TypeError: an entry that is neither a module nor a mapping, or bad arguments.
    """

    def __init__(self, stages: Any) -> None:
        super().__init__()
        K = import_kornia()
        if isinstance(stages, K.AugmentationSequential):
            sequential = stages
        elif isinstance(stages, Sequence) and not isinstance(stages, str):
            if len(stages) == 1 and isinstance(stages[0], K.AugmentationSequential):
                sequential = stages[0]
            else:
                ops = [_build_op(K, s, f"`kornia[{i}]`") for i, s in enumerate(stages)]
                sequential = K.AugmentationSequential(*ops)
        else:
            raise TypeError(
                "`kornia` must be a kornia AugmentationSequential or a list of kornia "
                f"augmentations / specs; got {type(stages).__name__}"
            )
        ops = list(_leaf_ops(sequential, K))
        if not ops:
            raise ValueError("`kornia` holds no kornia augmentation")
        for op in ops:
            name = type(op).__name__
            if not isinstance(op, K.base._BasicAugmentationBase) or name.endswith("3D"):
                raise ValueError(f"`kornia`: {name} is not a 2-D kornia augmentation")
            if isinstance(op, K.MixAugmentationBaseV2):
                raise ValueError(
                    f"`kornia`: {name} mixes samples and their labels, which gpuaug's targets "
                    "do not follow; use it on the loader's batches in your training loop"
                )
            if op.same_on_batch:
                raise ValueError(
                    f"`kornia`: {name} has same_on_batch=True; gpuaug's stages draw per sample "
                    "(same_on_batch=False)"
                )
        self.sequential = sequential
        self.names = [type(op).__name__ for op in ops]
        # Everything but kornia's intensity ops moves pixels (its geometric ops, and the
        # elastic / thin-plate / fisheye warps, which are not GeometricAugmentationBase2D).
        self.geometric = any(not isinstance(op, K.IntensityAugmentationBase2D) for op in ops)
        self.last_params: list[Any] | None = None

    def forward(
        self,
        images: torch.Tensor,
        seed: int | None = None,
        params: list[Any] | None = None,
    ) -> torch.Tensor:
        """Run the kornia ops on a float [0, 1] batch, with fresh draws or given ``params``.

        Args:
            images: The batch, float32 in [0, 1].
            seed: Seeds the draws (the global RNG is forked and restored around them); None
                draws from the global RNG as kornia itself does.
            params: kornia's ``_params`` of an earlier call: applied again, nothing drawn.
        """
        if params is not None:
            out = self.sequential(images, params=params, data_keys=["input"])
        elif seed is None:
            out = self.sequential(images, data_keys=["input"])
        else:
            with _seeded(seed, images.device):
                out = self.sequential(images, data_keys=["input"])
        self.last_params = self.sequential._params
        return out

    def apply_masks(self, masks: torch.Tensor, params: list[Any] | None) -> torch.Tensor:
        """Move label maps with kornia's ``mask`` data key and the images' ``params``.

        kornia's geometric ops resample masks with nearest interpolation (labels never
        blended); its intensity ops leave them as they are. Labels go through float32 (exact
        for integers up to 2**24) and come back in the masks' dtype.

        Shape:
            masks: (B, H, W) or (B, C, H, W), any real or bool dtype -> (B, [C,] H', W'),
            same dtype and device.

        Raises:
            ValueError: ``params`` is None and an op moves pixels.
        """
        if not self.geometric:
            return masks
        params = _check_params(params)
        squeeze = masks.ndim == 3
        m = masks[:, None] if squeeze else masks
        out = self._replay(m.to(torch.float32), params, MASK_KEY, "masks")
        if masks.dtype.is_floating_point:
            out = out.to(masks.dtype)
        else:
            out = out.round().to(masks.dtype)
        return out[:, 0] if squeeze else out

    def apply_keypoints(self, points: torch.Tensor, params: list[Any] | None) -> torch.Tensor:
        """Move points with kornia's ``keypoints`` data key and the images' ``params``.

        Points are in gpuaug's continuous pixel coordinates (`gpuaug.augment.targets`: pixel
        ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``, its centre at ``+0.5``); kornia's
        geometric ops map pixel centres at whole coordinates (``align_corners=True``), so the
        points are shifted by 0.5 into kornia's frame and back. Intensity ops leave them.

        Shape:
            points: (B, N, 2) xy, float -> (B, N, 2), same dtype and device.

        Raises:
            ValueError: ``params`` is None and an op moves pixels.
        """
        if not self.geometric:
            return points
        params = _check_params(params)
        kp = points.to(torch.float32) - 0.5
        out = self._replay(kp, params, "keypoints", "points and boxes")
        return (out + 0.5).to(points.dtype)

    def apply_boxes(
        self,
        boxes: torch.Tensor,
        params: list[Any] | None,
        height: int,
        width: int,
        *,
        valid: torch.Tensor | None = None,
        min_visibility: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Move ``xyxy`` boxes with the images' ``params``: each box's four corners go through
        `apply_keypoints`, the new box is their bounding box clipped to the output image, and
        a box stays valid under `gpuaug.augment.targets.apply_boxes`' rule (positive size, at
        least ``min_visibility`` of the unclipped box's area inside).

        Args:
            boxes: Boxes in gpuaug's continuous pixel coordinates.
            params: kornia's ``_params`` of the images' call.
            height, width: The size of the kornia stages' output (H', W').
            valid: Which rows are real boxes; default all.
            min_visibility: In [0, 1].

        Shape:
            boxes: (B, N, 4) float; valid: (B, N) bool -> (B, N, 4), (B, N) bool.
        """
        ok = torch.ones(boxes.shape[:2], dtype=torch.bool, device=boxes.device)
        ok = ok if valid is None else ok & valid
        if not self.geometric:
            return boxes, ok
        b, n, _ = boxes.shape
        x0, y0, x1, y1 = boxes.unbind(-1)
        corners = torch.stack([x0, y0, x1, y0, x0, y1, x1, y1], dim=-1).reshape(b, n * 4, 2)
        warped = self.apply_keypoints(corners, params).reshape(b, n, 4, 2)
        out = torch.cat([warped.amin(dim=2), warped.amax(dim=2)], dim=-1)
        area = (out[..., 2] - out[..., 0]) * (out[..., 3] - out[..., 1])
        limits = boxes.new_tensor([width, height, width, height])
        clipped = torch.minimum(out.clamp(min=0.0), limits)
        w = clipped[..., 2] - clipped[..., 0]
        h = clipped[..., 3] - clipped[..., 1]
        ok = ok & (w > 0) & (h > 0) & (w * h >= float(min_visibility) * area)
        return clipped, ok

    def _replay(self, data: torch.Tensor, params: list[Any], key: str, what: str) -> torch.Tensor:
        """kornia's call on targets alone with the images' params (kept as ``_params``)."""
        try:
            return self.sequential(data, params=params, data_keys=[key])
        except NotImplementedError as err:
            raise NotImplementedError(
                f"a kornia op of {self.names} does not move {what} (kornia raises "
                f"NotImplementedError for data key {key!r}); leave it out where the loader "
                f"carries {what}"
            ) from err
        finally:
            self.sequential._params = params

    def extra_repr(self) -> str:
        return ", ".join(self.names)
