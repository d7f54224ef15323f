"""Synthetic ward videos with ground truth: the test and demo data of the product.

A procedurally drawn hospital room seen from a wall camera: a bed, a patient, a door
through which staff come in. A seeded script decides what happens when:

=================  ========================================================
``staff_present``  a person in blue scrubs walks in, stands by the bed, leaves
``patient_sitting`` the patient sits up in bed
``bed_exit``       the patient is out of bed, standing or walking beside it
``lights_dimmed``  the wall lamp goes out and the room goes to a low-contrast grey
=================  ========================================================

Deployment shifts (:mod:`synthetic.shifts`: ``night``, ``camera``, ``room``, ``blur``,
``compression``, each at a severity 1..5) change how the same script is seen.

Every frame also has object masks (:meth:`WardScene.render` with ``masks=True``): a
uint8 bit mask whose bit ``k`` marks the pixels of the object that makes class ``k``
true: the staff member (``staff_present``), the sitting or standing patient
(``patient_sitting``, ``bed_exit``) and the wall lamp while it is out
(``lights_dimmed``). A pixel carries the bit of the front-most object. With
``masks=True``, :func:`synthesize` writes them at the labeled-frame rate to
``<name>.masks.npz`` (``times``, ``masks`` (T, H, W), ``classes``), so attention
maps can be scored against them (the pointing game, mIoU).

Every frame gets camera noise and a slow camera drift of a few pixels, and the video
is H.264-compressed, so a model cannot key on exact pixel values. Alongside the MP4
go its ground-truth events (JSON) and, optionally, labeled frames in the training
format: a folder with ``labels.csv`` (``path,labels``; labels are class names joined
by ``|``, empty for none; paths relative to the folder) and ``classes.txt``. The
labeled frames are decoded back from the compressed video, so they look exactly like
what detection sees.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from models.atomic import atomic_path, atomic_write_text
from synthetic.shifts import (
    CameraWarp,
    Shift,
    apply_photometric,
    compression_crf,
    compression_scale,
    night_noise,
    room_palette,
    shift_severity,
)
from worker.video.decode import FrameSampler

__all__ = [
    "CLASSES",
    "GROUND_TRUTH_SCHEMA",
    "GroundTruthEvent",
    "SynthConfig",
    "SynthResult",
    "WardScene",
    "degrade",
    "ground_truth_document",
    "load_ground_truth",
    "load_masks",
    "make_script",
    "synthesize",
    "write_labeled_frames",
    "write_masks",
]

CLASSES: tuple[str, ...] = ("staff_present", "patient_sitting", "bed_exit", "lights_dimmed")
GROUND_TRUTH_SCHEMA = 1

_WALL = np.array((196, 186, 164), dtype=np.float32)
_FLOOR = np.array((118, 122, 132), dtype=np.float32)
_DOOR = (122, 92, 64)
_WINDOW = (170, 200, 225)
_MATTRESS = (228, 228, 218)
_BED_FRAME = (138, 142, 150)
_PILLOW = (240, 240, 240)
_GOWN = (150, 192, 162)
_BLANKET = (120, 150, 190)
_SKIN = (222, 182, 150)
_SCRUBS = (38, 88, 172)
_CAP = (30, 70, 140)
_HAIR = (70, 50, 40)
_LAMP_ON = (255, 238, 170)
_LAMP_OFF = (72, 72, 70)
_LAMP_HOUSING = (96, 96, 100)


@dataclass(frozen=True)
class GroundTruthEvent:
    label: str
    start_s: float
    end_s: float

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.end_s


@dataclass(frozen=True)
class SynthConfig:
    """What to draw. ``frames_fps`` is the rate of labeled frames (0: none)."""

    seconds: float = 60.0
    fps: float = 15.0
    width: int = 320
    height: int = 240
    seed: int = 0
    noise: float = 5.0
    crf: int = 26
    frames_fps: float = 2.0
    #: deployment shifts (:mod:`synthetic.shifts`), each at most once
    shifts: tuple[Shift, ...] = ()

    def __post_init__(self) -> None:
        shifts = tuple(Shift(**s) if isinstance(s, dict) else s for s in self.shifts)
        object.__setattr__(self, "shifts", shifts)
        names = [s.name for s in shifts]
        if len(set(names)) != len(names):
            raise ValueError(f"each shift may be given once, got {', '.join(names)}")
        if not self.seconds > 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"fps must lie in [1, 120], got {self.fps}")
        if self.width < 64 or self.height < 48 or self.width % 2 or self.height % 2:
            raise ValueError(
                f"width and height must be even and at least 64x48, got {self.width}x{self.height}"
            )
        if self.noise < 0:
            raise ValueError(f"noise must be non-negative, got {self.noise}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must lie in [0, 51], got {self.crf}")
        if self.frames_fps < 0:
            raise ValueError(f"frames_fps must be non-negative, got {self.frames_fps}")


@dataclass(frozen=True)
class SynthResult:
    video: Path
    ground_truth: Path
    frames_dir: Path | None
    events: list[GroundTruthEvent] = field(default_factory=list)
    labeled_frames: int = 0
    masks: Path | None = None


def make_script(seconds: float, rng: np.random.Generator) -> list[GroundTruthEvent]:
    """A plausible sequence of ward events over ``seconds``, sorted by start.

    The patient alternates lying with either sitting up or being out of bed; staff
    visit every so often; the lights are dimmed for a stretch or two. Events of the
    patient never overlap each other; staff and lights are independent of them.
    """
    events: list[GroundTruthEvent] = []

    def add(label: str, start: float, end: float) -> None:
        start, end = max(0.0, start), min(seconds, end)
        if end - start >= 1.0:
            events.append(GroundTruthEvent(label, round(start, 3), round(end, 3)))

    t = rng.uniform(3.0, 8.0)
    while t < seconds:
        label = "patient_sitting" if rng.random() < 0.55 else "bed_exit"
        length = rng.uniform(5.0, 10.0) if label == "patient_sitting" else rng.uniform(6.0, 12.0)
        add(label, t, t + length)
        t += length + rng.uniform(6.0, 14.0)

    t = rng.uniform(2.0, 10.0)
    while t < seconds:
        length = rng.uniform(6.0, 14.0)
        add("staff_present", t, t + length)
        t += length + rng.uniform(8.0, 20.0)

    t = rng.uniform(8.0, 25.0)
    while t < seconds:
        length = rng.uniform(8.0, 16.0)
        add("lights_dimmed", t, t + length)
        t += length + rng.uniform(25.0, 50.0)
    return sorted(events, key=lambda e: (e.start_s, CLASSES.index(e.label)))


class _Sprite:
    """A small RGB patch with a shape mask, pasted onto frames at integer positions."""

    def __init__(self, width: int, height: int) -> None:
        self.mask = np.zeros((height, width), dtype=bool)
        self.rgb = np.zeros((height, width, 3), dtype=np.uint8)
        self._yy, self._xx = np.mgrid[0:height, 0:width].astype(np.float32)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, color: Sequence[int]) -> None:
        inside = ((self._xx - cx) / max(rx, 0.5)) ** 2 + ((self._yy - cy) / max(ry, 0.5)) ** 2 <= 1
        self.mask |= inside
        self.rgb[inside] = color

    def rect(self, x0: float, y0: float, x1: float, y1: float, color: Sequence[int]) -> None:
        inside = (self._xx >= x0) & (self._xx < x1) & (self._yy >= y0) & (self._yy < y1)
        self.mask |= inside
        self.rgb[inside] = color

    def paste(
        self,
        canvas: np.ndarray,
        x: int,
        y: int,
        labels: np.ndarray | None = None,
        bit: int = 0,
    ) -> None:
        """Paste with the patch's top-left corner at (x, y), clipped to the canvas.

        With ``labels``, the pasted pixels of that mask get ``bit`` (0: cleared, as
        an object in front hides what is behind it).
        """
        height, width = self.mask.shape
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, canvas.shape[1]), min(y + height, canvas.shape[0])
        if x0 >= x1 or y0 >= y1:
            return
        mask = self.mask[y0 - y : y1 - y, x0 - x : x1 - x]
        region = canvas[y0:y1, x0:x1]
        region[mask] = self.rgb[y0 - y : y1 - y, x0 - x : x1 - x][mask]
        if labels is not None:
            labels[y0:y1, x0:x1][mask] = bit


def _bit(label: str) -> int:
    return 1 << CLASSES.index(label)


class WardScene:
    """Draws the room at ``width`` x ``height``; :meth:`render` gives the frame at a time."""

    _MARGIN = 6

    def __init__(
        self,
        width: int,
        height: int,
        events: Sequence[GroundTruthEvent],
        *,
        seed: int = 0,
        noise: float = 5.0,
        shifts: Sequence[Shift] = (),
    ) -> None:
        self.width, self.height = width, height
        self.events = list(events)
        self.shifts = tuple(shifts)
        self._rng = np.random.default_rng(seed + 7919)
        self._phase = self._rng.uniform(0, 2 * math.pi, size=4)
        m = self._MARGIN
        room = shift_severity(self.shifts, "room")
        self._wall, self._floor = room_palette(_WALL, _FLOOR, room)
        self._background = self._draw_room(width + 2 * m, height + 2 * m)
        self._warp = CameraWarp(
            width, height, severity=shift_severity(self.shifts, "camera"), mirror=room >= 3
        )
        noise += night_noise(self.shifts)
        unit = height / 240.0
        self._lying = self._patient_lying(unit)
        self._sitting = self._patient_sitting(unit)
        self._standing = self._person(unit, _GOWN, _HAIR, cap=False)
        self._staff = self._person(unit * 1.08, _SCRUBS, _CAP, cap=True)
        # an infrared sensor's noise is grey, a colour sensor's is per channel
        channels = 1 if shift_severity(self.shifts, "night") else 3
        self._noise = [
            np.broadcast_to(
                self._rng.normal(0.0, noise, size=(height, width, channels)).astype(np.int16),
                (height, width, 3),
            )
            for _ in range(8 if noise > 0 else 0)
        ]

    # -- drawing ---------------------------------------------------------------------
    def _draw_room(self, width: int, height: int) -> np.ndarray:
        yy = np.mgrid[0:height, 0:width][0].astype(np.float32)
        horizon = 0.56 * height
        wall = self._wall * (0.92 + 0.08 * (yy / horizon))[..., None]
        floor = self._floor * (0.85 + 0.25 * ((yy - horizon) / (height - horizon)))[..., None]
        room = np.where((yy < horizon)[..., None], wall, floor)
        room += self._rng.normal(0, 2.0, size=room.shape).astype(np.float32)  # texture
        canvas = room.clip(0, 255).astype(np.uint8)
        w, h = width, height
        canvas[int(0.10 * h) : int(0.30 * h), int(0.05 * w) : int(0.25 * w)] = _WINDOW
        canvas[int(0.195 * h) : int(0.205 * h), int(0.05 * w) : int(0.25 * w)] = (235, 235, 235)
        canvas[int(0.12 * h) : int(0.60 * h), int(0.80 * w) : int(0.95 * w)] = _DOOR
        canvas[int(0.36 * h) : int(0.39 * h), int(0.815 * w) : int(0.83 * w)] = (200, 190, 120)
        # bed: headboard, frame, legs, mattress, pillow
        canvas[int(0.36 * h) : int(0.72 * h), int(0.15 * w) : int(0.18 * w)] = _BED_FRAME
        canvas[int(0.62 * h) : int(0.70 * h), int(0.17 * w) : int(0.63 * w)] = _BED_FRAME
        for x in (0.19, 0.60):
            canvas[int(0.70 * h) : int(0.82 * h), int(x * w) : int((x + 0.02) * w)] = _BED_FRAME
        canvas[int(0.53 * h) : int(0.62 * h), int(0.18 * w) : int(0.63 * w)] = _MATTRESS
        canvas[int(0.48 * h) : int(0.54 * h), int(0.19 * w) : int(0.28 * w)] = _PILLOW
        return canvas

    def _patient_lying(self, unit: float) -> _Sprite:
        sprite = _Sprite(int(150 * unit), int(30 * unit))
        sprite.ellipse(88 * unit, 16 * unit, 62 * unit, 9 * unit, _BLANKET)
        sprite.ellipse(40 * unit, 14 * unit, 18 * unit, 8 * unit, _GOWN)
        sprite.ellipse(12 * unit, 12 * unit, 9 * unit, 9 * unit, _SKIN)
        sprite.ellipse(8 * unit, 10 * unit, 6 * unit, 7 * unit, _HAIR)
        return sprite

    def _patient_sitting(self, unit: float) -> _Sprite:
        sprite = _Sprite(int(150 * unit), int(80 * unit))
        sprite.ellipse(95 * unit, 66 * unit, 55 * unit, 9 * unit, _BLANKET)
        sprite.ellipse(30 * unit, 45 * unit, 13 * unit, 24 * unit, _GOWN)
        sprite.ellipse(30 * unit, 13 * unit, 10 * unit, 11 * unit, _SKIN)
        sprite.ellipse(30 * unit, 7 * unit, 10 * unit, 6 * unit, _HAIR)
        return sprite

    def _person(
        self, unit: float, body: Sequence[int], top: Sequence[int], *, cap: bool
    ) -> _Sprite:
        sprite = _Sprite(int(44 * unit), int(120 * unit))
        cx = 22 * unit
        sprite.rect(cx - 10 * unit, 70 * unit, cx - 2 * unit, 118 * unit, body)
        sprite.rect(cx + 2 * unit, 70 * unit, cx + 10 * unit, 118 * unit, body)
        sprite.ellipse(cx, 50 * unit, 15 * unit, 27 * unit, body)
        sprite.ellipse(cx, 16 * unit, 11 * unit, 12 * unit, _SKIN)
        if cap:
            sprite.rect(cx - 11 * unit, 3 * unit, cx + 11 * unit, 10 * unit, top)
        else:
            sprite.ellipse(cx, 8 * unit, 11 * unit, 6 * unit, top)
        return sprite

    # -- state -----------------------------------------------------------------------
    def labels(self, t: float) -> list[str]:
        """Class names active at ``t``, in :data:`CLASSES` order."""
        active = {e.label for e in self.events if e.active(t)}
        return [name for name in CLASSES if name in active]

    def _event(self, label: str, t: float) -> GroundTruthEvent | None:
        for event in self.events:
            if event.label == label and event.active(t):
                return event
        return None

    def _lamp(self, canvas: np.ndarray, labels: np.ndarray | None, dimmed: bool) -> None:
        """The wall lamp above the bed: lit, or out while the lights are dimmed."""
        h, w = canvas.shape[:2]
        y0, y1, x0, x1 = int(0.13 * h), int(0.21 * h), int(0.36 * w), int(0.46 * w)
        canvas[y0 - 2 : y1 + 2, x0 - 2 : x1 + 2] = _LAMP_HOUSING
        canvas[y0:y1, x0:x1] = _LAMP_OFF if dimmed else _LAMP_ON
        if labels is not None and dimmed:
            labels[y0 - 2 : y1 + 2, x0 - 2 : x1 + 2] = 1 << CLASSES.index("lights_dimmed")

    def render(self, t: float, frame_index: int = 0) -> np.ndarray:
        """The frame at ``t`` seconds, uint8 RGB (height, width, 3)."""
        return self._render(t, frame_index, masks=False)[0]

    def render_with_masks(self, t: float, frame_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(frame, bit mask)`` at ``t``: the mask is uint8 (height, width), bit ``k``
        set on the pixels of the object that makes ``CLASSES[k]`` true."""
        image, mask = self._render(t, frame_index, masks=True)
        assert mask is not None
        return image, mask

    def _render(
        self, t: float, frame_index: int, *, masks: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        m, w, h = self._MARGIN, self.width, self.height
        canvas = self._background.copy()
        labels = np.zeros(canvas.shape[:2], dtype=np.uint8) if masks else None
        W, H = w + 2 * m, h + 2 * m
        dimmed = self._event("lights_dimmed", t) is not None
        self._lamp(canvas, labels, dimmed)
        breathe = round(math.sin(2 * math.pi * t / 4.0 + self._phase[0]))
        exit_event = self._event("bed_exit", t)
        if exit_event is not None:
            into = t - exit_event.start_s
            x = 0.42 + 0.12 * math.sin(2 * math.pi * into / 9.0 + self._phase[1])
            self._standing.paste(canvas, int(x * W), int(0.50 * H), labels, _bit("bed_exit"))
        elif self._event("patient_sitting", t) is not None:
            self._sitting.paste(
                canvas, int(0.20 * W), int(0.27 * H) + breathe, labels, _bit("patient_sitting")
            )
        else:
            self._lying.paste(canvas, int(0.20 * W), int(0.475 * H) + breathe, labels, 0)
        visit = self._event("staff_present", t)
        if visit is not None:
            walk = min(2.0, (visit.end_s - visit.start_s) / 3)
            into, left = t - visit.start_s, visit.end_s - t
            progress = min(1.0, into / walk, left / walk)
            x = 0.86 - 0.20 * progress + 0.01 * math.sin(2 * math.pi * t / 3.0)
            self._staff.paste(
                canvas, int((x - 0.06) * W), int(0.24 * H), labels, _bit("staff_present")
            )
        dx = round(2.5 * math.sin(2 * math.pi * t / 17.0 + self._phase[2]))
        dy = round(2.0 * math.sin(2 * math.pi * t / 23.0 + self._phase[3]))
        view = self._warp(canvas[m + dy : m + dy + h, m + dx : m + dx + w])
        if dimmed:
            grey = view @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            view = np.repeat((38.0 + 0.42 * grey).astype(np.uint8)[..., None], 3, axis=2)
        if self.shifts:
            view = apply_photometric(view, self.shifts).clip(0, 255).astype(np.uint8)
        if self._noise:
            noisy = view.astype(np.int16)
            noisy += self._noise[frame_index % len(self._noise)]
            view = noisy.clip(0, 255).astype(np.uint8)
        image = np.ascontiguousarray(view)
        if labels is None:
            return image, None
        mask = self._warp(labels[m + dy : m + dy + h, m + dx : m + dx + w])
        return image, np.ascontiguousarray(mask)


def _encode(
    path: Path, scene: WardScene, config: SynthConfig, progress: Callable[[float], None] | None
) -> None:
    """Render every frame and encode H.264/MP4 to a temporary name, then rename."""
    rate = Fraction(config.fps).limit_denominator(1001)
    count = max(1, math.floor(config.seconds * config.fps))
    with atomic_path(path, suffix=".mp4") as tmp, av.open(str(tmp), "w", "mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = config.width, config.height
        stream.pix_fmt = "yuv420p"
        severity = shift_severity(config.shifts, "compression")
        stream.options = {
            "crf": str(compression_crf(config.crf, severity)),
            "preset": "veryfast",
            "g": str(max(1, round(2 * config.fps))),
            # x264's macroblock-tree rate control gave a different stream for the
            # same frames in about one encode in four here (the first GOPs
            # differ, as if it read memory it had not written); without it the
            # same seed writes the same bytes, which the benchmarks and tests need
            "x264-params": "mbtree=0",
        }
        for index in range(count):
            image = degrade(scene.render(index / config.fps, index), severity)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
            if progress is not None and index % 64 == 0:
                progress(0.8 * index / count)
        container.mux(stream.encode(None))


def degrade(image: np.ndarray, severity: int) -> np.ndarray:
    """The ``compression`` shift's down- and up-scaling (a low-resolution stream)."""
    scale = compression_scale(severity)
    if scale == 1.0:
        return image
    height, width = image.shape[:2]
    small = Image.fromarray(image).resize(
        (max(8, round(width / scale)), max(8, round(height / scale))), Image.Resampling.BILINEAR
    )
    return np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))


def write_masks(path: Path, scene: WardScene, seconds: float, fps: float) -> int:
    """Write ``scene``'s object masks at ``fps`` (times ``k / fps``) to a ``.npz``; return T."""
    times = np.arange(0.0, seconds - 1e-9, 1.0 / fps)
    masks = np.stack([scene.render_with_masks(float(t))[1] for t in times])
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, times=times, masks=masks, classes=np.array(CLASSES))
    return len(times)


def load_masks(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(times (T,), bit masks (T, H, W) uint8, class names)`` from :func:`write_masks`."""
    with np.load(path) as data:
        return data["times"], data["masks"], [str(c) for c in data["classes"]]


def write_labeled_frames(
    videos: Sequence[tuple[Path, Sequence[GroundTruthEvent]]],
    frames_dir: Path,
    *,
    fps: float = 2.0,
    classes: Sequence[str] = CLASSES,
) -> int:
    """Decode ``videos`` at ``fps``, label each frame from its events, write the training folder.

    Writes ``frames_dir/images/<video stem>-<n>.jpg``, ``labels.csv`` and
    ``classes.txt`` (the last two atomically, after every image is in place).
    Returns the number of labeled frames.
    """
    images_dir = frames_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = []
    for video, events in videos:
        index = 0
        for batch in FrameSampler(video, fps=fps):
            for t, image in zip(batch.times, batch.frames, strict=True):
                active = {e.label for e in events if e.active(float(t))}
                name = f"images/{video.stem}-{index:05d}.jpg"
                Image.fromarray(image).save(frames_dir / name, quality=92)
                rows.append((name, "|".join(c for c in classes if c in active)))
                index += 1
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("path", "labels"))
    writer.writerows(rows)
    atomic_write_text(frames_dir / "labels.csv", buffer.getvalue())
    atomic_write_text(frames_dir / "classes.txt", "".join(f"{c}\n" for c in classes))
    return len(rows)


def ground_truth_document(
    video_name: str, config: SynthConfig, events: Sequence[GroundTruthEvent]
) -> dict[str, Any]:
    """The ground-truth JSON of one synthetic video (schema :data:`GROUND_TRUTH_SCHEMA`)."""
    return {
        "schema_version": GROUND_TRUTH_SCHEMA,
        "kind": "atcon.synth.ground_truth",
        "video": video_name,
        "duration_s": config.seconds,
        "classes": list(CLASSES),
        "config": asdict(config),
        "events": [asdict(e) for e in events],
    }


def synthesize(
    out_dir: str | Path,
    config: SynthConfig | None = None,
    *,
    name: str = "ward",
    frames: bool = True,
    masks: bool = False,
    progress: Callable[[float], None] | None = None,
) -> SynthResult:
    """Write ``<name>.mp4``, ``<name>.events.json`` and, with ``frames``, ``frames/``.

    With ``masks``, also ``<name>.masks.npz``: the object masks at ``frames_fps``
    (:func:`write_masks`).
    """
    config = config or SynthConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events = make_script(config.seconds, np.random.default_rng(config.seed))
    scene = WardScene(
        config.width,
        config.height,
        events,
        seed=config.seed,
        noise=config.noise,
        shifts=config.shifts,
    )
    video = out / f"{name}.mp4"
    _encode(video, scene, config, progress)
    truth = out / f"{name}.events.json"
    document = ground_truth_document(video.name, config, events)
    atomic_write_text(truth, json.dumps(document, indent=2) + "\n")
    frames_dir: Path | None = None
    count = 0
    if frames and config.frames_fps > 0:
        frames_dir = out / "frames"
        count = write_labeled_frames([(video, events)], frames_dir, fps=config.frames_fps)
    masks_file: Path | None = None
    if masks and config.frames_fps > 0:
        masks_file = out / f"{name}.masks.npz"
        write_masks(masks_file, scene, config.seconds, config.frames_fps)
    if progress is not None:
        progress(1.0)
    return SynthResult(video, truth, frames_dir, events, count, masks_file)


def load_ground_truth(path: str | Path) -> list[GroundTruthEvent]:
    """Read the events of a ground-truth JSON written by :func:`synthesize`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        GroundTruthEvent(e["label"], float(e["start_s"]), float(e["end_s"])) for e in data["events"]
    ]
