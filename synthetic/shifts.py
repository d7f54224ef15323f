r"""Deployment shifts of the synthetic ward: what changes when a model leaves the room it knew.

A model trained on day-time wards meets, in a hospital, cameras it has never seen.
Each shift here is one such change, at a severity :math:`s \in \{1, \dots, 5\}`
(1: barely visible, 5: severe); several may be combined.

==============  ================================================================
``night``       the camera switches to infrared: grey, darker (gain
                :math:`1 - 0.12 s`), flatter (contrast towards mid-grey) and
                noisier (sensor noise :math:`+3 s` grey levels)
``camera``      another mounting: zoom :math:`1 + 0.06 s`, rotation
                :math:`1.5 s` degrees, the picture moved left by :math:`2 s` % of
                the frame (so the door stays in view)
``room``        another room: wall and floor repainted (:math:`0.18 s` of the way
                to another palette); from :math:`s \ge 3` the room is mirrored
                (bed on the right, door on the left)
``blur``        an out-of-focus or dirty lens: Gaussian blur of
                :math:`\sigma = 0.6 s` pixels per 320 pixels of width
``compression`` a low-bit-rate stream: H.264 CRF :math:`26 + 5 s` and a
                down/up-scaling by :math:`1 + 0.25 s`
==============  ================================================================

Geometric shifts (``camera``, ``room``'s mirror) move the object masks with the
pixels; photometric ones leave them alone. :func:`parse_shift` reads the command
line's ``name`` or ``name:severity``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

__all__ = [
    "SHIFTS",
    "CameraWarp",
    "Shift",
    "apply_photometric",
    "compression_crf",
    "compression_scale",
    "night_noise",
    "parse_shift",
    "parse_shifts",
    "room_palette",
    "shift_severity",
]

SHIFTS: tuple[str, ...] = ("night", "camera", "room", "blur", "compression")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Shift:
    """One deployment shift at a severity in 1..5."""

    name: str
    severity: int = 3

    def __post_init__(self) -> None:
        if self.name not in SHIFTS:
            raise ValueError(f"shift must be one of {', '.join(SHIFTS)}; got {self.name!r}")
        if not isinstance(self.severity, int) or not 1 <= self.severity <= 5:
            raise ValueError(f"shift severity must be an integer in 1..5, got {self.severity!r}")

    def __str__(self) -> str:
        return f"{self.name}:{self.severity}"


def parse_shift(text: str, default_severity: int = 3) -> Shift:
    """``"night"`` or ``"night:4"`` -> :class:`Shift` (``ValueError`` naming the problem)."""
    name, _, severity = text.strip().partition(":")
    if not severity:
        return Shift(name, default_severity)
    try:
        level = int(severity)
    except ValueError:
        raise ValueError(f"shift severity must be an integer in 1..5, got {severity!r}") from None
    return Shift(name, level)


def parse_shifts(items: Iterable[str], default_severity: int = 3) -> tuple[Shift, ...]:
    """Comma- or list-separated shifts; a name given twice is an error."""
    shifts = [
        parse_shift(part, default_severity)
        for item in items
        for part in item.split(",")
        if part.strip()
    ]
    names = [s.name for s in shifts]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"each shift may be given once; {', '.join(twice)} is repeated")
    return tuple(shifts)


def shift_severity(shifts: Sequence[Shift], name: str) -> int:
    """The severity of shift ``name`` among ``shifts``, 0 when it is absent."""
    return next((s.severity for s in shifts if s.name == name), 0)


def room_palette(
    wall: np.ndarray, floor: np.ndarray, severity: int
) -> tuple[np.ndarray, np.ndarray]:
    """Wall and floor colours moved ``0.18 * severity`` of the way to another room's."""
    if severity <= 0:
        return wall, floor
    t = min(1.0, 0.18 * severity)
    other_wall = np.array((150, 196, 190), dtype=np.float32)  # a teal room
    other_floor = np.array((150, 112, 92), dtype=np.float32)  # a wooden floor
    return (1 - t) * wall + t * other_wall, (1 - t) * floor + t * other_floor


def compression_crf(base_crf: int, severity: int) -> int:
    return min(51, base_crf + 5 * severity) if severity > 0 else base_crf


def compression_scale(severity: int) -> float:
    """The down-scaling factor before encoding (1: none)."""
    return 1.0 + 0.25 * severity if severity > 0 else 1.0


class CameraWarp:
    r"""A fixed zoom, rotation and offset of the view, as a gather of source pixels.

    For an output pixel :math:`p` the source pixel is
    :math:`c + R(-\theta)(p - c - o) / z`, with :math:`c` the frame's centre, :math:`z`
    the zoom, :math:`\theta` the rotation and :math:`o` the offset; sources outside the
    frame are clamped to its edge (a zoom above 1 never needs them far). ``mirror``
    flips the frame left-right afterwards. The index arrays are computed once per
    video, so a frame costs one fancy-indexing gather.
    """

    def __init__(self, width: int, height: int, *, severity: int = 0, mirror: bool = False) -> None:
        self.identity = severity <= 0 and not mirror
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        if mirror:
            xx = width - 1 - xx
        if severity > 0:
            zoom = 1.0 + 0.06 * severity
            theta = math.radians(1.5 * severity)
            ox, oy = -0.02 * severity * width, 0.01 * severity * height
            cx, cy = (width - 1) / 2, (height - 1) / 2
            u, v = xx - cx - ox, yy - cy - oy
            cos, sin = math.cos(-theta), math.sin(-theta)
            xx = cx + (cos * u - sin * v) / zoom
            yy = cy + (sin * u + cos * v) / zoom
        self.rows = np.clip(np.rint(yy), 0, height - 1).astype(np.intp)
        self.cols = np.clip(np.rint(xx), 0, width - 1).astype(np.intp)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.identity:
            return image
        return image[self.rows, self.cols]


def apply_photometric(
    view: np.ndarray, shifts: Sequence[Shift], *, width_ref: int = 320
) -> np.ndarray:
    """Night and blur on a uint8 RGB frame (before sensor noise), as float32."""
    out = view.astype(np.float32)
    night = shift_severity(shifts, "night")
    if night:
        grey = out @ _LUMA
        gain = 1.0 - 0.12 * night
        flat = 128.0 + (grey - 128.0) * (1.0 - 0.08 * night)  # contrast towards mid-grey
        tone = (flat * gain + 6.0).clip(0, 255)
        out = np.repeat(tone[..., None], 3, axis=2)
    blur = shift_severity(shifts, "blur")
    if blur:
        radius = 0.6 * blur * view.shape[1] / width_ref
        image = Image.fromarray(out.clip(0, 255).astype(np.uint8))
        out = np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
    return out


def night_noise(shifts: Sequence[Shift]) -> float:
    """Extra sensor noise (std, grey levels) of the infrared camera."""
    return 3.0 * shift_severity(shifts, "night")
