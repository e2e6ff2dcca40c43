"""Parity with real Keras 3: the legacy ``ImageDataGenerator`` (keras/src/legacy/preprocessing).

The same parameters go to Keras' ``apply_transform`` (per image, scipy in float64, channels
last) and to our batched `apply` (float32, channels first), on textured 32x32 images
(`textured_image`) with 32 random parameter sets per fill mode and interpolation.

Tolerances, on the 0..255 scale:

- Warp + flips + channel shift, bilinear: max abs diff <= 0.01 on *every* pixel, interior and
  border alike (measured: about 5e-4). The only error is float32 coordinates (~1e-5 px) times
  image slopes (up to ~100 per px). Interior pixels (source point >= 1 px inside the image) and
  border pixels (source within 1 px of the edge, or outside) are checked separately; the border
  is just as tight because we reproduce scipy's fill modes exactly (see gpuaug/augment/warp.py),
  including its hard cut for "constant" and its period n-1 for "wrap".
- Nearest interpolation: exactly equal.
- In both, pixels whose float64 source point lies within 1e-3 px of a discontinuity (the
  "constant" edge, the "wrap" seam, a nearest-interpolation tie at .5) are left out, since a
  float32 ulp can put them on the other side. They are < 0.5% of the pixels (asserted; measured
  0-5 of 32768 for bilinear, ~0.4% for nearest, whose tie window is widest), and in our runs just
  one of them actually differed.
- Brightness: Keras truncates the float image to uint8 and PIL's Brightness truncates its result
  too; we compute clip(x * b, 0, 255) in float. So 0 <= ours - keras < b + 1 (measured max 2.37
  for b <= 1.4), and the mean difference is about (b + 1) / 2.
- Non-square images: Keras rotates/shears/zooms about a wrong centre, so geometric parity uses
  square images; shift-only parity uses a non-square one, and one test pins the divergence.
- fit: mean and std to 1e-5 relative (Keras float32 vs our float64); the ZCA matrix to 1e-3 of
  its largest entry (float32 SVD in Keras).

Distributions: Kolmogorov-Smirnov / chi-square / binomial tests with fixed seeds, 3000 draws,
accepting at p > 1e-3; negative controls show the same tests reject a wrong distribution.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import textured_image
from scipy import stats

from gpuaug.augment.config import AugmentConfig
from gpuaug.augment.module import AugmentParams, GPUAugment, affine_matrix, apply, sample_params
from gpuaug.augment.warp import warp_affine

keras_image = pytest.importorskip("keras.src.legacy.preprocessing.image")
ImageDataGenerator = keras_image.ImageDataGenerator

pytestmark = pytest.mark.keras

MODES = ["nearest", "constant", "reflect", "wrap"]
CVAL = 33.0
P_ACCEPT = 1e-3
N_DRAWS = 3000


@pytest.fixture
def np_global_rng():
    """Keras draws from NumPy's global RNG: seed it for the test and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(1234)
    yield
    np.random.set_state(state)


def _images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(N, H, W, C) float32 textured images, Keras' layout."""
    rng = np.random.default_rng(seed)
    return np.stack([textured_image(rng, height, width) for _ in range(n)]).astype(np.float32)


def _random_transforms(rng, n, size, *, geometry=True, channel=False, brightness=False):
    out = []
    for _ in range(n):
        t = {
            "flip_horizontal": bool(rng.random() < 0.5),
            "flip_vertical": bool(rng.random() < 0.5),
        }
        if geometry:
            t |= {
                "theta": rng.uniform(-45, 45),
                "tx": rng.uniform(-0.3, 0.3) * size,
                "ty": rng.uniform(-0.3, 0.3) * size,
                "shear": rng.uniform(-20, 20),
                "zx": rng.uniform(0.7, 1.3),
                "zy": rng.uniform(0.7, 1.3),
            }
        if channel:
            t["channel_shift_intensity"] = rng.uniform(-40, 40)
        if brightness:
            t["brightness"] = rng.uniform(0.6, 1.4)
        out.append(t)
    # Round through float32 params, so both sides get exactly the same numbers.
    params = AugmentParams.from_keras(out)
    return params, [params.to_keras(i) for i in range(n)]


def _keras_apply(images: np.ndarray, transforms, **kwargs) -> np.ndarray:
    gen = ImageDataGenerator(data_format="channels_last", **kwargs)
    return np.stack(
        [gen.apply_transform(img, t) for img, t in zip(images, transforms, strict=True)]
    )


def _ours(images: np.ndarray, params: AugmentParams, config: AugmentConfig) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    return apply(x, params, config).permute(0, 2, 3, 1).numpy()


def _source_xy(params: AugmentParams, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    m = affine_matrix(params, height, width).double().numpy()
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    x = m[:, 0, 0, None, None] * xx + m[:, 0, 1, None, None] * yy + m[:, 0, 2, None, None]
    y = m[:, 1, 0, None, None] * xx + m[:, 1, 1, None, None] * yy + m[:, 1, 2, None, None]
    return x, y


def _near_discontinuity(coord: np.ndarray, size: int, mode: str, order: int) -> np.ndarray:
    near = np.zeros(coord.shape, dtype=bool)
    if order == 0:
        near |= np.abs(coord - np.floor(coord) - 0.5) < 1e-3
    if mode == "constant":
        near |= (np.abs(coord) < 1e-3) | (np.abs(coord - (size - 1)) < 1e-3)
    if mode == "wrap":
        period = size - 1
        near |= np.abs(coord / period - np.round(coord / period)) * period < 1e-3
    return near


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", MODES)
def test_warp_and_flips_match_keras_apply_transform(fill_mode, interpolation):
    size, n = 32, 32
    order = 1 if interpolation == "bilinear" else 0
    images = _images(n, size, size, seed=order)
    params, transforms = _random_transforms(np.random.default_rng(MODES.index(fill_mode)), n, size)
    expected = _keras_apply(
        images, transforms, fill_mode=fill_mode, cval=CVAL, interpolation_order=order
    )
    config = AugmentConfig(
        rotation_range=45,
        horizontal_flip=True,
        vertical_flip=True,
        fill_mode=fill_mode,
        cval=CVAL,
        interpolation=interpolation,
    )
    diff = np.abs(_ours(images, params, config) - expected).max(axis=-1)  # (N, H, W)

    x, y = _source_xy(params, size, size)
    near = _near_discontinuity(x, size, fill_mode, order) | _near_discontinuity(
        y, size, fill_mode, order
    )
    assert near.mean() < 0.005
    interior = (x >= 1) & (x <= size - 2) & (y >= 1) & (y <= size - 2) & ~near
    border = ~interior & ~near
    assert interior.sum() > 0.2 * diff.size and border.sum() > 0.1 * diff.size
    tolerance = 0.01 if order == 1 else 0.0
    assert diff[interior].max() <= tolerance
    assert diff[border].max() <= tolerance


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect", "constant"])
def test_the_opencv_backend_passes_the_same_bilinear_parity_with_keras(fill_mode):
    cv2 = pytest.importorskip("cv2")
    if int(cv2.__version__.split(".")[0]) < 5:
        pytest.skip(
            "OpenCV 4 interpolates with 1/32-pixel weights (see gpuaug.augment.backends.opencv)"
        )
    size, n = 32, 32
    images = _images(n, size, size, seed=1)
    params, transforms = _random_transforms(np.random.default_rng(MODES.index(fill_mode)), n, size)
    expected = _keras_apply(
        images, transforms, fill_mode=fill_mode, cval=CVAL, interpolation_order=1
    )
    config = AugmentConfig(
        rotation_range=45, horizontal_flip=True, vertical_flip=True, fill_mode=fill_mode, cval=CVAL
    )
    x = torch.from_numpy(images.astype(np.uint8)).permute(0, 3, 1, 2)  # what a loader feeds
    ours = apply(x, params, config, backend="opencv").permute(0, 2, 3, 1).numpy()
    diff = np.abs(ours - expected).max(axis=-1)
    x, y = _source_xy(params, size, size)  # as the reference's test: edge points left out
    near = _near_discontinuity(x, size, fill_mode, 1) | _near_discontinuity(y, size, fill_mode, 1)
    assert near.mean() < 0.005
    assert diff[~near].max() <= 0.01  # the reference's own tolerance against Keras


@pytest.mark.parametrize("fill_mode", MODES)
def test_channel_shift_matches_keras(fill_mode):
    size, n = 32, 16
    images = _images(n, size, size, seed=5)
    params, transforms = _random_transforms(np.random.default_rng(5), n, size, channel=True)
    expected = _keras_apply(images, transforms, fill_mode=fill_mode, cval=CVAL)
    config = AugmentConfig(
        rotation_range=45,
        horizontal_flip=True,
        vertical_flip=True,
        channel_shift_range=40,
        fill_mode=fill_mode,
        cval=CVAL,
    )
    diff = np.abs(_ours(images, params, config) - expected)
    x, y = _source_xy(params, size, size)
    keep = ~(
        _near_discontinuity(x, size, fill_mode, 1) | _near_discontinuity(y, size, fill_mode, 1)
    )
    assert diff.max(axis=-1)[keep].max() <= 0.01


@pytest.mark.parametrize("geometry", [False, True])
def test_brightness_is_within_one_grey_level_plus_keras_uint8_truncation(geometry):
    size, n = 32, 24
    images = _images(n, size, size, seed=6)
    params, transforms = _random_transforms(
        np.random.default_rng(6), n, size, geometry=geometry, channel=True, brightness=True
    )
    expected = _keras_apply(images, transforms, fill_mode="nearest")
    config = AugmentConfig(
        rotation_range=45 if geometry else 0,
        horizontal_flip=True,
        vertical_flip=True,
        channel_shift_range=40,
        brightness_range=(0.6, 1.4),
    )
    diff = _ours(images, params, config) - expected  # signed: Keras truncates, we do not
    bound = params.brightness.numpy()[:, None, None, None] + 1
    assert diff.min() >= -1e-3
    assert np.all(diff < bound)
    assert 0.2 < diff.mean() < 1.5


@pytest.mark.parametrize("fill_mode", MODES)
def test_shifts_on_a_non_square_image_match_keras(fill_mode):
    height, width, n = 20, 30, 16
    images = _images(n, height, width, seed=7)
    rng = np.random.default_rng(7)
    raw = [
        {
            "tx": float(rng.uniform(-12, 12)),
            "ty": float(rng.uniform(-8, 8)),
            "flip_horizontal": bool(rng.random() < 0.5),
        }
        for _ in range(n)
    ]
    params = AugmentParams.from_keras(raw)
    transforms = [params.to_keras(i) for i in range(n)]
    expected = _keras_apply(images, transforms, fill_mode=fill_mode, cval=CVAL)
    config = AugmentConfig(
        width_shift_range=0.4, horizontal_flip=True, fill_mode=fill_mode, cval=CVAL
    )
    diff = np.abs(_ours(images, params, config) - expected).max(axis=-1)
    x, y = _source_xy(params, height, width)
    keep = ~(
        _near_discontinuity(x, width, fill_mode, 1) | _near_discontinuity(y, height, fill_mode, 1)
    )
    assert diff[keep].max() <= 0.01


def test_keras_turns_non_square_images_about_a_wrong_centre():
    """Pins Keras' bug: on an H x W image it rotates about (x, y) = (H/2 - 0.5, W/2 - 0.5)."""
    height, width = 20, 30
    image = _images(1, height, width, seed=8)
    keras = _keras_apply(image, [{"theta": 25.0}])[0]
    params = AugmentParams.from_keras([{"theta": 25.0}])
    ours = _ours(image, params, AugmentConfig(rotation_range=25))[0]
    assert np.abs(ours - keras).mean() > 10  # we rotate about the true centre (14.5, 9.5)

    m = affine_matrix(params, height, width)[0].double()
    linear = m[:, :2]
    keras_centre = torch.tensor([height / 2 - 0.5, width / 2 - 0.5], dtype=torch.float64)
    keras_matrix = torch.cat([linear, (keras_centre - linear @ keras_centre)[:, None]], dim=1)
    x = torch.from_numpy(image).permute(0, 3, 1, 2)
    about_keras_centre = warp_affine(x, keras_matrix[None].float(), "nearest")
    np.testing.assert_allclose(
        about_keras_centre[0].permute(1, 2, 0).numpy(), keras, rtol=0, atol=0.01
    )


# ----------------------------------------------------------------------------- distributions


DIST_CONFIG = dict(
    rotation_range=30,
    width_shift_range=0.2,
    height_shift_range=0.1,
    shear_range=15,
    zoom_range=(0.7, 1.2),
    channel_shift_range=25,
    brightness_range=(0.5, 1.5),
    horizontal_flip=True,
    vertical_flip=True,
)
HEIGHT, WIDTH = 20, 30


@pytest.fixture(scope="module")
def ours() -> AugmentParams:
    config = AugmentConfig(**DIST_CONFIG)
    return sample_params(config, N_DRAWS, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def keras(np_global_rng) -> dict[str, np.ndarray]:
    gen = ImageDataGenerator(data_format="channels_last", **DIST_CONFIG)
    draws = [gen.get_random_transform((HEIGHT, WIDTH, 3)) for _ in range(N_DRAWS)]
    return {key: np.array([d[key] for d in draws], dtype=np.float64) for key in draws[0]}


@pytest.mark.parametrize(
    ("ours_field", "keras_key"),
    [
        ("angle_deg", "theta"),
        ("shear_deg", "shear"),
        ("zoom_x", "zx"),
        ("zoom_y", "zy"),
        ("channel_shift", "channel_shift_intensity"),
        ("brightness", "brightness"),
        # Keras draws `ty` from width_shift_range x width (and applies it vertically);
        # we draw the horizontal shift from the same distribution.
        ("shift_x", "ty"),
        ("shift_y", "tx"),
    ],
)
def test_sampled_distributions_match_keras(ours, keras, ours_field, keras_key):
    columns = {
        "zoom_x": ours.zoom[:, 0],
        "zoom_y": ours.zoom[:, 1],
        "shift_x": ours.shift_px[:, 0],
        "shift_y": ours.shift_px[:, 1],
    }
    sample = columns.get(ours_field, getattr(ours, ours_field, None)).numpy()
    assert stats.ks_2samp(sample, keras[keras_key]).pvalue > P_ACCEPT


def test_ks_rejects_keras_horizontal_shift_which_comes_from_height_shift_range(ours, keras):
    """Negative control, and a pin of Keras' axis mix-up: its horizontal `tx` is U(-2, 2) here
    (height_shift_range 0.1 x height 20), ours U(-6, 6) (width_shift_range 0.2 x width 30)."""
    assert keras["tx"].max() <= 2.0
    assert stats.ks_2samp(ours.shift_px[:, 0].numpy(), keras["tx"]).pvalue < P_ACCEPT


def test_ks_rejects_a_wrong_rotation_range(keras):
    """Negative control: angles drawn from [-25, 25] instead of [-30, 30] are rejected."""
    config = AugmentConfig(**{**DIST_CONFIG, "rotation_range": 25})
    wrong = sample_params(
        config, N_DRAWS, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1)
    )
    assert stats.ks_2samp(wrong.angle_deg.numpy(), keras["theta"]).pvalue < P_ACCEPT


def test_zoom_x_and_y_are_independent(ours, keras):
    zx, zy = ours.zoom[:, 0].numpy(), ours.zoom[:, 1].numpy()
    assert stats.pearsonr(zx, zy).pvalue > P_ACCEPT
    assert stats.ks_2samp(zx - zy, keras["zx"] - keras["zy"]).pvalue > P_ACCEPT


def test_independence_tests_reject_a_shared_zoom(keras):
    """Negative control: one zoom for both axes (zy = zx) is rejected by both tests."""
    shared = keras["zx"]
    partly = shared + 0.3 * (np.random.default_rng(0).uniform(0.7, 1.2, N_DRAWS) - 0.95)
    assert stats.pearsonr(shared, partly).pvalue < P_ACCEPT
    assert stats.ks_2samp(shared - shared, keras["zx"] - keras["zy"]).pvalue < P_ACCEPT


@pytest.mark.parametrize("field", ["flip_h", "flip_v"])
def test_flips_have_probability_one_half(ours, keras, field):
    count = int(getattr(ours, field).sum())
    assert stats.binomtest(count, N_DRAWS, 0.5).pvalue > P_ACCEPT
    key = "flip_horizontal" if field == "flip_h" else "flip_vertical"
    table = [[count, N_DRAWS - count], [int(keras[key].sum()), N_DRAWS - int(keras[key].sum())]]
    assert stats.chi2_contingency(table).pvalue > P_ACCEPT


def test_binomial_test_rejects_a_flip_probability_of_0_55():
    """Negative control: a coin with p = 0.55 is rejected at this sample size."""
    flips = np.random.default_rng(0).random(N_DRAWS) < 0.55
    assert stats.binomtest(int(flips.sum()), N_DRAWS, 0.5).pvalue < P_ACCEPT


def _shift_table(ours_values: np.ndarray, keras_values: np.ndarray) -> list[list[int]]:
    support = sorted(set(ours_values.tolist()) | set(keras_values.tolist()))
    return [
        [int(np.sum(ours_values == v)) for v in support],
        [int(np.sum(keras_values == v)) for v in support],
    ]


@pytest.mark.parametrize("shift_range", [4, [0.1, 0.2], [1, 3, 5]], ids=["int", "fractions", "px"])
def test_discrete_shift_choices_match_keras(np_global_rng, shift_range):
    config = AugmentConfig(width_shift_range=shift_range)
    ours_x = sample_params(
        config, N_DRAWS, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(2)
    ).shift_px[:, 0]
    gen = ImageDataGenerator(data_format="channels_last", width_shift_range=shift_range)
    keras_x = np.array([gen.get_random_transform((HEIGHT, WIDTH, 3))["ty"] for _ in range(N_DRAWS)])
    ours_x = ours_x.double().numpy()
    np.testing.assert_array_equal(np.unique(ours_x), np.unique(keras_x))
    assert stats.chi2_contingency(_shift_table(ours_x, keras_x)).pvalue > P_ACCEPT


def test_chi_square_rejects_an_off_by_one_int_shift(np_global_rng):
    """Negative control: 0..n (instead of Keras' 0..n-1) with a random sign is rejected."""
    gen = ImageDataGenerator(data_format="channels_last", width_shift_range=4)
    keras_x = np.array([gen.get_random_transform((HEIGHT, WIDTH, 3))["ty"] for _ in range(N_DRAWS)])
    rng = np.random.default_rng(3)
    wrong = rng.integers(0, 5, N_DRAWS) * rng.choice([-1, 1], N_DRAWS)
    assert stats.chi2_contingency(_shift_table(wrong.astype(float), keras_x)).pvalue < P_ACCEPT


# ----------------------------------------------------------------------------- standardize, fit


def _quiet(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImageDataGenerator(data_format="channels_last", **kwargs), AugmentConfig.from_keras(
            **kwargs
        )


def test_fit_mean_and_std_match_keras():
    images = _images(40, 8, 8, seed=9)
    keras_gen, config = _quiet(featurewise_std_normalization=True, rescale=1 / 255)
    keras_gen.fit(images)
    aug = GPUAugment(config).fit(torch.from_numpy(images).permute(0, 3, 1, 2))
    np.testing.assert_allclose(aug.mean.flatten().numpy(), keras_gen.mean.flatten(), rtol=1e-5)
    np.testing.assert_allclose(aug.std.flatten().numpy(), keras_gen.std.flatten(), rtol=1e-5)


def test_fit_zca_matrix_matches_keras_up_to_the_channel_order():
    height = width = 4
    images = _images(300, height, width, seed=10)  # 300 images > 48 values: full rank
    keras_gen, config = _quiet(zca_whitening=True, rescale=1 / 255)
    keras_gen.fit(images)
    aug = GPUAugment(config).fit(torch.from_numpy(images).permute(0, 3, 1, 2))
    # Keras flattens (H, W, C), we (C, H, W): position k of HWC is position perm[k] of CHW.
    perm = np.arange(3 * height * width).reshape(3, height, width).transpose(1, 2, 0).flatten()
    ours_hwc = aug.zca_matrix.numpy()[np.ix_(perm, perm)]
    scale = np.abs(keras_gen.zca_whitening_matrix).max()
    np.testing.assert_allclose(ours_hwc, keras_gen.zca_whitening_matrix, rtol=0, atol=1e-3 * scale)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rescale": 1 / 255, "samplewise_std_normalization": True},
        {"samplewise_center": True},
        {"featurewise_std_normalization": True, "rescale": 0.5},
        {"zca_whitening": True, "rescale": 1 / 255},
    ],
    ids=["samplewise_std", "samplewise_center", "featurewise_std", "zca"],
)
def test_standardize_matches_keras(kwargs):
    fit_images = _images(200, 4, 4, seed=11)
    images = _images(6, 4, 4, seed=12)
    keras_gen, config = _quiet(**kwargs)
    aug = GPUAugment(config)
    if config.featurewise_center:
        keras_gen.fit(fit_images)
        aug.fit(torch.from_numpy(fit_images).permute(0, 3, 1, 2))
    expected = np.stack([keras_gen.standardize(img.copy()) for img in images])  # per image
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    out = aug(x, params=AugmentParams.identity(len(images))).permute(0, 2, 3, 1).numpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4 * scale)
