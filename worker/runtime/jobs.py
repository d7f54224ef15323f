"""Queue consumers: a worker process (or thread) that keeps its model loaded between jobs.

A job is an importable function that takes a :class:`JobContext` and the ids in its
payload, and returns a :class:`JobOutcome`; it never receives objects from the API::

    def detect_video(ctx: JobContext, video_id: str) -> JobOutcome   # worker.detection.job

:data:`JOB_KINDS` names each kind's function by its import path, so this module
imports none of them (the reconciler, which queues lost uploads again, is
:mod:`worker.runtime.reconcile`).

:class:`Worker` reserves a job, runs its function in the same process (no fork per
job: the model and the CUDA context stay loaded), sends heartbeats from a side
thread while it runs, forwards the function's progress to the queue, and completes
or fails the job:

* :class:`~worker._exceptions.JobError` and
  :class:`~worker._exceptions.VideoDecodeError` fail the job at once (another
  attempt cannot help);
* any other exception is retried with backoff until ``max_attempts``;
* a worker that lost its lease (it stalled past the visibility timeout and another
  took over) stops at the next progress report and leaves the job to the new holder;
* a job an admin cancelled stops at its next progress report (a fine-tune: the next
  training step) with :class:`~worker._exceptions.JobCancelledError`, and is failed
  with the cancellation as its error (the fine-tune registers no version).

At the start of each job :class:`~worker.serving.model_cache.ModelCache` checks which model
serves the video (the version activated for its camera, else the data directory's
active version; ``ATCON_CHECKPOINT`` is the first version, registered when the worker
starts) and loads it only when it is not loaded.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._exceptions import (
    JobCancelledError,
    JobError,
    LeaseLostError,
    QueueError,
    QueueUnavailableError,
    VideoDecodeError,
)
from ..queue.interface import Job, JobQueue, JobState, Lease
from ..serving.model_cache import ModelCache, ensure_first_version
from ..settings import Settings
from ..storage import Storage

__all__ = [
    "DETECT",
    "FINETUNE",
    "FRAMES",
    "IMPORT",
    "JOB_KINDS",
    "JobContext",
    "JobKind",
    "JobOutcome",
    "LeaseLostError",
    "Worker",
    "worker_name",
]

logger = logging.getLogger(__name__)

DETECT = "detect"
FINETUNE = "finetune"
IMPORT = "import"
#: scoring pool frames and drawing their maps (:mod:`worker.pool.scoring`); detect
#: workers take these jobs too, with the model they hold
FRAMES = "frames"


class ProgressFn(Protocol):
    def __call__(self, fraction: float, detail: Mapping[str, Any] | None = None) -> None: ...


@dataclass
class JobOutcome:
    """What a job function returns: a small JSON result for the job record."""

    result: dict[str, Any] = field(default_factory=dict)
    #: frames the job processed (for the frames-per-second metric)
    frames: int = 0


@dataclass
class JobContext:
    """What a job function gets besides its ids."""

    job: Job
    settings: Settings
    storage: Storage
    models: ModelCache
    #: ``progress(fraction, detail=None)``: fraction of the work done, optional JSON detail
    progress: ProgressFn


@dataclass(frozen=True)
class JobKind:
    """A queue name and the function that runs its jobs (``module:function``)."""

    function: str
    #: the worker waits for a loadable detection model before taking jobs of this kind
    needs_detector: bool = False

    def load(self) -> Callable[..., JobOutcome]:
        module_name, _, attr = self.function.partition(":")
        try:
            module = importlib.import_module(module_name)
            function: Callable[..., JobOutcome] = getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            raise JobError(f"job function {self.function} is not available: {exc}") from exc
        return function


#: every job kind the workers know; the fine-tune job (issue 6) registers here
JOB_KINDS: dict[str, JobKind] = {
    DETECT: JobKind("worker.detection.job:detect_video", needs_detector=True),
    FINETUNE: JobKind("worker.finetune.job:finetune_job"),
    IMPORT: JobKind("worker.pool.importer:import_frames"),
    FRAMES: JobKind("worker.pool.scoring:score_frames", needs_detector=True),
}

#: kinds a worker of a kind takes besides its own, served by the same loaded model
COMPANION_KINDS: dict[str, tuple[str, ...]] = {DETECT: (FRAMES,)}


def worker_name() -> str:
    """A consumer name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


# -- the worker -------------------------------------------------------------------------------


class _Heartbeat:
    """Extends a lease from a side thread while the job runs."""

    def __init__(self, queue: JobQueue, lease: Lease, interval_s: float) -> None:
        self.queue = queue
        self.lease = lease
        self.interval_s = interval_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{lease.job_id[:8]}", daemon=True
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not self.queue.heartbeat(self.lease):
                    logger.warning("job %s: lease lost to another worker", self.lease.job_id)
                    self.lost.set()
                    return
            except QueueError as exc:  # broker away for a moment: keep trying
                logger.warning("job %s: heartbeat failed: %s", self.lease.job_id, exc)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class _Liveness:
    """Marks the worker alive (:meth:`JobQueue.mark_alive`) every heartbeat interval
    from a side thread, for as long as :meth:`Worker.run` runs, job or no job, so a
    health check sees a worker that is stuck or gone, not only a missing file."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.interval_s = worker.settings.heartbeat_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"alive-{worker.name[-6:]}", daemon=True
        )

    def beat(self) -> None:
        for kind in self.worker.kinds:
            self.worker.queue.mark_alive(kind, self.worker.name, 3 * self.interval_s)

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except QueueError as exc:  # the broker away: the mark expires, as it should
                logger.debug("worker %s: liveness not recorded: %s", self.worker.name, exc)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> _Liveness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Worker:
    """Consumes one kind of job; see the module docstring."""

    def __init__(
        self,
        queue: JobQueue,
        storage: Storage,
        settings: Settings,
        kind: str = DETECT,
        *,
        name: str | None = None,
        models: ModelCache | None = None,
        function: Callable[..., JobOutcome] | None = None,
    ) -> None:
        if kind not in JOB_KINDS and function is None:
            raise ValueError(f"kind must be one of {sorted(JOB_KINDS)}, got {kind!r}")
        self.queue = queue
        self.storage = storage
        self.settings = settings
        self.kind = kind
        self.name = name or worker_name()
        ensure_first_version(storage, settings)  # ATCON_CHECKPOINT becomes v0001 if none is active
        self.models = models or ModelCache(storage, settings)
        self._function = function
        #: the kinds this worker takes: its own, then (unless its function was given)
        #: its companions, which need the same model (:data:`COMPANION_KINDS`)
        self.kinds: tuple[str, ...] = (kind,) + (
            () if function is not None else COMPANION_KINDS.get(kind, ())
        )
        self._functions: dict[str, Callable[..., JobOutcome]] = {}
        self.jobs_done = 0

    @property
    def function(self) -> Callable[..., JobOutcome]:
        """The function that runs this worker's own kind of job."""
        return self.function_for(self.kind)

    def function_for(self, kind: str) -> Callable[..., JobOutcome]:
        """The function that runs jobs of ``kind``."""
        if kind == self.kind and self._function is not None:
            return self._function
        if kind not in self._functions:
            self._functions[kind] = JOB_KINDS[kind].load()
        return self._functions[kind]

    def _needs_detector(self) -> bool:
        kind = JOB_KINDS.get(self.kind)
        return self._function is None and kind is not None and kind.needs_detector

    def wait_for_model(self, stop: threading.Event, poll_s: float = 5.0) -> bool:
        """Load the model before taking jobs; wait while there is none. False if stopped."""
        warned = False
        while not stop.is_set():
            try:
                self.models.current()
                return True
            except Exception as exc:  # no model yet, unreadable checkpoint: say so and wait
                if not warned:
                    logger.error("worker %s waits for a model: %s", self.name, exc)
                    warned = True
            stop.wait(poll_s)
        return False

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        max_jobs: int | None = None,
        burst: bool = False,
        poll_s: float = 1.0,
    ) -> int:
        """Work until ``stop`` is set, ``max_jobs`` are done, or (``burst``) the queue is empty.

        Returns the number of jobs this worker finished (done or failed).
        """
        stop = stop or threading.Event()
        with _Liveness(self):
            if self._needs_detector() and not self.wait_for_model(stop):
                return 0
            return self._loop(stop, max_jobs, burst, poll_s)

    def _loop(self, stop: threading.Event, max_jobs: int | None, burst: bool, poll_s: float) -> int:
        logger.info("worker %s takes %s jobs", self.name, ", ".join(self.kinds))
        handled = 0
        unavailable_since: float | None = None
        turn = 0
        while not stop.is_set() and (max_jobs is None or handled < max_jobs):
            lease = None
            try:
                # each kind in turn; an empty queue waits its share of poll_s
                for offset in range(len(self.kinds)):
                    kind = self.kinds[(turn + offset) % len(self.kinds)]
                    lease = self.queue.reserve(kind, self.name, timeout_s=poll_s / len(self.kinds))
                    if lease is not None:
                        break
                turn += 1
            except QueueUnavailableError as exc:
                if unavailable_since is None:
                    logger.error("worker %s: %s; retrying", self.name, exc)
                    unavailable_since = time.monotonic()
                stop.wait(min(5.0, poll_s))
                continue
            if unavailable_since is not None:
                logger.info("worker %s: the queue is reachable again", self.name)
                unavailable_since = None
            if lease is None:
                if burst:
                    break
                continue
            self.execute(lease)
            handled += 1
        return handled

    def execute(self, lease: Lease) -> JobState | None:
        """Run one reserved job to its end; return its new state (None: lease lost)."""
        job = lease.job
        started = time.monotonic()
        logger.info("job %s (%s) attempt %d starts", job.job_id, job.kind, job.attempts)
        with _Heartbeat(self.queue, lease, self.settings.heartbeat_s) as heartbeat:
            ctx = JobContext(
                job=job,
                settings=self.settings,
                storage=self.storage,
                models=self.models,
                progress=self._progress_reporter(lease, heartbeat),
            )
            try:
                function = self.function_for(job.kind)
                try:
                    inspect.signature(function).bind(ctx, **job.payload)
                except TypeError as exc:
                    raise JobError(f"payload {sorted(job.payload)} does not fit: {exc}") from exc
                outcome = function(ctx, **job.payload)
            except LeaseLostError:
                logger.warning("job %s abandoned: another worker holds it now", job.job_id)
                return None
            except JobCancelledError as exc:
                reason = str(exc)
                logger.info("job %s stopped: %s", job.job_id, reason)
                return self._settle(lambda: self.queue.fail(lease, reason, retry=False))
            except (JobError, VideoDecodeError) as exc:
                reason = str(exc)
                logger.error("job %s failed for good: %s", job.job_id, reason)
                return self._settle(lambda: self.queue.fail(lease, reason, retry=False))
            except Exception as exc:
                logger.exception("job %s attempt %d failed", job.job_id, job.attempts)
                message = f"{type(exc).__name__}: {exc}"
                return self._settle(lambda: self.queue.fail(lease, message, retry=True))
            if heartbeat.lost.is_set():
                return None
        took = time.monotonic() - started
        logger.info("job %s done in %.1f s", job.job_id, took)
        self.jobs_done += 1
        done = self._settle(
            lambda: self.queue.complete(lease, outcome.result, frames=outcome.frames)
        )
        return JobState.done if done else None

    def _settle(self, action: Callable[[], Any]) -> Any:
        """Record a job's end, retrying while the broker is away (up to the visibility
        timeout: after that the job is someone else's anyway)."""
        deadline = time.monotonic() + self.settings.visibility_timeout_s
        while True:
            try:
                return action()
            except QueueUnavailableError as exc:
                if time.monotonic() > deadline:
                    logger.error("could not record a job's end: %s", exc)
                    return None
                time.sleep(min(2.0, self.settings.heartbeat_s))

    def _progress_reporter(self, lease: Lease, heartbeat: _Heartbeat) -> ProgressFn:
        last = [0.0, -1.0]  # time of the last report, value reported

        def report(fraction: float, detail: Mapping[str, Any] | None = None) -> None:
            if heartbeat.lost.is_set():
                raise LeaseLostError(lease.job_id)
            fraction = min(1.0, max(0.0, float(fraction)))
            now = time.monotonic()
            if now - last[0] < 0.5 and fraction - last[1] < 0.05 and fraction < 1.0:
                return
            last[0], last[1] = now, fraction
            try:
                if not self.queue.set_progress(lease, fraction, detail):
                    heartbeat.lost.set()
                    raise LeaseLostError(lease.job_id)
                cancelled = self.queue.cancel_requested(lease.job_id)
            except QueueUnavailableError as exc:
                logger.warning("job %s: progress not recorded: %s", lease.job_id, exc)
                return
            if cancelled is not None:
                raise JobCancelledError(cancelled)

        return report
