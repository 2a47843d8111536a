"""The served app's parts without a browser (issue 16): URL state, the per-sample table
and its filters, tile click-through, comparable-run pickers, the class selector, and
session clean-up.

References are independent of the code under test: softmax, ``label == prediction`` and
mosaic geometry are computed here in NumPy from the run's stored arrays.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (import-mode=importlib)
from test_serve import _capture, _squares, _tiny_cnn  # noqa: E402  (the browser tests' runs)

N_SAMPLES = 12


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs of one model, and one run of another model."""
    import keras

    root = tmp_path_factory.mktemp("app") / "runs"
    x, y = _squares(N_SAMPLES, seed=1)
    _capture(_tiny_cnn("tiny_cnn"), x, root / "a.zarr", labels=y)
    x2, y2 = _squares(N_SAMPLES, seed=2)
    _capture(_tiny_cnn("tiny_cnn"), x2, root / "b.zarr", labels=y2)
    keras.utils.set_random_seed(0)
    other = keras.Sequential(
        [
            keras.Input((12, 12, 1), name="image"),
            keras.layers.Conv2D(3, 3, name="c"),
            keras.layers.Flatten(name="f"),
            keras.layers.Dense(3, name="d"),
        ],
        name="other_cnn",
    )
    _capture(other, x, root / "0-other.zarr", labels=y)  # listed first, by name
    return root


def _app(root: Path, run_id: str = "a.zarr", **kw: Any) -> Any:
    from tensortap.viz.app import RunCatalog, TensortapApp

    app = TensortapApp(RunCatalog(root), run_id, defer=False, **kw)
    assert app.run is not None, app.notice.object
    return app


# --------------------------------------------------------------------------- URL state


def test_view_state_round_trips_and_drops_bad_values() -> None:
    from tensortap.viz.app import ViewState

    state = ViewState(run="exp/a.zarr", tab="cam", layer="conv2", sample=5, class_=2)
    query = state.to_query()
    assert query == {
        "run": "exp/a.zarr",
        "tab": "cam",
        "layer": "conv2",
        "sample": "5",
        "class": "2",
    }
    assert ViewState.from_query({k: [v.encode()] for k, v in query.items()}) == (state, [])
    parsed, problems = ViewState.from_query({"sample": "five", "channel": "-1", "tab": "cam"})
    assert parsed == ViewState(tab="cam")
    assert len(problems) == 2 and "sample='five'" in problems[0] and "negative" in problems[1]


def test_url_state_restores_the_view(runs: Path) -> None:
    from tensortap.viz.app import ViewState

    state = ViewState(
        run="a.zarr", tab="cam", layer="conv1", sample=5, channel=2, method="layercam"
    )
    app = _app(runs, state=state)
    assert app.tab_list[app.tabs.active].SLUG == "cam"
    assert (app.layer_select.value, app.sample_slider.value, app.channel_slider.value) == (
        "conv1",
        5,
        2,
    )
    cam = next(t for t in app.tab_list if t.SLUG == "cam")
    assert cam.method_select.value == "layercam"
    assert not app.notice.visible
    assert app.view_state() == state.with_(compare="b.zarr", filter="all")


def test_url_state_it_cannot_honour_is_a_notice(runs: Path) -> None:
    from tensortap.viz.app import ViewState

    app = _app(runs, state=ViewState(run="a.zarr", layer="nope", sample=999, tab="x"))
    assert app.notice.visible
    for part in ("layer 'nope'", "sample 999", "tab 'x'"):
        assert part in app.notice.object
    assert app.sample_slider.value == 0 and app.layer_select.value in app.run.layers


# --------------------------------------------------------------------------- samples


def test_sample_table_matches_numpy(runs: Path) -> None:
    import tensortap as tt
    from tensortap.viz.sample_table import filter_samples, sample_table

    run = tt.open_run(runs / "a.zarr")
    table = sample_table(run)
    labels = np.asarray(run.labels.values)
    predicted = np.asarray(run.predictions.values)
    logits = np.asarray(run.outputs().values, dtype=np.float64)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        table["confidence"], probabilities[np.arange(N_SAMPLES), predicted], rtol=1e-6
    )
    assert list(table["correct"]) == list(labels == predicted)
    wrong = [int(i) for i in np.flatnonzero(labels != predicted)]
    right = [int(i) for i in np.flatnonzero(labels == predicted)]
    assert wrong and right  # the filters below select something, and not everything
    assert filter_samples(table, "misclassified") == wrong
    assert filter_samples(table, "correct") == right
    assert filter_samples(table, label=1) == [int(i) for i in np.flatnonzero(labels == 1)]
    sure = probabilities.max(axis=1)
    assert filter_samples(table, min_confidence=0.35) == [
        int(i) for i in np.flatnonzero(sure >= 0.35)
    ]


def test_layer_table_matches_numpy_without_the_per_sample_stats(runs: Path) -> None:
    """The sidebar's table: mean, std, zeros and dead channels of every layer, computed
    here from the stored activations; only per-channel statistics are read for it."""
    import tensortap as tt
    from tensortap.viz.app.shared import CachedRun
    from tensortap.viz.app.summaries import layer_table

    plain = tt.open_run(runs / "a.zarr")
    run = CachedRun(tt.open_run(runs / "a.zarr"))
    table = layer_table(run)
    assert list(table.index) == list(plain.layers)
    for key in plain.layers:
        values = np.asarray(plain.activation(key).values, dtype=np.float64)
        row = table.loc[key]
        assert row["shape"] == " × ".join(str(n) for n in values.shape[1:])
        np.testing.assert_allclose(row["mean"], values.mean(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(row["std"], values.std(), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(row["zeros"], np.mean(values == 0), rtol=1e-6)
        per_channel = values.reshape(-1, values.shape[-1]).max(axis=0)  # channels last
        np.testing.assert_allclose(row["dead"], np.mean(per_channel <= 0))
    # The per-sample maxima and means (samples × channels) were not loaded for it.
    assert run._stats == {}


def test_filter_names_what_is_allowed(runs: Path) -> None:
    import tensortap as tt
    from tensortap.core.errors import ViewError
    from tensortap.viz.sample_table import filter_samples, sample_table

    table = sample_table(tt.open_run(runs / "a.zarr"))
    with pytest.raises(ViewError, match="'wrong'.*all, correct, misclassified"):
        filter_samples(table, "wrong")


def test_gallery_click_chooses_that_sample(runs: Path) -> None:
    """A click in tile k of the filtered gallery selects the k-th misclassified sample."""
    from tensortap.viz._mosaic import grid_shape
    from tensortap.viz.app.clicks import tile_at

    app = _app(runs, "a.zarr")
    gallery = next(t for t in app.tab_list if t.SLUG == "samples")
    gallery.filter_select.value = "misclassified"
    app.tabs.active = app.tab_list.index(gallery)
    shown = app._slots["gallery"].shown
    labels, predicted = app.run.labels.values, app.run.predictions.values
    wrong = [int(i) for i in np.flatnonzero(labels != predicted)]
    rgb = shown.get(0)
    rows_px, columns_px = rgb.data.shape[:2]
    rows, columns = grid_shape(len(wrong))
    tile_h, tile_w = (rows_px + 1) / rows, (columns_px + 1) / columns
    for k, position in enumerate(wrong):
        row, column = divmod(k, columns)
        x, y = (column + 0.5) * tile_w, rows_px - (row + 0.5) * tile_h
        assert tile_at(shown, x, y) == k
        app._slots["gallery"]._tapped(x=x, y=y)
        assert app.sample_slider.value == position
        assert "misclassified" in app.sample_info.object
    assert tile_at(shown, -5.0, 1.0) is None


# --------------------------------------------------------------------------- compare, CAM


def test_compare_picker_offers_the_same_model_first(runs: Path) -> None:
    app = _app(runs, "a.zarr")
    compare = next(t for t in app.tab_list if t.SLUG == "compare")
    assert compare.compare_select.value == "b.zarr"  # not 0-other.zarr, listed first
    assert list(compare.compare_select.groups) == [
        "same model",
        "other models (no layer in common)",
    ]
    assert compare.compare_select.groups["other models (no layer in common)"] == ["0-other.zarr"]

    alone = _app(runs, "0-other.zarr")
    compare = next(t for t in alone.tab_list if t.SLUG == "compare")
    assert compare.compare_select.value is None
    alone.tabs.active = alone.tab_list.index(compare)
    message = alone._slots["compare"].container.objects[0]
    assert "no other run of this model" in str(message.object)


def test_cam_class_picks_the_samples_whose_maps_explain_it(runs: Path) -> None:
    """The run's target is the prediction: class c's grid holds the samples predicted c."""
    app = _app(runs, "a.zarr")
    cam = next(t for t in app.tab_list if t.SLUG == "cam")
    assert app.run.attrs["target"] == "predicted"
    predicted = np.asarray(app.run.predictions.values)
    assert set(cam.class_select.options.values()) == {-1, *map(int, np.unique(predicted))}
    app.tabs.active = app.tab_list.index(cam)
    chosen = int(predicted[0])
    cam.class_select.value = chosen
    assert cam.grid_positions == [int(i) for i in np.flatnonzero(predicted == chosen)][:9]
    assert cam.class_select.value == chosen and "predicted" in cam.target_note.object


# --------------------------------------------------------------------------- server


def test_many_page_loads_are_fast_and_idle_sessions_go(runs: Path) -> None:
    """100 concurrent page loads answer without errors; unused sessions are dropped."""
    import asyncio

    from tensortap.viz.app import make_server

    # A fresh event loop for the server: an earlier test's Dask client can leave the main
    # thread's loop behind, and the server's periodic session clean-up would be bound to it.
    asyncio.set_event_loop(asyncio.new_event_loop())
    server = make_server(runs, port=0, unused_session_lifetime_ms=1000)
    server.start()
    thread = threading.Thread(target=server.io_loop.start, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.port}/"
    try:

        def load(i: int) -> tuple[int, bytes]:
            with urllib.request.urlopen(url + ("?run=b.zarr" if i % 2 else ""), timeout=120) as r:
                return r.status, r.read()

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(load, range(100)))
        seconds = time.perf_counter() - started
        assert {status for status, _ in answers} == {200}
        assert all(b"tensortap" in body for _, body in answers)
        # 22 s before sessions were reused (160 s on a loaded 2-CPU machine); generous here.
        assert seconds < 60, seconds
        # Sessions of browsers that connected, then left, are dropped after the lifetime.
        import panel.models.tabulator  # noqa: F401  (the page's model types must be known)
        from bokeh.client import pull_session

        def visit(i: int) -> None:
            with pull_session(url=url, arguments={"run": "b.zarr"}):
                pass

        with ThreadPoolExecutor(max_workers=1) as pool:  # off this thread's event loop
            list(pool.map(visit, range(3)))
        assert len(server.get_sessions("/")) >= 3
        # Well inside Bokeh's defaults (15 s, checked every 17 s): the lifetime given holds.
        deadline = time.monotonic() + 10
        while len(server.get_sessions("/")) > 1:  # the prepared page session stays
            assert time.monotonic() < deadline, len(server.get_sessions("/"))
            time.sleep(0.5)
    finally:
        server.io_loop.add_callback(server.stop)
        server.io_loop.add_callback(server.io_loop.stop)
        thread.join(10)
        asyncio.set_event_loop(None)  # later tests get a loop of their own
