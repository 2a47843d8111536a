"""Pictures a practitioner can trust (issue 15): CAMs that say what they explain and flag
flat maps, stored target classes, class names, colour bars, diverging maps, dead units by
index, bare layer names.  Every expectation comes from an independent fact: a model whose
maps are negative by construction, torch autograd, NumPy over the stored activations, or
the Matplotlib figure itself."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import holoviews as hv
import numpy as np
import pytest

import tensortap as tt
from tensortap import viz
from tensortap.core.errors import DataError, LayerNotFoundError, ViewError

torch = pytest.importorskip("torch")
nn = torch.nn

N, CLASSES = 12, 3
NAMES = ["zero", "one", "two"]


class FlattenHead(nn.Module):
    """conv → ReLU → max-pool → Flatten → Linear: the digits demo's shape of head."""

    def __init__(self, negative: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flat = nn.Flatten()
        self.head = nn.Linear(4 * 4 * 4, CLASSES)
        with torch.no_grad():
            self.conv.bias.fill_(0.1)  # every channel fires somewhere: none dead
            if negative:  # every class weighs every ReLU unit negatively: maps <= 0
                self.head.weight.copy_(-self.head.weight.abs())

    def forward(self, x):
        return self.head(self.flat(self.pool(self.act(self.conv(x)))))


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((N, 1, 8, 8)).astype("float32"), np.arange(N) % CLASSES


def _capture(path: Path, negative: bool = False, **options) -> tuple[tt.Run, nn.Module]:
    torch.manual_seed(0)
    model = FlattenHead(negative)
    x, y = _data()
    run = tt.capture(
        model, (x, y), store=path, gradients=True, batch_size=4, progress=False, **options
    )
    return run, model


@pytest.fixture(scope="module")
def negative(tmp_path_factory: pytest.TempPathFactory) -> tt.Run:
    return _capture(tmp_path_factory.mktemp("pic") / "neg.zarr", negative=True)[0]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[tt.Run, nn.Module]:
    path = tmp_path_factory.mktemp("pic") / "label.zarr"
    return _capture(path, target="label", class_names=NAMES)


def _raw_gradcam(run: tt.Run, key: str) -> np.ndarray:
    """Grad-CAM before its ReLU, from the stored tensors (channel, height, width)."""
    a = run.activation(key).values.astype(np.float64)
    g = run.gradient(key).values.astype(np.float64)
    weights = g.mean(axis=(2, 3))
    return np.einsum("nchw,nc->nhw", a, weights)


# ------------------------------------------------------------------ CAMs say what they explain
def test_cam_of_a_negative_head_is_flagged_with_cause_and_fix(negative: tt.Run) -> None:
    raw = _raw_gradcam(negative, "act")
    assert (raw.reshape(N, -1).max(axis=1) <= 0).all()  # the fact the model was built for
    result = tt.cam(negative, "act", upsample=False)
    assert result.attrs["flat_samples"] == list(range(N))
    assert "<= 0 everywhere before its ReLU" in result.attrs["warning"]
    assert "layercam" in result.attrs["flat_reason"]  # what to try
    with pytest.warns(UserWarning, match="zero everywhere"):
        figure = viz.cam_figure(negative, "act", sample=1)
    assert "⚠" in figure.opts.get().kwargs["title"]
    with pytest.warns(UserWarning, match="zero everywhere"):
        grid = viz.cam_grid(negative, "act", samples=range(4))
    assert "4 of 4 maps flat" in grid.opts.get().kwargs["title"]


def test_cam_of_a_healthy_map_is_not_flagged(labelled: tuple[tt.Run, nn.Module]) -> None:
    run, _ = labelled
    raw = _raw_gradcam(run, "act")
    flat = np.flatnonzero(raw.reshape(N, -1).max(axis=1) <= 0)
    result = tt.cam(run, "act", upsample=False)
    assert result.attrs["flat_samples"] == flat.tolist()  # the NumPy reference decides
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = [s for s in range(N) if s not in flat][0]
        title = viz.cam_overlay(run, "act", sample=good).opts.get().kwargs["title"]
    assert "⚠" not in title


@pytest.mark.filterwarnings("ignore:.*maps of 'act' are zero")
def test_cam_attrs_name_method_class_source_and_score(labelled: tuple[tt.Run, nn.Module]) -> None:
    run, _ = labelled
    result = tt.cam(run, "act", method="gradcam++", upsample=False)
    _, y = _data()
    assert result.attrs["method"] == "gradcam++" and result.attrs["layer"] == "act"
    assert result.attrs["target_source"] == "label"
    assert result.attrs["score"] == run.attrs["score"] != ""
    np.testing.assert_array_equal(result["target_class"].values, y)
    one = tt.cam(run, "act", sample=[4], upsample=False)
    assert one.attrs["explains"] == "class 1 (one), the label"
    title = viz.cam_overlay(run, "act", sample=4).opts.get().kwargs["title"]
    assert "gradcam" in title and "explains 1 (one), label" in title
    assert "label 1 (one)" in title  # class names wherever a label is


def test_predicted_target_classes_are_the_models_argmax(tmp_path: Path) -> None:
    run, model = _capture(tmp_path / "pred.zarr")
    x, _ = _data()
    with torch.no_grad():
        argmax = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(run.target_classes.values, argmax)
    result = tt.cam(run, "act", upsample=False)
    np.testing.assert_array_equal(result["target_class"].values, argmax)
    assert result.attrs["target_source"] == "predicted"


def test_a_per_sample_target_array_is_stored_and_explained(tmp_path: Path) -> None:
    classes = np.array([2, 0, 1, 1, 2, 0, 0, 1, 2, 2, 1, 0])
    run, model = _capture(tmp_path / "classes.zarr", target=classes)
    np.testing.assert_array_equal(run.target_classes.values, classes)
    # The stored gradients are those of each sample's own class: d score_c / d logits is
    # the one-hot row of c, and torch autograd gives the same at the convolution.
    np.testing.assert_array_equal(run.gradient("head").values, np.eye(CLASSES)[classes])
    x, _ = _data()
    conv_out = {}
    hook = model.conv.register_forward_hook(lambda m, i, o: conv_out.setdefault("a", o))
    logits = model(torch.from_numpy(x))
    hook.remove()
    (expected,) = torch.autograd.grad(
        logits[torch.arange(N), torch.from_numpy(classes)].sum(), conv_out["a"]
    )
    np.testing.assert_allclose(run.gradient("conv").values, expected.numpy(), atol=1e-6)
    position = int(np.flatnonzero(classes == 2)[0])
    viz.cam_overlay(run, "act", sample=position, class_index=2)  # was refused before
    with pytest.raises(ViewError, match=f"class 2 for sample {position}\\), not class 0"):
        viz.cam_overlay(run, "act", sample=position, class_index=0)
    assert tt.cam(run, "act", upsample=False).attrs["target_source"] == "given"


def test_a_callable_target_records_what_it_computes(tmp_path: Path) -> None:
    def first_minus_second(outputs, labels):
        return outputs[:, 0] - outputs[:, 1]

    run, _ = _capture(tmp_path / "callable.zarr", target=first_minus_second)
    assert "first_minus_second" in run.attrs["target"]
    assert "logits" not in run.attrs["score"] and "first_minus_second" in run.attrs["score"]
    result = tt.cam(run, "act", upsample=False)
    assert result.attrs["target_source"] == "callable"
    assert "first_minus_second" in result.attrs["explains"]
    assert (result["target_class"].values == -1).all()


# ------------------------------------------------------------------ class names
def test_class_names_are_stored_and_checked(
    labelled: tuple[tt.Run, nn.Module], tmp_path: Path
) -> None:
    run, _ = labelled
    assert run.class_names == tuple(NAMES)
    assert tt.open_run(run.path).attrs["class_names"] == NAMES
    with pytest.raises(DataError, match="2 class_names but the model's output has 3 classes"):
        _capture(tmp_path / "bad.zarr", class_names=["a", "b"])
    with pytest.raises(DataError, match="repeats"):
        _capture(tmp_path / "dup.zarr", class_names=["a", "a", "b"])
    with pytest.raises(DataError, match="list of strings"):
        _capture(tmp_path / "str.zarr", class_names="abc")


# ------------------------------------------------------------------ colour bars, layout
def _figure(obj: hv.core.Dimensioned):
    return hv.render(obj, backend="matplotlib")


def _colourbars(figure) -> list:
    return [ax for ax in figure.axes if getattr(ax, "_colorbar", None) is not None]


def _text_boxes(figure) -> list[tuple[str, object]]:
    """Every visible title, axis label and suptitle with its extent in display pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()
    texts = [t for t in figure.texts if t.get_visible() and t.get_text()]
    for ax in figure.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
    return [
        (t.get_text(), t.get_window_extent(renderer))
        for t in texts
        if t.get_visible() and t.get_text().strip()
    ]


def _assert_no_overlap(figure) -> None:
    boxes = _text_boxes(figure)
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"


@pytest.mark.filterwarnings("ignore:.*maps of 'act' are zero")
def test_heatmap_pngs_have_colour_bars_and_no_overlapping_text(
    labelled: tuple[tt.Run, nn.Module],
) -> None:
    run, _ = labelled
    views = {
        "grid": viz.feature_maps(run, "conv", sample=0),
        "one channel": viz.feature_maps(run, "conv", sample=0, channels=[2]),
        "dense": viz.feature_maps(run, "flat", sample=0),
        "cam": viz.cam_figure(run, "act", sample=4),
        "mosaic": viz.feature_mosaic(run, "conv", sample=0),
    }
    for name, view in views.items():
        figure = _figure(view)
        assert _colourbars(figure), f"{name}: no colour bar"
        _assert_no_overlap(figure)
    from tensortap.cli.export import build_view

    for name in ("cam_overlay", "cam_grid"):  # RGB blends: the scale is a tile beside them
        figure = _figure(build_view(run, name, "act", 4, None, "gradcam"))
        assert _colourbars(figure), f"--view {name}: no colour bar"
        _assert_no_overlap(figure)
    figure = _figure(build_view(run, "layers", None, 0, None, "gradcam"))
    letters = [ax for ax in figure.axes for t in ax.texts if t.get_text() in ("A", "B")]
    assert not letters  # HoloViews' panel letters were drawn over the titles
    _assert_no_overlap(figure)


def test_signed_maps_use_a_diverging_colour_map_centred_at_zero(negative: tt.Run) -> None:
    conv = negative.activation("conv").values[0]  # before the ReLU: both signs
    assert conv.min() < 0 < conv.max()
    image = viz.feature_maps(negative, "conv", sample=0, channels=[0])
    options = image.opts.get().kwargs
    bound = max(-conv[0].min(), conv[0].max())
    assert options["cmap"] == "RdBu_r" and options["clim"] == pytest.approx((-bound, bound))
    after = negative.activation("act").values[0]  # after the ReLU: >= 0
    relu = viz.feature_maps(negative, "act", sample=0, channels=[0]).opts.get().kwargs
    assert relu["cmap"] == "viridis" and relu["clim"][0] >= 0 and after.min() >= 0


def test_dense_layers_are_a_near_square_unit_grid(labelled: tuple[tt.Run, nn.Module]) -> None:
    run, _ = labelled
    units = run.activation("flat").values[3]  # 64 units
    image = viz.feature_maps(run, "flat", sample=3)
    grid = image.dimension_values(2, flat=False)  # HoloViews returns row 0 first
    assert grid.shape == (8, 8)
    np.testing.assert_allclose(grid.ravel(), units, rtol=1e-6)
    assert "unit = row × 8 + column" in image.kdims[1].label
    import xarray as xr

    from tensortap.viz._run import unit_grid

    padded = unit_grid(xr.DataArray(np.arange(50.0), dims=("unit",)))
    assert padded.shape == (7, 8) and np.isnan(padded.values.ravel()[50:]).all()
    np.testing.assert_array_equal(padded.values.ravel()[:50], np.arange(50.0))


# ------------------------------------------------------------------ dead units by index
def test_dead_units_are_listed_by_index(negative: tt.Run, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = FlattenHead(negative=False)
    with torch.no_grad():
        model.conv.bias[[1, 3]] = -100.0  # channels 1 and 3 can never fire
    x, y = _data()
    run = tt.capture(model, (x, y), store=tmp_path / "dead.zarr", progress=False)
    act = run.activation("act").values
    expected = np.flatnonzero(act.max(axis=(0, 2, 3)) <= 0)
    assert expected.tolist() == [1, 3]
    rows = {r["layer"]: r for r in viz.unit_health(run)}
    assert rows["act"]["dead_units"] == expected.tolist()
    assert rows["pool"]["derived"] and not rows["act"]["derived"]
    table = viz.dead_units(run, "act")
    assert isinstance(table, hv.Table)
    assert table.dimension_values("unit").tolist() == [1, 3]
    pooled = viz.dead_units(run, "pool").opts.get().kwargs["title"]
    assert "inherits its input's dead channels" in pooled
    bars = viz.dead_units(run).opts.get().kwargs["title"]
    assert "pooling/reshaping layers inherit (not counted)" in bars
    grid_title = viz.feature_maps(run, "act", sample=0).opts.get().kwargs["title"]
    assert "⚠ dead (never > 0 in the run): 1, 3" in grid_title
    with pytest.warns(UserWarning, match="channel 3 of 'act' is dead"):
        top = viz.top_samples(run, "act", channel=3, k=2)
    assert "is dead" in top.opts.get().kwargs["title"]

    from tensortap.cli.info import info_text

    report = info_text(str(tmp_path / "dead.zarr"))
    assert "act: 2 of 4 dead [1, 3]" in report
    assert "pool: 2 of 4 dead [1, 3]  (inherited from its input)" in report


# ------------------------------------------------------------------ names
class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential()
        self.body.add_module("features", nn.Conv2d(1, 2, 3))
        self.body.add_module("act", nn.ReLU())
        self.act = nn.ReLU()
        self.flat = nn.Flatten()
        self.head = nn.Linear(2 * 6 * 6, 2)

    def forward(self, x):
        return self.head(self.flat(self.act(self.body(x))))


def test_views_accept_a_unique_bare_layer_name(tmp_path: Path) -> None:
    x, _ = _data()
    run = tt.capture(Nested(), x, store=tmp_path / "nested.zarr", gradients=True, progress=False)
    assert "body.features" in run.layers
    np.testing.assert_array_equal(
        run.activation("features").values, run.activation("body.features").values
    )
    assert run.stats("features")["max"].shape == (2,)
    assert tt.cam(run, "features", upsample=False).attrs["layer"] == "features"
    viz.feature_maps(run, "features", sample=0)
    assert run.node("act")["key"] == "act"  # an exact key wins over a bare name
    from tensortap.core.selection import resolve_layer_key

    assert resolve_layer_key(["a.conv", "b.conv"], "conv") is None  # ambiguous: refused
    with pytest.raises(LayerNotFoundError, match="did you mean"):
        run.activation("feature")
