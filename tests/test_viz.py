"""Views (viz/): each builds from a real run, finds dims by name, exports PNG/HTML, fails clearly."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, ClassVar

import holoviews as hv
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (import-mode=importlib)
from fake_runs import FakeRun  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap import viz  # noqa: E402

N = 12


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tt.Run:
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(6, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv_2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="sigmoid", name="head"),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.random((N, 16, 16, 3)).astype("float32")
    y = np.arange(N) % 3
    store = tmp_path_factory.mktemp("viz") / "run.zarr"
    return tt.capture(model, (x, y), store=store, gradients=True, batch_size=4, progress=False)


def _fake(channels_first: bool = False, inputs: bool = True) -> FakeRun:
    rng = np.random.default_rng(3)
    conv = rng.normal(size=(5, 6, 7, 4))
    conv[..., 1] = -np.abs(conv[..., 1])  # channel 1 never > 0: dead
    grad = rng.normal(size=conv.shape)
    dims = ("height", "width", "channel")
    if channels_first:
        conv, grad, dims = (
            conv.transpose(0, 3, 1, 2),
            grad.transpose(0, 3, 1, 2),
            ("channel", "height", "width"),
        )
    sig = rng.uniform(0.1, 0.9, size=(5, 4))
    sig[:, 2] = 0.999  # stuck at the top: saturated
    return FakeRun(
        {
            "conv": (dims, conv),
            "dense": (("unit",), rng.normal(size=(5, 10))),
            "seq": (("time", "feature"), rng.normal(size=(5, 8, 3))),
            "head_sigmoid": (("unit",), sig),
        },
        gradients={"conv": grad},
        inputs=(("height", "width", "channel"), rng.random((5, 24, 28, 3))) if inputs else None,
        labels=np.arange(5) % 2,
        predictions=np.arange(5) % 2,
    )


def _tile_values(layout: hv.NdLayout) -> dict[int, np.ndarray]:
    return {
        int(k[0] if isinstance(k, tuple) else k): v.dimension_values(2, flat=False)
        for k, v in layout.items()
    }


# ----------------------------------------------------------------------------- each view builds
def test_every_view_builds_from_a_real_run(run: tt.Run) -> None:
    assert isinstance(viz.feature_maps(run, "conv", sample=2), hv.NdLayout)
    assert isinstance(viz.feature_maps(run, "gap"), hv.Image)  # dense: one strip
    frame = viz.feature_map(run)["conv_2", 3, 5]
    assert isinstance(frame, hv.Image) and frame.data.shape == (5, 5)
    assert isinstance(viz.distribution(run, "conv", log=True), hv.Overlay)
    assert isinstance(viz.distributions(run), hv.Overlay)
    assert isinstance(viz.distributions([run, run], steps=[0, 1]), hv.Overlay)
    assert isinstance(viz.dead_units(run), hv.Bars)
    overlay = viz.cam_overlay(run, "conv_2", sample=1, method="layercam")
    assert isinstance(overlay, hv.RGB) and overlay.dimension_values(2, flat=False).shape == (16, 16)
    grid = viz.cam_grid(run, "conv_2", samples=[0, 1, 2, 3], method="gradcam++")
    assert isinstance(grid, hv.Layout) and len(grid) == 5  # four overlays + the colour scale
    assert "label" in grid.values()[0].opts.get().kwargs["title"]
    assert len(viz.top_samples(run, "conv", channel=2, k=4)) == 4
    assert len(viz.compare(run, run, key="conv")) == 6  # three statistics, two maps, difference


def test_feature_maps_dims_by_name_channels_first() -> None:
    last, first = (viz.feature_maps(_fake(cf), "conv", sample=1) for cf in (False, True))
    a, b = _tile_values(last), _tile_values(first)
    assert sorted(a) == [0, 1, 2, 3]
    for c in a:
        assert a[c].shape == (6, 7)
        np.testing.assert_allclose(a[c], b[c])
    np.testing.assert_allclose(a[3], _fake().activation("conv").values[1, :, :, 3])  # row 0 on top


def test_feature_maps_options() -> None:
    run = _fake()
    maps = run.activation("conv").values[0]
    energy = (maps**2).mean(axis=(0, 1))
    ordered = viz.feature_maps(run, "conv", order="energy")
    assert [k for k in _tile_values(ordered)] == list(np.argsort(-energy, kind="stable"))
    chosen = viz.feature_maps(run, "conv", channels=[3, 0], shared_scale=False)
    assert list(_tile_values(chosen)) == [3, 0]
    climits = {tuple(t.opts.get().kwargs["clim"]) for t in viz.feature_maps(run, "conv").values()}
    assert len(climits) == 1  # shared scale
    with pytest.warns(UserWarning, match="showing 2 of 4 channels"):
        assert len(viz.feature_maps(run, "conv", max_channels=2)) == 2
    seq = viz.feature_maps(run, "seq")
    assert seq.dimension_values(2, flat=False).shape == (8, 3)
    assert [d.name for d in seq.kdims] == ["feature", "time"]


def _mosaic_tiles(image: hv.Image) -> dict[int, np.ndarray]:
    """Each channel's tile of a mosaic, found through its ``channel`` value dim."""
    values = image.dimension_values(2, flat=False)
    index = image.dimension_values("channel", flat=False)
    tiles = {}
    for c in np.unique(index[np.isfinite(index)]).astype(int):
        rows, columns = np.nonzero(index == c)
        tiles[c] = values[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    return tiles


@pytest.mark.parametrize("channels_first", [False, True])
def test_feature_mosaic_tiles_are_the_stored_maps(channels_first: bool) -> None:
    run = _fake(channels_first)
    stored = _fake().activation("conv").values[2]  # (height, width, channel)
    mosaic = viz.feature_mosaic(run, "conv", sample=2)
    assert isinstance(mosaic, hv.Image)
    values = mosaic.dimension_values(2, flat=False)
    assert values.shape == (2 * 6 + 1, 2 * 7 + 1)  # 4 channels: 2 × 2 tiles, 1-pixel gaps
    assert np.isnan(values[6, :]).all() and np.isnan(values[:, 7]).all()
    tiles = _mosaic_tiles(mosaic)
    assert sorted(tiles) == [0, 1, 2, 3]
    for c, tile in tiles.items():  # exact: row 0 on top, no resampling, no scaling
        np.testing.assert_array_equal(tile, stored[:, :, c])
    np.testing.assert_array_equal(values[:6, 8:], stored[:, :, 1])  # row by row: 1 top right
    # the same maps as the grid form
    grid = _tile_values(viz.feature_maps(run, "conv", sample=2))
    assert all(np.array_equal(grid[c], tiles[c]) for c in grid)
    assert isinstance(viz.feature_maps(run, "conv", sample=2, layout="mosaic"), hv.Image)


def test_feature_mosaic_options() -> None:
    run = _fake()
    maps = run.activation("conv").values[0]
    scaled = viz.feature_mosaic(run, "conv", channels=[3, 0], shared_scale=False)
    tiles = _mosaic_tiles(scaled)
    assert sorted(tiles) == [0, 3]
    for c, tile in tiles.items():  # per-tile normalisation; raw values kept for hover
        assert tile.min() == 0 and tile.max() == 1
        raw = maps[:, :, c]
        np.testing.assert_allclose(tile, (raw - raw.min()) / (raw.max() - raw.min()))
    assert "activation" in [d.name for d in scaled.vdims]
    shared = viz.feature_mosaic(run, "conv")
    # Signed maps: a diverging colour map centred at 0 covering the larger magnitude.
    bound = max(-maps.min(), maps.max())
    assert maps.min() < 0 < maps.max()
    assert tuple(shared.opts.get().kwargs["clim"]) == (-bound, bound)
    assert shared.opts.get().kwargs["cmap"] == "RdBu_r"
    with pytest.warns(UserWarning, match="showing 2 of 4 channels"):
        two = viz.feature_mosaic(run, "conv", max_channels=2, order="energy")
    energy = (maps**2).mean(axis=(0, 1))
    assert sorted(_mosaic_tiles(two)) == sorted(np.argsort(-energy, kind="stable")[:2])
    labelled = viz.feature_mosaic(run, "conv", labels=True)
    assert isinstance(labelled, hv.Overlay)
    assert list(labelled.Labels.I.dimension_values("channel")) == ["0", "1", "2", "3"]
    assert isinstance(viz.feature_mosaic(run, "seq"), hv.Image)  # no channels: one image


class _Recording:
    """An on-disk array stand-in that logs which samples are read.

    At module level, with a class-level log: dask copies the objects in its graph
    (pickling a local class by value would give the copy a log of its own).
    """

    reads: ClassVar[list[tuple[int, int]]] = []

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.shape, self.dtype, self.ndim = values.shape, values.dtype, values.ndim

    def __getitem__(self, key: tuple[Any, ...]) -> np.ndarray:
        first = key[0]  # dask fuses the selection into the read: an int or a slice
        span = (
            (first.start, first.stop) if isinstance(first, slice) else (int(first), int(first) + 1)
        )
        if span[1] > span[0]:  # not dask's empty probe for the dtype
            self.reads.append(span)
        return self.values[key]


def test_feature_mosaic_reads_one_sample() -> None:
    """Only the chosen sample's chunk is read (a lazy layer, one chunk per sample)."""
    import dask.array as da

    run = _fake()
    stored = run.activation("conv")
    _Recording.reads.clear()
    lazy = da.from_array(_Recording(stored.values), chunks=(1, -1, -1, -1))
    run._acts["conv"] = stored.copy(data=lazy)
    tiles = _mosaic_tiles(viz.feature_mosaic(run, "conv", sample=3))
    assert _Recording.reads == [(3, 4)]
    np.testing.assert_array_equal(tiles[2], stored.values[3, :, :, 2])


def test_axis_labels_from_attrs(run: tt.Run) -> None:
    frame = viz.feature_map(run)["conv", 0, 0]
    assert frame.vdims[0].label == run.activation("conv").attrs["long_name"]
    fake = viz.feature_maps(_fake(), "dense")
    assert fake.vdims[0].unit == "a.u."


def test_distribution_reads_only_stats(run: tt.Run, monkeypatch: pytest.MonkeyPatch) -> None:
    stats = run.stats("conv")

    def forbidden(key: str) -> None:
        raise AssertionError("distribution() must not read activations")

    monkeypatch.setattr(run, "activation", forbidden)
    histogram = viz.distribution(run, "conv", log=False).get(0)  # default: log on a spike
    np.testing.assert_array_equal(histogram.dimension_values(1), stats["histogram"].values)
    log = viz.distribution(run, "conv", log=True).get(0)
    np.testing.assert_allclose(log.dimension_values(1), np.log10(1 + stats["histogram"].values))
    viz.distributions(run)
    viz.dead_units(run)


def test_dead_and_saturated_units() -> None:
    rows = {r["layer"]: r for r in viz.unit_health(_fake())}
    assert rows["conv"]["dead"] == 1 and rows["conv"]["dead_fraction"] == 0.25
    assert rows["head_sigmoid"]["bounds"] == (0.0, 1.0) and rows["head_sigmoid"]["saturated"] == 1
    assert rows["dense"]["bounds"] is None and rows["dense"]["saturated"] == 0


def test_cam_overlay_blends_over_the_input() -> None:
    run = _fake()
    rgb = viz.cam_overlay(run, "conv", sample=2, alpha=0.0)  # alpha 0: the input alone
    pixels = np.asarray(rgb.data)  # the uint8 array, row 0 on top
    image = run.inputs().values[2]
    expected = np.round((image - image.min()) / (image.max() - image.min()) * 255)
    assert pixels.shape == (24, 28, 3)
    np.testing.assert_allclose(pixels, expected, atol=1)


def test_cam_overlay_without_inputs_warns_and_shows_the_map() -> None:
    with pytest.warns(UserWarning, match="no model inputs"):
        rgb = viz.cam_overlay(_fake(inputs=False), "conv", sample=0)
    assert "map only" in rgb.opts.get().kwargs["title"]


def test_top_samples_ranked_from_stored_stats(run: tt.Run) -> None:
    positions, maxima = viz.top_sample_positions(run, "conv", 4, k=5)
    per_sample = run.activation("conv").values[..., 4].max(axis=(1, 2))
    np.testing.assert_array_equal(positions, np.argsort(-per_sample, kind="stable")[:5])
    np.testing.assert_allclose(maxima, per_sample[positions], rtol=1e-6)
    titles = [t.opts.get().kwargs["title"] for t in viz.top_samples(run, "conv", 4, k=3)]
    assert titles[0].startswith(f"#1 sample {positions[0]}")
    grid = viz.top_samples(run, "conv", 4, k=3)
    mosaic = viz.top_samples(run, "conv", 4, k=3, layout="mosaic")  # one RGB, captioned
    assert isinstance(mosaic, hv.Overlay) and isinstance(mosaic.RGB.I, hv.RGB)
    captions = list(mosaic.Labels.I.dimension_values("caption"))
    assert [c.split(" · ")[0] for c in captions] == [
        f"#{r + 1} s{p}" for r, p in enumerate(positions[:3])
    ]
    pixels = np.asarray(mosaic.RGB.I.data)  # array rows top-down, as given
    first = np.asarray(grid.values()[0].data)  # tile 0 top left: the same pixels
    np.testing.assert_array_equal(pixels[: first.shape[0], : first.shape[1]], first)


def test_compare_two_runs() -> None:
    a = _fake()
    b = _fake()
    b._acts["conv"] = b._acts["conv"] + 1.0
    b._stats.clear()
    rows = {r["layer"]: r for r in viz.compare_table(a, b)}
    assert rows["conv"]["mean_diff"] == pytest.approx(1.0)
    assert rows["dense"]["mean_diff"] == pytest.approx(0.0)
    layout = viz.compare(a, b, key="conv", channel=0)
    difference = layout.values()[-1]
    np.testing.assert_allclose(difference.dimension_values(2), 1.0)
    other = FakeRun({"x": (("unit",), np.zeros((5, 2)))})
    with pytest.raises(tt.ViewError, match="no layer in common"):
        viz.compare(a, other)


# ----------------------------------------------------------------------------- export
def test_png_export_not_blank_with_expected_size(run: tt.Run, tmp_path: Path) -> None:
    from PIL import Image

    for name, obj in {
        "maps": viz.feature_maps(run, "conv"),
        "cam": viz.cam_overlay(run, "conv_2", sample=0),
        "dist": viz.distribution(run, "conv"),
    }.items():
        path = viz.save(obj, tmp_path / f"{name}.png", width=640)
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        assert image.shape[1] == 640, name
        assert image.var() > 100, f"{name}: blank PNG"
    fixed = viz.save(viz.dead_units(run), tmp_path / "dead.png", width=500, height=300)
    assert Image.open(fixed).size == (500, 300)


def test_html_export_is_self_contained(run: tt.Run, tmp_path: Path) -> None:
    path = viz.save(viz.feature_maps(run, "conv"), tmp_path / "maps.html")
    text = path.read_text()
    assert "Bokeh" in text and len(text) > 500_000  # BokehJS inlined
    assert not re.search(r"<script[^>]*src=[\"']?(https?:)?//", text)
    assert "cdn.holoviz.org" not in text  # Panel's stylesheets inlined (holoviz/panel#6759)


@pytest.mark.browser
def test_html_export_renders_offline_in_chromium(run: tt.Run, tmp_path: Path, browser) -> None:
    """Opened from disk, the page asks the network for nothing and draws the view."""
    from PIL import Image

    path = viz.save(viz.cam_overlay(run, "conv", sample=0), tmp_path / "cam.html")
    page = browser.new_page(viewport={"width": 700, "height": 500})
    requested: list[str] = []
    failed: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(path.as_uri())
    page.wait_for_timeout(2000)
    shot = tmp_path / "cam.png"
    page.screenshot(path=str(shot))
    page.close()
    remote = [url for url in requested if not url.startswith(("file:", "data:", "blob:"))]
    assert remote == [] and failed == []
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.var() > 100, "blank page"


def test_export_bad_input(run: tt.Run, tmp_path: Path) -> None:
    with pytest.raises(tt.ViewError, match=r"\.png or \.html"):
        viz.save(viz.distribution(run, "conv"), tmp_path / "x.jpg")
    with pytest.raises(tt.ViewError, match="index one frame"):
        viz.save(viz.feature_map(run), tmp_path / "x.html")


# ----------------------------------------------------------------------------- bad input
def test_bad_input_one_clear_line(run: tt.Run) -> None:
    cases = [
        (tt.LayerNotFoundError, "did you mean", lambda: viz.feature_maps(run, "conv2")),
        (tt.LayerNotFoundError, "did you mean", lambda: viz.distribution(run, "gapp")),
        (
            tt.ViewError,
            f"sample {N} is out of range",
            lambda: viz.feature_maps(run, "conv", sample=N),
        ),
        (
            tt.ViewError,
            "sample -13 is out of range",
            lambda: viz.cam_overlay(run, "conv", sample=-13),
        ),
        (
            tt.ViewError,
            "channel 6 is out of range.*6 channels",
            lambda: viz.feature_maps(run, "conv", channels=[6]),
        ),
        (tt.ViewError, "channel 9 is out of range", lambda: viz.top_samples(run, "conv", 9)),
        (tt.ViewError, "spatial", lambda: viz.cam_overlay(run, "gap")),
        (
            tt.ViewError,
            "unknown CAM method 'gradcam\\+'",
            lambda: viz.cam_overlay(run, "conv", method="gradcam+"),
        ),
        (tt.ViewError, "order must be", lambda: viz.feature_maps(run, "conv", order="size")),
        (
            tt.ViewError,
            "not class",
            lambda: viz.cam_overlay(run, "conv", 0, class_index=int(run.predictions.values[0]) + 1),
        ),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_viz_imports_no_framework() -> None:
    code = (
        "import sys; import tensortap.viz; "
        "bad = [m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_feature_map_dynamic_map_bounds() -> None:
    dmap = viz.feature_map(_fake())
    assert [d.name for d in dmap.kdims] == ["layer", "sample", "channel"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = dmap["dense", 0, 3]  # beyond a dense layer's single "channel": still shows
    assert isinstance(frame, hv.Image) and frame.data.shape == (1, 10)
