"""MixUp / CutMix per sample: timm's mixing and targets on the same params; draws; masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpuaug.augment.mixup import MixParams, Mixup

timm_mixup = pytest.importorskip("timm.data.mixup")

KW = {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1, "num_classes": 10}


def _timm_params(timm, batch: int, shape, seed: int) -> MixParams:
    """The lambdas, methods and boxes timm's ``__call__`` draws after ``np.random.seed(seed)``,
    with timm's pairing (the flip)."""
    np.random.seed(seed)
    flip = torch.arange(batch - 1, -1, -1)
    if timm.mode == "elem":
        lam, use = timm._params_per_elem(batch)
        lam = lam.astype(np.float64)
    elif timm.mode == "pair":  # one draw per pair (i, B-1-i), i in the first half
        lam, use = timm._params_per_elem(batch // 2)
        lam = lam.astype(np.float64)
    else:
        lam_b, use_b = timm._params_per_batch()
        lam, use = np.full(batch, lam_b), np.full(batch, use_b)
    use = use & (lam != 1)  # timm mixes only where lam != 1
    boxes = np.zeros((batch, 4), dtype=np.int64)
    for i in range(len(lam)) if timm.mode != "batch" else range(1):
        if use[i]:
            box, new_lam = timm_mixup.cutmix_bbox_and_lam(
                shape,
                np.float32(lam[i]) if timm.mode == "elem" else lam[i],
                ratio_minmax=timm.cutmix_minmax,
                correct_lam=timm.correct_lam,
            )
            boxes[i], lam[i] = [int(v) for v in box], new_lam
    if timm.mode == "batch":
        boxes[:], lam[:] = boxes[0], lam[0]
    if timm.mode == "pair":  # image B-1-i takes its pair's method, lambda and box
        half = batch // 2
        lam, use = np.concatenate([lam, lam[::-1]]), np.concatenate([use, use[::-1]])
        boxes[half:] = boxes[:half][::-1]
    return MixParams(
        torch.tensor(lam, dtype=torch.float32), flip, torch.tensor(use), torch.tensor(boxes)
    )


@pytest.mark.parametrize("mode", ["elem", "pair", "batch"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixing_and_soft_targets_match_timm_on_timms_params(mode, seed):
    timm = timm_mixup.Mixup(mode=mode, **KW)
    ours = Mixup(mode=mode, **KW)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(8, 3, 16, 20, generator=gen)
    y = torch.randint(0, 10, (8,), generator=gen)
    params = _timm_params(timm, 8, x.shape, seed)
    np.random.seed(seed)
    x_timm, y_timm = timm(x.clone(), y)
    x_ours, y_ours = ours.apply(x, y, params)
    torch.testing.assert_close(x_ours, x_timm, rtol=0, atol=1e-6)
    torch.testing.assert_close(y_ours, y_timm, rtol=0, atol=1e-6)


def test_cutmix_minmax_boxes_match_timm():
    timm = timm_mixup.Mixup(mixup_alpha=0.0, cutmix_minmax=(0.2, 0.8), mode="elem", num_classes=5)
    ours = Mixup(mixup_alpha=0.0, cutmix_minmax=(0.2, 0.8), mode="elem", num_classes=5)
    x, y = torch.rand(6, 3, 24, 24), torch.arange(6) % 5
    params = _timm_params(timm, 6, x.shape, 4)
    np.random.seed(4)
    x_timm, y_timm = timm(x.clone(), y)
    x_ours, y_ours = ours.apply(x, y, params)
    assert torch.equal(x_ours, x_timm)
    torch.testing.assert_close(y_ours, y_timm, rtol=0, atol=1e-6)


@pytest.mark.parametrize("batch", [8, 9])
def test_pair_mode_pairs_images_both_ways_and_each_pair_shares_its_draws(batch):
    params = Mixup(mode="pair", **KW).sample_params(
        batch, 24, 24, generator=torch.Generator().manual_seed(batch)
    )
    partner = params.partner
    assert torch.equal(partner[partner], torch.arange(batch))  # i's partner has i as partner
    alone = (partner == torch.arange(batch)).nonzero().flatten().tolist()
    assert len(alone) == batch % 2  # only an odd batch leaves one image unmixed
    for i in alone:
        assert float(params.lam[i]) == 1.0 and not bool(params.use_cutmix[i])
    assert torch.equal(params.lam[partner], params.lam)
    assert torch.equal(params.use_cutmix[partner], params.use_cutmix)
    assert torch.equal(params.box_yyxx_px[partner], params.box_yyxx_px)
    assert params.lam.unique().numel() == batch // 2 + batch % 2


def test_pair_mode_swaps_the_cutmix_boxes_of_a_pair_and_blends_mixup_both_ways():
    mix = Mixup(mode="pair", **KW)
    x = torch.rand(16, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    out, soft = mix(x, y, generator=torch.Generator().manual_seed(2))
    p = mix.last_params
    assert p.use_cutmix.any() and (~p.use_cutmix).any()
    for i in range(16):
        j, lam = int(p.partner[i]), float(p.lam[i])
        if bool(p.use_cutmix[i]):
            yl, yh, xl, xh = p.box_yyxx_px[i].tolist()
            assert torch.equal(out[i, :, yl:yh, xl:xh], x[j, :, yl:yh, xl:xh])
            assert torch.equal(out[j, :, yl:yh, xl:xh], x[i, :, yl:yh, xl:xh])
        else:
            torch.testing.assert_close(out[i], lam * x[i] + (1 - lam) * x[j])
        # lam y_i + (1 - lam) y_j and lam y_j + (1 - lam) y_i: the pair's targets sum to both
        smooth = torch.full((2, 10), 0.01).scatter_(1, y[[i, j]][:, None], 0.91)
        torch.testing.assert_close(soft[i] + soft[j], smooth.sum(0))


def test_each_image_draws_its_own_lambda_in_elem_mode_and_one_in_batch_mode():
    gen = torch.Generator().manual_seed(0)
    elem = Mixup(mode="elem", **KW).sample_params(64, 32, 32, generator=gen)
    batch = Mixup(mode="batch", **KW).sample_params(64, 32, 32, generator=gen)
    assert elem.lam.unique().numel() > 32
    assert batch.lam.unique().numel() == 1


def test_the_pairing_is_a_permutation_from_the_seed():
    mix = Mixup(mode="elem", **KW)

    def partner(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return mix.sample_params(32, 8, 8, generator=gen).partner

    assert torch.equal(partner(5).sort().values, torch.arange(32))
    assert torch.equal(partner(5), partner(5))
    assert not torch.equal(partner(5), partner(6))


def test_soft_targets_sum_to_one_and_carry_both_labels():
    mix = Mixup(mixup_alpha=1.0, mode="elem", label_smoothing=0.0, num_classes=4, prob=1.0)
    x, y = torch.rand(16, 3, 8, 8), torch.arange(16) % 4
    _, soft = mix(x, y, generator=torch.Generator().manual_seed(0))
    p = mix.last_params
    torch.testing.assert_close(soft.sum(1), torch.ones(16))
    rows = torch.arange(16)
    torch.testing.assert_close(
        soft[rows, y] + soft[rows, y[p.partner]] * (y != y[p.partner]), torch.ones(16)
    )


def test_replay_with_the_last_params_reproduces_images_and_targets():
    mix = Mixup(mode="elem", **KW)
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8)
    out, soft = mix(x, y, generator=torch.Generator().manual_seed(1))
    out2, soft2 = mix(x, y, params=mix.last_params)
    assert torch.equal(out, out2) and torch.equal(soft, soft2)


def test_lambdas_follow_beta_alpha_and_another_alpha_is_detected():
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    lam = Mixup(mixup_alpha=0.8, mode="elem").sample_params(3000, 8, 8, generator=gen).lam
    assert stats.kstest(lam.numpy(), stats.beta(0.8, 0.8).cdf).pvalue > 1e-3
    assert stats.kstest(lam.numpy(), stats.beta(0.4, 0.4).cdf).pvalue < 1e-6


def test_corrected_cutmix_lambdas_follow_timms_and_uncorrected_ones_do_not():
    stats = pytest.importorskip("scipy.stats")
    np.random.seed(0)
    shape = (3, 20, 20)
    reference = [
        timm_mixup.cutmix_bbox_and_lam(shape, np.random.beta(1.0, 1.0))[1] for _ in range(3000)
    ]
    gen = torch.Generator().manual_seed(0)
    ours = Mixup(mixup_alpha=0, cutmix_alpha=1.0, mode="elem").sample_params(
        3000, 20, 20, generator=gen
    )
    raw = Mixup(mixup_alpha=0, cutmix_alpha=1.0, mode="elem", correct_lam=False).sample_params(
        3000, 20, 20, generator=gen
    )
    # lambdas are discrete (box areas): round so float32 and float64 values of one area tie
    reference = np.round(reference, 6)
    assert stats.ks_2samp(np.round(ours.lam.double().numpy(), 6), reference).pvalue > 1e-3
    assert stats.ks_2samp(np.round(raw.lam.double().numpy(), 6), reference).pvalue < 1e-6


def test_the_share_of_mixed_images_is_prob():
    mix = Mixup(mixup_alpha=1.0, mode="elem", prob=0.3)
    params = mix.sample_params(4000, 8, 8, generator=torch.Generator().manual_seed(0))
    assert abs(float((params.lam < 1).double().mean()) - 0.3) < 0.03


def test_cutmix_pastes_the_partners_mask_in_the_same_box():
    mix = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem", num_classes=3)
    x = torch.arange(8, dtype=torch.float32)[:, None, None, None].expand(8, 3, 16, 16)
    mask = torch.arange(8)[:, None, None].expand(8, 16, 16)
    out, _, mixed_mask = mix(
        x, torch.zeros(8, dtype=torch.long), mask=mask, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(out[:, 0].long(), mixed_mask)
    assert not torch.equal(mixed_mask, mask)


def test_a_mask_with_mixup_on_is_refused():
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=3)
    with pytest.raises(ValueError, match="MixUp blends two images"):
        mix(
            torch.rand(2, 3, 8, 8),
            torch.zeros(2, dtype=torch.long),
            mask=torch.zeros(2, 8, 8, dtype=torch.long),
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mixup_alpha": -1.0}, "`mixup_alpha` must be a float >= 0"),
        ({"mixup_alpha": 0.0}, "one of `mixup_alpha` > 0"),
        ({"cutmix_minmax": (0.8, 0.2)}, "`cutmix_minmax` must be a pair"),
        ({"prob": 2.0}, "`prob` must be in"),
        ({"switch_prob": -0.1}, "`switch_prob` must be in"),
        ({"mode": "pairs"}, "`mode` must be one of"),
        ({"label_smoothing": 1.0}, "`label_smoothing` must be in"),
        ({"num_classes": 0}, "`num_classes` must be an int >= 1"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Mixup(**kwargs)


def test_float_targets_are_refused():
    mix = Mixup(num_classes=3)
    with pytest.raises(ValueError, match="`target` must be"):
        mix(torch.rand(2, 3, 8, 8), torch.zeros(2))


@pytest.mark.parametrize("bad", [3, -1])
def test_a_class_outside_num_classes_is_refused_naming_both(bad):
    mix = Mixup(num_classes=3)
    target = torch.tensor([0, bad])
    with pytest.raises(ValueError, match=r"`target` holds classes .*`num_classes`=3 allows 0\.\.2"):
        mix(torch.rand(2, 3, 8, 8), target)
    images, soft = mix(torch.rand(2, 3, 8, 8), torch.tensor([0, 2]))
    assert soft.shape == (2, 3)
