"""A small PyTorch CNN for the worker-death and cluster-check tests, importable by Dask workers.

PyTorch, not Keras: a restarted worker process imports it in about a second.  Every process
builds the same weights (``torch.manual_seed``) and computes on one thread, so a worker's
blocks are bit-equal to a single-process capture.  With ``log_dir`` the network appends the
sample ids it computes (input channel 0, pixel 0, carries the id) to one file per process,
so a test can tell which process computed which sample; ``delay`` slows each forward so a
test can kill a worker in the middle of its range.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Recorder(nn.Module):
    """Identity that logs the ids of the samples it sees and waits ``delay`` seconds; the
    sample ``kill_at`` SIGKILLs the process computing it (a crash in native code)."""

    def __init__(self, log_dir: str | None, delay: float, kill_at: int | None = None) -> None:
        super().__init__()
        self.log_dir, self.delay, self.kill_at = log_dir, delay, kill_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x[:, 0, 0, 0].detach().round().to(torch.int64).tolist()
        if self.kill_at is not None and self.kill_at in ids:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.log_dir is not None:
            with open(Path(self.log_dir) / f"{os.getpid()}.log", "a") as log:
                log.write(" ".join(map(str, ids)) + "\n")
        if self.delay:
            time.sleep(self.delay)
        return x


def scale_net(
    log_dir: str | None = None, delay: float = 0.0, kill_at: int | None = None
) -> nn.Module:
    """``(3, 8, 8) -> conv(4) -> relu -> pool -> linear(3) -> softmax``, same weights everywhere."""
    torch.set_num_threads(1)  # what Dask gives each worker: bit-equal across processes
    torch.manual_seed(0)
    model = nn.Sequential(
        Recorder(log_dir, delay, kill_at),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
        nn.Softmax(dim=1),
    )
    return model.eval()


def saved_net(path: str) -> nn.Module:
    """:func:`scale_net` with its weights loaded from ``path`` (a ``torch.save`` state dict)."""
    model = scale_net()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


def samples_by_process(log_dir: Path) -> dict[str, set[int]]:
    """``{process id: sample ids it computed}`` from the logs of :class:`Recorder`."""
    return {
        log.stem: {int(i) for line in log.read_text().split("\n") for i in line.split()}
        for log in log_dir.glob("*.log")
    }


def images_with_ids(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 3, 8, 8)`` float32 images whose channel 0, pixel 0 holds the sample's index."""
    x = np.random.default_rng(seed).normal(size=(n, 3, 8, 8)).astype(np.float32)
    x[:, 0, 0, 0] = np.arange(n, dtype=np.float32)
    return x


def cached_model_count() -> int:
    """Models cached in this worker process (``client.run(cached_model_count)``)."""
    from tensortap.core.distributed import _MODELS

    return len(_MODELS)
