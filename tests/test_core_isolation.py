"""core/ imports no framework and no plotting library (docs/design.md §1)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

BLOCKED = ("tensorflow", "keras", "torch", "holoviews", "bokeh", "panel", "cv2")

SCRIPT = textwrap.dedent(
    f"""
    import importlib.abc, sys

    BLOCKED = {BLOCKED!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    import tensortap
    import tensortap.core
    import tensortap.core.testing
    from tensortap.core import CaptureGraph, CaptureNode, TensorSpec, resolve_target, select_nodes

    node = CaptureNode("a.b", "b", "Dense", ("a", "b"), (3,), ("unit",))
    graph = CaptureGraph("x", "m", "M", (node,), (TensorSpec("x", (2,), "float32", ("unit",)),), ())
    assert select_nodes(graph, "*b")[0].key == "a.b"
    assert resolve_target([0, 1]).kind == "classes"
    try:
        import torch
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker did not block")
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("ok")
    """
)


def test_core_imports_without_frameworks() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


# core/ must not reach up into the package's faces: the root re-exports core, the CLI wires
# core to backends and views, so an import the other way round would be a cycle.
FORBIDDEN_FROM_CORE = ("tensortap.viz", "tensortap.backends", "tensortap.cli")


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def test_core_imports_neither_the_package_root_nor_its_faces() -> None:
    core = Path(__file__).resolve().parents[1] / "core"
    offences = []
    for path in sorted(core.rglob("*.py")):
        for line, name in _imported_modules(path):
            root_import = name == "tensortap" or (
                name.startswith("tensortap.") and not name.startswith("tensortap.core")
            )
            if root_import or name.startswith(FORBIDDEN_FROM_CORE):
                offences.append(f"{path.relative_to(core.parent)}:{line} imports {name}")
    assert not offences, offences
    assert len(list(core.rglob("*.py"))) > 10  # the walk found the core's modules


def test_faces_stay_small() -> None:
    # Issue 11: small files with one purpose; the app and the command line split by room.
    root = Path(__file__).resolve().parents[1]
    large = [
        f"{path.relative_to(root)}: {n} lines"
        for folder in ("viz", "cli")
        for path in sorted((root / folder).rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > 500
    ]
    assert not large, large
