"""The embedded default's queue: the :class:`~worker.queue.interface.JobQueue` contract in memory.

``atcon serve`` without ``ATCON_REDIS_URL`` runs the API and its worker threads in
one process around one ``MemoryQueue``. It keeps the same semantics as the Redis
queue (leases, heartbeats, visibility timeout, retries with backoff, dead letters),
so the same tests hold for both and a worker thread that hangs loses its job like a
killed worker would. Its state dies with the process; on start the service queues
again every upload without results (the data directory is the source of truth).
"""

from __future__ import annotations

import copy
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._exceptions import JobNotFoundError, QueueError
from ..settings import Settings
from ..storage import new_id
from .interface import DURATION_BUCKETS, Job, JobQueue, JobState, JobStats, Lease

__all__ = ["MemoryQueue"]


@dataclass
class _Held:
    token: str
    consumer: str
    expires: float


class MemoryQueue(JobQueue):
    """Thread-safe in-process queue; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._lock = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._ready: dict[str, deque[str]] = {}
        self._delayed: list[tuple[float, str]] = []
        self._held: dict[str, _Held] = {}
        self._dead: dict[str, list[str]] = {}
        self._stats: dict[str, JobStats] = {}
        self._deliveries = itertools.count(1)

    def _copy(self, job: Job) -> Job:
        return copy.deepcopy(job)

    def enqueue(self, kind: str, payload: Mapping[str, Any], *, job_id: str | None = None) -> Job:
        job_id = job_id or new_id()
        with self._lock:
            if job_id in self._jobs:
                raise QueueError(f"job {job_id} exists already")
            job = Job(job_id, kind, dict(payload), created_at=time.time())
            self._jobs[job_id] = job
            self._ready.setdefault(kind, deque()).append(job_id)
            self._lock.notify_all()
            return self._copy(job)

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFoundError(f"no job {job_id}")
            return self._copy(job)

    def finished(self, kind: str) -> list[Job]:
        ended = (JobState.done, JobState.failed)
        with self._lock:
            return [
                self._copy(job)
                for job in self._jobs.values()
                if job.kind == kind and job.status in ended
            ]

    def jobs(self, kind: str, limit: int = 50) -> list[Job]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._lock:
            found = [job for job in self._jobs.values() if job.kind == kind]
            found.sort(key=lambda job: (job.created_at, job.job_id), reverse=True)
            return [self._copy(job) for job in found[:limit]]

    def _housekeep(self, now: float) -> None:
        """Move due retries and expired leases back to the ready queues (lock held)."""
        while self._delayed and self._delayed[0][0] <= now:
            _, job_id = heapq.heappop(self._delayed)
            job = self._jobs.get(job_id)
            if job is not None and job.status is JobState.queued:
                self._ready.setdefault(job.kind, deque()).append(job_id)
        for job_id, held in list(self._held.items()):
            if held.expires <= now:
                del self._held[job_id]
                job = self._jobs.get(job_id)
                if job is None:
                    continue
                job.error = (
                    f"attempt {job.attempts} stopped: its worker {held.consumer} sent no "
                    "heartbeat within the visibility timeout"
                )
                self._ready.setdefault(job.kind, deque()).appendleft(job_id)

    def _next_wakeup(self, now: float, deadline: float) -> float:
        times = [deadline]
        if self._delayed:
            times.append(self._delayed[0][0])
        times.extend(h.expires for h in self._held.values())
        return max(0.0, min(times) - now)

    def reserve(self, kind: str, consumer: str, timeout_s: float) -> Lease | None:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                now_wall, now = time.time(), time.monotonic()
                self._housekeep(now)
                ready = self._ready.get(kind)
                while ready:
                    job_id = ready.popleft()
                    lease = self._start(job_id, consumer, now, now_wall)
                    if lease is not None:
                        return lease
                if now >= deadline:
                    return None
                self._lock.wait(self._next_wakeup(now, deadline))

    def _start(self, job_id: str, consumer: str, now: float, now_wall: float) -> Lease | None:
        job = self._jobs.get(job_id)
        if job is None or job.status in (JobState.done, JobState.failed):
            return None
        if job.cancel is not None:  # cancelled while running, its worker gone since
            self._finish_failed(job, job.cancel, now_wall)
            return None
        if job.attempts >= self.settings.max_attempts:
            self._finish_failed(job, job.error or "too many attempts", now_wall)
            return None
        job.attempts += 1
        job.status = JobState.running
        job.started_at = now_wall
        job.worker = consumer
        job.progress = 0.0
        token = f"{consumer}/{next(self._deliveries)}/{job.attempts}"
        self._held[job_id] = _Held(token, consumer, now + self.settings.visibility_timeout_s)
        return Lease(self._copy(job), consumer, token)

    def _finish_failed(self, job: Job, error: str, now_wall: float) -> None:
        job.status = JobState.failed
        job.error = error
        job.finished_at = now_wall
        self._dead.setdefault(job.kind, []).insert(0, job.job_id)

    def _holds(self, lease: Lease) -> bool:
        held = self._held.get(lease.job_id)
        return held is not None and held.token == lease.token

    def heartbeat(self, lease: Lease) -> bool:
        with self._lock:
            if not self._holds(lease):
                return False
            self._held[lease.job_id].expires = time.monotonic() + self.settings.visibility_timeout_s
            return True

    def set_progress(
        self, lease: Lease, fraction: float, detail: Mapping[str, Any] | None = None
    ) -> bool:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        with self._lock:
            if not self._holds(lease):
                return False
            job = self._jobs[lease.job_id]
            job.progress = round(fraction, 4)
            if detail is not None:
                job.detail = copy.deepcopy(dict(detail))
            return True

    def complete(
        self, lease: Lease, result: Mapping[str, Any] | None = None, *, frames: int = 0
    ) -> bool:
        with self._lock:
            if not self._holds(lease):
                return False
            del self._held[lease.job_id]
            job = self._jobs[lease.job_id]
            now = time.time()
            job.status = JobState.done
            job.progress = 1.0
            job.finished_at = now
            job.result = dict(result or {})
            job.error = None
            took = max(0.0, now - (job.started_at or now))
            stats = self._stats.setdefault(job.kind, JobStats())
            stats.duration_sum += took
            stats.duration_count += 1
            stats.frames_total += int(frames)
            for bound in DURATION_BUCKETS:
                if took <= bound:
                    stats.buckets[bound] = stats.buckets.get(bound, 0) + 1
            return True

    def fail(self, lease: Lease, error: str, *, retry: bool = True) -> JobState | None:
        with self._lock:
            if not self._holds(lease):
                return None
            del self._held[lease.job_id]
            job = self._jobs[lease.job_id]
            if retry and job.attempts < self.settings.max_attempts:
                job.status = JobState.queued
                job.error = error
                job.progress = 0.0
                due = time.monotonic() + self.retry_delay(job.attempts)
                heapq.heappush(self._delayed, (due, job.job_id))
                self._lock.notify_all()
                return JobState.queued
            self._finish_failed(job, error, time.time())
            return JobState.failed

    def dead_letters(self, kind: str) -> list[Job]:
        with self._lock:
            return [self._copy(self._jobs[i]) for i in self._dead.get(kind, []) if i in self._jobs]

    def requeue(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFoundError(f"no job {job_id}")
            if job.status is not JobState.failed:
                raise QueueError(
                    f"job {job_id} is {job.status.value}; only a failed job can be requeued"
                )
            dead = self._dead.get(job.kind, [])
            if job_id in dead:
                dead.remove(job_id)
            job.status = JobState.queued
            job.attempts = 0
            job.progress = 0.0
            job.error = job.result = job.started_at = job.finished_at = job.worker = None
            job.cancel = None
            self._ready.setdefault(job.kind, deque()).append(job_id)
            self._lock.notify_all()
            return self._copy(job)

    def cancel(self, job_id: str, reason: str) -> JobState:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFoundError(f"no job {job_id}")
            if job.status in (JobState.done, JobState.failed):
                raise QueueError(f"job {job_id} is {job.status.value} already; nothing to cancel")
            if job.status is JobState.queued:
                self._finish_failed(job, reason, time.time())
                return JobState.failed
            job.cancel = reason
            return JobState.running

    def cancel_requested(self, job_id: str) -> str | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.cancel if job is not None else None

    def delete(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.pop(job_id, None)
            self._held.pop(job_id, None)
            if job is not None and job_id in self._dead.get(job.kind, []):
                self._dead[job.kind].remove(job_id)

    def counts(self, kind: str) -> dict[JobState, int]:
        with self._lock:
            counts = dict.fromkeys(JobState, 0)
            for job in self._jobs.values():
                if job.kind == kind:
                    counts[job.status] += 1
            return counts

    def stats(self, kind: str) -> JobStats:
        with self._lock:
            stats = copy.deepcopy(self._stats.get(kind, JobStats()))
        stats.buckets = {b: stats.buckets.get(b, 0) for b in DURATION_BUCKETS}
        return stats

    def ping(self) -> None:
        return None
