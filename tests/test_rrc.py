"""RandomResizedCrop per sample: torchvision's crop rule (KS against its get_params), its
resampling (antialias on and off), the centre-crop validation transform, ragged sizes."""

from __future__ import annotations

import pytest
import torch
from torchvision import transforms as tv1
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from gpuaug.augment.rrc import (
    CropParams,
    RandomResizedCrop,
    center_crop_params,
    resized_crop,
    resized_crop_matrices,
    resized_crop_per_crop,
    sample_crop_params,
)

FORMS = [resized_crop_per_crop, resized_crop_matrices]


def _torchvision_crops(n: int, height: int, width: int, scale, seed: int = 0):
    torch.manual_seed(seed)
    image = torch.zeros(1, height, width)
    crops = [tv1.RandomResizedCrop.get_params(image, scale, (3 / 4, 4 / 3)) for _ in range(n)]
    return torch.tensor(crops, dtype=torch.float64)  # (n, 4): top, left, h, w


def _ours(n: int, height: int, width: int, scale, seed: int = 0) -> torch.Tensor:
    p = sample_crop_params(
        n, height, width, (8, 8), scale=scale, generator=torch.Generator().manual_seed(seed)
    )
    return torch.cat([p.top_left_px, p.size_px], dim=1).to(torch.float64)


@pytest.mark.parametrize(("height", "width"), [(60, 100), (100, 30)])
def test_crops_follow_torchvisions_get_params_and_another_scale_is_detected(height, width):
    stats = pytest.importorskip("scipy.stats")
    reference = _torchvision_crops(1500, height, width, (0.08, 1.0))
    ours = _ours(1500, height, width, (0.08, 1.0))
    other = _ours(1500, height, width, (0.2, 1.0))
    for column in range(4):  # top, left, h, w
        assert stats.ks_2samp(ours[:, column], reference[:, column]).pvalue > 1e-3
    area = lambda c: (c[:, 2] * c[:, 3]).numpy()  # noqa: E731
    assert stats.ks_2samp(area(ours), area(reference)).pvalue > 1e-3
    assert stats.ks_2samp(area(other), area(reference)).pvalue < 1e-6


@pytest.mark.parametrize(("height", "width"), [(10, 400), (400, 10), (50, 60)])
def test_the_fallback_is_torchvisions_centre_crop(height, width):
    scale = (2.0, 3.0)  # no try can fit: always the fallback
    reference = _torchvision_crops(1, height, width, scale)
    assert torch.equal(_ours(4, height, width, scale), reference.expand(4, 4))


def test_each_image_gets_its_own_crop_from_its_own_size():
    heights, widths = torch.tensor([40, 80, 120]), torch.tensor([90, 50, 120])
    p = sample_crop_params(3, heights, widths, (8, 8), generator=torch.Generator().manual_seed(0))
    assert ((p.top_left_px + p.size_px) <= torch.stack([heights, widths], 1)).all()
    assert len({tuple(r) for r in p.size_px.tolist()}) == 3


def _params(crops, size) -> CropParams:
    c = torch.tensor(crops, dtype=torch.int64)
    n = len(crops)
    return CropParams(
        top_left_px=c[:, :2],
        size_px=c[:, 2:],
        out_total=torch.tensor([size] * n),
        out_offset=torch.zeros(n, 2, dtype=torch.int64),
        flip_h=torch.zeros(n, dtype=torch.bool),
    )


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("antialias", [True, False])
def test_resizing_equals_torchvisions_resized_crop_on_float_images(antialias, form):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 48, 64, generator=gen) * 255
    crops = [(0, 0, 48, 64), (5, 7, 30, 20), (10, 3, 9, 12), (20, 40, 28, 24)]  # shrink and grow
    size = (16, 18)
    ours = form(x, _params(crops, size), size, antialias=antialias)
    expected = torch.stack(
        [TF.resized_crop(x[i], *c, list(size), antialias=antialias) for i, c in enumerate(crops)]
    )
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-3)


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.__name__)
def test_uint8_images_stay_within_one_grey_level_of_torchvision(form):
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (2, 3, 64, 64), generator=gen, dtype=torch.uint8)
    crops = [(3, 4, 50, 40), (0, 0, 64, 64)]
    ours = form(x, _params(crops, (24, 24)), (24, 24)).round().clamp(0, 255)
    expected = torch.stack(
        [TF.resized_crop(x[i], *c, [24, 24], antialias=True) for i, c in enumerate(crops)]
    )
    # torchvision resamples uint8 with fixed-point weights, we in float32 and round once
    assert (ours - expected.float()).abs().max() <= 1


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.__name__)
def test_the_flip_mirrors_the_resized_crop(form):
    x = (torch.rand(1, 3, 20, 30) * 255).expand(2, 3, 20, 30)
    p = _params([(2, 3, 15, 20), (2, 3, 15, 20)], (10, 10))
    p = CropParams(p.top_left_px, p.size_px, p.out_total, p.out_offset, torch.tensor([False, True]))
    out = form(x, p, (10, 10))
    torch.testing.assert_close(out[1], out[0].flip(-1))


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.__name__)
def test_validation_params_equal_torchvisions_resize_then_centre_crop(form):
    x = torch.rand(2, 3, 30, 45) * 255
    eval_tf = v2.Compose([v2.Resize(20, antialias=True), v2.CenterCrop(16)])
    sizes = torch.tensor([30, 30]), torch.tensor([45, 45])
    ours = form(x, center_crop_params(*sizes, 20, 16), (16, 16))
    expected = torch.stack([eval_tf(x[i]) for i in range(2)])
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-3)


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("height", "width"), [(40, 30), (30, 40), (52, 37)])
def test_a_centre_crop_larger_than_the_resized_image_is_zero_padded_as_torchvisions(
    form, height, width
):
    # a (rows, columns) crop wider than a portrait image's resized width: CenterCrop pads
    x = torch.rand(1, 3, height, width) * 255
    for resize, crop in [(20, (16, 24)), (20, (27, 16)), (16, (23, 23))]:
        eval_tf = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop)])
        params = center_crop_params(torch.tensor([height]), torch.tensor([width]), resize, crop)
        ours = form(x, params, crop)
        torch.testing.assert_close(ours[0], eval_tf(x[0]), rtol=0, atol=2e-3)


def test_validation_of_a_padded_batch_reads_each_image_at_its_own_size():
    small = torch.rand(3, 30, 45) * 255
    padded = torch.zeros(1, 3, 60, 60)
    padded[0, :, :30, :45] = small
    eval_tf = v2.Compose([v2.Resize(20, antialias=True), v2.CenterCrop(16)])
    params = center_crop_params(torch.tensor([30]), torch.tensor([45]), 20, 16)
    torch.testing.assert_close(
        resized_crop(padded, params, (16, 16))[0], eval_tf(small), rtol=0, atol=2e-3
    )


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_the_per_crop_and_matrix_forms_agree_on_random_shared_flipped_and_ragged_crops(
    antialias, dtype
):
    gen = torch.Generator().manual_seed(5)
    x = (torch.rand(12, 3, 70, 90, generator=gen) * 255).to(dtype)
    sizes = torch.tensor([[70, 90], [64, 51], [33, 88]] * 4)  # ragged: padded top-left
    p = sample_crop_params(
        12, sizes[:, 0], sizes[:, 1], (40, 36), scale=(0.05, 1.0), flip_p=0.5, generator=gen
    )
    shared = [0, 3, 6]  # three images with the same crop: resized together
    p = CropParams(
        p.top_left_px.index_copy(0, torch.tensor(shared[1:]), p.top_left_px[[0, 0]]),
        p.size_px.index_copy(0, torch.tensor(shared[1:]), p.size_px[[0, 0]]),
        p.out_total, p.out_offset, p.flip_h,
    )  # fmt: skip
    assert p.flip_h.any() and not p.flip_h.all()
    matrices = resized_crop_matrices(x, p, (40, 36), antialias=antialias)
    per_crop = resized_crop_per_crop(x, p, (40, 36), antialias=antialias)
    assert per_crop.dtype == matrices.dtype == torch.float32
    torch.testing.assert_close(per_crop, matrices, rtol=0, atol=1e-2)  # grey levels
    val = center_crop_params(sizes[:, 0], sizes[:, 1], 40, 32)
    torch.testing.assert_close(
        resized_crop_per_crop(x, val, (32, 32), antialias=antialias),
        resized_crop_matrices(x, val, (32, 32), antialias=antialias),
        rtol=0, atol=1e-2,
    )  # fmt: skip


def test_resized_crop_takes_the_per_crop_form_on_the_cpu():
    x = torch.rand(3, 3, 30, 40) * 255
    p = sample_crop_params(3, 30, 40, (12, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(resized_crop(x, p, (12, 12)), resized_crop_per_crop(x, p, (12, 12)))


def test_device_images_with_cpu_params_take_the_device_form_on_the_images_device(monkeypatch):
    """The form follows the pixels: CPU params ("meta" images stand in for a GPU's) are copied
    to the images' device, and no per-crop loop runs there."""

    def no_loop(*args, **kwargs):
        raise AssertionError("the per-crop loop ran on device images")

    monkeypatch.setattr("gpuaug.augment.rrc.resized_crop_per_crop", no_loop)
    x = torch.rand(3, 3, 30, 40, device="meta")
    p = sample_crop_params(3, 30, 40, (12, 12), generator=torch.Generator().manual_seed(0))
    out = resized_crop(x, p, (12, 12))
    assert out.device.type == "meta" and out.shape == (3, 3, 12, 12)


def test_replay_with_the_last_params_reproduces_the_batch():
    rrc = RandomResizedCrop(12, flip_p=0.5)
    x = torch.rand(6, 3, 40, 50)
    out = rrc(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(rrc(x, params=rrc.last_params), out)


def test_antialias_against_torchvision_is_measured_on_a_photo_like_image():
    # a smooth image with an edge: the antialiased crop is close to torchvision's, the plain
    # bilinear one is not (the aliasing the filter removes)
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    img = (((xx // 2 + yy // 2) % 2) * 255).expand(1, 3, 128, 128).contiguous()
    p = _params([(0, 0, 128, 128)], (20, 20))
    expected = TF.resized_crop(img[0], 0, 0, 128, 128, [20, 20], antialias=True)
    with_aa = (resized_crop(img, p, (20, 20)) - expected).abs().max()
    without = (resized_crop(img, p, (20, 20), antialias=False) - expected).abs().max()
    assert with_aa < 1e-2 < 10 < without


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, "`size` must be"),
        ({"size": 8, "scale": (0.5, 0.1)}, "`scale` must be a pair"),
        ({"size": 8, "scale": (-0.1, 1.0)}, r"`scale` must be a pair 0 <= lo <= hi"),
        ({"size": 8, "ratio": (0.0, 1.0)}, "`ratio` must be a pair"),
        ({"size": 8, "flip_p": 2.0}, "`flip_p` must be in"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandomResizedCrop(**kwargs)


def test_a_scale_from_zero_is_accepted_as_torchvision_accepts_it():
    # a try of area 0 fits nowhere and is retried, as in torchvision's get_params
    stats = pytest.importorskip("scipy.stats")
    reference = _torchvision_crops(1500, 30, 40, (0.0, 1.0))
    ours = _ours(1500, 30, 40, (0.0, 1.0))
    assert bool((ours[:, 2:] >= 1).all())
    area = lambda c: (c[:, 2] * c[:, 3]).numpy()  # noqa: E731
    assert stats.ks_2samp(area(ours), area(reference)).pvalue > 1e-3
