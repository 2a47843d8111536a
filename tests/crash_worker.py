"""Subprocess for tests/test_crash.py: capture a fake model slowly until killed.

usage: python crash_worker.py RUN_PATH N_SAMPLES DELAY_S [--resume] [--block-size=N]
       [--size=N] [--channels=N]

Batches of 8; blocks of one batch unless ``--block-size`` (tests/test_block_size.py) says;
images of 16² and 8 channels unless ``--size`` / ``--channels`` say (tests/test_store_stream.py:
layers large enough to be sharded and streamed).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from fake_backend import FakeBackend, FakeModel, FakeSession, images  # noqa: E402

import tensortap as tt  # noqa: E402


class SlowSession(FakeSession):
    delay = 0.0

    def run(self, inputs, classes=None, labels=None):  # type: ignore[no-untyped-def]
        time.sleep(self.delay)
        return super().run(inputs, classes, labels)


class SlowBackend(FakeBackend):
    def session(self, model, nodes, *, gradients=False, target=None):  # type: ignore[no-untyped-def]
        return SlowSession(model, nodes, gradients, target)


def main() -> None:
    path, n, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    SlowSession.delay = delay

    def option(name: str, default: int | None) -> int | None:
        given = [int(a.split("=", 1)[1]) for a in sys.argv if a.startswith(f"--{name}=")]
        return given[-1] if given else default

    size, channels = option("size", 16), option("channels", 8)
    model = FakeModel(size=size, channels=channels)  # type: ignore[arg-type]
    x = images(n, size=size)  # type: ignore[arg-type]
    y = np.arange(n) % 3
    tt.capture(
        model,
        (x, y),
        store=path,
        backend=SlowBackend(),
        batch_size=8,
        block_size=option("block-size", 8),
        gradients=True,
        progress=False,
        resume="--resume" in sys.argv,
    )


if __name__ == "__main__":
    main()
