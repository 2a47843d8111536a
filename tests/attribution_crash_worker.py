"""Subprocess for tests/test_capture_attributions.py: capture a torch CNN with input
attributions slowly (one block per batch), until killed.

usage: python attribution_crash_worker.py RUN_PATH DELAY_S [--resume]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch import nn

import tensortap as tt

N, BATCH = 24, 4
METHODS = ["saliency", "gradient_x_input", "smoothgrad", "integrated_gradients"]
OPTIONS = {"n_samples": 3, "sigma": 0.2, "seed": 7, "steps": 6}


class Slow(nn.Module):
    """Sleeps in every forward pass (the capture's and SmoothGrad / IG's)."""

    delay = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        return x


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        Slow(),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    ).eval()


def data() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(N, 3, 6, 6)).astype(np.float32)


def capture(path: str | None, *, resume: bool = False) -> tt.Run:
    return tt.capture(
        model(),
        data(),
        store=path,
        layers=["1"],
        batch_size=BATCH,
        block_size=BATCH,
        progress=False,
        resume=resume,
        attributions=METHODS,
        attribution_options=OPTIONS,
    )


if __name__ == "__main__":
    Slow.delay = float(sys.argv[2])
    capture(sys.argv[1], resume="--resume" in sys.argv)
