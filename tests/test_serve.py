"""``tensortap serve``: run discovery and path safety, the command line, and the served app
in a real browser (issue 5).

The browser tests start a real ``tensortap serve`` subprocess on a free loopback port and
drive Debian's Chromium (``/usr/bin/chromium``, installed by ``make chromium``) with
Python Playwright.  Set ``TENSORTAP_SCREENSHOTS=<folder>`` to keep the screenshots.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tensortap.core.errors import RunNotFoundError

CHROMIUM = "/usr/bin/chromium"  # the `browser` fixture (tests/conftest.py) launches it
N_SAMPLES = 12

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is missing: `make chromium` (apt-get install chromium) installs it",
)


# --------------------------------------------------------------------------- runs


def _tiny_cnn(name: str) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((12, 12, 1), name="image"),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, name="logits"),
        ],
        name=name,
    )


def _squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Faint noise with one bright square per image, so maps differ between samples."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 12, 12, 1), dtype=np.float32) * 0.2
    y = rng.integers(0, 3, n)
    for i in range(n):
        row, col = rng.integers(0, 8, 2)
        x[i, row : row + 4, col : col + 4] = 1.0
    return x, y


def _capture(model: Any, data: Any, store: Path, labels: Any = None, **kw: Any) -> Any:
    import tensortap as tt

    return tt.capture(
        model, data, store=store, gradients=True, labels=labels, batch_size=4, progress=False, **kw
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A folder of runs, a run outside it, and a symlink that tries to escape."""
    base = tmp_path_factory.mktemp("serve")
    root = base / "runs"
    x, y = _squares(N_SAMPLES, seed=1)
    _capture(_tiny_cnn("tiny_cnn"), x, root / "exp" / "a.zarr", labels=y)
    x2, y2 = _squares(N_SAMPLES, seed=2)
    _capture(_tiny_cnn("tiny_cnn"), x2, root / "exp" / "b.zarr", labels=y2)
    _capture(_tiny_cnn("secret_cnn"), x, base / "outside" / "secret.zarr", labels=y)
    (root / "escape.zarr").symlink_to(base / "outside" / "secret.zarr")
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not a run")
    return {"base": base, "root": root, "x": x, "y": y}


# --------------------------------------------------------------------------- catalog


def test_catalog_lists_runs_recursively_and_skips_links(served: dict[str, Any]) -> None:
    from tensortap.viz.app import RunCatalog

    catalog = RunCatalog(served["root"])
    assert [entry.id for entry in catalog.runs()] == ["exp/a.zarr", "exp/b.zarr"]
    assert catalog.resolve("exp/a.zarr").path == (served["root"] / "exp" / "a.zarr").resolve()
    single = RunCatalog(served["root"] / "exp" / "a.zarr")
    assert [entry.id for entry in single.runs()] == ["."]


@pytest.mark.parametrize(
    "run_id",
    [
        "../outside/secret.zarr",
        "exp/../../outside/secret.zarr",
        "escape.zarr",  # a link inside the folder that leads out of it
        "/etc",
        "C:\\Windows",
        "..\\outside",
        "",
        "exp/a.zarr\x00",
    ],
)
def test_catalog_refuses_paths_outside(served: dict[str, Any], run_id: str) -> None:
    from tensortap.viz.app import RunAccessError, RunCatalog

    catalog = RunCatalog(served["root"])
    with pytest.raises(RunAccessError):
        catalog.resolve(run_id)
    with pytest.raises(RunAccessError):  # the absolute path of the outside run, too
        catalog.resolve(str(served["base"] / "outside" / "secret.zarr"))


def test_catalog_unknown_run(served: dict[str, Any]) -> None:
    from tensortap.viz.app import RunCatalog

    with pytest.raises(RunNotFoundError):
        RunCatalog(served["root"]).resolve("notes")


def test_app_shows_bad_run_as_message(served: dict[str, Any], tmp_path: Path) -> None:
    """A partial run (metadata says run, arrays missing) gives a message, not a crash."""
    from tensortap.viz.app import RunCatalog, TensortapApp

    broken = tmp_path / "broken.zarr"
    shutil.copytree(served["root"] / "exp" / "a.zarr", broken)
    shutil.rmtree(broken / "layers")
    app = TensortapApp(RunCatalog(tmp_path), defer=False)
    assert app.run is None
    assert app.notice.visible and "Cannot open run" in app.notice.object


def test_app_builds_every_view_without_a_browser(served: dict[str, Any]) -> None:
    from tensortap.viz.app import RunCatalog, TensortapApp

    app = TensortapApp(RunCatalog(served["root"]), "exp/a.zarr", defer=False)
    assert app.run is not None and not app.notice.visible
    for tab in range(len(app.tabs)):
        app.tabs.active = tab
    for name, view in app._views.items():
        assert view.objects, name
        assert not any(type(o).__name__ == "Alert" for o in view.objects), (name, view.objects)
    assert list(app.layer_list.value.index) == list(app.run.layers)


# --------------------------------------------------------------------------- command line


def _tensortap(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tensortap", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("case", ["missing", "no runs"])
def test_serve_bad_path_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    path = tmp_path / "nowhere" if case == "missing" else tmp_path
    (tmp_path / "junk.txt").write_text("x")
    done = _tensortap("serve", str(path), "--port", "0")
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert str(path) in lines[0]


# --------------------------------------------------------------------------- served app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def server(served: dict[str, Any]) -> Iterator[str]:
    port = _free_port()
    log = served["base"] / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tensortap", "serve", str(served["root"]), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"tensortap serve exited {proc.returncode}:\n{log.read_text()}")
            try:
                if _get(url + "/liveness", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"tensortap serve did not answer in 90 s:\n{log.read_text()}")
            time.sleep(0.3)
        assert f"at {url}/" in log.read_text()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


class Page:
    """A browser page that records console errors and every URL it requested."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1500, "height": 1100})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("websocket", lambda ws: self.requests.append(ws.url))
        self.page.goto(url)

    def png(self, selector: str) -> bytes:
        target = self.page.locator(selector)
        # :visible: a view keeps the plots of layers seen before, hidden, for going back
        target.locator("canvas:visible").first.wait_for(timeout=60_000)
        self.page.wait_for_timeout(300)  # let Bokeh finish painting the canvas
        return target.screenshot()

    def changed(self, selector: str, before: bytes, timeout_s: float = 20) -> bytes:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = self.png(selector)
            if now != before:
                return now
            self.page.wait_for_timeout(300)
        pytest.fail(f"{selector} did not change in {timeout_s} s")

    def set_number(self, css_class: str, value: int) -> None:
        box = self.page.locator(f".{css_class} input:not([type=range])").first
        box.fill(str(value))
        box.press("Enter")

    def tab(self, title: str) -> None:
        self.page.locator(".bk-tab", has_text=title).first.click()

    def text(self, selector: str) -> str:
        """Text of a Panel pane (Bokeh renders each component in a shadow root)."""
        return self.page.locator(selector).first.evaluate(
            "e => [...(e.shadowRoot || e).children]"
            ".filter(c => c.tagName !== 'STYLE' && c.tagName !== 'LINK')"
            ".map(c => c.innerText).join(' ')"
        )

    def status(self) -> str:
        return self.text(".tt-status")

    def save(self, name: str, folder: Path) -> Path:
        path = folder / name
        self.page.screenshot(path=str(path), full_page=True)
        keep = os.environ.get("TENSORTAP_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / name)
        return path


def _not_blank(path: Path) -> float:
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    return float(pixels.var())


@pytest.mark.browser
@needs_chromium
def test_page_views_follow_layer_sample_channel(server: str, browser: Any, tmp_path: Path) -> None:
    page = Page(browser, server + "/?run=exp/a.zarr")
    grid = page.png(".tt-feature-maps")
    zoom = page.png(".tt-zoom")
    first_layer = page.page.locator(".tt-layer select").input_value()

    layers = page.page.locator(".tt-layer select")
    conv1 = next(
        v for v in layers.evaluate("s => [...s.options].map(o => o.value)") if "conv1" in v
    )
    layers.select_option(conv1)
    grid = page.changed(".tt-feature-maps", grid)
    zoom = page.changed(".tt-zoom", zoom)
    # The channel grid is ONE figure (a mosaic), not one per channel.
    assert page.page.locator(".tt-feature-maps .bk-Figure:visible").count() == 1

    page.set_number("tt-sample", 5)
    grid = page.changed(".tt-feature-maps", grid)
    zoom = page.changed(".tt-zoom", zoom)
    assert "sample 5" in page.text(".tt-sample-info")

    page.set_number("tt-channel", 2)
    zoom = page.changed(".tt-zoom", zoom)
    top = page.png(".tt-top-samples")
    assert page.png(".tt-feature-maps") == grid  # a channel change leaves the grid alone

    # Back to a layer seen before (its plot is reused), then forth again.
    layers.select_option(first_layer)
    page.changed(".tt-feature-maps", grid)
    page.changed(".tt-top-samples", top)
    layers.select_option(conv1)
    deadline = time.monotonic() + 20
    while page.png(".tt-feature-maps") != grid:  # the same layer, sample: the same picture
        assert time.monotonic() < deadline, "the grid did not come back"
        page.page.wait_for_timeout(300)
    shot = page.save("serve-feature-maps.png", tmp_path)
    assert _not_blank(shot) > 100

    page.tab("Distributions")
    page.png(".tt-distribution")
    page.png(".tt-distributions")
    page.save("serve-distributions.png", tmp_path)

    page.tab("CAM")
    cam = page.png(".tt-cam")
    page.png(".tt-cam-grid")
    page.page.locator(".tt-method select").select_option("layercam")
    page.changed(".tt-cam", cam)
    shot = page.save("serve-cam.png", tmp_path)
    assert _not_blank(shot) > 100

    page.tab("Compare")
    page.page.locator(".tt-compare canvas").first.wait_for(timeout=60_000)
    page.save("serve-compare.png", tmp_path)

    assert page.errors == [], page.errors
    # Offline: every script, stylesheet, font and websocket came from this server.
    local = ("http://127.0.0.1:", "ws://127.0.0.1:", "blob:http://127.0.0.1:", "data:")
    foreign = [u for u in page.requests if not u.startswith(local)]
    assert foreign == [], foreign


def _session(server: str, arguments: dict[str, str]) -> tuple[str, list[str]]:
    """Open a session like a browser would (websocket), without one: the run picker's value
    and every text in the page."""
    import panel.models.tabulator  # noqa: F401  (the page's model types must be known)
    from bokeh.client import pull_session
    from bokeh.models import Select

    def pull() -> list[Any]:
        with pull_session(url=server + "/", arguments=arguments) as session:
            return list(session.document.models)

    # In a thread of its own: Playwright's sync API holds this thread's event loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        models = pool.submit(pull).result(timeout=60)
    run = next(m.value for m in models if isinstance(m, Select) and m.title == "Run")
    texts = [m.text for m in models if isinstance(getattr(m, "text", None), str)]
    return run, texts


@pytest.mark.browser
@needs_chromium
def test_query_cannot_open_a_run_outside(server: str, browser: Any, served: dict[str, Any]) -> None:
    page = Page(browser, server + "/?run=../outside/secret.zarr")
    page.page.locator(".tt-feature-maps canvas").first.wait_for(timeout=60_000)
    assert "refused" in page.text(".tt-notice")
    assert "secret_cnn" not in page.status() and "tiny_cnn" in page.status()
    assert page.errors == [], page.errors

    outside = served["base"] / "outside" / "secret.zarr"
    for query in ("escape.zarr", str(outside), "exp/../../outside/secret.zarr", "..%2Foutside"):
        run, texts = _session(server, {"run": query})
        assert run == "exp/a.zarr", query  # the default run, not the one asked for
        said = "no run" if "%" in query else "refused"  # a literal name: not found
        assert any(said in t for t in texts), (query, texts)
    # Paths in the URL itself never reach the file system outside Panel's resources.
    host, port = server.removeprefix("http://").split(":")
    for raw in (
        "/static/../../../../etc/passwd",
        "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        f"/static/{outside}/zarr.json",
        "/exp/a.zarr/zarr.json",
        "/../outside/secret.zarr/zarr.json",
    ):
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", raw)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status in (400, 403, 404), (raw, response.status)
        assert b"root:" not in body and b'"node_type"' not in body, raw


@pytest.mark.browser
@needs_chromium
def test_concurrent_requests(server: str) -> None:
    paths = ["/", "/?run=exp/b.zarr", "/static/js/bokeh.min.js", "/liveness"]
    urls = [server + paths[i % len(paths)] for i in range(100)]
    with ThreadPoolExecutor(max_workers=20) as pool:  # bounded: 20 connections at a time
        results = list(pool.map(lambda u: _get(u, timeout=60), urls))
    errors = [(u, s) for u, (s, _) in zip(urls, results, strict=True) if s != 200]
    assert errors == []
    assert all(
        b"tensortap" in body for u, (_, body) in zip(urls, results, strict=True) if "run" in u
    )


@pytest.mark.browser
@needs_chromium
def test_live_mode_picks_up_new_samples(
    server: str, browser: Any, served: dict[str, Any], tmp_path: Path
) -> None:
    """A capture still running: the page shows its first block, then the rest, no reload."""
    import tensortap as tt

    x, y = served["x"], served["y"]
    gate = threading.Event()

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        yield x[:4], y[:4]
        gate.wait(120)  # the capture stays "capturing" until the test lets it go on
        for start in range(4, N_SAMPLES, 4):
            yield x[start : start + 4], y[start : start + 4]

    store = served["root"] / "live" / "run.zarr"
    failure: list[BaseException] = []

    def capture() -> None:
        try:
            # One batch a block: a block sized by bytes would wait for the gated batches.
            _capture(_tiny_cnn("tiny_cnn"), batches(), store, block_size=4)
        except BaseException as err:  # reported by the test thread
            failure.append(err)

    worker = threading.Thread(target=capture, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 90
        while not (store / "zarr.json").exists() or tt.open_run(store).samples < 4:
            assert not failure, failure
            assert time.monotonic() < deadline, "the capture did not commit its first block"
            time.sleep(0.2)
        page = Page(browser, server + "/?run=live/run.zarr")
        page.page.locator(".tt-feature-maps canvas").first.wait_for(timeout=60_000)
        status = page.status()
        assert "4 samples" in status and "capturing" in status, (status, page.text(".tt-notice"))
        assert page.page.locator(".tt-live input").is_checked()
        gate.set()
        worker.join(120)
        assert not failure, failure
        deadline = time.monotonic() + 30
        # the last commit and the status change are two writes: a poll may land between
        while not (f"{N_SAMPLES} samples" in page.status() and "complete" in page.status()):
            assert time.monotonic() < deadline, page.status()
            page.page.wait_for_timeout(300)
        page.set_number("tt-sample", N_SAMPLES - 1)  # a sample that arrived live
        deadline = time.monotonic() + 20
        while f"sample {N_SAMPLES - 1}" not in page.text(".tt-sample-info"):
            assert time.monotonic() < deadline, page.text(".tt-sample-info")
            page.page.wait_for_timeout(300)
        assert page.errors == [], page.errors
    finally:
        gate.set()
        worker.join(60)
