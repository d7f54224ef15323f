r"""Streaming video decoding with PyAV: sample frames by presentation time.

Nothing here holds more than a handful of decoded frames: packets are demuxed and
decoded one at a time, and only the sampled frames are converted to RGB, straight
at the size the caller asks for (FFmpeg's scaler does the resize, so an 8K frame
never exists as an 8K RGB array).

Time
    A frame's time is :math:`t = (\mathrm{pts} - \mathrm{start}) \cdot \mathrm{time\_base}`
    in exact rational arithmetic, so variable frame rates and odd time bases (1/7,
    1001/30000, 1/90000) give correct seconds. Frame indices and nominal frame rates
    are never used to compute times.

Sampling
    At rate :math:`r` the sampling instants are :math:`s_k = t_0 + k / r` (``t_0`` the
    first decoded frame). The frame sampled at :math:`s_k` is the one on screen then:
    the latest frame with :math:`t \le s_k`. A frame on screen at several instants
    (a source slower than ``r``) is emitted once. Each sample carries its frame's own
    time and pts, not the instant.

Rotation
    The display matrix (``frame.rotation``, counter-clockwise degrees, as phones write
    it) is honoured: frames come out upright, and sizes are display sizes.

Damage
    A packet the decoder rejects is skipped and decoding goes on; frames FFmpeg flags
    as corrupt are skipped too. :class:`DecodeStats` reports the covered fraction:
    every decoded frame covers the time to the next decoded frame, except across a
    stretch where packets were lost, which counts one nominal frame interval; the sum
    is divided by the stream's declared duration (so a truncated tail counts as lost).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from .._exceptions import EmptyVideoError, VideoDecodeError
from .probe import (
    StreamedVideo,
    VideoInfo,
    VideoInput,
    _decode_packet,
    _display_size,
    _duration_s,
    _open,
    _rotation,
    _stream_sar,
    _video_stream,
    probe,
    source_name,
)

__all__ = [
    "DEFAULT_MAX_SIDE",
    "DecodeStats",
    "FrameBatch",
    "FrameSampler",
    "VideoInfo",
    "extract_frames",
    "probe",
]

logger = logging.getLogger(__name__)

#: Longest side of frames returned at "display size" (when no size is asked for).
DEFAULT_MAX_SIDE = 1280


@dataclass(frozen=True)
class FrameBatch:
    """Sampled frames: times (B,) s, pts (B,) in the stream's time base, RGB (B, H, W, 3)."""

    times: np.ndarray
    pts: np.ndarray
    frames: np.ndarray

    def __len__(self) -> int:
        return int(self.times.shape[0])


@dataclass
class DecodeStats:
    """Counters of one pass over a video; final once the pass is over."""

    decoded_frames: int = 0
    sampled_frames: int = 0
    failed_packets: int = 0
    corrupt_frames: int = 0
    out_of_order_frames: int = 0
    covered_s: float = 0.0
    expected_s: float = 0.0
    demux_error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Fraction of the video's duration for which frames decoded, in [0, 1]."""
        if self.expected_s <= 0:
            return 1.0 if self.decoded_frames else 0.0
        return min(1.0, self.covered_s / self.expected_s)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["coverage"] = round(self.coverage, 6)
        return data


def _capped(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb(
    frame: VideoFrame, size: tuple[int, int] | None, max_side: int, sar: Fraction | None
) -> np.ndarray:
    """The frame as upright uint8 RGB (H, W, 3) at ``size`` (W, H) or capped display size.

    The scaler resizes while it converts, so the full-size RGB picture is never made.
    """
    rotation = _rotation(frame)
    if size is None:
        size = _capped(_display_size(frame.width, frame.height, sar, rotation), max_side)
    width, height = size
    if rotation in (90, 270):
        width, height = height, width
    rgb: np.ndarray = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    if rotation:
        return np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
    return rgb


@dataclass(frozen=True)
class _Lost:
    """A packet the decoder rejected, with its pts when the container gave one."""

    pts: int | None


def _batch(items: list[tuple[float, int, np.ndarray]]) -> FrameBatch:
    return FrameBatch(
        times=np.asarray([t for t, _, _ in items], dtype=np.float64),
        pts=np.asarray([p for _, p, _ in items], dtype=np.int64),
        frames=np.stack([image for _, _, image in items]),
    )


class _Timeline:
    """Which decoded frames to sample, and how much of the video they cover.

    Pure bookkeeping over frame times (exact fractions of a second), fed in
    presentation order. See the module docstring for the rules.
    """

    def __init__(self, rate: Fraction, nominal: Fraction | None) -> None:
        self.rate = rate
        self.nominal = nominal
        self.covered = Fraction(0)
        self.first: Fraction | None = None
        self.last: Fraction | None = None
        self.next_slot = Fraction(0)
        self._failures: list[Fraction] = []
        self._lost_unplaced = False

    def lost(self, t: Fraction | None) -> None:
        """A packet (at ``t`` when known) or a frame failed to decode."""
        if t is None:
            self._lost_unplaced = True
        else:
            self._failures.append(t)

    def add(self, t: Fraction) -> bool | None:
        """Record a decoded frame at ``t``.

        Returns ``None`` when ``t`` is not after the previous frame (the frame is
        dropped), ``True`` when the previous frame is the one on screen at a sampling
        instant this frame passes (emit it), ``False`` otherwise.
        """
        if self.last is not None and t <= self.last:
            return None
        emit_previous = False
        if self.last is None:
            self.first = self.next_slot = t
        else:
            passed = [f for f in self._failures if f < t]
            self._failures = [f for f in self._failures if f >= t]
            lost = self._lost_unplaced or any(f > self.last for f in passed)
            gap = t - self.last
            self.covered += min(gap, self.nominal or Fraction(0)) if lost else gap
            if t > self.next_slot:
                emit_previous = True
                assert self.first is not None
                steps = math.ceil((t - self.first) * self.rate)
                self.next_slot = self.first + Fraction(steps) / self.rate
        self._lost_unplaced = False
        self.last = t
        return emit_previous

    def finish(self, duration_s: float | None) -> bool:
        """Close the timeline; return whether the last frame is on screen at an instant."""
        if self.last is None:
            return False
        nominal = self.nominal or Fraction(0)
        self.covered += nominal
        end = self.last + nominal
        if duration_s is not None:
            end = min(end, max(Fraction(duration_s), self.last))
        return self.next_slot < end or self.next_slot == self.last


class FrameSampler:
    """Stream the frames of ``path`` sampled at ``fps`` per second, in batches.

    Iterating yields :class:`FrameBatch` objects of at most ``batch_size`` frames,
    upright RGB at ``size`` (width, height) when given, else at display size with the
    longest side capped at ``max_side``. After iteration, :attr:`stats` holds the
    counts and the covered fraction. ``threads`` is FFmpeg's decoder thread count
    (0: as many as it likes). ``skip_nonref`` tells the decoder to skip frames no other
    frame refers to (B-frames): faster, but the sample nearest an instant may then be
    up to a few frames earlier. Each iteration opens the file afresh.
    """

    def __init__(
        self,
        path: VideoInput,
        *,
        fps: float = 2.0,
        size: tuple[int, int] | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
        batch_size: int = 16,
        threads: int = 0,
        skip_nonref: bool = False,
    ) -> None:
        if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number of samples per second, got {fps!r}")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size must be (width, height) with both positive, got {size!r}")
        if max_side < 1:
            raise ValueError(f"max_side must be positive, got {max_side}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if threads < 0:
            raise ValueError(f"threads must be 0 (automatic) or positive, got {threads}")
        self.path = path if isinstance(path, StreamedVideo) else Path(path)
        self.name = source_name(path)
        self.rate = Fraction(fps).limit_denominator(1_000_000)
        self.size = size
        self.max_side = max_side
        self.batch_size = batch_size
        self.threads = threads
        self.skip_nonref = skip_nonref
        self.stats = DecodeStats()
        #: seconds this sampler spent decoding and converting (not waiting on consumers)
        self.busy_s = 0.0

    def __iter__(self) -> Iterator[FrameBatch]:
        self.stats = DecodeStats()
        self.busy_s = 0.0
        stats = self.stats
        started = time.perf_counter()
        container = _open(self.path)
        try:
            stream = _video_stream(container, self.name)
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = self.threads
            if self.skip_nonref:
                stream.codec_context.skip_frame = "NONREF"
            time_base = stream.time_base or Fraction(1, 1)
            origin = stream.start_time
            fps = stream.average_rate or stream.guessed_rate
            timeline = _Timeline(self.rate, Fraction(1) / Fraction(fps) if fps else None)
            sar = _stream_sar(stream)
            batch: list[tuple[float, int, np.ndarray]] = []
            held: tuple[VideoFrame, Fraction, int] | None = None

            def emit(frame: VideoFrame, t: Fraction, pts: int) -> None:
                batch.append((float(t), pts, _to_rgb(frame, self.size, self.max_side, sar)))
                stats.sampled_frames += 1

            for item in self._decoded(container, stream):
                if isinstance(item, _Lost):
                    stats.failed_packets += 1
                    timeline.lost(
                        None if item.pts is None else (item.pts - (origin or 0)) * time_base
                    )
                    continue
                for frame in item:
                    if frame.is_corrupt:
                        stats.corrupt_frames += 1
                        timeline.lost(None)
                        continue
                    pts = frame.pts
                    if pts is None:
                        pts = (held[2] + 1) if held is not None else 0
                    if origin is None:
                        origin = pts
                    t = Fraction(pts - origin) * time_base
                    verdict = timeline.add(t)
                    if verdict is None:
                        stats.out_of_order_frames += 1
                        continue
                    stats.decoded_frames += 1
                    if verdict and held is not None:
                        emit(*held)
                    held = (frame, t, pts)
                if len(batch) >= self.batch_size:
                    suspended = time.perf_counter()
                    yield _batch(batch)
                    started += time.perf_counter() - suspended
                    batch = []
            duration = _duration_s(container, stream)
            if held is not None and timeline.finish(duration):
                emit(*held)
            stats.covered_s = float(timeline.covered)
            stats.expected_s = max(duration or 0.0, stats.covered_s)
            self.busy_s = time.perf_counter() - started
            if stats.decoded_frames == 0:
                raise EmptyVideoError(
                    f"no frame of {self.name!r} could be decoded: the video stream is "
                    "empty or unreadable; check the camera's export"
                )
            if stats.failed_packets or stats.corrupt_frames or stats.coverage < 0.999:
                logger.warning(
                    "video damaged: %d packets failed, %d corrupt frames, demux %s; "
                    "%.1f%% of the duration covered",
                    stats.failed_packets,
                    stats.corrupt_frames,
                    "stopped early" if stats.demux_error else "complete",
                    100 * stats.coverage,
                )
            if batch:
                yield _batch(batch)
        finally:
            container.close()

    def _decoded(
        self, container: InputContainer, stream: VideoStream
    ) -> Iterator[list[VideoFrame] | _Lost]:
        """Decoded frames packet by packet; :class:`_Lost` for a packet the decoder rejected.

        A demuxing error (damaged container structure, truncated file) ends the pass
        after the decoder is drained: what came before is kept.
        """
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                self.stats.demux_error = f"{type(exc).__name__}: {exc.strerror}"
                try:
                    yield _decode_packet(stream, None)
                except av.error.FFmpegError:
                    yield _Lost(None)
                return
            try:
                frames = _decode_packet(stream, packet)
            except av.error.EOFError:
                return
            except av.error.FFmpegError:
                yield _Lost(packet.pts)
                continue
            yield frames


def _frames(container: InputContainer, stream: VideoStream) -> Generator[VideoFrame, None, None]:
    """Decoded frames from the container's current position; rejected packets are skipped."""
    for packet in container.demux(stream):
        try:
            yield from _decode_packet(stream, packet)
        except av.error.FFmpegError:
            continue


def _frame_at(
    container: InputContainer, stream: VideoStream, target: int, *, from_start: bool
) -> VideoFrame | None:
    """The last frame with pts <= ``target``, decoded from the keyframe before it or the start."""
    try:
        container.seek(0 if from_start else target, stream=stream, backward=True)
    except av.error.FFmpegError:
        if from_start:
            return None
        container.seek(0, stream=stream, backward=True)
    best: VideoFrame | None = None
    frames = _frames(container, stream)
    for frame in frames:
        if frame.pts is None or frame.is_corrupt:
            continue
        if frame.pts <= target:
            best = frame
        if frame.pts >= target:
            break
    frames.close()
    return best


def extract_frames(
    path: VideoInput,
    pts: Sequence[int],
    *,
    sizes: Sequence[tuple[int, int] | None] = (None,),
    max_side: int = DEFAULT_MAX_SIDE,
) -> list[list[np.ndarray]]:
    """Decode the frames with presentation timestamps ``pts``, each at every one of ``sizes``.

    Returns, for each requested pts in order, one upright RGB array per entry of
    ``sizes`` (``None``: display size capped at ``max_side``), converted exactly as
    :class:`FrameSampler` converts, so a sampled frame is reproduced pixel for pixel.
    Seeks to the keyframe before each target and decodes forward; when a pts is not
    found (damaged timestamps), the nearest earlier frame stands in for it.
    """
    if not sizes:
        raise ValueError("sizes must name at least one output size")
    name = source_name(path)
    found: dict[int, list[np.ndarray]] = {}
    container = _open(path)
    try:
        stream = _video_stream(container, name)
        stream.thread_type = "AUTO"
        sar = _stream_sar(stream)
        for target in sorted({int(p) for p in pts}):
            best = _frame_at(container, stream, target, from_start=False)
            if best is None:  # a damaged stretch after the keyframe: decode from the start
                best = _frame_at(container, stream, target, from_start=True)
            if best is None:
                raise VideoDecodeError(
                    f"the frame at pts {target} of {name!r} could not be decoded again; "
                    "the file may have changed since it was sampled"
                )
            found[target] = [_to_rgb(best, size, max_side, sar) for size in sizes]
    finally:
        container.close()
    return [found[int(p)] for p in pts]
