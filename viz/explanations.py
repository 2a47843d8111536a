"""Stored explanations blended over the input, like CAM overlays.

Input attributions (saliency, Integrated Gradients...) are shown as their magnitude summed
over channels; model explanations (ScoreCAM, AblationCAM, occlusion) as stored.  Each map
is min-max normalised per sample before colouring.
"""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np

from tensortap.core.explanation_store import read_explanation
from tensortap.viz._backend import style
from tensortap.viz._run import check_sample, sample_caption, stored_input
from tensortap.viz.cam_overlay import overlay_rgb

__all__ = ["explanation_map", "explanation_overlay"]


def explanation_map(run: Any, name: str, sample: int = 0) -> np.ndarray:
    """One sample's stored explanation as a ``(height, width)`` map in [0, 1]."""
    stored = read_explanation(run, name)
    position = check_sample(int(stored.sizes["sample"]), sample)
    one = stored.isel(sample=position)
    spatial = [d for d in ("height", "width", "y", "x") if d in one.dims]
    extra = [d for d in one.dims if d not in spatial]
    values = np.abs(one).sum(dim=extra) if extra else np.abs(one)
    values = np.asarray(values.transpose(*spatial).values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def explanation_overlay(run: Any, name: str, sample: int = 0, alpha: float = 0.5) -> hv.RGB:
    """A stored explanation (``tt.explain``) blended over the stored input of one sample.

    Parameters
    ----------
    run : tensortap.Run
    name : str
        As stored: ``integrated_gradients``, ``scorecam-<layer>``, ``occlusion``...
    sample : int
        Position among the committed samples.
    alpha : float
        Weight of the map in the blend.
    """
    values = explanation_map(run, name, sample)
    image = stored_input(run, sample)
    pixels = overlay_rgb(image, values, alpha)
    height, width = pixels.shape[:2]
    return style(
        hv.RGB(pixels, bounds=(0, 0, width, height)),
        title=f"{name} · {sample_caption(run, sample)}",
        xaxis=None,
        yaxis=None,
        bokeh={"width": 420, "height": max(1, round(420 * height / width)), "toolbar": None},
        matplotlib={"fig_size": 150},
    )
