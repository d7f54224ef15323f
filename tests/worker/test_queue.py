"""The JobQueue contract, held by the Redis queue (real server, db 11) and the memory queue."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.redis_helpers import DB_QUEUE, flushed_db, free_port
from worker._exceptions import JobNotFoundError, QueueError, QueueUnavailableError
from worker.queue.factory import open_queue
from worker.queue.interface import JobQueue, JobState
from worker.queue.memory import MemoryQueue
from worker.queue.redis_streams import RedisQueue
from worker.settings import Settings

VISIBILITY = 0.6
BACKOFF = 0.3

MakeQueue = Callable[..., JobQueue]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_queue(request: pytest.FixtureRequest, tmp_path) -> Iterator[MakeQueue]:
    opened: list[JobQueue] = []
    url: str | None = None
    if request.param == "redis":
        context = flushed_db(DB_QUEUE)
        url = context.__enter__()
        request.addfinalizer(lambda: context.__exit__(None, None, None))

    def make(**overrides: object) -> JobQueue:
        values: dict[str, object] = {
            "data_dir": tmp_path,
            "redis_url": url,
            "visibility_timeout_s": VISIBILITY,
            "retry_backoff_s": BACKOFF,
            "retry_backoff_max_s": 10 * BACKOFF,
            "max_attempts": 3,
            "queue_prefix": "qt",
        }
        values.update(overrides)
        queue = open_queue(Settings(**values))  # type: ignore[arg-type]
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.close()


def wait_reserve(queue: JobQueue, consumer: str, limit_s: float = 10.0):
    """Reserve, retrying until a job comes or ``limit_s`` passes (never a timing assert)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        lease = queue.reserve("detect", consumer, timeout_s=0.2)
        if lease is not None:
            return lease
    return None


def test_open_queue_picks_the_implementation(tmp_path):
    assert isinstance(open_queue(Settings(data_dir=tmp_path)), MemoryQueue)
    queue = open_queue(Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/11"))
    assert isinstance(queue, RedisQueue)
    queue.close()


def test_round_trip(make_queue: MakeQueue):
    queue = make_queue()
    job = queue.enqueue("detect", {"video_id": "v1"})
    assert job.status is JobState.queued and job.attempts == 0 and job.created_at > 0
    assert queue.counts("detect")[JobState.queued] == 1
    assert queue.depth("detect") == 1

    lease = queue.reserve("detect", "w1", timeout_s=2)
    assert lease is not None and lease.job_id == job.job_id
    assert lease.job.payload == {"video_id": "v1"}
    running = queue.get(job.job_id)
    assert running.status is JobState.running and running.attempts == 1
    assert running.worker == "w1" and running.started_at is not None

    assert queue.set_progress(lease, 0.25)
    assert queue.get(job.job_id).progress == pytest.approx(0.25)
    assert queue.complete(lease, {"event_count": 3}, frames=120)
    done = queue.get(job.job_id)
    assert done.status is JobState.done and done.progress == 1.0
    assert done.result == {"event_count": 3} and done.finished_at is not None
    assert queue.counts("detect") == {
        JobState.queued: 0,
        JobState.running: 0,
        JobState.done: 1,
        JobState.failed: 0,
    }
    stats = queue.stats("detect")
    assert stats.duration_count == 1 and stats.frames_total == 120
    assert stats.buckets[3600] == 1
    assert queue.reserve("detect", "w1", timeout_s=0.1) is None


def test_jobs_of_other_kinds_are_not_handed_out(make_queue: MakeQueue):
    queue = make_queue()
    queue.enqueue("finetune", {})
    assert queue.reserve("detect", "w1", timeout_s=0.1) is None
    assert queue.reserve("finetune", "w1", timeout_s=1) is not None


def test_unknown_job(make_queue: MakeQueue):
    with pytest.raises(JobNotFoundError):
        make_queue().get("0" * 32)


def test_duplicate_job_id_is_refused(make_queue: MakeQueue):
    queue = make_queue()
    queue.enqueue("detect", {}, job_id="a" * 32)
    with pytest.raises(QueueError, match="exists"):
        queue.enqueue("detect", {}, job_id="a" * 32)


def test_silent_worker_loses_its_job_after_the_visibility_timeout(make_queue: MakeQueue):
    queue = make_queue()
    job = queue.enqueue("detect", {"video_id": "v"})
    first = queue.reserve("detect", "dead-worker", timeout_s=2)
    assert first is not None
    assert queue.reserve("detect", "w2", timeout_s=0.05) is None  # still within its lease

    second = wait_reserve(queue, "w2")
    assert second is not None and second.job_id == job.job_id
    taken = queue.get(job.job_id)
    assert taken.attempts == 2 and taken.worker == "w2"
    assert "no heartbeat" in (taken.error or "")

    # the first worker comes back: it can neither progress, fail nor complete the job
    assert not queue.heartbeat(first)
    assert not queue.set_progress(first, 0.5)
    assert queue.fail(first, "late failure") is None
    assert not queue.complete(first, {"by": "first"})
    assert queue.complete(second, {"by": "second"})
    assert queue.get(job.job_id).result == {"by": "second"}
    assert queue.counts("detect")[JobState.done] == 1


def test_heartbeats_keep_the_lease(make_queue: MakeQueue):
    queue = make_queue()
    queue.enqueue("detect", {})
    lease = queue.reserve("detect", "w1", timeout_s=2)
    assert lease is not None
    end = time.monotonic() + 3 * VISIBILITY
    while time.monotonic() < end:
        assert queue.heartbeat(lease)
        assert queue.reserve("detect", "w2", timeout_s=VISIBILITY / 4) is None
    assert queue.complete(lease)


def test_failure_is_retried_after_a_backoff(make_queue: MakeQueue):
    queue = make_queue()
    job = queue.enqueue("detect", {})
    lease = queue.reserve("detect", "w1", timeout_s=2)
    assert lease is not None
    assert queue.fail(lease, "disk full") is JobState.queued
    waiting = queue.get(job.job_id)
    assert waiting.status is JobState.queued and waiting.error == "disk full"
    assert queue.depth("detect") == 1

    again = wait_reserve(queue, "w1")
    assert again is not None and again.job.attempts == 2
    assert queue.complete(again)
    assert queue.get(job.job_id).error is None


def test_retry_delay_doubles_and_is_capped():
    settings = Settings(retry_backoff_s=2, retry_backoff_max_s=5)
    assert [settings.retry_delay(a) for a in (1, 2, 3, 4)] == [2, 4, 5, 5]
    with pytest.raises(ValueError, match="attempt"):
        settings.retry_delay(0)


def test_max_attempts_then_dead_letter_then_requeue(make_queue: MakeQueue):
    queue = make_queue(max_attempts=2, retry_backoff_s=0.05)
    job = queue.enqueue("detect", {"video_id": "v"})
    first = wait_reserve(queue, "w")
    assert first is not None
    assert queue.fail(first, "boom 1") is JobState.queued
    second = wait_reserve(queue, "w")
    assert second is not None
    assert queue.fail(second, "boom 2") is JobState.failed

    failed = queue.get(job.job_id)
    assert failed.status is JobState.failed and failed.error == "boom 2"
    assert failed.attempts == 2 and failed.finished_at is not None
    assert [j.job_id for j in queue.dead_letters("detect")] == [job.job_id]
    assert queue.reserve("detect", "w", timeout_s=0.2) is None

    requeued = queue.requeue(job.job_id)
    assert requeued.status is JobState.queued and requeued.attempts == 0
    assert requeued.error is None
    assert queue.dead_letters("detect") == []
    third = wait_reserve(queue, "w")
    assert third is not None and queue.complete(third)
    with pytest.raises(QueueError, match="only a failed job"):
        queue.requeue(job.job_id)


def test_permanent_failure_is_not_retried(make_queue: MakeQueue):
    queue = make_queue()
    job = queue.enqueue("detect", {})
    lease = queue.reserve("detect", "w", timeout_s=2)
    assert lease is not None
    assert queue.fail(lease, "not a video", retry=False) is JobState.failed
    assert queue.get(job.job_id).attempts == 1
    assert [j.job_id for j in queue.dead_letters("detect")] == [job.job_id]


def test_a_worker_dying_on_the_last_attempt_dead_letters_the_job(make_queue: MakeQueue):
    queue = make_queue(max_attempts=1)
    job = queue.enqueue("detect", {})
    assert queue.reserve("detect", "dies", timeout_s=2) is not None
    # the holder never returns; after the timeout nobody gets the job, it is failed
    deadline = time.monotonic() + 3 * VISIBILITY
    while time.monotonic() < deadline:
        assert queue.reserve("detect", "w2", timeout_s=0.2) is None
    assert queue.reserve("detect", "w2", timeout_s=0.2) is None
    failed = queue.get(job.job_id)
    assert failed.status is JobState.failed
    assert "no heartbeat" in (failed.error or "")
    assert [j.job_id for j in queue.dead_letters("detect")] == [job.job_id]


def test_deleted_job_is_dropped(make_queue: MakeQueue):
    queue = make_queue()
    kept = queue.enqueue("detect", {"n": 1})
    gone = queue.enqueue("detect", {"n": 2})
    queue.delete(gone.job_id)
    with pytest.raises(JobNotFoundError):
        queue.get(gone.job_id)
    lease = queue.reserve("detect", "w", timeout_s=2)
    assert lease is not None and lease.job_id == kept.job_id
    assert queue.reserve("detect", "w", timeout_s=0.2) is None

    queue.delete(kept.job_id)  # while held: the holder's complete is refused
    assert not queue.complete(lease)
    queue.delete(kept.job_id)  # deleting twice is fine


def test_progress_must_be_a_fraction(make_queue: MakeQueue):
    queue = make_queue()
    queue.enqueue("detect", {})
    lease = queue.reserve("detect", "w", timeout_s=2)
    assert lease is not None
    with pytest.raises(ValueError, match="fraction"):
        queue.set_progress(lease, 1.5)


def test_progress_detail_is_kept_with_the_job(make_queue: MakeQueue):
    queue = make_queue()
    job = queue.enqueue("finetune", {})
    lease = queue.reserve("finetune", "w", timeout_s=2)
    assert lease is not None and queue.get(job.job_id).detail is None
    assert queue.set_progress(lease, 0.25, {"step": 5, "steps": 20, "losses": {"atcon": -0.5}})
    stored = queue.get(job.job_id)
    assert stored.progress == 0.25
    assert stored.detail == {"step": 5, "steps": 20, "losses": {"atcon": -0.5}}


@pytest.mark.redis
def test_unreachable_redis_raises_queue_unavailable(tmp_path):
    settings = Settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/11")
    queue = RedisQueue(settings)
    with pytest.raises(QueueUnavailableError, match="cannot be reached"):
        queue.ping()
    with pytest.raises(QueueUnavailableError):
        queue.enqueue("detect", {})
    queue.close()


@pytest.mark.redis
def test_jobs_survive_a_new_queue_object(tmp_path):
    """Another process (a new connection) sees and takes what the first queued."""
    with flushed_db(DB_QUEUE) as url:
        settings = Settings(data_dir=tmp_path, redis_url=url, queue_prefix="qt")
        producer, consumer = RedisQueue(settings), RedisQueue(settings)
        job = producer.enqueue("detect", {"video_id": "x"})
        lease = consumer.reserve("detect", "other", timeout_s=2)
        assert lease is not None and lease.job_id == job.job_id
        assert consumer.complete(lease)
        assert producer.get(job.job_id).status is JobState.done
        producer.close()
        consumer.close()


def test_cancel_fails_a_queued_job_and_flags_a_running_one(make_queue: MakeQueue):
    queue = make_queue()
    waiting = queue.enqueue("detect", {"video_id": "w"})
    assert queue.cancel(waiting.job_id, "cancelled by admin") is JobState.failed
    stopped = queue.get(waiting.job_id)
    assert stopped.status is JobState.failed and stopped.error == "cancelled by admin"
    assert [j.job_id for j in queue.dead_letters("detect")] == [waiting.job_id]
    with pytest.raises(QueueError, match="nothing to cancel"):
        queue.cancel(waiting.job_id, "again")
    with pytest.raises(JobNotFoundError):
        queue.cancel("0" * 32, "x")

    running = queue.enqueue("detect", {"video_id": "r"})
    lease = wait_reserve(queue, "w1")
    assert lease is not None and lease.job_id == running.job_id  # the cancelled one is skipped
    assert queue.cancel_requested(running.job_id) is None
    assert queue.cancel(running.job_id, "cancelled by admin") is JobState.running
    assert queue.get(running.job_id).cancel == "cancelled by admin"
    assert queue.cancel_requested(running.job_id) == "cancelled by admin"
    # its worker dies before it notices: the next delivery fails it instead of running it
    assert wait_reserve(queue, "w2", limit_s=3 * VISIBILITY) is None
    dead = queue.get(running.job_id)
    assert dead.status is JobState.failed and dead.error == "cancelled by admin"
    # requeue undoes a cancellation
    assert queue.requeue(running.job_id).cancel is None
    again = wait_reserve(queue, "w3")
    assert again is not None and queue.complete(again)


def test_backlog_counts_waiting_and_pending_jobs(make_queue: MakeQueue):
    """The queue lag /metrics exports: on Redis read from the stream (XINFO, XPENDING)."""
    queue = make_queue()
    assert queue.backlog("detect").waiting == 0 and queue.backlog("detect").pending == 0
    for _ in range(3):
        queue.enqueue("detect", {})
    backlog = queue.backlog("detect")
    assert (backlog.waiting, backlog.pending) == (3, 0)
    if isinstance(queue, RedisQueue):
        assert backlog.oldest_wait_s is not None and backlog.oldest_wait_s >= 0
    lease = wait_reserve(queue, "w")
    assert lease is not None
    assert (queue.backlog("detect").waiting, queue.backlog("detect").pending) == (2, 1)
    assert [job.job_id for job in queue.running("detect")] == [lease.job_id]
    assert queue.complete(lease)
    backlog = queue.backlog("detect")
    assert (backlog.waiting, backlog.pending) == (2, 0)
    assert queue.running("detect") == []
    for _ in range(2):
        assert queue.complete(wait_reserve(queue, "w"))
    backlog = queue.backlog("detect")
    assert (backlog.waiting, backlog.pending, backlog.oldest_wait_s) == (0, 0, None)
