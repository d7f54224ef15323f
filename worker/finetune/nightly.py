"""The nightly trigger: when a fine-tune is due and queueing it.

The scheduler (:mod:`worker.runtime.scheduler`, started by :func:`start_scheduler`)
asks :func:`nightly_should_run` for the global target and each camera of
``ATCON_FINETUNE_CAMERAS`` at its fire time: enough new unlabeled frames since the last
fine-tune (``ATCON_FINETUNE_MIN_NEW_FRAMES``) and none queued or running. The last
fine-tune's start, overall and per camera, is recorded by the job in the document
``state/last_finetune.json`` (:func:`record_last`; every machine reads the same one
with the object store).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from typing import Any

from .._exceptions import StorageError
from ..queue.interface import JobQueue, JobState
from ..runtime.jobs import FINETUNE
from ..settings import Settings
from ..storage import Storage
from .request import FinetuneRequest, queue_finetune

__all__ = [
    "last_finetune",
    "nightly_should_run",
    "record_last",
    "run_nightly_once",
    "start_scheduler",
]

logger = logging.getLogger(__name__)

#: the document of the last fine-tunes (:meth:`worker.storage.Storage.write_document`)
_LAST = "state/last_finetune.json"
#: where it was kept before it became a document every machine reads
_LEGACY_LAST = "models/last_finetune.json"


def _read_last(storage: Storage) -> dict[str, Any]:
    try:
        raw = storage.read_document(_LAST)
        if raw is None:
            raw = storage.read_document(_LEGACY_LAST)
        data = json.loads(raw) if raw is not None else {}
    except (StorageError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _started(entry: object) -> datetime | None:
    try:
        return datetime.fromisoformat(entry["started_at"])  # type: ignore[index]
    except (TypeError, ValueError, KeyError):
        return None


def last_finetune(storage: Storage, camera: str | None = None) -> datetime | None:
    """When the last fine-tune that finished (either way) started, if any did.

    With ``camera``: the later of the last global fine-tune (it used every camera's
    frames) and the last one restricted to that camera.
    """
    data = _read_last(storage)
    times = [_started(data)]
    if camera is not None:
        cameras = data.get("cameras")
        times.append(_started(cameras.get(camera)) if isinstance(cameras, dict) else None)
    known = [t for t in times if t is not None]
    return max(known) if known else None


def record_last(storage: Storage, camera: str | None, entry: dict[str, Any]) -> None:
    """Note a finished fine-tune; the caller holds the fine-tune lock."""
    data = _read_last(storage)
    if camera is None:
        data.update(entry)
    else:
        cameras = data.get("cameras")
        data["cameras"] = {**(cameras if isinstance(cameras, dict) else {}), camera: entry}
    storage.write_document(_LAST, json.dumps(data, indent=1).encode("utf-8"), make_folder=True)


def _busy(queue: JobQueue, camera: str | None) -> int:
    """Fine-tunes queued or running: all of them, or those restricted to ``camera``."""
    if camera is None:
        counts = queue.counts(FINETUNE)
        return counts.get(JobState.queued, 0) + counts.get(JobState.running, 0)
    live = (JobState.queued, JobState.running)
    return sum(
        1
        for job in queue.jobs(FINETUNE, 200)
        if job.status in live and (job.payload.get("request") or {}).get("camera") == camera
    )


def nightly_should_run(
    storage: Storage, queue: JobQueue, settings: Settings, camera: str | None = None
) -> tuple[bool, str]:
    """The scheduler's question: enough new frames since the last fine-tune, none running?

    With ``camera``, the question is asked of that camera's frames and fine-tunes.
    """
    of = f" for camera {camera}" if camera is not None else ""
    busy = _busy(queue, camera)
    if busy:
        return False, f"{busy} fine-tune job(s){of} already queued or running"
    since = last_finetune(storage, camera)
    new = len(storage.frame_pool().records(since=since, labeled=False, camera=camera))
    if new < settings.finetune_min_new_frames:
        return False, (
            f"only {new} new frames{of} since the last fine-tune "
            f"(at least {settings.finetune_min_new_frames} wanted)"
        )
    return True, f"{new} new frames{of}"


def run_nightly_once(
    storage: Storage, queue: JobQueue, settings: Settings, camera: str | None = None
) -> tuple[str | None, str]:
    """What the scheduler does at its fire time, once: queue a fine-tune if worth it.

    With ``camera``, a fine-tune of that camera's frames, promoted for it only.
    Returns the job id (``None`` when nothing was queued) and the reason.
    """
    ok, why = nightly_should_run(storage, queue, settings, camera)
    if not ok:
        logger.info("nightly fine-tune not queued: %s", why)
        return None, why
    job_id = queue_finetune(queue, FinetuneRequest(camera=camera), trigger="nightly")
    logger.info("nightly fine-tune queued as job %s (%s)", job_id, why)
    return job_id, why


def _nightly_targets(storage: Storage, queue: JobQueue, settings: Settings) -> tuple[bool, str]:
    """The scheduler's check over the global target and ``ATCON_FINETUNE_CAMERAS``."""
    answers = [
        nightly_should_run(storage, queue, settings, camera)
        for camera in [None, *settings.finetune_camera_list]
    ]
    return any(ok for ok, _ in answers), "; ".join(why for _, why in answers)


def _queue_nightly(storage: Storage, queue: JobQueue, settings: Settings) -> str:
    """Queue the nightly fine-tune of every target that is due; return the job ids."""
    jobs = []
    for camera in [None, *settings.finetune_camera_list]:
        job_id, _ = run_nightly_once(storage, queue, settings, camera)
        if job_id is not None:
            jobs.append(job_id)
    return ",".join(jobs)


def start_scheduler(
    storage: Storage,
    queue: JobQueue,
    settings: Settings,
    stop: threading.Event,
    *,
    interval_s: float = 30.0,
) -> threading.Thread:
    """Run the nightly scheduler in a daemon thread until ``stop`` is set.

    With Redis the fire times are claimed in Redis, so every process may run one and
    exactly one acts; in the embedded default the claim is local to the process.
    """
    from ..runtime.scheduler import Claim, LocalClaim, NightlyScheduler, RedisClaim

    claim: Claim
    if not settings.embedded:
        from ..queue.connect import connect

        claim = RedisClaim(connect(settings), prefix=f"{settings.queue_prefix}:scheduler:")
    else:
        claim = LocalClaim()
    scheduler = NightlyScheduler(
        settings.finetune_schedule,
        settings.finetune_timezone,
        claim=claim,
        should_run=lambda: _nightly_targets(storage, queue, settings),
        trigger=lambda: _queue_nightly(storage, queue, settings),
    )
    thread = threading.Thread(
        target=scheduler.run, args=(stop, interval_s), name="nightly-scheduler", daemon=True
    )
    thread.start()
    logger.info(
        "nightly fine-tune scheduled at '%s' (%s)",
        settings.finetune_schedule,
        settings.finetune_timezone,
    )
    return thread
