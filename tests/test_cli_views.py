"""``tensortap export`` names its views after the viz functions and exports every one;
``tensortap graph`` takes PyTorch models (issue 16)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tensortap as tt
from tensortap.cli import main
from tensortap.cli.export import VIEWS


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two runs of one small CNN, with labels (for the gallery)."""
    keras = pytest.importorskip("keras")
    paths = []
    base = tmp_path_factory.mktemp("cli-views")
    for seed in (0, 1):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((12, 12, 1)),
                keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                keras.layers.GlobalAveragePooling2D(name="gap"),
                keras.layers.Dense(3, name="logits"),
            ]
        )
        rng = np.random.default_rng(seed)
        x = rng.random((8, 12, 12, 1)).astype("float32")
        y = rng.integers(0, 3, 8)
        path = base / f"run{seed}.zarr"
        tt.capture(model, x, store=path, labels=y, gradients=True, progress=False)
        paths.append(str(path))
    return paths[0], paths[1]


def test_view_names_are_the_viz_function_names() -> None:
    from tensortap import viz

    for name in VIEWS:
        assert callable(getattr(viz, name, None)), name


@pytest.mark.parametrize("view", list(VIEWS))
def test_every_view_exports(runs: tuple[str, str], tmp_path: Path, view: str) -> None:
    from PIL import Image

    out = tmp_path / f"{view}.png"
    extra = {
        "feature_maps": ["--channels", "0,2", "--order", "energy"],
        "feature_mosaic": ["--channels", "0-3"],
        "top_samples": ["--channel", "1"],
        "distribution": ["--layer", "conv"],
        "cam_grid": ["--samples", "0-3"],
        "gallery": ["--filter", "all", "--samples", "1,2,3"],
        "compare": ["--against", runs[1], "--layer", "conv"],
    }.get(view, [])
    result = CliRunner().invoke(
        main, ["export", runs[0], "--view", view, *extra, "-o", str(out), "--width", "300"]
    )
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    pixels = np.asarray(Image.open(out).convert("L"), dtype=np.float64)
    assert pixels.var() > 10, view  # a picture, not a blank page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--view", "compare"], "--against RUN2"),
        (["--view", "cam_grid", "--samples", "a-b"], "--samples 'a-b' is not a list"),
        (["--view", "gallery", "--samples", "99"], "sample 99 is out of range"),
    ],
)
def test_bad_view_options_exit_2_with_one_line(
    runs: tuple[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(main, ["export", runs[0], *args, "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: ")


# --------------------------------------------------------------------------- graph


@pytest.fixture(scope="module")
def torch_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A plain-torch CNN saved whole, and an example batch as a (memory-mapped) .npy."""
    pytest.importorskip("torch")
    base = tmp_path_factory.mktemp("graph")
    # The class in a module of its own: a whole-module file unpickles it by import path,
    # as a user's project would provide it.
    (base / "netmod.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 4, 3)\n"
        "        self.pool = torch.nn.AdaptiveAvgPool2d(1)\n"
        "        self.head = torch.nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.head(self.pool(torch.relu(self.conv(x))).flatten(1))\n"
    )
    path = base / "net.pt"
    subprocess.run(
        [sys.executable, "-c", f"import torch, netmod; torch.save(netmod.Net(), {str(path)!r})"],
        check=True,
        cwd=base,
        env={**os.environ, "PYTHONPATH": str(base)},
    )
    example = base / "x.npy"
    np.save(example, np.random.default_rng(0).random((4, 3, 16, 16)).astype("float32"))
    return path, example


def _graph(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tensortap", "graph", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd)},
        timeout=300,
    )


def test_graph_of_a_pytorch_model(torch_model: tuple[Path, Path]) -> None:
    path, example = torch_model
    for option in (["--input-shape", "3,16,16"], ["--example", str(example)]):
        done = _graph(str(path), *option, cwd=path.parent)
        assert done.returncode == 0, done.stderr
        for module in ("conv", "pool", "head"):  # every submodule of the Net above
            assert module in done.stdout, done.stdout
        # no framework warning reaches the user (non-writable arrays, torch.load's notice)
        assert "Warning" not in done.stderr, done.stderr


def test_graph_of_a_pytorch_model_needs_an_input(torch_model: tuple[Path, Path]) -> None:
    path, _ = torch_model
    done = _graph(str(path), cwd=path.parent)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--input-shape" in lines[0] and "--example" in lines[0], lines
    bad = _graph(str(path), "--input-shape", "3,0", cwd=path.parent)
    assert bad.returncode == 2 and "--input-shape '3,0'" in bad.stderr


def test_graph_help_names_every_format() -> None:
    result = CliRunner().invoke(main, ["graph", "--help"])
    for fmt in (".keras", ".h5", "SavedModel", ".pt", ".pth", "--input-shape", "--example"):
        assert fmt in result.stdout, fmt
