"""The package's tree tells its architecture, and its imports keep to it.

Layers, lowest first: ``gpuaug.device`` < ``gpuaug.data`` (sources) < ``gpuaug.augment``
(augmentation and its backends) < ``gpuaug.loader`` (with ``gpuaug.preview``, which its
``preview()`` uses) < the tools on top (``gpuaug.keras``, ``gpuaug.cli``, ``gpuaug.sync_check``
and the ``gpuaug`` namespace). A
module imports from its own layer or below, never above, and no import (at module level or
inside a function) closes a cycle. Read from the source with ``ast``: every ``import``
counts, except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gpuaug"

LAYERS = {
    "gpuaug.device": 0,
    "gpuaug.data": 1,
    "gpuaug.augment": 2,
    "gpuaug.loader": 3,
    "gpuaug.keras": 4,
    "gpuaug.preview": 3,  # the loader's preview() draws with it
    "gpuaug.cli": 4,
    "gpuaug.sync_check": 4,
    "gpuaug": 4,
}


def _module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = _module_names()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id in ("TYPE_CHECKING", "_TYPE_CHECKING")) or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """The gpuaug modules ``path`` imports (a name imported from a package counts as the
    submodule when it is one, else as the package)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "gpuaug":
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "gpuaug":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in MODULES else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {name for name in found if name in MODULES}


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def test_every_module_is_in_a_layer():
    assert all(_layer(m) >= 0 for m in MODULES)
    # The tree by concept: the layers are packages, not a flat folder of modules.
    top = sorted(m for m in MODULES if m.count(".") == 1)
    assert set(top) == {
        "gpuaug.augment",
        "gpuaug.cli",
        "gpuaug.data",
        "gpuaug.device",
        "gpuaug.keras",
        "gpuaug.loader",
        "gpuaug.preview",
        "gpuaug.sync_check",
    }, top


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_layer_above_it(module):
    above = sorted(dep for dep in GRAPH[module] if _layer(dep) > _layer(module))
    assert above == [], f"{module} (layer {_layer(module)}) imports from above: {above}"


def test_the_backends_import_only_downward():
    """A backend never imports the dispatcher (``gpuaug.augment.module``) or the table."""
    backends = [m for m in MODULES if m.startswith("gpuaug.augment.backends.")]
    assert {m.rsplit(".", 1)[1] for m in backends} >= {"triton", "compile", "chunked", "opencv"}
    for module in backends:
        bad = GRAPH[module] & {"gpuaug.augment.module", "gpuaug.augment.backends"}
        assert not bad, f"{module} imports {sorted(bad)}"


def _find_cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state:
                cycle = dfs(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_inside_the_package():
    cycle = _find_cycle()
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle(monkeypatch):
    """Negative control: a back edge from the reference to the dispatcher is a cycle."""
    monkeypatch.setitem(
        GRAPH, "gpuaug.augment.reference", GRAPH["gpuaug.augment.reference"] | {"gpuaug.augment"}
    )
    monkeypatch.setitem(GRAPH, "gpuaug.augment", GRAPH["gpuaug.augment"] | {"gpuaug.augment.fit"})
    assert _find_cycle() is not None


def test_no_comment_cites_a_tracker_number():
    """Comments and docstrings speak of the code, not of issue numbers a reader cannot see."""
    import re

    pattern = re.compile(r"\bissues? \d+(\.\d+)?\b", re.IGNORECASE)
    hits = []
    for path in MODULES.values():
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}")
    assert hits == [], "\n".join(hits)


def test_a_module_over_600_lines_says_why_in_its_docstring():
    """Small rooms: a long module is split by concept, or its docstring gives the reason."""
    long = []
    for name, path in MODULES.items():
        source = path.read_text()
        if source.count("\n") > 600:
            doc = ast.get_docstring(ast.parse(source)) or ""
            if "Why one module" not in doc:
                long.append(f"{name}: {source.count(chr(10))} lines")
    assert long == [], long


def test_the_static_view_of_the_lazy_names_lists_every_export():
    """``gpuaug/__init__.py`` resolves its public names on first use; its ``TYPE_CHECKING``
    imports are what type checkers see, and must name each of them from the same module."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    exports = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if (isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_EXPORTS")
        or (isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "_EXPORTS")
    )
    block = next(n for n in tree.body if isinstance(n, ast.If) and _is_type_checking(n))
    static = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert static == exports
