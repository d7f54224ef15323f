"""A clip of one event: the event with a margin either side, as an MP4 to download.

The window is ``[start_s - margin, end_s + margin]``, clamped to the video. It is cut
by **stream copy** (packets copied, nothing decoded; fast and lossless) when a
keyframe lies at the window's start, within half a frame, and the packets in the
window are in presentation order (no B-frame reordering to break at the cut);
otherwise the frames in the window are decoded and **re-encoded** (H.264 with
PyAV). Either way the clip holds exactly the source frames whose time is in the
window, so its duration is the window's length to within one frame.

Clips are kept in the video's cache folder (:meth:`worker.storage.Storage.cache_dir`),
named by a digest of the event and the margin, so a second download is a file read
and deleting the video deletes them. PyAV is imported only inside :func:`cut_clip`,
so that importing this module costs an API process nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from .._exceptions import EventNotFoundError, NoResultsError, VideoDecodeError, VideoNotFoundError
from ..detection.results import safe_stem
from ..pool.reviews import find_event
from ..storage import Storage

__all__ = ["COPY", "REENCODE", "Clip", "clip_window", "cut_clip", "event_clip"]

logger = logging.getLogger(__name__)

#: how a clip was cut
COPY = "copy"
REENCODE = "reencode"


@dataclass(frozen=True)
class Clip:
    path: Path
    #: COPY or REENCODE
    method: str
    start_s: float
    end_s: float


def clip_window(
    start_s: float, end_s: float, margin_s: float, duration_s: float | None
) -> tuple[float, float]:
    """``[start_s - margin_s, end_s + margin_s]`` clamped to ``[0, duration_s]``."""
    if margin_s < 0:
        raise ValueError(f"margin_s must not be negative, got {margin_s}")
    if end_s < start_s:
        raise ValueError(f"end_s ({end_s}) must not be before start_s ({start_s})")
    start = max(0.0, start_s - margin_s)
    end = end_s + margin_s
    if duration_s is not None and duration_s > 0:
        end = min(end, duration_s)
    return start, max(start, end)


def _frame_interval(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(1 / rate) if rate else 1 / 25


def _in_window(
    items: Iterable[Any], time_base: Fraction, start_s: float, end_s: float, half: float
) -> Iterator[tuple[Any, float]]:
    """The packets or frames of ``items`` (in presentation order) whose time lies in the
    window, each with its time in seconds: from ``start_s`` and before ``end_s``, each
    bound within half a frame (``half``). Items without a time are skipped; the walk
    stops at the first item past the window."""
    for item in items:
        if item.pts is None:
            continue
        t = float(item.pts * time_base)
        if t < start_s - half:
            continue
        if t >= end_s - half:
            break
        yield item, t


def _copy_plan(path: Path, start_s: float, end_s: float) -> int | None:
    """The pts of the keyframe the copy starts at, or None when a copy cannot cut here."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        half = _frame_interval(stream) / 2
        if tb is None:
            return None
        container.seek(max(0, int(start_s / tb)), stream=stream, backward=True)
        first: int | None = None
        last_pts: int | None = None
        for packet, t in _in_window(container.demux(stream), tb, start_s, end_s, half):
            if first is None:
                if not packet.is_keyframe or abs(t - start_s) > half:
                    return None
                first = packet.pts
            elif last_pts is not None and packet.pts <= last_pts:
                return None  # reordered (B-frames): a cut could lose references
            last_pts = packet.pts
        return first


def _copy(source: Path, out: Path, start_s: float, end_s: float, first_pts: int) -> None:
    import av

    with av.open(str(source)) as container, av.open(str(out), "w", format="mp4") as output:
        stream = container.streams.video[0]
        tb = stream.time_base
        assert tb is not None
        half = _frame_interval(stream) / 2
        target = output.add_stream_from_template(stream)
        container.seek(first_pts, stream=stream, backward=True)
        # the window starts at the keyframe first_pts (_copy_plan found it there)
        for packet, _t in _in_window(container.demux(stream), tb, start_s, end_s, half):
            packet.pts -= first_pts
            if packet.dts is not None:
                packet.dts -= first_pts
            packet.stream = target
            output.mux(packet)


def _reencode(source: Path, out: Path, start_s: float, end_s: float) -> None:
    import av

    with av.open(str(source)) as container, av.open(str(out), "w", format="mp4") as output:
        stream = container.streams.video[0]
        tb = stream.time_base
        if tb is None:
            raise VideoDecodeError(f"{source.name}: the video stream has no time base")
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        half = _frame_interval(stream) / 2
        width = stream.codec_context.width // 2 * 2
        height = stream.codec_context.height // 2 * 2
        if "libx264" in av.codecs_available:
            target = output.add_stream("libx264", rate=rate)
            target.options = {"preset": "veryfast", "crf": "20"}
        else:  # an FFmpeg built without x264
            target = output.add_stream("mpeg4", rate=rate)
        target.width, target.height, target.pix_fmt = width, height, "yuv420p"
        clip_tb = Fraction(1, 1) / Fraction(rate)
        container.seek(max(0, int(start_s / tb)), stream=stream, backward=True)
        t0: float | None = None
        last = -1
        for frame, t in _in_window(container.decode(stream), tb, start_s, end_s, half):
            t0 = t if t0 is None else t0
            pts = max(last + 1, round((t - t0) / clip_tb))
            last = pts
            image = frame.reformat(width=width, height=height, format="yuv420p")
            image.pts, image.time_base = pts, clip_tb
            for packet in target.encode(image):
                output.mux(packet)
        if t0 is None:
            raise VideoDecodeError(
                f"no frame of {source.name} lies between {start_s} and {end_s} s"
            )
        for packet in target.encode():
            output.mux(packet)


def cut_clip(source: Path, out: Path, start_s: float, end_s: float) -> str:
    """Write the frames of ``source`` in ``[start_s, end_s)`` to the MP4 ``out``; return
    how (:data:`COPY` or :data:`REENCODE`). ``VideoDecodeError`` when it cannot be read."""
    import av

    if end_s <= start_s:
        raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")
    try:
        first = _copy_plan(source, start_s, end_s)
        if first is not None:
            _copy(source, out, start_s, end_s, first)
            return COPY
        _reencode(source, out, start_s, end_s)
        return REENCODE
    except (av.FFmpegError, IndexError) as exc:  # IndexError: no video stream
        raise VideoDecodeError(f"the clip could not be cut from the video: {exc}") from exc


def _name(events: dict[str, Any], event: dict[str, Any], margin_s: float) -> str:
    parts = (
        event.get("id"),
        event.get("label"),
        event.get("start_s"),
        event.get("end_s"),
        events.get("created_at"),
        margin_s,
    )
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
    return f"clip-{safe_stem(str(event.get('id')))}-{digest}"


def event_clip(storage: Storage, video_id: str, event_id: str, margin_s: float) -> Clip:
    """The event's clip, cut on first use and cached with the video.

    Raises ``VideoNotFoundError``, ``NoResultsError``, ``EventNotFoundError`` and
    ``VideoDecodeError``.
    """
    record = storage.get_video(video_id)
    events = storage.read_events(video_id)
    if events is None:
        raise NoResultsError(f"video {video_id} has no results yet; no event to cut")
    event = find_event(events, event_id)
    if event is None:
        raise EventNotFoundError(f"video {video_id} has no event {event_id}")
    video = events.get("video")
    duration = video.get("duration_s") if isinstance(video, dict) else None
    if not isinstance(duration, int | float):
        duration = record.duration_s
    start, end = clip_window(
        float(event.get("start_s") or 0.0),
        float(event.get("end_s") or 0.0),
        margin_s,
        float(duration) if duration else None,
    )
    cache = storage.ensure_cache_dir(video_id)
    name = _name(events, event, margin_s)
    for method in (COPY, REENCODE):
        cached = cache / f"{name}.{method}.mp4"
        if cached.is_file():
            return Clip(cached, method, start, end)
    fd, tmp_name = tempfile.mkstemp(prefix="clip-", suffix=".mp4", dir=storage.tmp)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        method = cut_clip(storage.source_path(video_id), tmp, start, end)
        target = cache / f"{name}.{method}.mp4"
        try:
            os.replace(tmp, target)
        except FileNotFoundError:
            raise VideoNotFoundError(
                f"video {video_id} was deleted while its clip was cut"
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    logger.info("clip of event %s of video %s cut by %s", event_id, video_id, method)
    return Clip(target, method, start, end)
