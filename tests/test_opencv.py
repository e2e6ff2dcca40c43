"""The opt-in "opencv" CPU backend: OpenCV's float32 warp, within 0.01 grey levels (OpenCV 5)."""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np
import pytest
import torch

from gpuaug import AugmentConfig
from gpuaug.augment.module import apply, sample_params

cv2 = pytest.importorskip("cv2")
from gpuaug.augment.backends.opencv import apply_opencv, supports, warp_bound  # noqa: E402

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


def _photos(b: int, h: int = 24, w: int = 20, seed: int = 0) -> torch.Tensor:
    """Smooth, photo-like uint8 images (gradients plus a little noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(b):
        a, c = rng.uniform(2, 8, size=2)
        img = np.stack([x * a, y * c, (x + y) * (a + c) / 2], axis=0) + rng.normal(0, 3, (3, h, w))
        out.append(np.clip(img, 0, 255))
    return torch.from_numpy(np.stack(out).astype(np.uint8))


def _grey_diff(a: torch.Tensor, b: torch.Tensor, rescale: float = 1 / 255) -> torch.Tensor:
    return (a.float() - b.float()).abs() / rescale


#: OpenCV >= 5 warps float32 with fine weights; OpenCV 4 with 1/32-pixel fixed-point ones.
_FINE_WEIGHTS = int(cv2.__version__.split(".")[0]) >= 5


def _warp_bound(x: torch.Tensor) -> float:
    """The documented bound on the warp's difference from the reference, in grey levels:
    `warp_bound` (float32 rounding of coordinates computed in another order), plus with
    OpenCV 4 up to 1/64 of the largest step between neighbouring pixels along each axis."""
    bound = warp_bound(*x.shape[-2:])
    if _FINE_WEIGHTS:
        return bound
    x = x.float()
    step_x = (x[..., 1:] - x[..., :-1]).abs().max()
    step_y = (x[..., 1:, :] - x[..., :-1, :]).abs().max()
    return bound + float(step_x + step_y) / 64


@pytest.mark.parametrize("fill_mode", ["nearest", "reflect"])
def test_book_warp_is_within_the_bound_of_the_reference(fill_mode):
    config = AugmentConfig.from_keras(**{**BOOK.to_dict(), "fill_mode": fill_mode})
    x = _photos(6)
    p = sample_params(config, 6, 24, 20, generator=torch.Generator().manual_seed(1))
    diff = _grey_diff(apply_opencv(x, p, config), apply(x, p, config, backend="reference"))
    assert diff.max() <= _warp_bound(x)
    assert diff.mean() <= (1e-3 if _FINE_WEIGHTS else 0.3)


def test_channel_shift_brightness_and_channels_last_bfloat16_output():
    config = AugmentConfig(
        rotation_range=20,
        horizontal_flip=True,
        vertical_flip=True,
        channel_shift_range=30.0,
        brightness_range=(0.7, 1.3),
        rescale=1 / 255,
    )
    x = _photos(5, seed=2)
    p = sample_params(config, 5, 24, 20, generator=torch.Generator().manual_seed(2))
    out = apply_opencv(x, p, config, dtype=torch.bfloat16, memory_format=torch.channels_last)
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)
    ref = apply(x, p, config, backend="reference")
    diff = _grey_diff(out, ref)
    # brightness scales the warp's error (<= 1.3x); bfloat16 adds its own rounding (<= 0.5)
    assert diff.max() <= 1.3 * _warp_bound(x) + 0.5
    assert diff.mean() <= 0.5


def test_channels_last_float32_output_is_the_same_values():
    x = _photos(3, seed=7)
    p = sample_params(BOOK, 3, 24, 20, generator=torch.Generator().manual_seed(7))
    out = apply_opencv(x, p, BOOK, memory_format=torch.channels_last)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, apply_opencv(x, p, BOOK))


def test_flips_alone_are_exact():
    config = AugmentConfig(horizontal_flip=True, vertical_flip=True)
    x = _photos(4, seed=3)
    p = sample_params(config, 4, 24, 20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(apply_opencv(x, p, config), apply(x, p, config, backend="reference"))


def test_the_wrap_fill_mode_opencv_cannot_match_runs_the_reference_exactly():
    config = AugmentConfig(rotation_range=30, fill_mode="wrap", cval=9.0)
    x = _photos(3, seed=4)
    assert not supports(x, config)
    p = sample_params(config, 3, 24, 20, generator=torch.Generator().manual_seed(4))
    assert torch.equal(apply_opencv(x, p, config), apply(x, p, config, backend="reference"))


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("size", [(23, 31), (1, 17), (9, 1)], ids=["23x31", "1x17", "9x1"])
def test_constant_fill_cuts_where_the_reference_cuts(size, interpolation):
    # scipy's "constant": cval wherever the source point leaves [0, n-1] (no blending with
    # cval), decided in float32 exactly as the reference decides it; whole-pixel shifts and
    # flips put many points exactly on the edge
    h, w = size
    config = AugmentConfig(
        rotation_range=40,
        width_shift_range=3,
        height_shift_range=2,
        zoom_range=0.3,
        horizontal_flip=True,
        vertical_flip=True,
        fill_mode="constant",
        cval=77.0,
        interpolation=interpolation,
        rescale=1 / 255,
    )
    g = torch.Generator().manual_seed(16)
    x = torch.randint(0, 256, (12, 3, h, w), dtype=torch.uint8, generator=g)
    p = sample_params(config, 12, h, w, generator=g)
    ref = apply(x, p, config, backend="reference")
    out = apply_opencv(x, p, config)
    cval = torch.tensor(77.0) * torch.tensor(1 / 255)
    assert torch.equal(out == cval, ref == cval)
    assert (ref == cval).any() and (ref != cval).any()
    if interpolation == "bilinear":
        assert supports(x, config)
        assert _grey_diff(out, ref).max() <= _warp_bound(x)
    else:  # nearest runs the reference
        assert torch.equal(out, ref)


def test_the_dispatcher_runs_it_by_name():
    x = _photos(2, seed=5)
    p = sample_params(BOOK, 2, 24, 20, generator=torch.Generator().manual_seed(5))
    assert torch.equal(apply(x, p, BOOK, backend="opencv"), apply_opencv(x, p, BOOK))


def test_nearest_interpolation_runs_the_reference_even_where_every_pixel_is_a_tie():
    # a zoom of exactly 2 and whole quarter turns put half-pixel ties everywhere: OpenCV
    # rounds them to even, Keras (scipy) up, so nearest interpolation is the reference's
    config = AugmentConfig(rotation_range=90, zoom_range=(0.5, 0.5), interpolation="nearest")
    x = _photos(4, seed=6)
    assert not supports(x, config)
    p = sample_params(config, 4, 24, 20, generator=torch.Generator().manual_seed(6))
    p = dataclasses.replace(p, angle_deg=torch.tensor([0.0, 90.0, 180.0, -90.0]))
    assert torch.equal(apply_opencv(x, p, config), apply(x, p, config, backend="reference"))


def test_a_large_image_is_within_the_bound_that_grows_with_its_size():
    g = torch.Generator().manual_seed(17)
    x = torch.randint(0, 256, (2, 3, 300, 210), dtype=torch.uint8, generator=g)
    p = sample_params(BOOK, 2, 300, 210, generator=g)
    bound = _warp_bound(x)
    assert bound > 0.01  # 255 * 4 * 2**-24 * 300
    ref = apply(x, p, BOOK, backend="reference")
    assert _grey_diff(apply_opencv(x, p, BOOK), ref).max() <= bound


def test_float16_overflow_is_inf_without_a_warning_as_torchs_cast():
    config = AugmentConfig(rotation_range=20, rescale=1000.0)
    x = _photos(2, seed=18)
    p = sample_params(config, 2, 24, 20, generator=torch.Generator().manual_seed(18))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = apply_opencv(x, p, config, dtype=torch.float16)
        ref = apply(x, p, config, dtype=torch.float16, backend="reference")
    assert torch.isinf(out).any()
    assert torch.equal(torch.isinf(out), torch.isinf(ref))


def test_rejects_params_of_another_length():
    x = _photos(2)
    p = sample_params(BOOK, 3, 24, 20)
    with pytest.raises(ValueError, match="`params` has 3 rows but the batch has 2 images"):
        apply_opencv(x, p, BOOK)


def test_a_forked_child_gets_its_own_warp_threads(monkeypatch):
    import os
    import signal

    from gpuaug.augment.backends import opencv

    monkeypatch.setattr(opencv, "_MIN_PIXELS_PER_THREAD", 0)  # these tiny images use the pool
    x = _photos(2, seed=8)
    p = sample_params(BOOK, 2, 24, 20, generator=torch.Generator().manual_seed(8))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        expected = apply_opencv(x, p, BOOK)  # the parent's pool exists now
    finally:
        torch.set_num_threads(before)
    pid = os.fork()
    if pid == 0:  # child: the parent's pool threads are gone; a hang here fails the test
        signal.alarm(60)  # a child stuck on dead threads is killed (SIGALRM), not waited for
        torch.set_num_threads(2)
        ok = torch.equal(apply_opencv(x, p, BOOK), expected)
        ok = ok and opencv._POOL[0] == os.getpid()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5])
def test_any_channel_count_is_within_the_bound_even_on_noise(channels):
    # uniform noise: neighbouring pixels differ by up to 255, the worst case for any error in
    # the coordinates or the weights
    g = torch.Generator().manual_seed(9)
    x = torch.randint(0, 256, (4, channels, 23, 31), dtype=torch.uint8, generator=g)
    p = sample_params(BOOK, 4, 23, 31, generator=g)
    out = apply_opencv(x, p, BOOK)
    assert out.shape == x.shape
    assert _grey_diff(out, apply(x, p, BOOK, backend="reference")).max() <= _warp_bound(x)


def test_a_channels_last_input_batch_gives_the_same_output():
    x = _photos(4, seed=10)
    p = sample_params(BOOK, 4, 24, 20, generator=torch.Generator().manual_seed(10))
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(apply_opencv(channels_last, p, BOOK), apply_opencv(x, p, BOOK))


def test_one_thread_and_several_give_the_same_output_and_restore_opencv_threads(monkeypatch):
    from gpuaug.augment.backends import opencv

    monkeypatch.setattr(opencv, "_MIN_PIXELS_PER_THREAD", 0)  # these tiny images use the pool
    x = _photos(9, seed=11)
    p = sample_params(BOOK, 9, 24, 20, generator=torch.Generator().manual_seed(11))
    before_torch, before_cv2 = torch.get_num_threads(), cv2.getNumThreads()
    try:
        cv2.setNumThreads(3)  # not 1, so that a missing restore shows on any machine
        torch.set_num_threads(1)
        inline = apply_opencv(x, p, BOOK)
        torch.set_num_threads(3)
        pooled = apply_opencv(x, p, BOOK)
        assert cv2.getNumThreads() == 3
    finally:
        torch.set_num_threads(before_torch)
        cv2.setNumThreads(before_cv2)
    assert torch.equal(inline, pooled)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_low_precision_output_is_the_float32_result_rounded_once(dtype, memory_format):
    x = _photos(5, seed=12)
    p = sample_params(BOOK, 5, 24, 20, generator=torch.Generator().manual_seed(12))
    out = apply_opencv(x, p, BOOK, dtype=dtype, memory_format=memory_format)
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=memory_format)
    assert torch.equal(out, apply_opencv(x, p, BOOK).to(dtype))


def test_bfloat16_rounding_is_torchs_on_ties_and_large_values():
    from gpuaug.augment.backends.opencv import _finish_image

    levels = np.arange(256, dtype=np.float32).reshape(16, 16, 1)
    # x 3.0 makes 63 exact ties (low 16 bits 0x8000): round half to even, not half up
    for scale in (1 / 255, 1.0, 3.0, 3.0000002, 1e30):
        warped = levels * np.float32(scale)
        halfway = (warped.view(np.uint32) & 0xFFFF) == 0x8000
        bits = np.empty((1, 16, 16), dtype=np.uint16)
        _finish_image(warped, bits)
        expected = torch.from_numpy(warped).permute(2, 0, 1).to(torch.bfloat16)
        got = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16)
        assert torch.equal(got, expected), scale
        if scale == 3.0:
            assert halfway.sum() > 0


def test_a_preprocessing_function_gets_a_contiguous_batch_as_from_the_reference():
    seen = []

    def flatten_and_back(x):
        seen.append(x.is_contiguous())
        return x.view(x.shape[0], -1).view(x.shape)

    config = AugmentConfig(
        rotation_range=30, rescale=1 / 255, preprocessing_function=flatten_and_back
    )
    x = _photos(4, seed=13)
    p = sample_params(config, 4, 24, 20, generator=torch.Generator().manual_seed(13))
    out = apply_opencv(x, p, config)
    assert seen == [True]
    assert _grey_diff(out, apply(x, p, config, backend="reference")).max() <= _warp_bound(x)


def test_a_failing_chunk_raises_after_every_chunk_has_ended(monkeypatch):
    from gpuaug.augment.backends import opencv

    monkeypatch.setattr(opencv, "_MIN_PIXELS_PER_THREAD", 0)
    real, ended = opencv._warp_image, []

    def warp(image, *args):
        if not ended:
            ended.append(None)
            raise RuntimeError("injected warp failure")
        out = real(image, *args)
        ended.append(None)
        return out

    monkeypatch.setattr(opencv, "_warp_image", warp)
    x = _photos(16, seed=14)
    p = sample_params(BOOK, 16, 24, 20, generator=torch.Generator().manual_seed(14))
    before_torch, before_cv2 = torch.get_num_threads(), cv2.getNumThreads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(RuntimeError, match="injected warp failure"):
            apply_opencv(x, p, BOOK)
        count = len(ended)
    finally:
        torch.set_num_threads(before_torch)
    time.sleep(0.2)
    assert len(ended) == count  # nothing still running after the error was raised
    assert cv2.getNumThreads() == before_cv2


def test_a_child_forked_while_a_batch_holds_the_pool_can_warp(monkeypatch):
    import os
    import signal
    import threading

    from gpuaug.augment.backends import opencv

    monkeypatch.setattr(opencv, "_MIN_PIXELS_PER_THREAD", 0)  # the child's batch uses the pool

    x = _photos(4, seed=15)
    p = sample_params(BOOK, 4, 24, 20, generator=torch.Generator().manual_seed(15))
    expected = apply_opencv(x, p, BOOK)
    before_cv2 = cv2.getNumThreads()
    held, release = threading.Event(), threading.Event()

    def batch_in_flight():  # what _run_tasks holds while its chunks run
        with opencv._POOL_LOCK:
            opencv._CV2_THREADS.append(cv2.getNumThreads())
            cv2.setNumThreads(1)
            held.set()
            release.wait(30)
            cv2.setNumThreads(opencv._CV2_THREADS.pop())

    thread = threading.Thread(target=batch_in_flight)
    thread.start()
    held.wait(30)
    try:
        pid = os.fork()
        if pid == 0:  # a hang on the inherited lock is killed by the alarm: exit code != 0
            signal.alarm(60)
            torch.set_num_threads(2)
            ok = cv2.getNumThreads() == before_cv2
            ok = ok and torch.equal(apply_opencv(x, p, BOOK), expected)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        thread.join()
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize(
    "device, dtype, fill_mode, reason",
    [
        ("cpu", torch.float32, "nearest", None),
        ("cuda", torch.float32, "nearest", "OpenCV warps CPU tensors, not cuda ones"),
        ("cpu", torch.float64, "nearest", "float64 output is computed by the reference"),
        ("cpu", torch.float32, "constant", None),
        (
            "cpu",
            torch.float32,
            "nearest-interpolation",
            "OpenCV rounds interpolation='nearest' ties to even, Keras up",
        ),
        ("cpu", torch.float32, "wrap", "fill_mode='wrap' has no OpenCV border"),
    ],
)
def test_describe_says_when_the_opencv_backend_runs_the_reference(device, dtype, fill_mode, reason):
    from gpuaug.augment.module import describe_backend

    if fill_mode == "nearest-interpolation":
        config = AugmentConfig(rotation_range=10, interpolation="nearest")
    else:
        config = AugmentConfig(rotation_range=10, fill_mode=fill_mode)
    line = describe_backend("opencv", device, dtype, config=config)
    if reason is None:
        assert "OpenCV's warpAffine per uint8 image" in line
    else:
        assert f"but {reason}: the exact reference" in line
