"""Issue 20 on the command line: ``tensortap verify`` (exit 0/1, one table, ``--repair``),
``export`` of a damaged run, one-line usage errors, and the hostile-user capture cases
(``--dtype int7``, ``--overwrite`` with data of the wrong shape, ``--resume`` with data of
another length) with the run's files compared before and after."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tensortap as tt
from tensortap.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from fake_backend import FakeBackend, FakeModel, images  # noqa: E402


def _cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result, pattern: str) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "Usage:" not in result.stderr
    assert pattern in lines[0], lines[0]
    return lines[0]


def _hashes(path: Path) -> dict[str, str]:
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


@pytest.fixture()
def fake_run(tmp_path: Path) -> Path:
    path = tmp_path / "run.zarr"
    tt.capture(
        FakeModel(),
        images(48),
        store=path,
        backend=FakeBackend(),
        batch_size=16,
        block_size=16,  # one batch a block: the damage below names blocks of 16 samples
        gradients=True,
        progress=False,
    )
    return path


def test_verify_exit_codes_table_and_repair(fake_run: Path) -> None:
    sound = _cli("verify", fake_run, "--no-progress")
    assert sound.exit_code == 0 and sound.stdout.startswith("ok:"), sound.stdout
    (fake_run / "layers" / "dense" / "activation" / "c.1.0").unlink()
    damaged = _cli("verify", fake_run, "--no-progress")
    assert damaged.exit_code == 1
    lines = damaged.stdout.splitlines()
    assert lines[0].startswith("damaged:") and lines[1].split() == [
        "array",
        "block",
        "samples",
        "problem",
    ]
    assert lines[2].split()[:3] == ["layers/dense/activation", "1", "16-31"]
    assert "--repair" in lines[-1]
    repaired = _cli("verify", fake_run, "--repair", "--no-progress")
    assert repaired.exit_code == 1 and "repaired: blocks 1 marked uncommitted" in repaired.stdout
    assert _cli("verify", fake_run, "--no-progress").exit_code == 0
    assert tt.open_run(fake_run).samples == 32


EXPORTS = {  # damaged chunk (block 2: samples 32-47), the view that reads it, where
    "activation": (
        "layers/block.conv/activation/c.2.0.0.0",
        ["--view", "heatmap", "--layer", "block.conv", "--sample", "40"],
        "layer 'block.conv' activation, block 2 (samples 32-47)",
    ),
    "gradient": (
        "layers/block.conv/gradient/c.2.0.0.0",
        ["--view", "cam", "--layer", "block.conv", "--sample", "40"],
        "layer 'block.conv' gradient, block 2 (samples 32-47)",
    ),
    "stats": (
        "stats/block_histogram/c.2.0",
        ["--view", "distribution", "--layer", "dense"],
        "statistics block_histogram (every layer), block 2 (samples 32-47)",
    ),
    "commit record": ("committed/c.2", ["--view", "distribution"], "commit record"),
}


@pytest.mark.parametrize("how", ["delete", "truncate", "overwrite"])
@pytest.mark.parametrize("what", list(EXPORTS))
def test_export_of_a_damaged_block_is_one_line(
    fake_run: Path, tmp_path: Path, what: str, how: str
) -> None:
    pytest.importorskip("holoviews")
    chunk, view, where = EXPORTS[what]
    f = fake_run / chunk
    data = f.read_bytes()
    if how == "delete":
        f.unlink()
    elif how == "truncate":
        f.write_bytes(data[: len(data) // 2])
    else:
        f.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    out = tmp_path / "view.png"
    line = _one_line_error(_cli("export", fake_run, *view, "-o", out), where)
    assert "tensortap verify" in line and not out.exists()


def test_verify_of_a_missing_run_is_one_line(tmp_path: Path) -> None:
    _one_line_error(_cli("verify", tmp_path / "nowhere.zarr"), "does not exist")


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["capture", "m.keras", "x.npy"], "Missing option '-o' / '--output'"),
        (["export", "run.zarr", "--view", "bad", "-o", "x.png"], "'bad' is not one of"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["verify"], "Missing argument 'RUN'"),
        (["capture", "m", "d", "-o", "r", "--batch-size", "2.5"], "'2.5' is not a valid integer"),
    ],
)
def test_click_usage_errors_are_one_line(args: list[str], pattern: str) -> None:
    line = _one_line_error(_cli(*args), pattern)
    assert "--help`" in line  # where to look for what is allowed


# ---------------------------------------------------------------- with a real model file
@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keras = pytest.importorskip("keras")
    inputs = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(3, name="dense")(keras.layers.GlobalAveragePooling2D()(h))
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    keras.Model(inputs, outputs, name="tiny").save(path)
    return path


def test_hostile_captures_leave_the_run_as_it_was(model_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.random((80, 8, 8, 3)).astype(np.float32))
    np.save(tmp_path / "x120.npy", rng.random((120, 8, 8, 3)).astype(np.float32))
    np.save(tmp_path / "wrong.npy", rng.random((80, 9, 9, 2)).astype(np.float32))
    run = tmp_path / "run.zarr"
    common = ["--no-progress", "--batch-size", 16]
    done = _cli("capture", model_file, tmp_path / "x.npy", "-o", run, *common)
    assert done.exit_code == 0, done.stderr
    before = _hashes(run)
    _one_line_error(
        _cli("capture", model_file, tmp_path / "x.npy", "-o", run, "--dtype", "int7", *common),
        "dtype 'int7' is not allowed",
    )
    wrong = _cli("capture", model_file, tmp_path / "wrong.npy", "-o", run, "--overwrite", *common)
    assert wrong.exit_code == 2 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert _hashes(run) == before  # the 80-sample run is still there, byte for byte
    longer = _cli("capture", model_file, tmp_path / "x120.npy", "-o", run, "--resume", *common)
    _one_line_error(longer, "captured on 80 samples, the data now holds 120")
    assert _hashes(run) == before
    assert tt.open_run(run).samples == 80
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run.zarr",
        "wrong.npy",
        "x.npy",
        "x120.npy",
    ]
