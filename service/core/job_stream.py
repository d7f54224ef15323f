"""Server-sent events of jobs' progress: one stream per page instead of a poll per row.

:func:`job_events` reads the jobs from the queue every ``interval_s`` and yields an
``event: job`` message (the job as ``GET /v1/jobs/{id}`` answers it) whenever one
changed, then ``event: end`` once none is queued or running (or none exists). A
stream lasts at most ``max_s`` (15 s) and the browser's ``EventSource`` reconnects by
itself after that (in 3 s): uvicorn lets open responses finish before it stops, so a
short stream keeps a server's shutdown short. Streams read job state only, no patient
data, and are not audited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from fastapi.concurrency import run_in_threadpool

from worker import QueueUnavailableError
from worker.queue.interface import Job, JobQueue, JobState

__all__ = ["job_events", "sse"]

logger = logging.getLogger(__name__)

_LIVE = (JobState.queued, JobState.running)


def sse(event: str, data: Any) -> str:
    """One server-sent-events message."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def job_events(
    queue: JobQueue,
    job_ids: Sequence[str],
    disconnected: Callable[[], Awaitable[bool]],
    public: Callable[[Job], dict[str, Any]],
    *,
    interval_s: float = 1.0,
    max_s: float = 15.0,
) -> AsyncIterator[str]:
    """The stream's messages for ``job_ids`` (each job as ``public`` makes it); stops
    early when ``disconnected()`` says the client is gone."""
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    last: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + max_s
    yield "retry: 3000\n\n"
    while not await disconnected():
        try:
            jobs = await run_in_threadpool(queue.get_many, list(job_ids))
        except QueueUnavailableError:
            yield sse("unavailable", {"detail": "the job queue cannot be reached"})
            jobs = None
        if jobs is not None:
            for job_id, job in jobs.items():
                shown = public(job)
                if last.get(job_id) != shown:
                    last[job_id] = shown
                    yield sse("job", shown)
            if not any(job.status in _LIVE for job in jobs.values()):
                yield sse("end", {})
                return
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(interval_s)
