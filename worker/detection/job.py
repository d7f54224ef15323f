"""The detect job: an uploaded video through the served model, its results published,
its frames fed to the pool (``JOB_KINDS["detect"]`` in :mod:`worker.runtime.jobs`)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from typing import Any

from .._exceptions import JobError, VideoNotFoundError
from ..runtime.jobs import JobContext, JobOutcome
from ..runtime.metrics import observe_detect_stages
from .results import SCORES_FILE

__all__ = ["detect_video"]

logger = logging.getLogger(__name__)


def _frames_of(events: dict[str, Any]) -> int:
    """Frames the detector sampled (``sampling.samples`` of events.json schema 1)."""
    sampling = events.get("sampling")
    if isinstance(sampling, dict) and isinstance(sampling.get("samples"), int):
        return int(sampling["samples"])
    return 0


def detect_video(ctx: JobContext, video_id: str) -> JobOutcome:
    """Detect the events of an uploaded video and publish ``results/<video_id>/``.

    The detector writes into a fresh folder under ``tmp/``; the folder becomes the
    video's results in one rename, so a job done twice publishes the same results
    once each time and a reader never sees half of them.
    """
    storage = ctx.storage
    try:
        record = storage.get_video(video_id)
    except VideoNotFoundError:
        raise JobError(f"video {video_id} was deleted before it was processed") from None
    # the version activated for the video's camera, else the default
    detector, version = ctx.models.current(record.camera)
    staging = storage.staging_dir(video_id)
    try:
        out = staging / "results"
        # the local file, or the object streamed from the store with ranged reads
        events = detector.detect(
            storage.video_input(video_id), out, video_id=video_id, progress=ctx.progress
        )
        if not storage.video_exists(video_id):
            raise JobError(f"video {video_id} was deleted while it was processed")
        publishing = time.perf_counter()
        storage.publish_results(video_id, out)
        publish_s = time.perf_counter() - publishing
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    observe_detect_stages(events.get("timings_s") or {}, publish_s)
    _collect_frames(ctx, detector, video_id, version, record.camera)
    if not storage.video_exists(video_id):
        # deleted while its frames were sampled: what this job added goes with it
        from ..deletion import purge_derived

        purge_derived(storage, video_id)
        with contextlib.suppress(VideoNotFoundError):
            storage.delete_video(video_id)
        raise JobError(f"video {video_id} was deleted while it was processed")
    event_list = events.get("events")
    count = len(event_list) if isinstance(event_list, list) else 0
    return JobOutcome(
        {"video_id": video_id, "event_count": count, "model_version": version},
        frames=_frames_of(events),
    )


def _collect_frames(
    ctx: JobContext, detector: Any, video_id: str, version: str, camera: str | None
) -> None:
    """Feed the frame pool from a processed video; a failure here never fails the job."""
    from ..pool.frames import collect_from_detection

    settings, storage = ctx.settings, ctx.storage
    try:
        pool = storage.frame_pool(detector.info.input_size, settings.pool_val_fraction)
        added = collect_from_detection(
            pool,
            detector,
            storage.video_input(video_id),
            storage.results_dir(video_id) / SCORES_FILE,
            video_id=video_id,
            frames_per_minute=settings.pool_frames_per_minute,
            model_version=version,
            camera=camera,
        )
        logger.info("video %s: %d frames added to the frame pool", video_id, len(added))
    except Exception:
        logger.exception("video %s: frames not added to the frame pool", video_id)
