"""gpuaug.augment.targets: masks, boxes and keypoints under the images' own per-sample transform.

Real data: a crop of ``skimage.data.coins`` (grey coins on a darker table) thresholded with
Otsu gives a natural label map; consistency is checked against the image warp itself (the mask
of the warped image), against Keras' ``apply_transform`` with ``interpolation_order=0``, and by
one-hot markers for boxes and keypoints.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpuaug import AugmentConfig, AugmentParams, apply, sample_params
from gpuaug.augment.module import affine_matrix
from gpuaug.augment.targets import (
    DEFAULT_MASK_FILL,
    apply_boxes,
    apply_keypoints,
    apply_mask,
    pad_boxes,
    target_matrix,
    unpad,
)

skimage_data = pytest.importorskip("skimage.data")
skimage_filters = pytest.importorskip("skimage.filters")

MODES = ["nearest", "constant", "reflect", "wrap"]


def geometric(fill_mode: str = "nearest", interpolation: str = "nearest", **kw) -> AugmentConfig:
    options = {
        "rotation_range": 40,
        "width_shift_range": 0.2,
        "height_shift_range": 0.2,
        "shear_range": 15,
        "zoom_range": 0.3,
        "horizontal_flip": True,
        "vertical_flip": True,
        "fill_mode": fill_mode,
        "interpolation": interpolation,
    }
    return AugmentConfig(**(options | kw))


@pytest.fixture(scope="module")
def coins() -> tuple[torch.Tensor, torch.Tensor]:
    """A 36 x 48 grey crop of skimage's coins (1, 1, H, W) float and its Otsu mask, uint8."""
    image = skimage_data.coins()[::4, ::4][20:56, 20:68].copy()  # non-square on purpose
    threshold = skimage_filters.threshold_otsu(image)
    x = torch.from_numpy(image).float()[None, None]
    mask = torch.from_numpy((image > threshold).astype(np.uint8))[None, None]
    assert 0.2 < mask.float().mean() < 0.8  # both labels present in quantity
    return x, mask


def draw(config: AugmentConfig, batch: int, height: int, width: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return sample_params(config, batch, height, width, generator=g)


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """Pixels with a 3x3 neighbour of another label (mask (B, 1, H, W) integer)."""
    m = mask.float()
    hi = F.max_pool2d(m, 3, 1, 1)
    lo = -F.max_pool2d(-m, 3, 1, 1)
    return hi != lo


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("fill_mode", MODES)
def test_thresholded_mask_warps_to_the_thresholded_nearest_warp_exactly(coins, fill_mode):
    image, mask = coins
    b, (h, w) = 12, image.shape[-2:]
    config = geometric(fill_mode, "nearest", cval=0.0)
    params = draw(config, b, h, w)
    warped_image = apply(image.expand(b, -1, -1, -1), params, config)
    threshold = float(image[mask.bool()].min())  # the smallest value labelled 1
    expected = (warped_image >= threshold).to(torch.uint8)  # cval 0 -> label 0 = mask_fill
    out = apply_mask(mask.expand(b, -1, -1, -1), params, config, mask_fill=0)
    assert out.dtype == torch.uint8
    assert torch.equal(out, expected)


@pytest.mark.parametrize("fill_mode", MODES)
def test_mask_differs_from_the_thresholded_bilinear_warp_only_at_label_edges(coins, fill_mode):
    image, mask = coins
    b, (h, w) = 12, image.shape[-2:]
    config = geometric(fill_mode, "bilinear", cval=0.0)
    params = draw(config, b, h, w, seed=1)
    threshold = float(image[mask.bool()].min())
    expected = (apply(image.expand(b, -1, -1, -1), params, config) >= threshold).to(torch.uint8)
    out = apply_mask(mask.expand(b, -1, -1, -1), params, config)
    differ = out != expected
    assert differ.float().mean() < 0.05
    # Only where the nearest source pixel is within 1 px of a label edge (bilinear reads the
    # 2 x 2 source pixels around the point, all within 1 px of the nearest one).
    near_edge = apply_mask(boundary(mask).expand(b, -1, -1, -1), params, config)
    assert differ.any() and not (differ & ~near_edge).any()


def test_half_pixel_ties_round_up_as_scipy_and_the_image_warp():
    config = AugmentConfig(width_shift_range=4, height_shift_range=4, interpolation="nearest")
    params = AugmentParams.from_keras([{"tx": 0.5, "ty": -0.5}])  # every point is a tie
    columns = torch.arange(10, dtype=torch.int64).repeat(1, 6, 1)  # label = column
    out = apply_mask(columns, params, config)
    assert out[0, 0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 9]  # x + 0.5 -> x + 1
    image = apply(columns[:, None].float(), params, config)[:, 0]
    assert torch.equal(out.float(), image)


def test_mask_uses_nearest_sampling_whatever_the_image_interpolation(coins):
    _, mask = coins
    h, w = mask.shape[-2:]
    params = draw(geometric(), 6, h, w, seed=2)
    masks = mask.expand(6, -1, -1, -1)
    assert torch.equal(
        apply_mask(masks, params, geometric(interpolation="bilinear")),
        apply_mask(masks, params, geometric(interpolation="nearest")),
    )


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_labels_of_every_integer_dtype_come_back_exactly(coins, dtype):
    _, mask = coins
    h, w = mask.shape[-2:]
    # Labels 0..5 laid over the coins mask; as int64 they sit above 2**40, beyond float32's 2**24.
    labels = (mask.long() * 3 + torch.arange(w) % 3).repeat(5, 1, 1, 1)
    lut = torch.tensor([7, 11, 13, 17, 19, 23]) if dtype != torch.int64 else 2**40 + torch.arange(6)
    big = lut[labels].to(dtype)
    config = geometric("constant")
    params = draw(config, 5, h, w, seed=3)
    out = apply_mask(big, params, config, mask_fill=5)
    small = apply_mask(labels, params, config, mask_fill=99)
    assert out.dtype == dtype
    filled = small == 99
    assert torch.equal(out[~filled], lut[small[~filled]].to(dtype))
    assert (out[filled] == 5).all() and filled.any()


def test_bool_and_float_masks_keep_their_dtype(coins):
    _, mask = coins
    h, w = mask.shape[-2:]
    config = geometric("constant")
    params = draw(config, 4, h, w, seed=4)
    masks = mask.expand(4, -1, -1, -1)
    reference = apply_mask(masks, params, config)
    as_bool = apply_mask(masks.bool(), params, config)
    as_float = apply_mask(masks.float() * 0.5, params, config, mask_fill=0.0)
    assert as_bool.dtype == torch.bool and torch.equal(as_bool, reference.bool())
    assert as_float.dtype == torch.float32 and torch.equal(as_float, reference.float() * 0.5)


def test_labels_are_never_blended(coins):
    _, mask = coins
    h, w = mask.shape[-2:]
    labels = (mask * 40 + 3).expand(8, -1, -1, -1)  # labels 3 and 43: a blend would be between
    config = geometric("constant", "bilinear")
    out = apply_mask(labels, draw(config, 8, h, w, seed=5), config, mask_fill=255)
    assert set(out.unique().tolist()) == {3, 43, 255}


@pytest.mark.parametrize("mask_fill", [0, 255])
def test_mask_fill_marks_exactly_where_the_constant_warp_reads_outside(coins, mask_fill):
    image, mask = coins
    h, w = image.shape[-2:]
    config = geometric("constant", "bilinear", cval=0.0)
    params = draw(config, 8, h, w, seed=6)
    ones = torch.ones(8, 1, h, w)
    outside = apply(ones, params, config) == 0  # the image's cval where it read outside
    out = apply_mask((mask * 0 + 7).expand(8, -1, -1, -1), params, config, mask_fill=mask_fill)
    assert outside.any() and (~outside).any()
    assert torch.equal(out == mask_fill, outside)


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect", "wrap"])
def test_mask_fill_is_not_used_by_the_other_fill_modes(coins, fill_mode):
    _, mask = coins
    h, w = mask.shape[-2:]
    config = geometric(fill_mode)
    out = apply_mask(mask.expand(8, -1, -1, -1), draw(config, 8, h, w), config, mask_fill=255)
    assert not (out == 255).any()


def test_default_mask_fill_is_the_background_label():
    assert DEFAULT_MASK_FILL == 0
    config = AugmentConfig(width_shift_range=(8,), fill_mode="constant")  # always +-8 px
    params = draw(config, 4, 16, 16)
    out = apply_mask(torch.full((4, 16, 16), 3, dtype=torch.uint8), params, config)
    assert set(out.unique().tolist()) == {0, 3}


def test_flips_alone_flip_the_mask(coins):
    _, mask = coins
    h, w = mask.shape[-2:]
    config = AugmentConfig(horizontal_flip=True, vertical_flip=True)
    params = draw(config, 16, h, w, seed=7)
    masks = mask.expand(16, -1, -1, -1) * torch.arange(16, dtype=torch.uint8)[:, None, None, None]
    out = apply_mask(masks, params, config)
    for i in range(16):
        expected = masks[i]
        if params.flip_h[i]:
            expected = expected.flip(-1)
        if params.flip_v[i]:
            expected = expected.flip(-2)
        assert torch.equal(out[i], expected)
    assert params.flip_h.any() and params.flip_v.any() and not params.flip_h.all()


def test_flips_folded_into_the_warp_match_flipping_after_it(coins):
    _, mask = coins
    h, w = mask.shape[-2:]
    flipping = geometric("wrap")
    params = draw(flipping, 8, h, w, seed=8)
    unflipped = AugmentParams(
        **{**params.__dict__, "flip_h": torch.zeros(8, dtype=torch.bool),
           "flip_v": torch.zeros(8, dtype=torch.bool)}
    )  # fmt: skip
    masks = mask.expand(8, -1, -1, -1)
    no_flip = apply_mask(masks, unflipped, flipping)
    expected = torch.where(params.flip_h[:, None, None, None], no_flip.flip(-1), no_flip)
    expected = torch.where(params.flip_v[:, None, None, None], expected.flip(-2), expected)
    assert torch.equal(apply_mask(masks, params, flipping), expected)


def test_photometric_stages_leave_the_mask_alone(coins):
    _, mask = coins
    h, w = mask.shape[-2:]
    config = AugmentConfig(channel_shift_range=50, brightness_range=(0.5, 1.5), rescale=1 / 255)
    params = draw(config, 4, h, w)
    masks = mask.expand(4, -1, -1, -1)
    assert torch.equal(apply_mask(masks, params, config), masks)


def test_a_stage_the_config_turns_off_is_skipped_whatever_the_params_hold(coins):
    _, mask = coins
    h, w = mask.shape[-2:]
    params = draw(geometric(), 4, h, w)  # rotations, shifts, flips...
    masks = mask.expand(4, -1, -1, -1)
    assert torch.equal(apply_mask(masks, params, AugmentConfig()), masks)


def test_three_and_four_dim_masks_and_channels_agree(coins):
    _, mask = coins
    h, w = mask.shape[-2:]
    config = geometric("reflect")
    params = draw(config, 3, h, w, seed=9)
    masks = mask.expand(3, -1, -1, -1)
    four = apply_mask(masks, params, config)
    three = apply_mask(masks[:, 0], params, config)
    two_channels = apply_mask(torch.cat([masks, 1 - masks], dim=1), params, config)
    assert three.shape == (3, h, w) and torch.equal(three, four[:, 0])
    assert torch.equal(two_channels, torch.cat([four, 1 - four], dim=1))


def test_empty_batch_gives_an_empty_mask_batch():
    out = apply_mask(torch.zeros(0, 1, 8, 8, dtype=torch.uint8), draw(geometric(), 0, 8, 8),
                     geometric())  # fmt: skip
    assert out.shape == (0, 1, 8, 8)


# ----------------------------------------------------------------------------- Keras


@pytest.mark.keras
@pytest.mark.parametrize("fill_mode", MODES)
def test_mask_matches_keras_apply_transform_with_interpolation_order_0(fill_mode):
    keras_image = pytest.importorskip("keras.src.legacy.preprocessing.image")
    size, n, fill = 32, 16, 9
    coins = skimage_data.coins()[100:228:4, 100:228:4]  # 32 x 32: Keras turns non-square wrongly
    labels = np.digitize(coins, np.quantile(coins, [0.25, 0.5, 0.75])).astype(np.uint8)  # 0..3
    rng = np.random.default_rng(MODES.index(fill_mode))
    raw = [
        {
            "theta": rng.uniform(-45, 45),
            "tx": rng.uniform(-8, 8),
            "ty": rng.uniform(-8, 8),
            "shear": rng.uniform(-20, 20),
            "zx": rng.uniform(0.7, 1.3),
            "zy": rng.uniform(0.7, 1.3),
            "flip_horizontal": bool(rng.random() < 0.5),
            "flip_vertical": bool(rng.random() < 0.5),
        }
        for _ in range(n)
    ]
    params = AugmentParams.from_keras(raw)  # float32 round trip: both sides see the same numbers
    gen = keras_image.ImageDataGenerator(
        fill_mode=fill_mode, cval=fill, interpolation_order=0, data_format="channels_last"
    )
    assert gen.interpolation_order == 0
    expected = np.stack(
        [gen.apply_transform(labels[:, :, None].astype(np.float32), params.to_keras(i))[..., 0]
         for i in range(n)]
    )  # fmt: skip
    config = geometric(fill_mode, "bilinear", cval=0.0)  # the image's own interpolation: unused
    masks = torch.from_numpy(labels)[None].expand(n, -1, -1)
    ours = apply_mask(masks, params, config, mask_fill=fill).numpy()

    # Leave out the points within 1e-3 px of a discontinuity (a .5 tie, the constant edge, the
    # wrap seam), where float32 coordinates may pick the other side (as tests/test_augment_keras).
    m = affine_matrix(params, size, size).double().numpy()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    near = np.zeros((n, size, size), dtype=bool)
    for row in (0, 1):
        c = m[:, row, 0, None, None] * xx + m[:, row, 1, None, None] * yy + m[:, row, 2, None, None]
        near |= np.abs(c - np.floor(c) - 0.5) < 1e-3
        near |= (np.abs(c) < 1e-3) | (np.abs(c - (size - 1)) < 1e-3)
        near |= np.abs(c / (size - 1) - np.round(c / (size - 1))) * (size - 1) < 1e-3
    assert near.mean() < 0.01
    assert (expected == fill).any() == (fill_mode == "constant")
    np.testing.assert_array_equal(ours[~near], expected[~near].astype(np.uint8))


# ----------------------------------------------------------------------------- boxes


def blob_masks(b: int, h: int, w: int, boxes: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) uint8: 1 inside each sample's box (continuous xyxy around whole pixels)."""
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    return ((xx > x0) & (xx < x1) & (yy > y0) & (yy < y1)).to(torch.uint8)[:, None]


def test_a_box_around_a_blob_contains_the_warped_blob():
    b, h, w = 16, 40, 48
    boxes = torch.tensor([[14.0, 12.0, 30.0, 26.0]]).repeat(b, 1)
    config = geometric("constant", zoom_range=0.2, width_shift_range=0.1, height_shift_range=0.1)
    params = draw(config, b, h, w, seed=10)
    # "constant" paints the object alone (the other modes add mirrored / tiled copies, which
    # get no box); the box itself does not depend on the fill mode.
    warped_blob = apply_mask(blob_masks(b, h, w, boxes), params, config)[:, 0].bool()
    out, valid = apply_boxes(boxes[:, None], params, config, h, w)
    for mode in ("nearest", "reflect", "wrap"):
        other = apply_boxes(boxes[:, None], params, geometric(mode), h, w)
        assert torch.equal(other[0], out) and torch.equal(other[1], valid)
    assert valid.all()
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    x0, y0, x1, y1 = (out[:, 0, i, None, None] for i in range(4))
    inside = (xx >= x0 - 1e-4) & (xx <= x1 + 1e-4) & (yy >= y0 - 1e-4) & (yy <= y1 + 1e-4)
    assert warped_blob.any(dim=(1, 2)).all()
    assert not (warped_blob & ~inside).any()
    # and the box is not needlessly large: it holds the blob's warped area within the bound
    box_area = (out[:, 0, 2] - out[:, 0, 0]) * (out[:, 0, 3] - out[:, 0, 1])
    assert (box_area < 4 * warped_blob.sum(dim=(1, 2))).all()


def test_a_box_is_exact_under_flips_and_whole_pixel_shifts():
    b, h, w = 8, 20, 30
    boxes = torch.tensor([[3.0, 2.0, 11.0, 9.0]]).repeat(b, 1)
    raw = [
        {"tx": float(dx), "ty": float(dy), "flip_horizontal": fh, "flip_vertical": fv}
        for dx, dy, fh, fv in [
            (0, 0, True, False), (2, -3, False, True), (-4, 1, True, True), (5, 5, False, False),
            (1, 0, True, False), (0, 2, False, False), (-2, -2, True, True), (3, -1, False, True),
        ]
    ]  # fmt: skip
    params = AugmentParams.from_keras(raw)
    config = AugmentConfig(width_shift_range=6, height_shift_range=6, horizontal_flip=True,
                           vertical_flip=True, fill_mode="constant")  # fmt: skip
    blob = apply_mask(blob_masks(b, h, w, boxes), params, config)[:, 0].bool()
    out, valid = apply_boxes(boxes[:, None], params, config, h, w)
    rows, cols = blob.any(dim=2), blob.any(dim=1)
    for i in range(b):
        r = torch.nonzero(rows[i])[:, 0]
        c = torch.nonzero(cols[i])[:, 0]
        expected = torch.tensor([c.min(), r.min(), c.max() + 1, r.max() + 1], dtype=torch.float32)
        torch.testing.assert_close(out[i, 0], expected, atol=1e-4, rtol=0)
    assert valid.all()


def test_a_horizontal_flip_maps_box_x_to_width_minus_x():
    config = AugmentConfig(horizontal_flip=True)
    params = AugmentParams.from_keras([{"flip_horizontal": True}])
    out, _ = apply_boxes(torch.tensor([[[2.0, 1.0, 5.0, 4.0]]]), params, config, 10, 20)
    torch.testing.assert_close(out, torch.tensor([[[15.0, 1.0, 18.0, 4.0]]]))


def test_boxes_that_leave_the_image_are_invalid():
    config = AugmentConfig(width_shift_range=40, fill_mode="constant")
    params = AugmentParams.from_keras([{"tx": 30.0}, {"tx": -30.0}, {"tx": 3.0}])
    boxes = torch.tensor([[2.0, 2.0, 8.0, 8.0]]).repeat(3, 1, 1)
    out, valid = apply_boxes(boxes, params, config, 16, 16)
    assert valid.tolist() == [[False], [False], [True]]
    assert ((out >= 0) & (out <= 16)).all()  # clipped to the image


def test_min_visibility_drops_boxes_mostly_outside():
    config = AugmentConfig(width_shift_range=40)
    params = AugmentParams.from_keras([{"tx": 6.0}])  # content moves 6 px left
    boxes = torch.tensor([[[2.0, 0.0, 14.0, 10.0]]])  # -> [-4, 8]: 8 of its 12 px visible
    _, keep = apply_boxes(boxes, params, config, 16, 16, min_visibility=0.6)
    _, drop = apply_boxes(boxes, params, config, 16, 16, min_visibility=0.7)
    assert keep.tolist() == [[True]] and drop.tolist() == [[False]]


def test_padding_rows_stay_invalid_and_pad_unpad_round_trip():
    per_image = [torch.tensor([[1.0, 1.0, 4.0, 4.0], [5.0, 5.0, 9.0, 9.0]]),
                 torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 3.0, 2.0]])]  # fmt: skip
    boxes, valid = pad_boxes(per_image)
    assert boxes.shape == (3, 2, 4) and valid.tolist() == [[True, True], [False, False],
                                                           [True, False]]  # fmt: skip
    config = AugmentConfig(horizontal_flip=True)
    params = AugmentParams.from_keras([{}, {}, {}])
    out, ok = apply_boxes(boxes, params, config, 12, 12, valid=valid)
    back = unpad(out, ok)
    assert [t.shape[0] for t in back] == [2, 0, 1]
    for a, b in zip(back, per_image, strict=True):
        torch.testing.assert_close(a, b)


def test_boxes_pass_through_when_the_config_has_no_geometry():
    boxes = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    params = draw(geometric(), 1, 8, 8)
    out, valid = apply_boxes(boxes, params, AugmentConfig(), 8, 8)
    assert torch.equal(out, boxes) and valid.all()


# ----------------------------------------------------------------------------- keypoints


@pytest.mark.parametrize("fill_mode", MODES)
def test_keypoints_land_on_the_warped_pixel_they_marked(fill_mode):
    b, n, h, w = 8, 6, 48, 48
    g = torch.Generator().manual_seed(11)
    rows = torch.randint(h // 2 - 6, h // 2 + 6, (b, n), generator=g)
    cols = torch.randint(w // 2 - 6, w // 2 + 6, (b, n), generator=g)
    markers = torch.zeros(b, n, h, w, dtype=torch.uint8)  # one channel per keypoint
    markers[torch.arange(b)[:, None], torch.arange(n), rows, cols] = 1
    # Content enlarged >= 2x: the output pixels reading a marked source pixel cover a disc of
    # radius > 0.71 px about the keypoint's image, so the pixel it rounds to is one of them.
    config = geometric(fill_mode, zoom_range=(0.4, 0.5), width_shift_range=0.05,
                       height_shift_range=0.05)  # fmt: skip
    params = draw(config, b, h, w, seed=12)
    warped = apply_mask(markers, params, config)
    points = torch.stack([cols, rows], dim=-1).float()
    out, visible = apply_keypoints(points, params, config, h, w)
    assert visible.all()
    r = torch.floor(out[..., 1] + 0.5).long()
    c = torch.floor(out[..., 0] + 0.5).long()
    assert warped[torch.arange(b)[:, None], torch.arange(n), r, c].bool().all()
    # ... and sits amid them: the marked pixels' centroid is within half a pixel of it
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    weight = warped.float() / warped.float().sum(dim=(2, 3), keepdim=True)
    centroid = torch.stack([(weight * xx).sum(dim=(2, 3)), (weight * yy).sum(dim=(2, 3))], -1)
    assert (centroid - out).abs().max() < 0.5


def test_keypoints_are_exact_under_flips_and_whole_pixel_shifts():
    h, w = 10, 20
    config = AugmentConfig(width_shift_range=5, horizontal_flip=True, vertical_flip=True)
    params = AugmentParams.from_keras(
        [{"flip_horizontal": True}, {"flip_vertical": True}, {"tx": -3.0, "flip_horizontal": True}]
    )
    points = torch.tensor([[[2.0, 3.0]], [[2.0, 3.0]], [[2.0, 3.0]]])
    out, visible = apply_keypoints(points, params, config, h, w)
    expected = torch.tensor([[[17.0, 3.0]], [[2.0, 6.0]], [[14.0, 3.0]]])  # W-1-x, H-1-y
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    assert visible.all()


def test_keypoints_outside_the_image_or_marked_absent_are_not_visible():
    config = AugmentConfig(width_shift_range=20)
    params = AugmentParams.from_keras([{"tx": 8.0}])
    points = torch.tensor([[[2.0, 1.0], [9.0, 1.0], [10.0, 2.0]]])
    given = torch.tensor([[True, True, False]])
    out, visible = apply_keypoints(points, params, config, 4, 12, visible=given)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([-6.0, 1.0, 2.0]), atol=1e-4, rtol=0)
    assert visible.tolist() == [[False, True, False]]


def test_target_matrix_is_the_image_warp_matrix_or_none():
    params = draw(geometric(), 3, 9, 13)
    assert torch.equal(target_matrix(params, geometric(), 9, 13), affine_matrix(params, 9, 13))
    assert target_matrix(params, AugmentConfig(), 9, 13) is None
    no_flip = target_matrix(params, geometric(horizontal_flip=False, vertical_flip=False), 9, 13)
    assert torch.equal(no_flip, affine_matrix(params, 9, 13, include_flips=False))


# ----------------------------------------------------------------------------- errors


def test_mask_of_wrong_rank_is_refused():
    with pytest.raises(ValueError, match=r"`masks` must be \(B, H, W\) or \(B, C, H, W\)"):
        apply_mask(torch.zeros(8, 8, dtype=torch.uint8), draw(geometric(), 8, 8, 8), geometric())


def test_mask_fill_that_does_not_fit_the_dtype_is_refused():
    with pytest.raises(ValueError, match="`mask_fill` must fit the masks' dtype torch.uint8"):
        apply_mask(torch.zeros(2, 8, 8, dtype=torch.uint8), draw(geometric(), 2, 8, 8),
                   geometric(), mask_fill=-1)  # fmt: skip


def test_float_mask_fill_for_integer_masks_is_refused():
    with pytest.raises(TypeError, match="`mask_fill` must be an int label"):
        apply_mask(torch.zeros(2, 8, 8, dtype=torch.int64), draw(geometric(), 2, 8, 8),
                   geometric(), mask_fill=0.5)  # fmt: skip


def test_params_of_another_batch_size_are_refused():
    with pytest.raises(ValueError, match="`params` has 3 rows but the targets have 2"):
        apply_mask(torch.zeros(2, 8, 8, dtype=torch.uint8), draw(geometric(), 3, 8, 8),
                   geometric())  # fmt: skip


def test_boxes_of_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"`boxes` must be \(B, N, 4\)"):
        apply_boxes(torch.zeros(2, 4), draw(geometric(), 2, 8, 8), geometric(), 8, 8)


def test_min_visibility_outside_0_1_is_refused():
    with pytest.raises(ValueError, match=r"`min_visibility` must be a number in \[0, 1\]"):
        apply_boxes(torch.zeros(1, 1, 4), draw(geometric(), 1, 8, 8), geometric(), 8, 8,
                    min_visibility=1.5)  # fmt: skip


def test_non_bool_visibility_is_refused():
    with pytest.raises(TypeError, match="`visible` must be a bool tensor"):
        apply_keypoints(torch.zeros(1, 2, 2), draw(geometric(), 1, 8, 8), geometric(), 8, 8,
                        visible=torch.ones(1, 2))  # fmt: skip


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
def test_targets_on_cuda_match_the_cpu_and_never_sync_the_host(coins):
    _, mask = coins
    h, w = mask.shape[-2:]
    config = geometric("constant")
    params = draw(config, 8, h, w, seed=13)
    masks = mask.expand(8, -1, -1, -1).long() * 1000
    boxes = torch.tensor([[[4.0, 4.0, 20.0, 18.0]]]).repeat(8, 1, 1)
    points = torch.tensor([[[10.0, 12.0]]]).repeat(8, 1, 1)
    cuda = torch.device("cuda")
    p, m, bx, pt = params.to(cuda), masks.to(cuda), boxes.to(cuda), points.to(cuda)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out_m = apply_mask(m, p, config, mask_fill=255)
        out_b, ok_b = apply_boxes(bx, p, config, h, w)
        out_p, ok_p = apply_keypoints(pt, p, config, h, w)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.equal(out_m.cpu(), apply_mask(masks, params, config, mask_fill=255))
    cpu_b, cpu_ok = apply_boxes(boxes, params, config, h, w)
    torch.testing.assert_close(out_b.cpu(), cpu_b, atol=1e-3, rtol=0)
    assert torch.equal(ok_b.cpu(), cpu_ok)
    torch.testing.assert_close(out_p.cpu(), apply_keypoints(points, params, config, h, w)[0],
                               atol=1e-3, rtol=0)  # fmt: skip
    assert ok_p.all()


def test_the_target_functions_dispatch_no_host_sync(coins):
    sync_check = pytest.importorskip("gpuaug.sync_check")
    _, mask = coins
    h, w = mask.shape[-2:]
    for fill_mode in MODES:
        config = geometric(fill_mode)
        params = draw(config, 4, h, w)
        boxes, valid = pad_boxes([torch.tensor([[1.0, 2.0, 9.0, 9.0]])] * 4)
        with sync_check.SyncCheck() as check:
            apply_mask(mask.expand(4, -1, -1, -1), params, config, mask_fill=255)
            apply_boxes(boxes, params, config, h, w, valid=valid, min_visibility=0.5)
            apply_keypoints(torch.ones(4, 3, 2), params, config, h, w)
        check.assert_clean()


def test_boxes_and_keypoints_dispatch_no_matrix_product(coins):
    # A matmul / bmm / einsum would run as a TF32 GEMM under set_float32_matmul_precision("high")
    # and move the targets off the pixels the image warp puts them on.
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        seen: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.append(func._schema.name)
            return func(*args, **(kwargs or {}))

    _, mask = coins
    h, w = mask.shape[-2:]
    config = geometric("nearest")
    params = draw(config, 4, h, w)
    boxes, valid = pad_boxes([torch.tensor([[1.0, 2.0, 9.0, 9.0]])] * 4)
    with Ops() as ops:
        apply_boxes(boxes, params, config, h, w, valid=valid)
        apply_keypoints(torch.ones(4, 3, 2), params, config, h, w)
    products = [op for op in ops.seen if op.split("::")[-1] in ("mm", "bmm", "addmm", "matmul")]
    assert ops.seen and products == []
