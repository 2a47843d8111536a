"""`tensortap demo` (what `make demo` runs) works end to end from a clean folder (issue 19)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import tensortap as tt
from tensortap.viz.report import REPORT_SECTIONS


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    folder = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "DEMO_SERVE": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "tensortap", "demo"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, done


@pytest.mark.slow
def test_demo_trains_captures_and_summarises(demo: Any) -> None:
    folder, done = demo
    out = done.stdout
    assert "held-out accuracy" in out and "conv2" in out and "|grad|" in out
    assert "demo_report.html" in out and "serving" not in out  # DEMO_SERVE=0: no server
    run = tt.open_run(folder / "runs" / "demo.zarr")
    assert run.status == "complete" and run.samples == 360
    assert run.attrs["score"] == "logits (pre-softmax)"
    for key in run.layers:  # every layer, with its gradient
        assert run.has_gradient(key)
    for picture in ("demo_feature_maps.png", "demo_gradcam.png"):
        pixels = np.asarray(Image.open(folder / "runs" / picture).convert("L"), dtype=float)
        assert pixels.var() > 100, f"{picture} is blank"
    # the stderr the user sees holds no TensorFlow start-up chatter
    assert "oneDNN" not in done.stderr and "cuInit" not in done.stderr


@pytest.mark.slow
@pytest.mark.browser
def test_demo_report_opens_offline_with_every_section(demo: Any, browser: Any) -> None:
    folder, _ = demo
    report = folder / "runs" / "demo_report.html"
    assert report.stat().st_size > 1_000_000  # BokehJS is inlined
    outside: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    def refuse(route: Any) -> None:  # the machine that opens a report may be offline
        url = route.request.url
        if url.startswith(("file://", "data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page.route("**/*", refuse)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(report.as_uri())
    page.wait_for_function("document.querySelectorAll('*').length > 0")
    page.locator("canvas").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)  # let every plot draw
    assert not outside, outside
    assert not errors, errors
    for section, heading in REPORT_SECTIONS.items():
        title = page.locator(f"h2#{section}")
        assert title.count() == 1 and title.inner_text() == heading
        assert title.is_visible()
    assert page.get_by_text("not available for this run").count() == 0
    # The layer table lists every layer; each plot drew something (pixels, not just a canvas).
    for key in ("conv1", "conv2", "pool", "flatten", "dense", "scores"):
        assert page.locator("table.layers td", has_text=key).count() >= 1
    canvases = page.locator("canvas")
    drawn = 0
    for i in range(canvases.count()):
        box = canvases.nth(i).bounding_box()
        if not box or box["width"] < 20 or box["height"] < 20:
            continue
        shot = Image.open(io.BytesIO(canvases.nth(i).screenshot())).convert("L")
        drawn += np.asarray(shot, dtype=float).var() > 50
    assert drawn >= len(REPORT_SECTIONS) - 1  # every section but the table is a plot
    page.close()
