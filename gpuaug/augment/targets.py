"""Segmentation masks, boxes and keypoints under the same per-sample transform as the images.

Targets are plain functions of the params `gpuaug.augment.module.apply` used for the images (no
hooks
on a base class): draw the params once, apply them to the images and to each target::

    params = aug.sample_params(images, generator=g)
    x = aug.apply(images, params)
    m = apply_mask(masks, params, aug.config, mask_fill=255)
    b, b_valid = apply_boxes(boxes, params, aug.config, height, width)
    k, k_visible = apply_keypoints(points, params, aug.config, height, width)

Each runs batched on the params' device: no loop over samples, no host sync.

Geometry: the same per-sample matrix as the image warp (`affine_matrix`, flips folded in when the
config flips; the warp only runs when the config has geometry, as in `apply`). The matrix maps an
*output* pixel to the *source* point it reads, so masks are sampled through it and boxes and
keypoints go through its inverse (`gpuaug.augment.warp.invert_affine`). No photometric stage
(channel
shift, brightness, normalisation) touches a target.

Coordinate conventions (as torchvision's ``tv_tensors``):

- **keypoints** ``(x, y)`` are pixel coordinates, pixel centres at integers (x = column,
  y = row), the convention of the warp itself: a point on pixel (row r, column c) is (c, r); a
  horizontal flip maps x to ``W - 1 - x``.
- **boxes** ``(x0, y0, x1, y1)`` are continuous coordinates on the image plane ``[0, W] x [0,
  H]``, pixel (r, c) covering ``[c, c + 1) x [r, r + 1)`` (torchvision, COCO, Pascal VOC
  ``xyxy``): the box around columns c0..c1 and rows r0..r1 is ``(c0, r0, c1 + 1, r1 + 1)``; a
  horizontal flip maps x to ``W - x``.

Fill modes: a mask follows the config's ``fill_mode`` geometry exactly as the image does
("nearest" repeats the edge labels, "reflect" and "wrap" mirror / tile them), except that
"constant" fills with ``mask_fill`` instead of the image's ``cval``. Boxes and keypoints follow
the object itself; the copies that "reflect" / "wrap" / "nearest" paint outside the original
extent get no box or keypoint (as in albumentations and torchvision).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.params import AugmentParams, affine_matrix
from gpuaug.augment.warp import _fold, invert_affine, source_coordinates
from gpuaug.data.paired import DEFAULT_MASK_FILL

__all__ = [
    "DEFAULT_MASK_FILL",
    "apply_boxes",
    "apply_keypoints",
    "apply_mask",
    "pad_boxes",
    "target_matrix",
    "unpad",
]


def _check_params(params: AugmentParams, config: AugmentConfig, batch: int, device) -> None:
    if not isinstance(params, AugmentParams):
        raise TypeError(f"`params` must be AugmentParams; got {type(params).__name__}")
    if not isinstance(config, AugmentConfig):
        raise TypeError(f"`config` must be an AugmentConfig; got {type(config).__name__}")
    if len(params) != batch:
        raise ValueError(f"`params` has {len(params)} rows but the targets have {batch} samples")
    if params.device != device:
        raise ValueError(
            f"`params` are on {params.device} but the targets on {device}; "
            "use params.to(targets.device)"
        )


def _check_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`{name}` must be a positive int; got {value!r}")


def target_matrix(
    params: AugmentParams, config: AugmentConfig, height: int, width: int
) -> torch.Tensor | None:
    """The destination -> source matrices `apply` warps the images with, or None (identity).

    With geometry on: `affine_matrix` (flips folded in when the config flips). With only flips:
    the flip matrices (``x -> W - 1 - x`` where ``flip_h``, ``y -> H - 1 - y`` where
    ``flip_v``). With neither: None, as `apply` leaves the pixels where they are whatever the
    params hold.

    Shape:
        -> (B, 2, 3) float32 on the params' device, acting on (x = column, y = row, 1).
    """
    if config.has_geometry:
        return affine_matrix(params, height, width, include_flips=config.has_flips)
    if not config.has_flips:
        return None
    fx = torch.where(params.flip_h, -1.0, 1.0)
    fy = torch.where(params.flip_v, -1.0, 1.0)
    zero = torch.zeros_like(fx)
    bx = (1.0 - fx) * ((width - 1) / 2.0)
    by = (1.0 - fy) * ((height - 1) / 2.0)
    return torch.stack(
        [torch.stack([fx, zero, bx], dim=-1), torch.stack([zero, fy, by], dim=-1)], dim=1
    )


# ----------------------------------------------------------------------------- masks


def _check_mask_fill(mask_fill: int | float | bool, dtype: torch.dtype) -> None:
    if dtype == torch.bool:
        if not isinstance(mask_fill, numbers.Real) or mask_fill not in (0, 1):
            raise ValueError(
                f"`mask_fill` must be 0, 1, False or True for bool masks; got {mask_fill!r}"
            )
        return
    if dtype.is_floating_point:
        if not isinstance(mask_fill, numbers.Real):
            raise TypeError(f"`mask_fill` must be a number; got {mask_fill!r}")
        return
    if isinstance(mask_fill, bool) or not isinstance(mask_fill, int | numbers.Integral):
        raise TypeError(f"`mask_fill` must be an int label for {dtype} masks; got {mask_fill!r}")
    info = torch.iinfo(dtype)
    if not info.min <= int(mask_fill) <= info.max:
        raise ValueError(
            f"`mask_fill` must fit the masks' dtype {dtype} ({info.min}..{info.max}); "
            f"got {mask_fill!r}"
        )


def apply_mask(
    masks: torch.Tensor,
    params: AugmentParams,
    config: AugmentConfig,
    *,
    mask_fill: int | float | bool = DEFAULT_MASK_FILL,
) -> torch.Tensor:
    """Warp label maps with the images' params: nearest sampling, labels copied, never blended.

    Each output pixel takes the label of the source pixel nearest to the point the image warp
    reads there (scipy's order 0, rounding half up: Keras' ``apply_transform`` with
    ``interpolation_order=0``), whatever the config's image ``interpolation``. The labels are
    gathered by integer index, so every value of every dtype comes back exactly (int64 labels
    above 2**24 included). Flips are folded in as for the images; channel shift, brightness and
    normalisation are not applied. Where the image's fill mode is "constant" and the source point
    lies outside the image, the label is ``mask_fill``; the other fill modes repeat, mirror or
    tile the labels exactly as they do the pixels.

    With nearest image interpolation, the mask's labels come from exactly the pixels the image
    warp read; with bilinear, from the nearest of the four it blended.

    Args:
        masks: Label maps, one per image (any number of channels: each is warped the same way).
        params: The params the images were augmented with (`sample_params`), on the masks'
            device.
        config: The images' config (which stages run, the fill mode).
        mask_fill: The label outside the image for ``fill_mode="constant"`` (default 0, the
            background; 255 is the usual "ignore"). Must fit the dtype.

    Returns:
        The warped masks, the same shape and dtype (the input itself when the config moves no
        pixel).

    Shape:
        masks: (B, H, W) or (B, C, H, W), any integer, bool or float dtype, any device
        -> same shape, dtype and device.

    Raises:
        ValueError: Not 3-D or 4-D, params of another length or device, a ``mask_fill`` that
            does not fit the dtype.
        TypeError: Not a tensor, a complex dtype, or a non-integer ``mask_fill`` for integer
            masks.
    """
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"`masks` must be a torch.Tensor (B, H, W); got {type(masks).__name__}")
    if masks.ndim not in (3, 4):
        raise ValueError(
            f"`masks` must be (B, H, W) or (B, C, H, W); got shape {tuple(masks.shape)}"
        )
    if masks.is_complex():
        raise TypeError(f"`masks` must hold integer, bool or float labels; got {masks.dtype}")
    _check_params(params, config, masks.shape[0], masks.device)
    _check_mask_fill(mask_fill, masks.dtype)
    squeeze = masks.ndim == 3
    x = masks.unsqueeze(1) if squeeze else masks
    b, c, height, width = x.shape
    matrix = target_matrix(params, config, height, width)
    if matrix is None:
        return masks
    if b == 0:
        return masks.clone()
    if not config.has_geometry:  # flips only: exact, no coordinates needed
        x = torch.where(params.flip_h[:, None, None, None], x.flip(-1), x)
        out = torch.where(params.flip_v[:, None, None, None], x.flip(-2), x)
    else:
        src = source_coordinates(matrix, height, width)  # (B, H, W, 2) float32, as the images
        sx, inside_x = _fold(src[..., 0], width, config.fill_mode)
        sy, inside_y = _fold(src[..., 1], height, config.fill_mode)
        # scipy's order 0 rounds half up; the folded coordinates are within [0, n - 1].
        col = torch.floor(sx + 0.5).clamp_(0, width - 1).to(torch.int64)
        row = torch.floor(sy + 0.5).clamp_(0, height - 1).to(torch.int64)
        index = (row * width + col).reshape(b, 1, height * width).expand(b, c, height * width)
        out = x.reshape(b, c, height * width).gather(2, index).reshape(b, c, height, width)
        if inside_x is not None and inside_y is not None:
            inside = (inside_x & inside_y).unsqueeze(1)  # (B, 1, H, W)
            out = out.masked_fill(~inside, mask_fill)  # a Python scalar: no host copy
    return out.squeeze(1) if squeeze else out


# ----------------------------------------------------------------------------- boxes, points


def _forward(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map (B, ..., 2) source points (pixel-centre coordinates) to where the warp puts them."""
    inverse = invert_affine(matrix.to(points.dtype))  # source -> destination
    shape = points.shape
    flat = points.reshape(shape[0], -1, 2)
    # broadcast multiply-adds, no matmul: an einsum would become a TF32 GEMM under
    # torch.set_float32_matmul_precision("high") and move points off the warped pixels
    x, y = flat[..., 0], flat[..., 1]
    m = inverse[:, None, :, :]  # (B, 1, 2, 3)
    out = torch.stack(
        [m[..., 0, 0] * x + (m[..., 0, 1] * y + m[..., 0, 2]),
         m[..., 1, 0] * x + (m[..., 1, 1] * y + m[..., 1, 2])],
        dim=-1,
    )  # fmt: skip
    return out.reshape(shape)


def _check_valid(name: str, valid: torch.Tensor | None, shape: tuple[int, int], device) -> None:
    if valid is None:
        return
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool:
        raise TypeError(f"`{name}` must be a bool tensor {shape}; got {valid!r}")
    if tuple(valid.shape) != shape or valid.device != device:
        raise ValueError(
            f"`{name}` must be a bool tensor of shape {shape} on {device}; "
            f"got {tuple(valid.shape)} on {valid.device}"
        )


def _float_points(name: str, t: torch.Tensor, last: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor (B, N, {last}); got {type(t).__name__}")
    if t.ndim != 3 or t.shape[-1] != last:
        raise ValueError(f"`{name}` must be (B, N, {last}); got shape {tuple(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"`{name}` must be a real tensor; got {t.dtype}")
    return t if t.is_floating_point() else t.to(torch.float32)


def apply_boxes(
    boxes: torch.Tensor,
    params: AugmentParams,
    config: AugmentConfig,
    height: int,
    width: int,
    *,
    valid: torch.Tensor | None = None,
    min_visibility: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map ``xyxy`` boxes through the images' transform: bounding box of the warped corners.

    Each box's four corners go through the inverse of the image's matrix (flips included); the
    new box is their bounding box, clipped to the image ``[0, W] x [0, H]``. Under a rotation or
    a shear this box is larger than the object's own (the usual axis-aligned bound, as
    torchvision and albumentations). A box is valid when its clipped box has a positive width and
    height and keeps at least ``min_visibility`` of the unclipped warped box's area (and its
    ``valid`` entry, if given, is True). Invalid rows keep their (clipped) coordinates; use the
    mask, or `unpad`, to drop them.

    Ragged counts: pad every sample to N boxes and pass ``valid`` (`pad_boxes` does both).

    Args:
        boxes: Boxes in continuous pixel coordinates (see the module docstring), x0 <= x1,
            y0 <= y1.
        params: The params the images were augmented with, on the boxes' device.
        config: The images' config (which stages run).
        height: The image height H the params were applied to.
        width: The image width W the params were applied to.
        valid: Which rows are real boxes (False: padding); default all.
        min_visibility: The smallest fraction of a warped box's area that must stay inside the
            image, in [0, 1]; 0 keeps any box with a visible part.

    Returns:
        ``(boxes, valid)``: the new boxes and which are valid.

    Shape:
        boxes: (B, N, 4) float (integers are taken as float32), any device; valid: (B, N) bool
        -> (B, N, 4) same float dtype, (B, N) bool, same device.

    Raises:
        ValueError: Bad shapes, size or ``min_visibility``; params of another length or device.
        TypeError: Not a real tensor, or ``valid`` not a bool tensor.
    """
    boxes = _float_points("boxes", boxes, 4)
    _check_size(height, width)
    _check_params(params, config, boxes.shape[0], boxes.device)
    _check_valid("valid", valid, (boxes.shape[0], boxes.shape[1]), boxes.device)
    if (
        not isinstance(min_visibility, int | float | numbers.Real)
        or not 0.0 <= float(min_visibility) <= 1.0
    ):
        raise ValueError(f"`min_visibility` must be a number in [0, 1]; got {min_visibility!r}")
    matrix = target_matrix(params, config, height, width)
    if matrix is None:
        out = boxes
    else:
        x0, y0, x1, y1 = boxes.unbind(-1)
        corners = torch.stack(
            [
                torch.stack([x0, y0], dim=-1),
                torch.stack([x1, y0], dim=-1),
                torch.stack([x0, y1], dim=-1),
                torch.stack([x1, y1], dim=-1),
            ],
            dim=2,
        )  # (B, N, 4, 2), edges; pixel centres sit at +0.5
        warped = _forward(matrix, corners - 0.5) + 0.5
        out = torch.cat([warped.amin(dim=2), warped.amax(dim=2)], dim=-1)
    area = (out[..., 2] - out[..., 0]) * (out[..., 3] - out[..., 1])
    clipped = torch.stack(
        [
            out[..., 0].clamp(0.0, float(width)),
            out[..., 1].clamp(0.0, float(height)),
            out[..., 2].clamp(0.0, float(width)),
            out[..., 3].clamp(0.0, float(height)),
        ],
        dim=-1,
    )
    w = clipped[..., 2] - clipped[..., 0]
    h = clipped[..., 3] - clipped[..., 1]
    ok = (w > 0) & (h > 0) & (w * h >= float(min_visibility) * area)
    if valid is not None:
        ok = ok & valid
    return clipped, ok


def apply_keypoints(
    points: torch.Tensor,
    params: AugmentParams,
    config: AugmentConfig,
    height: int,
    width: int,
    *,
    visible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map ``(x, y)`` keypoints through the images' transform (the inverse of its matrix).

    A point on source pixel (r, c) lands on the output point whose nearest-interpolation warp
    reads (r, c) back (up to the rounding of neighbouring pixels). A point is visible when it
    rounds to a pixel of the output, ``-0.5 <= x < W - 0.5`` and ``-0.5 <= y < H - 0.5``, and
    its ``visible`` entry, if given, is True. Points are never clipped.

    Args:
        points: Keypoints in pixel-centre coordinates (x = column, y = row; see the module
            docstring).
        params: The params the images were augmented with, on the points' device.
        config: The images' config.
        height: The image height H.
        width: The image width W.
        visible: Which points are present (False: padding or unlabelled); default all.

    Returns:
        ``(points, visible)``.

    Shape:
        points: (B, N, 2) float (integers are taken as float32), any device; visible: (B, N)
        bool -> (B, N, 2) same float dtype, (B, N) bool, same device.

    Raises:
        ValueError: Bad shapes or size; params of another length or device.
        TypeError: Not a real tensor, or ``visible`` not a bool tensor.
    """
    points = _float_points("points", points, 2)
    _check_size(height, width)
    _check_params(params, config, points.shape[0], points.device)
    _check_valid("visible", visible, (points.shape[0], points.shape[1]), points.device)
    matrix = target_matrix(params, config, height, width)
    out = points if matrix is None else _forward(matrix, points)
    x, y = out[..., 0], out[..., 1]
    inside = (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
    if visible is not None:
        inside = inside & visible
    return out, inside


# ----------------------------------------------------------------------------- ragged


def pad_boxes(
    boxes: Sequence[torch.Tensor], *, size: int | None = None, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-image boxes of different counts into a padded batch and its validity mask.

    For the data-loading side (per-sample counts are host-side Python here).

    Args:
        boxes: One (Ni, 4) tensor per image (Ni may be 0).
        size: N, the padded count (default the largest Ni).
        device: Where to put the result (default the first tensor's device, else CPU).

    Returns:
        ``(boxes, valid)``: (B, N, 4) float32 (padding rows are 0) and (B, N) bool.

    Raises:
        ValueError: A tensor not (Ni, 4), or ``size`` smaller than a count.
    """
    tensors = [torch.as_tensor(t) for t in boxes]
    for i, t in enumerate(tensors):
        if t.ndim != 2 or t.shape[-1] != 4:
            raise ValueError(f"`boxes[{i}]` must be (N, 4); got shape {tuple(t.shape)}")
    counts = [t.shape[0] for t in tensors]
    n = max(counts, default=0) if size is None else size
    if counts and max(counts) > n:
        raise ValueError(f"`size` must be >= the largest box count {max(counts)}; got {n}")
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    dtype = torch.float32
    if tensors and tensors[0].is_floating_point():
        dtype = tensors[0].dtype
    out = torch.zeros((len(tensors), n, 4), dtype=dtype, device=device)
    valid = torch.zeros((len(tensors), n), dtype=torch.bool, device=device)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t.to(device, dtype)
        valid[i, : t.shape[0]] = True
    return out, valid


def unpad(values: torch.Tensor, valid: torch.Tensor) -> list[torch.Tensor]:
    """The valid rows of each sample: a list of (Ni, ...) tensors (syncs the host: not for a
    hot loop; keep the padded tensor and the mask there).

    Shape:
        values: (B, N, ...), valid: (B, N) bool -> B tensors (Ni, ...), same device.
    """
    if values.shape[:2] != valid.shape:
        raise ValueError(
            f"`values` (B, N, ...) and `valid` (B, N) disagree: {tuple(values.shape)} vs "
            f"{tuple(valid.shape)}"
        )
    return [v[m] for v, m in zip(values, valid, strict=True)]
