"""The "Porting from Keras" page's code: the "after" block runs as written (on the CPU)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from conftest import write_tree

PAGE = Path(__file__).resolve().parent.parent / "docs" / "porting-from-keras.md"


def _porting_blocks() -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_before_and_after_differ_by_the_import_and_the_device_only():
    before, after = _porting_blocks()[:2]
    after_data = after.split("\nfor x, y in")[0]
    changed = {line for line in after_data.splitlines() if line not in before.splitlines()}
    changed = {re.sub(r"\s+#.*", "", line).strip() for line in changed}
    assert changed == {
        "from gpuaug import ImageDataGenerator",
        'device = "cuda"',
        "horizontal_flip=True, device=device)",
        "test_datagen = ImageDataGenerator(rescale=1./255, device=device)",
    }


def test_after_code_runs(tmp_path):
    after = _porting_blocks()[1]
    code = after.replace('device = "cuda"', 'device = "cpu"').replace("    ...", "    break")
    namespace = {
        "train_dir": str(write_tree(tmp_path / "train", {"cats": 2, "dogs": 2}, size=(20, 24))),
        "validation_dir": str(write_tree(tmp_path / "val", {"cats": 1, "dogs": 1}, size=(20, 24))),
    }
    exec(compile(code, "docs/porting-from-keras.md", "exec"), namespace)
    x = namespace["x"]
    assert namespace["y"].shape == (4,)
    assert x.shape == (4, 3, 150, 150) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert namespace["validation_generator"].class_indices == {"cats": 0, "dogs": 1}
