"""Data files for the command line: ``.npy`` (memory-mapped), ``.npz`` and image folders.

``.npz`` archives hold ``x`` and optionally ``y``.  A folder of images is read with OpenCV,
converted to RGB float32 in [0, 1] and resized to ``image_size``; files are taken in sorted
name order so sample indices are reproducible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tensortap.core.errors import DataError, EmptyDataError

__all__ = ["IMAGE_SUFFIXES", "LoadedData", "load_data"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True, slots=True)
class LoadedData:
    """Inputs (an array, memory-mapped for ``.npy``) and optional labels."""

    x: Any
    y: np.ndarray | None = None

    def as_capture_data(self) -> Any:
        """What :func:`tensortap.capture` takes as ``data``."""
        return self.x if self.y is None else (self.x, self.y)


def load_data(
    path: str | os.PathLike[str], image_size: tuple[int, int] | None = None
) -> LoadedData:
    """Load command-line data.

    Raises
    ------
    DataError
        Unknown file type, an ``.npz`` without ``x``, an unreadable image, a folder with
        images but no ``--image-size`` and differing sizes.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data path {str(p)!r} does not exist; give a .npy, .npz or image folder")
    if p.is_dir():
        return LoadedData(_load_images(p, image_size))
    if p.suffix == ".npy":
        try:
            return LoadedData(np.load(p, mmap_mode="r", allow_pickle=False))
        except (ValueError, OSError) as err:
            raise DataError(f"cannot read {str(p)!r} as .npy: {err}") from err
    if p.suffix == ".npz":
        try:
            archive = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DataError(f"cannot read {str(p)!r} as .npz: {err}") from err
        if "x" not in archive.files:
            raise DataError(
                f"{str(p)!r} has arrays {archive.files} but no 'x'; save inputs as x= "
                "(and labels as y=)"
            )
        return LoadedData(archive["x"], archive["y"] if "y" in archive.files else None)
    raise DataError(
        f"cannot read data from {str(p)!r}: use a .npy file, an .npz file with x (and y), "
        "or a folder of images"
    )


def _load_images(folder: Path, image_size: tuple[int, int] | None) -> np.ndarray:
    import cv2

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EmptyDataError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}; nothing to capture"
        )
    images = []
    for file in files:
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(
                f"cannot read image {str(file)!r} (corrupt or not an image); "
                "remove it or replace it"
            )
        if image_size is not None:
            height, width = image_size
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(
            f"images in {str(folder)!r} have different sizes {sorted(shapes)[:3]}; pass "
            "--image-size H W"
        )
    return np.stack(images).astype(np.float32) / 255.0
