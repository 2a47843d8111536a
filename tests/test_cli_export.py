"""``tensortap export``: each view to PNG/HTML from a real run; bad input exits 2 with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tensortap as tt
from tensortap.cli import main


@pytest.fixture(scope="module")
def run_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.Conv2D(5, 3, activation="relu", name="conv_last"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(2, name="logits"),
        ]
    )
    x = np.random.default_rng(0).random((6, 12, 12, 1)).astype("float32")
    path = tmp_path_factory.mktemp("cli") / "run.zarr"
    tt.capture(model, x, store=path, gradients=True, progress=False)
    return str(path)


def _export(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["export", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("view", "extra", "suffix"),
    [
        ("heatmap", ["--layer", "conv", "--sample", "2"], ".png"),
        ("heatmap", ["--channel", "1"], ".html"),
        ("distribution", ["--layer", "gap"], ".png"),
        ("distribution", [], ".html"),
        ("cam", ["--method", "layercam", "--sample", "1"], ".png"),
        ("layers", [], ".png"),
    ],
)
def test_export_views(
    run_path: str, tmp_path: Path, view: str, extra: list[str], suffix: str
) -> None:
    out = tmp_path / f"out{suffix}"
    code, stdout, stderr = _export(
        run_path, "--view", view, *extra, "-o", str(out), "--width", "400"
    )
    assert code == 0, stderr
    assert out.stat().st_size > 1000 and "wrote" in stdout
    if suffix == ".png":
        from PIL import Image

        image = Image.open(out)
        assert image.size[0] == 400 and np.asarray(image.convert("L")).var() > 50
    else:
        assert "http" not in "".join(
            line for line in out.read_text().splitlines() if "<script" in line and "src=" in line
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--view", "heatmap", "--layer", "conv_lst"], "did you mean"),
        (["--view", "heatmap", "--sample", "99"], "sample 99 is out of range"),
        (["--view", "heatmap", "--channel", "4"], "channel 4 is out of range"),
        (["--view", "cam", "--method", "gradcam+"], "choose one of: gradcam"),
        (["--view", "cam", "--layer", "gap"], "spatial"),
        (["--view", "pie"], "Invalid value for '--view'"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    run_path: str, tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, stderr = _export(run_path, *args, "-o", str(tmp_path / "x.png"))
    assert code == 2
    assert message in stderr
    if "Invalid value" not in message:  # ours: exactly one line, no traceback
        assert stderr.strip().count("\n") == 0 and stderr.startswith("error: ")


def test_bad_output_and_missing_run(run_path: str, tmp_path: Path) -> None:
    code, _, stderr = _export(run_path, "--view", "layers", "-o", str(tmp_path / "x.jpg"))
    assert code == 2 and ".png or .html" in stderr
    code, _, stderr = _export(
        str(tmp_path / "nope.zarr"), "--view", "layers", "-o", str(tmp_path / "x.png")
    )
    assert code == 2 and stderr.startswith("error: ")
