"""The data directory: ids, server-chosen names, atomic publication."""

from __future__ import annotations

import json

import pytest

from worker._exceptions import InvalidIdError, StorageError, VideoNotFoundError
from worker.storage import Storage, VideoRecord, clean_filename, new_id, validate_id


@pytest.fixture
def storage(tmp_path):
    storage = Storage(tmp_path / "data")
    storage.ensure_layout()
    return storage


def store(storage: Storage, data: bytes = b"video") -> VideoRecord:
    received = storage.new_upload_file()
    received.write_bytes(data)
    record = VideoRecord(video_id=new_id(), job_id=new_id(), size_bytes=len(data))
    storage.save_video(record, received)
    return record


@pytest.mark.parametrize("bad", ["", "..", "../x", "A" * 32, "0" * 31, "0" * 33, "g" * 32, 5])
def test_validate_id_refuses_anything_but_32_hex(bad):
    with pytest.raises(InvalidIdError, match="32 lowercase hexadecimal"):
        validate_id(bad, "video_id")


def test_paths_never_come_from_a_bad_id(storage):
    with pytest.raises(InvalidIdError):
        storage.source_path("../../etc")
    with pytest.raises(InvalidIdError):
        storage.results_dir("/abs")


def test_clean_filename():
    assert clean_filename("a\x00b\r\n.mp4") == "ab.mp4"
    assert clean_filename("x" * 300) == "x" * 255
    assert clean_filename(None) is None
    assert clean_filename("\x01") is None


def test_save_get_list_delete(storage):
    first = store(storage, b"one")
    second = store(storage, b"two")
    assert storage.source_path(first.video_id).read_bytes() == b"one"
    assert storage.get_video(second.video_id) == second
    assert [r.video_id for r in storage.list_videos()] == [second.video_id, first.video_id]
    assert list(storage.tmp.iterdir()) == []

    storage.delete_video(first.video_id)
    with pytest.raises(VideoNotFoundError):
        storage.get_video(first.video_id)
    with pytest.raises(VideoNotFoundError):
        storage.delete_video(first.video_id)
    assert list(storage.tmp.iterdir()) == []


def test_publish_replaces_results_in_one_rename(storage):
    record = store(storage)
    assert storage.read_events(record.video_id) is None
    for round_ in (1, 2):
        staging = storage.staging_dir(record.video_id) / "results"
        staging.mkdir()
        document = {"schema_version": 1, "round": round_, "events": []}
        (staging / "events.json").write_text(json.dumps(document))
        (staging / f"only-in-{round_}").write_text("x")
        storage.publish_results(record.video_id, staging)
        assert storage.read_events(record.video_id) == document
    names = sorted(p.name for p in storage.results_dir(record.video_id).iterdir())
    assert names == ["events.json", "only-in-2"]
    assert [p.name for p in storage.results.iterdir()] == [record.video_id]


def test_publish_refuses_a_folder_without_events(storage):
    record = store(storage)
    staging = storage.staging_dir(record.video_id)
    with pytest.raises(StorageError, match=r"events\.json"):
        storage.publish_results(record.video_id, staging)


def test_result_file_stays_inside_the_results(storage):
    record = store(storage)
    (storage.results_dir(record.video_id) / "maps").mkdir(parents=True)
    assert storage.result_file(record.video_id, "maps/a.png").name == "a.png"
    for escape in ("../x", "../../uploads", "/etc/passwd", "maps/../../x", "."):
        with pytest.raises(InvalidIdError):
            storage.result_file(record.video_id, escape)


def test_video_record_keeps_its_camera(storage):
    received = storage.new_upload_file()
    received.write_bytes(b"video")
    record = VideoRecord(video_id=new_id(), job_id=new_id(), size_bytes=5, camera="icu-3")
    storage.save_video(record, received)
    assert storage.get_video(record.video_id).camera == "icu-3"
    older = store(storage)  # a record written before cameras existed has none
    path = storage.upload_dir(older.video_id) / "video.json"
    data = json.loads(path.read_text())
    del data["camera"]
    path.write_text(json.dumps(data))
    assert storage.get_video(older.video_id).camera is None


def test_clean_tmp_keeps_fresh_entries(storage):
    (storage.tmp / "old.part").write_text("x")
    assert storage.clean_tmp(older_than_s=3600) == 0
    assert storage.clean_tmp(older_than_s=0) == 1


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ('{"schema_version": 2, "events": []}', "SchemaVersionError"),
        ('{"events": []}', "SchemaVersionError"),
        ("[1, 2]", "ResultsUnreadableError"),
        ("{not json", "ResultsUnreadableError"),
    ],
)
def test_events_of_another_schema_or_unreadable_raise_a_named_error(storage, content, error):
    """The one reader checks the schema version for every caller (API, pages, reviews)."""
    from worker import _exceptions

    record = store(storage)
    staging = storage.staging_dir(record.video_id) / "results"
    staging.mkdir()
    (staging / "events.json").write_text(content)
    storage.publish_results(record.video_id, staging)
    with pytest.raises(getattr(_exceptions, error)) as caught:
        storage.read_events(record.video_id)
    assert type(caught.value).__name__ == error
    assert isinstance(caught.value, _exceptions.StorageError)
