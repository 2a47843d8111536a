"""Bad arguments to ``capture``, ``export``, ``explain`` end in exit status 2 and one stderr
line naming the value received, what is allowed and the fix (issue 20).

Each case is one that used to fail otherwise: a traceback (``explain --target 77``), progress
bars before the error (``explain --layer nope``), no fix named, or accepted (``--image-size 0``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tensortap as tt
from tensortap.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(2, name="logits"),
        ]
    )
    folder = tmp_path_factory.mktemp("cli_errors")
    x = np.random.default_rng(0).random((6, 12, 12, 1)).astype("float32")
    np.save(folder / "x.npy", x)
    model.save(folder / "m.keras")
    tt.capture(model, x, store=folder / "run.zarr", progress=False)
    return {
        "M": str(folder / "m.keras"),
        "X": str(folder / "x.npy"),
        "R": str(folder / "run.zarr"),
        "O": str(folder / "new.zarr"),
    }


CASES = [
    # (arguments with M/X/R/O placeholders, what the one line must say)
    (["capture", "M", "X", "-o", "O", "--target", "9"], r"target class 9 is out of range.*\(0\.\.1\); pass a class in 0\.\.1"),
    (["capture", "M", "X", "-o", "O", "--target", "-1"], r"target class -1 is negative.*pass a class index >= 0"),
    (["capture", "M", "X", "-o", "O", "--image-size", "0", "8"], r"'--image-size': 0 is not in the range x>=1"),
    (["capture", "M", "X", "-o", "O", "--workers", "0"], r"'--workers': 0 is not in the range x>=1"),
    (["capture", "M", "X", "-o", "O", "--workers", "two"], r"'--workers': 'two' is not a valid integer"),
    (["capture", "M", "X", "-o", "O", "--batch-size", "2.5"], r"'--batch-size': '2\.5' is not a valid integer"),
    (["capture", "M", "X", "-o", "O", "--block-size", "3", "--batch-size", "2"], r"block_size=3 is not a positive multiple of batch_size=2; pass"),
    (["export", "R", "--view", "heatmap", "--sample", "99", "-o", "O.png"], r"sample 99 is out of range.*pass a sample in 0\.\.5"),
    (["export", "R", "--view", "heatmap", "--sample", "x", "-o", "O.png"], r"'--sample': 'x' is not a valid integer"),
    (["export", "R", "--view", "heatmap", "--channel", "-2", "-o", "O.png"], r"channel -2 is out of range.*pass a channel in 0\.\.3"),
    (["export", "R", "--view", "gallery", "--samples", "0-99", "-o", "O.png"], r"sample 6 is out of range.*pass a sample in 0\.\.5"),
    (["explain", "M", "R", "--method", "occlusion", "--target", "77"], r"target class 77, outside the model's 2 classes.*pass a class index in 0\.\.1"),
    (["explain", "M", "R", "--method", "integrated_gradients", "--target", "5"], r"target class 5, outside the model's 2 classes"),
    (["explain", "M", "R", "--method", "scorecam", "--layer", "nope"], r"layer 'nope' is not in the run.*did you mean"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(c[0][3:]) for c in CASES])
def test_bad_argument_is_one_line_and_exit_2(
    files: dict[str, str], args: list[str], message: str
) -> None:
    argv = [files.get(a, a) for a in args]
    argv = [files["O"] + ".png" if a == "O.png" else a for a in argv]
    result = CliRunner().invoke(main, argv)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not Path(files["O"]).exists()  # a refused capture leaves no run behind
