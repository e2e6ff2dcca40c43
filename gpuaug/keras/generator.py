"""``gpuaug.ImageDataGenerator``: Keras' class, so that porting a script is one changed import.

A thin class over `AugmentConfig` and `GPUAugment`: the constructor takes Keras'
``ImageDataGenerator`` keyword arguments verbatim (`AugmentConfig.from_keras`), and the
methods have Keras' names, arguments and defaults:

- ``flow_from_directory``, ``flow`` (in-memory arrays, `gpuaug.data.arrays`) and
  ``flow_from_dataframe`` (`gpuaug.data.dataframe`) return a `gpuaug.GPULoader`, which yields
  ``(x, y)`` (``(x, y, sample_weight)`` with weights) as torch tensors ``(B, C, H, W)`` on the
  device, augmented there. Each also takes gpuaug's loader options by keyword (``device``,
  ``num_workers``, ``cache``, ``steps_per_epoch``, ``drop_last``, ``on_error``,
  ``augment_seed``, ``augment``).
- ``fit``, ``standardize``, ``get_random_transform``, ``apply_transform`` and
  ``random_transform`` take and return numpy arrays in the generator's ``data_format``
  (channels last by default, as Keras), computed with gpuaug's batched code.

Differences from Keras, each announced once per process with a warning that points at the
documentation's table "Keras parity and where we differ": ``preprocessing_function`` runs once
per batch
``(B, C, H, W)`` on the device; ``brightness_range`` clips in float instead of truncating
through PIL; the shifts follow Keras' documentation (``width_shift_range`` horizontal), not
its code (a warning only when the two ranges differ). An argument Keras takes that gpuaug
cannot honour raises ``TypeError`` / ``ValueError`` naming it.

Validation without augmentation: ``subset="validation"`` gives a loader whose random stages
are off (only rescale, ``preprocessing_function`` and the normalisations run, with the
statistics of ``fit``), which Keras cannot do; ``augment=True`` turns augmentation back on.
``seed`` seeds both the order and the augmentation, as Keras; ``augment_seed`` seeds the
augmentation alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
import weakref
from collections.abc import Sequence
from inspect import signature
from typing import Any

import numpy as np
import torch

from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.module import AugmentParams, GPUAugment, apply, sample_params, standardize
from gpuaug.augment.validation import note, share_stats, validation_module
from gpuaug.data.arrays import ArrayDataset, as_image_tensor
from gpuaug.data.directory import DirectoryDataset
from gpuaug.loader.config import LoaderConfig, dtype_name
from gpuaug.loader.gpu_loader import GPULoader

__all__ = ["ImageDataGenerator"]

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
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
        zca = self.augment.zca_matrix
        return None if zca is None else zca.detach().cpu().numpy()

    def _keras_stat(self, value: torch.Tensor | None) -> np.ndarray | None:
        if value is None:
            return None
        flat = value.detach().cpu().reshape(-1).numpy()
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
        """One image (3-D) or a batch (4-D) as a (B, C, H, W) float batch; True if one."""
        ndim = x.ndim if hasattr(x, "ndim") else np.ndim(x)
        if ndim == 3:
            x = x[None]
        elif ndim != 4:
            raise ValueError(
                f"`x` must be one image (3-D) or a batch (4-D); got shape {tuple(np.shape(x))}"
            )
        return self._to_nchw(x).to(torch.float32), ndim == 3

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
        batch (numpy in ``data_format``, or torch ``(B, C, H, W)``); returns a new array."""
        batch, single = self._image(x)
        out = standardize(batch, self.config, self.augment.stats)
        out = self._from_nchw(out, x)
        return out[0] if single else out

    def get_random_transform(self, img_shape: Sequence[int], seed: int | None = None) -> dict:
        """Keras' ``get_random_transform``: one image's random parameters as Keras' dict.

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
        return sample_params(self.config, 1, h, w, generator=generator).to_keras(0)

    def apply_transform(self, x: Any, transform_parameters: dict) -> Any:
        """Keras' ``apply_transform``: the given parameters on one image (no normalisation)."""
        batch, single = self._image(x)
        params = AugmentParams.from_keras([transform_parameters], device=batch.device)
        geometry = dataclasses.replace(
            self.config,
            rescale=None,
            preprocessing_function=None,
            featurewise_center=False,
            featurewise_std_normalization=False,
            samplewise_center=False,
            samplewise_std_normalization=False,
            zca_whitening=False,
            kornia=(),  # Keras' transform only: kornia stages draw their own parameters
        )
        out = self._from_nchw(apply(batch, params, geometry), x)
        return out[0] if single else out

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
    ) -> GPULoader:
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
        if unknown:
            takes = sorted(allowed | {"augment", "on_error"})
            names = takes + list(signature(type(self).flow_from_directory).parameters)[1:]
            close = [m for key in unknown for m in difflib.get_close_matches(key, names, n=2)]
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
        loader = GPULoader(dataset, module, config)
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
    ) -> GPULoader:
        """Keras' ``flow_from_directory``, returning a `gpuaug.GPULoader`.

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
    ) -> GPULoader:
        """Keras' ``flow(x, y)`` for in-memory images, returning a `gpuaug.GPULoader`.

        ``x``: numpy ``(N, H, W, C)`` (per ``data_format``) or torch ``(N, C, H, W)``; ``y``
        any shape; ``sample_weight`` is yielded third (see `gpuaug.data.arrays.ArrayDataset`). The
        images are placed on the device once (``cache="device"``, the default when they take
        less than half the free device memory; else ``"host"``), so an epoch is a gather plus
        the augmentation. Other keyword options as `flow_from_directory`.
        """
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
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            options=options,
            save=(save_to_dir, save_prefix, save_format),
            numpy_hash=True,
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
    ) -> GPULoader:
        """Keras' ``flow_from_dataframe``, returning a `gpuaug.GPULoader`.

        Every Keras class mode, ``"raw"`` and ``"multi_output"`` included (see
        `gpuaug.data.dataframe.DataFrameDataset`); needs pandas (``gpuaug[dataframe]``). Keras'
        deprecated ``has_ext``, ``sort`` and ``drop_duplicates`` are refused. ``on_error``:
        ``"skip"`` (default, Keras': missing files are dropped with a warning) or
        ``"raise"``. Other keyword options as `flow_from_directory`.
        """
        from gpuaug.data.dataframe import DataFrameDataset

        for name in ("has_ext", "sort", "drop_duplicates"):
            if name in options:
                raise TypeError(
                    f"`{name}` is deprecated in Keras and not supported by gpuaug; filenames "
                    "must match the files, the order is the DataFrame's, and duplicates can be "
                    "dropped with DataFrame.drop_duplicates"
                )
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


def _array_cache(nbytes: int, device: torch.device) -> str:
    """``"device"`` when the images take under half the free device memory, else ``"host"``."""
    if device.type != "cuda":
        return "device"
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if nbytes < free // 2 else "host"
