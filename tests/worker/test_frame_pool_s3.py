"""The frame pool through the object store (a real moto server, a real Redis for the
per-frame lock): frames added on one machine are listed on another, a label and a
score written at once on two machines both survive, removals and drawn maps reach
every copy."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from worker._exceptions import UnknownFrameError
from worker.pool.scoring import frame_map_path
from worker.storage import new_id

pytestmark = pytest.mark.redis


def frame(value: int) -> np.ndarray:
    return np.full((16, 16, 3), value, dtype=np.uint8)


def test_frames_added_on_a_worker_are_listed_on_the_api(machines, s3):
    machine, bucket = machines
    worker, api = machine("worker"), machine("api")
    video_id = new_id()
    pool = worker.frame_pool(16)
    added = [pool.add_frame(frame(i * 40), video_id=video_id, time_s=float(i)) for i in range(3)]
    keys = s3.keys(bucket, "m/frames/")
    assert {f"m/frames/{r.frame_id}.{e}" for r in added for e in ("png", "json")} <= set(keys)

    listed = api.frame_pool(16).records(video_ids=[video_id])
    assert [r.frame_id for r in listed] == [r.frame_id for r in added]
    first = added[0].frame_id
    assert (
        api.frame_pool(16).image_path(first).read_bytes()
        == (worker.frames / f"{first}.png").read_bytes()
    )


def test_a_label_and_a_score_written_at_once_on_two_machines_both_survive(machines):
    machine, _ = machines
    worker, api = machine("worker"), machine("api")
    frame_ids = [worker.frame_pool(16).add_frame(frame(i)).frame_id for i in range(6)]
    errors: list[BaseException] = []

    def label() -> None:
        try:
            for frame_id in frame_ids:
                api.frame_pool(16).set_labels(frame_id, ["staff"], ["staff", "seizure"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def score() -> None:
        try:
            for i, frame_id in enumerate(frame_ids):
                worker.frame_pool(16).set_consistency(frame_id, 0.1 * i, "v0001")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=label), threading.Thread(target=score)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    for i, frame_id in enumerate(frame_ids):
        record = machine("reader").frame_pool(16).get(frame_id)
        assert record.labels == ["staff"], record
        assert record.consistency == pytest.approx(0.1 * i), record


def test_a_removal_and_a_drawn_map_reach_every_copy(machines, s3):
    machine, bucket = machines
    worker, api = machine("worker"), machine("api")
    pool = worker.frame_pool(16)
    gone, kept = (pool.add_frame(frame(v)).frame_id for v in (10, 20))
    drawn = frame_map_path(pool.root, gone, "v0001", "gradcam")
    drawn.parent.mkdir(parents=True, exist_ok=True)
    drawn.write_bytes(b"png of a map")
    pool.sync()
    api_pool = api.frame_pool(16)
    assert frame_map_path(api_pool.root, gone, "v0001", "gradcam").read_bytes() == b"png of a map"
    api_pool.set_labels(gone, [], ["staff"])  # a record lock file on the API too

    assert api_pool.remove(gone)
    assert [k for k in s3.keys(bucket) if gone in k] == []
    fresh = worker.frame_pool(16)  # the worker's next open drops its copies
    with pytest.raises(UnknownFrameError):
        fresh.get(gone)
    assert not any(gone in str(p) for p in worker.frames.rglob("*"))
    assert fresh.get(kept).frame_id == kept
    assert not api.frame_pool(16).remove(gone)


def test_object_names_that_would_leave_the_folder_are_never_copied(machines, tmp_path):
    machine, _ = machines
    worker = machine("worker")
    for name in ("/../../escaped.json", "a//b.json", "../up.json", ".hidden.json"):
        worker.store.put_bytes(f"frames/{name}", b"{}")
    worker.frame_pool(16)
    assert not (tmp_path / "escaped.json").exists()
    assert not (tmp_path / "up.json").exists()
    assert sorted(p.name for p in worker.frames.rglob("*") if p.is_file()) == [".synced"]
