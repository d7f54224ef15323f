"""How long job records stay in the queue, and where they go afterwards.

The queue (Redis, or the embedded in-memory one) keeps every job's record; left
alone, Redis would grow without end. :func:`prune_jobs` drops each job that finished
more than ``ATCON_JOB_RETENTION_DAYS`` (default 7) ago, after archiving its record
to the document ``jobs/<job_id>.json`` (the data directory's, or the object store's
where every replica reads it): the storage is the source of truth, and
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

from .._exceptions import JobNotFoundError, StorageError
from ..storage import Storage, validate_id
from .interface import Job, JobQueue, JobState

__all__ = ["archive_job", "archived_job", "find_job", "list_jobs", "prune_jobs"]

logger = logging.getLogger(__name__)


def _name(job_id: str) -> str:
    return f"jobs/{validate_id(job_id, 'job_id')}.json"


def archive_job(storage: Storage, job: Job) -> None:
    """Write ``job``'s record to the document ``jobs/<job_id>.json`` (in one step)."""
    data = dataclasses.asdict(job)
    data["status"] = str(job.status)
    storage.write_document(_name(job.job_id), json.dumps(data, indent=1).encode("utf-8"))


def _parse(job_id: str, data: bytes) -> Job | None:
    try:
        record = json.loads(data)
        record["status"] = JobState(record["status"])
        return Job(**record)
    except (ValueError, TypeError, KeyError) as exc:
        logger.warning("archived job %s is unreadable: %s", job_id, exc)
        return None


def archived_job(storage: Storage, job_id: str) -> Job | None:
    """The archived record of ``job_id``, or None when there is none (or it is unreadable)."""
    try:
        data = storage.read_document(_name(job_id))
    except StorageError as exc:
        logger.warning("archived job %s is unreadable: %s", job_id, exc)
        return None
    return None if data is None else _parse(job_id, data)


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
        logger.info("archived %d finished job(s) to %s", len(pruned), storage.location)
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
    for path in storage.sync_documents("jobs").glob("*.json"):
        if path.stem in found or path.name.startswith("."):
            continue
        try:
            job = _parse(path.stem, path.read_bytes())
        except OSError:
            continue  # removed meanwhile
        if job is not None and job.kind == kind:
            found[job.job_id] = job
    ordered = sorted(found.values(), key=lambda j: (j.created_at, j.job_id), reverse=True)
    return ordered[:limit]
