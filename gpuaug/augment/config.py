"""`AugmentConfig`: Keras' ImageDataGenerator settings as a frozen, YAML-round-tripping dataclass.

Every augmentation and normalisation argument of
``keras.preprocessing.image.ImageDataGenerator`` is a field here, with the same name, default
and meaning, plus ``interpolation`` ("bilinear" | "nearest", Keras' ``interpolation_order`` 1 | 0).
`AugmentConfig.from_keras(**kwargs)` takes the keyword arguments of a Keras call verbatim.

Keras' overrides are kept, and announced with ``warnings.warn`` as Keras does:

- ``zca_whitening=True`` forces ``featurewise_center=True`` and turns
  ``featurewise_std_normalization`` off;
- ``featurewise_std_normalization=True`` forces ``featurewise_center=True``;
- ``samplewise_std_normalization=True`` forces ``samplewise_center=True``.

The stored fields are the effective values (after the override), so a config saved to YAML
loads back without warning.

Presets live in the repository's ``configs/`` folder (shipped in the wheel as
``gpuaug/presets/``); `load_config` resolves a preset name ("chollet_cats_dogs", "none",
"strong") or a YAML path.

Why one module (over 600 lines): `AugmentConfig` is one dataclass, every
``ImageDataGenerator`` argument with its documentation and validation in one place.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np
import yaml

from gpuaug.augment.kornia_stages import KorniaSpec, describe_kornia, normalise_kornia

__all__ = [
    "FILL_MODES",
    "INTERPOLATIONS",
    "AugmentConfig",
    "ShiftRange",
    "load_config",
    "preset_dir",
    "preset_names",
]

FILL_MODES: tuple[str, ...] = ("nearest", "constant", "reflect", "wrap")
INTERPOLATIONS: tuple[str, ...] = ("bilinear", "nearest")

#: A shift range as Keras takes it: a float (fraction of the size if < 1, else pixels), an int
#: (whole pixels 0..n-1, random sign) or a sequence of choices (random sign; fractions if all < 1).
ShiftRange = float | int | tuple[float, ...]

_KERAS_ONLY_KWARGS = ("data_format", "interpolation_order", "dtype")


#: Bounds that keep every value, and every value computed from it, finite in float32
#: (max 3.4e38) with a wide margin: a pixel times ``_MAX_FACTOR`` (255e12), squared and summed
#: over a 1e8-pixel image (a standard deviation), stays below 1e38.
_MAX_FACTOR = 1e12  # rescale, brightness, zca_epsilon
_MAX_VALUE = 1e12  # |cval|, channel_shift_range (0..255 scale)
#: Shifts in pixels: float32 holds every whole number up to 2**24 exactly.
_MAX_SHIFT_PX = 2**24
_MAX_ROTATION = 360.0
_MIN_ZOOM, _MAX_ZOOM = 1e-6, 1e6


def _is_number(value: Any) -> bool:
    """A real number: Python int/float or a numpy scalar (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _as_number(value: Any) -> Any:
    """numpy scalars and 0-d arrays -> Python int/float; anything else unchanged.

    Keras accepts ``np.float32(40)``; the config stores plain Python numbers so that it
    compares, hashes and saves to YAML like any other.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bool | np.bool_):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _as_sequence(value: Any) -> Any:
    """A 1-d numpy array -> a tuple of Python numbers; anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return tuple(_as_number(v) for v in value)
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be a bool; got {value!r} ({type(value).__name__})")
    return bool(value)


def _check_non_negative(
    name: str, value: Any, what: str = "a non-negative number", limit: float = _MAX_VALUE
) -> float:
    value = _as_number(value)
    if not _is_number(value):
        raise TypeError(f"`{name}` must be {what}; got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be {what} (>= 0); got {value!r}")
    if value > limit:
        raise ValueError(f"`{name}` must be {what} <= {limit:g}; got {value!r}")
    return value


def _normalise_shift(name: str, value: Any) -> ShiftRange:
    """Validate a Keras shift range; lists and arrays become tuples (the dataclass is frozen)."""
    what = (
        "a float >= 0 (a fraction of the size if < 1, pixels if >= 1), an int >= 0 "
        "(pixels 0..n-1 with a random sign) or a non-empty list of numbers >= 0"
    )
    bound = f" and at most {_MAX_SHIFT_PX} pixels (2**24, float32's exact whole numbers)"
    value = _as_sequence(_as_number(value))
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be {what}; got {value!r}")
    if _is_number(value):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"`{name}` must be {what}; got {value!r}")
        if value > _MAX_SHIFT_PX:
            raise ValueError(f"`{name}` must be {what}{bound}; got {value!r}")
        return value
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = tuple(_as_number(v) for v in value)
        if not items:
            raise ValueError(f"`{name}` must be {what}; got an empty list")
        for item in items:
            if not _is_number(item):
                raise TypeError(f"`{name}` must be {what}; got the item {item!r}")
            if not math.isfinite(item) or item < 0:
                raise ValueError(f"`{name}` must be {what}; got the item {item!r}")
            if item > _MAX_SHIFT_PX:
                raise ValueError(f"`{name}` must be {what}{bound}; got the item {item!r}")
        return items
    raise TypeError(f"`{name}` must be {what}; got {value!r} ({type(value).__name__})")


def _normalise_pair(name: str, value: Any) -> tuple[float, float]:
    value = _as_sequence(value)
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or len(value) != 2
        or not all(_is_number(v) for v in value)
    ):
        raise ValueError(f"`{name}` must be a pair of numbers [lo, hi]; got {value!r}")
    lo, hi = (_as_number(v) for v in value)
    return lo, hi


@dataclass(frozen=True)
class AugmentConfig:
    """The settings of a Keras ``ImageDataGenerator``: random augmentation and normalisation.

    Field names, defaults and meanings follow Keras 3's legacy ``ImageDataGenerator``. Images are
    read on their 0..255 scale (uint8 or float); ``rescale`` comes after the augmentation, as in
    Keras. Coordinates: x is horizontal (columns), y is vertical (rows).

    Args:
        featurewise_center: Subtract the per-channel dataset mean (needs `GPUAugment.fit`).
        samplewise_center: Subtract each image's own mean (over all pixels and channels).
        featurewise_std_normalization: Divide by the per-channel dataset std (+1e-6). Forces
            ``featurewise_center`` (with a warning, as Keras).
        samplewise_std_normalization: Divide each image by its own std (+1e-6). Forces
            ``samplewise_center`` (with a warning, as Keras).
        zca_whitening: Multiply each flattened image by the ZCA matrix from `GPUAugment.fit`.
            Forces ``featurewise_center`` and turns ``featurewise_std_normalization`` off (with
            a warning, as Keras).
        zca_epsilon: Added to the singular values when computing the ZCA matrix.
        rotation_range: Degrees; the angle is uniform in [-r, r].
        width_shift_range: Horizontal shift. A float: uniform in [-r, r], times the width if
            r < 1 (a fraction) else pixels. An int n: a whole number of pixels in 0..n-1 with a
            random sign (Keras' ``np.random.choice(n)``). A list: one of its values with a random
            sign, times the width if all values are < 1.
        height_shift_range: Vertical shift, as ``width_shift_range`` with the height. (Keras
            itself applies ``height_shift_range`` horizontally and ``width_shift_range``
            vertically; we follow its documentation instead. See `gpuaug.augment.module`.)
        brightness_range: ``None`` or ``(lo, hi)``: each image is multiplied by a factor uniform
            in [lo, hi], then clipped to 0..255.
        shear_range: Degrees (counter-clockwise), in [0, 90); the shear angle is uniform in
            [-s, s].
        zoom_range: A float z (zoom uniform in [1 - z, 1 + z]) or a pair ``(lo, hi)``. The x and
            y zoom factors are drawn independently. A factor > 1 samples a larger area of the
            input, so the content looks smaller (Keras' convention).
        channel_shift_range: An intensity uniform in [-c, c] is added to every channel, then
            clipped to that image's own [min, max].
        fill_mode: How points outside the input are filled: "nearest" (edge replicated),
            "constant" (``cval``), "reflect" (``d c b a | a b c d``) or "wrap" (scipy's
            ``wrap``, as Keras: the first and last rows/columns coincide; see
            `gpuaug.augment.warp`).
        cval: The fill value for ``fill_mode="constant"`` (0..255 scale).
        horizontal_flip: Flip left-right with probability 0.5.
        vertical_flip: Flip up-down with probability 0.5.
        rescale: ``None`` or a factor multiplied in after the augmentation (0 means none).
        preprocessing_function: ``None`` or a callable run after the augmentation and before
            ``rescale``. Unlike Keras (one (H, W, C) numpy image at a time), it is called once
            per batch on the device with a float tensor (B, C, H, W) on the 0..255 scale, and
            must return a tensor of the same shape. It cannot be saved to YAML.
        validation_split: Fraction of the images held out for validation, in [0, 1); used by
            the loader.
        interpolation: "bilinear" (Keras' ``interpolation_order=1``, the default) or "nearest"
            (``interpolation_order=0``).
        kornia: kornia stages run after the Keras stage, per sample, on the float [0, 1]
            batch, before the normalisation (`gpuaug.augment.kornia_stages`): kornia
            augmentation modules, one ``AugmentationSequential``, or specs ``{"name":
            "ColorJiggle", "brightness": 0.2, ...}`` (`KorniaSpec`; what a YAML ``kornia:``
            list gives). Not a Keras setting; kornia is imported only when a `GPUAugment` is
            built with them. Modules cannot be saved to YAML (specs can).

    Numbers may be Python or numpy numbers (``np.float32(40)``), pairs and lists may be numpy
    arrays (``np.array([0.8, 1.2])``), as Keras takes them; they are stored as Python numbers
    and tuples.

    Bounds, so that nothing overflows float32 (max 3.4e38) later: ``rotation_range`` <= 360;
    shifts in pixels <= 2**24 (float32's exact whole numbers); zoom factors in [1e-6, 1e6];
    ``rescale``, ``brightness_range``, ``cval``, ``channel_shift_range`` and ``zca_epsilon``
    at most 1e12 in magnitude (255 x 1e12, squared and summed over 1e8 pixels for a standard
    deviation, still stays below float32's max); NaN and infinity nowhere.

    Raises:
        ValueError: A value outside its allowed range (negative ranges, zoom bounds <= 0,
            unknown fill mode or interpolation, brightness range not a pair, a value past the
            bounds above ...); the message names the field.
        TypeError: A value of the wrong type.
    """

    featurewise_center: bool = False
    samplewise_center: bool = False
    featurewise_std_normalization: bool = False
    samplewise_std_normalization: bool = False
    zca_whitening: bool = False
    zca_epsilon: float = 1e-6
    rotation_range: float = 0
    width_shift_range: ShiftRange = 0.0
    height_shift_range: ShiftRange = 0.0
    brightness_range: tuple[float, float] | None = None
    shear_range: float = 0.0
    zoom_range: float | tuple[float, float] = 0.0
    channel_shift_range: float = 0.0
    fill_mode: str = "nearest"
    cval: float = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    rescale: float | None = None
    preprocessing_function: Callable[[Any], Any] | None = None
    validation_split: float = 0.0
    interpolation: str = "bilinear"
    kornia: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once, here
        for name in (
            "featurewise_center",
            "samplewise_center",
            "featurewise_std_normalization",
            "samplewise_std_normalization",
            "zca_whitening",
            "horizontal_flip",
            "vertical_flip",
        ):
            set_(self, name, _check_bool(name, getattr(self, name)))

        set_(
            self,
            "zca_epsilon",
            _check_non_negative("zca_epsilon", self.zca_epsilon, limit=_MAX_FACTOR),
        )
        rotation = _check_non_negative(
            "rotation_range", self.rotation_range, "a number of degrees", limit=_MAX_ROTATION
        )
        set_(self, "rotation_range", rotation)
        shear = _check_non_negative("shear_range", self.shear_range, "a number of degrees")
        if shear >= 90:
            raise ValueError(
                f"`shear_range` must be in [0, 90) degrees (a shear of 90 degrees flattens the "
                f"image to a line); got {self.shear_range!r}"
            )
        set_(self, "shear_range", shear)
        set_(
            self,
            "channel_shift_range",
            _check_non_negative("channel_shift_range", self.channel_shift_range),
        )
        set_(
            self, "width_shift_range", _normalise_shift("width_shift_range", self.width_shift_range)
        )
        set_(
            self,
            "height_shift_range",
            _normalise_shift("height_shift_range", self.height_shift_range),
        )

        if self.brightness_range is not None:
            lo, hi = _normalise_pair("brightness_range", self.brightness_range)
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or lo > hi:
                raise ValueError(
                    f"`brightness_range` must be a pair [lo, hi] with 0 <= lo <= hi; "
                    f"got {list(_as_sequence(self.brightness_range))!r}"
                )
            if hi > _MAX_FACTOR:
                raise ValueError(
                    f"`brightness_range` must be a pair [lo, hi] with 0 <= lo <= hi <= "
                    f"{_MAX_FACTOR:g}; got {[lo, hi]!r}"
                )
            set_(self, "brightness_range", (lo, hi))

        zoom = _as_sequence(_as_number(self.zoom_range))
        if _is_number(zoom):
            if not math.isfinite(zoom) or not 0 <= zoom < 1:
                raise ValueError(
                    "`zoom_range` must be a float z in [0, 1) (zoom in [1 - z, 1 + z]) or a pair "
                    f"[lo, hi] with 0 < lo <= hi; got {zoom!r}"
                )
            if 1 - zoom < _MIN_ZOOM:
                raise ValueError(
                    f"`zoom_range` must be a float z in [0, 1 - {_MIN_ZOOM:g}] (a zoom factor "
                    f"of {1 - zoom:g} cannot be inverted in float32); got {zoom!r}"
                )
            set_(self, "zoom_range", zoom)
        elif isinstance(zoom, Sequence) and not isinstance(zoom, str):
            lo, hi = _normalise_pair("zoom_range", zoom)
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or lo > hi:
                raise ValueError(
                    "`zoom_range` must be a float z in [0, 1) or a pair [lo, hi] with "
                    f"0 < lo <= hi; got {list(zoom)!r}"
                )
            if lo < _MIN_ZOOM or hi > _MAX_ZOOM:
                raise ValueError(
                    f"`zoom_range` must be a pair [lo, hi] with {_MIN_ZOOM:g} <= lo <= hi <= "
                    f"{_MAX_ZOOM:g}; got {[lo, hi]!r}"
                )
            set_(self, "zoom_range", (lo, hi))
        else:
            raise TypeError(
                f"`zoom_range` must be a float or a pair [lo, hi]; got {zoom!r} "
                f"({type(zoom).__name__})"
            )

        if self.fill_mode not in FILL_MODES:
            raise ValueError(
                f"`fill_mode` must be one of {list(FILL_MODES)}; got {self.fill_mode!r}"
            )
        cval = _as_number(self.cval)
        if not _is_number(cval):
            raise TypeError(f"`cval` must be a finite number; got {self.cval!r}")
        if not math.isfinite(cval) or abs(cval) > _MAX_VALUE:
            raise ValueError(
                f"`cval` must be a finite number in [-{_MAX_VALUE:g}, {_MAX_VALUE:g}]; "
                f"got {self.cval!r}"
            )
        set_(self, "cval", cval)
        if self.rescale is not None:
            rescale = _as_number(self.rescale)
            if not _is_number(rescale):
                raise TypeError(f"`rescale` must be None or a finite number; got {self.rescale!r}")
            if not math.isfinite(rescale) or abs(rescale) > _MAX_FACTOR:
                raise ValueError(
                    f"`rescale` must be None or a finite number in [-{_MAX_FACTOR:g}, "
                    f"{_MAX_FACTOR:g}]; got {self.rescale!r}"
                )
            set_(self, "rescale", rescale)
        if self.preprocessing_function is not None and not callable(self.preprocessing_function):
            raise TypeError(
                "`preprocessing_function` must be None or a callable; "
                f"got {self.preprocessing_function!r}"
            )
        split = _as_number(self.validation_split)
        if not _is_number(split) or not 0 <= split < 1:
            raise ValueError(
                f"`validation_split` must be a number in [0, 1); got {self.validation_split!r}"
            )
        set_(self, "validation_split", split)
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"`interpolation` must be one of {list(INTERPOLATIONS)}; got {self.interpolation!r}"
            )

        set_(self, "kornia", normalise_kornia(self.kornia))

        # Keras' overrides, in Keras' order and with its warnings.
        if self.zca_whitening:
            if not self.featurewise_center:
                set_(self, "featurewise_center", True)
                warnings.warn(
                    "`zca_whitening` overrides `featurewise_center`: it is set to True.",
                    UserWarning,
                    stacklevel=3,
                )
            if self.featurewise_std_normalization:
                set_(self, "featurewise_std_normalization", False)
                warnings.warn(
                    "`zca_whitening` overrides `featurewise_std_normalization`: set to False.",
                    UserWarning,
                    stacklevel=3,
                )
        if self.featurewise_std_normalization and not self.featurewise_center:
            set_(self, "featurewise_center", True)
            warnings.warn(
                "`featurewise_std_normalization` overrides `featurewise_center`: set to True.",
                UserWarning,
                stacklevel=3,
            )
        if self.samplewise_std_normalization and not self.samplewise_center:
            set_(self, "samplewise_center", True)
            warnings.warn(
                "`samplewise_std_normalization` overrides `samplewise_center`: it is set to True.",
                UserWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ derived values

    @property
    def zoom_bounds(self) -> tuple[float, float]:
        """The zoom interval ``(lo, hi)``: ``(1 - z, 1 + z)`` for a float ``zoom_range``."""
        if _is_number(self.zoom_range):
            z = cast(float, self.zoom_range)
            return (1 - z, 1 + z)
        lo, hi = cast(tuple[float, float], self.zoom_range)
        return (lo, hi)

    @property
    def has_geometry(self) -> bool:
        """True when rotation, shift, shear or zoom is on (the affine warp runs)."""
        return bool(
            self.rotation_range
            or self.width_shift_range
            or self.height_shift_range
            or self.shear_range
            or self.zoom_bounds != (1, 1)
        )

    @property
    def has_flips(self) -> bool:
        """True when a horizontal or vertical flip is on."""
        return self.horizontal_flip or self.vertical_flip

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_keras(cls, **kwargs: Any) -> AugmentConfig:
        """Build a config from the keyword arguments of a Keras ``ImageDataGenerator(...)`` call.

        Takes them verbatim. Keras-only arguments are translated or checked and dropped:

        - ``interpolation_order``: 1 -> ``interpolation="bilinear"``, 0 -> ``"nearest"``
          (other spline orders are not supported: ValueError);
        - ``data_format``: None, "channels_last" or "channels_first" is accepted and ignored,
          since our tensors are always (B, C, H, W);
        - ``dtype``: accepted and ignored; the output dtype is `GPUAugment`'s ``dtype``.

        Raises:
            TypeError: An argument ``ImageDataGenerator`` does not take.
            ValueError: An invalid value (as the constructor).
        """
        kwargs = dict(kwargs)
        data_format = kwargs.pop("data_format", None)
        if data_format not in (None, "channels_last", "channels_first"):
            raise ValueError(
                '`data_format` must be None, "channels_last" or "channels_first"; '
                f"got {data_format!r}"
            )
        kwargs.pop("dtype", None)
        if "interpolation_order" in kwargs:
            order = kwargs.pop("interpolation_order")
            if "interpolation" in kwargs:
                raise TypeError("give `interpolation_order` or `interpolation`, not both")
            if order not in (0, 1) or isinstance(order, bool):
                raise ValueError(
                    f"`interpolation_order` must be 1 (bilinear) or 0 (nearest); got {order!r}"
                )
            kwargs["interpolation"] = "bilinear" if order == 1 else "nearest"
        unknown = sorted(set(kwargs) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            names = _field_names(cls) + list(_KERAS_ONLY_KWARGS)
            close = [m for key in unknown for m in difflib.get_close_matches(key, names, n=2)]
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            raise TypeError(
                f"ImageDataGenerator got unexpected keyword arguments {unknown}{hint}; "
                f"it takes {names}"
            )
        return cls(**kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AugmentConfig:
        """Build a config from a mapping of field names (as `to_dict` or a YAML file gives).

        Raises:
            ValueError: An unknown key, or an invalid value.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a config must be a mapping of settings; got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(
                f"unknown augmentation settings {unknown}; the settings are {_field_names(cls)}"
            )
        return cls(**dict(data))

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> AugmentConfig:
        """Load a config from a YAML file path or from YAML text.

        A `pathlib.Path`, an existing file, or a one-line string ending in ``.yaml``/``.yml``
        is read as a file; any other string is parsed as YAML text. An empty document gives
        the default config. Numbers in exponent form without a dot or an exponent sign
        (``1e-6``, ``1e300``, YAML 1.2's floats) are read as floats, not as the strings
        PyYAML's YAML 1.1 rules make of them.

        Raises:
            FileNotFoundError: A ``.yaml`` path that does not exist.
            ValueError: Malformed YAML, a file that is not UTF-8 text (a binary file), a
                document that is not a mapping, or a bad setting (the message names the file).
        """
        where = "YAML text"
        if isinstance(source, os.PathLike) or (
            isinstance(source, str)
            and "\n" not in source
            and (source.endswith((".yaml", ".yml")) or os.path.isfile(source))
        ):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"augmentation config {str(path)!r} does not exist")
            where = str(path)
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"augmentation config {where!r} is not a UTF-8 text (YAML) file: byte "
                    f"{err.start} is {err.object[err.start : err.start + 1]!r}"
                ) from err
        elif isinstance(source, str):
            text = source
        else:
            raise TypeError(f"expected a path or YAML text; got {type(source).__name__}")
        try:
            data = yaml.load(text, Loader=_YamlLoader)  # noqa: S506 (a SafeLoader subclass)
        except yaml.YAMLError as err:
            raise ValueError(f"cannot parse {where} as YAML: {err}") from err
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ValueError(
                f"{where} must hold a mapping of augmentation settings; got a {type(data).__name__}"
            )
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as err:
            raise type(err)(f"{where}: {err}") from err

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain Python values (tuples as lists), in declaration order."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "kornia":
                value = [v.to_dict() if isinstance(v, KorniaSpec) else v for v in value]
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The config as YAML text (every field, in declaration order); also written to ``path``.

        Raises:
            ValueError: ``preprocessing_function`` is set: a callable cannot be saved. Save
                ``dataclasses.replace(config, preprocessing_function=None)`` and set it again
                after loading.
        """
        if self.preprocessing_function is not None:
            raise ValueError(
                "`preprocessing_function` cannot be saved to YAML; save "
                "dataclasses.replace(config, preprocessing_function=None) and set it again "
                "after loading"
            )
        if any(not isinstance(v, KorniaSpec) for v in self.kornia):
            raise ValueError(
                "kornia modules in `kornia` cannot be saved to YAML; give them as specs "
                "({name: ColorJiggle, brightness: 0.2, ...}) to save the config"
            )
        data = self.to_dict()
        del data["preprocessing_function"]
        if not data["kornia"]:
            del data["kornia"]
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def describe(self) -> str:
        """The active settings in words, one line each (``"no augmentation"`` when none)."""
        lines: list[str] = []
        if self.rotation_range:
            lines.append(
                f"rotation: uniform in [-{self.rotation_range}, {self.rotation_range}] deg"
            )
        for name, axis, size in (
            ("width_shift_range", "horizontal", "width"),
            ("height_shift_range", "vertical", "height"),
        ):
            r = getattr(self, name)
            if not r:
                continue
            if isinstance(r, tuple):
                unit = f"x {size}" if max(r) < 1 else "px"
                lines.append(f"{axis} shift: one of {list(r)} ({unit}), random sign")
            elif isinstance(r, int):
                lines.append(f"{axis} shift: whole pixels 0..{r - 1}, random sign")
            elif r < 1:
                lines.append(f"{axis} shift: uniform in [-{r}, {r}] x {size}")
            else:
                lines.append(f"{axis} shift: uniform in [-{r}, {r}] px")
        if self.shear_range:
            lines.append(f"shear: uniform in [-{self.shear_range}, {self.shear_range}] deg")
        lo, hi = self.zoom_bounds
        if (lo, hi) != (1, 1):
            lines.append(f"zoom: x and y independently uniform in [{lo:g}, {hi:g}]")
        if self.has_geometry:
            fill = f"constant {self.cval:g}" if self.fill_mode == "constant" else self.fill_mode
            lines.append(f"fill: {fill}; interpolation: {self.interpolation}")
        if self.horizontal_flip:
            lines.append("horizontal flip: p=0.5")
        if self.vertical_flip:
            lines.append("vertical flip: p=0.5")
        if self.channel_shift_range:
            c = self.channel_shift_range
            lines.append(f"channel shift: uniform in [-{c}, {c}], clipped to the image's range")
        if self.brightness_range is not None:
            lo, hi = self.brightness_range
            lines.append(f"brightness: x uniform in [{lo:g}, {hi:g}], clipped to 0..255")
        lines.extend(describe_kornia(self.kornia))  # on [0, 1], before the normalisation
        if self.preprocessing_function is not None:
            fn = self.preprocessing_function
            lines.append(f"preprocessing_function: {getattr(fn, '__name__', repr(fn))} (per batch)")
        if self.rescale:
            inverse = 1 / self.rescale
            exact = abs(inverse - round(inverse)) < 1e-6 and round(inverse) != 1
            factor = f"1/{round(inverse)}" if exact else f"{self.rescale:g}"
            lines.append(f"rescale: x {factor}")
        if self.samplewise_center:
            lines.append("samplewise center: subtract each image's mean")
        if self.samplewise_std_normalization:
            lines.append("samplewise std: divide each image by its std")
        if self.featurewise_center:
            lines.append("featurewise center: subtract the fitted per-channel mean")
        if self.featurewise_std_normalization:
            lines.append("featurewise std: divide by the fitted per-channel std")
        if self.zca_whitening:
            lines.append(f"ZCA whitening (epsilon {self.zca_epsilon:g})")
        if self.validation_split:
            lines.append(f"validation split: {self.validation_split:g}")
        return "\n".join(lines) if lines else "no augmentation"


class _YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2 floats (``1e-6``, ``1e300``) as floats."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def preset_dir() -> Path:
    """The folder holding the preset YAML files.

    Installed from a wheel, the presets are package data (``gpuaug/presets/*.yaml``, read with
    `importlib.resources`); in a repository checkout (``PYTHONPATH`` or an editable install)
    they are the repository's ``configs/`` folder next to the package, their one source (the
    wheel's ``gpuaug.presets`` is ``configs/`` mapped by ``pyproject.toml``).
    """
    packaged = resources.files("gpuaug").joinpath("presets")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(str(resources.files("gpuaug"))).resolve().parent / "configs"


def _is_recipe(path: Path) -> bool:
    """Whether a preset file is a training recipe (``recipe:`` first), not an `AugmentConfig`."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                return line.startswith("recipe:")
    return False


def preset_names() -> list[str]:
    """The augmentation preset names available in `preset_dir` (file stems), sorted; the
    training recipes beside them (`gpuaug.augment.recipe.load_recipe`) are not among them."""
    folder = preset_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if not _is_recipe(p))


def load_config(name_or_path: str | os.PathLike[str] | AugmentConfig) -> AugmentConfig:
    """A config from a preset name ("chollet_cats_dogs", "none", "strong") or a YAML path.

    A name without a path separator or ``.yaml``/``.yml`` suffix is looked up in
    `preset_dir` (the repository's ``configs/``, or the installed package's presets). An
    `AugmentConfig` is returned as is.

    Raises:
        ValueError: An unknown preset name (the message lists the presets), or a bad file.
        FileNotFoundError: A YAML path that does not exist.
    """
    if isinstance(name_or_path, AugmentConfig):
        return name_or_path
    if isinstance(name_or_path, os.PathLike):
        return AugmentConfig.from_yaml(name_or_path)
    if not isinstance(name_or_path, str):
        raise TypeError(
            "expected a preset name, a YAML path or an AugmentConfig; "
            f"got {type(name_or_path).__name__}"
        )
    text = name_or_path
    looks_like_path = (
        text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text or os.path.isfile(text)
    )
    if looks_like_path:
        return AugmentConfig.from_yaml(Path(text))
    preset = preset_dir() / f"{text}.yaml"
    if preset.is_file() and _is_recipe(preset):
        raise ValueError(
            f"{text!r} is a training recipe (a RecipeConfig), not an augmentation preset: load "
            f"it with gpuaug.augment.recipe.load_recipe({text!r}); the augmentation presets are "
            f"{preset_names()}"
        )
    if not preset.is_file():
        raise ValueError(
            f"unknown augmentation preset {text!r}; the presets in {preset_dir()} are "
            f"{preset_names()} (or give a path to a .yaml file)"
        )
    return AugmentConfig.from_yaml(preset)
