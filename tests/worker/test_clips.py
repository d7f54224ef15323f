"""Event clips: stream copy at a keyframe, re-encoding elsewhere, durations by PyAV."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import pytest

from tests import media
from tests.service.inbox_data import add_video
from worker._exceptions import EventNotFoundError, VideoNotFoundError
from worker.storage import Storage
from worker.video.clips import COPY, REENCODE, clip_window, cut_clip, event_clip

FPS = 10


def write_video(path: Path, *, seconds: float = 10.0, keyint: int = 10) -> Path:
    """An H.264 MP4 at FPS with a keyframe every ``keyint`` frames, no B-frames."""
    return media.write_video(path, frames=int(seconds * FPS), fps=FPS, keyint=keyint)


def duration_and_frames(path: Path) -> tuple[float, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert stream.duration is not None and stream.time_base is not None
        return float(stream.duration * stream.time_base), frames


def test_window_is_clamped_to_the_video():
    assert clip_window(3.0, 5.0, 2.0, 10.0) == (1.0, 7.0)
    assert clip_window(1.0, 9.5, 2.0, 10.0) == (0.0, 10.0)
    with pytest.raises(ValueError, match="margin_s"):
        clip_window(1.0, 2.0, -1.0, 10.0)


def test_a_window_starting_at_a_keyframe_is_copied(tmp_path):
    source = write_video(tmp_path / "src.mp4")
    out = tmp_path / "clip.mp4"
    assert cut_clip(source, out, 2.0, 5.5) == COPY
    duration, frames = duration_and_frames(out)
    assert frames == 35
    assert duration == pytest.approx(3.5, abs=1 / FPS)


def test_a_window_between_keyframes_is_reencoded(tmp_path):
    source = write_video(tmp_path / "src.mp4", keyint=50)
    out = tmp_path / "clip.mp4"
    assert cut_clip(source, out, 2.3, 4.8) == REENCODE
    duration, frames = duration_and_frames(out)
    assert frames == 25
    assert duration == pytest.approx(2.5, abs=1 / FPS)


def test_clips_are_cached_with_the_video_and_deleted_with_it(tmp_path):
    storage = Storage(tmp_path / "data")
    storage.ensure_layout()
    source = write_video(tmp_path / "src.mp4")
    video_id = add_video(storage, [("seizure", 3.0, 5.0, 0.7)], source=source)
    clip = event_clip(storage, video_id, "seizure-0", margin_s=1.0)
    assert (clip.method, clip.start_s, clip.end_s) == (COPY, 2.0, 6.0)
    assert clip.path.parent == storage.cache_dir(video_id)
    again = event_clip(storage, video_id, "seizure-0", margin_s=1.0)
    assert again.path == clip.path and again.path.stat().st_mtime_ns == clip.path.stat().st_mtime_ns
    other = event_clip(storage, video_id, "seizure-0", margin_s=0.5)
    assert other.path != clip.path and other.method == REENCODE
    assert list(storage.tmp.glob("clip-*")) == []
    with pytest.raises(EventNotFoundError):
        event_clip(storage, video_id, "seizure-9", margin_s=1.0)
    storage.delete_video(video_id)
    assert not clip.path.exists()
    with pytest.raises(VideoNotFoundError):
        event_clip(storage, video_id, "seizure-0", margin_s=1.0)


def test_importing_the_module_does_not_import_av():
    import subprocess

    code = "import sys, worker.video.clips; print('av' in sys.modules)"
    answer = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert answer.stdout.strip() == "False"
