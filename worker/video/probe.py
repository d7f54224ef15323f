"""What a file is: open it, turn every way it can fail into a named error, describe its video.

:func:`probe` is the gate in front of everything that decodes: uploads and detection
call it first, so a text file, an image, an audio recording, an empty or truncated
file is refused with a sentence a person can act on before any work is done.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import av
import av.error
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from .._exceptions import EmptyVideoError, NotAVideoError, NoVideoStreamError, VideoDecodeError

__all__ = ["VideoInfo", "probe"]

#: Demuxers that read still images or text, which FFmpeg would present as a video.
_STILL_FORMATS = {"image2", "image2pipe", "tty", "ffmetadata", "lavfi"}

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"%PDF", "a PDF document"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
)

_VIDEO_HINT = "give a video file (MP4, MOV, AVI, MKV, WebM)"


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video. Sizes are display sizes (rotated, SAR applied)."""

    file_name: str
    size_bytes: int
    container: str
    codec: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    #: counter-clockwise degrees the decoded picture is turned for display: 0, 90, 180, 270
    rotation: int
    #: average frame rate, ``None`` when the container does not say
    fps: float | None
    duration_s: float | None
    #: frames the container declares, ``None`` when it does not say
    frame_count: int | None
    time_base: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class StreamedVideo(Protocol):
    """A video read through a seekable file object rather than a path: an object in the
    store (:class:`worker.storage_s3.StoredVideo`), decoded with ranged reads."""

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...

    def open(self) -> BinaryIO: ...


#: what probing and decoding accept: a local file, or a video streamed from the store
VideoInput = str | Path | StreamedVideo


def source_name(source: VideoInput) -> str:
    """The name messages give the video (the file's or the object's last part)."""
    if isinstance(source, str | Path):
        return Path(source).name
    return source.name


def _describe(path: Path) -> str | None:
    """A human name for what the file looks like, when it is clearly not a video."""
    with open(path, "rb") as fh:
        return _describe_head(fh.read(4096))


def _describe_head(head: bytes) -> str | None:
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return "a text file" if text and printable / len(text) > 0.95 else None


def _open(source: VideoInput) -> InputContainer:
    """Open ``source`` and translate every way it can fail into a named, actionable error."""
    name = source_name(source)
    target: str | BinaryIO
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise VideoDecodeError(f"video file {name!r} does not exist or is not a file")
        size = path.stat().st_size
    else:
        size = source.size
    if size == 0:
        raise EmptyVideoError(
            f"{name!r} is empty (0 bytes): the upload or copy did not complete; send the file again"
        )
    if isinstance(source, str | Path):
        kind = _describe(Path(source))
        target = str(source)
    else:
        try:
            target = source.open()
            kind = _describe_head(target.read(4096))
            target.seek(0)
        except FileNotFoundError:
            raise VideoDecodeError(f"video {name!r} does not exist in the store") from None
    try:
        container = av.open(target, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if kind is not None:
            raise NotAVideoError(f"{name!r} is {kind}, not a video; {_VIDEO_HINT}") from exc
        raise VideoDecodeError(
            f"{name!r} could not be read as a video ({exc.strerror}): the file is "
            "damaged or truncated, for example by an interrupted recording or copy; "
            "export or upload it again"
        ) from exc
    fmt = container.format.name
    if fmt in _STILL_FORMATS or fmt.endswith("_pipe") or kind is not None:
        container.close()
        what = kind or f"read by FFmpeg's {fmt!r} still-image or text reader"
        raise NotAVideoError(f"{name!r} is {what}, not a video; {_VIDEO_HINT}")
    return container


def _video_stream(container: InputContainer, name: str) -> VideoStream:
    """The first real video stream (cover art in audio files does not count)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams})
    raise NoVideoStreamError(
        f"{name!r} has no video stream (it holds {', '.join(kinds) or 'no streams'}): "
        f"it is an audio recording or an empty container; {_VIDEO_HINT}"
    )


def _rotation(frame: VideoFrame) -> int:
    """The frame's display rotation, counter-clockwise, as one of 0, 90, 180, 270."""
    return round(frame.rotation / 90.0) % 4 * 90


def _display_size(width: int, height: int, sar: Fraction | None, rotation: int) -> tuple[int, int]:
    if sar is not None and sar > 0 and sar != 1:
        width = max(1, round(width * sar))
    return (height, width) if rotation in (90, 270) else (width, height)


def _stream_sar(stream: VideoStream) -> Fraction | None:
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return Fraction(sar) if sar else None


def _duration_s(container: InputContainer, stream: VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _average_fps(stream: VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def _decode_packet(stream: VideoStream, packet: av.Packet | None) -> list[VideoFrame]:
    frames = stream.codec_context.decode(packet)
    return [f for f in frames if isinstance(f, VideoFrame)]


def probe(path: VideoInput) -> VideoInfo:
    """Describe the video at ``path``, decoding until its first frame to prove it decodes.

    Raises :class:`NotAVideoError` for images, documents and text,
    :class:`NoVideoStreamError` for audio-only files, :class:`EmptyVideoError` for an
    empty file or a video stream without a decodable frame, and
    :class:`VideoDecodeError` for damaged or truncated files.
    """
    name = source_name(path)
    container = _open(path)  # a missing or empty file is refused here, by name
    size = Path(path).stat().st_size if isinstance(path, str | Path) else path.size
    try:
        stream = _video_stream(container, name)
        first: VideoFrame | None = None
        try:
            for packet in container.demux(stream):
                try:
                    frames = _decode_packet(stream, packet)
                except av.error.FFmpegError:
                    continue
                if frames:
                    first = frames[0]
                    break
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(
                f"{name!r} stops being readable before its first frame ({exc.strerror}): "
                "the file is damaged or truncated; export or upload it again"
            ) from exc
        if first is None:
            raise EmptyVideoError(
                f"{name!r} has a video stream but no frame could be decoded from it: "
                "the recording is empty or unreadable; check the camera's export"
            )
        rotation = _rotation(first)
        sar = _stream_sar(stream)
        width, height = _display_size(first.width, first.height, sar, rotation)
        return VideoInfo(
            file_name=name,
            size_bytes=size,
            container=container.format.name,
            codec=stream.codec_context.name,
            width=width,
            height=height,
            coded_width=first.width,
            coded_height=first.height,
            rotation=rotation,
            fps=_average_fps(stream),
            duration_s=_duration_s(container, stream),
            frame_count=stream.frames or None,
            time_base=str(stream.time_base),
        )
    finally:
        container.close()
