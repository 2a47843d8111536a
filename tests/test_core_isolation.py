"""core/ imports no framework and no plotting library (DESIGN.md §1)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
