"""``tensortap capture``, ``info`` and ``graph``: a real Keras model file, and every bad input
ends with exit status 2 and one line on stderr (no traceback)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tensortap.cli import main

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inputs = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="dense")(h)
    model = keras.Model(inputs, outputs, name="tiny")
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def other_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inputs = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    outputs = keras.layers.Dense(3, name="dense")(keras.layers.Flatten()(h))
    path = tmp_path_factory.mktemp("models") / "other.keras"
    keras.Model(inputs, outputs, name="other").save(path)
    return path


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    x = np.random.default_rng(0).random((10, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(10) % 3)
    np.savez(tmp_path / "bad_labels.npz", x=x, y=np.arange(7))
    return tmp_path


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "Traceback" not in result.stderr
    assert pattern in lines[0], lines[0]


def test_capture_info_graph(model_file: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.zarr"
    result = _run(
        "capture",
        model_file,
        data / "xy.npz",
        "-o",
        out,
        "--layers",
        "conv",
        "--layers",
        "dense",
        "--gradients",
        "--batch-size",
        "4",
        "--dtype",
        "float16",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "complete: 10 samples, 2 layers" in result.stdout
    info = _run("info", out)
    assert info.exit_code == 0
    for text in ("complete", "10 committed / 10", "conv", "Conv2D", "float16", "ratio"):
        assert text in info.stdout
    graph = _run("graph", model_file)
    assert graph.exit_code == 0 and "conv" in graph.stdout and "Dense" in graph.stdout


def test_capture_image_folder(model_file: Path, tmp_path: Path) -> None:
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((20, 30, 3), i * 40, np.uint8))
    result = _run(
        "capture",
        model_file,
        folder,
        "-o",
        tmp_path / "r.zarr",
        "--image-size",
        "8",
        "8",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    (folder / "3.png").write_bytes(b"not an image")
    result = _run(
        "capture",
        model_file,
        folder,
        "-o",
        tmp_path / "r2.zarr",
        "--image-size",
        "8",
        "8",
        "--no-progress",
    )
    _one_line_error(result, "3.png")


def test_bad_inputs_exit_2_with_one_line(
    model_file: Path, other_model_file: Path, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run.zarr"
    assert (
        _run(
            "capture", model_file, data / "x.npy", "-o", out, "--no-progress", "--batch-size", "4"
        ).exit_code
        == 0
    )
    _one_line_error(
        _run("capture", model_file, data / "x.npy", "-o", out, "--no-progress"), "already exists"
    )
    _one_line_error(
        _run("capture", other_model_file, data / "x.npy", "-o", out, "--resume", "--no-progress"),
        "cannot resume",
    )
    _one_line_error(
        _run(
            "capture",
            model_file,
            data / "x.npy",
            "-o",
            out,
            "--resume",
            "--layers",
            "conv",
            "--no-progress",
        ),
        "layers",
    )
    _one_line_error(
        _run(
            "capture",
            model_file,
            data / "bad_labels.npz",
            "-o",
            tmp_path / "l.zarr",
            "--no-progress",
        ),
        "7 labels for 10 samples",
    )
    if os.geteuid() == 0:  # root writes through permission bits; /sys refuses even root
        readonly = Path("/sys/tensortap-test/run.zarr")
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        readonly = tmp_path / "ro" / "run.zarr"
    _one_line_error(
        _run("capture", model_file, data / "x.npy", "-o", readonly, "--no-progress"), "writable"
    )
    _one_line_error(_run("info", data), "no tensortap run")
    _one_line_error(_run("info", tmp_path / "nowhere.zarr"), "does not exist")
    (out / "zarr.json").write_text('{"zarr_format": 3, "node_ty')
    _one_line_error(_run("info", out), "damaged")
    _one_line_error(
        _run("capture", tmp_path / "model.txt", data / "x.npy", "-o", tmp_path / "m.zarr"), "model"
    )
    _one_line_error(
        _run("capture", model_file, tmp_path / "data.csv", "-o", tmp_path / "d.zarr"),
        "does not exist",
    )
