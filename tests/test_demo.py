"""`tensortap demo` (what `make demo` runs) works end to end from a clean folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tensortap as tt


@pytest.mark.slow
def test_demo_trains_captures_and_summarises(tmp_path: Path) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "tensortap", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "held-out accuracy" in out and "conv2" in out and "|grad|" in out
    run = tt.open_run(tmp_path / "runs" / "demo.zarr")
    assert run.status == "complete" and run.samples == 360
    assert run.attrs["score"] == "logits (pre-softmax)"
    for picture in ("demo_feature_maps.png", "demo_gradcam.png"):
        pixels = np.asarray(Image.open(tmp_path / "runs" / picture).convert("L"), dtype=float)
        assert pixels.var() > 100, f"{picture} is blank"
    # the stderr the user sees holds no TensorFlow start-up chatter
    assert "oneDNN" not in done.stderr and "cuInit" not in done.stderr
