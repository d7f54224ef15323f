"""The review queue: the pool's unlabeled frames whose maps disagree most, to label.

``GET /review`` lists :meth:`worker.frame_pool.FramePool.review_queue` (lowest
attention consistency first) with each frame's image; operators label a frame with
the served model's classes, or with none ("no event"), and the labeled frame joins
the training or validation set of the next fine-tune.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

from worker.frame_pool import UnknownFrameError
from worker.reviews import frame_pool

from ..core.config import Role
from .session import PageDep, PageError
from .videos import LOW_CONSISTENCY

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_DEFAULT_LIMIT = 48
_MAX_LIMIT = 500


@router.get("/review", response_class=HTMLResponse)
def review_page(page: PageDep, limit: str | None = None) -> Response:
    page.require(Role.viewer)
    try:
        count = int(limit) if limit else _DEFAULT_LIMIT
    except ValueError:
        count = _DEFAULT_LIMIT
    count = min(max(count, 1), _MAX_LIMIT)
    pool = frame_pool(page.runtime.storage)
    frames = pool.review_queue(count)
    model = page.runtime.model_check.check()
    return page.render(
        "review.html",
        frames=frames,
        classes=list(model.class_names),
        model=model,
        limit=count,
        low_consistency=LOW_CONSISTENCY,
    )


@router.get("/review/frames/{frame_id}.png")
def frame_image(frame_id: str, page: PageDep) -> Response:
    page.require(Role.viewer)
    try:
        path = frame_pool(page.runtime.storage).image_path(frame_id)
    except UnknownFrameError:
        raise PageError(404, "Frame not found", "There is no such frame in the pool.") from None
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private"})


@router.post("/review/frames/{frame_id}/labels", response_class=HTMLResponse)
async def label_frame(frame_id: str, page: PageDep) -> Response:
    principal = page.require(Role.operator)
    form = await page.form()
    labels = [str(v) for v in form.getlist("labels")]
    classes = list(page.runtime.model_check.check().class_names)
    if not classes:
        raise PageError(
            409,
            "No model",
            "Labels name the classes of the served model, and no model is loadable now.",
        )
    pool = frame_pool(page.runtime.storage)
    try:
        pool.set_labels(frame_id, labels, classes)
    except UnknownFrameError:
        raise PageError(404, "Frame not found", "There is no such frame in the pool.") from None
    except ValueError as exc:
        raise PageError(422, "Unknown label", str(exc)) from None
    page.runtime.audit.record("label_frame", principal.name, outcome=f"{len(labels)} label(s)")
    return page.redirect("/review?labeled=1")
