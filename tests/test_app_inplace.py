"""Views updated in place (viz/app/inplace.py): a new frame of the same kind is written into
the Bokeh models on screen, and they then hold what HoloViews would have drawn.

References are the stored activations (NumPy) and a fresh HoloViews rendering of the same
frame in a new document, never the in-place code itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (import-mode=importlib)
from test_serve import _capture, _squares, _tiny_cnn  # noqa: E402

hv = pytest.importorskip("holoviews")
pn = pytest.importorskip("panel")

N_SAMPLES = 6


@pytest.fixture(scope="module", autouse=True)
def _bokeh() -> None:
    hv.extension("bokeh", logo=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inplace") / "runs"
    x, y = _squares(N_SAMPLES, seed=3)
    _capture(_tiny_cnn("tiny_cnn"), x, root / "a.zarr", labels=y)
    return root


def _shown(container: Any) -> Any:
    """The visible HoloViews pane of a view's container."""
    (pane,) = [p for p in container.objects if p.visible]
    return pane


def _figure(pane: Any) -> Any:
    """The Bokeh figure a pane drew (its one root here)."""
    (entry,) = pane._models.values()
    return entry[0]


def _sources(figure: Any) -> list[dict[str, Any]]:
    """The data of the figure's sources, images before labels (as overlays list them)."""
    from bokeh.models import ColumnDataSource

    found = list(figure.select({"type": ColumnDataSource}))
    return sorted((dict(s.data) for s in found), key=lambda d: "image" not in d)


def _fresh(obj: Any) -> Any:
    """How HoloViews draws ``obj`` from scratch: a new pane in a new document."""
    from bokeh.document import Document

    pane = pn.pane.HoloViews(obj, backend="bokeh")
    pane.get_root(Document())
    return _figure(pane)


def _assert_same_data(shown: dict[str, Any], fresh: dict[str, Any]) -> None:
    assert set(shown) == set(fresh)
    for key, value in fresh.items():
        a, b = (
            np.asarray(v[0] if len(v) == 1 and np.ndim(v[0]) >= 2 else v)
            for v in (shown[key], value)
        )
        assert a.dtype == b.dtype and a.shape == b.shape, key
        np.testing.assert_array_equal(a, b, err_msg=key)


def _slot(frames: list[Any]) -> tuple[Any, Any]:
    """A view slot that shows ``frames[-1]``, drawn once into a document."""
    from bokeh.document import Document

    from tensortap.viz.app.slots import ViewSlot

    slot = ViewSlot("test", lambda: frames[-1])
    slot.draw()
    slot.container.get_root(Document())
    return slot, _figure(_shown(slot.container))


def _map(values: np.ndarray, title: str) -> Any:
    low, high = float(values.min()), float(values.max())
    return hv.Image(values, bounds=(0, 0, values.shape[1], values.shape[0])).opts(
        cmap="viridis", clim=(low, high), colorbar=True, title=title, tools=["hover"]
    )


def test_a_frame_of_the_same_shape_is_written_into_the_same_models() -> None:
    rng = np.random.default_rng(0)
    frames = [_map(rng.random((5, 7)), "first")]
    slot, figure = _slot(frames)
    values = rng.random((5, 7)) * 10 - 3
    frames.append(_map(values, "second"))
    slot.draw()
    pane = _shown(slot.container)
    assert _figure(pane) is figure  # no new plot
    (data,) = _sources(figure)
    # hv.Image puts array row 0 on top; Bokeh's image row 0 is the bottom row.
    np.testing.assert_array_equal(data["image"][0], values[::-1])
    _assert_same_data(data, _sources(_fresh(frames[-1]))[0])
    (mapper,) = [r.glyph.color_mapper for r in figure.renderers]
    assert (mapper.low, mapper.high) == (values.min(), values.max())
    assert figure.title.text == "second"
    # What a page that draws the pane anew (another tab shown again) gets: the new frame.
    np.testing.assert_array_equal(_sources(_fresh(pane.object))[0]["image"][0], values[::-1])


def test_the_write_goes_around_holoviews() -> None:
    """The models change though HoloViews' own update is not run (its plot still holds the
    first frame): what makes it fast."""
    from tensortap.viz.app.inplace import write_in_place

    rng = np.random.default_rng(1)
    frames = [_map(rng.random((4, 4)), "a")]
    slot, figure = _slot(frames)
    pane = _shown(slot.container)
    new = _map(rng.random((4, 4)), "b")
    assert write_in_place(pane, new)
    ((plot, _),) = pane._plots.values()
    assert plot.current_frame is not new
    np.testing.assert_array_equal(
        _sources(figure)[0]["image"][0], new.dimension_values(2, flat=False)
    )


def test_a_frame_of_another_shape_or_options_is_drawn_anew() -> None:
    from tensortap.viz.app.inplace import write_in_place

    rng = np.random.default_rng(2)
    frames = [_map(rng.random((4, 4)), "a")]
    slot, figure = _slot(frames)
    pane = _shown(slot.container)
    assert not write_in_place(pane, _map(rng.random((4, 4)), "b").opts(tools=[]))
    assert not write_in_place(pane, hv.RGB(rng.random((4, 4, 3))))
    relabelled = _map(rng.random((4, 4)), "a").redim.label(z="another layer's activation")
    assert not write_in_place(pane, relabelled)  # its colour bar and hover say otherwise
    moved = hv.Image(rng.random((4, 4)), bounds=(1, 1, 5, 5)).opts(**frames[0].opts.get().kwargs)
    assert not write_in_place(pane, moved)
    bigger = rng.random((6, 9))
    frames.append(_map(bigger, "bigger"))
    slot.draw()
    rebuilt = _figure(_shown(slot.container))
    assert rebuilt is not figure
    assert _sources(rebuilt)[0]["image"][0].shape == (6, 9)


def test_an_rgb_mosaic_with_captions_is_written_in_place() -> None:
    from tensortap.viz._mosaic import rgb_mosaic

    rng = np.random.default_rng(3)

    def mosaic(seed: int) -> Any:
        pictures = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(4)]
        return rgb_mosaic(pictures, [f"{seed}-{i}" for i in range(4)], f"mosaic {seed}")

    frames = [mosaic(0)]
    slot, figure = _slot(frames)
    frames.append(mosaic(1))
    slot.draw()
    assert _figure(_shown(slot.container)) is figure
    shown, fresh = _sources(figure), _sources(_fresh(frames[-1]))
    assert len(shown) == len(fresh) == 2
    for a, b in zip(shown, fresh, strict=True):
        _assert_same_data(a, b)
    assert list(shown[1]["caption"]) == [f"1-{i}" for i in range(4)]
    assert figure.title.text == "mosaic 1"


def test_the_apps_views_hold_the_new_sample_and_channel(runs: Path) -> None:
    """Feature maps tab: the zoomed map shows the stored activation of the chosen sample and
    channel, the mosaic what HoloViews draws of it."""
    from bokeh.document import Document

    import tensortap as tt
    from tensortap import viz
    from tensortap.viz.app import RunCatalog, TensortapApp

    app = TensortapApp(RunCatalog(runs), "a.zarr", defer=False)
    app.layout.get_root(Document())
    app.layer_select.value = "conv2"
    zoom = _figure(_shown(app._slots["zoom"].container))
    mosaic = _figure(_shown(app._slots["feature_maps"].container))
    stored = np.asarray(tt.open_run(runs / "a.zarr").activation("conv2").values)  # (s, h, w, c)
    for sample, channel in [(3, 5), (4, 5), (4, 1)]:
        app.sample_slider.value = sample
        app.channel_slider.value = channel
        assert _figure(_shown(app._slots["zoom"].container)) is zoom
        assert _figure(_shown(app._slots["feature_maps"].container)) is mosaic
        (data,) = _sources(zoom)
        np.testing.assert_allclose(data["image"][0], stored[sample, :, :, channel])
        assert f"channel {channel}" in zoom.title.text
        expected = viz.feature_mosaic(app.run, "conv2", sample=sample, labels=True, frame_px=560)
        for a, b in zip(_sources(mosaic), _sources(_fresh(expected)), strict=True):
            _assert_same_data(a, b)
