"""The fused kernels' budgets on an H100 / H200, checked without a GPU.

`benchmarks.sm90` compiles the kernels for sm_90 through Triton's own JIT path (a stand-in
driver; ptxas and cuobjdump ship with triton) exactly as `apply` would launch them at
150 x 150, batch 256, and reads the cubin. The budgets (`benchmarks.sm90.INSTRUCTION_BUDGETS`,
`MAX_REGISTERS`) are what the kernel model (`benchmarks.kernel_model`) assumes; a change that
breaks one changes the model's numbers and must say so.

Compiling needs a process without ``TRITON_INTERPRET=1`` (the test suite's setting), so it runs
once per module in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton.backends.nvidia")
import triton  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ from the checkout
from benchmarks import sm90  # noqa: E402

DEFAULT = ["book_fp32", "book_bf16", "reflect_fp32", "channel_shift_fp32"]
OTHERS = [name for name in sm90.VARIANTS if name not in DEFAULT]


def _compile(names: list[str]) -> dict[str, list[dict]]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.sm90", *names],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows: dict[str, list[dict]] = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        rows.setdefault(row["variant"], []).append(row)
    return rows


@pytest.fixture(scope="module")
def compiled() -> dict[str, list[dict]]:
    return _compile(DEFAULT)


def _main(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["name"] == "_augment_kernel"]


def test_every_variant_launches_the_prologue_then_the_main_kernel(compiled):
    for name, rows in compiled.items():
        assert rows[0]["name"] == "_matrix_kernel", name
        passes = [r["pass"] for r in _main(rows)]
        assert passes == ([1, 2] if name == "channel_shift_fp32" else [0]), name


def test_the_main_kernel_fits_96_registers_without_spilling(compiled):
    for name, rows in compiled.items():
        for row in _main(rows):
            assert row["registers"] <= sm90.MAX_REGISTERS, (name, row["registers"])
            assert row["stack_bytes"] == row["spill_stores"] == row["spill_loads"] == 0, name


def test_the_main_kernel_is_straight_line_code(compiled):
    # no loop: each thread executes each SASS instruction at most once, so the static count
    # per pixel is the executed count the model uses
    for name, rows in compiled.items():
        assert not any(row["loops"] for row in _main(rows)), name


def test_the_main_kernel_stays_within_its_instruction_budget(compiled):
    for name, rows in compiled.items():
        for row in _main(rows):
            budget = sm90.INSTRUCTION_BUDGETS[name]
            # budgets of triton 3.8 (3.6 compiles reflect and wrap longer: docs/kernel.md)
            got = row["instructions_per_pixel"]
            assert got <= budget, (name, got, f"triton {triton.__version__}")


def test_the_matrix_is_read_once_per_thread_not_recomputed(compiled):
    # 6 matrix loads per thread and the 12 taps of each of its pixels: no table lookups or
    # float64 trigonometry left in the per-pixel kernel
    row = _main(compiled["book_fp32"])[0]
    assert row["global_loads"] == 6 + 12 * row["pixels_per_thread"]
    assert row["fma"] == 0  # no float64 sin / cos (their polynomials are DFMA chains)


def test_each_output_value_is_one_store_of_its_dtype(compiled):
    # one 4-byte (float32) or 2-byte (bfloat16) store per pixel per plane; wider vector stores
    # would spread each warp's gathers over 4x the lines (benchmarks.kernel_model)
    for name, width in (("book_fp32", "32"), ("book_bf16", "16")):
        row = _main(compiled[name])[0]
        assert row["stores"] == {width: 3 * row["pixels_per_thread"]}, (name, row["stores"])


def test_no_multiply_add_is_contracted_except_reflects_exact_remainder(compiled):
    # enable_fp_fusion=False: the PTX has no fma but the one that each `%` (reflect's fmod)
    # lowers to, two per pixel (x and y)
    for name, rows in compiled.items():
        for row in _main(rows):
            want = 2 * row["pixels_per_thread"] if name == "reflect_fp32" else 0
            assert row["ptx_fma"] == want, (name, row["ptx_fma"])


@pytest.mark.slow
def test_the_other_variants_stay_within_their_budgets():
    for name, rows in _compile(OTHERS).items():
        for row in _main(rows):
            assert row["registers"] <= sm90.MAX_REGISTERS, name
            assert row["stack_bytes"] == 0 and not row["loops"], name
            assert row["instructions_per_pixel"] <= sm90.INSTRUCTION_BUDGETS[name], name
            assert row["ptx_fma"] == 0, name


_HOST = """
import json, sys
from benchmarks import sm90
from gpuaug.augment.backends import triton as fused
through = []  # launches through Triton's JITFunction.run (kernel[grid](...))
for kernel in (fused._matrix_kernel, fused._augment_kernel):
    kernel.run = (lambda run: lambda *a, **k: through.append(1) or run(*a, **k))(kernel.run)
batches = sm90.recorded_launches("book_fp32", 3)
through_triton = len(through)
from triton import knobs
from gpuaug.augment.module import GPUAugment
config, images, dtype, fmt = sm90._variant_inputs("book_fp32", 8)
with sm90._stand_in_launches():
    aug = GPUAugment(config, dtype, memory_format=fmt, backend="triton")
    aug(images)
    hook = lambda metadata: None
    knobs.runtime.launch_enter_hook.add(hook)  # a profiler's hook: it reads the launch metadata
    sm90._Launcher.RECORD, before = [], len(through)
    aug(images)
    hooked, hooked_through_triton = sm90._Launcher.RECORD, len(through) - before
    knobs.runtime.launch_enter_hook.remove(hook)
    sm90._Launcher.RECORD = None
same = []
for first, later in zip(batches[0], batches[2]):
    # name, grid, stream, function, packed metadata, launch metadata, hooks, then the arguments
    plain = lambda call: [type(v).__name__ if hasattr(v, "data_ptr") else v
                          for i, v in enumerate(call) if i != 7]
    same.append(plain(first) == plain(later) and len(first) == len(later))
print(json.dumps({"same": same, "kernels": [c[0] for c in batches[2]],
                  "through_triton": through_triton,
                  "hooked": [call[7] is not None for call in hooked],
                  "hooked_through_triton": hooked_through_triton,
                  "calls": sm90.steady_state_calls("book_fp32"),
                  "host": sm90.host_seconds("book_fp32", 256, repeat=100)}))
"""


@pytest.fixture(scope="module")
def host() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", _HOST], env=env, cwd=root, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_later_batch_hands_the_launcher_what_tritons_own_launch_does(host):
    # the third batch launches the kept compiled kernels directly; the first went through
    # kernel[grid](...): the launcher gets the same grid, function, metadata and arguments
    assert host["kernels"] == ["_matrix_kernel", "_augment_kernel"]
    assert host["same"] == [True, True]
    assert host["through_triton"] == 2  # the first batch's two launches; none after it


def test_a_launch_hook_gets_the_launch_metadata_on_the_kept_path(host):
    # with a hook set (a profiler's), the kept launch builds the metadata Triton would
    assert host["hooked"] == [True, True] and host["hooked_through_triton"] == 0


def test_a_steady_state_call_runs_a_bounded_number_of_python_calls(host):
    # counted, not timed: the Python functions a planned GPUAugment call enters. 9 of gpuaug's
    # (forward, the plan lookup, 3 for the draws, the plan, its rows, its run, the launches),
    # 1 of Triton's (the active driver) and 4 of torch's (nn.Module's call, is_compiling) when
    # this was written; through Triton's compiled-kernel runner and the per-call checks it was
    # 37 / 18 / 12.
    calls = host["calls"]
    assert calls["launches"] == 2, calls
    assert calls["by_file"].get("gpuaug", 0) <= 12, calls
    assert calls["by_file"].get("triton", 0) <= 2, calls
    assert calls["by_file"].get("torch", 0) <= 6, calls
    # the draws, the output and the prologue's table: no other torch operator per call
    assert calls["torch_ops"] == ["rand", "empty", "empty"], calls


def test_the_host_time_of_a_batch_stays_within_its_budget(host):
    # gpuaug's and Triton's Python per GPUAugment call at B = 256 (the draws' torch.rand and
    # the output's torch.empty excluded), as a multiple of that torch.empty in the same run: a
    # ratio, not a wall-clock threshold (sm90.host_seconds; docs/kernel.md, host time).
    # With the output's block cached as a CUDA batch's is, the goal of 30 us is ~9 torch.empty
    # of ~3.4 us on the 2-core machine this was written on: measured 8-9 there when quiet and
    # up to 19 with twice as many busy processes as cores. The bound, 25, leaves that margin
    # for a loaded machine; the code before the per-module plans measured 20-21 quiet and 25-33
    # loaded, so this bound alone would not catch a return to it: the count above is the
    # sharper guard. With the default (mmap'd) output the Python measured 2-6 x the
    # torch.empty (before: 6-12).
    h = host["host"]
    assert h["python"] / h["empty"] <= 15, h
    cached = h["cached"]
    if cached is not None:
        assert cached["python"] / cached["empty"] <= 25, h


def test_an_rgbx_source_takes_one_load_per_tap_for_every_channel():
    row = _main(_compile(["book_fp32_rgbx"])["book_fp32_rgbx"])[0]
    assert row["global_loads"] == 6 + 4 * row["pixels_per_thread"]  # 4 taps, not 12
    assert row["registers"] <= sm90.MAX_REGISTERS and row["stack_bytes"] == 0
    assert row["instructions_per_pixel"] <= sm90.INSTRUCTION_BUDGETS["book_fp32_rgbx"]


_AHEAD = """
import json
from benchmarks import sm90
print(json.dumps([sm90.compile_ahead_then_launch("constant_fp32", ahead=False),
                  sm90.compile_ahead_then_launch("wrap_fp32", ahead=True),
                  sm90.compile_ahead_then_launch("book_fp32_rgbx", ahead=True)]))
"""


def test_kernels_compiled_ahead_leave_nothing_to_compile_at_the_first_batch():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", _AHEAD], env=env, cwd=root, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    cold, warm, rgbx = json.loads(done.stdout.splitlines()[-1])
    assert cold["ahead"] == 0 and cold["compiled_at_launch"] == 2  # the prologue, the pass
    assert warm == {"ahead": 2, "compiled_at_launch": 0}
    assert rgbx == {"ahead": 2, "compiled_at_launch": 0}  # a loader's RGBX batches too
