"""Is this file a video? A quick PyAV look before an upload is accepted.

Stand-in until ``worker.video.probe`` (the video pipeline) lands: the API calls
:func:`probe_video` only, so swapping the body is the whole change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from ._exceptions import EmptyVideoError, NotAVideoError, NoVideoStreamError, VideoDecodeError

__all__ = ["VideoProbe", "probe_video"]

logger = logging.getLogger(__name__)

#: FFmpeg demuxers that read still images; a single picture is not a video
_IMAGE_DEMUXERS = ("image2", "_pipe", "tty")
#: documents FFmpeg would read as a motion-JPEG stream because they embed JPEG images
_DOCUMENT_MAGIC = {b"%PDF-": "a PDF document", b"PK\x03\x04": "a ZIP archive or office file"}


def _reason(exc: BaseException) -> str:
    """FFmpeg's message without the server-side file name it carries."""
    return str(getattr(exc, "strerror", None) or exc)


@dataclass(frozen=True)
class VideoProbe:
    container: str
    codec: str
    width: int
    height: int
    duration_s: float | None
    fps: float | None


def probe_video(path: str | Path) -> VideoProbe:
    """Open ``path``, check it has a video stream and decode its first two frames.

    Raises ``VideoDecodeError`` (or its kin ``EmptyVideoError``, ``NotAVideoError``,
    ``NoVideoStreamError``) with a sentence a person can act on for anything else: an
    empty file, text, an image, a PDF, audio only, a truncated file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VideoDecodeError(f"the file could not be read: {exc}") from exc
    if size == 0:
        raise EmptyVideoError("the file is empty; upload a video file")
    hint = "upload a video file FFmpeg can decode (MP4, AVI, MKV, WebM, MOV ...)"
    with open(path, "rb") as fh:
        head = fh.read(1024)
    for magic, what in _DOCUMENT_MAGIC.items():
        if head.startswith(magic):
            raise NotAVideoError(f"the file is {what}, not a video; {hint}")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise VideoDecodeError(
            f"the file is not a video or it is damaged ({_reason(exc)}); {hint}"
        ) from exc
    with container:
        demuxer = container.format.name
        if any(marker in demuxer for marker in _IMAGE_DEMUXERS):
            raise NotAVideoError(f"the file is a still image or text ({demuxer}), not a video")
        if not container.streams.video:
            what = "audio only" if container.streams.audio else "no video stream"
            raise NoVideoStreamError(f"the file has {what}; {hint}")
        stream = container.streams.video[0]
        frames = []
        try:
            for frame in container.decode(stream):
                frames.append(frame)
                if len(frames) == 2:
                    break
        except (av.FFmpegError, ValueError) as exc:
            raise VideoDecodeError(
                f"the video could not be decoded ({_reason(exc)}); {hint}"
            ) from exc
        if len(frames) < 2:
            raise VideoDecodeError(
                f"the file holds {len(frames)} decodable frame(s), not a video; {hint}"
            )
        frame = frames[0]
        duration: float | None = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        rate = stream.average_rate or stream.guessed_rate
        return VideoProbe(
            container=demuxer,
            codec=stream.codec_context.name,
            width=frame.width,
            height=frame.height,
            duration_s=round(duration, 3) if duration is not None else None,
            fps=round(float(Fraction(rate)), 3) if rate else None,
        )
