"""Streaming decode: codecs, presentation-time sampling, rotation, damage, bad input."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from synthetic.synth import SynthConfig, synthesize
from tests.worker.media import CODECS, displayed_frames, level, write_video
from worker._exceptions import (
    EmptyVideoError,
    NotAVideoError,
    NoVideoStreamError,
    VideoDecodeError,
)
from worker.video.decode import FrameSampler, _Timeline, extract_frames, probe
from worker.video.prefetch import Prefetcher


def sample(path: Path, **kwargs: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, FrameSampler]:
    sampler = FrameSampler(path, **kwargs)  # type: ignore[arg-type]
    batches = list(sampler)
    return (
        np.concatenate([b.times for b in batches]),
        np.concatenate([b.pts for b in batches]),
        np.concatenate([b.frames for b in batches]),
        sampler,
    )


def frame_index(image: np.ndarray, count: int) -> int:
    """Which test frame ``image`` shows, from its grey level away from the marker."""
    value = float(image[image.shape[0] // 2 :, image.shape[1] // 2 :].mean())
    return int(np.argmin([abs(level(i) - value) for i in range(count)]))


# -- codecs and containers -------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CODECS))
def test_probe_and_sampling_for_each_codec(tmp_path: Path, kind: str) -> None:
    path = write_video(tmp_path / f"v{CODECS[kind][3]}", kind, count=30, fps=10)
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (64, 48, 0)
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(3.0, abs=0.02)
    assert info.codec == {"h264-mp4": "h264", "vp9-webm": "vp9"}.get(kind, CODECS[kind][1])

    times, _, frames, sampler = sample(path, fps=2.0, batch_size=4)
    np.testing.assert_allclose(times, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5], atol=1e-3)
    assert [frame_index(f, 30) for f in frames] == [0, 5, 10, 15, 20, 25]
    assert frames.shape == (6, 48, 64, 3) and frames.dtype == np.uint8
    assert sampler.stats.decoded_frames == 30
    assert sampler.stats.coverage == pytest.approx(1.0, abs=1e-3)


def test_batches_are_bounded_and_resized(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", count=40, fps=10)
    batches = list(FrameSampler(path, fps=5.0, size=(32, 20), batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 3, 3, 3, 3, 2]
    assert all(b.frames.shape[1:] == (20, 32, 3) for b in batches)


def test_source_slower_than_the_sampling_rate_gives_each_frame_once(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", count=4, fps=1)
    times, _, frames, _ = sample(path, fps=4.0)
    np.testing.assert_allclose(times, [0.0, 1.0, 2.0, 3.0])
    assert [frame_index(f, 4) for f in frames] == [0, 1, 2, 3]


def test_skipping_non_reference_frames_keeps_exact_times(tmp_path: Path) -> None:
    config = SynthConfig(seconds=4.0, fps=15.0, width=160, height=120, frames_fps=0)
    path = synthesize(tmp_path, config, frames=False).video  # x264 with B-frames
    all_times, _, _, full = sample(path, fps=15.0)
    times, _, _, skipping = sample(path, fps=2.0, skip_nonref=True)
    assert skipping.stats.decoded_frames < full.stats.decoded_frames == 60
    assert set(np.round(times, 9)) <= set(np.round(all_times, 9))
    assert len(times) == 8  # one per instant 0, 0.5, ..., 3.5


# -- time: variable frame rate and odd time bases ----------------------------------------


@pytest.mark.parametrize(
    ("kind", "time_base", "tolerance"),
    [
        ("h264-mp4", Fraction(1001, 30000), 1e-9),
        ("h264-mp4", Fraction(1, 7), 1e-9),
        ("mpeg4-avi", Fraction(1, 7), 1e-9),
        ("vp9-webm", Fraction(1, 7), 1e-3),  # Matroska stores milliseconds
    ],
)
def test_variable_frame_rate_times_come_from_pts(
    tmp_path: Path, kind: str, time_base: Fraction, tolerance: float
) -> None:
    stamps = [0, 1, 2, 5, 6, 13, 14, 20, 21, 22, 40]
    path = write_video(
        tmp_path / f"vfr{CODECS[kind][3]}", kind, pts=stamps, time_base=time_base, fps=10
    )
    truth = [float(s * time_base) for s in stamps]
    times, _, frames, sampler = sample(path, fps=2.0)
    info = probe(path)
    end = truth[-1] + (1 / info.fps if info.fps else 0.0)
    if info.duration_s:
        end = min(end, max(info.duration_s, truth[-1]))
    expected = displayed_frames(truth, 2.0, end)
    assert [frame_index(f, len(stamps)) for f in frames] == expected
    np.testing.assert_allclose(times, [truth[i] for i in expected], atol=tolerance)
    assert sampler.stats.decoded_frames == len(stamps)


def test_nonzero_start_time_counts_from_the_stream_start(tmp_path: Path) -> None:
    path = write_video(
        tmp_path / "late.mp4", pts=[900 + 10 * i for i in range(12)], time_base=Fraction(1, 100)
    )
    times, _, _, _ = sample(path, fps=1.0)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = float(stream.start_time * stream.time_base)
    np.testing.assert_allclose(times, np.array([9.0, 10.0]) - origin, atol=1e-9)


def test_timeline_rule_without_video() -> None:
    timeline = _Timeline(Fraction(2), Fraction(1, 10))
    frames = [Fraction(n, 10) for n in (0, 1, 4, 6, 7, 12)]
    emitted = []
    previous = None
    for t in frames:
        if timeline.add(t):
            emitted.append(previous)
        previous = t
    if timeline.finish(1.3):
        emitted.append(previous)
    # instants 0, 0.5, 1.0: on screen are 0, 0.4, 0.7; the last frame (1.2) misses 1.5
    assert emitted == [Fraction(0), Fraction(4, 10), Fraction(7, 10)]
    assert timeline.add(Fraction(1, 10)) is None  # going back in time is refused


def test_timeline_counts_lost_stretches_once() -> None:
    timeline = _Timeline(Fraction(2), Fraction(1, 10))
    timeline.add(Fraction(0))
    timeline.add(Fraction(1, 10))
    timeline.lost(Fraction(5, 10))  # packets in (0.1, 1.0) failed
    timeline.add(Fraction(1))
    timeline.add(Fraction(11, 10))
    timeline.finish(2.0)
    # 0->0.1 (0.1) + lost gap (0.1) + 1.0->1.1 (0.1) + last frame (0.1)
    assert timeline.covered == Fraction(4, 10)


# -- rotation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rotation", "corner"),
    [(-90, "top-right"), (90, "bottom-left"), (180, "bottom-right"), (0, "top-left")],
)
def test_display_rotation_is_honoured(tmp_path: Path, rotation: int, corner: str) -> None:
    path = write_video(tmp_path / "r.mp4", count=3, width=64, height=48, rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation % 360
    assert (info.width, info.height) == ((48, 64) if rotation % 180 else (64, 48))
    _, _, frames, _ = sample(path, fps=2.0)
    image = frames[0].astype(int)
    assert image.shape[:2] == (info.height, info.width)
    corners = {
        "top-left": image[:6, :6],
        "top-right": image[:6, -6:],
        "bottom-left": image[-6:, :6],
        "bottom-right": image[-6:, -6:],
    }
    brightest = max(corners, key=lambda k: corners[k].mean())
    assert brightest == corner
    # a fixed model size keeps its (width, height) whatever the rotation
    _, _, square, _ = sample(path, fps=2.0, size=(40, 30))
    assert square.shape[1:] == (30, 40, 3)


# -- large frames ----------------------------------------------------------------------------


def test_8k_frames_are_downscaled_by_the_scaler(tmp_path: Path) -> None:
    path = write_video(tmp_path / "8k.avi", "mjpeg-avi", count=1, fps=2, width=7680, height=4320)
    info = probe(path)
    assert (info.width, info.height) == (7680, 4320)
    tracemalloc.start()
    try:
        _, _, model_frames, _ = sample(path, fps=2.0, size=(224, 224))
        _, _, display, _ = sample(path, fps=2.0, max_side=640)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert model_frames.shape == (1, 224, 224, 3)
    assert display.shape == (1, 360, 640, 3)
    assert peak < 20 * 2**20  # a single 8K RGB frame would be 95 MiB


# -- damage ------------------------------------------------------------------------------------


def _corrupt_middle(path: Path, start: float, stop: float) -> Path:
    data = bytearray(path.read_bytes())
    a, b = int(len(data) * start), int(len(data) * stop)
    data[a:b] = np.random.default_rng(1).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    damaged = path.with_name("damaged" + path.suffix)
    damaged.write_bytes(bytes(data))
    return damaged


def test_corrupt_packets_mid_stream_are_skipped_and_coverage_reported(tmp_path: Path) -> None:
    clean = write_video(
        tmp_path / "v.mp4", count=90, fps=30, width=160, height=120, noise=True, options={"g": "15"}
    )
    damaged = _corrupt_middle(clean, 0.45, 0.55)
    times, _, _, sampler = sample(damaged, fps=2.0)
    stats = sampler.stats
    assert stats.failed_packets + stats.corrupt_frames > 0
    assert 0.5 < stats.coverage < 0.97
    assert times[-1] >= 2.5  # decoding went on past the damage
    assert probe(damaged).frame_count == 90


def test_truncated_tail_counts_as_not_covered(tmp_path: Path) -> None:
    clean = write_video(
        tmp_path / "v.mp4",
        count=60,
        fps=30,
        width=160,
        height=120,
        noise=True,
        container_options={"movflags": "+faststart"},
    )
    data = clean.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    times, _, _, sampler = sample(cut, fps=2.0)
    assert 0.3 < sampler.stats.coverage < 0.8
    assert times[-1] < 1.6


def test_truncated_mp4_without_its_index_is_a_decode_error(tmp_path: Path) -> None:
    data = write_video(tmp_path / "v.mp4", count=30).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match="damaged or truncated"):
        probe(cut)
    with pytest.raises(VideoDecodeError):
        list(FrameSampler(cut))


# -- bad input -------------------------------------------------------------------------------


def test_text_file_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("patient slept well\n" * 50)
    with pytest.raises(NotAVideoError, match="is a text file, not a video"):
        probe(path)


def test_text_named_like_a_video_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("hello\n" * 50)
    with pytest.raises(NotAVideoError, match="text file"):
        probe(path)


def test_png_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "still.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(path)
    with pytest.raises(NotAVideoError, match="PNG image"):
        probe(path)
    with pytest.raises(NotAVideoError):
        list(FrameSampler(path))


def test_pdf_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")
    with pytest.raises(NotAVideoError, match="PDF document"):
        probe(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(EmptyVideoError, match="empty"):
        probe(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError, match="does not exist"):
        probe(tmp_path / "nothing.mp4")


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "sound.m4a"
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(NoVideoStreamError, match="no video stream"):
        probe(path)


def test_video_with_zero_frames(tmp_path: Path) -> None:
    path = tmp_path / "zero.avi"
    container = av.open(str(path), mode="w", format="avi")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    with pytest.raises(EmptyVideoError, match="no frame could be decoded"):
        probe(path)
    with pytest.raises(EmptyVideoError):
        list(FrameSampler(path))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fps": 0}, "fps must be a positive number"),
        ({"fps": float("nan")}, "fps"),
        ({"size": (0, 10)}, "size"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_side": 0}, "max_side"),
        ({"threads": -1}, "threads"),
    ],
)
def test_bad_sampler_arguments_are_named(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FrameSampler(tmp_path / "v.mp4", **kwargs)


# -- re-decoding a sampled frame ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["h264-mp4", "vp9-webm"])
def test_extract_frames_reproduces_sampled_frames(tmp_path: Path, kind: str) -> None:
    path = write_video(
        tmp_path / f"v{CODECS[kind][3]}", kind, count=60, fps=10, noise=True, options={"g": "20"}
    )
    _, pts, frames, _ = sample(path, fps=2.0, size=(32, 32))
    wanted = [5, 1, 9]
    extracted = extract_frames(path, [int(pts[i]) for i in wanted], sizes=[(32, 32), None])
    for i, (small, display) in zip(wanted, extracted, strict=True):
        np.testing.assert_array_equal(small, frames[i])
        assert display.shape == (48, 64, 3)


# -- the decode thread -------------------------------------------------------------------------


def test_prefetcher_stays_a_bounded_number_of_items_ahead() -> None:
    produced = []
    release = threading.Event()

    def source() -> Iterator[int]:
        for i in range(20):
            produced.append(i)
            yield i

    with Prefetcher(source(), maxsize=3) as items:
        iterator = iter(items)
        assert next(iterator) == 0
        release.wait(0.3)
        assert len(produced) <= 1 + 3 + 1  # taken, queued, one blocked on put
        assert list(iterator) == list(range(1, 20))


def test_prefetcher_reraises_producer_errors() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise RuntimeError("decoder fell over")

    with Prefetcher(source()) as items, pytest.raises(RuntimeError, match="fell over"):
        list(items)


def test_prefetcher_closes_its_source_when_abandoned() -> None:
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            yield from range(1000)
        finally:
            closed.set()

    with Prefetcher(source(), maxsize=2) as items:
        for _ in items:
            break
    assert closed.is_set()
