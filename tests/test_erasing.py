"""RandomErasing per sample: timm's rule and fill, batched; replay; the box distribution."""

from __future__ import annotations

import math

import pytest
import torch

from gpuaug.augment.erasing import ErasingParams, RandomErasing

timm_erasing = pytest.importorskip("timm.data.random_erasing")


class _ReplayRandom:
    """Stands in for Python's ``random`` in timm's module: serves our uniforms in timm's order."""

    def __init__(self, uniforms: torch.Tensor, erase: RandomErasing) -> None:
        self.u = uniforms.to(torch.float64).tolist()
        self.k_boxes = erase.re_count
        self.image = -1

    def start(self, image: int) -> None:
        self.image, self.box, self.attempt, self.value, self.place = image, 0, 0, 0, 0

    def random(self) -> float:
        return self.u[self.image][0]

    def randint(self, a: int, b: int) -> int:
        row = self.u[self.image]
        if a != 0:  # the count (min_count >= 1); top and left start at 0
            return a + min(math.floor(row[1] * (b - a + 1)), b - a)
        base = 2 + 20 * self.k_boxes + 2 * self.box
        value = min(math.floor(row[base + self.place] * (b + 1)), b)
        self.place += 1
        if self.place == 2:
            self.box, self.attempt, self.place = self.box + 1, 0, 0
        return value

    def uniform(self, a: float, b: float) -> float:
        if self.attempt == 10:  # the previous box found no fit: timm goes on to the next
            self.box, self.attempt = self.box + 1, 0
        row = self.u[self.image]
        value = a + (b - a) * row[2 + 20 * self.box + 2 * self.attempt + self.value]
        self.value += 1
        if self.value == 2:
            self.value, self.attempt = 0, self.attempt + 1
        return value


def _timm_erase(images, uniforms, erase, colours, monkeypatch):
    """timm's RandomErasing on ``images`` with our uniforms (and our per-box colours)."""
    stub = _ReplayRandom(uniforms, erase)
    fills = iter([])

    def get_pixels(per_pixel, rand_color, patch_size, dtype=torch.float32, device="cpu"):
        return next(fills).to(dtype).view(-1, 1, 1).expand(patch_size)

    monkeypatch.setattr(timm_erasing, "random", stub)
    monkeypatch.setattr(timm_erasing, "_get_pixels", get_pixels)
    timm = timm_erasing.RandomErasing(
        probability=erase.re_prob,
        mode=erase.re_mode,
        min_count=erase.min_count,
        max_count=erase.re_count,
        min_area=erase.min_area,
        max_area=erase.max_area,
        device="cpu",
    )
    out = images.clone()
    for i in range(len(images)):
        stub.start(i)
        fills = iter(colours[i])
        timm._erase(out[i], *out[i].shape, out.dtype)
    return out


@pytest.mark.parametrize("mode", ["const", "rand"])
@pytest.mark.parametrize("count", [1, 3])
def test_erasing_matches_timm_on_the_same_draws(mode, count, monkeypatch):
    erase = RandomErasing(re_prob=0.7, re_mode=mode, re_count=count)
    gen = torch.Generator().manual_seed(count)
    images = torch.randn(32, 3, 20, 28, generator=gen)
    uniforms = erase.sample_uniforms(32, gen)
    params = erase.params_from_uniforms(uniforms, 3, 20, 28, generator=gen)
    ours = erase.apply(images, params)
    expected = _timm_erase(images, uniforms, erase, params.colour, monkeypatch)
    assert torch.equal(ours, expected)
    assert not torch.equal(ours, images)  # something was erased


def test_pixel_mode_fills_the_boxes_with_fresh_normals_and_leaves_the_rest():
    erase = RandomErasing(re_prob=1.0, re_mode="pixel")
    images = torch.full((16, 3, 32, 32), 100.0)
    out = erase(images, generator=torch.Generator().manual_seed(0))
    erased = out != 100.0
    p = erase.last_params
    top, left, h, w = p.box_tlhw_px[0, 0].tolist()
    assert erased[0, :, top : top + h, left : left + w].all()
    assert erased[0].sum() == 3 * h * w
    assert abs(float(out[erased].std()) - 1.0) < 0.1


@pytest.mark.parametrize("count", [1, 3])
def test_pixel_mode_hashing_only_the_erased_pixels_equals_the_whole_batch_hash(count, monkeypatch):
    import gpuaug.augment.erasing as erasing

    erase = RandomErasing(re_prob=0.5, re_mode="pixel", re_count=count)
    gen = torch.Generator().manual_seed(count)
    images = torch.randn(16, 3, 30, 37, generator=gen)
    params = erase.sample_params(16, 3, 30, 37, generator=gen)
    assert params.active.any() and not params.active.all()
    cpu_form = erase.apply(images, params)
    monkeypatch.setattr(erasing, "host_reads_free", lambda t: False)  # the device form
    whole_batch = erase.apply(images, params)
    assert torch.equal(cpu_form, whole_batch)
    assert not torch.equal(cpu_form, images)


def test_hashed_normals_at_picks_elements_of_the_whole_tensor():
    from gpuaug.augment.erasing import hashed_normals, hashed_normals_at

    seed = torch.tensor([5, 2**61 + 3, 11])
    whole = hashed_normals(seed, (3, 2, 7, 9)).flatten(1)
    image = torch.tensor([0, 2, 1, 1, 0])
    index = torch.tensor([0, 125, 64, 3, 77])
    assert torch.equal(hashed_normals_at(seed, image, index), whole[image, index])


def test_replay_with_the_last_params_reproduces_the_batch():
    erase = RandomErasing(re_prob=0.5, re_mode="rand", re_count=2)
    images = torch.randn(8, 3, 16, 16)
    out = erase(images, generator=torch.Generator().manual_seed(3))
    assert torch.equal(erase(images, params=erase.last_params), out)


def test_the_same_seed_gives_the_same_boxes_and_another_seed_others():
    erase = RandomErasing(re_prob=1.0)

    def boxes(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return erase.sample_params(64, 3, 32, 32, generator=gen).box_tlhw_px

    assert torch.equal(boxes(1), boxes(1))
    assert not torch.equal(boxes(1), boxes(2))


def test_the_first_split_is_left_clean():
    erase = RandomErasing(re_prob=1.0, re_num_splits=2)
    params = erase.sample_params(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert not params.active[:4].any()
    assert params.active[4:].all()


def _areas(out: torch.Tensor) -> list[float]:
    return (out[:, 0] == 0).flatten(1).sum(1).to(torch.float64).tolist()


def test_box_areas_follow_timms_distribution_and_a_changed_rule_does_not():
    stats = pytest.importorskip("scipy.stats")
    import random

    n, size = 1500, (3, 24, 24)
    random.seed(0)
    timm = timm_erasing.RandomErasing(probability=1.0, device="cpu")
    reference = _areas(torch.stack([timm(torch.ones(size)) for _ in range(n)]))
    gen = torch.Generator().manual_seed(0)
    ours = _areas(RandomErasing(re_prob=1.0)(torch.ones(n, *size), generator=gen))
    other = RandomErasing(re_prob=1.0, min_area=0.06)(torch.ones(n, *size), generator=gen)
    assert stats.ks_2samp(ours, reference).pvalue > 1e-3
    assert stats.ks_2samp(_areas(other), reference).pvalue < 1e-6


def test_the_share_of_erased_images_is_re_prob():
    erase = RandomErasing(re_prob=0.25)
    params = erase.sample_params(4000, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    share = float(params.active.any(dim=1).double().mean())
    assert abs(share - 0.25) < 0.03  # 4.4 standard errors


def test_params_move_between_devices_and_keep_their_fields():
    erase = RandomErasing(re_prob=1.0, re_mode="pixel")
    params = erase.sample_params(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    moved = params.to("cpu")
    assert isinstance(moved, ErasingParams)
    assert torch.equal(moved.noise_seed, params.noise_seed)


def test_hashed_normals_are_standard_normal_and_differ_by_seed():
    stats = pytest.importorskip("scipy.stats")
    from gpuaug.augment.erasing import hashed_normals

    a = hashed_normals(torch.tensor([1, 2]), (2, 3, 40, 40))
    assert stats.kstest(a[0].flatten().numpy(), "norm").pvalue > 1e-3
    assert stats.kstest(a[0].flatten().numpy() * 1.1, "norm").pvalue < 1e-3
    assert abs(float(torch.corrcoef(a.flatten(1))[0, 1])) < 0.05
    assert torch.equal(hashed_normals(torch.tensor([1]), (1, 3, 40, 40))[0], a[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"re_prob": 1.5}, "`re_prob` must be in"),
        ({"re_mode": "noise"}, "`re_mode` must be one of"),
        ({"re_count": 0}, "`re_count` must be >= 1"),
        ({"re_count": 1, "min_count": 2}, "`min_count` must be <= `re_count`"),
        ({"min_area": 0.5, "max_area": 0.2}, "`min_area` and `max_area`"),
        ({"min_aspect": 0.0}, "`min_aspect` and `max_aspect`"),
        ({"re_num_splits": -1}, "`re_num_splits` must be >= 0"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandomErasing(**kwargs)


def test_an_integer_batch_is_refused():
    erase = RandomErasing()
    with pytest.raises(ValueError, match="float batch"):
        erase(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize("strides", ["channels_last", "transposed"])
def test_pixel_erasing_on_the_cpu_takes_a_batch_of_any_strides(strides):
    """The CPU form writes the erased pixels through flat rows; a batch that is not
    contiguous (channels_last, a transposed view) gives the contiguous batch's result."""
    erasing = RandomErasing(re_prob=1.0, re_mode="pixel", re_count=2)
    x = torch.randn(4, 3, 16, 20)
    if strides == "channels_last":
        y = x.contiguous(memory_format=torch.channels_last)
    else:
        y = x.transpose(2, 3).contiguous().transpose(2, 3)
    assert not y.is_contiguous() and torch.equal(x, y)
    want = erasing(x, generator=torch.Generator().manual_seed(0))
    got = erasing(y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, want) and not torch.equal(want, x)
    assert torch.equal(y, x)  # the input is left as it was
