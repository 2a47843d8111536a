"""Exported HTML views keep their titles inside their plots (issue 15), measured in
Debian's headless Chromium with the browser's own text metrics, for a nested layer key
(``mobilenetv2_1.00_224.block_16_project``) and long class names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import tensortap as tt
from tensortap.cli import main
from tensortap.cli.export import VIEWS
from tensortap.viz._titles import wrap_title

KEY = "mobilenetv2_1.00_224.block_16_project"
CLASS_NAMES = ["a rather long class name", "b", "another long class name"]

#: Every title the page draws: a Bokeh ``Title`` (on the canvas, from its frame's left
#: edge) or a layout's title ``Div``; widths from ``measureText`` in the title's own font.
MEASURE_TITLES = """() => {
  const ctx = document.createElement("canvas").getContext("2d");
  const out = [];
  const seen = new Set();
  const walk = (v) => {
    if (!v || seen.has(v)) return;
    seen.add(v);
    const m = v.model;
    if (m && m.type === "Title" && m.text) {
      ctx.font = `${m.text_font_style} ${m.text_font_size} ${m.text_font}`;
      const width = Math.max(...String(m.text).split("\\n").map(l => ctx.measureText(l).width));
      out.push({text: m.text, left: v.layout.bbox.x0, width: width,
                plot: v.parent.model.outer_width});
    }
    if (m && m.type === "Div" && v.shadow_el) {
      const span = v.shadow_el.querySelector("span");
      if (span && span.innerText.trim()) {
        out.push({text: span.innerText, left: 0, width: span.getBoundingClientRect().width,
                  plot: v.el.getBoundingClientRect().width});
      }
    }
    const kids = [...(v.child_views || [])];
    for (const name of ["renderer_views", "_renderer_views", "_computed_views"]) {
      if (v[name] && v[name].values) kids.push(...v[name].values());
    }
    for (const c of kids) walk(c);
  };
  for (const v of Object.values(Bokeh.index)) walk(v);
  return out;
}"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two runs of a CNN whose convolutions sit in a base named like MobileNetV2."""
    keras = pytest.importorskip("keras")
    base_dir = tmp_path_factory.mktemp("titles")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 1))
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block_16_project")(
        inputs
    )
    base = keras.Model(inputs, hidden, name="mobilenetv2_1.00_224")
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            base,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.random((8, 12, 12, 1)).astype("float32")
    y = rng.integers(0, 3, 8)
    paths = []
    for name in ("a", "b"):
        path = base_dir / f"{name}.zarr"
        tt.capture(
            model, x, store=path, labels=y, gradients=True, class_names=CLASS_NAMES, progress=False
        )
        paths.append(str(path))
    assert KEY in tt.open_run(paths[0]).layers
    return paths[0], paths[1]


@pytest.mark.browser
def test_every_exported_html_view_keeps_its_titles_inside_its_plots(
    runs: tuple[str, str], tmp_path: Path, browser: Any
) -> None:
    extra = {"compare": ["--against", runs[1]], "gallery": ["--samples", "0-7"]}
    seen = 0
    for view in VIEWS:
        out = tmp_path / f"{view}.html"
        layer = [] if view in ("distributions", "dead_units", "gallery") else ["--layer", KEY]
        args = ["export", runs[0], "--view", view, *layer, *extra.get(view, []), "-o", str(out)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, (view, result.output, result.exception)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            page.goto(out.as_uri())
            page.locator("canvas").first.wait_for(timeout=60_000)
            page.wait_for_timeout(300)  # let every plot lay out
            titles = page.evaluate(MEASURE_TITLES)
        finally:
            page.close()
        assert titles, f"{view}: no title found on the page"
        for t in titles:
            assert t["width"] <= t["plot"], (view, t)
            assert t["left"] + t["width"] <= t["plot"], (view, t)  # not cut at the canvas edge
        seen += len(titles)
    assert seen > len(VIEWS)


def test_wrap_keeps_every_character_and_the_line_length() -> None:
    text = f"gradcam · {KEY} · sample 12 · label 3 (another long class name) · pred 5"
    for width in (8, 15, 30, 60):
        lines = wrap_title(text, width).split("\n")
        assert all(len(line) <= width for line in lines), (width, lines)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    assert wrap_title("short", 40) == "short"
    assert wrap_title("one\ntwo", 40) == "one\ntwo"  # the caller's breaks stay
