"""Events a new version and the served model disagree on (worker/finetune/disagreements.py)."""

from __future__ import annotations

import pytest

from tests.service.inbox_data import add_video
from worker.finetune.disagreements import compare_events, event_disagreements, recent_videos
from worker.settings import Settings
from worker.storage import Storage


def ev(label: str, start: float, end: float, i: int = 0) -> dict:
    return {"id": f"{label}-{i}", "label": label, "start_s": start, "end_s": end, "score": 0.9}


def test_events_agree_by_label_and_overlap():
    served = [ev("bed_exit", 1, 3), ev("seizure", 10, 14), ev("bed_exit", 20, 22, 1)]
    candidate = [ev("bed_exit", 1.5, 3.2), ev("staff", 10, 14), ev("bed_exit", 21.5, 25, 1)]
    result = compare_events(served, candidate)
    assert result["agreed"] == 1
    assert [(e["label"], e["start_s"]) for e in result["only_served"]] == [
        ("seizure", 10),
        ("bed_exit", 20),
    ]
    assert [(e["label"], e["start_s"]) for e in result["only_candidate"]] == [
        ("staff", 10),
        ("bed_exit", 21.5),
    ]
    # one candidate event matches one served event only
    twice = compare_events([ev("a", 0, 2), ev("a", 0, 2, 1)], [ev("a", 0, 2)])
    assert twice["agreed"] == 1 and len(twice["only_served"]) == 1
    with pytest.raises(ValueError, match="tiou"):
        compare_events([], [], tiou=0)


def test_recent_videos_of_a_camera_newest_first(tmp_path):
    storage = Storage(tmp_path / "data")
    storage.ensure_layout()
    ids = [
        add_video(storage, [("bed_exit", 1, 2, 0.5)], camera=c, created_at=1000.0 + k)
        for k, c in enumerate(["icu-1", "icu-2", "icu-1", "icu-1"])
    ]
    assert recent_videos(storage, 2) == [ids[3], ids[2]]
    assert recent_videos(storage, 5, camera="icu-2") == [ids[1]]


def test_the_candidate_is_run_on_each_video_and_a_broken_one_is_listed(tmp_path):
    from tests import media
    from tests.service.test_health import tiny_checkpoint

    storage = Storage(tmp_path / "data")
    storage.ensure_layout()
    source = media.write_video(tmp_path / "v.mp4", frames=24, fps=6)
    good = add_video(storage, [("bed_exit", 0.0, 4.0, 0.5)], source=source)
    broken = add_video(storage, [("bed_exit", 0.0, 1.0, 0.5)])  # its source is not a video
    checkpoint = tiny_checkpoint(tmp_path / "model.pt", thresholds=[0.0, 1.0])
    report = event_disagreements(
        storage, Settings(dev=True), checkpoint, [good, broken], tmp_path / "work"
    )
    by_id = {v["video_id"]: v for v in report["videos"]}
    assert "error" in by_id[broken] and "error" not in by_id[good]
    # threshold 0 for bed_exit: the candidate finds it all along, as the stored event
    assert by_id[good]["agreed"] == 1 and by_id[good]["only_candidate"] == []
    assert report["summary"]["videos"] == 2 and not (tmp_path / "work" / good).exists()
