"""worker.deletion on a real data directory: which versions count as trained on a video."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from worker.deletion import (
    TrainedOnVideoError,
    delete_video,
    purge_orphaned_frames,
    versions_trained_on,
)
from worker.pool.frames import FramePool
from worker.serving.versions import ModelRegistry, VersionStatus
from worker.storage import Storage, VideoRecord, new_id


@pytest.fixture
def storage(tmp_path):
    storage = Storage(tmp_path / "data")
    storage.ensure_layout()
    return storage


def _video(storage: Storage, created_at: float) -> str:
    received = storage.new_upload_file()
    received.write_bytes(b"video")
    record = VideoRecord(video_id=new_id(), job_id=new_id(), size_bytes=5, created_at=created_at)
    storage.save_video(record, received)
    return record.video_id


def _card(storage: Storage, tmp_path, data: dict) -> str:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    registry = ModelRegistry(storage.models)
    return registry.register(
        checkpoint, status=VersionStatus.CANDIDATE, reason="test", data=data
    ).version


def test_cards_listing_videos_name_exactly_those(storage, tmp_path):
    used, other = _video(storage, time.time()), _video(storage, time.time())
    version = _card(storage, tmp_path, {"counts": {"unlabeled": 1}, "video_ids": [used]})
    assert versions_trained_on(storage, used) == [version]
    assert versions_trained_on(storage, other) == []
    delete_video(storage, other, by="admin")  # not trained on: deleted at once
    with pytest.raises(TrainedOnVideoError, match=version):
        delete_video(storage, used, by="admin")


def test_older_cards_without_video_ids_count_if_trained_after_the_upload(storage, tmp_path):
    version = _card(storage, tmp_path, {"counts": {"unlabeled": 3}})  # before the ids
    _card(storage, tmp_path, {})  # a registered checkpoint: no pool frames
    before = _video(storage, time.time() - 3600)
    after = _video(storage, time.time() + 3600)
    assert versions_trained_on(storage, before) == [version]
    assert versions_trained_on(storage, after) == []


def test_withdrawal_is_recorded_and_frames_and_links_go(storage, tmp_path):
    video_id = _video(storage, time.time())
    pool = FramePool(storage.frames, 16)
    record = pool.add_frame(np.zeros((16, 16, 3), np.uint8), video_id=video_id, time_s=1.0)
    kept = pool.add_frame(np.zeros((16, 16, 3), np.uint8), video_id=new_id(), time_s=1.0)
    link = storage.tmp / "finetune-j" / "data" / "train" / f"{record.frame_id}.png"
    link.parent.mkdir(parents=True)
    link.write_bytes(b"png")
    version = _card(storage, tmp_path, {"counts": {"unlabeled": 2}, "video_ids": [video_id]})
    _, report = delete_video(storage, video_id, by="dr-lee", withdraw=True)
    assert report.frames == [record.frame_id] and report.withdrawn_from == [version]
    assert not link.exists() and pool.records() == [pool.get(kept.frame_id)]
    card = json.loads((storage.models / version / "card.json").read_text())
    assert card["withdrawn"][0]["by"] == "dr-lee" and card["withdrawn"][0]["frames"] == 1


def test_frames_of_videos_deleted_before_are_purged(storage):
    """Deployments upgraded from a deletion that left the frames: the sweep takes them."""
    kept_video = _video(storage, time.time())
    pool = FramePool(storage.frames, 16)
    black = np.zeros((16, 16, 3), np.uint8)
    orphan = pool.add_frame(black, video_id=new_id(), time_s=1.0)
    kept = pool.add_frame(black, video_id=kept_video, time_s=1.0)
    uploaded = pool.add_image_bytes(_png())
    assert purge_orphaned_frames(storage) == [orphan.frame_id]
    assert {r.frame_id for r in pool.records()} == {kept.frame_id, uploaded.frame_id}


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()
