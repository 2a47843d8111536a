"""Pixels for overlays with OpenCV: input images to RGB, maps to colour, alpha blending."""

from __future__ import annotations

import cv2
import numpy as np

from tensortap.core.errors import ViewError

__all__ = ["blend", "heat_rgb", "resize_map", "to_rgb"]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A stored input ``(height, width, channel)`` as ``uint8`` RGB for display.

    Each image is stretched min-max to 0..255: stored inputs may be raw pixels, [0, 1]
    floats or standardised values, and the overlay only needs them visible.  One channel is
    repeated to grey; more than three keep the first three.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[..., None]
    image = np.nan_to_num(image)
    low, high = image.min(), image.max()
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    pixels = np.round(scaled * 255.0).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


def resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D map to ``(height, width)`` (OpenCV takes ``(width, height)``)."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape == (height, width):
        return values
    return cv2.resize(values, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)


def heat_rgb(values: np.ndarray, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """A map in [0, 1] as ``uint8`` RGB through an OpenCV colormap (JET by default)."""
    grey = np.round(np.clip(np.nan_to_num(values), 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(grey, colormap), cv2.COLOR_BGR2RGB)


def blend(image: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    r"""``(1 - alpha) * image + alpha * heat`` with OpenCV's saturating ``addWeighted``."""
    if not 0.0 <= alpha <= 1.0:
        raise ViewError(f"alpha must be within [0, 1], got {alpha}")
    return cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)
