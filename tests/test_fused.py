"""gpuaug.augment.backends.triton: the Triton kernel against the reference path, its budgets, dtype
and layout.

On a machine without CUDA the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, set
below before gpuaug.augment.backends.triton is imported; the kernels are decorated at import), on
tiny images.
With CUDA the same tests run the compiled kernel on the GPU against the reference there.

Tolerance, as the warp's parity tests: within 1e-3 grey levels (0..255 scale; scaled by the
rescale / normalisation where they run) on every pixel, except pixels whose float64 source
point lies within 1e-3 px of a discontinuity (a "constant" edge, a "wrap" seam, a nearest tie
at .5), where a float ulp may pick the other side. Measured: max 5e-5 grey levels, 150 x 150
noise images included.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

if not torch.cuda.is_available():  # conftest.py sets it first, before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")

from gpuaug.augment import module as augment  # noqa: E402
from gpuaug.augment.backends import triton as fused  # noqa: E402
from gpuaug.augment.config import AugmentConfig  # noqa: E402
from gpuaug.augment.module import (  # noqa: E402
    AugmentParams,
    FitStats,
    GPUAugment,
    affine_matrix,
    apply,
    params_from_draws,
    resolve_backend,
    sample_draws,
)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":  # pragma: no cover
    pytest.skip("the fused kernel needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

MODES = ["nearest", "constant", "reflect", "wrap"]
CVAL = 33.0
BOOK = AugmentConfig(
    rotation_range=40,
    width_shift_range=0.2,
    height_shift_range=0.2,
    shear_range=0.2,
    zoom_range=0.2,
    horizontal_flip=True,
    fill_mode="nearest",
    rescale=1 / 255,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int, height: int, width: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    x = torch.randint(0, 256, (b, c, height, width), dtype=torch.uint8, generator=_gen(seed))
    return x.to(DEVICE)


def _config(fill_mode: str, interpolation: str, **kwargs) -> AugmentConfig:
    settings = {
        "rotation_range": 45,
        "width_shift_range": 0.3,
        "height_shift_range": 0.3,
        "shear_range": 20,
        "zoom_range": 0.3,
        "horizontal_flip": True,
        "vertical_flip": True,
        "fill_mode": fill_mode,
        "cval": CVAL,
        "interpolation": interpolation,
    }
    return AugmentConfig(**(settings | kwargs))


def _near_discontinuity(
    params: AugmentParams, config: AugmentConfig, height: int, width: int
) -> torch.Tensor:
    """(B, 1, H, W) True where the float64 source point is within 1e-3 px of a discontinuity."""
    b = len(params)
    if not (config.has_geometry or config.has_flips):
        return torch.zeros(b, 1, height, width, dtype=torch.bool)
    m = affine_matrix(params.to("cpu"), height, width, include_flips=config.has_flips).double()
    if not config.has_geometry:
        m = affine_matrix(
            dataclasses.replace(AugmentParams.identity(b), flip_h=params.flip_h.cpu(),
                                flip_v=params.flip_v.cpu()),
            height, width,
        ).double()  # fmt: skip
    m = m.numpy()
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    near = np.zeros((b, height, width), dtype=bool)
    for i in range(b):
        for row, size in ((0, width), (1, height)):
            coord = m[i, row, 0] * xx + m[i, row, 1] * yy + m[i, row, 2]
            if config.interpolation == "nearest":
                near[i] |= np.abs(coord - np.floor(coord) - 0.5) < 1e-3
            if config.fill_mode == "constant":
                near[i] |= (np.abs(coord) < 1e-3) | (np.abs(coord - (size - 1)) < 1e-3)
            if config.fill_mode == "wrap" and size > 1:
                period = size - 1
                near[i] |= np.abs(coord / period - np.round(coord / period)) * period < 1e-3
    return torch.from_numpy(near)[:, None]


def _assert_matches_reference(
    x: torch.Tensor,
    params,
    config: AugmentConfig,
    *,
    stats: FitStats | None = None,
    grey: float = 1.0,
    exclude: bool = True,
) -> torch.Tensor:
    """The fused output equals the reference within 1e-3 grey levels (x ``grey`` per level)."""
    got = apply(x, params, config, stats=stats, backend="triton")
    want = apply(x, params, config, stats=stats, backend="reference")
    assert got.shape == want.shape and got.dtype == want.dtype
    b, _, height, width = x.shape
    p = params if isinstance(params, AugmentParams) else params.params(config, height, width)
    keep = torch.ones_like(got, dtype=torch.bool, device="cpu")
    if exclude and b:
        keep &= ~_near_discontinuity(p, config, height, width)
    assert keep.float().mean() > 0.97 if keep.numel() else True
    diff = (got.cpu() - want.cpu()).abs()[keep]
    if diff.numel():
        assert float(diff.max()) <= 1e-3 * grey, float(diff.max()) / grey
    return got


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", MODES)
def test_random_params_match_the_reference(fill_mode, interpolation):
    config = _config(fill_mode, interpolation)
    x = _images(4, 13, 17, seed=MODES.index(fill_mode))
    draws = sample_draws(4, generator=_gen(MODES.index(fill_mode)), device=DEVICE)
    _assert_matches_reference(x, draws, config)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", MODES)
def test_channel_shift_brightness_and_rescale_match_the_reference(fill_mode, interpolation):
    config = _config(
        fill_mode,
        interpolation,
        channel_shift_range=60,
        brightness_range=(0.5, 1.6),
        rescale=1 / 255,
    )
    x = _images(3, 11, 9, seed=7)
    draws = sample_draws(3, generator=_gen(11), device=DEVICE)
    _assert_matches_reference(x, draws, config, grey=1 / 255)


def test_featurewise_normalisation_matches_the_reference():
    with pytest.warns(UserWarning, match="overrides"):
        config = _config("reflect", "bilinear", featurewise_std_normalization=True, rescale=0.5)
    stats = FitStats(
        mean=torch.tensor([30.0, 60.0, 90.0], device=DEVICE).view(3, 1, 1),
        std=torch.tensor([20.0, 40.0, 0.5], device=DEVICE).view(3, 1, 1),
    )
    x = _images(3, 7, 10)
    draws = sample_draws(3, generator=_gen(3), device=DEVICE)
    _assert_matches_reference(x, draws, config, stats=stats, grey=0.5 / 0.5)


def test_featurewise_center_alone_matches_the_reference():
    config = _config("wrap", "bilinear", featurewise_center=True)
    stats = FitStats(mean=torch.tensor([30.0, 60.0, 90.0], device=DEVICE).view(3, 1, 1))
    x = _images(2, 9, 9)
    _assert_matches_reference(
        x, sample_draws(2, generator=_gen(), device=DEVICE), config, stats=stats
    )


def test_featurewise_stats_of_another_channel_count_are_rejected():
    config = AugmentConfig(featurewise_center=True)
    stats = FitStats(mean=torch.zeros(1, 1, 1, device=DEVICE))
    with pytest.raises(ValueError, match="the fitted featurewise mean has 1 channels; this batch"):
        apply(_images(1, 4, 4), sample_draws(1, device=DEVICE), config, stats=stats,
              backend="triton")  # fmt: skip


def test_an_unfitted_featurewise_step_warns_and_is_skipped_as_in_the_reference():
    config = AugmentConfig(featurewise_center=True, rotation_range=10)
    x = _images(2, 6, 6)
    draws = sample_draws(2, generator=_gen(), device=DEVICE)
    with pytest.warns(UserWarning, match="has not been fit"):
        got = apply(x, draws, config, backend="triton")
    with pytest.warns(UserWarning, match="has not been fit"):
        want = apply(x, draws, config, backend="reference")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3)


@pytest.mark.parametrize("fill_mode", MODES)
def test_flips_alone_are_exact(fill_mode):
    config = AugmentConfig(horizontal_flip=True, vertical_flip=True, fill_mode=fill_mode)
    x = _images(4, 5, 7)
    params = AugmentParams.from_keras(
        [{"flip_horizontal": h, "flip_vertical": v} for h in (0, 1) for v in (0, 1)],
        device=DEVICE,
    )
    got = apply(x, params, config, backend="triton")
    assert torch.equal(got, apply(x, params, config, backend="reference"))


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", MODES)
def test_whole_pixel_shifts_are_exact_up_to_the_edges(fill_mode, interpolation):
    config = _config(fill_mode, interpolation)
    rows = [{"tx": 3.0, "ty": -2.0}, {"tx": -7.0, "ty": 4.0, "flip_horizontal": True}]
    params = AugmentParams.from_keras(rows, device=DEVICE)
    x = _images(2, 9, 12)
    _assert_matches_reference(x, params, config, exclude=False)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", MODES)
def test_quarter_turns_match_the_reference(fill_mode, interpolation):
    config = _config(fill_mode, interpolation)
    rows = [{"theta": t} for t in (90.0, -90.0, 180.0, 270.0)]
    params = AugmentParams.from_keras(rows, device=DEVICE)
    x = _images(4, 9, 9)
    _assert_matches_reference(x, params, config, exclude=False)  # edges included: exact too


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (5, 1), (17, 13)])
@pytest.mark.parametrize("fill_mode", MODES)
def test_tiny_and_non_square_images_match_the_reference(fill_mode, size):
    config = _config(fill_mode, "bilinear", channel_shift_range=20)
    x = _images(2, *size)
    _assert_matches_reference(x, sample_draws(2, generator=_gen(4), device=DEVICE), config)


@pytest.mark.parametrize("fill_mode", ["nearest", "wrap"])
def test_full_size_noise_images_match_the_reference(fill_mode):
    # 150 x 150 noise (slopes up to 255 grey levels per px): the kernel rounds its coordinates
    # as the reference does, grid_sample's normalise / unnormalise round trip included.
    config = dataclasses.replace(BOOK, fill_mode=fill_mode, rescale=None)
    x = _images(2, 150, 150, seed=3)
    draws = sample_draws(2, generator=_gen(8), device=DEVICE)
    _assert_matches_reference(x, draws, config, exclude=fill_mode != "nearest")


@pytest.mark.parametrize("batch_size", [0, 1])
def test_empty_and_single_image_batches(batch_size):
    x = _images(batch_size, 6, 8)
    draws = sample_draws(batch_size, generator=_gen(), device=DEVICE)
    out = _assert_matches_reference(x, draws, BOOK, grey=1 / 255)
    assert out.shape == (batch_size, 3, 6, 8)


def test_shift_ranges_as_pixels_ints_and_lists_match_the_reference():
    for wsr, hsr in ((2.5, 3), ([0.1, 0.25], [1, 2, 3]), (4, 0.0)):
        config = AugmentConfig(width_shift_range=wsr, height_shift_range=hsr, fill_mode="constant")
        x = _images(4, 8, 11)
        draws = sample_draws(4, generator=_gen(9), device=DEVICE)
        _assert_matches_reference(x, draws, config, exclude=False)  # whole pixels: edges exact


def test_float_and_channels_last_input_give_the_uint8_result():
    x = _images(3, 8, 9)
    draws = sample_draws(3, generator=_gen(), device=DEVICE)
    want = apply(x, draws, BOOK, backend="triton")
    for other in (x.float(), x.contiguous(memory_format=torch.channels_last)):
        assert torch.equal(apply(other, draws, BOOK, backend="triton"), want)


def test_a_single_channel_batch_matches_the_reference():
    x = _images(2, 9, 8, c=1)
    _assert_matches_reference(
        x, sample_draws(2, generator=_gen(), device=DEVICE), BOOK, grey=1 / 255
    )


def test_a_batch_above_the_grid_limit_is_launched_in_chunks(monkeypatch):
    config = _config("constant", "bilinear", channel_shift_range=40)
    x = _images(5, 6, 7)
    draws = sample_draws(5, generator=_gen(), device=DEVICE)
    whole = apply(x, draws, config, backend="triton")
    monkeypatch.setattr(fused, "_MAX_GRID_Y", 2)  # CUDA's is 65535 images
    assert torch.equal(apply(x, draws, config, backend="triton"), whole)


# ----------------------------------------------------------------------------- unfused tail


def test_stages_that_cannot_be_fused_run_after_the_kernel():
    seen = []

    def fn(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.dtype)
        return batch + 1

    with pytest.warns(UserWarning, match="overrides"):
        config = _config("nearest", "bilinear", preprocessing_function=fn,
                         samplewise_std_normalization=True, rescale=1 / 255)  # fmt: skip
    x = _images(2, 7, 7)
    draws = sample_draws(2, generator=_gen(), device=DEVICE)
    got = apply(x, draws, config, dtype=torch.float16, memory_format=torch.channels_last,
                backend="triton")  # fmt: skip
    want = apply(x, draws, config, dtype=torch.float16, memory_format=torch.channels_last,
                 backend="reference")  # fmt: skip
    assert seen == [torch.float32, torch.float32]  # once per batch on each path
    assert got.dtype == torch.float16 and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-3)


# ----------------------------------------------------------------------------- replay


def test_params_replay_the_draws():
    config = _config("wrap", "bilinear", channel_shift_range=30, brightness_range=(0.8, 1.2))
    x = _images(3, 10, 11)
    draws = sample_draws(3, generator=_gen(2), device=DEVICE)
    from_draws = apply(x, draws, config, backend="triton")
    from_params = apply(x, params_from_draws(config, draws, 10, 11), config, backend="triton")
    torch.testing.assert_close(from_params, from_draws, rtol=0, atol=1e-4)


def test_gpuaugment_keeps_the_params_of_a_fused_batch_for_replay(monkeypatch):
    calls = []
    real = augment.params_from_draws
    monkeypatch.setattr(augment, "params_from_draws", lambda *a: calls.append(1) or real(*a))
    aug = GPUAugment(BOOK, backend="triton")
    x = _images(4, 9, 9)
    out = aug(x, generator=_gen(5))
    assert calls == []  # the kernel reads the draws; the params are made when asked for
    assert aug.last_draws is not None and len(aug.last_params) == 4
    assert aug.last_params.device == x.device
    torch.testing.assert_close(aug.apply(x, aug.last_params), out, rtol=0, atol=1e-6)
    reference = GPUAugment(BOOK, backend="reference")
    torch.testing.assert_close(reference(x, generator=_gen(5)), out, rtol=0, atol=1e-3 / 255)
    torch.testing.assert_close(reference.last_params.angle_deg, aug.last_params.angle_deg)


# ----------------------------------------------------------------------------- dtype, layout


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_output_is_the_float32_result_rounded(dtype):
    config = _config("constant", "bilinear", brightness_range=(0.5, 1.5), rescale=1 / 255)
    x = _images(3, 9, 13)
    draws = sample_draws(3, generator=_gen(), device=DEVICE)
    full = apply(x, draws, config, backend="triton")
    low = apply(x, draws, config, dtype=dtype, backend="triton")
    assert low.dtype == dtype
    assert torch.equal(low, full.to(dtype))


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_channels_last_output_has_channels_last_strides(backend, dtype):
    x = _images(2, 5, 7)
    draws = sample_draws(2, generator=_gen(), device=DEVICE)
    out = apply(x, draws, BOOK, dtype=dtype, memory_format=torch.channels_last, backend=backend)
    assert out.dtype == dtype
    assert out.stride() == (5 * 7 * 3, 1, 7 * 3, 3)
    contiguous = apply(x, draws, BOOK, dtype=dtype, backend=backend)
    assert contiguous.stride() == (3 * 5 * 7, 5 * 7, 7, 1)
    assert torch.equal(out, contiguous)


# ----------------------------------------------------------------------------- budgets


class _Recorder(TorchDispatchMode):
    """Records every aten op that is not a view (views launch nothing and allocate nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
            self.ops.append((func._schema.name.split("::")[-1], shape))
        return out


def _count_launches(monkeypatch) -> list[dict]:
    launches: list[dict] = []

    def record(kernel, grid, launch_slot=None, launch_guard=(), **kw):
        launches.append({"kernel": kernel, **kw})

    monkeypatch.setattr(fused, "_launch", record)
    return launches


def test_the_book_settings_take_a_prologue_and_one_kernel_and_allocate_only_the_output(
    monkeypatch,
):
    # B = 256 at 150 x 150: the launches are recorded, not run (the interpreter would take
    # minutes).
    launches = _count_launches(monkeypatch)
    x = torch.zeros(256, 3, 150, 150, dtype=torch.uint8, device=DEVICE)
    aug = GPUAugment(BOOK, backend="triton")
    generator = _gen()
    aug(x, generator=generator)  # warm-up: the launches are planned once per config and shape
    launches.clear()
    with _Recorder() as recorder:
        out = aug(x, generator=generator)
    assert [kw["kernel"] for kw in launches] == [fused._matrix_kernel, fused._augment_kernel]
    # the B x 12 draws (on the generator's device; on CUDA drawn into a reused pinned buffer
    # and copied into a new device tensor), the prologue's B x 8 table (each image's matrix,
    # once) and the output
    allowed = {("rand", (256, 12)), ("empty", (256, 12)), ("copy_", (256, 12))}
    extra = [op for op in recorder.ops if op not in allowed]
    assert extra == [("empty", (256, 3, 150, 150)), ("empty", (256, 8))], extra
    assert out.shape == (256, 3, 150, 150)


def test_a_channel_shift_adds_one_reduction_pass(monkeypatch):
    launches = _count_launches(monkeypatch)
    config = dataclasses.replace(BOOK, channel_shift_range=20.0, brightness_range=(0.5, 1.5))
    GPUAugment(config, backend="triton")(_images(8, 12, 12), generator=_gen())
    # the prologue, then reduce the min / max, then apply
    assert [kw.get("PASS") for kw in launches] == [None, 1, 2]


def test_the_prologue_writes_the_reference_matrices():
    config = _config("reflect", "bilinear", channel_shift_range=30, brightness_range=(0.5, 1.5))
    draws = sample_draws(5, generator=_gen(6), device=DEVICE)
    table = fused.matrix_table(draws, config, 13, 17)
    params = params_from_draws(config, draws, 13, 17)
    want = affine_matrix(params, 13, 17).reshape(5, 6)
    torch.testing.assert_close(table[:, :6], want, rtol=0, atol=1e-6)
    torch.testing.assert_close(table[:, 6], params.channel_shift, rtol=0, atol=0)
    torch.testing.assert_close(table[:, 7], params.brightness, rtol=0, atol=0)


def test_a_second_batch_of_the_same_kind_reuses_the_planned_launch(monkeypatch):
    launches = _count_launches(monkeypatch)
    x = _images(2, 6, 7)
    apply(x, sample_draws(2, generator=_gen(), device=DEVICE), BOOK, backend="triton")
    apply(x, sample_draws(2, generator=_gen(1), device=DEVICE), BOOK, backend="triton")
    first, second = launches[1], launches[3]
    assert first["src_ptr"] is second["src_ptr"] and first["out_ptr"] is not second["out_ptr"]
    built = []
    monkeypatch.setattr(fused, "_build_launches", lambda *a: built.append(1))
    apply(x, sample_draws(2, generator=_gen(2), device=DEVICE), BOOK, backend="triton")
    assert built == []


def test_a_module_checks_and_plans_a_batch_kind_once(monkeypatch):
    checked, built = [], []
    check, build = fused.check_usable, fused._build_launches
    monkeypatch.setattr(fused, "check_usable", lambda *a: checked.append(1) or check(*a))
    monkeypatch.setattr(fused, "_build_launches", lambda *a: built.append(1) or build(*a))
    aug = GPUAugment(BOOK, backend="triton")
    x = _images(2, 5, 13)  # a size no other test plans (the launches are cached per process)
    aug(x, generator=_gen())
    first = len(checked)  # the backend's resolution and the plan
    assert first >= 1 and built == [1]
    for seed in range(1, 3):
        aug(x, generator=_gen(seed))
    assert len(checked) == first and built == [1]  # nothing checked or built per call
    aug(_images(3, 5, 13), generator=_gen())  # another batch kind: planned once more
    assert len(checked) > first and built == [1, 1]


def test_the_planned_call_equals_apply_with_its_draws():
    aug = GPUAugment(BOOK, backend="triton")
    x = _images(3, 9, 11)
    aug(x, generator=_gen())  # plans
    out = aug(x, generator=_gen(4))
    assert torch.equal(aug.last_draws.uniforms, sample_draws(3, generator=_gen(4)).uniforms)
    assert torch.equal(out, apply(x, aug.last_draws, BOOK, backend="triton"))
    assert torch.equal(aug(x, params=aug.last_draws), out)


def test_statistics_changed_in_place_after_planning_are_read():
    config = dataclasses.replace(BOOK, featurewise_center=True, rescale=None)
    aug = GPUAugment(config, backend="triton").fit(_images(4, 6, 7).float())
    x = _images(2, 6, 7)
    draws = sample_draws(2, generator=_gen(1), device=DEVICE)
    before = aug(x, params=draws)
    aug.mean.add_(10.0)  # a new version of the same buffer: planned again
    after = aug(x, params=draws)
    torch.testing.assert_close(after, before - 10.0, rtol=0, atol=1e-4)


def test_a_module_reassigned_another_dtype_writes_it():
    aug = GPUAugment(BOOK, backend="triton")
    x = _images(2, 6, 7)
    aug(x, generator=_gen())
    aug.dtype = torch.bfloat16
    assert aug(x, generator=_gen()).dtype == torch.bfloat16


def test_given_draws_of_another_length_are_refused_by_the_planned_path():
    aug = GPUAugment(BOOK, backend="triton")
    x = _images(2, 6, 7)
    aug(x, generator=_gen())
    with pytest.raises(ValueError, match="`params` has 3 rows but the batch has 2 images"):
        aug(x, params=sample_draws(3, generator=_gen(), device=DEVICE))


def test_a_planned_module_copies_without_its_plans():
    import copy

    aug = GPUAugment(BOOK, backend="triton")
    x = _images(2, 6, 7)
    out = aug(x, generator=_gen(2))
    clone = copy.deepcopy(aug)
    assert clone._plans == {} and torch.equal(clone(x, generator=_gen(2)), out)


# ----------------------------------------------------------------------------- backend choice


def test_auto_takes_the_reference_on_the_cpu_and_the_kernel_on_cuda():
    assert resolve_backend("auto", "cpu", torch.float32) == "reference"
    assert resolve_backend("auto", "cuda", torch.float32) == "triton"
    assert resolve_backend("auto", "cuda", torch.float64) == "reference"  # the kernel has no f64


def test_auto_takes_the_reference_inside_torch_compile(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert resolve_backend("auto", "cuda", torch.float32) == "reference"


def test_triton_on_a_cpu_tensor_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(
        ValueError, match='`backend="triton"` runs on CUDA tensors; got images on cpu'
    ):
        apply(torch.zeros(1, 3, 4, 4), sample_draws(1), BOOK, backend="triton")


def test_triton_rejects_float64_output():
    with pytest.raises(ValueError, match='`backend="triton"` writes .* got dtype=torch.float64'):
        apply(_images(1, 4, 4), sample_draws(1, device=DEVICE), BOOK, dtype=torch.float64,
              backend="triton")  # fmt: skip


def _rgbx(x: torch.Tensor) -> torch.Tensor:
    """The same batch as the first 3 channels of a (B, H, W, 4) uint8 buffer."""
    b, c, h, w = x.shape
    x4 = torch.full((b, h, w, 4), 77, dtype=torch.uint8, device=x.device)
    x4[..., :c] = x.permute(0, 2, 3, 1)
    return x4.permute(0, 3, 1, 2)[:, :c]


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", ["nearest", "constant"])
def test_an_rgbx_batch_gives_the_planar_result(fill_mode, interpolation):
    config = _config(fill_mode, interpolation, channel_shift_range=20)
    x = _images(3, 9, 11)
    draws = sample_draws(3, generator=_gen(3), device=DEVICE)
    rgbx = _rgbx(x)
    assert fused._rgbx(rgbx) and not fused._rgbx(x)
    assert torch.equal(apply(rgbx, draws, config, backend="triton"),
                       apply(x, draws, config, backend="triton"))  # fmt: skip


def test_an_rgbx_batch_without_a_warp_gives_the_planar_result():
    config = AugmentConfig(horizontal_flip=True, brightness_range=(0.5, 1.5))
    x = _images(2, 5, 6)
    draws = sample_draws(2, generator=_gen(), device=DEVICE)
    assert torch.equal(apply(_rgbx(x), draws, config, backend="triton"),
                       apply(x, draws, config, backend="triton"))  # fmt: skip


def test_nothing_compiles_ahead_in_the_interpreter():
    assert GPUAugment(BOOK, backend="triton").prepare((3, 8, 8), DEVICE) is None
    assert GPUAugment(BOOK, backend="reference").prepare((3, 8, 8), DEVICE) is None
