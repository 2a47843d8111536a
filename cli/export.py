"""``tensortap export``: one view of a run written to a PNG or a self-contained HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tensortap.core.attribution import ATTRIBUTION_METHODS
from tensortap.core.cam import CAM_METHODS
from tensortap.core.errors import ViewError
from tensortap.core.explain import MODEL_METHODS, explanation_name

__all__ = ["VIEWS", "export", "export_command"]

#: ``--method`` choices: offline CAMs, then explanations ``tensortap explain`` stored.
METHODS = (*CAM_METHODS, *MODEL_METHODS, *ATTRIBUTION_METHODS)

#: ``--view`` choices and what each draws.
VIEWS = {
    "heatmap": "feature maps of --layer for --sample (one map with --channel)",
    "distribution": "histogram of --layer (all layers without --layer)",
    "cam": "CAM (--method) of --layer over the stored input of --sample",
    "layers": "every layer's distribution and its dead/saturated units",
}


def _spatial_layers(run: Any) -> list[str]:
    return [k for k in run.layers if {"height", "width"} <= set(run.activation(k).dims)]


def _default_layer(run: Any, view: str) -> str:
    """First spatial layer for a heatmap; for a CAM the last convolution-like one.

    A CAM of the last convolution is what Grad-CAM's paper uses; layers after it with
    spatial names (a dense head on a token grid...) would draw a meaningless map.  Without
    any convolution the last spatial layer is used.
    """
    spatial = _spatial_layers(run)
    if not spatial:
        raise ViewError(f"the run has no spatial layer to show as a {view}; pass --layer")
    if view != "cam":
        return spatial[0]
    conv_like = [k for k in spatial if "conv" in str(run.node(k).get("layer_type", "")).lower()]
    return (conv_like or spatial)[-1]


def build_view(
    run: Any, view: str, layer: str | None, sample: int, channel: int | None, method: str
) -> Any:
    """The HoloViews object ``tensortap export --view`` writes."""
    import holoviews as hv

    from tensortap import viz

    if view == "heatmap":
        key = layer or _default_layer(run, view)
        if channel is None:
            return viz.feature_maps(run, key, sample=sample)
        return viz.feature_maps(run, key, sample=sample, channels=[channel], max_channels=1)
    if view == "distribution":
        return viz.distribution(run, layer) if layer else viz.distributions(run)
    if view == "cam" and method not in METHODS:
        raise ViewError(f"unknown CAM method {method!r}; choose one of: {', '.join(METHODS)}")
    if view == "cam" and method in CAM_METHODS:
        # Input | map with its colour bar | overlay: readable at any input size.
        return viz.cam_figure(run, layer or _default_layer(run, view), sample=sample, method=method)
    if view == "cam":  # an explanation computed with the model and stored in the run
        from tensortap.viz.explanations import explanation_overlay

        with_layer = method in ("scorecam", "ablationcam")
        key = (layer or _default_layer(run, view)) if with_layer else None
        return explanation_overlay(run, explanation_name(method, key), sample=sample)
    if view == "layers":
        layers = hv.Layout([viz.distributions(run), viz.dead_units(run)]).cols(1)
        # No panel letters (Matplotlib drew them over the titles), and a figure as wide as
        # the panels' own (a Layout ignores its elements' sizes in Matplotlib).
        width = max(8.0, 0.4 * len(run.layers))
        return layers.opts(
            sublabel_format="", fig_inches=(width, 9), vspace=0.6, backend="matplotlib"
        )
    raise ViewError(f"unknown view {view!r}; choose one of: {', '.join(VIEWS)}")


def export_command(
    run_path: str,
    view: str,
    output: str,
    layer: str | None = None,
    sample: int = 0,
    channel: int | None = None,
    method: str = "gradcam",
    width: int | None = None,
) -> Path:
    """Open ``run_path``, build ``view`` and save it to ``output`` (``.png`` or ``.html``)."""
    from tensortap.core.run import open_run
    from tensortap.viz import save

    suffix = Path(output).suffix.lower()
    if suffix not in (".png", ".html"):  # fail before opening a possibly large run
        raise ViewError(f"cannot export to {output!r}: -o must end in .png or .html")
    run = open_run(run_path)
    return save(build_view(run, view, layer, sample, channel, method), output, width=width)


@click.command()
@click.argument("run", type=click.Path())
@click.option(
    "--view",
    default=None,
    type=click.Choice(["heatmap", "distribution", "cam", "layers"]),
    help="heatmap: feature maps; distribution: a layer's histogram (all layers "
    "without --layer); cam: CAM over the input; layers: every layer's "
    "distribution and dead units.",
)
@click.option(
    "--layer", default=None, help="Layer key (default: first spatial layer; last for cam)."
)
@click.option("--sample", default=0, show_default=True, type=int, help="Sample position.")
@click.option("--channel", default=None, type=int, help="One channel for --view heatmap.")
@click.option(
    "--method",
    default="gradcam",
    show_default=True,
    help=f"Method for --view cam: a CAM computed from the run ({', '.join(CAM_METHODS)}), "
    f"or an explanation stored by `tensortap explain` "
    f"({', '.join((*MODEL_METHODS, *ATTRIBUTION_METHODS))}).",
)
@click.option("--width", default=None, type=click.IntRange(min=16), help="PNG width in pixels.")
@click.option("-o", "--output", default=None, help="OUT.png or OUT.html (self-contained).")
@click.option(
    "--tensorboard",
    "tensorboard_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Write the run's histograms and scalars as TensorBoard event files into this "
    "folder instead (every step of a training run).",
)
def export(
    run: str,
    view: str,
    layer: str | None,
    sample: int,
    channel: int | None,
    method: str,
    width: int | None,
    output: str | None,
    tensorboard_dir: str | None,
) -> None:
    """Write one view of RUN to a PNG or a self-contained HTML file (or, with
    --tensorboard DIR, its histograms and scalars as TensorBoard event files)."""
    if tensorboard_dir is not None:
        from tensortap.cli._tensorboard import export_tensorboard_command

        click.echo(f"wrote {export_tensorboard_command(run, tensorboard_dir)}")
        return
    if view is None or output is None:
        raise click.UsageError("give --view and -o OUT.png|OUT.html, or --tensorboard DIR")
    path = export_command(
        run, view, output, layer=layer, sample=sample, channel=channel, method=method, width=width
    )
    click.echo(f"wrote {path}")
