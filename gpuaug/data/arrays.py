"""``ArrayDataset``: images already in memory, the data set behind ``ImageDataGenerator.flow``.

Keras' ``flow(x, y)`` takes a numpy array ``(N, H, W, C)``; here a numpy array is read the same
way (``data_format="channels_last"``, Keras' default) and a torch tensor as ``(N, C, H, W)``
(PyTorch's layout), unless ``data_format`` says otherwise. The images are stored once as one
``(N, C, H, W)`` tensor (uint8 stays uint8; any other number type becomes float32 on the
0..255 scale as Keras reads it); :meth:`ArrayDataset.as_cache` puts that tensor on the device
once, so that with ``cache="device"`` an epoch of `gpuaug.GPULoader` is a gather plus the
augmentation (no worker process, no copy per batch).

Labels ``y`` may have any shape (``(N,)`` class indices, ``(N, K)`` one-hot or regression
targets, ...) and any number type; they are yielded as given, in their own dtype (as Keras),
gathered on the device. ``sample_weight`` ``(N,)`` is yielded as the third element, as Keras
does; without ``y`` a batch is the images alone (Keras ignores the weights then, and so do we).

``validation_split`` with ``subset`` splits as Keras' ``NumpyArrayIterator``: the first
``int(N * validation_split)`` samples are ``"validation"``, the rest ``"training"``, and with
labels Keras' check that both parts hold the same classes is kept (``ignore_class_split=True``
turns it off).
"""

from __future__ import annotations

import numbers
from collections import Counter
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gpuaug.data.cache import ImageCache
from gpuaug.data.directory import check_split
from gpuaug.data.pixel_layout import as_layout, rgbx_pixels
from gpuaug.device import host_to_device

__all__ = ["DATA_FORMATS", "ArrayDataset", "as_image_tensor"]

DATA_FORMATS: tuple[str, ...] = ("channels_last", "channels_first")


def _to_tensor(value: Any, name: str) -> torch.Tensor:
    """A numpy array, tensor or nested sequence of numbers as a CPU tensor (no copy if possible)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    else:
        array = np.asarray(value)
        if array.dtype == object or array.dtype.kind in "USVMm":
            raise TypeError(
                f"`{name}` must hold numbers; got an array of dtype {array.dtype} "
                f"(shape {array.shape})"
                + (
                    "; encode string labels as integers first, e.g. "
                    "classes, y = np.unique(y, return_inverse=True)"
                    if name == "y"
                    else ""
                )
            )
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # torch wants writable memory; copy read-only views
            array = array.copy()
        tensor = torch.from_numpy(array)
    if tensor.dtype == torch.bool and name == "x":
        raise TypeError(f"`{name}` must hold numbers; got a bool array")
    if tensor.is_complex():
        raise TypeError(f"`{name}` must hold real numbers; got dtype {tensor.dtype}")
    return tensor


def as_image_tensor(x: Any, data_format: str | None = None) -> torch.Tensor:
    """Images as one ``(N, C, H, W)`` CPU tensor, uint8 kept, any other number type float32.

    Args:
        x: a numpy array (``(N, H, W, C)`` unless ``data_format="channels_first"``) or a torch
            tensor (``(N, C, H, W)`` unless ``data_format="channels_last"``).
        data_format: ``"channels_last"``, ``"channels_first"`` or ``None`` (by type, as above).

    Raises:
        TypeError: ``x`` is not numeric (strings, objects, bools, complex), or a tuple/list
            (Keras' ``(x, x_misc)`` form is not supported).
        ValueError: ``x`` is not 4-D; an unknown ``data_format``.

    Shape:
        x -> ``(N, C, H, W)`` uint8 or float32, CPU, contiguous.
    """
    return _image_view(x, data_format).contiguous()


def _image_view(x: Any, data_format: str | None = None) -> torch.Tensor:
    """`as_image_tensor` without the final copy to a contiguous layout: a view of ``x`` when it
    is uint8 or float32 already (a channels-last array gives an ``(N, C, H, W)`` view with
    channels-last strides), else one converted copy in that layout."""
    if data_format is not None and data_format not in DATA_FORMATS:
        raise ValueError(
            f"`data_format` must be one of {list(DATA_FORMATS)} or None; got {data_format!r}"
        )
    if isinstance(x, tuple | list) and len(x) == 2 and not isinstance(x[0], numbers.Number):
        raise TypeError(
            "`x` must be one array of images; Keras' (x, x_misc) pair of arrays is not "
            "supported (yield the extra inputs from your own loop)"
        )
    channels_first = (
        data_format == "channels_first" if data_format is not None else isinstance(x, torch.Tensor)
    )
    tensor = _to_tensor(x, "x")
    layout = "(N, C, H, W)" if channels_first else "(N, H, W, C)"
    if tensor.ndim != 4:
        hint = ""
        if tensor.ndim == 3:
            hint = (
                "; for single-channel images add a channel axis ("
                + ("x[:, None]" if channels_first else "x[..., None]")
                + "), for one image add a batch axis"
            )
        raise ValueError(
            f"`x` must be a 4-D array of images {layout}; got shape {tuple(tensor.shape)}{hint}"
        )
    if not channels_first:
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.dtype != torch.uint8:
        tensor = tensor.to(torch.float32)  # keeps the strides: the one copy, if any
    return tensor


class ArrayDataset(Dataset):
    """In-memory images with optional labels and sample weights (Keras' ``flow(x, y)``).

    Follows the data set protocol of `gpuaug.loader.stages` (``samples``, ``targets``, ``load``...)
    and adds :meth:`batch_outputs` (what a batch yields after the images) and
    :meth:`as_cache` (the images as a ready-made cache, placed on the device once).

    Args:
        x: images: numpy ``(N, H, W, C)`` or torch ``(N, C, H, W)`` (see `as_image_tensor`),
            uint8 or float on the 0..255 scale.
        y: labels of any shape ``(N, ...)`` and number type, or ``None``.
        sample_weight: ``(N,)`` numbers, or ``None``; yielded third (only with ``y``).
        data_format: the layout of ``x``; ``None``: by type.
        validation_split: fraction held out (the first samples, as Keras).
        subset: ``"training"``, ``"validation"`` or ``None`` (all samples).
        ignore_class_split: skip Keras' check that both subsets hold the same classes.

    Attributes:
        images: ``(n, C, H, W)`` uint8 or float32 CPU tensor of this subset: a view of ``x``
            when ``x`` is uint8 or float32 already (not copied, as Keras keeps a float32 ``x``:
            changing ``x`` in place changes later epochs), else its one converted copy.
        y: CPU tensor of this subset's labels, or ``None``.
        sample_weight: CPU tensor of this subset's weights, or ``None``.
        class_mode: ``"raw"`` with labels, else ``None``.
        class_to_idx: for integer class labels ``(N,)``; else empty.
        target_size: ``(H, W)`` of the images. Also ``channels``, ``classes``, ``samples``
            and ``targets``, as `gpuaug.DirectoryDataset`.

    Raises:
        TypeError: non-numeric ``x``, ``y`` or ``sample_weight``.
        ValueError: ``x`` not 4-D; ``x``, ``y`` and ``sample_weight`` of different lengths;
            ``sample_weight`` not 1-D; a bad ``subset``/``validation_split``; subsets with
            different classes (as Keras).
    """

    color_mode = "array"
    interpolation = "nearest"  # nothing is resized; read by reports only
    on_error = "raise"

    def __init__(
        self,
        x: Any,
        y: Any = None,
        sample_weight: Any = None,
        *,
        data_format: str | None = None,
        validation_split: float = 0.0,
        subset: str | None = None,
        ignore_class_split: bool = False,
    ) -> None:
        super().__init__()
        images = _image_view(x, data_format)  # no copy of a uint8 / float32 array
        n = images.shape[0]
        _check_some_images(images, x)
        labels = None if y is None else _to_tensor(y, "y")
        labels = None if labels is None else _widen_unsigned(labels, "y")
        weights = None if sample_weight is None else _to_tensor(sample_weight, "sample_weight")
        if labels is not None and labels.ndim == 0:
            raise ValueError(f"`y` must have one label per image (N, ...); got a scalar {y!r}")
        if labels is not None and len(labels) != n:
            raise ValueError(
                "`x` (images) and `y` (labels) must have the same length; got "
                f"x.shape = {tuple(np.shape(x))}, y.shape = {tuple(labels.shape)}"
            )
        if weights is not None:
            if weights.ndim != 1:
                raise ValueError(
                    f"`sample_weight` must be 1-D (N,); got shape {tuple(weights.shape)}"
                )
            if len(weights) != n:
                raise ValueError(
                    "`x` (images) and `sample_weight` must have the same length; got "
                    f"x.shape = {tuple(np.shape(x))}, sample_weight.shape = "
                    f"{tuple(weights.shape)}"
                )
            weights = weights.to(torch.float32)
        check_split(validation_split, subset, hint=" (in the ImageDataGenerator)")
        if subset is not None:
            split = int(n * validation_split)
            if (
                labels is not None
                and not ignore_class_split
                and not torch.equal(labels[:split].unique(), labels[split:].unique())
            ):
                raise ValueError(  # Keras' words first: code matches on them
                    "Training and validation subsets have different number of classes after "
                    "the split. If your numpy arrays are sorted by the label, you might want to "
                    f"shuffle them. (The validation subset is the first {split} of {n} samples, "
                    "as in Keras, and the two parts hold different classes; or pass "
                    "ignore_class_split=True)"
                )
            part = slice(0, split) if subset == "validation" else slice(split, n)
            images = images[part]
            labels = None if labels is None else labels[part]
            weights = None if weights is None else weights[part]
            if len(images) == 0:
                raise ValueError(
                    f"subset {subset!r} of {n} samples with validation_split={validation_split} "
                    "is empty"
                )
        self.images = images
        self.y = labels
        self.sample_weight = weights
        self.validation_split = float(validation_split)
        self.subset = subset
        self.channels = int(images.shape[1])
        self.target_size = (int(images.shape[2]), int(images.shape[3]))
        self.class_mode = None if labels is None else "raw"
        self.root = f"an in-memory array of {len(images)} images"
        is_class_index = labels is not None and labels.ndim == 1 and not labels.is_floating_point()
        if labels is not None and is_class_index and len(labels) and int(labels.min()) >= 0:
            k = int(labels.max()) + 1
        else:
            k = 0
        if labels is not None and 0 < k <= max(len(labels), 1000):
            self.targets = labels.to(torch.int64).tolist()
        else:
            k, self.targets = 0, [0] * len(images)
        self.classes = [str(i) for i in range(k)]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.num_classes = max(k, 1)
        self.samples = [(f"x[{i}]", t) for i, t in enumerate(self.targets)]
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def load(self, index: int) -> torch.Tensor:
        """Image ``index``: ``(C, H, W)``, the stored dtype, CPU."""
        return self.images[index]

    def __getitem__(self, index: int) -> Any:
        image = self.images[index]
        if self.y is None:
            return image
        if self.sample_weight is None:
            return image, self.y[index]
        return image, self.y[index], self.sample_weight[index]

    def counts(self) -> dict[str, int]:
        """Samples per class for integer class labels (else empty)."""
        if not self.classes:
            return {}
        tally: Counter[int] = Counter(self.targets)
        return {name: tally[i] for i, name in enumerate(self.classes)}

    @property
    def nbytes(self) -> int:
        """Bytes the images take (``N * C * H * W * itemsize``)."""
        return self.images.numel() * self.images.element_size()

    def as_cache(self, kind: str, device: torch.device, layout: str = "planar") -> ImageCache:
        """The images as a cache: on ``device`` (``"device"``, one copy, once, in slices of
        about 64 MiB, so the host never holds a second copy of the array; in ``layout``, an
        RGBX copy for 3-channel uint8 images, see `gpuaug.data.pixel_layout`) or in host
        memory (``"host"``/``"disk"``: the stored tensor itself, pageable and planar: batches
        are gathered into the loader's few pinned buffers, so pinning the whole array, a full
        copy that the caching host allocator rounds up to a power of two, would buy nothing)."""
        valid = torch.ones(len(self), dtype=torch.bool)
        if kind != "device":
            return ImageCache("host", self.images, valid)
        if layout == "rgbx":
            return ImageCache("device", _place_rgbx(self.images, device), valid, layout="rgbx")
        return ImageCache("device", _place(self.images, device), valid)

    def batch_outputs(self, x: torch.Tensor, indices: torch.Tensor) -> Any:
        """What a batch yields: ``x``, ``(x, y)`` or ``(x, y, sample_weight)`` (Keras' order).

        The labels and weights are copied to ``x``'s device once and gathered there.
        """
        if self.y is None:
            return x
        device = x.device
        if device not in self._on_device:
            w = None if self.sample_weight is None else self.sample_weight.to(device)
            self._on_device[device] = (self.y.to(device), w)
        y, w = self._on_device[device]
        idx = host_to_device(indices, device)
        if w is None:
            return x, y.index_select(0, idx)
        return x, y.index_select(0, idx), w.index_select(0, idx)


def _check_some_images(images: torch.Tensor, x: Any) -> None:
    if images.shape[0] == 0:
        raise ValueError(f"`x` must hold at least one image; got shape {tuple(np.shape(x))}")


def _widen_unsigned(labels: torch.Tensor, name: str) -> torch.Tensor:
    """uint16/32/64 labels (which torch can hold but not compare, sort or reduce) as the
    signed type that holds every value: uint16 -> int32, uint32/uint64 -> int64.

    Raises:
        ValueError: a uint64 label above ``2**63 - 1``, naming the argument.
    """
    wider = {torch.uint16: torch.int32, torch.uint32: torch.int64, torch.uint64: torch.int64}
    if labels.dtype not in wider:
        return labels
    if labels.dtype == torch.uint64:
        array = labels.numpy()
        if array.size and int(array.max()) > np.iinfo(np.int64).max:
            raise ValueError(
                f"`{name}` holds uint64 values above {np.iinfo(np.int64).max} (int64's "
                f"largest); got {int(array.max())}"
            )
        return torch.from_numpy(array.astype(np.int64))
    return labels.to(wider[labels.dtype])


#: rows per slice when an array is placed on the device (about 64 MiB of host scratch)
_PLACE_BYTES = 64 * 2**20


def _place_rgbx(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``images`` (3 uint8 channels) as an ``(N, H, W, 4)`` RGBX buffer on ``device``, made
    slice by slice as `_place` does.

    Raises:
        ValueError: not 3 uint8 channels.
    """
    n, c, h, w = images.shape
    if c != 3 or images.dtype != torch.uint8:
        raise ValueError(
            f"`layout`='rgbx' needs 3-channel uint8 images; got {c} channel(s) of {images.dtype}"
        )
    out = torch.empty((n, h, w, 4), dtype=torch.uint8, device=device)
    step = max(1, _PLACE_BYTES // max(1, h * w * 4))
    for start in range(0, n, step):
        out[start : start + step].copy_(
            rgbx_pixels(as_layout(images[start : start + step], "rgbx"))
        )
    return out


def _place(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``images`` as a contiguous tensor on ``device``, copied slice by slice: a channels-last
    view is made contiguous one slice at a time, never as a whole second copy on the host.

    Shape:
        images ``(N, C, H, W)`` any strides, CPU -> ``(N, C, H, W)`` contiguous on ``device``.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return images
    out = torch.empty(images.shape, dtype=images.dtype, device=device)
    per_image = max(1, images[0].numel() * images.element_size()) if len(images) else 1
    step = max(1, _PLACE_BYTES // per_image)
    for start in range(0, len(images), step):
        out[start : start + step].copy_(images[start : start + step].contiguous())
    return out
