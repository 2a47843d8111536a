"""One self-contained HTML report of a run: what a person wants to see first.

The sections are the library's own views, rendered with Bokeh into one page with BokehJS
inlined, so the file opens on a machine without network (tested in Chromium with every
request outside the file refused).
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import holoviews as hv
import numpy as np

from tensortap.core.errors import ViewError
from tensortap.viz._backend import load_backends
from tensortap.viz._titles import fit_titles
from tensortap.viz.distributions import layer_summary
from tensortap.viz.export import EXTERNAL_SCRIPT
from tensortap.viz.units import unit_health

__all__ = ["REPORT_SECTIONS", "report"]

#: Section ids, in page order, with their headings.
REPORT_SECTIONS = {
    "layers": "Layers",
    "distributions": "Activation distributions",
    "feature-maps": "Feature maps",
    "cam": "Class activation maps",
    "top-samples": "Inputs that most excite a channel",
    "dead-units": "Dead and saturated units",
}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px; }
.facts { color: #555; margin: 0 0 12px 0; }
table.layers { border-collapse: collapse; font-size: 13px; }
table.layers th, table.layers td { border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: left; }
table.layers td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; font-size: 13px; }
"""


def _spatial(run: Any) -> list[str]:
    return [k for k in run.layers if {"height", "width"} <= set(run.activation(k).dims)]


def _class_name(run: Any, index: int) -> str:
    names = run.attrs.get("class_names")
    if names and 0 <= index < len(names):
        return str(names[index])
    return str(index)


def _layer_rows(run: Any) -> list[dict[str, Any]]:
    health = {row["layer"]: row for row in unit_health(run)}
    rows = []
    for key in run.layers:
        activation = run.activation(key)
        summary = layer_summary(run.stats(key))
        row = health.get(key, {})
        rows.append(
            {
                "key": key,
                "type": str(run.node(key).get("layer_type", "")),
                "shape": " × ".join(
                    f"{d} {n}"
                    for d, n in zip(activation.dims[1:], activation.shape[1:], strict=True)
                ),
                "mean": summary.get("mean", float("nan")),
                "std": summary.get("std", float("nan")),
                "zeros": summary.get("zero_fraction", float("nan")),
                "dead": row.get("dead", 0),
                "units": row.get("channels", 0),
                "gradient": "yes" if run.has_gradient(key) else "no",
            }
        )
    return rows


def _layer_table(run: Any) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in ("layer", "type", "shape", "mean", "std", "zeros", "dead units", "gradient")
    )
    body = []
    for r in _layer_rows(run):
        body.append(
            "<tr>"
            f"<td title='{html.escape(r['key'])}'>{html.escape(r['key'])}</td>"
            f"<td>{html.escape(r['type'])}</td><td>{html.escape(r['shape'])}</td>"
            f"<td class='num'>{r['mean']:.4g}</td><td class='num'>{r['std']:.4g}</td>"
            f"<td class='num'>{r['zeros']:.1%}</td>"
            f"<td class='num'>{r['dead']} of {r['units']}</td><td>{r['gradient']}</td>"
            "</tr>"
        )
    return f"<table class='layers'><tr>{head}</tr>{''.join(body)}</table>"


def _facts(run: Any) -> str:
    a = run.attrs
    model = a.get("model") or {}
    facts = [
        f"{run.samples} samples",
        f"{len(run.layers)} layers",
        f"model {model.get('name')} ({model.get('class')}, {a.get('framework')})",
        f"target {a.get('target')} ({a.get('score') or 'scores'})",
        f"status {run.status}",
    ]
    labels, predictions = run.labels, run.predictions
    if labels is not None and predictions is not None:
        correct = float(np.mean(labels.values == predictions.values))
        facts.append(f"accuracy {correct:.1%}")
    if a.get("class_names"):
        facts.append("classes " + ", ".join(str(c) for c in a["class_names"]))
    return " · ".join(html.escape(f) for f in facts)


def _views(
    run: Any, cam_layer: str | None, map_layer: str | None, samples: Sequence[int]
) -> dict[str, Any]:
    """The HoloViews object of each section (``None`` when the run cannot show it)."""
    from tensortap import viz

    spatial = _spatial(run)
    map_layer = map_layer or (spatial[0] if spatial else None)
    gradient_layers = [k for k in spatial if run.has_gradient(k)]
    # The last convolution is where Grad-CAM is usually read; a later pooling only blurs it.
    conv = [k for k in gradient_layers if "conv" in str(run.node(k).get("layer_type", "")).lower()]
    cam_layer = cam_layer or ((conv or gradient_layers or [None])[-1])
    views: dict[str, Any] = {"distributions": viz.distributions(run)}
    views["feature-maps"] = viz.feature_maps(run, map_layer, sample=0) if map_layer else None
    views["cam"] = viz.cam_grid(run, cam_layer, samples=list(samples)) if cam_layer else None
    if cam_layer and run.labels is not None and run.predictions is not None:
        wrong = np.flatnonzero(run.labels.values != run.predictions.values)
        if wrong.size:  # the sample a person asks about first: why was this one wrong?
            views["cam"] = [viz.cam_figure(run, cam_layer, sample=int(wrong[0])), views["cam"]]
    if map_layer:
        means = run.stats(map_layer)["mean"].values
        channel = int(np.nanargmax(means))  # the most active channel: a top row worth looking at
        views["top-samples"] = viz.top_samples(run, map_layer, channel, k=9)
    else:
        views["top-samples"] = None
    views["dead-units"] = viz.dead_units(run)
    return views


def report(
    run: Any,
    path: str | Path,
    *,
    title: str | None = None,
    cam_layer: str | None = None,
    map_layer: str | None = None,
    samples: Sequence[int] | None = None,
) -> Path:
    """Write one self-contained HTML page summarising ``run``.

    Parameters
    ----------
    run : Run
        An open run (``tt.open_run``).
    path : str or Path
        The ``.html`` file to write.
    title : str, optional
        The page's heading; the model's name by default.
    cam_layer, map_layer : str, optional
        The layer of the CAM grid (default: the last spatial layer with gradients) and of the
        feature maps and top samples (default: the first spatial layer).
    samples : sequence of int, optional
        Sample positions of the CAM grid (default: the first 8).

    Returns
    -------
    Path
        The file written.  It inlines BokehJS (a few MB) and needs no network to open.
    """
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models import Div
    from bokeh.resources import INLINE

    path = Path(path)
    if path.suffix.lower() != ".html":
        raise ViewError(f"cannot write a report to {path.name!r}: the file must end in .html")
    if run.samples == 0:
        raise ViewError(f"run {run.path} has no committed sample yet; report it once it has")
    load_backends()
    samples = list(samples) if samples is not None else list(range(min(8, run.samples)))
    heading = title or f"tensortap report: {(run.attrs.get('model') or {}).get('name', 'run')}"
    parts: list[Any] = [
        Div(text=f"<style>{_STYLE}</style><h1>{html.escape(heading)}</h1>"),
        Div(text=f"<p class='facts'>{_facts(run)}</p>"),
    ]
    with warnings.catch_warnings():  # "showing 64 of 96 channels" belongs to notebooks
        warnings.simplefilter("ignore", UserWarning)
        views = _views(run, cam_layer, map_layer, samples)
    for section, name in REPORT_SECTIONS.items():
        parts.append(Div(text=f"<h2 id='{section}'>{html.escape(name)}</h2>"))
        if section == "layers":
            parts.append(Div(text=_layer_table(run)))
            continue
        view = views.get(section)
        if view is None:
            parts.append(Div(text="<p class='note'>not available for this run</p>"))
            continue
        for each in view if isinstance(view, list) else [view]:  # one figure each: own sizes
            parts.append(hv.render(fit_titles(each), backend="bokeh"))
    page = file_html(column(*parts), INLINE, title=heading)
    leftover = EXTERNAL_SCRIPT.search(page)
    if leftover:  # would break offline: refuse rather than ship it
        raise ViewError(f"the report references {leftover.group(0)!r}; it is not self-contained")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
