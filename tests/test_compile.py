"""torch.compile: `apply` and `GPUAugment` trace whole (fullgraph), and the "compile" backend.

Compiling with Inductor is slow on a small CPU (about a minute cold, seconds with Inductor's
on-disk cache warm), so one module-scoped fixture compiles `apply_compiled` once, for the
book's settings on 12 x 10 images, and runs every batch size the other tests look at through
that one graph. The fullgraph checks use dynamo's ``CompileCounter`` backend (tracing only).
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters

from gpuaug import AugmentConfig, GPUAugment
from gpuaug.augment.backends.compile import apply_compiled
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
H, W = 12, 10
# An epoch of 11 images in batches of 4 ends with a short batch of 3; then the next epoch; then a
# batch of one (padded to two inside) and an epoch whose batches are all short.
BATCHES = (4, 4, 3, 4, 1, 2)


def _batch(b: int, seed: int, config: AugmentConfig = BOOK):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, 3, H, W), dtype=torch.uint8, generator=g)
    return x, sample_params(config, b, H, W, generator=g)


@pytest.fixture(scope="module")
def compiled_runs():
    """Run BATCHES through apply_compiled; record outputs and dynamo's graph count after each."""
    runs = []
    for i, b in enumerate(BATCHES):
        x, p = _batch(b, seed=i)
        out = apply_compiled(x, p, BOOK)
        runs.append((x, p, out, counters["stats"]["unique_graphs"]))
    return runs


def test_apply_traces_as_one_graph_with_fullgraph():
    x, p = _batch(4, seed=0)
    backend = CompileCounter()
    fn = torch.compile(lambda x, p: apply(x, p, BOOK), backend=backend, fullgraph=True)
    torch.testing.assert_close(fn(x, p), apply(x, p, BOOK))
    assert backend.frame_count == 1


def test_gpuaug_module_with_given_params_traces_as_one_graph():
    x, p = _batch(4, seed=1)
    aug = GPUAugment(BOOK)
    backend = CompileCounter()
    compiled = torch.compile(aug, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(x, params=p), aug.apply(x, p))
    assert backend.frame_count == 1


def test_gpuaug_module_drawing_its_params_traces_as_one_graph_and_keeps_them():
    x, _ = _batch(4, seed=2)
    aug = GPUAugment(BOOK)
    backend = CompileCounter()
    compiled = torch.compile(aug, backend=backend, fullgraph=True)
    out = compiled(x)
    assert backend.frame_count == 1
    assert len(aug.last_params) == 4
    torch.testing.assert_close(out, aug.apply(x, aug.last_params))


def test_draws_from_a_generator_outside_then_apply_inside_traces_as_one_graph():
    # dynamo cannot trace a torch.Generator argument: draw outside, compile the apply.
    x, _ = _batch(4, seed=3)
    aug = GPUAugment(BOOK)
    draws = aug.sample_draws(x, torch.Generator().manual_seed(7))
    backend = CompileCounter()
    compiled = torch.compile(aug.apply, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(x, draws), aug.apply(x, draws))
    assert backend.frame_count == 1


def test_apply_compiled_equals_eager_within_1e_4(compiled_runs):
    for x, p, out, _ in compiled_runs:
        expected = apply(x, p, BOOK)
        assert out.shape == expected.shape and out.dtype == torch.float32
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_short_last_batch_and_later_epochs_do_not_recompile(compiled_runs):
    graphs = [n for *_, n in compiled_runs]
    assert graphs[0] >= 1
    assert graphs[1:] == [graphs[0]] * (len(graphs) - 1)


def test_batch_of_one_is_the_eager_row(compiled_runs):
    x, p, out, _ = compiled_runs[BATCHES.index(1)]
    assert out.shape == (1, 3, H, W)
    torch.testing.assert_close(out, apply(x, p, BOOK), atol=1e-4, rtol=0)


def test_empty_batch_gives_an_empty_output_without_compiling():
    x, p = _batch(0, seed=3)
    before = counters["stats"]["unique_graphs"]
    out = apply_compiled(x, p, BOOK, memory_format=torch.channels_last)
    assert out.shape == (0, 3, H, W)
    assert counters["stats"]["unique_graphs"] == before


def test_apply_compiled_rejects_an_unknown_memory_format():
    x, p = _batch(2, seed=4)
    with pytest.raises(ValueError, match="`memory_format` must be torch.contiguous_format"):
        apply_compiled(x, p, BOOK, memory_format=torch.preserve_format)


def test_apply_compiled_rejects_params_of_another_length():
    x, _ = _batch(2, seed=5)
    _, p = _batch(3, seed=5)
    with pytest.raises(ValueError, match="`params` has 3 rows but the batch has 2 images"):
        apply_compiled(x, p, BOOK)


def test_apply_compiled_rejects_an_integer_dtype():
    x, p = _batch(2, seed=6)
    with pytest.raises(TypeError, match="`dtype` must be a float dtype"):
        apply_compiled(x, p, BOOK, dtype=torch.uint8)
