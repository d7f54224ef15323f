"""The review queue: the pool's unlabeled frames whose maps disagree most, to label.

``GET /review`` lists :meth:`worker.frame_pool.FramePool.review_queue` (lowest
attention consistency first), scoring frames uploaded without a score first, as
``GET /v1/frames/review`` does; each frame shows with its Grad-CAM overlay and
Guided Backprop map under the served model (the images come from ``/v1/frames``).
Operators label a frame with the served model's classes, or with none ("no
event"), and the labeled frame joins the training or validation set of the next
fine-tune.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from worker.frame_pool import FramePool, UnknownFrameError

from ..core.config import Role

# one FrameMaps (the served model for pool frames) per app, shared with the frames API
from ..core.frame_maps import frame_maps
from .session import PageDep, PageError
from .videos import LOW_CONSISTENCY

__all__ = ["router"]

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
    maps = frame_maps(request)
    problem = None
    try:
        pool = maps.pool()
        maps.score_unscored(pool, pool.records(labeled=False), limit=count)
        classes = maps.class_names()
    except (LookupError, OSError) as exc:  # no model to serve: list what is scored
        pool, classes, problem = FramePool(page.runtime.storage.frames), [], str(exc)
    return page.render(
        "review.html",
        frames=pool.review_queue(count),
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
    maps = frame_maps(request)
    try:
        pool = maps.pool()
        pool.set_labels(frame_id, labels, maps.class_names())
    except UnknownFrameError:
        raise PageError(404, "Frame not found", "There is no such frame in the pool.") from None
    except (LookupError, OSError) as exc:
        raise PageError(
            503, "No model", f"Labels name the served model's classes, and there is none: {exc}"
        ) from None
    except ValueError as exc:
        raise PageError(422, "Unknown label", str(exc)) from None
    page.runtime.audit.record("label_frame", principal.name, frame_ids=[frame_id])
    return page.redirect("/review?labeled=1")
