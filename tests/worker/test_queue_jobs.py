"""``JobQueue.jobs``: the recent jobs of one kind in any state (the models page lists the
fine-tunes with it); the Redis queue on a real server (db 8) and the memory queue."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.redis_helpers import DB_PAGES, flushed_db
from worker.queue.factory import open_queue
from worker.queue.interface import JobQueue, JobState
from worker.settings import Settings


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def queue(request: pytest.FixtureRequest, tmp_path) -> Iterator[JobQueue]:
    url = None
    if request.param == "redis":
        context = flushed_db(DB_PAGES)
        url = context.__enter__()
        request.addfinalizer(lambda: context.__exit__(None, None, None))
    opened = open_queue(
        Settings(data_dir=tmp_path, redis_url=url, queue_prefix="pages", retry_backoff_s=0)
    )
    yield opened
    opened.close()


def test_jobs_of_a_kind_newest_first_in_every_state(queue: JobQueue):
    ids = []
    for index in range(4):
        ids.append(queue.enqueue("finetune", {"n": index}).job_id)
        time.sleep(0.01)  # distinct creation times (the Redis server's clock)
    queue.enqueue("detect", {"video_id": "x"})
    done = queue.reserve("finetune", "w", timeout_s=1)
    assert done is not None
    queue.complete(done, {"version": "v0002"})
    failed = queue.reserve("finetune", "w", timeout_s=1)
    assert failed is not None
    queue.fail(failed, "no frames", retry=False)
    running = queue.reserve("finetune", "w", timeout_s=1)
    assert running is not None

    listed = queue.jobs("finetune")
    assert [job.job_id for job in listed] == ids[::-1]
    states = {job.job_id: job.status for job in listed}
    assert states[done.job_id] is JobState.done
    assert states[failed.job_id] is JobState.failed
    assert states[running.job_id] is JobState.running
    assert states[ids[3]] is JobState.queued
    assert [job.job_id for job in queue.jobs("finetune", limit=2)] == ids[:1:-1]
    assert {job.kind for job in queue.jobs("detect")} == {"detect"}
    assert queue.jobs("nothing") == []
    with pytest.raises(ValueError, match="limit"):
        queue.jobs("finetune", limit=0)
