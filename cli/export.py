"""``tensortap export``: one view of a run written to a PNG or a self-contained HTML file.

``--view`` takes the name of the :mod:`tensortap.viz` function that draws it, so a view
seen in Python is exported by the same name (``heatmap``, ``cam`` and ``layers``, the
older names, still work).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tensortap.core.attribution import ATTRIBUTION_METHODS
from tensortap.core.cam import CAM_METHODS
from tensortap.core.errors import ViewError
from tensortap.core.explain import MODEL_METHODS, explanation_name

__all__ = ["ALIASES", "VIEWS", "build_view", "export", "export_command"]

#: ``--method`` choices: offline CAMs, then explanations ``tensortap explain`` stored.
METHODS = (*CAM_METHODS, *MODEL_METHODS, *ATTRIBUTION_METHODS)

#: ``--view`` choices (the viz function names) and what each draws.
VIEWS = {
    "feature_maps": "channel maps of --layer for --sample (--channels, --order)",
    "feature_mosaic": "the same maps tiled into one image (--channels, --order)",
    "top_samples": "stored inputs that most excite --channel of --layer",
    "distribution": "histogram of --layer",
    "distributions": "every layer's distribution",
    "dead_units": "dead and saturated channels per layer",
    "cam_overlay": "CAM (--method) of --layer over the stored input of --sample",
    "cam_figure": "input | CAM with its colour bar | overlay, for --sample",
    "cam_grid": "CAMs of --samples (default: the first 9)",
    "gallery": "stored inputs with label, prediction, confidence (--filter, --samples)",
    "compare": "this run against --against RUN2 (statistics, and maps of --layer)",
}
#: Older ``--view`` names, kept working.
ALIASES = {"heatmap": "feature_maps", "cam": "cam_figure", "layers": "layers"}


def _spatial_layers(run: Any) -> list[str]:
    return [k for k in run.layers if {"height", "width"} <= set(run.activation(k).dims)]


def _default_layer(run: Any, view: str) -> str:
    """First spatial layer for maps; for a CAM the last convolution-like one.

    A CAM of the last convolution is what Grad-CAM's paper uses; layers after it with
    spatial names (a dense head on a token grid...) would draw a meaningless map.  Without
    any convolution the last spatial layer is used.
    """
    spatial = _spatial_layers(run)
    if not spatial:
        raise ViewError(f"the run has no spatial layer to show as {view}; pass --layer")
    if not (view.startswith("cam") or view == "compare"):
        return spatial[0]
    conv_like = [k for k in spatial if "conv" in str(run.node(k).get("layer_type", "")).lower()]
    return (conv_like or spatial)[-1]


def _integers(text: str | None, option: str) -> list[int] | None:
    """``"0,3,5"`` → ``[0, 3, 5]``; ``"2-5"`` ranges allowed."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                low, high = part.split("-", 1)
                out.extend(range(int(low), int(high) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ViewError(
            f"{option} {text!r} is not a list of whole numbers; use e.g. {option} 0,3,5 or 0-8"
        ) from None
    return out


def build_view(
    run: Any,
    view: str,
    layer: str | None,
    sample: int,
    channel: int | None,
    method: str,
    *,
    samples: str | None = None,
    channels: str | None = None,
    order: str = "index",
    filter: str = "all",
    against: str | None = None,
) -> Any:
    """The HoloViews object ``tensortap export --view`` writes."""
    import holoviews as hv

    from tensortap import viz

    view = ALIASES.get(view, view)
    picked = _integers(channels, "--channels")
    if view in ("feature_maps", "feature_mosaic"):
        key = layer or _default_layer(run, view)
        if channel is not None and picked is None:
            picked = [channel]
        draw = viz.feature_maps if view == "feature_maps" else viz.feature_mosaic
        kwargs: dict[str, Any] = {"order": order}
        if picked is not None:
            kwargs.update(channels=picked, max_channels=len(picked))
        return draw(run, key, sample=sample, **kwargs)
    if view == "top_samples":
        key = layer or _default_layer(run, view)
        return viz.top_samples(run, key, channel or 0)
    if view == "distribution":
        return viz.distribution(run, layer) if layer else viz.distributions(run)
    if view == "distributions":
        return viz.distributions(run)
    if view == "dead_units":
        return viz.dead_units(run)
    if view in ("cam_overlay", "cam_figure", "cam_grid") and method not in METHODS:
        raise ViewError(f"unknown CAM method {method!r}; choose one of: {', '.join(METHODS)}")
    if view in ("cam_overlay", "cam_figure") and method not in CAM_METHODS:
        # an explanation computed with the model (tensortap explain) and stored in the run
        from tensortap.viz.explanations import explanation_overlay

        with_layer = method in ("scorecam", "ablationcam")
        key = (layer or _default_layer(run, view)) if with_layer else None
        return explanation_overlay(run, explanation_name(method, key), sample=sample)
    if view == "cam_overlay":
        from tensortap.viz.cam_overlay import scale_tile

        overlay = viz.cam_overlay(
            run, layer or _default_layer(run, view), sample=sample, method=method
        )
        # An RGB blend carries no colour bar of its own: the map's scale goes beside it.
        return hv.Layout([overlay, scale_tile()]).opts(shared_axes=False)
    if view == "cam_figure":
        # Input | map with its colour bar | overlay: readable at any input size.
        return viz.cam_figure(run, layer or _default_layer(run, view), sample=sample, method=method)
    if view == "cam_grid":
        key = layer or _default_layer(run, view)
        return viz.cam_grid(run, key, samples=_integers(samples, "--samples"), method=method)
    if view == "gallery":
        return viz.gallery(run, _integers(samples, "--samples"), filter=filter)
    if view == "compare":
        if against is None:
            raise ViewError("--view compare needs a second run: add --against RUN2")
        from tensortap.core.run import open_run

        return viz.compare(run, open_run(against), key=layer, sample=sample, channel=channel)
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
    **options: Any,
) -> Path:
    """Open ``run_path``, build ``view`` and save it to ``output`` (``.png`` or ``.html``).

    ``options`` are :func:`build_view`'s keyword arguments (samples, channels, order,
    filter, against).
    """
    from tensortap.core.run import open_run
    from tensortap.viz import save

    suffix = Path(output).suffix.lower()
    if suffix not in (".png", ".html"):  # fail before opening a possibly large run
        raise ViewError(f"cannot export to {output!r}: -o must end in .png or .html")
    run = open_run(run_path)
    built = build_view(run, view, layer, sample, channel, method, **options)
    return save(built, output, width=width)


@click.command()
@click.argument("run", type=click.Path())
@click.option(
    "--view",
    default=None,
    type=click.Choice([*VIEWS, *ALIASES]),
    help="The viz function that draws it: "
    + "; ".join(f"{name}: {text}" for name, text in VIEWS.items())
    + ". Older names: heatmap (feature_maps), cam (cam_figure), layers.",
)
@click.option(
    "--layer", default=None, help="Layer key (default: first spatial layer; last for CAMs)."
)
@click.option(
    "--sample",
    default=0,
    show_default=True,
    type=int,
    help="Sample position (negative ones count from the end).",
)
@click.option("--channel", default=None, type=int, help="One channel (maps, top_samples).")
@click.option("--channels", default=None, help="Channels of the maps, e.g. 0,3,5 or 0-15.")
@click.option("--samples", default=None, help="Sample positions for cam_grid / gallery, e.g. 0-8.")
@click.option(
    "--order",
    default="index",
    show_default=True,
    type=click.Choice(["index", "energy"]),
    help="Map order: channel index, or strongest (mean squared activation) first.",
)
@click.option(
    "--filter",
    "sample_filter",
    default="all",
    show_default=True,
    type=click.Choice(["all", "correct", "misclassified"]),
    help="Which samples the gallery shows.",
)
@click.option("--against", default=None, type=click.Path(), help="Second run for compare.")
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
    channels: str | None,
    samples: str | None,
    order: str,
    sample_filter: str,
    against: str | None,
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
        run,
        view,
        output,
        layer=layer,
        sample=sample,
        channel=channel,
        method=method,
        width=width,
        samples=samples,
        channels=channels,
        order=order,
        filter=sample_filter,
        against=against,
    )
    click.echo(f"wrote {path}")
