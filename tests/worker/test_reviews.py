"""Reviews of events: persisted per video, and the peak frame labeled in the frame pool."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from tests.media import write_video
from tests.service.results import ResultsWriter
from worker._exceptions import EventNotFoundError, NoResultsError, VideoNotFoundError
from worker.pool.frames import FramePool
from worker.pool.reviews import (
    REVIEWS_NAME,
    Verdict,
    frame_pool,
    read_reviews,
    review_event,
    review_of,
)
from worker.settings import Settings
from worker.storage import Storage, VideoRecord, atomic_write_json, new_id


@pytest.fixture
def storage(tmp_path) -> Storage:
    storage = Storage(tmp_path / "data")
    storage.ensure_layout()
    return storage


def stored_video(storage: Storage) -> str:
    video_id = new_id()
    received = write_video(storage.new_upload_file())
    storage.save_video(VideoRecord(video_id, new_id(), received.stat().st_size), received)
    return video_id


@pytest.fixture
def video(storage: Storage) -> tuple[str, dict]:
    video_id = stored_video(storage)
    return video_id, ResultsWriter(storage.root).write(video_id, events=3)


@pytest.fixture
def pool(storage: Storage, video) -> FramePool:
    return frame_pool(storage, Settings(data_dir=storage.root), video[1])


def test_confirming_labels_the_peak_frame_with_the_event_label(storage, pool, video):
    video_id, events = video
    review = review_event(storage, pool, video_id, "bed_exit-1", "confirmed", "alice")
    assert review.verdict is Verdict.confirmed and review.reviewer == "alice"
    assert review.label == "bed_exit" and review.frame_labels == ["bed_exit"]
    frame = pool.get(review.frame_id)
    assert frame.labels == ["bed_exit"] and frame.split in ("train", "val")
    assert frame.source == "review" and frame.video_id == video_id
    assert frame.time_s == events["events"][1]["peak_s"]
    assert frame.consistency == 0.5 and frame.consistency_model == "v-test"
    # the pool holds the detector's peak frame PNG at the model's input size
    peak = np.asarray(Image.open(storage.results_dir(video_id) / "maps/bed_exit-1_frame.png"))
    stored = np.asarray(Image.open(pool.image_path(review.frame_id)))
    assert stored.shape == (16, 16, 3) and pool.image_size == 16
    assert stored.mean() == pytest.approx(peak.mean(), abs=1)
    on_disk = json.loads((storage.upload_dir(video_id) / REVIEWS_NAME).read_text())
    assert on_disk["reviews"]["bed_exit-1"]["verdict"] == "confirmed"


def test_a_false_positive_labels_the_frame_with_no_event(storage, pool, video):
    review = review_event(storage, pool, video[0], "bed_exit-0", Verdict.false_positive, "bob")
    assert review.frame_labels == [] and pool.get(review.frame_id).labels == []


def test_reviewing_again_updates_the_same_record_and_frame(storage, pool, video):
    video_id = video[0]
    first = review_event(storage, pool, video_id, "bed_exit-2", "confirmed", "alice")
    second = review_event(storage, pool, video_id, "bed_exit-2", "false_positive", "bob")
    assert second.frame_id == first.frame_id
    assert pool.get(first.frame_id).labels == []
    assert len(pool.records()) == 1
    reviews = read_reviews(storage, video_id)
    assert list(reviews) == ["bed_exit-2"]
    assert reviews["bed_exit-2"].verdict is Verdict.false_positive
    assert reviews["bed_exit-2"].reviewer == "bob"


def test_a_review_belongs_to_the_event_it_was_made_on(storage, pool, video):
    """Results made again (another model) may reuse an id for another event: the old
    review no longer matches, and reviewing the new event adds a new frame."""
    video_id = video[0]
    old = review_event(storage, pool, video_id, "bed_exit-1", "confirmed", "alice")
    events = storage.read_events(video_id)
    events["events"][1]["peak_s"] = 9.0
    atomic_write_json(storage.results_dir(video_id) / "events.json", events)
    event = next(e for e in storage.read_events(video_id)["events"] if e["id"] == "bed_exit-1")
    assert review_of(event, read_reviews(storage, video_id)) is None
    new = review_event(storage, pool, video_id, "bed_exit-1", "false_positive", "bob")
    assert new.frame_id != old.frame_id
    assert pool.get(old.frame_id).labels == ["bed_exit"], "the old frame keeps its true label"
    assert pool.get(new.frame_id).labels == []


def test_a_frame_removed_from_the_pool_is_added_again(storage, pool, video):
    first = review_event(storage, pool, video[0], "bed_exit-0", "confirmed", "alice")
    (pool.root / f"{first.frame_id}.json").unlink()
    second = review_event(storage, pool, video[0], "bed_exit-0", "confirmed", "alice")
    # added again under the same id: a video's frame at a time has one id per source
    assert second.frame_id == first.frame_id and pool.get(second.frame_id).labels == ["bed_exit"]


def test_results_without_a_peak_frame_still_record_the_verdict(storage, video):
    video_id, events = video
    for event in events["events"]:
        event.pop("maps")
    (storage.results_dir(video_id) / "events.json").write_text(json.dumps(events))
    pool = frame_pool(storage, Settings(data_dir=storage.root), events)
    review = review_event(storage, pool, video_id, "bed_exit-0", "confirmed", "alice")
    assert review.frame_id is None and pool.records() == []
    assert read_reviews(storage, video_id)["bed_exit-0"].verdict is Verdict.confirmed


def test_unknown_event_video_and_unprocessed_video(storage, pool, video):
    with pytest.raises(EventNotFoundError, match="no event bed_exit-9"):
        review_event(storage, pool, video[0], "bed_exit-9", "confirmed", "alice")
    with pytest.raises(VideoNotFoundError):
        review_event(storage, pool, new_id(), "bed_exit-0", "confirmed", "alice")
    with pytest.raises(NoResultsError, match="no results yet"):
        review_event(storage, pool, stored_video(storage), "bed_exit-0", "confirmed", "alice")
    assert pool.records() == []


@pytest.mark.parametrize(
    ("verdict", "reviewer", "classes", "message"),
    [
        ("maybe", "alice", None, "verdict must be one of confirmed, false_positive"),
        ("confirmed", "", None, "reviewer"),
        ("confirmed", "alice", ["staff"], "not among class_names"),
    ],
)
def test_bad_arguments_change_nothing(storage, pool, video, verdict, reviewer, classes, message):
    with pytest.raises(ValueError, match=message):
        review_event(storage, pool, video[0], "bed_exit-0", verdict, reviewer, classes)
    assert pool.records() == [] and read_reviews(storage, video[0]) == {}


def test_concurrent_reviews_of_one_video_are_all_kept(storage, pool, video):
    video_id = video[0]
    ids = ["bed_exit-0", "bed_exit-1", "bed_exit-2"] * 4
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(ids))

    def review(event_id: str, index: int) -> None:
        try:
            barrier.wait()
            verdict = "confirmed" if index % 2 else "false_positive"
            review_event(storage, pool, video_id, event_id, verdict, f"r{index}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=review, args=(e, i)) for i, e in enumerate(ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    reviews = read_reviews(storage, video_id)
    assert sorted(reviews) == ["bed_exit-0", "bed_exit-1", "bed_exit-2"]
    assert len(pool.records()) == 3, "one frame per event, however many reviews"
    for review in reviews.values():
        assert pool.get(review.frame_id).labels == review.frame_labels


def test_the_reviewed_frame_carries_the_videos_camera(storage, pool, video):
    video_id = video[0]
    record = storage.get_video(video_id)
    record.camera = "icu-3"
    storage.update_video(record)
    review = review_event(storage, pool, video_id, "bed_exit-0", "confirmed", "alice")
    assert review.frame_id is not None and pool.get(review.frame_id).camera == "icu-3"
    assert [r.frame_id for r in pool.records(labeled=True, camera="icu-3")] == [review.frame_id]
