"""Rebuilding the queue from the data directory: every upload without results and
without a live job is queued again under its job id (the API at start and every
``ATCON_RECONCILE_INTERVAL_S``)."""

from __future__ import annotations

import logging

from .._exceptions import (
    JobNotFoundError,
    QueueError,
    QueueUnavailableError,
    StorageError,
)
from ..queue.interface import JobQueue
from ..queue.retention import archived_job
from ..storage import Storage
from .jobs import DETECT

__all__ = ["reconcile"]

logger = logging.getLogger(__name__)


def _requeue_if_lost(storage: Storage, queue: JobQueue, video_id: str, job_id: str) -> bool:
    """Queue ``video_id``'s job again if it has no results and no job; True if queued."""
    if storage.has_results(video_id):
        return False
    try:
        queue.get(job_id)
        return False
    except JobNotFoundError:
        if archived_job(storage, job_id) is not None:  # finished, past its retention
            return False
    try:
        queue.enqueue(DETECT, {"video_id": video_id}, job_id=job_id)
    except QueueUnavailableError:
        raise
    except QueueError:  # another API process queued it again first
        return False
    return True


def reconcile(storage: Storage, queue: JobQueue) -> list[str]:
    """Queue again every upload that has no results and no live job; return their ids.

    The data directory is the source of truth: after the embedded server restarts (its
    queue was in memory) or Redis lost its data, each upload without results gets its
    job back under the same job id, so status URLs handed out before keep working.
    A failed job stays failed (an admin requeues it from the dead-letter list). Several
    API processes may run it at once: a job another one queued first is left to it.
    A video that cannot be checked (unreadable record, a job record the queue refuses
    to read) is logged and skipped; the others are still checked. Only an unreachable
    queue stops it (:class:`~worker.QueueUnavailableError`).
    """
    requeued = []
    for record in storage.list_videos():
        try:
            if _requeue_if_lost(storage, queue, record.video_id, record.job_id):
                requeued.append(record.video_id)
        except QueueUnavailableError:
            raise  # nothing can be queued now; the caller tries again later
        except (StorageError, QueueError, OSError) as exc:  # this one only: go on
            logger.warning("video %s not requeued: %s", record.video_id, exc)
    if requeued:
        logger.info("queued %d upload(s) without results again", len(requeued))
    return requeued
