"""The decoded-once image cache: device / host / disk, staleness of the disk manifest."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tree

import gpuaug
from gpuaug import AugmentConfig, ImageLoadError
from gpuaug.data.cache import ImageCache, default_cache_dir

AUG = AugmentConfig(rotation_range=30, width_shift_range=0.1, horizontal_flip=True)
SIZE = (16, 16)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("cache") / "data", {"cats": 7, "dogs": 6}, (20, 24))


def make(root, **kwargs):
    kwargs = {
        "augment": AUG,
        "target_size": SIZE,
        "batch_size": 4,
        "seed": 5,
        "num_workers": 0,
        "device": "cpu",
        "progress": False,
        **kwargs,
    }
    return gpuaug.flow_from_directory(root, **kwargs)


def epochs(loader, n=2):
    out = []
    for _ in range(n):
        out.extend(loader)
    return out


@pytest.fixture(scope="module")
def uncached(tree):
    return epochs(make(tree, steps_per_epoch=5))


# ---------------------------------------------------------------- equality with no cache
@pytest.mark.parametrize("kind", ["device", "host", "disk"])
def test_cached_batches_equal_uncached_batches(tree, uncached, kind, tmp_path):
    loader = make(tree, steps_per_epoch=5, cache=kind, cache_dir=tmp_path)
    got = epochs(loader)
    assert len(got) == len(uncached) == 10
    for (x, y), (x0, y0) in zip(got, uncached, strict=True):
        assert torch.equal(x, x0) and torch.equal(y, y0)


def test_cache_holds_every_image_as_uint8(tree):
    cache = make(tree, cache="device").cache
    assert cache.images.shape == (13, 3, *SIZE) and cache.images.dtype == torch.uint8
    assert cache.nbytes == 13 * 3 * 16 * 16


def test_cached_replay_equals_the_yielded_batch(tree):
    loader = make(tree, cache="device")
    x, _ = next(iter(loader))
    assert torch.equal(loader.replay(0, 0).x, x)


def test_cache_is_built_by_workers_and_epochs_use_none(tree):
    loader = make(tree, cache="host", num_workers=2)
    assert not multiprocessing.active_children()
    list(loader)
    assert not multiprocessing.active_children()


def test_cache_build_shows_a_progress_bar(tree, capsys):
    make(tree, cache="device", progress=True)
    assert "caching 13 images" in capsys.readouterr().err


def test_no_progress_bar_when_progress_is_false(tree, capsys):
    make(tree, cache="device", progress=False)
    assert "caching" not in capsys.readouterr().err


def test_describe_reports_the_cache(tree):
    text = make(tree, cache="device").describe()
    assert "cache='device': 13 images" in text and "built by this process" in text


# ---------------------------------------------------------------- disk cache and manifest
@pytest.fixture
def own_tree(tmp_path) -> Path:
    return write_tree(tmp_path / "own", {"a": 3, "b": 2}, (20, 24))


def test_disk_cache_writes_data_and_manifest(own_tree, tmp_path):
    cache = make(own_tree, cache="disk", cache_dir=tmp_path / "c").cache
    assert cache.path.parent == tmp_path / "c" and cache.path.suffix == ".u8"
    manifest = json.loads(cache.path.with_suffix(".json").read_text())
    assert [f[0] for f in manifest["files"]] == [
        os.path.join(c, f"img_{i:03d}.png") for c, k in (("a", 3), ("b", 2)) for i in range(k)
    ]
    assert manifest["target_size"] == list(SIZE) and manifest["color_mode"] == "rgb"
    assert cache.path.stat().st_size == 5 * 3 * 16 * 16


def test_disk_cache_is_reused_when_nothing_changed(own_tree, tmp_path):
    first = make(own_tree, cache="disk", cache_dir=tmp_path / "c")
    second = make(own_tree, cache="disk", cache_dir=tmp_path / "c")
    assert first.cache.built and not second.cache.built
    assert "read from disk (up to date)" in second.describe()
    assert torch.equal(torch.from_numpy(second.cache.images[0].copy()), first.dataset.load(0))


def test_disk_cache_is_rebuilt_when_a_file_is_added(own_tree, tmp_path):
    make(own_tree, cache="disk", cache_dir=tmp_path / "c")
    write_tree(own_tree, {"b": 3}, (20, 24), seed=9)  # b/img_002.png is new
    again = make(own_tree, cache="disk", cache_dir=tmp_path / "c")
    assert again.cache.built and len(again.cache) == 6


def test_disk_cache_is_rebuilt_when_a_file_is_modified(own_tree, tmp_path):
    first = make(own_tree, cache="disk", cache_dir=tmp_path / "c")
    path = own_tree / "a" / "img_000.png"
    write_tree(own_tree, {"a": 1}, (20, 24), seed=77)  # rewrites a/img_000.png
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    again = make(own_tree, cache="disk", cache_dir=tmp_path / "c")
    assert again.cache.built
    assert not torch.equal(
        torch.from_numpy(again.cache.images[0].copy()),
        torch.from_numpy(first.cache.images[0].copy()),
    )
    assert torch.equal(torch.from_numpy(again.cache.images[0].copy()), again.dataset.load(0))


def test_disk_cache_is_rebuilt_when_a_file_is_removed(own_tree, tmp_path):
    make(own_tree, cache="disk", cache_dir=tmp_path / "c")
    (own_tree / "b" / "img_001.png").unlink()
    again = make(own_tree, cache="disk", cache_dir=tmp_path / "c")
    assert again.cache.built and len(again.cache) == 4


def test_other_decode_settings_get_their_own_disk_cache(own_tree, tmp_path):
    a = make(own_tree, cache="disk", cache_dir=tmp_path / "c").cache
    b = make(own_tree, cache="disk", cache_dir=tmp_path / "c", target_size=(8, 8)).cache
    assert a.path != b.path and b.built


def test_default_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUAUG_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("GPUAUG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "gpuaug"


# ---------------------------------------------------------------- bad files
@pytest.fixture
def bad_tree(tmp_path) -> Path:
    root = write_tree(tmp_path / "bad", {"a": 3, "b": 3}, (20, 24))
    path = root / "a" / "img_001.png"
    path.write_bytes(path.read_bytes()[:60])
    return root


def test_cache_build_with_a_bad_file_raises_naming_it(bad_tree):
    with pytest.raises(ImageLoadError, match=r"img_001\.png"):
        make(bad_tree, cache="device")


@pytest.mark.parametrize("kind", ["device", "disk"])
def test_cache_skips_a_bad_file_with_its_label(bad_tree, tmp_path, kind):
    loader = make(
        bad_tree,
        cache=kind,
        cache_dir=tmp_path / "c",
        on_error="skip",
        class_mode="sparse",
        shuffle=False,
        batch_size=6,
    )
    assert loader.cache.failures[0][0].endswith("img_001.png")
    with pytest.warns(UserWarning, match=r"Skipped 1 unreadable image file"):
        ((x, y),) = list(loader)
    assert len(x) == 5 and y.tolist() == [0, 0, 1, 1, 1]


def test_disk_cache_remembers_bad_files(bad_tree, tmp_path):
    kwargs = {"cache": "disk", "cache_dir": tmp_path / "c", "on_error": "skip"}
    make(bad_tree, **kwargs)
    again = make(bad_tree, **kwargs)
    assert not again.cache.built
    assert not bool(again.cache.valid[1]) and int(again.cache.valid.sum()) == 5


def test_gather_leaves_out_invalid_images():
    images = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1)
    valid = torch.tensor([True, False, True, True])
    cache = ImageCache("host", images, valid)
    got, kept = cache.gather(torch.tensor([3, 1, 0]))
    assert kept.tolist() == [3, 0] and got.flatten().tolist() == [3, 0]


def test_unknown_cache_kind_is_an_error():
    with pytest.raises(ValueError, match="`cache` must be one of"):
        ImageCache("gpu", torch.zeros(1, 1, 1, 1), torch.ones(1, dtype=torch.bool))


# ---------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["device", "host", "disk"])
def test_cuda_cached_batches_equal_uncached(tree, tmp_path, kind):
    ref = epochs(make(tree, device="cuda", num_workers=2))
    got = epochs(make(tree, device="cuda", cache=kind, cache_dir=tmp_path))
    for (x, y), (x0, y0) in zip(got, ref, strict=True):
        assert x.is_cuda and torch.equal(x, x0) and torch.equal(y, y0)


@pytest.mark.cuda
def test_cuda_device_cache_lives_on_the_gpu(tree):
    assert make(tree, device="cuda", cache="device").cache.images.is_cuda


# ---------------------------------------------------------------- integrity
def _overwrite_image(cache_path: Path, index: int, nbytes: int) -> None:
    with open(cache_path, "r+b") as f:
        f.seek(index * nbytes)
        data = f.read(nbytes)
        f.seek(index * nbytes)
        f.write(bytes(255 - b for b in data))


def test_overwritten_cache_bytes_are_detected_on_first_read(own_tree, tmp_path):
    from gpuaug.data.cache import CacheCorruptedError

    first = make(own_tree, cache="disk", cache_dir=tmp_path / "c", shuffle=False, batch_size=5)
    clean = [x for x, _ in first]
    _overwrite_image(first.cache.path, 3, 3 * 16 * 16)
    opened = make(own_tree, cache="disk", cache_dir=tmp_path / "c", shuffle=False, batch_size=5)
    assert not opened.cache.built
    with pytest.raises(CacheCorruptedError, match=r"image 3 \(.*b/img_000\.png\)"):
        list(opened)
    assert not opened.cache.path.with_suffix(".json").exists()
    rebuilt = make(own_tree, cache="disk", cache_dir=tmp_path / "c", shuffle=False, batch_size=5)
    assert rebuilt.cache.built
    assert all(torch.equal(a, b) for a, b in zip([x for x, _ in rebuilt], clean, strict=True))


def test_verify_checks_every_image_at_once(own_tree, tmp_path):
    from gpuaug.data.cache import CacheCorruptedError

    first = make(own_tree, cache="disk", cache_dir=tmp_path / "c")
    first.cache.verify()  # intact
    _overwrite_image(first.cache.path, 4, 3 * 16 * 16)
    opened = make(own_tree, cache="disk", cache_dir=tmp_path / "c")
    with pytest.raises(CacheCorruptedError, match="image 4"):
        opened.cache.verify()


def test_a_same_size_replacement_with_its_mtime_restored_is_not_served(tmp_path):
    import shutil

    import numpy as np
    from PIL import Image

    root = write_tree(tmp_path / "bmp", {"a": 2, "b": 2}, (16, 16), ext="bmp")
    first = make(root, cache="disk", cache_dir=tmp_path / "c", shuffle=False, batch_size=4)
    target = root / "a" / "img_000.bmp"
    other = tmp_path / "other.bmp"
    Image.fromarray(np.full((16, 16, 3), 7, dtype=np.uint8)).save(other)
    assert other.stat().st_size == target.stat().st_size
    st = target.stat()
    shutil.copyfile(other, target)  # same size, new pixels ...
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... old mtime (cp -p, rsync -a)
    assert target.stat().st_mtime_ns == st.st_mtime_ns and target.stat().st_size == st.st_size
    again = make(root, cache="disk", cache_dir=tmp_path / "c", shuffle=False, batch_size=4)
    assert again.cache.built
    assert torch.equal(torch.from_numpy(again.cache.images[0].copy()), again.dataset.load(0))
    assert not torch.equal(
        torch.from_numpy(again.cache.images[0].copy()),
        torch.from_numpy(first.cache.images[0].copy()),
    )


TAMPERED = {
    "failed_out_of_range": lambda m: {**m, "failed": [[999, "x"]]},
    "failed_negative": lambda m: {**m, "failed": [[-99, "x"]]},
    "failed_not_a_list": lambda m: {**m, "failed": "oops"},
    "failed_bad_item": lambda m: {**m, "failed": [[1]]},
    "checksums_short": lambda m: {**m, "checksums": m["checksums"][:-1]},
    "checksums_text": lambda m: {**m, "checksums": ["a"] * len(m["checksums"])},
    "shape_text": lambda m: {**m, "shape": "5x3"},
    "files_missing": lambda m: {k: v for k, v in m.items() if k != "files"},
    "a_list": lambda m: [m],
}


@pytest.mark.parametrize("tamper", [*TAMPERED, "not_json", "binary"])
def test_a_tampered_manifest_triggers_a_rebuild(own_tree, tmp_path, tamper):
    first = make(own_tree, cache="disk", cache_dir=tmp_path / "c")
    manifest_path = first.cache.path.with_suffix(".json")
    if tamper == "not_json":
        manifest_path.write_text("{'files': [")
    elif tamper == "binary":
        manifest_path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        manifest = json.loads(manifest_path.read_text())
        manifest_path.write_text(json.dumps(TAMPERED[tamper](manifest)))
    again = make(own_tree, cache="disk", cache_dir=tmp_path / "c")
    assert again.cache.built
    assert len(list(again)) == len(again)


def test_a_cache_dir_env_that_is_a_file_is_named(own_tree, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GPUAUG_CACHE_DIR", str(blocker))
    with pytest.raises(ValueError, match=r"\$GPUAUG_CACHE_DIR must be a folder .*a-file"):
        make(own_tree, cache="disk")


def test_a_cache_dir_argument_that_is_a_file_is_named(own_tree, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=r"`cache_dir` must be a folder .*which is a file"):
        make(own_tree, cache="disk", cache_dir=blocker)


def test_checksums_ignore_images_that_failed_to_decode(bad_tree, tmp_path):
    kwargs = {"cache": "disk", "cache_dir": tmp_path / "c", "on_error": "skip"}
    make(bad_tree, **kwargs)
    again = make(bad_tree, **kwargs)
    assert not again.cache.built
    rows = again.cache.images[[0, 1, 2]]
    again.cache._check_rows(np.arange(3), np.ascontiguousarray(rows))  # row 1 never decoded
    again.cache.verify()


def _dead_pid() -> int:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_a_killed_builders_temp_file_is_removed_by_the_next_build(own_tree, tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    import socket

    dead = _dead_pid()
    stale = [
        folder / f"0123abcd.u8.tmp-{dead}",
        folder / f"ab.u8.tmp-{socket.gethostname()}-{dead}",
    ]
    kept = [
        folder / f"0123abcd.u8.tmp-{os.getppid()}",  # a builder still running
        folder / f"0123abcd.u8.tmp-elsewhere-{dead}",  # another machine's builder
    ]
    for path in stale + kept:
        path.write_bytes(b"x" * 100)
    make(own_tree, cache="disk", cache_dir=folder)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert not list(folder.glob(f"*.tmp-*-{os.getpid()}"))  # nor the build's own
