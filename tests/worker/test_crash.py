"""Crash tests: worker processes killed with kill -9 while they hold a job.

Real Redis (db 14), real worker processes with the real queue, leases and heartbeats.
The last test kills a detect worker while it adds a video's frames to the pool.
Every job must finish, each exactly once in the results. The first test's workers
run a slow stand-in detection (``tests/worker/standin_worker.py``) whose pace lets the
test count publications; the second runs ``atcon worker detect`` itself.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from tests import media
from tests.processes import Process, wait_for
from tests.redis_helpers import DB_CRASH, flushed_db
from worker.queue.interface import JobState
from worker.queue.redis_streams import RedisQueue
from worker.settings import Settings
from worker.storage import Storage, VideoRecord, new_id

pytestmark = [pytest.mark.redis, pytest.mark.slow]

VIDEOS = 4


def queue_videos(settings: Settings, count: int, data: bytes) -> tuple[list[str], RedisQueue]:
    storage = Storage(settings.data_dir)
    storage.ensure_layout()
    queue = RedisQueue(settings)
    ids = []
    for _ in range(count):
        received = storage.new_upload_file()
        received.write_bytes(data)
        record = VideoRecord(video_id=new_id(), job_id=new_id(), size_bytes=len(data))
        storage.save_video(record, received)
        queue.enqueue("detect", {"video_id": record.video_id}, job_id=record.job_id)
        ids.append(record.job_id)
    return ids, queue


def kill_a_busy_worker(queue: RedisQueue, workers: dict[str, Process], job_ids: list[str]):
    """Wait until some job is part-way through, kill -9 its worker; return (job, name)."""

    def busy():
        for job_id in job_ids:
            job = queue.get(job_id)
            if job.status is JobState.running and 0.2 <= job.progress < 0.9:
                return job
        return None

    job = wait_for(busy, 120, "a job part-way through")
    victim = job.worker
    workers[victim].kill9()
    return job.job_id, victim


def check_every_job_done_once(queue, settings, job_ids, killed_job, victim, survivor):
    jobs = {job_id: queue.get(job_id) for job_id in job_ids}
    assert all(j.status is JobState.done for j in jobs.values()), [j.error for j in jobs.values()]
    assert jobs[killed_job].attempts == 2
    assert jobs[killed_job].worker == survivor
    assert queue.stats("detect").duration_count == len(job_ids)  # completed once each
    storage = Storage(settings.data_dir)
    assert sorted(p.name for p in storage.results.iterdir()) == sorted(
        j.payload["video_id"] for j in jobs.values()
    )
    for job in jobs.values():
        events = storage.read_events(job.payload["video_id"])
        assert events is not None
    return jobs


def test_killed_worker_jobs_finish_exactly_once(tmp_path):
    with flushed_db(DB_CRASH) as url:
        env = {
            "ATCON_REDIS_URL": url,
            "ATCON_DATA_DIR": str(tmp_path / "data"),
            "ATCON_VISIBILITY_TIMEOUT_S": "1.5",
            "ATCON_HEARTBEAT_INTERVAL_S": "0.3",
            "ATCON_RETRY_BACKOFF_S": "0.1",
            "ATCON_QUEUE_PREFIX": "crash",
        }
        settings = Settings(**{k[6:].lower(): v for k, v in env.items()})  # type: ignore[arg-type]
        job_ids, queue = queue_videos(settings, VIDEOS, b"stand-in video bytes")
        workers = {
            name: Process(
                ["tests.worker.standin_worker", name, "0.15"], env, tmp_path / f"{name}.log"
            ).start()
            for name in ("worker-a", "worker-b")
        }
        try:
            killed_job, victim = kill_a_busy_worker(queue, workers, job_ids)
            survivor = next(n for n in workers if n != victim)

            def all_done():
                return all(queue.get(j).status is JobState.done for j in job_ids)

            wait_for(all_done, 120, "every job done after the kill")
            check_every_job_done_once(queue, settings, job_ids, killed_job, victim, survivor)
            publications = Counter(
                line.split()[0]
                for line in (settings.data_dir / "publications.log").read_text().splitlines()
            )
            assert publications == Counter(dict.fromkeys(job_ids, 1))
            for job_id in job_ids:
                video_id = queue.get(job_id).payload["video_id"]
                events = Storage(settings.data_dir).read_events(video_id)
                assert events["video_id"] == video_id
            assert workers[survivor].stop() == 0, workers[survivor].output()
        finally:
            for worker in workers.values():
                worker.stop()
            queue.close()


def test_killed_detect_worker_jobs_finish_exactly_once(tmp_path):
    from tests.service.test_health import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "model.pt", arch="resnet18")
    data = media.video_bytes(frames=240, size=(160, 120), fps=4)  # 60 s at 2 samples/s
    with flushed_db(DB_CRASH) as url:
        env = {
            "ATCON_REDIS_URL": url,
            "ATCON_DATA_DIR": str(tmp_path / "data"),
            "ATCON_CHECKPOINT": str(checkpoint),
            "ATCON_VISIBILITY_TIMEOUT_S": "3",
            "ATCON_HEARTBEAT_INTERVAL_S": "0.5",
            "ATCON_BATCH_SIZE": "4",
            "ATCON_QUEUE_PREFIX": "crash",
        }
        settings = Settings(**{k[6:].lower(): v for k, v in env.items()})  # type: ignore[arg-type]
        job_ids, queue = queue_videos(settings, 3, data)
        workers = {
            name: Process(
                ["service.cli", "worker", "detect", "--name", name], env, tmp_path / f"{name}.log"
            ).start()
            for name in ("worker-a", "worker-b")
        }
        try:
            killed_job, victim = kill_a_busy_worker(queue, workers, job_ids)
            survivor = next(n for n in workers if n != victim)
            wait_for(
                lambda: all(queue.get(j).status is JobState.done for j in job_ids),
                300,
                "every job done after the kill",
            )
            jobs = check_every_job_done_once(queue, settings, job_ids, killed_job, victim, survivor)
            for job in jobs.values():
                video_id = job.payload["video_id"]
                content = json.dumps(Storage(settings.data_dir).read_events(video_id))
                assert video_id in content
        finally:
            for worker in workers.values():
                worker.stop()
            queue.close()


def test_worker_killed_while_sampling_the_pool_adds_each_frame_once(tmp_path):
    """kill -9 while a detect worker adds a video's frames to the pool: the retried job
    finds the frames added before the kill, so each (video, time) is in the pool once,
    and no moment can land in both the training and the validation split."""
    from tests.service.test_health import tiny_checkpoint
    from worker.pool.frames import FramePool

    checkpoint = tiny_checkpoint(tmp_path / "model.pt", arch="resnet18")
    data = media.video_bytes(frames=240, size=(160, 120), fps=4)  # 60 s
    with flushed_db(DB_CRASH) as url:
        env = {
            "ATCON_REDIS_URL": url,
            "ATCON_DATA_DIR": str(tmp_path / "data"),
            "ATCON_CHECKPOINT": str(checkpoint),
            "ATCON_VISIBILITY_TIMEOUT_S": "3",
            "ATCON_HEARTBEAT_INTERVAL_S": "0.5",
            "ATCON_SAMPLE_FPS": "4",
            "ATCON_POOL_FRAMES_PER_MINUTE": "240",  # every sampled frame: a long step
            "ATCON_QUEUE_PREFIX": "crash",
        }
        settings = Settings(**{k[6:].lower(): v for k, v in env.items()})  # type: ignore[arg-type]
        [job_id], queue = queue_videos(settings, 1, data)
        video_id = queue.get(job_id).payload["video_id"]
        frames = settings.data_dir / "frames"
        first = Process(
            ["service.cli", "worker", "detect", "--name", "first"], env, tmp_path / "first.log"
        ).start()
        second: Process | None = None
        try:

            def sampling() -> int:
                added = sum(1 for _ in frames.glob("*.json")) if frames.is_dir() else 0
                running = queue.get(job_id).status is JobState.running
                return added if added and running else 0

            before_kill = wait_for(sampling, 180, "the worker adding frames", poll_s=0.005)
            first.kill9()
            added_by_first = sum(1 for _ in frames.glob("*.json"))
            second = Process(
                ["service.cli", "worker", "detect", "--name", "second"], env, tmp_path / "s.log"
            ).start()
            wait_for(
                lambda: queue.get(job_id).status is JobState.done, 180, "the job done by another"
            )
            job = queue.get(job_id)
            assert job.attempts == 2 and job.worker == "second"
            records = FramePool(frames).records(video_ids=[video_id])
            times = Counter(r.time_s for r in records)
            assert times and max(times.values()) == 1, "a moment added twice"
            with np.load(settings.data_dir / "results" / video_id / "scores.npz") as scores:
                times_s = scores["times"]
            minutes = (float(times_s[-1]) - float(times_s[0])) / 60.0
            sampled = max(1, min(len(times_s), round(minutes * 240)))  # as the pool samples
            assert len(records) == sampled  # every sampled time once: none lost, none twice
            assert 0 < before_kill <= added_by_first < len(records), (
                "the kill did not land inside the sampling step"
            )
        finally:
            first.stop()
            if second is not None:
                second.stop()
            queue.close()
