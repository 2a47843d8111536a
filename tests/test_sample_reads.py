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


def _three_block_run(path: Path) -> tuple[FakeModel, np.ndarray, tt.Run]:
    """96 images captured to ``path`` in three blocks, so positions fall in different
    chunks; the model and its inputs, for the reference."""
    model, x = FakeModel(size=16, channels=8), images(96, size=16)
    run = tt.capture(
        model,
        x,
        store=path,
        backend=FakeBackend(),
        batch_size=8,
        block_size=32,
        progress=False,
    )
    return model, x, run


def test_take_samples_equals_the_model_and_isel(tmp_path: Path) -> None:
    model, x, run = _three_block_run(tmp_path / "r.zarr")
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


def test_indexed_run_reads_the_same_samples_without_dask(tmp_path: Path) -> None:
    model, x, _ = _three_block_run(tmp_path / "r.zarr")
    run = tt.open_run(tmp_path / "r.zarr")
    view = run.indexed()
    assert view is run.indexed() and view.samples == run.samples == 96
    activation = view.activation("block.conv")
    assert activation.chunks is None  # xarray's lazy indexing: zarr reads the positions
    reference = model.forward(x)["block.conv"]
    positions = [70, 3, 40, 3, -1]
    got = take_samples(activation, positions)
    # Still lazy: the test of ``.data`` it replaced read all of a lazily indexed array.
    assert not activation.variable._in_memory and not got.variable._in_memory
    np.testing.assert_array_equal(got.values, reference[[70, 3, 40, 3, 95]])
    np.testing.assert_array_equal(got["sample"].values, [70, 3, 40, 3, 95])
    np.testing.assert_array_equal(view.inputs().isel(sample=[5, 1]).values, x[[5, 1]])
    run.refresh()
    assert run.indexed() is not view  # a refresh may see new samples: a new view
