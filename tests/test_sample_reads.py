"""Reading scattered samples of a run on disk (core/sample_reads.py).

The reference is the model's own output for those samples, and ``isel`` with the same
positions: the per-slice reads must give exactly the same values, in the order asked.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (import-mode=importlib)
from fake_backend import FakeBackend, FakeModel, images  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap.core.sample_reads import MAX_SCATTERED, take_samples  # noqa: E402


def test_take_samples_equals_the_model_and_isel(tmp_path: Path) -> None:
    model, x = FakeModel(size=16, channels=8), images(96, size=16)
    run = tt.capture(
        model,
        x,
        store=tmp_path / "r.zarr",
        backend=FakeBackend(),
        batch_size=8,
        block_size=32,  # three blocks, so positions fall in different chunks
        progress=False,
    )
    activation = run.activation("block.conv")
    assert hasattr(activation.data, "dask")  # the case that needs per-slice reads
    reference = model.forward(x)["block.conv"]
    for positions in ([70, 3, 40, 3], [-1, 0], [5, 6, 7], list(range(0, 96, 1))[::-1]):
        got = take_samples(activation, positions)
        wanted = [p % 96 for p in positions]
        np.testing.assert_array_equal(got.values, reference[wanted])
        np.testing.assert_array_equal(got.values, activation.isel(sample=positions).values)
        np.testing.assert_array_equal(got["sample"].values, np.arange(96)[wanted])
    assert len(range(0, 96)) > MAX_SCATTERED  # the last case took the plain isel path
    assert take_samples(activation, []).sizes["sample"] == 0
