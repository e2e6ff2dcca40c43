"""``save_to_dir`` (`gpuaug.keras.saving.BatchSaver`): no file lost, no error silent or stuck."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gpuaug
from gpuaug.keras.saving import BatchSaver, SaveToDirError

_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import gpuaug

    x = np.random.default_rng(0).integers(0, 255, (50, 16, 16, 3)).astype(np.uint8)
    gen = gpuaug.ImageDataGenerator(device="cpu", rotation_range=10).flow(
        x, np.arange(50), batch_size=5, save_to_dir=sys.argv[1]
    )
    for _ in range(len(gen)):  # Keras style: next() for len(gen) steps, no flush() at the end
        next(gen)
    """
)


def _flow(x: np.ndarray, folder: Path, **kwargs):
    return gpuaug.ImageDataGenerator(device="cpu").flow(
        x, np.arange(len(x)), shuffle=False, save_to_dir=folder, **kwargs
    )


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, 6, 6, 3)).astype(np.uint8)


def _run_script(folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(gpuaug.__file__).parents[1])}
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_script_ending_without_flush_keeps_every_file_and_exits_cleanly(tmp_path):
    done = _run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.iterdir())) == 50


@pytest.mark.slow
@pytest.mark.parametrize("run", range(5))
def test_exit_without_flush_is_reliable(tmp_path, run):
    done = _run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.iterdir())) == 50


def test_the_files_of_an_epoch_are_written_when_it_ends(tmp_path):
    g = _flow(_images(12), tmp_path, batch_size=4)
    list(g)  # no flush(): the loader waits for the writer at the end of the epoch
    assert len(list(tmp_path.iterdir())) == 12


def test_an_unwritable_folder_raises_at_the_next_step_naming_the_file(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    g = _flow(_images(12), folder, batch_size=4)
    next(g)
    g.saver.wait()
    shutil.rmtree(folder)
    next(g)  # its batch fails to write, in the background
    g.saver.wait()
    with pytest.raises(SaveToDirError, match=r"cannot write '.*out/_[4-7]_\d+\.png': FileNotFound"):
        next(g)


def test_a_write_error_at_the_last_step_is_raised_at_the_epoch_end(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    g = _flow(_images(4), folder, batch_size=4)
    it = iter(g)
    shutil.rmtree(folder)  # before the batch is handed out: its writes fail, whatever the timing
    next(it)
    with pytest.raises(SaveToDirError, match="4 image"):
        next(it)  # the epoch ends: its last batch could not be written


def test_a_reported_error_is_cleared_and_a_recreated_folder_is_written_again(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    g = _flow(_images(8), folder, batch_size=4)
    shutil.rmtree(folder)
    with pytest.raises(SaveToDirError):
        list(g)
    folder.mkdir()
    list(g)  # a later epoch: no stale error, every file written
    assert len(list(folder.iterdir())) == 8


def test_next_goes_on_after_a_reported_error(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    g = _flow(_images(12), folder, batch_size=4)
    next(g)
    g.saver.wait()
    shutil.rmtree(folder)
    next(g)  # its batch fails to write, in the background
    g.saver.wait()
    with pytest.raises(SaveToDirError):
        next(g)
    folder.mkdir()
    x, _ = next(g)  # the step after the report is served, and written
    g.saver.flush()
    assert x.shape[0] == 4 and len(list(folder.iterdir())) == 4


def test_a_full_disk_leaves_no_partial_file_and_names_the_file_and_cause(tmp_path, monkeypatch):
    real_save = Image.Image.save

    def fill_up(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        with open(fp, "r+b") as f:  # a truncated file, as a full disk leaves it
            f.truncate(10)
        raise OSError(errno.ENOSPC, "No space left on device")

    saver = BatchSaver(tmp_path, "p", seed=0)
    monkeypatch.setattr(Image.Image, "save", fill_up)
    saver.submit(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]))
    with pytest.raises(SaveToDirError, match=r"p_0_\d+\.png': OSError: .*No space left") as err:
        saver.flush()
    assert isinstance(err.value.__cause__, OSError) and err.value.lost == 2
    assert list(tmp_path.iterdir()) == []
    saver.close()


def test_a_taken_name_is_drawn_again_never_overwritten(tmp_path):
    saver = BatchSaver(tmp_path, "p", hash_range=3, seed=0)
    for _ in range(3):
        saver.submit(torch.rand(1, 3, 4, 4), torch.tensor([7]))
    saver.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["p_7_0.png", "p_7_1.png", "p_7_2.png"] and saver.overwritten == 0


def test_overwriting_when_every_name_is_taken_is_counted_and_warned(tmp_path):
    saver = BatchSaver(tmp_path, "p", hash_range=1, seed=0)
    saver.submit(torch.rand(1, 3, 4, 4), torch.tensor([7]))
    saver.submit(torch.rand(1, 3, 4, 4), torch.tensor([7]))
    saver.wait()
    with pytest.warns(UserWarning, match="1 file.* overwritten"):
        saver.close()
    assert saver.overwritten == 1 and [p.name for p in tmp_path.iterdir()] == ["p_7_0.png"]


def test_written_files_use_keras_names_and_no_temp_file_remains(tmp_path):
    g = _flow(_images(4), tmp_path, batch_size=4, save_prefix="aug", save_format="jpg")
    list(g)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 4 and all(re.fullmatch(r"aug_[0-3]_\d{1,4}\.jpg", n) for n in names)
    with Image.open(tmp_path / names[0]) as img:
        assert img.format == "JPEG"
