"""``gpuaug.ImageDataGenerator``: Keras' class, so that porting a script is one changed import.

A thin class over `AugmentConfig` and `GPUAugment`: the constructor takes Keras'
``ImageDataGenerator`` keyword arguments verbatim (`AugmentConfig.from_keras`, after the checks
Keras' constructor makes itself, with its error type and words), and the methods have Keras'
names, arguments and defaults:

- ``flow_from_directory``, ``flow`` (in-memory arrays, `gpuaug.data.arrays`; Keras'
  ``(x, x_misc)`` pair too) and ``flow_from_dataframe`` (`gpuaug.data.dataframe`) print Keras'
  ``Found N images ...`` line where Keras prints it and return a `KerasIterator`
  (`gpuaug.keras.iterator`): a
  `gpuaug.GPULoader` with the rest of Keras' iterator surface (``total_batches_seen``,
  ``index_array``, ``on_epoch_end``, Keras' ``batch_index``), which yields ``(x, y)``
  (``(x, y, sample_weight)`` with weights) as torch tensors ``(B, C, H, W)`` on the device,
  augmented there. Each also takes gpuaug's loader options by keyword (``device``,
  ``num_workers``, ``cache``, ``steps_per_epoch``, ``drop_last``, ``on_error``,
  ``augment_seed``, ``augment``).
- ``fit``, ``standardize``, ``get_random_transform``, ``apply_transform`` and
  ``random_transform`` take and return numpy arrays in the generator's ``data_format``
  (channels last by default, as Keras) with the dtypes Keras gives, computed with gpuaug's
  batched code; ``apply_transform`` applies every key of its dict, as Keras, whatever the
  generator's own ranges.

Every difference from Keras is a row of the documentation's table "Keras parity and where we
differ" (docs/keras-differences.md), pinned by a test; those a user may trip on warn once per
process: ``preprocessing_function`` runs once per batch ``(B, C, H, W)`` on the device;
``brightness_range`` clips in float instead of truncating through PIL; the shifts follow Keras'
documentation (``width_shift_range`` horizontal), not its code (a warning only when the two
ranges differ). An argument Keras takes that gpuaug cannot honour raises ``TypeError`` /
``ValueError`` naming it.

Why one module: it is Keras' one class, method for method (eight public methods with Keras'
arguments, and the numpy conversions they share); what stands apart lives apart: the iterator
(`gpuaug.keras.iterator`), ``save_to_dir`` (`gpuaug.keras.saving`), the data sets
(`gpuaug.data`).

Validation without augmentation: ``subset="validation"`` gives a loader whose random stages
are off (only rescale, ``preprocessing_function`` and the normalisations run, with the
statistics of ``fit``), which Keras cannot do; ``augment=True`` turns augmentation back on.
``seed`` seeds both the order and the augmentation, as Keras; ``augment_seed`` seeds the
augmentation alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import warnings
import weakref
from collections.abc import Sequence
from inspect import signature
from typing import Any

import numpy as np
import torch

from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.module import AugmentParams, GPUAugment, sample_params, standardize
from gpuaug.augment.reference import apply_reference
from gpuaug.augment.validation import note, share_stats, validation_module
from gpuaug.data.arrays import ArrayDataset, as_image_tensor
from gpuaug.data.directory import DirectoryDataset
from gpuaug.keras.iterator import KerasIterator, check_lengths_as_keras, split_x_misc
from gpuaug.loader.config import LoaderConfig, dtype_name

__all__ = ["ImageDataGenerator", "KerasIterator"]

_README = "the documentation's page 'Keras parity and where we differ'"
_WARNED: set[str] = set()
_DIFFERENT = {
    "preprocessing_function": "is called once per batch, a float tensor (B, C, H, W) on the "
    "device, not once per (H, W, C) numpy image",
    "brightness_range": "clips x * b to 0..255 in float; Keras truncates through PIL (up to "
    "b + 1 grey levels darker)",
    "width_shift_range": "shifts horizontally and `height_shift_range` vertically (fractions "
    "of the width and height when < 1), as Keras documents; Keras' code swaps them, so with "
    "different ranges the images differ from Keras'",
}
_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
#: Keras' DeprecationWarning texts for ``flow_from_dataframe``'s retired arguments, verbatim.
_DATAFRAME_DEPRECATED = {
    "has_ext": "has_ext is deprecated, filenames in the dataframe have to match the exact "
    "filenames in disk.",
    "sort": "sort is deprecated, batches will be created in thesame order than the filenames "
    "provided if `shuffle`is set to `False`.",
    "drop_duplicates": "drop_duplicates is deprecated, you can drop duplicates by using the "
    "pandas.DataFrame.drop_duplicates method.",
}
#: Keras' ``apply_affine_transform`` parameters and their "off" values.
_WITH_CLASSES = ("categorical", "binary", "sparse")
_IDENTITY = {"theta": 0, "tx": 0, "ty": 0, "shear": 0, "zx": 1, "zy": 1}


def _warn_once(name: str) -> None:
    if name in _WARNED:
        return
    _WARNED.add(name)
    warnings.warn(
        f"gpuaug.ImageDataGenerator: `{name}` {_DIFFERENT[name]}; see {_README}",
        UserWarning,
        stacklevel=4,
    )


def _output_dtype(dtype: Any) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        name = dtype_name(dtype)
    else:
        name = str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype
    if name not in _DTYPES:
        raise ValueError(
            f"`dtype` must be one of {list(_DTYPES)} (the batches' float dtype); got {dtype!r}"
        )
    return _DTYPES[name]


def _check_as_keras(kwargs: dict[str, Any]) -> None:
    """The checks Keras' constructor makes itself, with its error type and the start of its
    message (then `AugmentConfig` checks everything, naming the field).

    Raises:
        ValueError: ``data_format``, ``validation_split``, ``zoom_range`` or
            ``brightness_range`` of a form Keras refuses.
    """
    data_format = kwargs.get("data_format")
    if data_format is not None and data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            '`data_format` should be `"channels_last"` (channel after row and column) or '
            '`"channels_first"` (channel before row and column). '
            f"Received: {data_format}"
        )
    split = kwargs.get("validation_split")
    if isinstance(split, int | float) and split and not 0 < split < 1:
        raise ValueError(f"`validation_split` must be strictly between 0 and 1.  Received: {split}")
    zoom = kwargs.get("zoom_range", 0.0)
    is_number = (
        np.ndim(zoom) == 0
        and not isinstance(zoom, bool | str)
        and np.asarray(zoom).dtype.kind in "iuf"
    )
    is_pair = (
        isinstance(zoom, list | tuple | np.ndarray)
        and np.ndim(zoom) == 1
        and len(zoom) == 2
        and all(isinstance(v, int | float | np.number) for v in zoom)
    )
    if not (is_number or is_pair):
        raise ValueError(
            f"`zoom_range` should be a float or a tuple or list of two floats. Received: {zoom}"
        )
    brightness = kwargs.get("brightness_range")
    if brightness is not None and (
        not isinstance(brightness, tuple | list | np.ndarray) or len(brightness) != 2
    ):
        raise ValueError(
            f"`brightness_range should be tuple or list of two floats. Received: {brightness}"
        )


def _unsupported(name: str, value: Any, default: Any, why: str) -> None:
    if value != default:
        raise ValueError(f"`{name}`={value!r} is not supported by gpuaug: {why}")


class ImageDataGenerator:
    """Keras' ``ImageDataGenerator``, augmenting batches on the GPU.

    Args:
        **kwargs: Keras' ``ImageDataGenerator`` arguments, verbatim (`AugmentConfig.from_keras`:
            every augmentation and normalisation argument, ``validation_split``,
            ``interpolation_order``, ``data_format``, ``dtype``).
        device: where the ``flow*`` loaders augment and return batches (default CUDA when
            available); also where ``fit`` computes.

    Attributes:
        config: the `AugmentConfig`. augment: the `GPUAugment` the training loaders use
            (``fit`` stores its statistics there). data_format: of numpy arrays given to
            ``flow``, ``fit`` and the per-image methods. dtype: the batches' float dtype.
        mean, std, zca_whitening_matrix: the fitted statistics as Keras shapes them (numpy;
            ``None`` before ``fit``).

    Raises:
        TypeError: an argument Keras' ``ImageDataGenerator`` does not take.
        ValueError: an invalid value (naming it), an unsupported ``dtype``.
    """

    def __init__(self, *, device: str | torch.device | None = None, **kwargs: Any) -> None:
        _check_as_keras(kwargs)
        self.data_format = kwargs.get("data_format") or "channels_last"
        self.dtype = _output_dtype(kwargs.get("dtype"))
        self.config = AugmentConfig.from_keras(**kwargs)
        for name in ("preprocessing_function", "brightness_range"):
            if kwargs.get(name):
                _warn_once(name)
        # Keras swaps the two shift ranges; equal ranges (the usual case) come out the same.
        if self.config.width_shift_range != self.config.height_shift_range:
            _warn_once("width_shift_range")
        self.device = (
            torch.device(device)
            if device is not None
            else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.augment = GPUAugment(self.config, dtype=self.dtype)
        self._validation: weakref.WeakSet[GPUAugment] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"gpuaug.ImageDataGenerator({self.config.describe()!r}, device={self.device})"

    # ------------------------------------------------------------------ fitted statistics
    @property
    def mean(self) -> np.ndarray | None:
        return self._keras_stat(self.augment.mean)

    @property
    def std(self) -> np.ndarray | None:
        return self._keras_stat(self.augment.std)

    @property
    def zca_whitening_matrix(self) -> np.ndarray | None:
        """The ZCA matrix acting on images flattened as Keras flattens them (``data_format``
        order: ``(H, W, C)`` for channels last; gpuaug computes it channels first)."""
        zca = self.augment.zca_matrix
        if zca is None:
            return None
        matrix = zca.detach().cpu().numpy().astype(np.float64)  # Keras' is float64 too
        if self.data_format == "channels_first" or self.augment.mean is None:
            return matrix
        c = int(self.augment.mean.numel())
        order = np.arange(matrix.shape[0]).reshape(c, -1).T.reshape(-1)  # (H, W, C) -> ours
        return matrix[np.ix_(order, order)]

    @property
    def _numpy_dtype(self) -> np.dtype:
        """The generator's dtype as numpy's (bfloat16, which numpy lacks: float32)."""
        name = dtype_name(self.dtype)
        return np.dtype("float32" if name == "bfloat16" else name)

    def _keras_stat(self, value: torch.Tensor | None) -> np.ndarray | None:
        if value is None:
            return None
        flat = value.detach().cpu().reshape(-1).numpy().astype(self._numpy_dtype, copy=False)
        shape = (1, 1, -1) if self.data_format == "channels_last" else (-1, 1, 1)
        return flat.reshape(shape)

    # ------------------------------------------------------------------ arrays in and out
    def _to_nchw(self, x: Any) -> torch.Tensor:
        fmt = self.data_format if not isinstance(x, torch.Tensor) else None
        return as_image_tensor(x, fmt).to(self.device)

    def _from_nchw(self, x: torch.Tensor, like: Any) -> Any:
        if isinstance(like, torch.Tensor):
            return x
        out = x.detach().cpu()
        if self.data_format == "channels_last":
            out = out.permute(0, 2, 3, 1)
        return out.numpy()

    def _image(self, x: Any) -> tuple[torch.Tensor, bool]:
        """One image (3-D) or a batch (4-D) as a (B, C, H, W) float batch; True if one.

        float64 stays float64 (as Keras computes it); any other type becomes float32."""
        if not isinstance(x, torch.Tensor):
            x = np.asarray(x)
        ndim = x.ndim
        if ndim == 3:
            x = x[None]
        elif ndim != 4:
            raise ValueError(
                f"`x` must be one image (3-D) or a batch (4-D); got shape {tuple(np.shape(x))}"
            )
        if isinstance(x, torch.Tensor):
            batch = x.detach()
        else:
            array = np.asarray(x)
            if array.dtype == object or array.dtype.kind not in "biuf":
                raise TypeError(f"`x` must hold numbers; got an array of dtype {array.dtype}")
            batch = torch.from_numpy(np.array(array, copy=True))
            if self.data_format == "channels_last":
                batch = batch.permute(0, 3, 1, 2)
        work = torch.float64 if batch.dtype == torch.float64 else torch.float32
        return batch.to(self.device, work).contiguous(), ndim == 3

    def _keras_output(self, out: torch.Tensor, x: Any, single: bool) -> Any:
        """``out`` as Keras returns it for ``x``: numpy in ``data_format`` with ``x``'s dtype
        (an integer type rounded and clipped to its range, as scipy writes it), or a tensor
        for a tensor ``x``."""
        result = self._from_nchw(out, x)
        if not isinstance(x, torch.Tensor):
            dtype = np.asarray(x).dtype
            if dtype.kind in "biu":
                info = np.iinfo(dtype) if dtype.kind != "b" else None
                result = np.rint(result)
                if info is not None:
                    result = np.clip(result, info.min, info.max)
            result = result.astype(dtype, copy=False)
        return result[0] if single else result

    # ------------------------------------------------------------------ Keras' methods
    def fit(self, x: Any, augment: bool = False, rounds: int = 1, seed: int | None = None) -> None:
        """Keras' ``fit``: the featurewise statistics (mean, std, ZCA) of sample images.

        Args:
            x: images, numpy ``(N, H, W, C)`` (per ``data_format``) or torch ``(N, C, H, W)``.
            augment: fit on augmented copies, as Keras.
            rounds: how many augmented copies (with ``augment``), as Keras.
            seed: seed of the augmentation (a torch generator; Keras reseeds numpy's).

        Raises:
            ValueError: ``x`` is not 4-D. TypeError: not numeric.
        """
        images = self._to_nchw(x)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=images.device).manual_seed(seed)
        self.augment.to(images.device)
        self.augment.fit(images, augment=augment, rounds=rounds, generator=generator)
        for module in list(self._validation):
            share_stats(self.augment, module)

    def standardize(self, x: Any) -> Any:
        """Keras' ``standardize``: preprocessing, rescale and normalisation of an image or a
        batch, in place for a float numpy array, as Keras (it returns ``x`` itself).

        With ``zca_whitening``, as Keras: the steps before it in place, then a new float64
        array. A torch tensor ``(B, C, H, W)`` or ``(C, H, W)`` gives a new tensor. As Keras'
        in-place arithmetic does, an integer numpy array is refused when a step would make it
        float.

        Raises:
            TypeError: an integer numpy array with a step to apply.
        """
        if not isinstance(x, torch.Tensor) and not _standardizes_anything(self.config):
            return x  # Keras: nothing to do, x itself
        if not isinstance(x, torch.Tensor) and np.asarray(x).dtype.kind in "biu":
            raise TypeError(
                f"`x` is an integer array ({np.asarray(x).dtype}); standardize works in place "
                "as in Keras and cannot store floats in it: pass x.astype('float32')"
            )
        batch, single = self._image(x)
        if isinstance(x, torch.Tensor):
            out = standardize(batch, self.config, self.augment.stats)
            return out[0] if single else out
        zca = self.zca_whitening_matrix if self.config.zca_whitening else None
        config = (
            dataclasses.replace(self.config, zca_whitening=False)
            if zca is not None
            else self.config
        )
        out = standardize(batch, config, self.augment.stats)
        result = self._keras_output(out, x, single)
        if isinstance(x, np.ndarray):
            np.copyto(x, result)  # in place, as Keras (a read-only array raises ValueError)
            result = x
        if zca is None:
            return result
        # Keras' last step makes a new array: the images flattened in `data_format` order
        flat = result.reshape(-1, math.prod(result.shape[-3:]))
        return np.reshape(flat @ zca, result.shape)

    def get_random_transform(self, img_shape: Sequence[int], seed: int | None = None) -> dict:
        """Keras' ``get_random_transform``: one image's random parameters as Keras' dict.

        The stages the generator leaves off hold Keras' values for "off" (``0``, ``1``,
        ``None``), flips are ``0`` or ``1``.

        Args:
            img_shape: the image's shape in ``data_format`` (``(H, W, C)`` by default).
            seed: seed of a torch generator (Keras reseeds numpy's global generator).
        """
        if len(img_shape) != 3:
            raise ValueError(f"`img_shape` must be 3-D (one image); got {tuple(img_shape)}")
        if self.data_format == "channels_last":
            h, w = int(img_shape[0]), int(img_shape[1])
        else:
            h, w = int(img_shape[1]), int(img_shape[2])
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        params = sample_params(self.config, 1, h, w, generator=generator).to_keras(0)
        cfg = self.config
        off = {
            "theta": not cfg.rotation_range,
            "tx": not cfg.width_shift_range,
            "ty": not cfg.height_shift_range,
            "shear": not cfg.shear_range,
            "zx": cfg.zoom_bounds == (1, 1),
            "zy": cfg.zoom_bounds == (1, 1),
        }
        for key, is_off in off.items():
            if is_off:
                params[key] = _IDENTITY[key]
        params["flip_horizontal"] = int(params["flip_horizontal"])
        params["flip_vertical"] = int(params["flip_vertical"])
        if not cfg.channel_shift_range:
            params["channel_shift_intensity"] = None
        elif params["channel_shift_intensity"] is None:  # a draw of exactly 0
            params["channel_shift_intensity"] = 0.0
        if cfg.brightness_range is not None and params["brightness"] is None:
            params["brightness"] = 1.0  # a draw of exactly 1
        return params

    def apply_transform(self, x: Any, transform_parameters: dict) -> Any:
        """Keras' ``apply_transform``: the given parameters on one image (no normalisation).

        As Keras, every key of ``transform_parameters`` is applied whatever the generator's
        own ranges and flips are (``{"flip_vertical": True}`` flips a generator built without
        ``vertical_flip``); missing keys and Keras' "off" values (``0``, ``1``, ``None``,
        ``False``) leave their stage out. The result has the dtype Keras' numpy arithmetic
        gives: ``x``'s, promoted by the channel shift's addition, float32 after ``brightness``
        (its PIL round trip); an integer result is rounded and clipped, as scipy writes it.

        Raises:
            TypeError: ``transform_parameters`` is not a dict.
        """
        if not isinstance(transform_parameters, dict):
            raise TypeError(
                "`transform_parameters` must be a dict (Keras' get_random_transform output); "
                f"got {type(transform_parameters).__name__}"
            )
        batch, single = self._image(x)
        params = AugmentParams.from_keras([transform_parameters], device=batch.device)
        config = _config_for(self.config, transform_parameters)
        out = apply_reference(batch, params, config, dtype=batch.dtype)  # the plain path
        if isinstance(x, torch.Tensor):
            return out[0] if single else out
        dtype = _keras_transform_dtype(np.asarray(x), transform_parameters)
        return self._keras_output(out, np.zeros(0, dtype), single)

    def random_transform(self, x: Any, seed: int | None = None) -> Any:
        """Keras' ``random_transform``: fresh random parameters applied to one image."""
        shape = np.shape(x)
        if len(shape) != 3:
            raise ValueError(f"`x` must be one image (3-D); got shape {tuple(shape)}")
        if isinstance(x, torch.Tensor):  # (C, H, W) -> the channels-last shape Keras reads
            shape = (shape[1], shape[2], shape[0]) if self.data_format == "channels_last" else shape
        return self.apply_transform(x, self.get_random_transform(shape, seed))

    # ------------------------------------------------------------------ loaders
    def _module(self, subset: str | None, augment: bool | None) -> tuple[GPUAugment, list[str]]:
        """The training module, or for validation a deterministic one sharing its statistics."""
        if augment is None:
            augment = subset != "validation"
        if not isinstance(augment, bool):
            raise TypeError(f"`augment` must be a bool or None; got {augment!r}")
        if augment:
            return self.augment, []
        module = validation_module(self.augment)
        self._validation.add(module)
        why = "subset='validation'" if subset == "validation" else "augment=False"
        return module, [note(why, "pass augment=True")]

    def _loader(
        self,
        dataset: Any,
        module: GPUAugment,
        notes: list[str],
        *,
        batch_size: int,
        shuffle: bool,
        seed: int | None,
        options: dict[str, Any],
        save: tuple[Any, str, str],
        numpy_hash: bool = False,
        x_misc: list[torch.Tensor] | None = None,
        output_dtypes: list[torch.dtype | None] | None = None,
        method: str = "flow_from_directory",
    ) -> KerasIterator:
        allowed = {
            "device",
            "num_workers",
            "cache",
            "cache_dir",
            "steps_per_epoch",
            "drop_last",
            "augment_seed",
            "progress",
            "decode",
        }
        unknown = sorted(set(options) - allowed)
        if unknown:  # hints from the method called: its own arguments, not another flow's
            params = signature(getattr(type(self), method)).parameters
            own = [n for n, p in params.items() if n != "self" and p.kind != p.VAR_KEYWORD]
            takes = sorted(allowed | ({"augment", "on_error"} & set(own)))
            names = list(dict.fromkeys(takes + own))
            close = [m for key in unknown for m in difflib.get_close_matches(key, names, n=2)]
            close = list(dict.fromkeys(close))
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            raise TypeError(
                f"unexpected keyword argument(s) {unknown}{hint}; besides Keras' arguments the "
                f"flow methods take {takes}"
            )
        device = options.pop("device", None)
        config = LoaderConfig.from_arguments(
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            device=device if device is not None else self.device,
            dtype=self.dtype,
            **options,
        )
        loader = KerasIterator(dataset, module, config, x_misc=x_misc, output_dtypes=output_dtypes)
        loader.augment_notes = notes
        save_to_dir, save_prefix, save_format = save
        if save_to_dir:
            from gpuaug.keras.saving import BatchSaver

            loader.saver = BatchSaver(
                save_to_dir, save_prefix, save_format, hash_range=10**4 if numpy_hash else 10**7
            )
        return loader

    def flow_from_directory(
        self,
        directory: str | os.PathLike[str],
        target_size: tuple[int, int] = (256, 256),
        color_mode: str = "rgb",
        classes: Sequence[str] | None = None,
        class_mode: str | None = "categorical",
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = None,
        save_to_dir: str | os.PathLike[str] | None = None,
        save_prefix: str = "",
        save_format: str = "png",
        follow_links: bool = False,
        subset: str | None = None,
        interpolation: str = "nearest",
        keep_aspect_ratio: bool = False,
        *,
        augment: bool | None = None,
        on_error: str = "raise",
        **options: Any,
    ) -> KerasIterator:
        """Keras' ``flow_from_directory``, returning a `KerasIterator` (a `gpuaug.GPULoader`).

        Keras' arguments with Keras' defaults; then, by keyword: ``augment`` (``None``: on,
        except for ``subset="validation"``), ``on_error`` (see `gpuaug.DirectoryDataset`) and
        the loader options ``device``, ``num_workers``, ``cache``, ``cache_dir``,
        ``steps_per_epoch``, ``drop_last``, ``augment_seed``, ``progress``, ``decode``.
        """
        module, notes = self._module(subset, augment)
        dataset = DirectoryDataset(
            directory,
            target_size=target_size,
            color_mode=color_mode,
            classes=classes,
            class_mode=class_mode,
            interpolation=interpolation,
            follow_links=follow_links,
            validation_split=self.config.validation_split,
            subset=subset,
            on_error=on_error,
            keep_aspect_ratio=keep_aspect_ratio,
        )
        print(f"Found {len(dataset)} images belonging to {dataset.num_classes} classes.")
        return self._loader(
            dataset,
            module,
            notes,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            options=options,
            save=(save_to_dir, save_prefix, save_format),
        )

    def flow(
        self,
        x: Any,
        y: Any = None,
        batch_size: int = 32,
        shuffle: bool = True,
        sample_weight: Any = None,
        seed: int | None = None,
        save_to_dir: str | os.PathLike[str] | None = None,
        save_prefix: str = "",
        save_format: str = "png",
        ignore_class_split: bool = False,
        subset: str | None = None,
        *,
        augment: bool | None = None,
        **options: Any,
    ) -> KerasIterator:
        """Keras' ``flow(x, y)`` for in-memory images, returning a `KerasIterator`.

        ``x``: numpy ``(N, H, W, C)`` (per ``data_format``) or torch ``(N, C, H, W)``; ``y``
        any shape; ``sample_weight`` is yielded third (see `gpuaug.data.arrays.ArrayDataset`). The
        images are placed on the device once (``cache="device"``, the default when they take
        less than half the free device memory; else ``"host"``), so an epoch is a gather plus
        the augmentation. Other keyword options as `flow_from_directory`.
        """
        x, x_misc = split_x_misc(x)
        check_lengths_as_keras(x, y, sample_weight)
        if x_misc and subset is not None:  # split as the images: validation first (Keras)
            cut = int(len(x) * self.config.validation_split)
            part = slice(0, cut) if subset == "validation" else slice(cut, None)
            x_misc = [m[part] for m in x_misc]
        module, notes = self._module(subset, augment)
        fmt = self.data_format if not isinstance(x, torch.Tensor) else None
        dataset = ArrayDataset(
            x,
            y,
            sample_weight,
            data_format=fmt,
            validation_split=self.config.validation_split,
            subset=subset,
            ignore_class_split=ignore_class_split,
        )
        device = torch.device(options.get("device") or self.device)
        options.setdefault("cache", _array_cache(dataset.nbytes, device))
        if options["cache"] is None:
            options.setdefault("num_workers", 0)  # the array is in memory: nothing to decode
        return self._loader(
            dataset,
            module,
            notes,
            method="flow",
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            options=options,
            save=(save_to_dir, save_prefix, save_format),
            numpy_hash=True,
            x_misc=x_misc,
        )

    def flow_from_dataframe(
        self,
        dataframe: Any,
        directory: str | os.PathLike[str] | None = None,
        x_col: str = "filename",
        y_col: str | list[str] = "class",
        weight_col: str | None = None,
        target_size: tuple[int, int] = (256, 256),
        color_mode: str = "rgb",
        classes: Sequence[str] | None = None,
        class_mode: str | None = "categorical",
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = None,
        save_to_dir: str | os.PathLike[str] | None = None,
        save_prefix: str = "",
        save_format: str = "png",
        subset: str | None = None,
        interpolation: str = "nearest",
        validate_filenames: bool = True,
        *,
        keep_aspect_ratio: bool = False,
        augment: bool | None = None,
        on_error: str = "skip",
        **options: Any,
    ) -> KerasIterator:
        """Keras' ``flow_from_dataframe``, returning a `KerasIterator` (a `gpuaug.GPULoader`).

        Every Keras class mode, ``"raw"`` and ``"multi_output"`` included (see
        `gpuaug.data.dataframe.DataFrameDataset`); needs pandas (``gpuaug[dataframe]``). Keras'
        deprecated ``has_ext``, ``sort`` and ``drop_duplicates`` are taken and ignored with
        Keras' ``DeprecationWarning``. ``on_error``:
        ``"skip"`` (default, Keras': missing files are dropped with a warning) or
        ``"raise"``. Other keyword options as `flow_from_directory`.
        """
        from gpuaug.data.dataframe import DataFrameDataset

        for name, message in _DATAFRAME_DEPRECATED.items():
            if name in options:  # Keras warns and ignores them; so do we
                options.pop(name)
                warnings.warn(message, DeprecationWarning, stacklevel=2)
        module, notes = self._module(subset, augment)
        dataset = DataFrameDataset(
            dataframe,
            directory,
            x_col=x_col,
            y_col=y_col,
            weight_col=weight_col,
            target_size=target_size,
            color_mode=color_mode,
            classes=classes,
            class_mode=class_mode,
            validation_split=self.config.validation_split,
            subset=subset,
            interpolation=interpolation,
            keep_aspect_ratio=keep_aspect_ratio,
            validate_filenames=validate_filenames,
            on_error=on_error,
        )
        validated = "validated" if validate_filenames else "non-validated"
        found = f"Found {len(dataset)} {validated} image filenames"
        if dataset.class_mode in _WITH_CLASSES:
            found += f" belonging to {len(dataset.classes)} classes"
        print(found + ".")
        return self._loader(
            dataset,
            module,
            notes,
            method="flow_from_dataframe",
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            options=options,
            save=(save_to_dir, save_prefix, save_format),
            output_dtypes=_multi_output_dtypes(dataframe, y_col)
            if dataset.class_mode == "multi_output"
            else None,
        )


def _multi_output_dtypes(dataframe: Any, y_col: Sequence[str]) -> list[torch.dtype | None]:
    """The dtype Keras gives each ``multi_output`` target: ``np.array`` of the column's values
    as a list (Python ints -> int64, floats -> float64), or ``None`` where that is no number
    array (then the data set's own dtype stays)."""
    dtypes: list[torch.dtype | None] = []
    for col in y_col:
        try:
            kind = np.array(dataframe[col].tolist()).dtype
        except ValueError:  # ragged rows: not one array
            kind = np.dtype(object)
        dtypes.append(torch.from_numpy(np.zeros(0, kind)).dtype if kind.kind in "biuf" else None)
    return dtypes


def _keras_transform_dtype(x: np.ndarray, transform_parameters: dict) -> np.dtype:
    """The dtype of Keras' ``apply_transform(x, transform_parameters)``, by its own numpy
    arithmetic: the warp and the flips keep ``x``'s dtype; the channel shift adds a number
    (numpy's promotion rules); brightness goes through PIL and ``img_to_array`` (float32),
    rescaled with the image's own range (its dtype) when ``x`` leaves 0..255."""
    dtype = x.dtype
    shift = transform_parameters.get("channel_shift_intensity")
    if shift is not None:
        dtype = (np.zeros(1, dtype) + shift).dtype
    if transform_parameters.get("brightness") is not None:
        outside = x.size and (x.min() < 0 or x.max() > 255)
        dtype = np.result_type(np.float32, dtype) if outside else np.dtype(np.float32)
    return dtype


def _standardizes_anything(config: AugmentConfig) -> bool:
    """Whether ``standardize`` has a step to run (Keras returns ``x`` untouched otherwise)."""
    return bool(
        config.preprocessing_function is not None
        or config.rescale
        or config.samplewise_center
        or config.samplewise_std_normalization
        or config.featurewise_center
        or config.featurewise_std_normalization
        or config.zca_whitening
    )


def _config_for(config: AugmentConfig, transform_parameters: dict) -> AugmentConfig:
    """The config of one ``apply_transform`` call: the generator's fill mode, ``cval`` and
    interpolation, and on exactly the stages the parameters ask for (the stage switches only:
    the values come from the parameters); nothing else (no normalisation, no other stage).

    Keras applies whatever the dict holds; the loader's rule (a stage the config turns off is
    skipped whatever the params hold) would drop e.g. ``{"flip_vertical": True}`` on a
    generator built without ``vertical_flip``.
    """
    get = transform_parameters.get
    geometry = any(get(k) is not None and get(k) != v for k, v in _IDENTITY.items())
    return AugmentConfig(
        fill_mode=config.fill_mode,
        cval=config.cval,
        interpolation=config.interpolation,
        rotation_range=1.0 if geometry else 0.0,  # a switch: the angle is the params'
        horizontal_flip=bool(get("flip_horizontal", False)),
        vertical_flip=bool(get("flip_vertical", False)),
        channel_shift_range=1.0 if get("channel_shift_intensity") is not None else 0.0,
        brightness_range=(1.0, 1.0) if get("brightness") is not None else None,
    )


def _array_cache(nbytes: int, device: torch.device) -> str:
    """``"device"`` when the images take under half the free device memory, else ``"host"``."""
    if device.type != "cuda":
        return "device"
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if nbytes < free // 2 else "host"
