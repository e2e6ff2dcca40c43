"""``GPULoader.state_dict()`` / ``load_state_dict()``: a restored loader's next batch is bit for
bit the uninterrupted run's, without loading the batches before it."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import write_tree

import gpuaug
from gpuaug import AugmentConfig

AUG = AugmentConfig(rotation_range=30, zoom_range=0.2, horizontal_flip=True, rescale=1 / 255)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("resume") / "data", {"a": 6, "b": 5}, (20, 24))


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory) -> Path:
    """11 images, of which a/img_001.png is truncated."""
    root = write_tree(tmp_path_factory.mktemp("resume_bad") / "data", {"a": 6, "b": 5}, (20, 24))
    path = root / "a" / "img_001.png"
    path.write_bytes(path.read_bytes()[:80])
    return root


def make(root: Path, **kwargs) -> gpuaug.GPULoader:
    options = dict(
        augment=AUG, target_size=(16, 16), batch_size=4, class_mode="sparse", seed=3,
        device="cpu", num_workers=0,
    )  # fmt: skip
    options.update(kwargs)
    return gpuaug.flow_from_directory(root, **options)


def run(loader: gpuaug.GPULoader, epochs: int) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    out = []
    for _ in range(epochs):
        epoch = loader.epoch
        for step, (x, y) in enumerate(loader):
            out.append((epoch, step, x, y))
    return out


def resumed(root: Path, epoch: int, step: int, epochs: int, **kwargs) -> list:
    """Runs a loader to batch ``step`` of ``epoch``, saves its state, and returns what a fresh
    loader restored from it yields until the end of epoch ``epochs - 1``."""
    first = make(root, **kwargs)
    first.set_epoch(epoch)
    it = iter(first)
    for _ in range(step):
        next(it)
    state = first.state_dict()
    it.close()
    second = make(root, **kwargs)
    second.load_state_dict(state)
    rest = [(epoch, step + i, x, y) for i, (x, y) in enumerate(second)]
    return rest + run(second, epochs - epoch - 1)


def assert_same(got: list, want: list) -> None:
    assert [(e, s) for e, s, *_ in got] == [(e, s) for e, s, *_ in want]
    for (e, s, x, y), (_, _, x0, y0) in zip(got, want, strict=True):
        assert torch.equal(x, x0), f"images differ at epoch {e} step {s}"
        assert torch.equal(y, y0), f"targets differ at epoch {e} step {s}"


def tail(batches: list, epoch: int, step: int) -> list:
    return [b for b in batches if (b[0], b[1]) >= (epoch, step)]


def test_resume_mid_epoch_yields_the_uninterrupted_batches(tree):
    full = run(make(tree), 2)
    assert_same(resumed(tree, 0, 2, 2), tail(full, 0, 2))


def test_resume_with_workers_yields_the_uninterrupted_batches(tree):
    full = run(make(tree), 1)
    assert_same(resumed(tree, 0, 1, 1, num_workers=2), tail(full, 0, 1))


def test_resume_with_steps_per_epoch_crossing_passes(tree):
    # 11 images / 4 = 3 batches a pass; 5 steps an epoch: epoch 1 starts inside pass 1
    full = run(make(tree, steps_per_epoch=5), 3)
    assert_same(resumed(tree, 1, 3, 3, steps_per_epoch=5), tail(full, 1, 3))


@pytest.mark.parametrize("cache", ["device", "host", "disk"])
def test_resume_from_every_cache(tree, tmp_path, cache):
    kwargs = dict(cache=cache, cache_dir=tmp_path / "cache", progress=False)
    full = run(make(tree, **kwargs), 2)
    assert_same(resumed(tree, 1, 1, 2, **kwargs), tail(full, 1, 1))


def test_resume_does_not_load_the_batches_before_the_step(tree, monkeypatch):
    loader = make(tree, shuffle=False)
    state = loader.state_dict() | {"step": 2}
    loaded: list[int] = []
    real = type(loader.dataset).load
    monkeypatch.setattr(
        type(loader.dataset), "load", lambda self, i: loaded.append(i) or real(self, i)
    )
    loader.load_state_dict(state)
    list(loader)
    assert loaded == [8, 9, 10]  # the last batch only: steps 0 and 1 are never read


def test_resume_with_skip_remembers_the_files_skipped_before(bad_tree):
    kwargs = dict(on_error="skip", shuffle=False)
    first = make(bad_tree, **kwargs)
    it = iter(first)
    next(it)  # batch 0 holds a/img_001.png, which fails
    state = first.state_dict()
    it.close()
    assert [i for i, _ in state["skipped"]] == [1]
    second = make(bad_tree, **kwargs)
    second.load_state_dict(state)
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable image file\(s\) in epoch 0"):
        list(second)
    assert second.last_skipped[0][0].endswith("img_001.png")


def test_resume_with_skip_yields_the_uninterrupted_batches(bad_tree):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = run(make(bad_tree, on_error="skip"), 1)
        got = resumed(bad_tree, 0, 1, 1, on_error="skip")
    assert_same(got, tail(full, 0, 1))


def test_state_dict_during_an_iteration_counts_the_batches_handed_out(tree):
    loader = make(tree)
    it = iter(loader)
    next(it)
    next(it)
    state = loader.state_dict()
    assert (state["epoch"], state["step"]) == (0, 2)


def test_state_dict_after_an_epoch_points_at_the_next_one(tree):
    loader = make(tree)
    list(loader)
    assert (loader.state_dict()["epoch"], loader.state_dict()["step"]) == (1, 0)


def test_state_saved_after_the_last_batch_resumes_at_the_next_epoch(tree):
    loader = make(tree)
    loader.load_state_dict(loader.state_dict() | {"step": len(loader)})
    assert loader.epoch == 1


def test_state_survives_torch_save_weights_only_and_json(tree):
    loader = make(tree)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == state
    assert json.loads(json.dumps(state)) == state


def test_seed_none_adopts_the_saved_seed(tree):
    full = run(make(tree), 1)
    state = make(tree).state_dict() | {"step": 1}
    loader = make(tree, seed=None)
    loader.load_state_dict(state)
    assert loader.seed == 3
    assert_same([(0, 1 + i, x, y) for i, (x, y) in enumerate(loader)], tail(full, 0, 1))


def test_next_loader_continues_from_a_loaded_state(tree):
    full = run(make(tree), 1)
    loader = make(tree)
    loader.load_state_dict(loader.state_dict() | {"step": 2})
    x, _ = next(loader)
    assert torch.equal(x, full[2][2])


def test_set_epoch_to_another_epoch_drops_the_resume_point(tree):
    loader = make(tree)
    loader.load_state_dict(loader.state_dict() | {"step": 2})
    loader.set_epoch(1)
    assert len(list(loader)) == len(loader)


def test_another_world_size_is_refused(tree):
    state = make(tree).state_dict() | {"num_replicas": 2}
    with pytest.raises(ValueError, match=r"num_replicas=2 .* num_replicas=1: resuming mid-epoch"):
        make(tree).load_state_dict(state)


def test_another_seed_is_refused(tree):
    state = make(tree).state_dict() | {"seed": 4}
    with pytest.raises(ValueError, match=r"`state_dict\['seed'\]` is 4 .* seed=3"):
        make(tree).load_state_dict(state)


def test_another_batch_size_is_refused(tree):
    state = make(tree).state_dict()
    with pytest.raises(ValueError, match=r"`state_dict\['batch_size'\]` is 4 .* batch_size=5"):
        make(tree, batch_size=5).load_state_dict(state)


def test_a_step_past_the_epoch_is_refused(tree):
    loader = make(tree)
    with pytest.raises(ValueError, match=r"`state_dict\['step'\]` must be in \[0, steps_per_epoch"):
        loader.load_state_dict(loader.state_dict() | {"step": 99})


def test_a_foreign_dict_is_refused(tree):
    with pytest.raises(ValueError, match="is not a GPULoader state"):
        make(tree).load_state_dict({"epoch": 0})


def test_a_non_dict_is_a_type_error(tree):
    with pytest.raises(TypeError, match="`state_dict` must be a dict"):
        make(tree).load_state_dict([0, 1])


def test_a_peek_inside_the_loop_leaves_the_loops_position(tree):
    """``next(iter(loader))`` inside ``for x in loader`` is a second iteration: state_dict()
    and batch_index still speak of the loop."""
    import gc

    loader = make(tree, batch_size=2)
    for step, _ in enumerate(loader):
        if step == 2:
            next(iter(loader))  # a peek, dropped at once
            gc.collect()
            state = loader.state_dict()
            assert (state["step"], loader.batch_index) == (3, 3)
            break


def test_reset_after_load_state_dict_starts_the_epoch_from_its_first_batch(tree):
    saved = make(tree)
    it = iter(saved)
    next(it)
    next(it)
    state = saved.state_dict()
    first = next(iter(make(tree)))[0]
    loader = make(tree)
    loader.load_state_dict(state)
    next(loader)
    loader.reset()
    assert torch.equal(next(loader)[0], first)
