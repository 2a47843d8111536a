"""Views over the steps of a training run (issue 14), against the stored tensors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("holoviews")

from tensortap import viz  # noqa: E402
from tensortap.core.errors import ViewError  # noqa: E402

from .training_models import torch_training_run  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return torch_training_run(tmp_path_factory.mktemp("views") / "run.zarr", steps=8, every=2)


def test_heatmap_cells_are_the_stored_bins(run):
    heat = viz.histogram_over_steps(run, "3")
    frame = heat.dframe()
    tensors = {int(s): run.activation("3", step=int(s)).values for s in run.tensor_steps}
    stats = run.stats("3")
    for position, step in enumerate(run.step_values):
        edges = stats["bin_edges"].values[position]
        values = tensors[int(step)].ravel().astype(np.float64)
        reference, _ = np.histogram(values[(values >= edges[0]) & (values < edges[-1])], edges)
        low_row = frame["y0"].values <= step
        rows = frame[low_row & (frame["y1"].values > step)]
        got = np.zeros(len(edges) - 1)
        got[np.searchsorted(edges, rows["x0"].values)] = rows["count"].values
        np.testing.assert_array_equal(got, reference)  # exact bins, never re-binned
    offset = viz.histogram_over_steps(run, "3", mode="offset")
    assert len(offset) == len(run.step_values)
    with pytest.raises(ViewError, match="mode='ridge'"):
        viz.histogram_over_steps(run, "3", mode="ridge")


def test_curves_and_dead_units_match_the_tensors(run):
    layout = viz.step_curves(run, ["1", "4"])
    mean_panel = layout[0]
    for curve in mean_panel:
        key = curve.label
        data = dict(zip(curve.dimension_values(0), curve.dimension_values(1), strict=True))
        for step in run.tensor_steps:
            values = run.activation(key, step=int(step)).values.astype(np.float64)
            assert data[step] == pytest.approx(values.mean(), rel=1e-6)
    dead = viz.dead_units_over_steps(run, ["1"])
    curve = next(iter(dead))
    data = dict(zip(curve.dimension_values(0), curve.dimension_values(1), strict=True))
    for step in run.tensor_steps:
        values = run.activation("1", step=int(step)).values  # (sample, channel, h, w)
        reference = (values.max(axis=(0, 2, 3)) <= 0).mean()
        assert data[step] == pytest.approx(reference)


def test_compare_steps_and_export(run, tmp_path):
    first, last = (int(s) for s in run.tensor_steps[[0, -1]])
    layout = viz.compare_steps(run, first, last, key="0")
    assert layout is not None
    rows = viz.compare_table(run.at(first), run.at(last))
    values = run.activation("0", step=last).values.astype(np.float64)
    row = next(r for r in rows if r["layer"] == "0")
    assert row["mean_b"] == pytest.approx(values.mean(), rel=1e-6)
    viz.save(viz.histogram_over_steps(run, "0", log=True), tmp_path / "heat.png")
    viz.save(viz.step_curves(run), tmp_path / "curves.html")
    assert (tmp_path / "heat.png").stat().st_size > 1000
    assert (tmp_path / "curves.html").stat().st_size > 1000


def test_a_capture_run_has_no_steps(tmp_path):
    class NotTraining:
        path = "runs/x.zarr"

    with pytest.raises(ViewError, match="capture run without steps"):
        viz.step_curves(NotTraining())
