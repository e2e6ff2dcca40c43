"""The "chunked" CPU backend: the reference apply on slices, bitwise equal to one whole call."""

from __future__ import annotations

import pytest
import torch

from gpuaug import AugmentConfig, GPUAugment
from gpuaug.augment.backends.chunked import apply_chunked, chunk_size
from gpuaug.augment.module import apply, sample_params

BOOK = AugmentConfig.from_keras(
    rotation_range=40,
    width_shift_range=0.2,
    height_shift_range=0.2,
    shear_range=0.2,
    zoom_range=0.2,
    horizontal_flip=True,
    fill_mode="nearest",
    rescale=1 / 255,
)
H, W = 9, 7
ONE_IMAGE = 3 * H * W * 4  # float32 bytes of one working image


def _batch(b: int, config: AugmentConfig = BOOK, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, 3, H, W), dtype=torch.uint8, generator=g)
    return x, sample_params(config, b, H, W, generator=g)


def test_chunk_size_keeps_the_float_image_within_the_budget():
    x, _ = _batch(10)
    assert chunk_size(x, torch.float32, 3 * ONE_IMAGE) == 3
    assert chunk_size(x, torch.float64, 3 * ONE_IMAGE) == 1
    assert chunk_size(x, torch.float32, 1) == 1


def test_book_settings_in_uneven_slices_are_bitwise_the_whole_batch():
    x, p = _batch(10)
    out = apply_chunked(x, p, BOOK, chunk_bytes=3 * ONE_IMAGE)  # slices of 2, 3, 2, 3
    assert torch.equal(out, apply(x, p, BOOK))


def test_slices_are_balanced_and_within_the_budget(monkeypatch):
    from gpuaug.augment.backends import chunked

    sizes = []
    real = chunked.apply_reference

    def spy(images, *args):
        sizes.append(images.shape[0])
        return real(images, *args)

    monkeypatch.setattr(chunked, "apply_reference", spy)
    x, p = _batch(10)
    apply_chunked(x, p, BOOK, chunk_bytes=4 * ONE_IMAGE)
    assert sizes == [3, 3, 4]


@pytest.mark.parametrize("fill_mode", ["constant", "reflect", "wrap"])
def test_every_stage_in_slices_equals_the_whole_batch(fill_mode):
    config = AugmentConfig(
        rotation_range=30,
        width_shift_range=0.3,
        zoom_range=0.2,
        horizontal_flip=True,
        vertical_flip=True,
        channel_shift_range=40.0,
        brightness_range=(0.5, 1.5),
        fill_mode=fill_mode,
        cval=17.0,
        interpolation="nearest" if fill_mode == "wrap" else "bilinear",
        samplewise_center=True,
        rescale=1 / 255,
    )
    x, p = _batch(5, config, seed=1)
    out = apply_chunked(x, p, config, chunk_bytes=2 * ONE_IMAGE)
    torch.testing.assert_close(out, apply(x, p, config), atol=1e-3 / 255, rtol=0)


def test_featurewise_stats_and_channels_last_bfloat16_output():
    config = AugmentConfig(
        rotation_range=20, featurewise_center=True, featurewise_std_normalization=True
    )
    x, p = _batch(6, config, seed=2)
    aug = GPUAugment(config).fit(x)
    out = apply_chunked(
        x,
        p,
        config,
        stats=aug.stats,
        dtype=torch.bfloat16,
        memory_format=torch.channels_last,
        chunk_bytes=4 * ONE_IMAGE,
    )
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)
    expected = apply(x, p, config, stats=aug.stats, dtype=torch.bfloat16)
    assert torch.equal(out, expected)


def test_a_batch_within_one_slice_is_one_call():
    x, p = _batch(2)
    assert torch.equal(apply_chunked(x, p, BOOK), apply(x, p, BOOK))


def test_rejects_a_zero_chunk_budget():
    x, p = _batch(2)
    with pytest.raises(ValueError, match="`chunk_bytes` must be an int >= 1; got 0"):
        apply_chunked(x, p, BOOK, chunk_bytes=0)


def test_rejects_params_of_another_length():
    x, _ = _batch(2)
    _, p = _batch(3)
    with pytest.raises(ValueError, match="`params` has 3 rows but the batch has 2 images"):
        apply_chunked(x, p, BOOK)


def test_apply_with_backend_chunked_is_bitwise_the_reference():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (40, 3, 220, 220), dtype=torch.uint8, generator=g)
    p = sample_params(BOOK, 40, 220, 220, generator=g)  # 23 MB of float32: two slices
    out = apply(x, p, BOOK, backend="chunked")
    assert torch.equal(out, apply(x, p, BOOK, backend="reference"))
