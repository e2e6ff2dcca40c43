"""TrivialAugmentWide / RandAugment per sample: each op equals torchvision's on the same image
and magnitude; the op and magnitude draws follow torchvision's rules."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from gpuaug.augment.auto_augment import (
    OPS,
    AutoAugmentParams,
    RandAugment,
    TrivialAugmentWide,
    apply_round,
    apply_round_grouped,
    apply_round_reference,
    magnitude_table,
)
from gpuaug.sync_check import SyncCheck

TV = v2.TrivialAugmentWide()


def _torchvision(image: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    return TV._apply_image_or_video_transform(
        image, name, magnitude, interpolation=TV.interpolation, fill=TV._fill
    )


def _images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, height, width), generator=gen, dtype=torch.uint8)
    x[0] = x[0] // 4 + 60  # a low-contrast image (autocontrast, equalize have work to do)
    x[1, :, :, : width // 2] = 255  # a saturated half
    return x


IMPLEMENTATIONS = [apply_round_grouped, apply_round_reference]


def _batched_vs_torchvision(
    name: str, magnitudes: list[float], height=23, width=31, apply=apply_round
):
    x = _images(len(magnitudes), height, width)
    op = torch.full((len(magnitudes),), OPS.index(name))
    mag = torch.tensor(magnitudes, dtype=torch.float64)
    ours = apply(x, op, mag)
    expected = torch.stack([_torchvision(x[i], name, m) for i, m in enumerate(magnitudes)])
    return ours, expected


def _wide_magnitudes(name: str) -> list[float]:
    row = magnitude_table("wide", 31, 23, 31)[OPS.index(name)]
    picked = [float(row[k]) for k in (0, 3, 10, 17, 24, 30)]
    signed = v2.TrivialAugmentWide._AUGMENTATION_SPACE[name][1]
    return picked + [-m for m in picked[1:3]] if signed else picked


@pytest.mark.parametrize(
    "name",
    [
        "Identity",
        "TranslateX",
        "TranslateY",
        "Brightness",
        "Color",
        "Contrast",
        "Sharpness",
        "Posterize",
        "Solarize",
        "AutoContrast",
        "Equalize",
    ],
)
@pytest.mark.parametrize("apply", IMPLEMENTATIONS, ids=lambda f: f.__name__)
def test_each_op_equals_torchvisions_functional_op(name, apply):
    ours, expected = _batched_vs_torchvision(name, _wide_magnitudes(name), apply=apply)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("name", ["ShearX", "ShearY", "Rotate"])
@pytest.mark.parametrize("apply", IMPLEMENTATIONS, ids=lambda f: f.__name__)
def test_each_geometric_op_equals_torchvisions_functional_op(name, apply):
    magnitudes = _wide_magnitudes(name)
    if name == "Rotate":
        magnitudes += [90.0, -90.0, 180.0, 33.3]
    for height, width in ((29, 29), (23, 31)):
        ours, expected = _batched_vs_torchvision(name, magnitudes, height, width, apply=apply)
        assert torch.equal(ours, expected)


@pytest.mark.parametrize("policy", [TrivialAugmentWide, RandAugment], ids=lambda c: c.__name__)
@pytest.mark.parametrize("batch", [1, 3, 8, 40])
def test_the_grouped_path_equals_the_all_ops_reference_bit_for_bit(policy, batch):
    module = policy()
    gen = torch.Generator().manual_seed(batch)
    x = torch.randint(0, 256, (batch, 3, 26, 33), generator=gen, dtype=torch.uint8)
    x[0] = x[0] // 3 + 70  # low contrast: autocontrast and equalize change it
    params = module.sample_params(batch, 26, 33, generator=gen)
    drawn = set(params.op.flatten().tolist())
    if batch < len(OPS):
        assert len(drawn) < len(OPS)  # some ops are drawn by no image
    for r in range(params.op.shape[1]):
        op, mag = params.op[:, r], params.magnitude[:, r]
        for images in (x, x.float(), x[:, :1].contiguous()):
            fast = apply_round_grouped(images, op, mag, fill=7.0)
            reference = apply_round_reference(images, op, mag, fill=7.0)
            assert fast.dtype == reference.dtype == images.dtype
            assert torch.equal(fast, reference)


def test_the_grouped_path_leaves_its_input_unchanged():
    x = _images(6, 20, 20).float()
    before = x.clone()
    apply_round_grouped(x, torch.arange(6) + 6, torch.full((6,), 0.5, dtype=torch.float64))
    assert torch.equal(x, before)


def test_apply_round_groups_on_the_cpu_and_the_reference_reads_nothing_on_the_host():
    x = _images(8, 16, 16)
    op, mag = torch.arange(8), torch.full((8,), 0.3, dtype=torch.float64)
    with SyncCheck(device_forms=False) as grouped:
        apply_round(x, op, mag)
    with SyncCheck() as reference:
        apply_round_reference(x, op, mag)
    assert grouped.events and all("auto_augment.py" in e.where for e in grouped.events)
    reference.assert_clean()


def test_device_images_with_cpu_draws_take_the_device_form_on_the_images_device(monkeypatch):
    """The form follows the pixels ("meta" images stand in for a GPU's): CPU draws are copied
    to the images' device and the per-op grouping, which reads them on the host, is not run."""

    def no_grouping(*args, **kwargs):
        raise AssertionError("the grouped CPU form ran on device images")

    monkeypatch.setattr("gpuaug.augment.auto_augment.apply_round_grouped", no_grouping)
    x = torch.zeros(len(OPS), 3, 12, 14, dtype=torch.uint8, device="meta")
    op, mag = torch.arange(len(OPS)), torch.full((len(OPS),), 0.3, dtype=torch.float64)
    out = apply_round(x, op, mag)
    assert out.device.type == "meta" and out.shape == x.shape


def test_the_one_pixel_border_reads_the_edge_as_grid_sample_does():
    x = _images(2, 16, 16)
    ours = apply_round(
        x, torch.full((2,), OPS.index("TranslateX")), torch.tensor([3.0, -5.0], dtype=torch.float64)
    )
    assert torch.equal(ours[0, :, :, :3], torch.zeros(3, 16, 3, dtype=torch.uint8))
    assert torch.equal(ours[0, :, :, 3:], x[0, :, :, :-3])


def test_a_batch_of_mixed_ops_equals_torchvision_image_by_image():
    ta = TrivialAugmentWide()
    x = _images(64, 24, 24, seed=3)
    out = ta(x, generator=torch.Generator().manual_seed(0))
    p = ta.last_params
    geometric = {"ShearX", "ShearY", "Rotate"}
    for i in range(64):
        name = p.names(i)[0]
        expected = _torchvision(x[i], name, float(p.magnitude[i, 0]))
        if name in geometric:  # float32 rounding may pick the other side of a nearest tie
            assert (out[i] != expected).double().mean() < 2e-3
        else:
            assert torch.equal(out[i], expected), name


def test_randaugment_rounds_apply_one_after_another_as_torchvision():
    ra = RandAugment(num_ops=2, magnitude=9)
    tv = v2.RandAugment(num_ops=2, magnitude=9)
    x = _images(16, 20, 20, seed=1)
    out = ra(x, generator=torch.Generator().manual_seed(0))
    p = ra.last_params
    for i in range(16):
        expected = x[i]
        for r in range(2):
            expected = tv._apply_image_or_video_transform(
                expected,
                OPS[int(p.op[i, r])],
                float(p.magnitude[i, r]),
                interpolation=tv.interpolation,
                fill=tv._fill,
            )
        assert (out[i] != expected).double().mean() < 2e-3


def test_magnitude_tables_are_torchvisions():
    for policy, cls in (("wide", v2.TrivialAugmentWide), ("rand", v2.RandAugment)):
        table = magnitude_table(policy, 31, 40, 50)
        for name, (fn, _) in cls._AUGMENTATION_SPACE.items():
            expected = fn(31, 40, 50)
            row = table[OPS.index(name)]
            if expected is None:
                assert not row.any()
            else:
                assert torch.equal(row, expected.to(torch.float64)), name


def test_signed_ops_and_their_signs_follow_torchvision():
    for cls, ours in (
        (v2.TrivialAugmentWide, TrivialAugmentWide()),
        (v2.RandAugment, RandAugment()),
    ):
        signed = {name for name, (_, s) in cls._AUGMENTATION_SPACE.items() if s}
        p = ours.sample_params(5000, 32, 32, generator=torch.Generator().manual_seed(0))
        negative = {OPS[int(k)] for k in p.op[p.magnitude < 0].unique()}
        assert negative == signed


def test_each_image_draws_its_own_op_uniformly_and_a_biased_draw_is_detected():
    stats = pytest.importorskip("scipy.stats")
    ta = TrivialAugmentWide()
    p = ta.sample_params(14000, 32, 32, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(p.op[:, 0], minlength=len(OPS)).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    biased = counts.copy()
    biased[0] += 150
    biased[1] -= 150
    assert stats.chisquare(biased).pvalue < 1e-3


def test_magnitude_bins_are_uniform_per_image_for_trivialaugment():
    stats = pytest.importorskip("scipy.stats")
    ta = TrivialAugmentWide()
    p = ta.sample_params(31000, 32, 32, generator=torch.Generator().manual_seed(1))
    rotate = p.magnitude[p.op == OPS.index("Rotate")].abs()
    bins = torch.round(rotate / 4.5).long()
    counts = torch.bincount(bins, minlength=31).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3


def test_randaugment_uses_its_fixed_magnitude_bin():
    ra = RandAugment(num_ops=3, magnitude=5)
    p = ra.sample_params(500, 32, 32, generator=torch.Generator().manual_seed(0))
    rotate = p.magnitude[p.op == OPS.index("Rotate")].abs()
    assert p.op.shape == (500, 3)
    assert torch.allclose(rotate, torch.full_like(rotate, 5.0))


def test_replay_with_the_last_params_reproduces_the_batch():
    ta = TrivialAugmentWide()
    x = _images(16, 16, 16)
    out = ta(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ta(x, params=ta.last_params), out)
    assert isinstance(ta.last_params, AutoAugmentParams)


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="`interpolation` must be 'nearest'"):
        TrivialAugmentWide(interpolation="bilinear")
    with pytest.raises(ValueError, match="`num_magnitude_bins` must be >= 2"):
        TrivialAugmentWide(num_magnitude_bins=1)
    with pytest.raises(ValueError, match="`magnitude` must be in"):
        RandAugment(magnitude=31)
    with pytest.raises(ValueError, match="`num_ops` must be an int >= 0"):
        RandAugment(num_ops=-1)
    with pytest.raises(ValueError, match=r"`images` must be \(B, 1 or 3, H, W\)"):
        TrivialAugmentWide()(torch.zeros(2, 4, 8, 8, dtype=torch.uint8))
