"""Real video files for tests, written with PyAV.

Frame ``i`` is a solid grey of level ``level(i)`` with a white 8x8 marker in the
top-left corner of the coded picture, so a decoded frame tells which frame it was and
which way up it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: (container format, codec, pixel format, file suffix)
CODECS: dict[str, tuple[str, str, str, str]] = {
    "h264-mp4": ("mp4", "libx264", "yuv420p", ".mp4"),
    "mpeg4-avi": ("avi", "mpeg4", "yuv420p", ".avi"),
    "mjpeg-avi": ("avi", "mjpeg", "yuvj420p", ".avi"),
    "vp9-webm": ("webm", "libvpx-vp9", "yuv420p", ".webm"),
}


def level(i: int) -> int:
    """The grey level of frame ``i``: unique for ``i < 33``, steps wide enough for lossy codecs."""
    return 16 + 7 * (i % 33)


def frame_image(i: int, width: int, height: int) -> np.ndarray:
    image = np.full((height, width, 3), level(i), dtype=np.uint8)
    image[:8, :8] = 255
    return image


def write_video(
    path: Path,
    kind: str = "h264-mp4",
    *,
    count: int = 30,
    fps: int = 10,
    width: int = 64,
    height: int = 48,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    noise: bool = False,
) -> Path:
    """Write ``count`` frames (or one per entry of ``pts``) and return ``path``.

    ``pts`` and ``time_base`` set explicit presentation times (variable frame rate);
    ``rotation`` is the display matrix's counter-clockwise angle. ``options`` go to the
    encoder, ``container_options`` to the muxer.
    """
    fmt, codec, pix_fmt, _ = CODECS[kind]
    rng = np.random.default_rng(0)
    stamps = list(pts) if pts is not None else list(range(count))
    base = time_base or Fraction(1, fps)
    with av.open(str(path), mode="w", format=fmt, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.bit_rate = 4_000_000  # MPEG-4 Part 2's default is too coarse to tell frames apart
        stream.codec_context.time_base = base
        if options:
            stream.options = dict(options)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, stamp in enumerate(stamps):
            image = frame_image(i, width, height)
            if noise:
                image = rng.integers(0, 256, image.shape, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = stamp
            frame.time_base = base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def displayed_frames(times: Sequence[float], rate: float, end: float) -> list[int]:
    """Indices of the frames on screen at ``t0 + k / rate``, each once (an independent oracle)."""
    chosen: list[int] = []
    k = 0
    while True:
        instant = times[0] + k / rate
        if instant >= end - 1e-9:
            return chosen
        index = max(i for i, t in enumerate(times) if t <= instant + 1e-9)
        if not chosen or chosen[-1] != index:
            chosen.append(index)
        k += 1
