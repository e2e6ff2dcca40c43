"""gpuaug.augment.warp: one batched affine warp with scipy.ndimage's fill modes.

Reference: ``scipy.ndimage.affine_transform`` (what Keras calls), in float64. Tolerances: with
bilinear interpolation every pixel agrees within 0.01 on a 0..255 scale (measured max about
2e-3: float32 coordinates, ~1e-5 px, times image slopes up to ~255 per px), except pixels whose
source point lies within 1e-3 px of a discontinuity (the "constant" edge, the "wrap" seam, a
nearest-interpolation tie), where an ulp can pick the other side. Nearest interpolation then
agrees exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from gpuaug.augment.warp import invert_affine, source_coordinates, warp_affine

MODES = ["nearest", "constant", "reflect", "wrap"]
CVAL = 7.0


def _random_matrices(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    out = []
    for _ in range(n):
        theta = rng.uniform(-1.0, 1.0)
        zx, zy = rng.uniform(0.5, 1.6, size=2)
        shear = rng.uniform(-0.4, 0.4)
        linear = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        linear = linear @ np.array([[1, -np.sin(shear)], [0, np.cos(shear)]]) @ np.diag([zx, zy])
        offset = rng.uniform(-0.6, 0.6, size=2) * size
        out.append(np.concatenate([linear, offset[:, None]], axis=1))
    return np.stack(out)


def _scipy_warp(images: np.ndarray, matrices: np.ndarray, mode: str, order: int) -> np.ndarray:
    """scipy on (row, col) arrays: swap x and y in the matrix, as Keras does."""
    swap = np.array([[0, 1], [1, 0]])
    out = np.empty_like(images)
    for b, m in enumerate(matrices):
        linear, offset = swap @ m[:, :2] @ swap, swap @ m[:, 2]
        for c in range(images.shape[1]):
            out[b, c] = ndi.affine_transform(
                images[b, c], linear, offset, order=order, mode=mode, cval=CVAL
            )
    return out


def _near_discontinuity(matrices: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """(B, H, W) True where the float64 source point is within 1e-3 px of a discontinuity."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    near = np.zeros((len(matrices), height, width), dtype=bool)
    for b, m in enumerate(matrices):
        for coord, size in ((m[0, 0] * xx + m[0, 1] * yy + m[0, 2], width),
                            (m[1, 0] * xx + m[1, 1] * yy + m[1, 2], height)):  # fmt: skip
            frac = coord - np.floor(coord)
            near[b] |= np.abs(frac - 0.5) < 1e-3  # nearest-interpolation ties
            if mode == "constant":
                near[b] |= (np.abs(coord) < 1e-3) | (np.abs(coord - (size - 1)) < 1e-3)
            if mode == "wrap":
                seam = np.abs(coord / (size - 1) - np.round(coord / (size - 1))) * (size - 1)
                near[b] |= seam < 1e-3
    return near


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(12, 2, 19, 26))
    # smooth part + noise, so interpolation errors are visible
    yy, xx = np.mgrid[0:19, 0:26]
    images += 80 * np.sin(0.4 * xx + 0.3 * yy)[None, None]
    return images, _random_matrices(rng, 12, 26)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("mode", MODES)
def test_matches_scipy_affine_transform(batch, mode, interpolation):
    images, matrices = batch
    order = 1 if interpolation == "bilinear" else 0
    expected = _scipy_warp(images, matrices, mode, order)
    out = warp_affine(
        torch.tensor(images, dtype=torch.float32),
        torch.tensor(matrices, dtype=torch.float32),
        mode,
        CVAL,
        interpolation,
    ).numpy()
    keep = ~_near_discontinuity(matrices, 19, 26, mode)[:, None].repeat(2, axis=1)
    assert keep.mean() > 0.99
    tolerance = 0.01 if interpolation == "bilinear" else 1e-3
    np.testing.assert_allclose(out[keep], expected[keep], rtol=0, atol=tolerance)


_MATRIX_PRODUCTS = ("mm", "bmm", "matmul", "einsum", "addmm", "baddbmm", "addbmm", "mv", "dot")


class _OpRecorder(TorchDispatchMode):
    """Records the name of every aten op dispatched inside it ("aten::bmm" -> "bmm")."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("mode", MODES)
def test_no_matrix_product_is_dispatched_on_the_coordinate_path(batch, mode, interpolation):
    # A matmul / bmm / einsum turns into a TF32 GEMM under set_float32_matmul_precision("high").
    images, matrices = batch
    x = torch.tensor(images, dtype=torch.float32)
    m = torch.tensor(matrices, dtype=torch.float32)
    with _OpRecorder() as recorder:
        warp_affine(x, m, mode, CVAL, interpolation)
    assert "grid_sampler_2d" in recorder.ops  # the recorder sees the warp
    assert not set(recorder.ops) & set(_MATRIX_PRODUCTS), recorder.ops


@pytest.mark.parametrize("mode", MODES)
def test_high_matmul_precision_leaves_the_warp_unchanged(batch, mode):
    images, matrices = batch
    x = torch.tensor(images, dtype=torch.float32)
    m = torch.tensor(matrices, dtype=torch.float32)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        exact = warp_affine(x, m, mode, CVAL)
        torch.set_float32_matmul_precision("high")
        fast = warp_affine(x, m, mode, CVAL)
    finally:
        torch.set_float32_matmul_precision(before)
    assert torch.equal(fast, exact)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_identity_matrix_returns_the_input(mode, interpolation):
    x = torch.rand(2, 3, 9, 11) * 255
    identity = torch.eye(2, 3).expand(2, 2, 3)
    out = warp_affine(x, identity, mode, CVAL, interpolation)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-3)


def _shifted(mode: str, shift: float) -> torch.Tensor:
    row = torch.arange(1.0, 6.0).reshape(1, 1, 1, 5)  # values 1..5 along x
    matrix = torch.tensor([[[1.0, 0.0, shift], [0.0, 1.0, 0.0]]])
    return warp_affine(row, matrix, mode, cval=0.0)[0, 0, 0]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("nearest", [4, 5, 5, 5, 5]),
        ("constant", [4, 5, 0, 0, 0]),
        ("reflect", [4, 5, 5, 4, 3]),  # d c b a | a b c d
        ("wrap", [4, 5, 2, 3, 4]),  # scipy's wrap: period n - 1, x = 4 and x = 0 coincide
    ],
)
def test_a_whole_pixel_shift_fills_as_scipy(mode, expected):
    assert _shifted(mode, 3.0).tolist() == expected


def test_constant_fill_cuts_at_the_edge_pixel_centre_without_blending():
    # x = 4.25 is past the last pixel centre: scipy gives cval, not a blend of 5 and cval
    assert _shifted("constant", 0.25).tolist() == pytest.approx([1.25, 2.25, 3.25, 4.25, 0.0])


def test_wrap_is_scipy_wrap_not_grid_wrap():
    out = _shifted("wrap", 0.5).tolist()
    # x = 4.5 wraps to 0.5 (period 4): halfway between 1 and 2; grid-wrap would blend 5 and 1
    assert out[-1] == pytest.approx(1.5)
    expected = ndi.shift(np.arange(1.0, 6.0), -0.5, order=1, mode="wrap")
    assert out == pytest.approx(expected.tolist(), abs=1e-5)


def test_nearest_interpolation_rounds_ties_up_as_scipy():
    row = torch.arange(1.0, 6.0).reshape(1, 1, 1, 5)
    matrix = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])  # reads x + 0.5: all ties
    out = warp_affine(row, matrix, "nearest", interpolation="nearest")[0, 0, 0].tolist()
    assert out == [2, 3, 4, 5, 5]
    expected = ndi.shift(np.arange(1.0, 6.0), -0.5, order=0, mode="nearest")
    assert out == expected.tolist()


@pytest.mark.parametrize("mode", MODES)
def test_one_grid_sample_call_per_batch(monkeypatch, mode):
    calls = []
    real = F.grid_sample

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "grid_sample", counting)
    x = torch.rand(16, 3, 12, 12)
    warp_affine(x, torch.eye(2, 3).repeat(16, 1, 1) * 1.1, mode)
    assert calls == [torch.Size([16, 3, 12, 12])]


def test_source_coordinates_apply_the_matrix_to_pixel_centres():
    matrix = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 1.0, -3.0]]])
    src = source_coordinates(matrix, 2, 3)
    assert src.shape == (1, 2, 3, 2)
    assert src[0, 1, 2].tolist() == [5.0, -2.0]  # x=2, y=1 -> (2*2+1, 1-3)


def test_invert_affine_round_trips():
    m = torch.tensor(_random_matrices(np.random.default_rng(1), 5, 20), dtype=torch.float64)
    inv = invert_affine(m)
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(5, 1, 3)
    full = torch.cat([m, bottom], 1) @ torch.cat([inv, bottom], 1)
    torch.testing.assert_close(full, torch.eye(3, dtype=torch.float64).expand(5, 3, 3))


def test_empty_batch_gives_an_empty_batch():
    out = warp_affine(torch.zeros(0, 3, 8, 8), torch.zeros(0, 2, 3), "wrap")
    assert out.shape == (0, 3, 8, 8)


def test_keeps_dtype_float64():
    out = warp_affine(torch.rand(1, 1, 5, 5, dtype=torch.float64), torch.eye(2, 3)[None], "wrap")
    assert out.dtype == torch.float64


def test_rejects_an_unknown_fill_mode():
    with pytest.raises(ValueError, match="`fill_mode` must be one of"):
        warp_affine(torch.rand(1, 1, 4, 4), torch.eye(2, 3)[None], "mirror")


def test_rejects_an_unknown_interpolation():
    with pytest.raises(ValueError, match="`interpolation` must be one of"):
        warp_affine(torch.rand(1, 1, 4, 4), torch.eye(2, 3)[None], "nearest", 0.0, "bicubic")


def test_rejects_a_matrix_batch_of_another_size():
    with pytest.raises(ValueError, match="`matrix_dst_to_src` must be \\(2, 2, 3\\)"):
        warp_affine(torch.rand(2, 1, 4, 4), torch.eye(2, 3)[None], "nearest")


def test_rejects_integer_images():
    with pytest.raises(TypeError, match="`images` must be a float tensor"):
        warp_affine(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), torch.eye(2, 3)[None])
