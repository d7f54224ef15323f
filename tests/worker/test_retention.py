"""Job records leave the queue after their retention and stay readable from the archive."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import media
from tests.redis_helpers import DB_QUEUE, flushed_db
from worker._exceptions import JobNotFoundError
from worker.queue.interface import JobQueue, JobState
from worker.queue.memory import MemoryQueue
from worker.queue.redis_streams import RedisQueue
from worker.queue.retention import archived_job, find_job, list_jobs, prune_jobs
from worker.runtime.reconcile import reconcile
from worker.settings import Settings
from worker.storage import Storage, VideoRecord, new_id

#: any job finished before now is older than this
PAST = 1e-6
HOUR = 3600.0


@pytest.fixture(params=["memory", "redis"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobQueue]:
    if request.param == "memory":
        yield MemoryQueue(Settings(data_dir=tmp_path, max_attempts=1))
        return
    with flushed_db(DB_QUEUE) as url:
        queue = RedisQueue(Settings(data_dir=tmp_path, redis_url=url, max_attempts=1))
        yield queue
        queue.close()


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    storage = Storage(tmp_path / "data")
    storage.ensure_layout()
    return storage


def _finish(queue: JobQueue, kind: str, *, ok: bool) -> str:
    job = queue.enqueue(kind, {"n": 1})
    lease = queue.reserve(kind, "w", timeout_s=1)
    assert lease is not None and lease.job_id == job.job_id
    if ok:
        queue.complete(lease, {"answer": 42})
    else:
        queue.fail(lease, "it broke", retry=False)
    return job.job_id


def test_finished_jobs_past_retention_are_archived_then_dropped(
    queue: JobQueue, storage: Storage
) -> None:
    done = _finish(queue, "detect", ok=True)
    failed = _finish(queue, "detect", ok=False)
    running = queue.enqueue("detect", {"n": 2}).job_id
    assert queue.reserve("detect", "w", timeout_s=1) is not None

    assert prune_jobs(queue, storage, ["detect"], HOUR) == []  # all too recent
    assert sorted(prune_jobs(queue, storage, ["detect"], PAST)) == sorted([done, failed])

    for job_id in (done, failed):
        with pytest.raises(JobNotFoundError):
            queue.get(job_id)
    assert queue.get(running).status is JobState.running  # unfinished: kept
    assert queue.counts("detect")[JobState.done] == 0
    assert find_job(queue, storage, done).result == {"answer": 42}
    assert find_job(queue, storage, failed).error == "it broke"
    assert find_job(queue, storage, failed).status is JobState.failed
    listed = [job.job_id for job in list_jobs(queue, storage, "detect")]
    assert sorted(listed) == sorted([done, failed, running])
    with pytest.raises(JobNotFoundError):
        find_job(queue, storage, new_id())


def test_reconcile_does_not_requeue_a_job_past_its_retention(storage: Storage) -> None:
    queue = MemoryQueue(Settings(data_dir=storage.root, max_attempts=1))
    received = storage.new_upload_file()
    received.write_bytes(media.video_bytes())
    record = VideoRecord(video_id=new_id(), job_id=new_id(), size_bytes=1)
    storage.save_video(record, received)
    queue.enqueue("detect", {"video_id": record.video_id}, job_id=record.job_id)
    lease = queue.reserve("detect", "w", timeout_s=1)
    assert lease is not None
    queue.fail(lease, "not a video after all", retry=False)
    prune_jobs(queue, storage, ["detect"], PAST)
    assert archived_job(storage, record.job_id) is not None
    assert reconcile(storage, queue) == []  # failed stays failed, archived or not
