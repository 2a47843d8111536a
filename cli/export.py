"""``tensortap export``: one view of a run written to a PNG or a self-contained HTML file.

``--view`` takes the name of the :mod:`tensortap.viz` function that draws it, so a view
seen in Python is exported by the same name (``heatmap``, ``cam`` and ``layers``, the
older names, still work).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tensortap.core.errors import ViewError

__all__ = ["ALIASES", "VIEWS", "build_view", "export", "export_command"]

#: ``--view`` choices (the viz function names) and what each draws.
VIEWS = {
    "feature_maps": "channel maps of --layer for --sample (--channels, --order)",
    "feature_mosaic": "the same maps tiled into one image (--channels, --order)",
    "top_samples": "stored inputs that most excite --channel of --layer",
    "distribution": "histogram of --layer",
    "distributions": "every layer's distribution",
    "dead_units": "dead and saturated channels per layer",
    "cam_overlay": "CAM (--method) of --layer over the stored input of --sample",
    "cam_grid": "CAMs of --samples (default: the first 9)",
    "gallery": "stored inputs with label, prediction, confidence (--filter, --samples)",
    "compare": "this run against --against RUN2 (statistics, and maps of --layer)",
}
#: Older ``--view`` names, kept working.
ALIASES = {"heatmap": "feature_maps", "cam": "cam_overlay", "layers": "layers"}


def _spatial_layers(run: Any) -> list[str]:
    return [k for k in run.layers if {"height", "width"} <= set(run.activation(k).dims)]


def _default_layer(run: Any, view: str) -> str:
    """First spatial layer for maps, last one (typically the last conv) for a CAM."""
    spatial = _spatial_layers(run)
    if not spatial:
        raise ViewError(f"the run has no spatial layer to show as {view}; pass --layer")
    return spatial[-1] if view.startswith("cam") or view == "compare" else spatial[0]


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
    if view == "cam_overlay":
        return viz.cam_overlay(
            run, layer or _default_layer(run, view), sample=sample, method=method
        )
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
        return hv.Layout([viz.distributions(run), viz.dead_units(run)]).cols(1)
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
    required=True,
    type=click.Choice([*VIEWS, *ALIASES]),
    help="The viz function that draws it: "
    + "; ".join(f"{name}: {text}" for name, text in VIEWS.items())
    + ". Older names: heatmap (feature_maps), cam (cam_overlay), layers.",
)
@click.option(
    "--layer", default=None, help="Layer key (default: first spatial layer; last for CAMs)."
)
@click.option("--sample", default=0, show_default=True, type=int, help="Sample position.")
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
    help="CAM method: gradcam, gradcam++, layercam, hirescam, xgradcam.",
)
@click.option("--width", default=None, type=click.IntRange(min=16), help="PNG width in pixels.")
@click.option("-o", "--output", required=True, help="OUT.png or OUT.html (self-contained).")
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
    output: str,
) -> None:
    """Write one view of RUN to a PNG or a self-contained HTML file."""
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
