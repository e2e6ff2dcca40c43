"""The built wheel: presets and the benchmark harness ship inside the package.

Builds the wheel from this checkout (``pip wheel --no-deps --no-build-isolation``), unpacks it
into a temporary folder and imports gpuaug from there in a subprocess whose working folder is
outside the checkout, as an installed package is used. ``.ci/run`` does the full version (a
fresh venv, ``pip install`` of the wheel, the console script).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"cannot build a wheel here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("gpuaug-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site-packages")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def run_installed(site: Path, cwd: Path, code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_wheel_ships_every_preset_and_the_harness_without_results(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for preset in (REPO / "configs").glob("*.yaml"):
        assert f"gpuaug/presets/{preset.name}" in names
    for module in ("__init__", "bench", "data", "pipelines", "report"):
        assert f"gpuaug/benchmarks/{module}.py" in names
    assert not [n for n in names if "results" in n]
    assert not [n for n in names if n.startswith(("configs/", "benchmarks/", "tests/"))]


def test_wheel_ships_every_module_of_the_package(wheel):
    # pyproject.toml lists the sub-packages by hand (the presets and the harness are mapped
    # in from other folders): a new sub-package that is not listed would be left out.
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "gpuaug").rglob("*.py")}
    assert modules - names == set()


_PROBE = """
import contextlib, io, json, sys
import gpuaug, gpuaug.augment.config as c
from gpuaug import cli
from gpuaug.benchmarks import bench
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = cli.main(["bench", "--help"])
    except SystemExit as exit_:  # argparse's --help
        code = exit_.code
print(json.dumps({
    "module": gpuaug.__file__, "preset_dir": str(c.preset_dir()), "presets": c.preset_names(),
    "rotation": c.load_config("chollet_cats_dogs").rotation_range,
    "bench_code": code, "bench_help": out.getvalue(),
    "results_dir": str(bench.default_results_dir()),
}))
"""


@pytest.fixture(scope="module")
def probe(installed, tmp_path_factory) -> dict:
    """One subprocess (importing torch is slow) that uses the unpacked wheel from elsewhere."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    result = run_installed(installed, cwd, _PROBE)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    info["cwd"] = str(cwd)
    return info


def test_installed_package_loads_a_preset_from_outside_the_checkout(installed, probe):
    assert probe["module"].startswith(str(installed))
    assert Path(probe["preset_dir"]) == installed / "gpuaug" / "presets"
    assert "chollet_cats_dogs" in probe["presets"]
    assert probe["rotation"] == 40


def test_installed_bench_command_runs_the_packaged_harness(probe):
    assert probe["bench_code"] == 0
    assert "--num-images" in probe["bench_help"]


def test_installed_bench_writes_results_in_the_working_folder(probe):
    assert Path(probe["results_dir"]) == Path(probe["cwd"]) / "gpuaug-bench"


def test_the_harness_imports_its_own_modules_relatively():
    # In the wheel the harness is `gpuaug.benchmarks`: an absolute `benchmarks` import works in
    # the checkout (and in every other test) but fails once installed.
    import ast

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    absolute = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            absolute += [
                f"{path.name}:{node.lineno}" for n in names if n.split(".")[0] == "benchmarks"
            ]
    assert absolute == []


def _metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(name).decode()


def test_wheel_ships_its_license_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "gpuaug/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in _metadata(wheel)


def test_wheel_metadata_names_an_author_and_says_what_runs_where(wheel):
    metadata = _metadata(wheel)
    summary = next(line for line in metadata.splitlines() if line.startswith("Summary: "))
    assert "by kornia" not in summary and "Triton kernel on CUDA" in summary
    assert "Author: The gpuaug developers" in metadata
