"""Documents: the small state every process shares (reviews, job archives, the last
fine-tune, the session secret), on both storage backends.

Each test takes two "machines": with the local backend two ``Storage`` objects on one
data directory (processes sharing a volume); with the object store two
``ObjectStorage`` objects with their own data directories on one bucket and one Redis
(replicas sharing nothing else).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.media import write_video
from tests.service.results import ResultsWriter
from worker._exceptions import StorageError
from worker.finetune.nightly import last_finetune, record_last
from worker.pool.reviews import document_name, frame_pool, read_reviews, review_event
from worker.queue.interface import Job, JobState
from worker.queue.memory import MemoryQueue
from worker.queue.retention import archive_job, archived_job, list_jobs
from worker.settings import Settings
from worker.storage import Storage, VideoRecord, new_id

Machine = Callable[[str], Storage]


@pytest.fixture(params=["local", "object store"])
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> Machine:
    if request.param == "local":

        def local(_name: str) -> Storage:
            storage = Storage(tmp_path / "shared")
            storage.ensure_layout()
            return storage

        return local
    make, _bucket = request.getfixturevalue("machines")
    return make


def test_a_document_written_on_one_machine_is_read_on_another(machine: Machine) -> None:
    a, b = machine("a"), machine("b")
    assert b.read_document("state/x.json") is None
    a.write_document("state/x.json", b"one", make_folder=True)
    assert b.read_document("state/x.json") == b"one"
    seen = b.document_path("state/x.json")
    assert seen.read_bytes() == b"one"
    a.write_document("state/x.json", b"two, longer")
    # the reader's copy follows the change, so a cache keyed on its stat sees it
    assert b.document_path("state/x.json").read_bytes() == b"two, longer"
    assert b.document_names("state") == ["state/x.json"]
    a.delete_document("state/x.json")
    assert b.read_document("state/x.json") is None
    assert not b.document_path("state/x.json").exists()


def test_a_document_is_created_once_by_whichever_machine_is_first(machine: Machine) -> None:
    a, b = machine("a"), machine("b")
    assert a.create_document("secrets/k", b"from a") is True
    assert b.create_document("secrets/k", b"from b") is False
    assert b.read_document("secrets/k") == b"from a"


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a//b", ".hidden/x", "a/.b"])
def test_a_document_name_leaving_the_storage_is_refused(machine: Machine, name: str) -> None:
    with pytest.raises(ValueError, match="not a document name"):
        machine("a").document_path(name)


def test_the_document_lock_serialises_two_machines(machine: Machine) -> None:
    a, b = machine("a"), machine("b")
    a.write_document("state/counter", b"0", make_folder=True)

    def bump(storage: Storage) -> None:
        for _ in range(10):
            with storage.document_lock("state/counter"):
                value = int(storage.read_document("state/counter") or b"0")
                storage.write_document("state/counter", str(value + 1).encode())

    threads = [threading.Thread(target=bump, args=(s,)) for s in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert a.read_document("state/counter") == b"20"


def _video(storage: Storage) -> str:
    video_id = new_id()
    received = write_video(storage.new_upload_file())
    storage.save_video(VideoRecord(video_id, new_id(), received.stat().st_size), received)
    return video_id


def test_a_review_made_on_one_machine_is_seen_on_another_and_goes_with_the_video(
    machine: Machine,
) -> None:
    a, b = machine("a"), machine("b")
    video_id = _video(a)
    events = ResultsWriter(storage=a).write(video_id, events=2)
    pool = frame_pool(a, Settings(data_dir=a.root), events)
    review_event(a, pool, video_id, "bed_exit-1", "confirmed", "alice")
    assert read_reviews(b, video_id)["bed_exit-1"].reviewer == "alice"
    copy = b.document_path(document_name(video_id))
    assert json.loads(copy.read_bytes())["reviews"]["bed_exit-1"]["verdict"] == "confirmed"
    a.delete_video(video_id)
    assert a.read_document(document_name(video_id)) is None
    assert b.read_document(document_name(video_id)) is None
    with pytest.raises(StorageError):  # the video is gone: nothing is written for it
        review_event(a, pool, video_id, "bed_exit-0", "confirmed", "alice")
    assert a.read_document(document_name(video_id)) is None


def test_archived_jobs_are_read_and_listed_on_another_machine(machine: Machine) -> None:
    a, b = machine("a"), machine("b")
    job = Job(
        job_id=new_id(),
        kind="detect",
        payload={"video_id": new_id()},
        status=JobState.failed,
        created_at=1.0,
        finished_at=2.0,
        error="the video could not be decoded",
    )
    archive_job(a, job)
    found = archived_job(b, job.job_id)
    assert found is not None and found.status is JobState.failed and found.error == job.error
    queue = MemoryQueue(Settings(data_dir=b.root))
    assert [j.job_id for j in list_jobs(queue, b, "detect")] == [job.job_id]
    assert list_jobs(queue, b, "finetune") == []


def test_the_last_fine_tune_is_one_record_for_every_machine(machine: Machine) -> None:
    a, b = machine("a"), machine("b")
    assert last_finetune(b) is None
    record_last(a, None, {"started_at": "2026-12-01T02:00:00+00:00", "job_id": "j"})
    record_last(a, "night-1", {"started_at": "2026-12-02T02:00:00+00:00", "job_id": "k"})
    assert last_finetune(b).isoformat() == "2026-12-01T02:00:00+00:00"
    assert last_finetune(b, "night-1").isoformat() == "2026-12-02T02:00:00+00:00"


def test_the_last_fine_tune_of_an_older_data_directory_is_still_read(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "data")
    storage.ensure_layout()
    (storage.models / "last_finetune.json").write_text(
        json.dumps({"started_at": "2026-11-30T02:00:00+00:00"})
    )
    assert last_finetune(storage).isoformat() == "2026-11-30T02:00:00+00:00"


def test_a_deleted_videos_comparison_frames_leave_the_store_too(machines, s3, tmp_path) -> None:
    """The comparison a candidate carries (overlays of pool frames, and their list) is
    in the store; withdrawing a deleted video's frames on one machine removes them
    there, so no other machine's copy brings them back."""
    from tests.service.test_health import tiny_checkpoint
    from worker.serving.versions import VersionStatus

    make, bucket = machines
    a, b = make("a"), make("b")
    checkpoint = tiny_checkpoint(tmp_path / "model.pt")
    video_id, frame_id, other = new_id(), new_id(), new_id()
    folder = tmp_path / "comparison"
    folder.mkdir()
    attachments = {}
    for fid in (frame_id, other):
        (folder / f"{fid}.parent.png").write_bytes(b"png")
        attachments[f"comparison/{fid}.parent.png"] = folder / f"{fid}.parent.png"
    listed = [{"frame_id": frame_id, "video_id": video_id}, {"frame_id": other, "video_id": "x"}]
    (folder / "comparison.json").write_text(json.dumps({"frames": listed}))
    attachments["comparison.json"] = folder / "comparison.json"
    card = a.registry().register(
        checkpoint, status=VersionStatus.CANDIDATE, reason="test", attachments=attachments
    )
    prefix = f"m/models/{card.version}/comparison/"
    assert len(s3.keys(bucket, prefix)) == 2
    assert b.registry().withdraw_comparison_frames({frame_id}, video_id) == 2
    assert s3.keys(bucket, prefix) == [f"{prefix}{other}.parent.png"]
    registry = a.registry()  # another machine's copy follows the store
    stored = json.loads((registry.root / card.version / "comparison.json").read_text())
    assert stored["frames"] == listed[1:] and stored["frames_withdrawn"] == 1
    assert not (registry.root / card.version / "comparison" / f"{frame_id}.parent.png").exists()
