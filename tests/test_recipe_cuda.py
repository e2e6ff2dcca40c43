"""The recipe on a real GPU (skipped without CUDA): the same seed gives the CPU's params and
(nearly) its pixels, and a batch neither syncs the host nor makes a pageable copy."""

from __future__ import annotations

import pytest
import torch

from gpuaug.augment.recipe import EvalRecipe, RecipeConfig, TrainRecipe
from gpuaug.sync_check import SyncCheck

pytestmark = pytest.mark.cuda

CFG = RecipeConfig(
    size=64, re_prob=0.5, re_mode="pixel", mixup_alpha=0.8, cutmix_alpha=1.0,
    mixup_mode="elem", num_classes=10,
)  # fmt: skip


def _batch(device: str):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 96, 112), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (64,), generator=g)
    return x.to(device), y.to(device)


def test_a_seed_gives_the_cpus_params_and_pixels_on_the_gpu():
    recipe = TrainRecipe(CFG)
    x_gpu, y_gpu = _batch("cuda")
    out_gpu, soft_gpu = recipe(x_gpu, y_gpu, seed=7)
    p_gpu = recipe.last_params
    out_cpu, soft_cpu = recipe(x_gpu.cpu(), y_gpu.cpu(), seed=7)
    p_cpu = recipe.last_params
    assert torch.equal(p_gpu.crop.size_px.cpu(), p_cpu.crop.size_px)
    assert torch.equal(p_gpu.auto_augment.op.cpu(), p_cpu.auto_augment.op)
    assert torch.equal(p_gpu.mix.partner.cpu(), p_cpu.mix.partner)
    torch.testing.assert_close(soft_gpu.cpu(), soft_cpu)
    # resampling sums differ in the last bits between devices, and a grey level rounded the
    # other way can change a solarize / posterize decision: compare most pixels
    close = (out_gpu.cpu() - out_cpu).abs() < 0.05
    assert close.double().mean() > 0.99


def test_a_training_batch_makes_no_host_sync_under_cudas_sync_debug_mode():
    recipe = TrainRecipe(CFG)
    x, y = _batch("cuda")
    recipe(x, y, seed=0)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with SyncCheck() as check:
            recipe(x, y, seed=1)
            EvalRecipe(RecipeConfig(kind="eval", size=64, resize_size=72))(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    check.assert_clean()


def test_tf32_matmuls_move_the_resampling_by_under_a_grey_level():
    recipe = TrainRecipe(
        RecipeConfig(size=64, auto_augment=None, mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255))
    )
    x, y = _batch("cuda")
    exact, _ = recipe(x, y, seed=3)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        tf32, _ = recipe(x, y, params=recipe.last_params)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert (tf32 - exact).abs().max() < 1.0
