"""How long job records stay in the queue, and where they go afterwards.

The queue (Redis, or the embedded in-memory one) keeps every job's record; left
alone, Redis would grow without end. :func:`prune_jobs` drops each job that finished
more than ``ATCON_JOB_RETENTION_DAYS`` (default 7) ago, after archiving its record
to ``<data_dir>/jobs/<job_id>.json``: the data directory is the source of truth, and
a finished job stays readable (:func:`find_job`) and listable (:func:`list_jobs`)
from there. The API process runs it with its housekeeping
(``ATCON_RECONCILE_INTERVAL_S``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable

from models.atomic import atomic_write_json

from .._exceptions import JobNotFoundError
from ..storage import Storage, validate_id
from .interface import Job, JobQueue, JobState

__all__ = ["archive_job", "archived_job", "find_job", "list_jobs", "prune_jobs"]

logger = logging.getLogger(__name__)


def archive_job(storage: Storage, job: Job) -> None:
    """Write ``job``'s record to ``<data_dir>/jobs/<job_id>.json`` (atomically)."""
    data = dataclasses.asdict(job)
    data["status"] = str(job.status)
    atomic_write_json(storage.jobs / f"{validate_id(job.job_id, 'job_id')}.json", data)


def archived_job(storage: Storage, job_id: str) -> Job | None:
    """The archived record of ``job_id``, or None when there is none (or it is unreadable)."""
    path = storage.jobs / f"{validate_id(job_id, 'job_id')}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["status"] = JobState(data["status"])
        return Job(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        logger.warning("archived job %s is unreadable: %s", job_id, exc)
        return None


def prune_jobs(
    queue: JobQueue, storage: Storage, kinds: Iterable[str], retention_s: float
) -> list[str]:
    """Archive and drop every job of ``kinds`` that finished more than ``retention_s``
    seconds ago; return their ids. A job is dropped only once its archive is written."""
    if retention_s <= 0:
        raise ValueError(f"retention_s must be positive, got {retention_s}")
    cutoff = time.time() - retention_s
    pruned = []
    for kind in kinds:
        for job in queue.finished(kind):
            if job.finished_at is None or job.finished_at > cutoff:
                continue
            archive_job(storage, job)
            queue.delete(job.job_id)
            pruned.append(job.job_id)
    if pruned:
        logger.info("archived %d finished job(s) to %s", len(pruned), storage.jobs)
    return pruned


def find_job(queue: JobQueue, storage: Storage, job_id: str) -> Job:
    """The job from the queue, else from the archive; ``JobNotFoundError`` if neither."""
    try:
        return queue.get(job_id)
    except JobNotFoundError:
        archived = archived_job(storage, job_id)
        if archived is None:
            raise
        return archived


def list_jobs(queue: JobQueue, storage: Storage, kind: str, limit: int = 50) -> list[Job]:
    """The newest ``limit`` jobs of ``kind``: the queue's and the archived ones."""
    found = {job.job_id: job for job in queue.jobs(kind, limit)}
    for path in storage.jobs.glob("*.json"):
        if path.stem in found:
            continue
        job = archived_job(storage, path.stem)
        if job is not None and job.kind == kind:
            found[job.job_id] = job
    ordered = sorted(found.values(), key=lambda j: (j.created_at, j.job_id), reverse=True)
    return ordered[:limit]
