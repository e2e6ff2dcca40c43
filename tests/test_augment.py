"""gpuaug.augment.module: batched parameter sampling, the composed matrix, apply, GPUAugment, fit.

Comparisons with Keras itself are in test_augment_keras.py; this file pins our own behaviour.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from gpuaug.augment import module as augment
from gpuaug.augment import params as params_module
from gpuaug.augment.config import AugmentConfig, load_config
from gpuaug.augment.module import (
    AugmentDraws,
    AugmentParams,
    FitStats,
    GPUAugment,
    affine_matrix,
    apply,
    params_from_draws,
    sample_draws,
    sample_params,
    standardize,
)
from gpuaug.device import PinnedStaging

FULL = AugmentConfig(
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


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dot(height: int = 20, width: int = 30, row: int = 5, col: int = 8) -> torch.Tensor:
    x = torch.zeros(1, 1, height, width)
    x[0, 0, row, col] = 255.0
    return x


def _argmax_rc(x: torch.Tensor) -> tuple[int, int]:
    flat = int(x[0, 0].argmax())
    return divmod(flat, x.shape[-1])


# ----------------------------------------------------------------------------- sampling


def test_sample_params_gives_one_row_per_sample():
    p = sample_params(FULL, 5, 20, 30, generator=_gen())
    assert len(p) == 5
    for name in ("angle_deg", "shear_deg", "channel_shift", "brightness"):
        assert getattr(p, name).shape == (5,) and getattr(p, name).dtype == torch.float32
    assert p.shift_px.shape == p.zoom.shape == (5, 2)
    assert p.flip_h.dtype == p.flip_v.dtype == torch.bool


def test_sampled_values_stay_in_their_ranges():
    p = sample_params(FULL, 4000, 20, 30, generator=_gen())
    assert p.angle_deg.abs().max() <= 30
    assert p.shift_px[:, 0].abs().max() <= 0.2 * 30  # width fraction x width
    assert p.shift_px[:, 1].abs().max() <= 0.1 * 20  # height fraction x height
    assert p.shear_deg.abs().max() <= 15
    assert p.zoom.min() >= 0.7 and p.zoom.max() <= 1.2
    assert p.channel_shift.abs().max() <= 25
    assert p.brightness.min() >= 0.5 and p.brightness.max() <= 1.5
    # and they fill them
    assert p.angle_deg.abs().max() > 29 and p.shift_px[:, 0].abs().max() > 5.9


def test_fractional_shifts_scale_by_their_own_axis():
    config = AugmentConfig(width_shift_range=0.5)
    p = sample_params(config, 2000, 10, 40, generator=_gen())
    assert 19 < p.shift_px[:, 0].abs().max() <= 20  # half the width
    assert torch.all(p.shift_px[:, 1] == 0)


def test_a_float_shift_of_one_or_more_is_in_pixels():
    p = sample_params(AugmentConfig(height_shift_range=2.5), 2000, 100, 100, generator=_gen())
    assert 2.4 < p.shift_px[:, 1].abs().max() <= 2.5


def test_an_int_shift_draws_whole_pixels_below_n_with_a_random_sign():
    p = sample_params(AugmentConfig(width_shift_range=3), 2000, 20, 30, generator=_gen())
    assert set(p.shift_px[:, 0].tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}


def test_a_list_shift_draws_one_of_its_values_with_a_random_sign():
    config = AugmentConfig(width_shift_range=[0.1, 0.25])  # fractions: x width
    p = sample_params(config, 2000, 20, 40, generator=_gen())
    assert set(p.shift_px[:, 0].tolist()) == {-10.0, -4.0, 4.0, 10.0}


def test_disabled_settings_give_neutral_params():
    p = sample_params(AugmentConfig(), 50, 8, 8, generator=_gen())
    assert torch.all(p.angle_deg == 0) and torch.all(p.shift_px == 0)
    assert torch.all(p.shear_deg == 0) and torch.all(p.zoom == 1)
    assert not p.flip_h.any() and not p.flip_v.any()
    assert torch.all(p.channel_shift == 0) and torch.all(p.brightness == 1)


def test_the_same_seed_gives_the_same_params():
    a = sample_params(FULL, 8, 20, 30, generator=_gen(3))
    b = sample_params(FULL, 8, 20, 30, generator=_gen(3))
    c = sample_params(FULL, 8, 20, 30, generator=_gen(4))
    assert torch.equal(a.angle_deg, b.angle_deg) and torch.equal(a.zoom, b.zoom)
    assert not torch.equal(a.angle_deg, c.angle_deg)


def test_sampling_with_a_generator_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    sample_params(FULL, 8, 20, 30, generator=_gen())
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("batch_size", [1, 256])
def test_one_random_draw_per_batch_whatever_its_size(monkeypatch, batch_size):
    calls = []
    real = torch.rand

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "rand", counting)
    sample_params(FULL, batch_size, 20, 30, generator=_gen())
    assert calls == [(batch_size, 12)]


class _OpRecorder(TorchDispatchMode):
    """Records (op name, kwargs) of every aten op dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func._schema.name.split("::")[-1], dict(kwargs or {})))
        return func(*args, **(kwargs or {}))


def test_draws_are_made_on_the_generator_device_and_moved_without_a_sync(monkeypatch):
    # A CPU generator for a CUDA batch: rand on the CPU, pinned, non_blocking copy (no sync).
    pinned = []

    def pin(self, *args, **kwargs):
        pinned.append(tuple(self.shape))
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    with FakeTensorMode(allow_non_fake_inputs=True), _OpRecorder() as recorder:
        draws = sample_draws(4, generator=_gen(), device="cuda")
    assert draws.device.type == "cuda" and pinned == [(4, 12)]
    rand = [kw for name, kw in recorder.calls if name == "rand"]
    assert [kw["device"].type for kw in rand] == ["cpu"]
    copies = [kw for name, kw in recorder.calls if name == "_to_copy"]
    assert [(kw["device"].type, kw["non_blocking"]) for kw in copies] == [("cuda", True)]


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_the_same_seed_gives_the_same_draws_whatever_the_device(monkeypatch, device):
    sent = []
    real = params_module.host_to_device

    def recording(u, target):
        sent.append(u.clone())
        return real(u, target)

    monkeypatch.setattr(params_module, "host_to_device", recording)
    p = sample_params(FULL, 6, 20, 30, generator=_gen(5), device=device)
    assert p.device.type == device and len(p) == 6
    cpu = sample_draws(6, generator=_gen(5))
    assert torch.equal(sent[0], cpu.uniforms)  # what goes to the device is the CPU draw
    if device == "cpu":
        expected = params_from_draws(FULL, cpu, 20, 30)
        assert torch.equal(p.angle_deg, expected.angle_deg) and torch.equal(p.zoom, expected.zoom)


def test_without_a_generator_the_draws_come_from_the_cpu_global_rng():
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(11)
        assert sample_draws(3, device="meta").device.type == "meta"
        after_meta = torch.rand(1)
        torch.manual_seed(11)
        torch.rand(3, 12)
        assert torch.equal(torch.rand(1), after_meta)  # the CPU RNG advanced by one (3, 12) draw
    finally:
        torch.random.set_rng_state(state)


def test_params_are_a_pure_function_of_the_draws():
    draws = sample_draws(8, generator=_gen(2))
    a = draws.params(FULL, 20, 30)
    b = sample_params(FULL, 8, 20, 30, generator=_gen(2))
    for name in ("angle_deg", "shift_px", "shear_deg", "zoom", "flip_h", "brightness"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_draws_of_the_wrong_shape_are_rejected():
    with pytest.raises(ValueError, match="`uniforms` must be \\(B, 12\\) float32"):
        AugmentDraws(torch.rand(4, 11))


def test_a_negative_batch_size_is_rejected():
    with pytest.raises(ValueError, match="`batch_size` must be >= 0"):
        sample_params(FULL, -1, 8, 8)


# ----------------------------------------------------------------------------- acceptance


@pytest.mark.parametrize("preset", ["chollet_cats_dogs", "wrap"])
def test_a_256_batch_at_150px_is_warped_in_one_grid_sample_call(monkeypatch, preset):
    config = (
        load_config(preset)
        if preset != "wrap"
        else AugmentConfig(rotation_range=40, zoom_range=0.2, fill_mode="wrap")
    )
    calls = []
    real = F.grid_sample

    def counting(*args, **kwargs):
        calls.append(tuple(args[0].shape))
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "grid_sample", counting)
    aug = GPUAugment(config)
    x = torch.randint(0, 256, (256, 3, 150, 150), dtype=torch.uint8, generator=_gen())
    out = aug(x, generator=_gen())
    assert calls == [(256, 3, 150, 150)]  # the whole batch in one call: no per-sample loop
    assert out.shape == (256, 3, 150, 150)
    assert aug.last_params.angle_deg.shape == (256,)
    assert aug.last_params.shift_px.shape == aug.last_params.zoom.shape == (256, 2)
    assert aug.last_params.angle_deg.unique().numel() == 256  # per-sample, not per-batch


# ----------------------------------------------------------------------------- geometry


def test_identity_params_give_the_identity_matrix():
    m = affine_matrix(AugmentParams.identity(3), 20, 30)
    torch.testing.assert_close(m, torch.eye(2, 3).expand(3, 2, 3))


def _warped(params: AugmentParams, x: torch.Tensor, **config) -> torch.Tensor:
    config = AugmentConfig(rotation_range=1, fill_mode="constant", **config)
    return apply(x, params, config)


def _params(**rows) -> AugmentParams:
    return AugmentParams.from_keras([rows])


def test_a_positive_x_shift_moves_the_content_left():
    assert _argmax_rc(_warped(_params(tx=3), _dot())) == (5, 5)


def test_a_positive_y_shift_moves_the_content_up():
    assert _argmax_rc(_warped(_params(ty=3), _dot())) == (2, 8)


def test_a_positive_angle_turns_the_content_counter_clockwise():
    x = _dot(21, 21, row=10, col=15)  # right of the centre (10, 10)
    assert _argmax_rc(_warped(_params(theta=90), x)) == (5, 10)  # now above it


def test_zoom_above_one_pulls_the_content_towards_the_centre():
    x = _dot(21, 21, row=10, col=16)  # 6 px right of the centre
    assert _argmax_rc(_warped(_params(zx=2.0), x)) == (10, 13)  # 3 px right
    assert _argmax_rc(_warped(_params(zy=2.0), x)) == (10, 16)  # zy acts on rows only


def test_flips_folded_into_the_matrix_equal_flipping_the_output():
    x = torch.rand(1, 3, 16, 16) * 255
    base = dict(theta=20, tx=2, ty=-1, shear=5, zx=0.9, zy=1.1)
    plain = _warped(_params(**base), x, horizontal_flip=True, vertical_flip=True)
    flipped = _warped(
        _params(**base, flip_horizontal=True, flip_vertical=True),
        x,
        horizontal_flip=True,
        vertical_flip=True,
    )
    torch.testing.assert_close(flipped, plain.flip(-1).flip(-2), rtol=0, atol=1e-3)


def test_flips_alone_are_exact_and_skip_the_warp(monkeypatch):
    monkeypatch.setattr(F, "grid_sample", None)  # must not be called
    x = torch.rand(4, 3, 8, 9) * 255
    params = AugmentParams.from_keras(
        [{"flip_horizontal": h, "flip_vertical": v} for h in (0, 1) for v in (0, 1)]
    )
    out = apply(x, params, AugmentConfig(horizontal_flip=True, vertical_flip=True))
    expected = torch.stack([x[0], x[1].flip(-2), x[2].flip(-1), x[3].flip(-1).flip(-2)])
    assert torch.equal(out, expected)


# ----------------------------------------------------------------------------- apply


def test_uint8_and_float_input_give_the_same_result():
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=_gen())
    p = sample_params(FULL, 4, 16, 16, generator=_gen())
    torch.testing.assert_close(apply(x, p, FULL), apply(x.float(), p, FULL))


def test_output_is_float32_by_default_on_the_input_device():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = GPUAugment(FULL)(x, generator=_gen())
    assert out.dtype == torch.float32 and out.device == x.device


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_output_dtype_can_be_requested(dtype):
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert GPUAugment(FULL, dtype=dtype)(x, generator=_gen()).dtype == dtype


def test_apply_does_not_modify_its_input():
    x = torch.rand(2, 3, 8, 8) * 255
    before = x.clone()
    GPUAugment(AugmentConfig(rescale=1 / 255, samplewise_center=True))(x)
    assert torch.equal(x, before)


def test_channel_shift_clips_to_the_image_range():
    x = torch.tensor([10.0, 20.0, 200.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = apply(x, _params(channel_shift_intensity=50), AugmentConfig(channel_shift_range=60))
    assert out[0, :, 0, 0].tolist() == [60.0, 70.0, 200.0]


def test_brightness_multiplies_and_clips_to_255():
    x = torch.tensor([10.0, 100.0, 200.0]).reshape(1, 3, 1, 1)
    out = apply(x, _params(brightness=1.5), AugmentConfig(brightness_range=(0.5, 1.5)))
    assert out[0, :, 0, 0].tolist() == [15.0, 150.0, 255.0]


def test_a_stage_the_config_turns_off_is_skipped_whatever_the_params_say():
    x = torch.rand(1, 3, 8, 8) * 255
    out = apply(x, _params(theta=30, brightness=2.0), AugmentConfig())
    assert torch.equal(out, x)


# ----------------------------------------------------------------------------- replay


def test_forward_keeps_the_params_of_its_last_call():
    aug = GPUAugment(FULL)
    x = torch.randint(0, 256, (6, 3, 12, 12), dtype=torch.uint8)
    assert aug.last_params is None
    out = aug(x, generator=_gen())
    assert len(aug.last_params) == 6
    assert torch.equal(aug.apply(x, aug.last_params), out)
    assert torch.equal(aug(x, params=aug.last_params), out)


def test_the_same_seed_reproduces_the_same_batch():
    x = torch.randint(0, 256, (6, 3, 12, 12), dtype=torch.uint8)
    a = GPUAugment(FULL)(x, generator=_gen(7))
    b = GPUAugment(FULL)(x, generator=_gen(7))
    c = GPUAugment(FULL)(x, generator=_gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_one_sample_replays_from_its_row_of_the_params():
    aug = GPUAugment(FULL)
    x = torch.randint(0, 256, (6, 3, 12, 12), dtype=torch.uint8)
    out = aug(x, generator=_gen())
    torch.testing.assert_close(aug.apply(x[2:3], aug.last_params[2]), out[2:3])


def test_params_index_slice_and_tensor_index():
    p = sample_params(FULL, 6, 12, 12, generator=_gen())
    assert len(p[1]) == 1 and len(p[-1]) == 1 and len(p[1:4]) == 3
    assert torch.equal(p[torch.tensor([0, 5])].angle_deg, p.angle_deg[[0, 5]])
    with pytest.raises(IndexError, match="index 6 is out of range for 6 samples"):
        p.index(6)


def test_params_to_keras_and_back_round_trip():
    p = sample_params(FULL, 4, 12, 12, generator=_gen())
    again = AugmentParams.from_keras([p.to_keras(i) for i in range(4)])
    for name in ("angle_deg", "shift_px", "shear_deg", "zoom", "flip_h", "channel_shift"):
        assert torch.equal(getattr(again, name), getattr(p, name)), name


def test_to_keras_marks_unused_channel_shift_and_brightness_as_none():
    keras = AugmentParams.identity(1).to_keras(0)
    assert keras["channel_shift_intensity"] is None and keras["brightness"] is None
    assert keras["zx"] == keras["zy"] == 1.0 and keras["flip_horizontal"] is False


def test_params_of_mismatched_shapes_are_rejected():
    p = AugmentParams.identity(3)
    with pytest.raises(ValueError, match="`zoom` must have shape \\(3, 2\\)"):
        AugmentParams(**{**p.__dict__, "zoom": torch.ones(3)})


def test_apply_rejects_params_of_another_batch_size():
    with pytest.raises(ValueError, match="`params` has 2 rows but the batch has 3 images"):
        apply(torch.zeros(3, 3, 8, 8), AugmentParams.identity(2), FULL)


def test_apply_rejects_integer_images_other_than_uint8():
    with pytest.raises(TypeError, match="`images` must be uint8 or float; got torch.int32"):
        apply(torch.zeros(1, 3, 8, 8, dtype=torch.int32), AugmentParams.identity(1), FULL)


def test_apply_rejects_a_single_image_without_batch_dimension():
    with pytest.raises(ValueError, match="`images` must be \\(B, C, H, W\\); got shape"):
        GPUAugment(FULL)(torch.zeros(3, 8, 8))


def test_gpuaugment_rejects_an_integer_dtype():
    with pytest.raises(TypeError, match="`dtype` must be a float torch.dtype"):
        GPUAugment(FULL, dtype=torch.int64)


def test_gpuaugment_takes_a_preset_name():
    assert GPUAugment("chollet_cats_dogs").config == load_config("chollet_cats_dogs")


def test_empty_batch_gives_an_empty_batch():
    out = GPUAugment(FULL)(torch.zeros(0, 3, 8, 8, dtype=torch.uint8))
    assert out.shape == (0, 3, 8, 8)


# ----------------------------------------------------------------------------- standardize


def test_rescale_runs_after_the_augmentation():
    x = torch.full((1, 1, 2, 2), 200.0)
    config = AugmentConfig(brightness_range=(1.5, 1.5), rescale=0.5)
    out = apply(x, _params(brightness=1.5), config)
    assert torch.all(out == 127.5)  # clip(200 * 1.5, 0, 255) * 0.5


def test_preprocessing_function_is_called_once_per_batch_before_rescale():
    seen = []

    def fn(batch: torch.Tensor) -> torch.Tensor:
        seen.append((tuple(batch.shape), float(batch.max())))
        return batch + 1

    x = torch.full((4, 3, 8, 8), 254.0)
    out = GPUAugment(AugmentConfig(preprocessing_function=fn, rescale=0.5))(x)
    assert seen == [((4, 3, 8, 8), 254.0)]
    assert torch.all(out == 127.5)


def test_samplewise_center_and_std_normalise_each_image_over_all_values():
    x = torch.rand(3, 3, 8, 8) * 255
    with pytest.warns(UserWarning, match="overrides"):
        config = AugmentConfig(samplewise_std_normalization=True)
    out = standardize(x, config)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(1, 2, 3), unbiased=False), torch.ones(3))


def test_featurewise_steps_warn_and_are_skipped_before_fit():
    config = AugmentConfig(featurewise_center=True)
    x = torch.rand(2, 3, 4, 4)
    with pytest.warns(UserWarning, match="`featurewise_center` is on but the augmenter has not"):
        out = GPUAugment(config)(x)
    assert torch.equal(out, x)


def test_featurewise_stats_fold_into_one_affine_map_with_rescale():
    stats = FitStats(mean=torch.tensor([1.0, 2.0]).view(2, 1, 1), std=torch.ones(2, 1, 1) * 3)
    with pytest.warns(UserWarning):
        config = AugmentConfig(featurewise_std_normalization=True, rescale=0.5)
    x = torch.full((1, 2, 1, 1), 10.0)
    out = standardize(x, config, stats)
    expected = (torch.tensor([5.0, 5.0]) - torch.tensor([1.0, 2.0])) / (3 + 1e-6)
    torch.testing.assert_close(out.flatten(), expected)


# ----------------------------------------------------------------------------- fit


def _featurewise_config(**kwargs) -> AugmentConfig:
    with pytest.warns(UserWarning):
        return AugmentConfig(**kwargs)


def test_fit_computes_the_per_channel_mean_and_std_after_rescale():
    x = torch.randint(0, 256, (20, 3, 6, 6), dtype=torch.uint8, generator=_gen())
    aug = GPUAugment(_featurewise_config(featurewise_std_normalization=True, rescale=1 / 255))
    aug.fit(x)
    scaled = x.double() / 255
    expected_mean = scaled.mean(dim=(0, 2, 3)).float().view(3, 1, 1)
    expected_std = scaled.std(dim=(0, 2, 3), unbiased=False).float().view(3, 1, 1)
    torch.testing.assert_close(aug.mean, expected_mean)
    torch.testing.assert_close(aug.std, expected_std)
    out = aug(x)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3), unbiased=False), torch.ones(3))


def test_zca_whitening_gives_an_identity_covariance():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(12, 12))
    x = torch.tensor(rng.normal(size=(400, 12)) @ mixing * 20 + 120).reshape(400, 3, 2, 2)
    aug = GPUAugment(_featurewise_config(zca_whitening=True))
    aug.fit(x)
    assert aug.zca_matrix.shape == (12, 12)
    white = aug(x).reshape(400, -1).double()
    covariance = white.T @ white / 400
    torch.testing.assert_close(covariance, torch.eye(12, dtype=torch.float64), atol=1e-3, rtol=0)


def test_fit_with_augment_uses_rounds_of_augmented_copies_reproducibly():
    x = torch.randint(0, 256, (8, 3, 10, 10), dtype=torch.uint8, generator=_gen())
    config = AugmentConfig(featurewise_center=True, rotation_range=30, brightness_range=(0.5, 1.5))
    a = GPUAugment(config).fit(x, augment=True, rounds=3, generator=_gen(1))
    b = GPUAugment(config).fit(x, augment=True, rounds=3, generator=_gen(1))
    plain = GPUAugment(config).fit(x)
    assert torch.equal(a.mean, b.mean)
    assert not torch.allclose(a.mean, plain.mean)


def test_fit_accepts_a_numpy_array():
    x = np.random.default_rng(0).uniform(0, 255, size=(5, 1, 4, 4))
    aug = GPUAugment(AugmentConfig(featurewise_center=True)).fit(x)
    assert aug.mean.shape == (1, 1, 1)
    assert float(aug.mean) == pytest.approx(x.mean(), rel=1e-6)


def test_fit_rejects_a_single_image():
    with pytest.raises(ValueError, match="`x` must be \\(N, C, H, W\\)"):
        GPUAugment(AugmentConfig(featurewise_center=True)).fit(torch.zeros(3, 4, 4))


def test_fit_rejects_zero_rounds():
    with pytest.raises(ValueError, match="`rounds` must be an int >= 1"):
        GPUAugment().fit(torch.zeros(2, 3, 4, 4), augment=True, rounds=0)


def test_fitted_stats_are_buffers_that_follow_the_module():
    aug = GPUAugment(AugmentConfig(featurewise_center=True)).fit(torch.rand(4, 3, 4, 4))
    assert "mean" in dict(aug.named_buffers())
    assert aug.double().mean.dtype == torch.float64


def test_a_module_call_on_fake_tensors_reads_no_data_pointer():
    # the plan's key reads a pointer's alignment only for an interleaved (RGBX-like) source;
    # a FakeTensor warns (and will refuse) when its data pointer is read
    aug = GPUAugment(FULL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with FakeTensorMode():
            out = aug(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), generator=_gen())
    assert out.shape == (2, 3, 8, 8)


def test_a_channels_last_batch_on_fake_tensors_reads_no_data_pointer():
    # an interleaved source is where the plan's key reads a pointer: not for a FakeTensor
    aug = GPUAugment(FULL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with FakeTensorMode():
            x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
            out = aug(x.contiguous(memory_format=torch.channels_last), generator=_gen())
    assert out.shape == (2, 3, 8, 8)


def test_stats_fitted_under_inference_mode_are_used_and_their_in_place_changes_seen():
    # inference tensors have no version counter: the module keeps no plan over them
    config = AugmentConfig(featurewise_center=True, rotation_range=20)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    with torch.inference_mode():
        aug = GPUAugment(config).fit(x.float())
    first = aug(x, generator=_gen(1))
    assert torch.equal(first, aug.apply(x, aug.last_params))
    with torch.inference_mode():
        aug.mean.add_(10.0)
    second = aug(x, generator=_gen(1))
    assert torch.allclose(second, first - 10.0, atol=1e-4)


def test_pinned_staging_refuses_a_depth_below_one():
    with pytest.raises(ValueError, match="`max_depth` must be an int >= 1; got 0"):
        PinnedStaging(0)


def test_pinned_staging_pickles_empty():
    import pickle

    clone = pickle.loads(pickle.dumps(PinnedStaging(3)))
    assert clone.max_depth == 3 and clone._rings == {}


# ----------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
def test_staged_draws_are_the_cpu_generators_draws_and_each_batch_keeps_its_own():
    # at most two pinned buffers, each refilled after its copy's event; every device tensor new
    staging = PinnedStaging(2)
    got = [
        sample_draws(6, generator=_gen(seed), device="cuda", staging=staging) for seed in range(5)
    ]
    torch.cuda.synchronize()
    for seed, draws in enumerate(got):
        assert draws.device.type == "cuda"
        assert torch.equal(draws.uniforms.cpu(), sample_draws(6, generator=_gen(seed)).uniforms)
    assert len({d.uniforms.data_ptr() for d in got}) == 5
    (ring,) = staging._rings.values()
    assert 1 <= len(ring) <= 2 and all(host.is_pinned() for host, _ in ring)
    before = [host.data_ptr() for host, _ in ring]
    sample_draws(6, generator=_gen(), device="cuda", staging=staging)  # all copies done: reused
    assert sorted(host.data_ptr() for host, _ in ring) == sorted(before)


@pytest.mark.cuda
def test_draws_made_under_graph_capture_bypass_the_pinned_ring():
    # no Event.query while capturing, and no ring buffer a replay would read while refilled
    staging = PinnedStaging()
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.cuda.graph(graph):
        sample_draws(4, generator=_gen(), device="cuda", staging=staging)
    assert staging._rings == {}


@pytest.mark.cuda
def test_a_module_stages_its_cpu_draws_through_pinned_buffers():
    aug = GPUAugment(FULL)
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8, device="cuda")
    out = aug(x, generator=_gen(3))
    assert aug._staging._rings  # the draws went through the module's pinned buffers
    assert torch.equal(aug.last_draws.uniforms.cpu(), sample_draws(4, generator=_gen(3)).uniforms)
    assert torch.equal(aug.apply(x, aug.last_draws), out)


@pytest.mark.cuda
def test_params_are_drawn_on_cuda_with_a_cuda_generator():
    gen = torch.Generator(device="cuda").manual_seed(0)
    p = sample_params(FULL, 8, 16, 16, generator=gen, device="cuda")
    assert p.device.type == "cuda"
    again = sample_params(FULL, 8, 16, 16, generator=torch.Generator("cuda").manual_seed(0))
    assert torch.equal(p.angle_deg, again.angle_deg)


@pytest.mark.cuda
@pytest.mark.parametrize("fill_mode", ["nearest", "constant", "reflect", "wrap"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_cuda_matches_cpu_for_the_same_params(fill_mode, interpolation):
    config = AugmentConfig(
        rotation_range=40,
        width_shift_range=0.2,
        height_shift_range=0.2,
        shear_range=10,
        zoom_range=0.3,
        horizontal_flip=True,
        channel_shift_range=20,
        brightness_range=(0.7, 1.3),
        fill_mode=fill_mode,
        cval=50,
        interpolation=interpolation,
    )
    x = torch.randint(0, 256, (16, 3, 32, 40), dtype=torch.uint8, generator=_gen())
    p = sample_params(config, 16, 32, 40, generator=_gen())
    cpu = apply(x, p, config)
    cuda = apply(x.cuda(), p.to("cuda"), config)
    assert cuda.device.type == "cuda"
    diff = (cuda.cpu() - cpu).abs()
    assert diff.mean() < 0.01  # a few pixels may sit on a discontinuity (constant edge, tie)
    assert torch.quantile(diff.flatten(), 0.999) < 0.05


@pytest.mark.cuda
def test_fit_on_cuda_matches_cpu():
    with pytest.warns(UserWarning):
        config = AugmentConfig(zca_whitening=True, rescale=1 / 255)
    x = torch.randint(0, 256, (64, 3, 4, 4), dtype=torch.uint8, generator=_gen())
    cpu = GPUAugment(config).fit(x)
    cuda = GPUAugment(config).fit(x.cuda())
    assert cuda.zca_matrix.device.type == "cuda"
    torch.testing.assert_close(cuda.mean.cpu(), cpu.mean)
    torch.testing.assert_close(cuda.zca_matrix.cpu(), cpu.zca_matrix, rtol=1e-4, atol=1e-3)


# ----------------------------------------------------------------------------- backends


def test_an_unknown_backend_is_rejected_in_the_constructor():
    with pytest.raises(ValueError, match="must be one of \\['auto', 'reference', 'triton'"):
        GPUAugment(FULL, backend="cuda")


def test_backend_kornia_is_refused_with_the_new_name_of_the_reference():
    with pytest.raises(ValueError, match='`backend="kornia"` is gone.*use backend="reference"'):
        GPUAugment(FULL, backend="kornia")


def test_an_unknown_memory_format_is_rejected():
    with pytest.raises(ValueError, match="`memory_format` must be torch.contiguous_format or"):
        GPUAugment(FULL, memory_format=torch.channels_last_3d)


def test_auto_is_the_reference_on_the_cpu():
    x = torch.randint(0, 256, (3, 3, 10, 12), dtype=torch.uint8, generator=_gen())
    p = sample_params(FULL, 3, 10, 12, generator=_gen())
    assert torch.equal(apply(x, p, FULL), apply(x, p, FULL, backend="reference"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_the_reference_writes_channels_last_in_every_dtype(dtype):
    x = torch.randint(0, 256, (2, 3, 6, 9), dtype=torch.uint8, generator=_gen())
    aug = GPUAugment(FULL, dtype=dtype, memory_format=torch.channels_last, backend="reference")
    out = aug(x, generator=_gen())
    assert out.dtype == dtype and out.stride() == (6 * 9 * 3, 1, 9 * 3, 3)
    plain = GPUAugment(FULL, dtype=dtype, backend="reference")(x, generator=_gen())
    assert plain.is_contiguous() and torch.equal(out, plain)


def test_low_precision_reference_output_is_the_float32_result_rounded():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=_gen())
    p = sample_params(FULL, 2, 8, 8, generator=_gen())
    config = dataclasses.replace(FULL, rescale=1 / 255)
    full = apply(x, p, config)
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(apply(x, p, config, dtype=dtype), full.to(dtype))


def test_apply_takes_draws_or_the_params_they_stand_for():
    x = torch.randint(0, 256, (3, 3, 10, 12), dtype=torch.uint8, generator=_gen())
    draws = sample_draws(3, generator=_gen(1))
    via_draws = apply(x, draws, FULL)
    assert torch.equal(via_draws, apply(x, draws.params(FULL, 10, 12), FULL))


def test_last_params_are_computed_from_the_draws_once(monkeypatch):
    calls = []
    real = augment.params_from_draws

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(augment, "params_from_draws", counting)
    aug = GPUAugment(FULL)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=_gen())
    out = aug(x, generator=_gen(3))
    params = aug.last_params
    assert len(calls) == 1 and aug.last_params is params  # once: the reference warps with them
    assert torch.equal(params.angle_deg, sample_params(FULL, 4, 8, 8, generator=_gen(3)).angle_deg)
    assert torch.equal(aug.apply(x, params), out)


def test_compile_dispatches_to_apply_compiled(monkeypatch):
    seen = {}

    def apply_compiled(images, params, config, *, stats, dtype, memory_format):
        seen.update(params=params, stats=stats, dtype=dtype, memory_format=memory_format)
        return torch.zeros(images.shape, dtype=dtype)

    module = types.ModuleType("gpuaug.augment.backends.compile")
    module.apply_compiled = apply_compiled
    monkeypatch.setitem(sys.modules, "gpuaug.augment.backends.compile", module)
    x = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    aug = GPUAugment(FULL, dtype=torch.float16, backend="compile")
    aug(x, generator=_gen())
    assert isinstance(seen["params"], AugmentParams) and len(seen["params"]) == 2
    assert seen["dtype"] == torch.float16 and seen["memory_format"] == torch.contiguous_format


def test_compile_without_the_compiled_module_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpuaug.augment.backends.compile", None)  # import fails
    with pytest.raises(
        ImportError, match='`backend="compile"` needs the gpuaug.augment.backends.compile module'
    ):
        apply(torch.zeros(1, 3, 4, 4), AugmentParams.identity(1), FULL, backend="compile")


@pytest.mark.parametrize("fill_mode", ["nearest", "constant", "reflect", "wrap"])
def test_the_reference_path_dispatches_no_matrix_product(fill_mode):
    # A matmul / bmm / einsum becomes a TF32 GEMM under
    # set_float32_matmul_precision("high"); the matrix and the coordinates are multiply-adds.
    config = dataclasses.replace(FULL, fill_mode=fill_mode, rescale=1 / 255)
    x = torch.randint(0, 256, (3, 3, 10, 12), dtype=torch.uint8, generator=_gen())
    draws = sample_draws(3, generator=_gen())
    with _OpRecorder() as recorder:
        apply(x, draws, config)
    names = {name for name, _ in recorder.calls}
    assert "grid_sampler_2d" in names
    assert not names & {"mm", "bmm", "matmul", "einsum", "addmm", "baddbmm", "mv", "dot"}


def test_forward_takes_draws_and_keeps_them():
    aug = GPUAugment(FULL)
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=_gen())
    draws = sample_draws(3, generator=_gen(4))
    out = aug(x, params=draws)
    assert aug.last_draws is draws
    assert torch.equal(aug.last_params.angle_deg, draws.params(FULL, 8, 8).angle_deg)
    assert torch.equal(out, aug(x, generator=_gen(4)))
