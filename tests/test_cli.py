"""The `gpuaug` command line: each command through its entry point, plus its error paths.

Subprocess tests (`python -m gpuaug.cli`, and once the installed `gpuaug` script) check the
real entry points; the cheaper error and help checks call `gpuaug.cli.main` in-process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import gpuaug
from gpuaug import cli, load_config
from gpuaug.preview import grid_layout

REPO = Path(gpuaug.__file__).resolve().parent.parent


def run_cli(*args: str, executable: list[str] | None = None) -> subprocess.CompletedProcess:
    command = executable or [sys.executable, "-m", "gpuaug.cli"]
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    env.pop("GPUAUG_TRACEBACK", None)
    return subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, timeout=120, env=env
    )


def write_bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("rotation_range: 10\nzoom_range: -1\n")
    return path


# --------------------------------------------------------------------------- subprocess


def test_inspect_prints_classes_counts_and_steps_per_subset(image_tree):
    result = run_cli(
        "inspect",
        image_tree,
        "--config",
        "chollet_cats_dogs",
        "--validation-split",
        "0.25",
        "--batch-size",
        "2",
        "--target-size",
        "16",
        "16",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Classes (2): cats, dogs" in out
    assert "cats   5" in out and "dogs   3" in out
    assert "training    7 samples, 4 steps per epoch" in out
    assert "validation  1 samples, 1 step per epoch" in out
    assert "Bad files: none" in out
    assert "Augmentation (chollet_cats_dogs):" in out


def test_inspect_full_lists_corrupt_and_truncated_files_with_reasons(make_tree):
    root = make_tree({"a": 3, "b": 2}, size=(24, 24))
    (root / "a" / "broken.jpg").write_bytes(b"this is not a jpeg")
    whole = (root / "b" / "img_000.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    result = run_cli("inspect", root, "--full", "--target-size", "16", "16")
    assert result.returncode == 0, result.stderr
    bad = result.stdout.split("Bad files (2", 1)[1]
    assert "a/broken.jpg: " in bad
    assert "b/truncated.png: " in bad
    assert "on_error='raise', stops at them" in bad  # what the loaders do by default
    # no --config: none here, and it says what preview shows without one
    assert "Augmentation (no --config: none; `gpuaug preview` shows chollet_cats_dogs" in bad
    assert "a      3" in result.stdout  # the two bad files are not counted


def test_missing_folder_exits_2_naming_the_folder(tmp_path):
    missing = tmp_path / "no_such_folder"
    result = run_cli("inspect", missing)
    assert result.returncode == 2
    assert result.stderr.startswith("gpuaug: error: ")
    assert "no_such_folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_field_exits_2_naming_the_field(image_tree, tmp_path):
    config = write_bad_config(tmp_path)
    result = run_cli("preview", image_tree, "--config", config, "--out", tmp_path / "g.png")
    assert result.returncode == 2
    assert "gpuaug: error: " in result.stderr
    assert "zoom_range" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "g.png").exists()


def test_preview_png_has_layout_size_same_for_same_seed_and_differs_by_seed(image_tree, tmp_path):
    def preview(seed: int, name: str) -> Path:
        out = tmp_path / name
        args = ["--n", "4", "--rows", "2", "--target-size", "16", "16", "--seed", seed]
        result = run_cli("preview", image_tree, "--config", "strong", "--out", out, *args)
        assert result.returncode == 0, result.stderr
        return out

    first, again, other = preview(0, "a.png"), preview(0, "b.png"), preview(1, "c.png")
    with Image.open(first) as image:
        image.verify()
    with Image.open(first) as image:
        assert image.format == "PNG"
        assert image.size == grid_layout(4, 2, (16, 16), load_config("strong")).size
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_installed_console_script_runs_inspect(image_tree):
    script = shutil.which("gpuaug") or str(Path(sys.executable).parent / "gpuaug")
    if not Path(script).exists():
        pytest.skip("the gpuaug console script is not installed")
    result = run_cli("inspect", image_tree, "--target-size", "16", "16", executable=[script])
    assert result.returncode == 0, result.stderr
    assert "Classes (2): cats, dogs" in result.stdout


@pytest.mark.skipif(
    not (REPO / "benchmarks" / "bench.py").is_file(), reason="benchmarks/bench.py not written"
)
def test_bench_forwards_arguments_to_the_harness():
    result = run_cli("bench", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
    assert "gpuaug: error" not in result.stderr


# --------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("command", ["inspect", "preview"])
def test_command_help_shows_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"gpuaug {command} " in out


def test_main_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("inspect", "preview", "bench"):
        assert command in out


def test_no_command_prints_usage_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "usage: gpuaug" in capsys.readouterr().err


def test_preview_of_missing_folder_exits_2_naming_it(tmp_path, capsys):
    code = cli.main(
        ["preview", str(tmp_path / "gone"), "--config", "none", "--out", str(tmp_path / "g.png")]
    )
    assert code == 2
    assert "gone" in capsys.readouterr().err


def test_shard_of_missing_folder_exits_2_naming_it(tmp_path, capsys):
    code = cli.main(["shard", str(tmp_path / "gone"), str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("gpuaug: error: ") and "gone" in err and "Traceback" not in err


def test_the_help_names_every_command():
    text = cli.build_parser().format_help()
    assert all(name in text for name in ("inspect", "preview", "bench", "shard"))


def test_inspect_with_invalid_config_field_exits_2_naming_it(image_tree, tmp_path, capsys):
    code = cli.main(["inspect", str(image_tree), "--config", str(write_bad_config(tmp_path))])
    assert code == 2
    assert "zoom_range" in capsys.readouterr().err


def test_missing_config_file_exits_2_naming_it(image_tree, tmp_path, capsys):
    code = cli.main(["inspect", str(image_tree), "--config", str(tmp_path / "nope.yaml")])
    assert code == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_unknown_preset_exits_2(image_tree, capsys):
    assert cli.main(["inspect", str(image_tree), "--config", "no_such_preset"]) == 2
    assert "no_such_preset" in capsys.readouterr().err


def test_non_positive_batch_size_exits_2(image_tree, capsys):
    assert cli.main(["inspect", str(image_tree), "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err


def test_preview_into_missing_output_folder_exits_2(image_tree, tmp_path, capsys):
    out = tmp_path / "missing" / "g.png"
    code = cli.main(["preview", str(image_tree), "--config", "none", "--out", str(out)])
    assert code == 2
    assert "missing" in capsys.readouterr().err


def test_bench_without_checkout_exits_2_with_clear_message(tmp_path, monkeypatch, capsys):
    fake_package = tmp_path / "site-packages" / "gpuaug"
    fake_package.mkdir(parents=True)
    monkeypatch.setattr(gpuaug, "__file__", str(fake_package / "__init__.py"))
    assert cli.main(["bench", "--quick"]) == 2
    assert "benchmarks/ not found next to the package" in capsys.readouterr().err


# --------------------------------------------------------------------------- hardening (12)


def test_inspect_follow_links_counts_what_the_loader_finds(make_tree, capsys):
    root = make_tree({"cats": 3, "dogs": 3}, size=(8, 8))
    elsewhere = make_tree({"more": 4}, size=(8, 8)) / "more"
    (root / "cats" / "linked").symlink_to(elsewhere, target_is_directory=True)
    common = ["inspect", str(root), "--target-size", "8", "8"]
    assert cli.main(common) == 0
    assert "total  6" in capsys.readouterr().out
    assert cli.main([*common, "--follow-links"]) == 0
    out = capsys.readouterr().out
    assert "cats   7" in out and "total  10" in out
    loader = gpuaug.flow_from_directory(
        root, target_size=(8, 8), follow_links=True, device="cpu", progress=False
    )
    assert len(loader.dataset) == 10


def test_preview_with_too_many_tiles_exits_2_before_loading(image_tree, tmp_path, capsys):
    args = ["preview", str(image_tree), "--config", "none", "--out", str(tmp_path / "g.png")]
    assert cli.main([*args, "--n", "100000", "--rows", "1"]) == 2
    err = capsys.readouterr().err
    assert "`n` must be at most 1024 augmented tiles" in err
    assert not (tmp_path / "g.png").exists()


def test_preview_with_a_grid_too_wide_exits_2_naming_the_pixels(image_tree, tmp_path, capsys):
    args = ["preview", str(image_tree), "--config", "none", "--out", str(tmp_path / "g.png")]
    assert cli.main([*args, "--n", "1024", "--rows", "1", "--target-size", "200", "200"]) == 2
    assert "megapixels, more than 50" in capsys.readouterr().err


def test_inspect_reports_a_fifo_as_not_a_regular_file(make_tree, capsys):
    root = make_tree({"cats": 2}, size=(8, 8))
    os.mkfifo(root / "cats" / "pipe.png")
    assert cli.main(["inspect", str(root), "--target-size", "8", "8"]) == 0
    out = capsys.readouterr().out
    assert "pipe.png: not a regular file (a FIFO / named pipe)" in out
    assert "empty" not in out
