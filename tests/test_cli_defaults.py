"""`gpuaug preview DIR` as the README words it: the book's preset into ./grid.png."""

from __future__ import annotations

import pytest
from PIL import Image

from gpuaug import cli


def test_preview_without_config_or_out_writes_grid_png_in_the_current_folder(
    image_tree, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["preview", str(image_tree), "--target-size", "16", "16", "--n", "4"]) == 0
    out, err = capsys.readouterr()
    grid = tmp_path / "grid.png"
    assert grid.is_file() and Image.open(grid).format == "PNG"
    assert f"wrote {grid.resolve()}" in out


def test_preview_without_config_says_which_preset_it_shows(image_tree, tmp_path, capsys):
    target = tmp_path / "g.png"
    assert cli.main(["preview", str(image_tree), "--out", str(target), "--n", "2"]) == 0
    err = capsys.readouterr().err
    assert f"no --config given: showing the {cli.PREVIEW_DEFAULT_CONFIG} preset" in err


def test_preview_with_config_prints_no_default_note(image_tree, tmp_path, capsys):
    target = tmp_path / "g.png"
    args = ["preview", str(image_tree), "--config", "none", "--out", str(target), "--n", "2"]
    assert cli.main(args) == 0
    assert "no --config given" not in capsys.readouterr().err


def test_a_command_is_one_function_listed_in_commands(monkeypatch, capsys):
    def add_hello(commands):
        hello = commands.add_parser("hello", help="say hello")
        hello.add_argument("name")
        hello.set_defaults(handler=lambda args: print(f"hello {args.name}") or 0)

    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, add_hello])
    assert cli.main(["hello", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"


def test_preview_with_a_recipe_writes_its_grid_and_prints_the_steps(image_tree, tmp_path, capsys):
    target = tmp_path / "recipe.png"
    args = ["preview", str(image_tree), "--recipe", "imagenet_rrc", "--out", str(target)]
    assert cli.main([*args, "--n", "2", "--rows", "1", "--target-size", "24", "32"]) == 0
    out = capsys.readouterr().out
    with Image.open(target) as image:
        assert image.format == "PNG" and image.width > 3 * 224  # 224 px tiles, 3 columns
    assert f"wrote {target.resolve()}" in out
    assert "TrivialAugmentWide" in out and "RandomErasing" in out and "Mixup" in out


def test_preview_refuses_a_config_and_a_recipe_together(image_tree, tmp_path, capsys):
    args = ["preview", str(image_tree), "--recipe", "imagenet_rrc", "--config", "none"]
    assert cli.main([*args, "--out", str(tmp_path / "g.png")]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_preview_names_an_unknown_recipe(image_tree, tmp_path, capsys):
    args = ["preview", str(image_tree), "--recipe", "no_such_recipe"]
    assert cli.main([*args, "--out", str(tmp_path / "g.png")]) == 2
    assert "no_such_recipe" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", [[], ["--recipe", "imagenet_rrc"]])
def test_both_previews_name_a_grid_they_cannot_write(image_tree, tmp_path, capsys, recipe):
    out = tmp_path / "taken"
    out.mkdir()  # a folder where the PNG should go
    args = ["preview", str(image_tree), *recipe, "--out", str(out), "--n", "2", "--rows", "1"]
    assert cli.main([*args, "--target-size", "24", "32"]) == cli.EXIT_RUNTIME
    assert f"cannot write {str(out)!r}" in capsys.readouterr().err
