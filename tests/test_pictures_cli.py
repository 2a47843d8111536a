"""``tensortap capture --class-names / --target a,b`` and ``export --view cam`` on a real
Keras model file (issue 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tensortap as tt
from tensortap.cli import main

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(3, name="logits")(h)
    keras.Model(inputs, outputs, name="tiny").save(folder / "tiny.keras")
    x = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)
    np.savez(folder / "xy.npz", x=x, y=np.arange(6) % 3)
    (folder / "names.txt").write_text("cat\ndog\nbird\n", encoding="utf-8")
    return folder


def _run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_capture_class_names_and_several_targets(files: Path) -> None:
    out = files / "run.zarr"
    done = _run(
        "capture",
        files / "tiny.keras",
        files / "xy.npz",
        "-o",
        out,
        "--gradients",
        "--target",
        "predicted,label",
        "--class-names",
        files / "names.txt",
        "--no-progress",
    )
    assert done.exit_code == 0, done.output
    run = tt.open_run(out)
    assert run.class_names == ("cat", "dog", "bird")
    assert run.attrs["targets"] == ["predicted", "label"]
    np.testing.assert_array_equal(run.target_classes.values[:, 1], np.arange(6) % 3)
    picture = files / "cam.png"
    exported = _run("export", out, "--view", "cam", "--sample", "1", "-o", picture)
    assert exported.exit_code == 0, exported.output
    assert picture.stat().st_size > 0
    assert "dead units" in _run("info", out).output


def test_wrong_class_names_end_in_one_line(files: Path) -> None:
    done = CliRunner().invoke(
        main,
        [
            "capture",
            str(files / "tiny.keras"),
            str(files / "xy.npz"),
            "-o",
            str(files / "bad.zarr"),
            "--class-names",
            "cat,dog",
            "--no-progress",
        ],
    )
    assert done.exit_code == 2, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 class_names but the model's output has 3 classes" in lines[0]
