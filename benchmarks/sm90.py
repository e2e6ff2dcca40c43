"""Compile the fused kernels for an H100 / H200 (sm_90) on a machine without a GPU, and read them.

The kernels of `gpuaug.augment.backends.triton` are compiled through Triton's own JIT path
(``JITFunction.warmup``, the same binding, specialisation and cache as a launch on the GPU) by
a stand-in driver that reports an sm_90 target and launches nothing. So the cubin read here is
the one a first launch with these arguments on an H100 / H200 would build. ``ptxas``,
``cuobjdump`` and ``nvdisasm`` ship inside the triton wheel; nothing here needs CUDA.

What it reads from a compiled kernel (`KernelStats`): registers per thread, spill stores /
loads and stack frame (``cuobjdump -res-usage``), the SASS instruction counts (total, global
loads, global stores by width, FMAs), and whether the SASS has a backward branch (a loop: then
the static count is not the executed count).

Use it in a fresh interpreter (``TRITON_INTERPRET`` must be unset before triton is imported):
`compile_variant` swaps the driver for the duration of a call, and the test suite runs it in a
subprocess (`main` prints one JSON line per kernel)::

    python -m benchmarks.sm90 book_fp32 book_bf16

Also `host_seconds`: the host time of a ``GPUAugment`` call whose launches go all the way
through Triton (argument binding or the kept compiled kernel, launch metadata, the launcher)
to a stand-in launcher that does nothing, and `recorded_launches`: what that launcher is
handed, to check that the kept-kernel launch passes what Triton's own path passes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BOOK",
    "INSTRUCTION_BUDGETS",
    "MAX_REGISTERS",
    "VARIANTS",
    "KernelStats",
    "compile_ahead_then_launch",
    "compile_variant",
    "host_seconds",
    "recorded_launches",
    "main",
    "sass_stats",
    "steady_state_calls",
    "variant_stats",
]


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


@dataclass(frozen=True)
class KernelStats:
    """What one compiled sm_90 kernel costs, read from its cubin.

    Attributes:
        name: The kernel's name.
        registers: Registers per thread.
        stack_bytes: Stack frame per thread (0: nothing spilled to local memory).
        spill_stores: Spill store instructions (``STL``) in the SASS.
        spill_loads: Spill load instructions (``LDL``) in the SASS.
        instructions: SASS instructions of the kernel, ``NOP`` padding excluded.
        global_loads: ``LDG`` instructions.
        stores: ``STG`` instructions by width in bits (``{128: 3}``: three 16-byte stores).
        fma: ``FFMA`` / ``DFMA`` instructions.
        loops: True when the SASS branches backwards (a loop other than the final self-branch).
        num_warps: Warps per program.
        pixels_per_thread: Output pixels each thread writes (BLOCK / (32 num_warps)).
    """

    name: str
    registers: int
    stack_bytes: int
    spill_stores: int
    spill_loads: int
    instructions: int
    global_loads: int
    stores: dict[int, int]
    fma: int
    loops: bool
    num_warps: int
    pixels_per_thread: float

    @property
    def instructions_per_pixel(self) -> float:
        """SASS instructions per output pixel (the kernel is straight-line when ``loops`` is
        False: each thread executes each instruction once, at most)."""
        return self.instructions / self.pixels_per_thread


_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def sass_stats(cubin: bytes, *, num_warps: int, block: int) -> KernelStats:
    """Read registers, spills and the SASS instruction mix of one kernel's cubin."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        res = subprocess.run(
            [_tool("cuobjdump"), "-res-usage", str(path)], capture_output=True, text=True
        ).stdout
        sass = subprocess.run(
            [_tool("cuobjdump"), "-sass", str(path)], capture_output=True, text=True
        ).stdout
    name = re.search(r"Function (\w+)", res).group(1)
    registers = int(re.search(r"REG:(\d+)", res).group(1))
    stack = int(re.search(r"STACK:(\d+)", res).group(1))
    counts = {"instructions": 0, "LDG": 0, "STL": 0, "LDL": 0, "FMA": 0}
    stores: dict[int, int] = {}
    loops = False
    for match in _SASS_LINE.finditer(sass):
        address = int(match.group(1), 16)
        op = match.group(3)
        base = op.split(".")[0]
        if base == "NOP":
            continue
        counts["instructions"] += 1
        if base == "LDG":
            counts["LDG"] += 1
        elif base in ("STL", "LDL"):
            counts[base] += 1
        elif base in ("FFMA", "DFMA"):
            counts["FMA"] += 1
        elif base == "STG":
            width = next((int(w) for w in re.findall(r"\.(\d+)", op) if w in ("64", "128")), 32)
            if ".U8" in op or ".S8" in op:
                width = 8
            elif ".U16" in op or ".S16" in op:
                width = 16
            stores[width] = stores.get(width, 0) + 1
        elif base == "BRA":
            target = re.search(r"0x([0-9a-f]+)", match.group(4))
            # a branch back (the kernel's closing branch to itself is not a loop)
            if target and int(target.group(1), 16) < address:
                loops = True
    return KernelStats(
        name=name,
        registers=registers,
        stack_bytes=stack,
        spill_stores=counts["STL"],
        spill_loads=counts["LDL"],
        instructions=counts["instructions"],
        global_loads=counts["LDG"],
        stores=stores,
        fma=counts["FMA"],
        loops=loops,
        num_warps=num_warps,
        pixels_per_thread=block / (32 * num_warps),
    )


# ----------------------------------------------------------------------------- the driver


class _Launcher:
    """The stand-in for Triton's CUDA launcher: it is called with the launch and does nothing
    (but keep the last `RECORD` calls' arguments when `RECORD` is a list)."""

    RECORD: list[tuple[Any, ...]] | None = None

    def __init__(self, src: Any, metadata: Any) -> None:
        self.name = getattr(src, "name", "kernel")

    def __call__(self, *args: Any) -> None:
        if _Launcher.RECORD is not None:
            _Launcher.RECORD.append((self.name, *args))


class _Utils:
    """Device properties of an H100 SXM (sm_90), and a module load that loads nothing."""

    def get_device_properties(self, device: int) -> dict[str, int]:
        return {
            "max_shared_mem": 232448,
            "max_num_regs": 65536,
            "multiprocessor_count": 132,
            "warpSize": 32,
            "sm_clock_rate": 1980000,
            "mem_clock_rate": 2619000,
            "mem_bus_width": 5120,
        }

    def load_binary(self, name: str, kernel: bytes, shared: int, device: int) -> tuple:
        return (1, 1, 0, 0, 1024)


class _SM90Driver:
    """Enough of Triton's driver interface to compile and "launch" for sm_90 without CUDA."""

    def __init__(self) -> None:
        import torch

        self.utils = _Utils()
        self.launcher_cls = _Launcher
        self._torch = torch

    def get_current_target(self) -> Any:
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", 90, 32)

    def get_current_device(self) -> int:
        return 0

    def set_current_device(self, device: int) -> None:
        pass

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_active_torch_device(self) -> Any:
        return self._torch.device("cpu")

    def get_device_interface(self) -> Any:
        return self._torch.cuda

    def get_benchmarker(self) -> Any:
        raise NotImplementedError("nothing runs here")

    def map_python_to_cpp_type(self, ty: str) -> str:
        from triton.backends.nvidia.driver import ty_to_cpp

        return ty_to_cpp(ty)


@contextlib.contextmanager
def _sm90_driver() -> Iterator[None]:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("compile for sm_90 in a process without TRITON_INTERPRET=1")
    from triton.runtime.driver import driver

    previous = getattr(driver, "_active", None)  # None until a driver was asked for
    driver.set_active(_SM90Driver())
    try:
        yield
    finally:
        driver._active = previous


# ----------------------------------------------------------------------------- variants


def _book() -> Any:
    """The book's augmentation: the ``chollet_cats_dogs`` preset."""
    from gpuaug.augment.config import load_config

    return load_config("chollet_cats_dogs")


BOOK = "rotation 40, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip, fill nearest, 1/255"

#: The variants the budgets and the model cover: config changes from the book's settings, the
#: output dtype and layout, and the image size.
VARIANTS: dict[str, dict[str, Any]] = {
    "book_fp32": {},
    "book_bf16": {"dtype": "bfloat16"},
    "book_fp16": {"dtype": "float16"},
    "book_fp32_channels_last": {"channels_last": True},
    "reflect_fp32": {"config": {"fill_mode": "reflect"}},
    "wrap_fp32": {"config": {"fill_mode": "wrap"}},
    "constant_fp32": {"config": {"fill_mode": "constant"}},
    "nearest_interpolation_fp32": {"config": {"interpolation": "nearest"}},
    "channel_shift_fp32": {"config": {"channel_shift_range": 20.0}},
    "book_224_fp32": {"size": 224},
    "book_fp32_rgbx": {"rgbx": True},
}


#: The main kernel's budgets, per variant: SASS instructions per output pixel (measured with
#: triton 3.8 and rounded up by about 10%), for every variant registers <= 96 and nothing
#: spilled. Pass 1 / pass 2 of a channel shift have their own. Triton 3.6 compiles "reflect"
#: and "wrap" to more instructions (352.5 and 387) than these allow; docs/kernel.md.
MAX_REGISTERS = 96
INSTRUCTION_BUDGETS: dict[str, float] = {
    "book_fp32": 192,
    "book_bf16": 208,
    "book_fp16": 200,
    "book_fp32_channels_last": 192,
    "reflect_fp32": 312,
    "wrap_fp32": 352,
    "constant_fp32": 208,
    "nearest_interpolation_fp32": 104,
    "channel_shift_fp32": 240,
    "book_224_fp32": 192,
    "book_fp32_rgbx": 160,
}


def _variant_inputs(name: str, batch: int) -> tuple[Any, ...]:
    import torch

    spec = VARIANTS[name]
    config = dataclasses.replace(_book(), **spec.get("config", {}))
    size = spec.get("size", 150)
    dtype = getattr(torch, spec.get("dtype", "float32"))
    fmt = torch.channels_last if spec.get("channels_last") else torch.contiguous_format
    images = torch.zeros(batch, 3, size, size, dtype=torch.uint8)
    if spec.get("rgbx"):  # the first 3 channels of a (B, H, W, 4) buffer: 32-bit gathers
        images = torch.zeros(batch, size, size, 4, dtype=torch.uint8).permute(0, 3, 1, 2)[:, :3]
    return config, images, dtype, fmt


def compile_variant(name: str, batch: int = 256) -> list[tuple[Any, dict[str, Any], float]]:
    """Compile one variant's kernels for sm_90 exactly as `apply` would launch them.

    Returns:
        One (compiled kernel, launch keyword arguments, compile seconds) per launch, in
        launch order (the prologue first).
    """
    from gpuaug.augment.backends import triton as fused
    from gpuaug.augment.params import sample_draws

    config, images, dtype, fmt = _variant_inputs(name, batch)
    draws = sample_draws(batch, generator=__import__("torch").Generator().manual_seed(0))
    compiled: list[tuple[Any, dict[str, Any], float]] = []

    def warmup(kernel: Any, grid: tuple[int, ...], **kwargs: Any) -> None:
        kwargs.pop("launch_slot", None)
        kwargs.pop("launch_guard", None)
        start = time.perf_counter()
        result = kernel.warmup(grid=grid, **kwargs)
        compiled.append((result, kwargs, time.perf_counter() - start))

    real = fused._launch
    fused._launch = warmup
    # check_usable wants CUDA tensors or the interpreter: these CPU tensors only carry shapes
    usable = fused.check_usable
    fused.check_usable = lambda device, dtype: None
    try:
        with _sm90_driver():
            fused.apply_fused(images, draws, config, dtype=dtype, memory_format=fmt)
    finally:
        fused._launch = real
        fused.check_usable = usable
    return compiled


def variant_stats(name: str) -> list[dict[str, Any]]:
    """`KernelStats` (as dicts) of each kernel one variant launches, in launch order."""
    rows = []
    for kernel, kwargs, seconds in compile_variant(name):
        if "BLOCK_H" in kwargs:  # the main kernel: a tile of pixels
            block = kwargs["BLOCK_H"] * kwargs["BLOCK_W"]
        else:  # the prologue: one image per thread
            block = kwargs["BLOCK_B"]
        stats = sass_stats(kernel.asm["cubin"], num_warps=kwargs["num_warps"], block=block)
        row = dataclasses.asdict(stats)
        row["instructions_per_pixel"] = round(stats.instructions_per_pixel, 1)
        row["ptx_fma"] = kernel.asm["ptx"].count("fma.rn")
        row["compile_s"] = round(seconds, 2)
        row["pass"] = kwargs.get("PASS")
        rows.append(row)
    return rows


@contextlib.contextmanager
def _stand_in_launches() -> Iterator[Any]:
    """`apply` on CPU tensors launching through the stand-in driver (compile for sm_90, launch
    nothing): every step of a real launch but the driver call."""
    from gpuaug.augment.backends import triton as fused

    usable = fused.check_usable
    fused.check_usable = lambda device, dtype: None
    try:
        with _sm90_driver():
            yield fused
    finally:
        fused.check_usable = usable


def recorded_launches(name: str = "book_fp32", batches: int = 2) -> list[list[tuple[Any, ...]]]:
    """The launcher calls (kernel name, grid, stream, function, metadata, hooks, arguments) of
    ``batches`` batches of one variant, one list per batch: the first through
    ``kernel[grid](...)``, the later ones through the compiled kernels kept for the kind."""
    from gpuaug.augment.module import GPUAugment

    config, images, dtype, fmt = _variant_inputs(name, 8)
    batches_seen: list[list[tuple[Any, ...]]] = []
    with _stand_in_launches():
        aug = GPUAugment(config, dtype, memory_format=fmt, backend="triton")
        for _ in range(batches):
            _Launcher.RECORD = []
            aug(images)
            batches_seen.append(_Launcher.RECORD)
    _Launcher.RECORD = None
    return batches_seen


def compile_ahead_then_launch(name: str = "book_fp32", *, ahead: bool = True) -> dict[str, int]:
    """Compile a variant's kernels ahead (`gpuaug.augment.backends.triton.compile_ahead`, as
    the loader does), then launch its first batch of 8 through the stand-in driver.

    Returns:
        ``ahead``: kernels compiled ahead (none with ``ahead=False``); ``compiled_at_launch``:
        kernels the first batch still had to compile (0 when compiling ahead covered them).
    """
    from gpuaug.augment.module import GPUAugment

    config, images, dtype, fmt = _variant_inputs(name, 8)
    kernels = []
    with _stand_in_launches() as fused:
        real = fused._compiles_on
        fused._compiles_on = lambda device: True
        try:
            aug = GPUAugment(config, dtype, memory_format=fmt, backend="triton")
            layout = "rgbx" if fused._rgbx(images) else "planar"  # as the loader's batches
            future = aug.prepare(tuple(images.shape[1:]), images.device, layout) if ahead else None
            done = future.result() if future is not None else []
            kernels = [fused._matrix_kernel, fused._augment_kernel]
            before = sum(len(c[0]) for k in kernels for c in k.device_caches.values())
            aug(images)
            after = sum(len(c[0]) for k in kernels for c in k.device_caches.values())
        finally:
            fused._compiles_on = real
    return {"ahead": len(done), "compiled_at_launch": after - before}


def host_seconds(name: str = "book_fp32", batch: int = 256, repeat: int = 300) -> dict[str, Any]:
    """Host time of one ``GPUAugment`` call (draws, checks, planning lookups, both launches up to
    the driver call) for a variant at ``batch``, with the stand-in driver, and of the things to
    compare it with, measured in the same run (best of 5 rounds of ``repeat`` calls each).

    The tensors are CPU tensors, so the output (69 MB at B = 256, float32) is a fresh ``mmap``
    per call under glibc's default malloc, and its ``munmap`` flushes the TLB: the Python after it
    runs slower than it would next to a CUDA output, which torch's caching allocator hands out
    without a system call. So the call is measured twice: with the default malloc (``python``)
    and with the output's block served again from the heap (``cached``: glibc's mmap and trim
    thresholds raised with ``mallopt``, put back afterwards), which is what a CUDA batch's
    allocation looks like to the host. Elsewhere than glibc ``cached`` is None.

    Returns:
        Seconds per call: ``forward`` (the whole call), ``rand`` (its ``torch.rand`` of the
        B x 12 draws), ``empty`` (a ``torch.empty`` of the output), ``python`` (``forward``
        less the draws and the output's allocation: gpuaug's and Triton's Python); and
        ``cached``, the same four with the cached allocation.
    """
    import torch

    from gpuaug.augment.module import GPUAugment

    config, images, dtype, fmt = _variant_inputs(name, batch)
    shape = tuple(images.shape)
    generator = torch.Generator().manual_seed(0)

    def best(fn: Any) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            times.append((time.perf_counter() - start) / repeat)
        return min(times)

    def measure() -> dict[str, float]:
        forward = best(lambda: aug(images, generator=generator))
        rand = best(lambda: torch.rand((batch, 12), generator=generator))
        empty = best(lambda: torch.empty(shape, dtype=dtype, memory_format=fmt))
        return {"forward": forward, "rand": rand, "empty": empty, "python": forward - rand - empty}

    with _stand_in_launches():
        aug = GPUAugment(config, dtype, memory_format=fmt, backend="triton")
        for _ in range(3):  # compile, plan, keep the compiled kernels
            aug(images, generator=generator)
        result: dict[str, Any] = measure()
        with _cached_allocation() as cached:
            result["cached"] = measure() if cached else None
    return result


@contextlib.contextmanager
def _cached_allocation() -> Iterator[bool]:
    """glibc's malloc serving large blocks from the heap again (no mmap / munmap per block),
    as torch's CUDA caching allocator does; yields False where that cannot be set."""
    import ctypes

    m_trim_threshold, m_mmap_threshold = -1, -3
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) == 1
        ok = ok and libc.mallopt(m_trim_threshold, (1 << 31) - 1) == 1
    except (OSError, AttributeError):
        yield False
        return
    try:
        yield ok
    finally:  # glibc's defaults (its dynamic mmap threshold stays off)
        libc.mallopt(m_mmap_threshold, 128 * 1024)
        libc.mallopt(m_trim_threshold, 128 * 1024)


def steady_state_calls(name: str = "book_fp32", batch: int = 8) -> dict[str, Any]:
    """What one steady-state ``GPUAugment`` call runs on the host, counted (not timed): the
    Python functions it enters (``sys.setprofile``: gpuaug's, Triton's, torch's Python, each
    call once) and the torch operators it dispatches (``TorchDispatchMode``), with the
    stand-in driver.

    Returns:
        ``python_calls``: Python function calls; ``by_file``: the same per top-level package
        (``gpuaug``, ``triton``, ``torch``, ``benchmarks``); ``torch_ops``: the operators, in
        order; ``launches``: the launcher calls.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from gpuaug.augment.module import GPUAugment

    config, images, dtype, fmt = _variant_inputs(name, batch)
    generator = torch.Generator().manual_seed(0)
    calls: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls.append(frame.f_code.co_filename)

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.ops.append(func._schema.name.split("::")[-1])
            return func(*args, **(kwargs or {}))

    with _stand_in_launches():
        aug = GPUAugment(config, dtype, memory_format=fmt, backend="triton")
        for _ in range(3):
            aug(images, generator=generator)
        _Launcher.RECORD = []
        sys.setprofile(profile)
        try:
            aug(images, generator=generator)
        finally:
            sys.setprofile(None)
        launches = len(_Launcher.RECORD)
        _Launcher.RECORD = None
        with Ops() as ops:
            aug(images, generator=generator)
    import triton

    import gpuaug

    roots = {
        "gpuaug": Path(gpuaug.__file__).resolve().parent,
        "triton": Path(triton.__file__).resolve().parent,
        "torch": Path(torch.__file__).resolve().parent,
        "benchmarks": Path(__file__).resolve().parent,
    }
    by_file: dict[str, int] = {}
    for filename in calls:
        package = package_of(filename, roots)
        by_file[package] = by_file.get(package, 0) + 1
    return {
        "python_calls": len(calls),
        "by_file": by_file,
        "torch_ops": ops.ops,
        "launches": launches,
    }


def package_of(filename: str, roots: dict[str, Path]) -> str:
    """The name of the package folder in ``roots`` holding ``filename``, else ``"other"``.

    The deepest folder wins: installed from the wheel the benchmarks are ``gpuaug/benchmarks``,
    and a checkout may itself sit in a folder named ``gpuaug`` with torch in its ``.venv``.
    """
    path = Path(filename).resolve()
    found = [(len(root.parts), name) for name, root in roots.items() if path.is_relative_to(root)]
    return max(found)[1] if found else "other"


def main(argv: list[str] | None = None) -> int:
    """Print one JSON line per compiled kernel of each named variant (all when none)."""
    names = (argv if argv is not None else sys.argv[1:]) or list(VARIANTS)
    for name in names:
        for row in variant_stats(name):
            print(json.dumps({"variant": name, **row}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
