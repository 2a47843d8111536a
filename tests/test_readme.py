"""The README's Python example runs as written (on random images, in a temporary folder)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("keras")
    block = re.search(r"## Python\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README lost its Python example"
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    scope = {
        "images": rng.random((6, 96, 96, 3), dtype=np.float32),
        "labels": rng.integers(0, 10, 6),
    }
    exec(compile(block.group(1), "README.md", "exec"), scope)  # noqa: S102 - our own docs
    run = scope["run"]
    assert run.samples == 6 and len(run.layers) > 3
    assert os.path.getsize(tmp_path / "maps.png") > 0 and (tmp_path / "cam.html").exists()
