"""The served app as a person sees it, in Debian's Chromium (issue 16): comparison plots
drawn at their size, a filtered gallery, a shared URL, a page that fits 1280 px.

Set ``TENSORTAP_DOC_IMAGES=docs/images`` to (re)write the screenshots that docs/app.md
shows, one per tab, at 1280×800.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers (import-mode=importlib)
from test_serve import (  # noqa: E402
    CHROMIUM,
    Page,
    _capture,
    _free_port,
    _get,
    _squares,
    _tiny_cnn,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing"),
]
N_SAMPLES = 12
TABS = ("Feature maps", "Samples", "Distributions", "CAM", "Compare")
#: Where each tab's views are, to wait for their plots.
TAB_VIEWS = {
    "Feature maps": ".tt-feature-maps",
    "Samples": ".tt-gallery",
    "Distributions": ".tt-distributions",
    "CAM": ".tt-cam-grid",
    "Compare": ".tt-compare",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import tensortap as tt

    root = tmp_path_factory.mktemp("app-browser") / "runs"
    x, y = _squares(N_SAMPLES, seed=1)
    _capture(_tiny_cnn("tiny_cnn"), x, root / "exp" / "a.zarr", labels=y)
    x2, y2 = _squares(N_SAMPLES, seed=2)
    _capture(_tiny_cnn("tiny_cnn"), x2, root / "exp" / "b.zarr", labels=y2)
    run = tt.open_run(root / "exp" / "a.zarr")
    wrong = np.flatnonzero(np.asarray(run.labels.values) != np.asarray(run.predictions.values))
    return {"root": root, "misclassified": [int(i) for i in wrong]}


@contextlib.contextmanager
def _serving(root: Path) -> Iterator[str]:
    """``tensortap serve root`` in its own process, until the block ends; yields its URL."""
    port = _free_port()
    log = root.parent / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tensortap", "serve", str(root), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if _get(url + "/liveness", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def app_url(runs: dict[str, Any]) -> Iterator[str]:
    with _serving(runs["root"]) as url:
        yield url


def _page(browser: Any, url: str) -> Page:
    page = Page.__new__(Page)  # Page, at the 1280×800 a laptop has
    page.page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.errors, page.requests = [], []
    page.page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.page.goto(url)
    return page


def _each_plot(page: Page, selector: str, body: str) -> list[Any]:
    """Run the JavaScript ``body`` for every Bokeh plot view (``view``) under the elements
    matching ``selector`` (searched through Panel's shadow roots); it pushes to ``out``."""
    return page.page.evaluate(
        """(selector) => {
        const hosts = [];  // Panel renders each component in a shadow root: search them all
        const search = (root) => { for (const e of root.querySelectorAll('*')) {
            if (e.matches(selector)) hosts.push(e); if (e.shadowRoot) search(e.shadowRoot); } };
        search(document);
        const inside = (el) => { for (let n = el; n; n = n.parentNode || n.host) {
            if (hosts.includes(n)) return true; } return false; };
        const out = [];
        for (const view of Bokeh.index.all_views()) {
            if (view.frame === undefined || !inside(view.el)) continue;"""
        + body
        + """
        }
        return out;
    }""",
        selector,
    )


def _plot_frames(page: Page, selector: str) -> list[dict[str, Any]]:
    """Every visible Bokeh plot under ``selector``: its frame on the page (CSS pixels),
    its data ranges and title, as Bokeh itself laid it out."""
    return _each_plot(
        page,
        selector,
        """
            const box = view.el.getBoundingClientRect();
            if (box.width === 0 || view.el.offsetParent === null) continue;
            const f = view.frame.bbox;
            out.push({left: box.left + f.x0, top: box.top + f.y0, width: f.width,
                      height: f.height, x: [view.frame.x_range.start, view.frame.x_range.end],
                      y: [view.frame.y_range.start, view.frame.y_range.end],
                      title: view.model.title ? view.model.title.text : ""});""",
    )


def _wait_plots(page: Page, selector: str, n: int = 1, timeout_s: float = 90) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        frames = _plot_frames(page, selector)
        if len(frames) >= n and all(f["width"] > 0 for f in frames):
            page.page.wait_for_timeout(500)  # let Bokeh paint
            return _plot_frames(page, selector)
        assert time.monotonic() < deadline, (selector, frames)
        page.page.wait_for_timeout(300)


def _wait_pictures(page: Page, selector: str, timeout_s: float = 90) -> list[Any]:
    """Every loaded, visible ``<img>`` under ``selector``: its box on the page (CSS pixels)
    and its picture's own size."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = page.page.evaluate(
            """(selector) => {
            const out = [];
            const search = (root, inside) => { for (const e of root.querySelectorAll('*')) {
                const hit = inside || e.matches(selector);
                if (hit && e.tagName === 'IMG' && e.complete && e.naturalWidth > 0) {
                    const box = e.getBoundingClientRect();
                    if (box.width > 0) out.push({left: box.left, top: box.top,
                        width: box.width, height: box.height,
                        natural: [e.naturalWidth, e.naturalHeight]});
                }
                if (e.shadowRoot) search(e.shadowRoot, hit); } };
            search(document, false);
            return out;
        }""",
            selector,
        )
        if found:
            return found
        assert time.monotonic() < deadline, selector
        page.page.wait_for_timeout(300)


def _pixels(page: Page, frame: dict[str, Any]) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    clip = {k: frame[k] for k in ("width", "height")}
    clip.update(x=frame["left"], y=frame["top"])
    shot = page.page.screenshot(clip=clip, full_page=True)
    return np.asarray(Image.open(BytesIO(shot)).convert("L"), dtype=np.float64)


def test_compare_plots_have_their_size_and_are_drawn(app_url: str, browser: Any) -> None:
    page = _page(browser, app_url + "/?run=exp/a.zarr&tab=compare&layer=conv2")
    frames = _wait_plots(page, ".tt-compare", n=6)
    assert len(frames) == 6, frames  # three statistics, the two runs' maps, b − a
    for frame in frames:
        # Collapsed plots (issue 16) had a frame a few pixels wide and titles in pieces.
        assert frame["width"] > 150 and frame["height"] > 150, frame
        pixels = _pixels(page, frame)
        assert (pixels < 250).mean() > 0.02, frame  # more than a blank frame and its axes
    for frame in frames[3:]:  # the maps fill their frames
        assert (_pixels(page, frame) < 250).mean() > 0.5, frame
    assert "exp/b.zarr" in page.page.locator(".tt-compare-with select").input_value()
    assert page.errors == [], page.errors


def test_filtered_gallery_shows_only_misclassified(
    app_url: str, browser: Any, runs: dict[str, Any]
) -> None:
    """Every tile of the 'misclassified' gallery, clicked, is a misclassified sample; the
    tiles are exactly the run's misclassified samples."""
    from tensortap.viz._mosaic import grid_shape

    wrong = runs["misclassified"]
    assert 0 < len(wrong) < N_SAMPLES  # the filter leaves some samples out
    page = _page(browser, app_url + "/?run=exp/a.zarr&tab=samples&filter=misclassified")
    (frame,) = _wait_plots(page, ".tt-gallery")
    assert frame["title"].startswith(f"{len(wrong)} of {len(wrong)} samples · misclassified")
    rows, columns = grid_shape(len(wrong))
    seen = []
    for k in range(len(wrong)):
        row, column = divmod(k, columns)
        x = frame["left"] + (column + 0.5) / columns * frame["width"]
        y = frame["top"] + (row + 0.5) / rows * frame["height"]
        page.page.mouse.click(x, y)
        deadline = time.monotonic() + 30
        while f"sample {wrong[k]}" not in page.text(".tt-sample-info"):
            assert time.monotonic() < deadline, (k, page.text(".tt-sample-info"))
            page.page.wait_for_timeout(200)
        assert "misclassified" in page.text(".tt-sample-info")
        seen.append(wrong[k])
    assert seen == wrong
    assert page.errors == [], page.errors


def test_shared_url_restores_the_view(app_url: str, browser: Any) -> None:
    page = _page(browser, app_url + "/?run=exp/a.zarr")
    _wait_plots(page, ".tt-feature-maps")
    layers = page.page.locator(".tt-layer select")
    conv1 = next(
        v for v in layers.evaluate("s => [...s.options].map(o => o.value)") if "conv1" in v
    )
    layers.select_option(conv1)
    page.set_number("tt-sample", 5)
    page.set_number("tt-channel", 2)
    page.tab("CAM")
    page.page.locator(".tt-method select").select_option("layercam")
    deadline = time.monotonic() + 60
    wanted = ("tab=cam", "layer=conv1", "sample=5", "channel=2", "method=layercam")
    while not all(part in page.page.url for part in wanted):
        assert time.monotonic() < deadline, page.page.url
        page.page.wait_for_timeout(300)
    _wait_plots(page, ".tt-cam")
    page.page.wait_for_timeout(1500)
    shared = page.page.url
    before = page.page.locator(".tt-cam").screenshot()

    again = _page(browser, shared)
    (frame,) = _wait_plots(again, ".tt-cam")
    assert "sample 5" in frame["title"] and "layercam" in frame["title"], frame
    assert again.page.locator(".tt-method select").input_value() == "layercam"
    assert "conv1" in again.page.locator(".tt-layer select").input_value()
    assert again.page.locator(".tt-sample input:not([type=range])").first.input_value() == "5"
    assert again.page.locator(".tt-channel input:not([type=range])").first.input_value() == "2"
    assert "active" in (
        again.page.locator(".bk-tab", has_text="CAM").first.get_attribute("class") or ""
    )
    again.page.wait_for_timeout(1500)
    after = again.page.locator(".tt-cam").screenshot()
    from io import BytesIO

    from PIL import Image

    a, b = (np.asarray(Image.open(BytesIO(s)).convert("L"), float) for s in (before, after))
    assert a.shape == b.shape and np.abs(a - b).mean() < 2.0  # the same picture
    assert page.errors == [] and again.errors == [], (page.errors, again.errors)


def _plot_images(page: Page, selector: str) -> list[dict[str, Any]]:
    """The image glyphs' data of every visible plot under ``selector``, as the browser's
    Bokeh models hold it: the figure's id and title, the shape and values (row 0 at the
    bottom)."""
    return _each_plot(
        page,
        selector,
        """
            if (view.el.offsetParent === null) continue;
            for (const r of view.model.renderers) {
                const image = r.data_source && r.data_source.data.image;
                if (image === undefined) continue;
                out.push({id: view.model.id, title: view.model.title.text, shape: image[0].shape,
                          values: Array.from(image[0])});
            }""",
    )


def test_a_new_sample_and_channel_reach_the_browsers_plots(
    app_url: str, browser: Any, runs: dict[str, Any]
) -> None:
    """The zoomed map, updated in place on the server, holds in the browser the stored
    activation of the chosen sample and channel, in the plot it had (no new figure)."""
    import tensortap as tt

    stored = np.asarray(tt.open_run(runs["root"] / "exp" / "a.zarr").activation("conv2").values)
    page = _page(browser, app_url + "/?run=exp/a.zarr&layer=conv2")
    _wait_plots(page, ".tt-zoom")
    (first,) = _plot_images(page, ".tt-zoom")
    for sample, channel in [(5, 0), (5, 3), (7, 3)]:
        page.set_number("tt-sample", sample)
        page.set_number("tt-channel", channel)
        deadline = time.monotonic() + 60
        while True:
            shown = _plot_images(page, ".tt-zoom")
            if len(shown) == 1 and f"channel {channel} · sample {sample} " in shown[0]["title"]:
                break
            assert time.monotonic() < deadline, shown
            page.page.wait_for_timeout(300)
        (image,) = shown
        assert image["id"] == first["id"]  # the same figure, its data replaced
        values = np.asarray(image["values"], dtype=np.float32).reshape(image["shape"])
        # Bokeh's row 0 is the bottom one; the map's row 0 is drawn on top (inverted axis).
        np.testing.assert_array_equal(values, stored[sample, :, :, channel])
    assert page.errors == [], page.errors


def test_every_tab_fits_1280_without_sideways_scrolling(app_url: str, browser: Any) -> None:
    page = _page(browser, app_url + "/?run=exp/a.zarr&layer=conv2")
    keep = os.environ.get("TENSORTAP_DOC_IMAGES")
    for tab in TABS:
        page.tab(tab)
        _wait_plots(page, TAB_VIEWS[tab])
        widths = page.page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], (tab, widths)
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            name = "app-" + tab.lower().replace(" ", "-") + ".png"
            page.page.screenshot(path=str(Path(keep) / name), full_page=True)
    # The sidebar's thumbnail is drawn, as a picture (a PNG, no plot): the input's bright
    # square on its faint noise.
    (thumbnail,) = _wait_pictures(page, ".tt-thumbnail")
    assert thumbnail["width"] > 100 and thumbnail["height"] > 100, thumbnail
    assert thumbnail["natural"] == [150, 150], thumbnail
    assert _plot_frames(page, ".tt-thumbnail") == []
    grey = _pixels(page, thumbnail)
    assert grey.max() - grey.min() > 100, (grey.min(), grey.max())
    assert page.errors == [], page.errors


@pytest.fixture(scope="module")
def training_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A served folder holding one short PyTorch training run (``tt.Monitor``): 8 steps,
    probe tensors every 2 (steps 0, 2, 4, 6)."""
    pytest.importorskip("torch")
    from training_models import torch_training_run

    root = tmp_path_factory.mktemp("app-training") / "runs"
    torch_training_run(root / "train.zarr", steps=8, every=2)
    with _serving(root) as url:
        yield url


def _png(shot: bytes) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(shot)).convert("L"), dtype=np.float64)


def test_training_run_step_slider_changes_the_views_and_the_url(
    training_url: str, browser: Any
) -> None:
    """The step slider of a training run: moving it redraws the views over steps (the
    chosen step's mark moves) and the maps of that step; the URL keeps the step, and
    opening it shows the same step again."""
    page = _page(browser, training_url + "/?run=train.zarr&tab=training&step=2")
    views = (".tt-step-histogram", ".tt-step-curves", ".tt-dead-over-steps", ".tt-step-compare")
    for view in views:
        _wait_plots(page, view)
    assert "step=2" in page.page.url
    histogram = _png(page.png(".tt-step-histogram"))
    curves = _png(page.png(".tt-step-curves"))
    assert (histogram < 250).mean() > 0.05  # a drawn heatmap, not an empty frame
    widths = page.page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    keep = os.environ.get("TENSORTAP_DOC_IMAGES")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        page.page.screenshot(path=str(Path(keep) / "app-training.png"), full_page=True)
    page.tab("Feature maps")
    _wait_plots(page, ".tt-feature-maps")
    maps = _png(page.png(".tt-feature-maps"))
    page.tab("Training")
    _wait_plots(page, ".tt-step-histogram")

    # Move the slider as a person does: its handle, one notch to the right (step 4).
    handle = page.page.locator(".tt-step .noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")
    deadline = time.monotonic() + 60
    while "step=4" not in page.page.url:
        assert time.monotonic() < deadline, page.page.url
        page.page.wait_for_timeout(300)
    page.page.wait_for_timeout(1500)
    moved = _png(page.png(".tt-step-histogram"))
    assert moved.shape == histogram.shape and (np.abs(moved - histogram) > 30).sum() > 50
    moved_curves = _png(page.png(".tt-step-curves"))
    assert (np.abs(moved_curves - curves) > 30).sum() > 50
    page.tab("Feature maps")
    _wait_plots(page, ".tt-feature-maps")
    page.page.wait_for_timeout(1500)
    maps_later = _png(page.png(".tt-feature-maps"))
    # Another step's activations: the same layout, other values.
    assert maps_later.shape == maps.shape and np.abs(maps_later - maps).mean() > 0.5

    shared = page.page.url
    again = _page(browser, shared)
    _wait_plots(again, ".tt-feature-maps")
    assert "step=4" in again.page.url
    assert again.page.locator(".tt-notice").first.is_hidden()  # nothing dropped
    again.tab("Training")
    _wait_plots(again, ".tt-step-histogram")
    again.page.wait_for_timeout(1500)
    restored = _png(again.png(".tt-step-histogram"))
    assert restored.shape == moved.shape and np.abs(restored - moved).mean() < 2.0
    assert page.errors == [] and again.errors == [], (page.errors, again.errors)
