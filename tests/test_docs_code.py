"""Every ```python block of the README and of docs/ runs, page by page, on the CPU.

Each page's blocks run in order in one namespace (a later block may use what an earlier one
defined), in a temporary working folder holding the small data the pages name
(``data/train``, ``data/val``, ``data/images`` + ``data/masks``, ``data/train.json``). Before
running, a block is changed only as a CPU machine and a fast test need: ``"cuda"`` becomes
``"cpu"``, ``.cuda()`` goes, ``range(30)`` epochs become ``range(1)``, worker processes
become 0 and generated image folders hold small images.

A block that cannot run here (it needs CUDA, ``torchrun``, a file the reader has) is marked
by the line ``<!-- no-run -->`` right above its fence; :data:`ALLOWED_NO_RUN` lists those
blocks, so that a new one is a deliberate choice. A snippet may use the names in
:func:`given` without defining them (``images``, ``aug``, ``model``, ...): they stand for
"a batch you already have".
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tree
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))
NO_RUN = "<!-- no-run -->"

#: ``(page, first line of the block)`` of each block marked no-run (keep this short).
ALLOWED_NO_RUN: set[tuple[str, str]] = {
    # The book's Keras 2 code, the "before" of the port (Keras 3 has no such import).
    ("docs/porting-from-keras.md", "from keras.preprocessing.image import ImageDataGenerator"),
    # An ImageNet loop (90 epochs, 1000 classes); tests/test_recipe.py runs it on a small folder.
    ("docs/recipes.md", "import torch"),
    # A torchrun script's body (NCCL, parsed arguments): examples/train_shards_ddp.py runs it.
    ("docs/many-gpus.md", 'dist.init_process_group("nccl")'),
    # Object storage: tests/test_shards.py reads file:// and memory:// shards the same way.
    ("docs/many-gpus.md", "loader = gpuaug.flow_from_shards("),
}

_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def blocks(page: Path) -> list[tuple[str, bool]]:
    """``(code, runs)`` for each python block of ``page``, in order."""
    text = page.read_text(encoding="utf-8")
    out = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        out.append((match.group(1), before != NO_RUN))
    return out


def for_the_cpu(code: str) -> str:
    """The block as it runs here: the CPU instead of CUDA, one epoch, no worker processes."""
    code = code.replace('"cuda"', '"cpu"').replace("'cuda'", "'cpu'").replace(".cuda()", "")
    code = re.sub(r"range\(30\)", "range(1)", code)
    # Generated photo-like folders: small images (the pages' sizes take seconds to write).
    code = re.sub(r"(make_image_folder\([^)]*?)\)", r"\1, min_side=32, max_side=48)", code)
    return re.sub(r"num_workers=\d+", "num_workers=0", code)


def _page_id(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


RUNNABLE = [p for p in PAGES if any(runs for _, runs in blocks(p))]


def _write_pairs(root: Path, count: int = 64, size: tuple[int, int] = (24, 32)) -> None:
    """``root/images/x/i.png`` and ``root/masks/x/i.png``: textured images, 0/1 masks."""
    rng = np.random.default_rng(0)
    for i in range(count):
        for kind in ("images", "masks"):
            (root / kind / "x").mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / "x" / f"{i:02d}.png")
        mask = (image[..., 0] > 127).astype(np.uint8)
        Image.fromarray(mask, mode="L").save(root / "masks" / "x" / f"{i:02d}.png")


def _write_coco(path: Path, images: Path) -> None:
    files = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))
    coco = {
        "images": [
            {"id": i, "file_name": f, "width": 32, "height": 24} for i, f in enumerate(files)
        ],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 12, 10], "iscrowd": 0}
            for i in range(len(files))
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path.write_text(json.dumps(coco))


def given() -> dict:
    """Names a snippet may use without defining them: a batch and its targets, a model."""
    from torch import nn
    from torch.nn import functional

    import gpuaug

    images = torch.randint(0, 256, (4, 3, 48, 48), dtype=torch.uint8)
    return {
        "images": images,
        "batch_uint8_bchw": images,
        "aug": gpuaug.GPUAugment("chollet_cats_dogs"),
        "g": torch.Generator().manual_seed(0),
        "masks": torch.randint(0, 3, (4, 1, 48, 48), dtype=torch.int64),
        "boxes": torch.tensor([[[4.0, 4.0, 20.0, 30.0]]]).repeat(4, 1, 1),
        "pad": torch.ones(4, 1, dtype=torch.bool),
        "points": torch.tensor([[[10.0, 12.0]]]).repeat(4, 1, 1),
        "H": 48,
        "W": 48,
        "F": functional,
        "model": nn.Conv2d(3, 3, 1),
        "train_dir": "data/train",
        "validation_dir": "data/val",
    }


@pytest.fixture
def page_folder(tmp_path, monkeypatch):
    """A working folder with the data the pages name, and no worker processes by default."""
    import gpuaug.loader.config as loader_config

    write_tree(tmp_path / "data" / "train", {"cats": 20, "dogs": 20}, size=(24, 32))
    write_tree(tmp_path / "data" / "val", {"cats": 2, "dogs": 2}, size=(24, 32), seed=1)
    _write_pairs(tmp_path / "data")
    _write_coco(tmp_path / "data" / "train.json", tmp_path / "data" / "images")
    monkeypatch.setattr(loader_config, "_default_num_workers", lambda: 0)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", RUNNABLE, ids=_page_id)
def test_every_python_block_of_the_page_runs(page, page_folder, capsys):
    namespace = given()
    for i, (code, runs) in enumerate(blocks(page)):
        if not runs:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pin_memory without CUDA, Keras' notes, ...
            exec(compile(for_the_cpu(code), f"{_page_id(page)} block {i + 1}", "exec"), namespace)


def test_only_the_listed_blocks_are_marked_no_run():
    marked = {
        (_page_id(page), code.strip().splitlines()[0] if code.strip() else "")
        for page in PAGES
        for code, runs in blocks(page)
        if not runs
    }
    assert marked == ALLOWED_NO_RUN


def test_a_page_with_python_blocks_is_found():
    names = {_page_id(p) for p in RUNNABLE}
    assert {"README.md", "docs/quickstart.md", "docs/epochs.md", "docs/own-loop.md"} <= names


def test_the_no_run_marker_right_above_a_fence_skips_it(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("x\n\n```python\na = 1\n```\n\n<!-- no-run -->\n```python\nb = 2\n```\n")
    assert blocks(page) == [("a = 1\n", True), ("b = 2\n", False)]


def test_cpu_rewrite_changes_only_the_device_epochs_and_workers():
    code = 'x = y.to("cuda")\nz = w.cuda()\nfor e in range(30):\n    f(num_workers=4)\n'
    assert for_the_cpu(code) == 'x = y.to("cpu")\nz = w\nfor e in range(1):\n    f(num_workers=0)\n'


def test_cpu_rewrite_makes_generated_folders_small():
    code = 'make_image_folder("data/train", 64, progress=False)'
    want = 'make_image_folder("data/train", 64, progress=False, min_side=32, max_side=48)'
    assert for_the_cpu(code) == want
