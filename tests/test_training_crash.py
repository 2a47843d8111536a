"""A training killed with SIGKILL keeps every committed step readable (issue 14)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import tensortap as tt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    from training_models import digits, torch_cnn
    import tensortap as tt
    x, y, px, py = digits(n_probe=32)
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()); y = torch.from_numpy(y)
    model = torch_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = tt.Monitor(model, px.transpose(0, 3, 1, 2).copy(), {store!r}, every=1,
                         policy={policy!r}).open()
    step = 0
    while True:  # trains until killed
        start = (step * 32) % (len(x) - 32)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[start:start + 32]), y[start:start + 32])
        loss.backward()
        optimizer.step()
        monitor.step(loss)
        step += 1
        print("step", step, flush=True)
    """
)


# Steps with tensors are written by the writer thread, statistics-only ones by the training
# thread itself (core/training.py): both keep the commit rule.
@pytest.mark.parametrize("policy", ["full", "stats"])
def test_sigkill_keeps_committed_steps(tmp_path, policy):
    store = tmp_path / "killed.zarr"
    script = SCRIPT.format(tests=str(ROOT / "tests"), store=str(store), policy=policy)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:
            if line.startswith("step") and int(line.split()[1]) >= 12:
                break
            assert time.monotonic() < deadline, "the training did not start"
        os.kill(proc.pid, signal.SIGKILL)  # mid-training, writes in flight
    finally:
        proc.kill()
        proc.wait()
    run = tt.open_run(store)
    assert run.status == "capturing"  # never finished, yet readable
    steps = run.step_values
    assert len(steps) >= 1
    np.testing.assert_array_equal(steps, np.arange(len(steps)))  # a prefix, each once
    for step in steps:
        for key in ("0", "7"):
            if policy == "full":
                assert np.isfinite(run.activation(key, step=int(step)).values).all()
            assert int(run.stats(key, step=int(step))["count"].sum()) > 0
