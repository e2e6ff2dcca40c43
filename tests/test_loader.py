"""GPULoader / flow_from_directory on the CPU: epochs, reproducibility, targets, faults.

device="cpu" runs the same code as CUDA minus the side stream. Images are tiny; worker
processes are used only where they are the point (coverage with several workers, faults).
"""

from __future__ import annotations

import _thread
import dataclasses
import gc
import multiprocessing
import os
import signal
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import write_tree

import gpuaug
from gpuaug import AugmentConfig, DirectoryDataset, GPUAugment, ImageLoadError
from gpuaug.augment.backends.opencv import opencv_available
from gpuaug.loader.gpu_loader import GPULoader, LoaderConfig, WorkerCrashError

AUG = AugmentConfig(rotation_range=30, zoom_range=0.2, horizontal_flip=True)
SIZE = (16, 16)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """13 images: 7 cats, 6 dogs, 20x24 PNGs."""
    return write_tree(tmp_path_factory.mktemp("loader") / "data", {"cats": 7, "dogs": 6}, (20, 24))


@pytest.fixture(scope="module")
def pixels_to_index(tree) -> dict[bytes, int]:
    """Decoded uint8 pixels -> dataset index: identifies each image a plain loader yields."""
    ds = DirectoryDataset(tree, target_size=SIZE)
    return {ds.load(i).numpy().tobytes(): i for i in range(len(ds))}


def identify(x: torch.Tensor, table: dict[bytes, int]) -> list[int]:
    """Dataset indices of un-augmented float images (KeyError if one is not a dataset image)."""
    u8 = x.round().to(torch.uint8).cpu()
    return [table[img.numpy().tobytes()] for img in u8]


def make(tree, **kwargs) -> GPULoader:
    kwargs = {"target_size": SIZE, "batch_size": 4, "seed": 0, "num_workers": 0, **kwargs}
    return gpuaug.flow_from_directory(tree, device="cpu", **kwargs)


@pytest.fixture(autouse=True)
def _no_workers_of_earlier_tests():
    """Starts each test with no worker process of an earlier test file alive: a loader that an
    earlier test advanced with ``next(loader)`` and dropped sits in a reference cycle (it holds
    its endless iterator, whose frame holds it) until the cyclic garbage collector runs, and its
    workers live until then; the checks below count this test's workers only."""
    gc.collect()
    no_worker_left()


def no_worker_left(timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not multiprocessing.active_children()


# ---------------------------------------------------------------- batches
def test_yields_float_images_and_one_hot_targets_on_the_device(tree):
    x, y = next(iter(make(tree, augment=AUG)))
    assert x.shape == (4, 3, *SIZE) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert y.shape == (4, 2) and y.dtype == torch.float32
    assert torch.equal(y.sum(1), torch.ones(4))


@pytest.mark.parametrize(
    "class_mode, shape, dtype",
    [("binary", (4,), torch.float32), ("sparse", (4,), torch.int64)],
)
def test_targets_follow_class_mode(tree, class_mode, shape, dtype):
    _, y = next(iter(make(tree, class_mode=class_mode)))
    assert y.shape == shape and y.dtype == dtype


def test_class_mode_none_yields_images_only(tree):
    x = next(iter(make(tree, class_mode=None)))
    assert isinstance(x, torch.Tensor) and x.shape == (4, 3, *SIZE)


def test_class_mode_input_yields_the_augmented_images_as_targets(tree):
    x, y = next(iter(make(tree, class_mode="input", augment=AUG)))
    assert y is x


def test_labels_match_the_files_of_each_batch(tree):
    loader = make(tree, class_mode="sparse", augment=AUG)
    for step in range(len(loader)):
        r = loader.replay(0, step)
        expected = torch.tensor([loader.dataset.samples[i][1] for i in r.indices])
        assert torch.equal(r.y, expected)


def test_output_dtype_follows_dtype(tree):
    x, _ = next(iter(make(tree, dtype=torch.bfloat16)))
    assert x.dtype == torch.bfloat16


def test_augment_accepts_a_preset_name(tree):
    loader = make(tree, augment="chollet_cats_dogs")
    assert loader.augment.config.rotation_range == 40


def test_augment_accepts_a_gpuaugment_module_as_is(tree):
    module = GPUAugment(AUG)
    assert make(tree, augment=module).augment is module


def test_validation_split_comes_from_the_augment_config(tree):
    aug = AugmentConfig(validation_split=0.5)
    train = make(tree, augment=aug, subset="training")
    val = make(tree, augment=aug, subset="validation")
    assert len(train.dataset) + len(val.dataset) == 13
    assert len(val.dataset) == 3 + 3


def test_contradicting_validation_splits_are_an_error(tree):
    with pytest.raises(ValueError, match="`validation_split`=0.2 contradicts"):
        make(tree, augment=AugmentConfig(validation_split=0.5), validation_split=0.2)


# ---------------------------------------------------------------- epochs you can count
def test_len_is_steps_per_epoch(tree):
    assert len(make(tree)) == 4  # ceil(13 / 4)
    assert len(make(tree, steps_per_epoch=9)) == 9
    assert len(make(tree, drop_last=True)) == 3


def test_an_epoch_yields_len_batches_and_every_image_once(tree, pixels_to_index):
    loader = make(tree)
    seen = [i for x, _ in loader for i in identify(x, pixels_to_index)]
    assert sorted(seen) == list(range(13))


def test_several_workers_lose_and_duplicate_no_image(tree, pixels_to_index):
    loader = make(tree, num_workers=2, batch_size=3)
    for epoch in range(2):
        batches = [identify(x, pixels_to_index) for x, _ in loader]
        assert len(batches) == len(loader) == 5
        assert sorted(i for b in batches for i in b) == list(range(13)), f"epoch {epoch}"
    loader.close()


def test_steps_per_epoch_continues_passes_across_epochs(tree, pixels_to_index):
    loader = make(tree, steps_per_epoch=3)  # 4 steps per pass
    flat = [i for _ in range(4) for x, _ in loader for i in identify(x, pixels_to_index)]
    assert len(flat) == 4 * 3 * 4 - 3 * 3  # 12 batches = 3 passes, each with one short batch
    for p in range(3):
        assert sorted(flat[p * 13 : (p + 1) * 13]) == list(range(13))


def test_drop_last_drops_the_short_batch(tree):
    sizes = [len(x) for x, _ in make(tree, drop_last=True)]
    assert sizes == [4, 4, 4]


def test_epoch_advances_after_a_complete_iteration(tree):
    loader = make(tree)
    assert loader.epoch == 0
    list(loader)
    assert loader.epoch == 1


def test_peeking_at_a_batch_does_not_advance_the_epoch(tree):
    loader = make(tree)
    next(iter(loader))
    assert loader.epoch == 0


def test_each_epoch_has_a_new_order_and_new_augmentation(tree):
    loader = make(tree, augment=AUG)
    a = loader.replay(0, 0)
    b = loader.replay(1, 0)
    assert not torch.equal(a.indices, b.indices)
    assert not torch.equal(a.params.angle_deg, b.params.angle_deg)


def test_set_epoch_reproduces_an_epoch_bit_for_bit(tree):
    loader = make(tree, augment=AUG)
    loader.set_epoch(2)
    first = [x for x, _ in loader]
    loader.set_epoch(2)
    again = [x for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_set_epoch_during_an_iteration_suppresses_the_auto_increment(tree):
    loader = make(tree)
    for i, _ in enumerate(loader):
        if i == 0:
            loader.set_epoch(7)
    assert loader.epoch == 7


def test_set_epoch_on_the_batch_sampler_as_lightning_calls_it(tree):
    loader = make(tree, augment=AUG)
    loader.batch_sampler.set_epoch(3)  # lightning: _set_sampler_epoch(dataloader, epoch)
    x, _ = next(iter(loader))
    assert loader.epoch == 3
    assert torch.equal(x, loader.replay(3, 0).x)


def test_same_seed_gives_the_same_batches_in_another_loader(tree):
    a = next(iter(make(tree, augment=AUG, seed=11)))[0]
    b = next(iter(make(tree, augment=AUG, seed=11)))[0]
    assert torch.equal(a, b)


def test_seed_none_is_drawn_and_reported(tree):
    loader = make(tree, seed=None)
    assert isinstance(loader.seed, int)
    assert f"seed {loader.seed}, drawn at random" in loader.describe()


def test_iterating_leaves_the_global_rng_alone(tree):
    state = torch.get_rng_state()
    list(make(tree, augment=AUG))
    assert torch.equal(state, torch.get_rng_state())


# ---------------------------------------------------------------- replay
def test_replay_rebuilds_a_yielded_batch_exactly(tree):
    loader = make(tree, augment=AUG, steps_per_epoch=5)
    loader.set_epoch(1)
    yielded = [(x, y) for x, y in loader]
    for step, (x, y) in enumerate(yielded):
        r = loader.replay(1, step)
        assert torch.equal(r.x, x) and torch.equal(r.y, y)


def test_replay_params_index_gives_one_samples_parameters(tree):
    loader = make(tree, augment=AUG)
    r = loader.replay(0, 1)
    row = r.params.index(2)
    assert len(row) == 1
    assert row.angle_deg.item() == r.params.angle_deg[2].item()
    one = loader.augment.apply(loader.dataset.load(int(r.indices[2]))[None], row)
    assert torch.equal(one[0], r.x[2])


def test_replay_with_workers_matches_iteration(tree):
    loader = make(tree, augment=AUG, num_workers=2)
    x0, _ = next(iter(loader))
    assert torch.equal(loader.replay(0, 0).x, x0)
    loader.close()


# ---------------------------------------------------------------- describe / stats
def test_stats_has_the_epoch_numbers(tree):
    s = make(tree, batch_size=5).stats()
    assert s["num_samples"] == 13 and s["class_counts"] == {"cats": 7, "dogs": 6}
    assert s["steps_per_epoch"] == 3 and s["samples_per_epoch"] == 13
    assert s["last_batch_size"] == 3 and s["passes_per_epoch"] == 1.0


def test_stats_with_steps_per_epoch(tree):
    s = make(tree, batch_size=5, steps_per_epoch=2).stats()
    assert s["steps_per_epoch"] == 2 and s["samples_per_epoch"] == 10
    assert s["passes_per_epoch"] == pytest.approx(2 / 3)


def test_describe_answers_how_many_observations(tree):
    text = make(tree, batch_size=5, augment=AUG).describe()
    assert "Found 13 images belonging to 2 classes: cats=7, dogs=6" in text
    assert "one pass = 3 steps = ceil(13 / 5)" in text
    assert "samples per epoch: 13 (every image exactly once)" in text
    assert "the last batch of each pass holds 3 images" in text
    assert "rotation: uniform in [-30, 30] deg" in text
    assert "Each epoch visits every image once in a new order (seed 0, epoch E)" in text
    assert "fresh augmentation parameters and nothing is stored: 13 augmented samples" in text


def test_describe_says_when_nothing_is_random(tree):
    text = make(tree, batch_size=5).describe()
    assert "no random augmentation: every visit of an image gives the same pixels" in text


def test_describe_names_the_backend_that_runs_and_whether_it_is_exact(tree):
    text = make(tree, batch_size=5, augment=AUG).describe()
    assert "backend: 'auto' -> 'reference', the exact reference" in text
    assert "output float32, contiguous" in text
    opencv = GPUAugment(AUG, dtype=torch.bfloat16, backend="opencv")
    text = make(tree, batch_size=5, augment=opencv).describe()
    if opencv_available():
        assert "backend: 'opencv', OpenCV's warpAffine per uint8 image, not bitwise" in text
    else:
        assert "but cv2 is not installed" in text
    assert "output bfloat16, contiguous" in text
    wrap = GPUAugment(dataclasses.replace(AUG, fill_mode="wrap"), backend="opencv")
    text = make(tree, batch_size=5, augment=wrap).describe()
    assert "but fill_mode='wrap' has no OpenCV border: the exact reference" in text


def test_describe_explains_steps_per_epoch(tree):
    text = make(tree, batch_size=5, steps_per_epoch=2).describe()
    assert "steps per epoch: 2 (steps_per_epoch)" in text
    assert "passes run on across epoch boundaries" in text


def test_loader_config_round_trips_through_a_dict():
    cfg = LoaderConfig(batch_size=8, seed=3, cache="host", steps_per_epoch=10)
    assert LoaderConfig.from_dict(cfg.to_dict()) == cfg


def test_loader_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        LoaderConfig().batch_size = 3


# ---------------------------------------------------------------- argument errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "`batch_size` must be an int >= 1; got 0"),
        ({"cache": "gpu"}, "`cache` must be 'device', 'host', 'disk' or None; got 'gpu'"),
        ({"decode": "nvjpeg"}, "`decode` must be 'cpu' or 'gpu'; got 'nvjpeg'"),
        ({"num_workers": -1}, "`num_workers` must be an int >= 0 or None; got -1"),
        ({"steps_per_epoch": 0}, "`steps_per_epoch` must be an int >= 1 or None; got 0"),
        ({"timeout": -1}, "`timeout` must be >= 0 seconds; got -1"),
    ],
)
def test_bad_loader_settings_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoaderConfig(**kwargs)


def test_bad_augment_type_is_a_type_error(tree):
    with pytest.raises(TypeError, match="`augment` must be an AugmentConfig"):
        GPULoader(DirectoryDataset(tree, target_size=SIZE), augment=42)


def test_dataset_without_target_size_needs_a_recipe(tree):
    # images at their own sizes are cropped to one by a recipe (tests/test_ragged.py)
    with pytest.raises(ValueError, match="`target_size`=None .* needs a `recipe`"):
        GPULoader(DirectoryDataset(tree, target_size=None))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_gpu_decode_without_cuda_is_an_error(tree):
    with pytest.raises(ValueError, match=r"decode='gpu' needs CUDA; torch.cuda.is_available\(\)"):
        make(tree, decode="gpu")


def test_drop_last_with_a_batch_larger_than_the_data_is_an_error(tree):
    with pytest.raises(ValueError, match="drop_last=True would yield no batch"):
        make(tree, batch_size=20, drop_last=True)


# ---------------------------------------------------------------- bad files
@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory) -> Path:
    """10 images, of which cats/img_002.png is truncated (header fine, pixels missing)."""
    root = write_tree(tmp_path_factory.mktemp("bad") / "data", {"cats": 5, "dogs": 5}, (20, 24))
    path = root / "cats" / "img_002.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return root


def test_skip_drops_the_bad_sample_with_its_label(bad_tree):
    loader = make(bad_tree, on_error="skip", class_mode="sparse", batch_size=10, shuffle=False)
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable image file\(s\) in epoch 0"):
        ((x, y),) = list(loader)
    assert len(x) == len(y) == 9
    assert y.tolist() == [0] * 4 + [1] * 5
    assert loader.last_skipped[0][0].endswith(os.path.join("cats", "img_002.png"))


def test_skip_warns_once_per_epoch(bad_tree):
    loader = make(bad_tree, on_error="skip", batch_size=3, num_workers=2)
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            n = sum(len(x) for x, _ in loader)
        assert n == 9
        mine = [w for w in caught if "Skipped 1 unreadable" in str(w.message)]
        assert len(mine) == 1 and "img_002.png" in str(mine[0].message)
    loader.close()


@pytest.fixture(scope="module")
def half_bad_tree(tmp_path_factory) -> Path:
    """16 JPEGs: the 8 of class a truncated (headers whole), the 8 of class b good."""
    root = write_tree(tmp_path_factory.mktemp("half") / "data", {"a": 8, "b": 8}, (20, 24), "jpg")
    for path in (root / "a").iterdir():
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 100])
    return root


def test_an_epoch_keeps_len_loader_steps_when_whole_batches_fail(half_bad_tree):
    loader = make(half_bad_tree, on_error="skip", class_mode="sparse", batch_size=4, shuffle=False)
    with pytest.warns(UserWarning, match=r"2 batch\(es\) whose every file failed"):
        batches = list(loader)
    assert len(loader) == 4 and len(batches) == 4
    assert [y.tolist() for _, y in batches] == [[1] * 4] * 4
    assert len(loader.last_skipped) == 8


def test_a_replaced_batch_is_replayed_as_it_was_yielded(half_bad_tree):
    loader = make(half_bad_tree, on_error="skip", class_mode="sparse", batch_size=4, shuffle=False)
    with pytest.warns(UserWarning):
        first, _ = next(iter(loader))
    assert torch.equal(loader.replay(0, 0).x, first)


def test_raise_names_the_bad_file_from_a_worker(bad_tree):
    loader = make(bad_tree, on_error="raise", num_workers=2)
    with pytest.raises(ImageLoadError, match=r"img_002\.png") as info:
        for _ in loader:
            pass
    assert info.value.path.endswith("img_002.png")
    notes = "\n".join(info.value.__notes__)  # what to do, and how to find the others first
    assert "on_error='skip'" in notes and "gpuaug inspect DIR --full" in notes
    assert no_worker_left()


class CrashingDataset(DirectoryDataset):
    """Kills its worker process (as a decoder segfault would) on one file."""

    def load(self, index):
        if self.samples[index][0].endswith("img_003.png"):
            os._exit(3)
        return super().load(index)


class KilledDataset(DirectoryDataset):
    """Sends SIGKILL to its own worker process on one file (as the OOM killer would)."""

    def load(self, index):
        if self.samples[index][0].endswith("img_003.png"):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().load(index)


@pytest.mark.parametrize("cls", [CrashingDataset, KilledDataset])
def test_a_dead_worker_raises_naming_the_file_without_hanging(tree, cls):
    loader = GPULoader(
        cls(tree, target_size=SIZE), config=LoaderConfig(batch_size=2, num_workers=2, seed=0)
    )
    start = time.monotonic()
    with pytest.raises(WorkerCrashError, match=r"img_003\.png") as info:
        for _ in loader:
            pass
    assert time.monotonic() - start < 20
    assert any(p.endswith("img_003.png") for p in info.value.paths)
    assert no_worker_left()


def test_a_concurrent_iterations_crash_names_its_own_workers_file_not_the_others(tree):
    loader = make(tree, batch_size=2, num_workers=2, shuffle=False)
    first, second = iter(loader), iter(loader)
    next(first)  # holds the persistent workers
    next(second)  # runs its own worker processes
    pool = loader._workers
    own = next(iter(pool._others.values()))  # the second iteration's DataLoader iterator
    held = pool._dataloader._iterator
    # The first iteration's worker 0 is reading sample 5; the second's worker 0 is between
    # files when it is killed: its crash must not be blamed on sample 5.
    own._dataset.slots[0] = -1
    held._dataset.slots[0] = 5
    # DataLoader's SIGCHLD handler would raise wherever the main thread is: hold it off while
    # the worker dies, then ask the pool what it would report from inside the iteration.
    previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        os.kill(own._workers[0].pid, signal.SIGKILL)
        own._workers[0].join(10)
    finally:
        signal.signal(signal.SIGCHLD, previous)
    crash = pool._crash_error(own, RuntimeError("DataLoader worker is killed by signal"))
    assert crash is not None
    assert "worker 0" in str(crash) and "between files" in str(crash)
    assert crash.paths == []
    second.close()
    first.close()
    loader.close()
    assert no_worker_left()


# ---------------------------------------------------------------- worker shutdown
def test_raising_inside_the_loop_shuts_the_workers_down(tree):
    loader = make(tree, num_workers=2)
    with pytest.raises(KeyboardInterrupt):
        for _ in loader:
            raise KeyboardInterrupt
    assert no_worker_left()


class SlowDataset(DirectoryDataset):
    def load(self, index):
        time.sleep(0.2)
        return super().load(index)


def test_ctrl_c_while_waiting_for_workers_shuts_them_down(tree):
    loader = GPULoader(
        SlowDataset(tree, target_size=SIZE), config=LoaderConfig(batch_size=4, num_workers=2)
    )
    timer = threading.Timer(0.5, _thread.interrupt_main)  # as Ctrl-C would, mid-next()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in loader:
                pass
    finally:
        timer.cancel()
    assert no_worker_left()


def test_breaking_out_shuts_the_workers_down_and_the_next_epoch_works(tree, pixels_to_index):
    loader = make(tree, num_workers=2)
    for _ in loader:
        break
    assert no_worker_left()
    seen = [i for x, _ in loader for i in identify(x, pixels_to_index)]
    assert sorted(seen) == list(range(13))
    loader.close()
    assert no_worker_left()


def test_closing_a_stale_peek_leaves_the_running_epoch_alone(tree, pixels_to_index):
    loader = make(tree, num_workers=2)
    peek = iter(loader)
    next(peek)
    running = iter(loader)
    seen = identify(next(running)[0], pixels_to_index)
    del peek  # closes the old generator
    seen += [i for x, _ in running for i in identify(x, pixels_to_index)]
    assert sorted(seen) == list(range(13))
    loader.close()


def test_workers_persist_between_complete_epochs(tree):
    loader = make(tree, num_workers=2)
    list(loader)
    pids = {p.pid for p in multiprocessing.active_children()}
    list(loader)
    assert pids and pids == {p.pid for p in multiprocessing.active_children()}
    loader.close()
    assert no_worker_left()


def test_context_manager_closes_the_workers(tree):
    with make(tree, num_workers=2) as loader:
        list(loader)
    assert no_worker_left()


# ---------------------------------------------------------------- CUDA
@pytest.mark.cuda
def test_cuda_batches_are_on_the_gpu_and_replayable(tree):
    loader = gpuaug.flow_from_directory(
        tree, augment=AUG, target_size=SIZE, batch_size=4, seed=0, num_workers=2, device="cuda"
    )
    batches = [(x, y) for x, y in loader]
    assert all(x.is_cuda and y.is_cuda for x, y in batches)
    for step, (x, _) in enumerate(batches):
        assert torch.equal(loader.replay(0, step).x, x)
    loader.close()


@pytest.mark.cuda
def test_cuda_epoch_covers_every_image_once(tree, pixels_to_index):
    loader = gpuaug.flow_from_directory(
        tree, target_size=SIZE, batch_size=3, seed=0, num_workers=2, device="cuda"
    )
    seen = [i for x, _ in loader for i in identify(x, pixels_to_index)]
    assert sorted(seen) == list(range(13))
    loader.close()
