"""Small real media files written with PyAV and Pillow for the service's tests."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
from PIL import Image


def write_video(
    path: Path,
    *,
    frames: int = 12,
    size: tuple[int, int] = (64, 48),
    fps: int = 6,
    keyint: int | None = None,
    preset: str = "ultrafast",
    gop: int | None = None,
) -> Path:
    """An H.264 MP4 of moving gradients (``frames`` frames of ``size`` = (w, h)).

    ``keyint``: a keyframe every ``keyint`` frames exactly and no B-frames, as clips cut
    by stream copy need (:mod:`worker.video.clips`); ``gop``: at most ``gop`` frames between
    keyframes (x264's default when None).
    """
    width, height = size
    options: dict[str, object] = {"preset": preset}
    if keyint is not None:
        options["x264-params"] = f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0"
    if gop:
        options["g"] = str(gop)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        xx = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        for i in range(frames):
            img = np.broadcast_to((xx + 20 * i) % 256, (height, width, 3)).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def video_bytes(**kwargs: object) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "v.mp4", **kwargs)  # type: ignore[arg-type]
        return path.read_bytes()


def audio_only_bytes() -> bytes:
    """An M4A-like MP4 with one AAC audio stream and no video."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        samples = np.zeros((1, 1024), dtype=np.float32)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def pdf_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 200, dtype=np.uint8)).save(buffer, format="PDF")
    return buffer.getvalue()


def text_bytes() -> bytes:
    return b"Patient: nobody\nThis is a plain text file, not a video.\n" * 20


def truncated_mp4_bytes() -> bytes:
    """The first half of an MP4 whose index (moov) is written at its end."""
    data = video_bytes(frames=24)
    return data[: len(data) // 2]
