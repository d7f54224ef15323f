"""Rendering of attention maps to images a clinician can look at (PNG via Pillow).

The one place maps become pictures, with one normalisation each:

* Grad-CAM (:func:`gradcam_heat`): negative evidence cut (ReLU, as Grad-CAM does),
  resized bilinearly, scaled to [0, 1] between its minimum and maximum; an all-zero
  map stays black;
* Guided Backprop (:func:`guided_magnitude`): the channel sum of absolute values,
  resized, scaled to [0, 1] between its minimum and 99.5th percentile (a few pixels
  dominate it; the percentile keeps the rest visible).

Event maps (:mod:`worker.detection.results`), pool-frame maps (:mod:`worker.pool.scoring`),
comparison overlays (:mod:`worker.training.comparison`) and the API's resized heat maps
(:mod:`service.core.maps`) all use these. No torch: the API imports this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from models.atomic import atomic_file

__all__ = [
    "GUIDED_PERCENTILE",
    "gradcam_heat",
    "guided_magnitude",
    "guided_picture",
    "heat_overlay",
    "map_to_rgb",
    "resize_map",
    "save_png_atomic",
    "unit_scale",
]

#: the percentile of Guided Backprop magnitude shown as white
GUIDED_PERCENTILE = 99.5


def resize_map(map2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map (h, w) to ``size`` (H, W)."""
    values = np.ascontiguousarray(map2d, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"map2d must be a 2-D map, got shape {values.shape}")
    if values.shape == tuple(size):
        return values
    image = Image.fromarray(values, mode="F").resize(
        (int(size[1]), int(size[0])), Image.Resampling.BILINEAR
    )
    return np.asarray(image, dtype=np.float32)


def unit_scale(values: np.ndarray, percentile: float = 100.0) -> np.ndarray:
    """Scale to [0, 1] between the minimum and the given percentile (then clipped)."""
    low = float(values.min())
    high = float(np.percentile(values, percentile)) if percentile < 100 else float(values.max())
    return np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0).astype(np.float32)


def gradcam_heat(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A raw Grad-CAM map (h, w) -> a [0, 1] heat map of ``size`` (H, W)."""
    return unit_scale(resize_map(np.maximum(cam, 0.0), size))


def guided_magnitude(guided: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Raw Guided Backprop (3, S, S) -> its [0, 1] magnitude (H, W)."""
    if guided.ndim != 3:
        raise ValueError(f"guided must be (C, H, W), got shape {guided.shape}")
    return unit_scale(resize_map(np.abs(guided).sum(axis=0), size), GUIDED_PERCENTILE)


def guided_picture(guided: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Raw Guided Backprop (3, S, S) -> a grey uint8 picture (H, W)."""
    return (guided_magnitude(guided, size) * 255).round().astype(np.uint8)


def map_to_rgb(values: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """A map in [0, 1] (H, W) -> uint8 RGB (H, W, 3) through a matplotlib colour map."""
    from matplotlib import colormaps  # imported on first use: the API rarely draws

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
    with atomic_file(path, fsync=False) as fh:
        Image.fromarray(image).save(fh, format="PNG", compress_level=compress_level)
    return path
