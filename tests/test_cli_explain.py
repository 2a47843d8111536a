"""``tensortap explain`` and ``export --method`` for stored explanations, on a real run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tensortap as tt
from tensortap.cli import main


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(2, name="logits"),
        ]
    )
    root = tmp_path_factory.mktemp("cli_explain")
    model.save(root / "model.keras")
    x = np.random.default_rng(0).random((3, 12, 12, 1)).astype("float32")
    tt.capture(model, x, store=root / "run.zarr", layers=["conv"], progress=False)
    return str(root / "model.keras"), str(root / "run.zarr")


def test_explain_stores_and_export_shows(paths: tuple[str, str], tmp_path: Path) -> None:
    model, run = paths
    result = CliRunner().invoke(
        main,
        [
            "explain", model, run, "--method", "occlusion", "--method", "integrated_gradients",
            "--method", "scorecam", "--layer", "conv", "--steps", "4",
            "--faithfulness", "eigencam", "--faithfulness", "occlusion",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "stored occlusion (3, 12, 12)" in result.output
    assert "eigencam: deletion AUC" in result.output
    stored = tt.read_explanation(tt.open_run(run), "integrated_gradients")
    assert stored.dims == ("sample", "height", "width", "channel")
    for method in ("occlusion", "integrated_gradients", "scorecam", "fem"):
        out = tmp_path / f"{method}.png"
        done = CliRunner().invoke(
            main,
            ["export", run, "--view", "cam", "--layer", "conv", "--method", method, "-o", str(out)],
        )
        assert done.exit_code == 0, done.output
        assert out.stat().st_size > 0


def test_bad_input_exits_2_with_one_line(paths: tuple[str, str], tmp_path: Path) -> None:
    model, run = paths
    done = CliRunner().invoke(main, ["explain", model, run, "--method", "rise"])
    assert done.exit_code == 2 and "'rise' is not one of" in done.output
    done = CliRunner().invoke(main, ["explain", model, run, "--method", "scorecam"])
    assert done.exit_code == 2 and "scorecam needs layer=" in done.output
    assert "Traceback" not in done.output
    out = tmp_path / "x.png"
    done = CliRunner().invoke(
        main, ["export", run, "--view", "cam", "--method", "saliency", "-o", str(out)]
    )
    assert done.exit_code == 2 and "no explanation 'saliency'" in done.output
