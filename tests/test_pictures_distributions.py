"""Distributions a practitioner can read (issue 15): log counts when a spike dominates, the
values outside the fixed edges drawn and counted, one box per channel.  Expectations come
from NumPy over the stored activations, never from the stored statistics themselves."""

from __future__ import annotations

from pathlib import Path

import holoviews as hv
import numpy as np
import pytest

import tensortap as tt
from tensortap import viz

torch = pytest.importorskip("torch")
nn = torch.nn


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tt.Run:
    """A 1×1 conv + ReLU whose later blocks are 40× larger than the first: the histogram
    edges, fixed from block 0, cannot hold them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -1.0, 0.5]).reshape(3, 1, 1, 1))
        model[0].bias.copy_(torch.tensor([0.0, -0.01, -0.2]))  # channel 1 is never > 0
    rng = np.random.default_rng(0)
    x = rng.random((12, 1, 6, 6)).astype("float32")
    x[4:] *= 40.0
    store = tmp_path_factory.mktemp("dist") / "run.zarr"
    # One batch a block: block 0 alone fixes the edges (a block sized by bytes would hold all).
    return tt.capture(model, x, store=store, batch_size=4, block_size=4, progress=False)


def _elements(overlay: hv.Overlay) -> list:
    return list(overlay.values())


def test_values_outside_the_edges_are_drawn_and_counted(run: tt.Run) -> None:
    key = run.layers[0]  # the conv, before the ReLU
    values = run.activation(key).values.ravel()
    edges = run.stats(key)["bin_edges"].values
    above = int((values >= edges[-1]).sum())
    below = int((values < edges[0]).sum())
    assert above > 0  # the fact the data were built for
    view = viz.distribution(run, key, log=False)
    bars = {e.label: e for e in _elements(view) if isinstance(e, hv.Histogram) and e.label}
    assert bars["above the edges"].dimension_values(1)[0] == above
    assert bars["above the edges"].edges[-1] == pytest.approx(values.max(), rel=1e-6)
    assert (below > 0) == ("below the edges" in bars)
    assert f"{above:,} above the edges" in view.opts.get().kwargs["title"]


def test_log_counts_when_the_zero_spike_dominates(run: tt.Run) -> None:
    relu = run.layers[1]
    values = run.activation(relu).values.ravel()
    assert (values == 0).mean() > 0.2  # a spike of exact zeros
    histogram = _elements(viz.distribution(run, relu))[0]
    assert histogram.vdims[0].label == "log10(1 + count)"
    counts = np.histogram(values, bins=run.stats(relu)["bin_edges"].values)[0]
    np.testing.assert_allclose(histogram.dimension_values(1), np.log10(1 + counts))
    conv = run.activation(run.layers[0]).values.ravel()
    conv_counts = np.histogram(conv, bins=run.stats(run.layers[0])["bin_edges"].values)[0]
    assert conv_counts.max() < 0.2 * conv.size  # no spike before the ReLU
    linear = _elements(viz.distribution(run, run.layers[0]))[0]
    assert linear.vdims[0].label == "count"


def test_one_box_per_channel_from_the_stored_statistics(run: tt.Run) -> None:
    relu = run.layers[1]
    act = run.activation(relu).values  # (sample, channel, height, width)
    per_channel = act.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    view = viz.unit_distributions(run, relu)
    elements = {e.label: e for e in _elements(view)}
    boxes = elements["mean ± std"]
    live = [c for c in range(3) if per_channel[c].max() > 0]
    np.testing.assert_allclose(
        boxes.dimension_values("y1"),
        [per_channel[c].mean() + per_channel[c].std() for c in live],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        elements["mean"].dimension_values(1), per_channel.mean(axis=1), rtol=1e-5, atol=1e-9
    )
    dead = [c for c in range(3) if per_channel[c].max() <= 0]
    assert dead == [1]
    np.testing.assert_array_equal(elements["dead"].dimension_values(0), dead)
    assert "1 of 3 dead" in view.opts.get().kwargs["title"]
    ordered = viz.unit_distributions(run, relu, order="mean")
    ticks = [label for _, label in ordered.opts.get().kwargs["xticks"]]
    assert ticks == [str(c) for c in np.argsort(-per_channel.mean(axis=1), kind="stable")]


def test_the_per_channel_view_renders_without_overlapping_labels(
    run: tt.Run, tmp_path: Path
) -> None:
    figure = hv.render(viz.unit_distributions(run, run.layers[1]), backend="matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()
    (ax,) = [a for a in figure.axes if a.get_visible()]
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert viz.save(viz.distribution(run, run.layers[0]), tmp_path / "d.png").stat().st_size
