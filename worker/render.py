"""Rendering of attention maps to images a clinician can look at (PNG via Pillow)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

__all__ = ["heat_overlay", "map_to_rgb", "save_png_atomic"]


def map_to_rgb(values: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """A map in [0, 1] (H, W) -> uint8 RGB (H, W, 3) through a matplotlib colour map."""
    if values.ndim != 2:
        raise ValueError(f"values must be a 2-D map, got shape {values.shape}")
    rgba = colormaps[colormap](np.clip(values, 0.0, 1.0))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def heat_overlay(
    frame: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45, colormap: str = "jet"
) -> np.ndarray:
    """Blend a [0, 1] heat map (H, W) over a uint8 RGB frame (H, W, 3)."""
    if frame.shape[:2] != heat.shape:
        raise ValueError(f"frame {frame.shape[:2]} and heat map {heat.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    colour = map_to_rgb(heat, colormap).astype(np.float32)
    blended = (1.0 - alpha) * frame.astype(np.float32) + alpha * colour
    return blended.round().clip(0, 255).astype(np.uint8)


def save_png_atomic(image: np.ndarray, path: str | Path, *, compress_level: int = 6) -> Path:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG via a temporary name and a rename.

    ``compress_level`` is zlib's, 0-9: 1 encodes several times faster than the default
    6 for files about a third larger.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(image).save(fh, format="PNG", compress_level=compress_level)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
