"""The review queue: the pool's unlabeled frames whose maps disagree most, to label.

``GET /review`` lists :meth:`worker.frame_pool.FramePool.review_queue` (lowest
attention consistency first). Frames uploaded without a score are asked of a worker
(a ``frames`` job, as ``GET /v1/frames/review`` does) and the page says "Scoring…"
for them instead of waiting; each frame shows with its Grad-CAM overlay and Guided
Backprop map under the served model (the images come from ``/v1/frames``; a map not
drawn yet is drawn by a worker and the page's script retries it).
Operators label a frame with the served model's classes, or with none ("no
event"), and the labeled frame joins the training or validation set of the next
fine-tune.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from models._exceptions import CheckpointError
from worker._exceptions import NoModelError, QueueError, StorageError, UnknownFrameError
from worker.frame_pool import FramePool
from worker.frame_scoring import request_scoring

from ..core.config import Role
from .session import PageDep, PageError
from .videos import LOW_CONSISTENCY

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

_DEFAULT_LIMIT = 24
_MAX_LIMIT = 200


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, page: PageDep, limit: str | None = None) -> Response:
    page.require(Role.viewer)
    try:
        count = int(limit) if limit else _DEFAULT_LIMIT
    except ValueError:
        count = _DEFAULT_LIMIT
    count = min(max(count, 1), _MAX_LIMIT)
    runtime = page.runtime
    problem = None
    scoring = False
    try:
        served = runtime.served.current()
        pool = FramePool(
            runtime.storage.frames, served.info.input_size, runtime.settings.pool_val_fraction
        )
        classes = list(served.info.class_names)
        unscored = [r.frame_id for r in pool.records(labeled=False) if r.consistency is None]
        if unscored:
            request_scoring(runtime.queue, served.name, unscored)
            scoring = True
    except (NoModelError, CheckpointError, StorageError) as exc:  # list what is scored
        pool, classes, problem = FramePool(runtime.storage.frames), [], str(exc)
    except QueueError as exc:  # scored frames can still be labeled
        problem = None
        scoring = False
        logger.warning("frames not sent for scoring: %s", exc)
    return page.render(
        "review.html",
        frames=pool.review_queue(count),
        scoring=scoring,
        classes=classes,
        problem=problem,
        limit=count,
        low_consistency=LOW_CONSISTENCY,
    )


@router.post("/review/frames/{frame_id}/labels", response_class=HTMLResponse)
async def label_frame(request: Request, frame_id: str, page: PageDep) -> Response:
    principal = page.require(Role.operator)
    form = await page.form()
    labels = [str(v) for v in form.getlist("labels")]
    runtime = page.runtime
    try:
        served = runtime.served.current()
        pool = FramePool(
            runtime.storage.frames, served.info.input_size, runtime.settings.pool_val_fraction
        )
        pool.set_labels(frame_id, labels, list(served.info.class_names))
    except UnknownFrameError:
        raise PageError(404, "Frame not found", "There is no such frame in the pool.") from None
    except (NoModelError, CheckpointError, StorageError) as exc:
        raise PageError(
            503, "No model", f"Labels name the served model's classes, and there is none: {exc}"
        ) from None
    except ValueError as exc:
        raise PageError(422, "Unknown label", str(exc)) from None
    page.runtime.audit.record("label_frame", principal.name, frame_ids=[frame_id])
    return page.redirect("/review?labeled=1")
