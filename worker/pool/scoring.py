"""Scoring pool frames and drawing their maps: the ``frames`` job, run by detect workers.

Frames that come from a detection job are scored by the worker that processed the
video. Frames uploaded through the API are scored here, in a worker that holds the
served model, never in the API process (which does not import torch). The API asks
for work with :func:`request_scoring` and answers from what is stored:

* ``GET /v1/frames/review`` lists the stored scores and says ``scoring: true`` (with
  the job id) while unscored frames are being scored;
* ``GET /v1/frames/{id}/maps/{kind}.png`` serves the drawn map, or answers 202 with
  the job that draws it.

The job's id is derived from what it does (model name, frame ids, maps or not), so
many API requests asking for the same work share one job. Maps live next to the
pool as ``frames/maps/<frame_id>.<model>.<kind>.png`` (:func:`frame_map_path`), one
per frame, model and kind.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._exceptions import JobNotFoundError, QueueError
from ..detection.render import gradcam_heat, guided_picture, heat_overlay, save_png_atomic
from ..detection.results import safe_stem
from ..queue.interface import Job, JobQueue, JobState
from ..runtime.jobs import FRAMES, JobContext, JobOutcome
from .frames import FramePool, UnknownFrameError

__all__ = [
    "FRAMES",
    "FRAME_MAP_KINDS",
    "MAX_FRAMES_PER_JOB",
    "frame_map_path",
    "request_scoring",
    "score_frames",
]

logger = logging.getLogger(__name__)

#: the map kinds drawn for a pool frame
FRAME_MAP_KINDS = ("gradcam", "guided_backprop")
#: frames one job scores at most (the next request queues the rest)
MAX_FRAMES_PER_JOB = 256
_BATCH = 16


def frame_map_path(pool_root: Path, frame_id: str, model: str, kind: str) -> Path:
    """Where the ``kind`` map of a pool frame under ``model`` is (or will be) stored."""
    if kind not in FRAME_MAP_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FRAME_MAP_KINDS)}, got {kind!r}")
    return pool_root / "maps" / f"{frame_id}.{safe_stem(model)}.{kind}.png"


def _job_id(model: str, frame_ids: Sequence[str], maps: bool) -> str:
    key = "\n".join([FRAMES, model, "maps" if maps else "scores", *sorted(frame_ids)])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def request_scoring(
    queue: JobQueue, model: str, frame_ids: Sequence[str], *, maps: bool = False
) -> Job:
    """The job that scores ``frame_ids`` under ``model`` (and, with ``maps``, draws
    their maps): the queued or running one if there is one, else a new one.

    A finished job whose work is asked for again (a failure, or frames it could not
    score) is replaced by a fresh one under the same id.
    """
    if not frame_ids:
        raise ValueError("frame_ids must name at least one frame")
    ids = sorted(frame_ids)[:MAX_FRAMES_PER_JOB]
    job_id = _job_id(model, ids, maps)
    try:
        job = queue.get(job_id)
        if job.status in (JobState.queued, JobState.running):
            return job
        queue.delete(job_id)
    except JobNotFoundError:
        pass
    payload = {"frame_ids": ids, "model": model, "maps": maps}
    try:
        return queue.enqueue(FRAMES, payload, job_id=job_id)
    except QueueError:
        # another API process queued the same work first
        return queue.get(job_id)


def _load(pool: FramePool, frame_ids: Sequence[str], size: int) -> tuple[list[str], np.ndarray]:
    """The frames still in the pool, as uint8 (B, size, size, 3)."""
    found, arrays = [], []
    for frame_id in frame_ids:
        try:
            path = pool.image_path(frame_id)
        except UnknownFrameError:
            logger.info("frame %s left the pool before it was scored", frame_id)
            continue
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(rgb, dtype=np.uint8))
        except (OSError, ValueError) as exc:  # one unreadable image fails no other frame
            logger.warning("frame %s cannot be read, not scored: %s", frame_id, exc)
            continue
        found.append(frame_id)
    if not arrays:
        return [], np.zeros((0, size, size, 3), dtype=np.uint8)
    return found, np.stack(arrays)


def score_frames(
    ctx: JobContext, frame_ids: list[str], model: str | None = None, maps: bool = False
) -> JobOutcome:
    """Score unscored pool frames (attention consistency) and, with ``maps``, draw
    their Grad-CAM overlay and Guided Backprop map, under the default served model.

    ``model`` is the name the API asked under; when another model serves by now the
    work is done under that one (the API asks again under the new name if it needs
    to).
    """
    detector, name = ctx.models.current()
    if model is not None and model != name:
        logger.info("frames job asked for model %s; %s serves now", model, name)
    size = int(detector.info.input_size)
    pool = ctx.storage.frame_pool(size, ctx.settings.pool_val_fraction)
    scored = drawn = 0
    for start in range(0, len(frame_ids), _BATCH):
        ids, frames = _load(pool, frame_ids[start : start + _BATCH], size)
        if not ids:
            continue
        todo = [i for i, frame_id in enumerate(ids) if pool.get(frame_id).consistency is None]
        if todo:
            values = detector.frame_consistency(frames[todo])
            for i, value in zip(todo, values.tolist(), strict=True):
                pool.set_consistency(ids[i], float(value), name)
                scored += 1
        if maps:
            drawn += _draw(pool, ids, frames, detector, name)
            pool.sync()  # the maps drawn, to the object store when there is one
        ctx.progress(min(1.0, (start + _BATCH) / len(frame_ids)))
    return JobOutcome({"scored": scored, "maps": drawn, "model": name}, frames=scored)


def _draw(pool: FramePool, ids: list[str], frames: np.ndarray, detector: Any, name: str) -> int:
    """Draw both maps of each frame that lacks one; return how many frames were drawn."""
    todo = [
        i
        for i, frame_id in enumerate(ids)
        if not all(frame_map_path(pool.root, frame_id, name, k).is_file() for k in FRAME_MAP_KINDS)
    ]
    if not todo:
        return 0
    cams, guided = detector.frame_maps(frames[todo])
    for row, i in enumerate(todo):
        frame = frames[i]
        size = (frame.shape[0], frame.shape[1])
        pictures = {
            "gradcam": heat_overlay(frame, gradcam_heat(cams[row], size)),
            "guided_backprop": guided_picture(guided[row], size),
        }
        for kind, picture in pictures.items():
            save_png_atomic(picture, frame_map_path(pool.root, ids[i], name, kind))
    return len(todo)
