"""Which file of an event's results answers each map kind of the API, and rendering the
Grad-CAM heat map from its raw ``.npy`` when the results hold no PNG of it alone.

``events.json`` (schema 1 of :mod:`worker.detection.results`) names per event: ``frame``,
``gradcam_overlay``, ``guided_backprop``, ``masked_frame`` (PNGs) and ``gradcam_raw``,
``guided_backprop_raw``, ``mask_raw`` (arrays).
"""

from __future__ import annotations

import io
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["MapKind", "available_kinds", "map_source", "render_heat_png"]


class MapKind(StrEnum):
    overlay = "overlay"  # the peak frame with the Grad-CAM heat overlay
    gradcam = "gradcam"  # the Grad-CAM heat map alone (colour map)
    guided_backprop = "guided_backprop"  # Guided Backprop magnitude
    mask = "mask"  # the peak frame times the ATCON soft mask
    frame = "frame"  # the peak frame itself


#: kind -> keys of ``event["maps"]`` naming a ready PNG, in order of preference
_PNG_KEYS: dict[MapKind, tuple[str, ...]] = {
    MapKind.overlay: ("gradcam_overlay", "overlay"),
    MapKind.gradcam: ("gradcam",),
    MapKind.guided_backprop: ("guided_backprop",),
    MapKind.mask: ("masked_frame", "mask"),
    MapKind.frame: ("frame",),
}
#: kind -> key of a raw array the PNG can be rendered from
_RAW_KEYS: dict[MapKind, str] = {MapKind.gradcam: "gradcam_raw"}


def _maps(event: dict[str, Any]) -> dict[str, Any]:
    maps = event.get("maps")
    return maps if isinstance(maps, dict) else {}


def map_source(event: dict[str, Any], kind: MapKind) -> tuple[str, bool] | None:
    """``(relative path, is_raw)`` of the file behind ``kind``, or None if it has none."""
    maps = _maps(event)
    for key in _PNG_KEYS[kind]:
        if isinstance(maps.get(key), str) and maps[key].endswith(".png"):
            return maps[key], False
    raw = _RAW_KEYS.get(kind)
    if raw is not None and isinstance(maps.get(raw), str):
        return maps[raw], True
    return None


def available_kinds(event: dict[str, Any]) -> list[MapKind]:
    return [kind for kind in MapKind if map_source(event, kind) is not None]


def render_heat_png(raw: Path, size: tuple[int, int] | None) -> bytes:
    """A raw Grad-CAM array (h, w) as a colour-mapped PNG of ``size`` = (width, height).

    Normalised as every Grad-CAM picture is (:func:`worker.detection.render.gradcam_heat`).
    """
    from worker.detection.render import gradcam_heat, map_to_rgb

    cam = np.load(raw, allow_pickle=False).astype(np.float32)
    if cam.ndim != 2:
        raise ValueError(f"{raw.name} holds a {cam.ndim}-D array, not a 2-D map")
    image = Image.fromarray(map_to_rgb(gradcam_heat(cam, cam.shape)))
    if size is not None and size[0] > 0 and size[1] > 0:
        image = image.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
