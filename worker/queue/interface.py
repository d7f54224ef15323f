"""The job queue: one interface, a Redis implementation and an in-process one.

A job is a small record (``Job``) that names a kind (``"detect"``, ``"finetune"``)
and a payload of ids; the work itself reads and writes the data directory. Delivery
is at least once:

* ``reserve`` hands a job to one consumer under a *lease*; the consumer calls
  ``heartbeat`` while it works. A lease whose holder sent no heartbeat for the
  visibility timeout (the process was killed, the machine lost power) expires, and
  the next ``reserve`` anywhere hands the job out again.
* ``complete`` and ``fail`` act only while the lease is still held: a worker that
  lost its lease (it stalled, another took over) cannot overwrite the new holder's
  state. Results are keyed by video and published in one rename, so a job done
  twice writes the same results once.
* ``fail(retry=True)`` puts the job back after a delay ``b * 2**(attempt-1)``
  (capped); after ``max_attempts`` attempts (a crash counts as one) the job is
  ``failed`` with its last error and its id goes to the kind's dead-letter list,
  where ``dead_letters`` lists it and ``requeue`` starts it afresh.
* ``cancel`` fails a queued job at once (it goes to the dead letters like any failed
  job, so ``requeue`` undoes it); a running job's worker sees the cancellation at its
  next progress report and fails the job itself, leaving nothing half-written.

``open_queue(settings)`` gives the Redis implementation when ``ATCON_REDIS_URL`` is
set (:mod:`worker.queue.redis_streams`, the deployment broker: any number of workers on any
number of machines) and the process-wide in-memory one otherwise
(:mod:`worker.queue.memory`, the embedded default, whose state the data directory
rebuilds on start).
"""

from __future__ import annotations

import abc
import enum
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import JobNotFoundError, QueueError, QueueUnavailableError
from ..settings import Settings

__all__ = [
    "DURATION_BUCKETS",
    "Backlog",
    "Job",
    "JobNotFoundError",
    "JobQueue",
    "JobState",
    "JobStats",
    "Lease",
    "QueueError",
    "QueueUnavailableError",
]

#: upper bounds (seconds) of the job-duration histogram's buckets; +Inf is implied
DURATION_BUCKETS: tuple[int, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class JobState(enum.StrEnum):
    """Where a job is. A job waiting for a retry is ``queued`` with its last ``error``."""

    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


@dataclass
class Job:
    job_id: str
    kind: str
    payload: dict[str, Any]
    status: JobState = JobState.queued
    progress: float = 0.0
    error: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    result: dict[str, Any] | None = None
    worker: str | None = None
    #: what the running job last said about itself (fine-tune: step, steps, losses)
    detail: dict[str, Any] | None = None
    #: why it was cancelled while running: its worker stops at its next progress report
    cancel: str | None = None


@dataclass(frozen=True)
class Lease:
    """One delivery of a job to one consumer; ``token`` tells deliveries apart."""

    job: Job
    consumer: str
    token: str

    @property
    def job_id(self) -> str:
        return self.job.job_id


@dataclass
class JobStats:
    """Counters of finished jobs of one kind (for ``/metrics``)."""

    duration_sum: float = 0.0
    duration_count: int = 0
    #: bucket upper bound -> jobs that took at most that long (cumulative)
    buckets: dict[int, int] = field(default_factory=dict)
    frames_total: int = 0


@dataclass(frozen=True)
class Backlog:
    """Where one kind's queue stands, for ``/metrics`` (queue lag per stream)."""

    #: jobs waiting that no worker was handed yet (Redis: the consumer group's lag)
    waiting: int
    #: jobs handed to a worker and not yet finished (Redis: the pending entries list)
    pending: int
    #: seconds the oldest waiting job has waited; None when unknown or nothing waits
    oldest_wait_s: float | None = None


class JobQueue(abc.ABC):
    """What the API and the workers need from a queue; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._alive: dict[tuple[str, str], float] = {}
        self._alive_lock = threading.Lock()

    @abc.abstractmethod
    def enqueue(self, kind: str, payload: Mapping[str, Any], *, job_id: str | None = None) -> Job:
        """Add a job; ``job_id`` lets a caller choose the id (it must be new)."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job:
        """The job's current record; ``JobNotFoundError`` when there is none."""

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """The jobs among ``job_ids`` that exist, by id."""
        found = {}
        for job_id in job_ids:
            try:
                found[job_id] = self.get(job_id)
            except JobNotFoundError:
                continue
        return found

    @abc.abstractmethod
    def jobs(self, kind: str, limit: int = 50) -> list[Job]:
        """The ``limit`` most recently created jobs of ``kind`` in any state, newest first."""

    @abc.abstractmethod
    def reserve(self, kind: str, consumer: str, timeout_s: float) -> Lease | None:
        """The next job of ``kind`` for ``consumer``, waiting up to ``timeout_s``."""

    @abc.abstractmethod
    def heartbeat(self, lease: Lease) -> bool:
        """Extend the lease; False when it was lost (the job went to someone else)."""

    @abc.abstractmethod
    def set_progress(
        self, lease: Lease, fraction: float, detail: Mapping[str, Any] | None = None
    ) -> bool:
        """Record progress in [0, 1] (and a small JSON ``detail``); False if the lease was lost."""

    @abc.abstractmethod
    def complete(
        self, lease: Lease, result: Mapping[str, Any] | None = None, *, frames: int = 0
    ) -> bool:
        """Mark the job done; False (and nothing changed) when the lease was lost."""

    @abc.abstractmethod
    def fail(self, lease: Lease, error: str, *, retry: bool = True) -> JobState | None:
        """Record a failed attempt: ``queued`` (retry later), ``failed``, or None if lost."""

    @abc.abstractmethod
    def dead_letters(self, kind: str) -> list[Job]:
        """Failed jobs of ``kind``, newest first."""

    @abc.abstractmethod
    def requeue(self, job_id: str) -> Job:
        """Start a failed job afresh (attempts reset); ``QueueError`` if it is not failed."""

    @abc.abstractmethod
    def cancel(self, job_id: str, reason: str) -> JobState:
        """Cancel a job: a queued one (a retry waiting included) is ``failed`` at once
        with ``reason`` as its error; for a running one the cancellation is recorded and
        ``running`` returned, and its worker fails it at its next progress report (see
        :meth:`cancel_requested`). ``QueueError`` if it is done or failed already."""

    def cancel_requested(self, job_id: str) -> str | None:
        """Why a running job was cancelled, or None."""
        try:
            return self.get(job_id).cancel
        except JobNotFoundError:
            return None

    @abc.abstractmethod
    def delete(self, job_id: str) -> None:
        """Forget a job; a worker holding it finds it gone and drops it."""

    @abc.abstractmethod
    def counts(self, kind: str) -> dict[JobState, int]:
        """Number of jobs of ``kind`` in each state."""

    @abc.abstractmethod
    def stats(self, kind: str) -> JobStats: ...

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise ``QueueUnavailableError`` unless the broker answers."""

    def depth(self, kind: str) -> int:
        """Jobs of ``kind`` waiting for a worker (retries waiting for their delay included)."""
        return self.counts(kind)[JobState.queued]

    def backlog(self, kind: str) -> Backlog:
        """The backlog of ``kind``, from the job counts (a broker may say more)."""
        counts = self.counts(kind)
        return Backlog(waiting=counts[JobState.queued], pending=counts[JobState.running])

    def running(self, kind: str) -> list[Job]:
        """The jobs of ``kind`` a worker holds now."""
        return [job for job in self.jobs(kind, limit=1000) if job.status is JobState.running]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abc.abstractmethod
    def finished(self, kind: str) -> list[Job]:
        """Every job of ``kind`` that is done or failed (for retention; not a hot path)."""

    def mark_alive(self, kind: str, consumer: str, ttl_s: float) -> None:
        """Record that ``consumer`` (a worker of ``kind``) is alive for ``ttl_s`` seconds.

        A worker renews it while it runs, job or no job; a health check reads it with
        :meth:`alive`. The in-memory queue keeps it in memory (its workers are threads
        of the process that asks)."""
        with self._alive_lock:
            self._alive[(kind, consumer)] = time.monotonic() + ttl_s

    def alive(self, kind: str) -> list[str]:
        """The consumers of ``kind`` whose liveness mark has not expired."""
        now = time.monotonic()
        with self._alive_lock:
            return sorted(c for (k, c), until in self._alive.items() if k == kind and until > now)

    def retry_delay(self, attempts: int) -> float:
        return self.settings.retry_delay(max(1, attempts))
