"""Start-up: `import gpuaug` and `gpuaug --help` / `--version` do not import torch.

Times are compared as a ratio to `python -c pass` measured in the same test, never against a
wall-clock threshold; the import checks count modules, which cannot be noisy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import gpuaug

HEAVY = ("torch", "torchvision", "kornia", "numpy", "PIL", "triton")


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )


def _heavy_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = _python(probe)
    assert result.returncode == 0, result.stderr
    return eval(result.stdout.strip().splitlines()[-1])


def test_import_gpuaug_imports_no_heavy_module():
    assert _heavy_after("import gpuaug") == []


def test_cli_help_and_version_import_no_heavy_module():
    for flag in ("--help", "--version"):
        code = (
            "import sys, contextlib, io\nfrom gpuaug import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try: cli.main([{flag!r}])\n    except SystemExit: pass"
        )
        assert _heavy_after(code) == [], flag


def test_cli_inspect_does_not_import_the_augmentation_stack():
    code = "import gpuaug.cli"
    assert _heavy_after(code) == []
    probe = _python(
        "import sys, tempfile, pathlib\n"
        "from PIL import Image\n"
        "root = pathlib.Path(tempfile.mkdtemp())\n"
        "(root / 'a').mkdir()\n"
        "Image.new('RGB', (8, 8)).save(root / 'a' / 'x.png')\n"
        "from gpuaug import cli\n"
        "assert cli.main(['inspect', str(root), '--config', 'chollet_cats_dogs']) == 0\n"
        "print(sorted(m for m in sys.modules if m.startswith(('kornia', 'gpuaug.augment.m',"
        " 'gpuaug.loader.gpu', 'triton'))))"
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().splitlines()[-1] == "[]"


def test_lazy_names_are_the_eager_ones():
    from gpuaug.loader.factories import flow_from_directory

    assert gpuaug.flow_from_directory is flow_from_directory
    for name in gpuaug.__all__:
        assert getattr(gpuaug, name) is not None, name
    assert set(gpuaug.__all__) <= set(dir(gpuaug))
    assert {"augment", "data", "loader", "keras", "device"} <= set(dir(gpuaug))


def test_star_import_gives_every_public_name():
    namespace: dict = {}
    exec("from gpuaug import *", namespace)
    assert set(gpuaug.__all__) <= set(namespace)


def test_unknown_attribute_raises_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'flow_from_dir'"):
        gpuaug.flow_from_dir  # noqa: B018


def _best_of(argv: list[str], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, timeout=120, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def test_version_starts_within_a_few_interpreter_starts():
    """`gpuaug --version` costs a few bare interpreter starts, not torch's import (which
    is ~100 interpreter starts)."""
    bare = _best_of([sys.executable, "-c", "pass"])
    version = _best_of([sys.executable, "-m", "gpuaug.cli", "--version"])
    assert version / bare < 15, (version, bare)
