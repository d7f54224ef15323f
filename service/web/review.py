"""The review queue: the pool's unlabeled frames whose maps disagree most, to label.

``GET /review`` lists :meth:`worker.pool.frames.FramePool.review_queue` (lowest
attention consistency first), scoring frames uploaded without a score first, as
``GET /v1/frames/review`` does; each frame shows with its Grad-CAM overlay and
Guided Backprop map under the served model (the images come from ``/v1/frames``).
Operators label a frame with the served model's classes, or with none ("no
event"), and the labeled frame joins the training or validation set of the next
fine-tune.

The queue comes in pages (``?page=N``, ``limit`` frames each) and can be narrowed to
one camera (``camera``) or one video (``video``); the filters survive saving a label.
Above it, a table counts the labeled frames of each class per split against what the
next fine-tune needs (:func:`label_needs`). From the keyboard (``static/review.js``):
``j``/``k`` move between frames, ``1``..``9`` tick the selected frame's classes, ``n``
clears them ("no event"), ``s`` saves, ``?`` lists the keys.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import QueryParams

from models._exceptions import CheckpointError
from worker import NoModelError, QueueError, StorageError, UnknownFrameError
from worker.cameras import CAMERA_PATTERN
from worker.finetune.nightly import last_finetune
from worker.pool.frames import FrameRecord
from worker.pool.scoring import request_scoring
from worker.settings import Settings
from worker.storage import ID_PATTERN, Storage

from ..core.config import Role
from .session import PageDep, PageError
from .videos import LOW_CONSISTENCY

__all__ = ["label_needs", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

_DEFAULT_LIMIT = 24
_MAX_LIMIT = 200
_ID = re.compile(ID_PATTERN)
_CAMERA = re.compile(CAMERA_PATTERN)


def _filters(query: Mapping[str, str]) -> dict[str, str]:
    """The queue's filters and page from a query string, malformed values dropped."""
    out: dict[str, str] = {}
    if _CAMERA.match(query.get("camera") or ""):
        out["camera"] = query["camera"]
    if _ID.match(query.get("video") or ""):
        out["video"] = query["video"]
    if (query.get("limit") or "").isdigit():
        out["limit"] = query["limit"]
    if (query.get("page") or "").isdigit() and int(query["page"]) > 1:
        out["page"] = query["page"]
    return out


def label_needs(
    labeled: list[FrameRecord], classes: list[str], settings: Settings
) -> list[dict[str, Any]]:
    """Per class (and "no event"): labeled frames in the train and validation splits,
    and how many more validation positives the next fine-tune needs to choose that
    class's threshold from this camera's own frames
    (``ATCON_FINETUNE_MIN_VAL_PER_CLASS``; below it the parent's threshold is kept)."""
    need = settings.finetune_min_val_per_class
    names = list(classes) + sorted({c for r in labeled for c in r.labels or [] if c not in classes})
    rows = []
    for name in [*names, None]:
        train = sum(
            1
            for r in labeled
            if r.split == "train" and (name in (r.labels or []) if name else r.labels == [])
        )
        val = sum(
            1
            for r in labeled
            if r.split == "val" and (name in (r.labels or []) if name else r.labels == [])
        )
        rows.append(
            {
                "name": name,
                "train": train,
                "val": val,
                "missing": max(0, need - val) if name is not None else None,
            }
        )
    return rows


def _video_choices(storage: Storage, records: list[FrameRecord]) -> list[dict[str, str]]:
    """The videos that have frames waiting, for the filter menu."""
    choices = []
    for video_id in sorted({r.video_id for r in records if r.video_id}):
        try:
            record = storage.get_video(video_id)
            name = record.filename or f"video {video_id[:8]}"
            if record.camera:
                name += f" ({record.camera})"
        except StorageError:  # deleted since (its frames stay in the pool), or unreadable
            name = f"video {video_id[:8]} (deleted)"
        choices.append({"id": video_id, "name": name})
    return choices


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, page: PageDep, limit: str | None = None) -> Response:
    page.require(Role.viewer)
    try:
        count = int(limit) if limit else _DEFAULT_LIMIT
    except ValueError:
        count = _DEFAULT_LIMIT
    count = min(max(count, 1), _MAX_LIMIT)
    filters = _filters(request.query_params)
    number = int(filters.get("page", "1"))
    camera, video = filters.get("camera"), filters.get("video")
    runtime = page.runtime
    problem = None
    scoring = False
    try:
        served = runtime.served.current()
        pool = runtime.storage.frame_pool(
            served.info.input_size, runtime.settings.pool_val_fraction
        )
        classes = list(served.info.class_names)
        unscored = [r.frame_id for r in pool.records(labeled=False) if r.consistency is None]
        if unscored:  # a worker scores them; they join the queue when scored
            request_scoring(runtime.queue, served.name, unscored)
            scoring = True
    except (NoModelError, CheckpointError, StorageError) as exc:  # list what is scored
        pool, classes, problem = runtime.storage.frame_pool(), [], str(exc)
    except QueueError as exc:  # scored frames can still be labeled
        logger.warning("frames not sent for scoring: %s", exc)
    settings = runtime.settings
    waiting = pool.review_queue(_MAX_LIMIT * 1000, camera=camera, video_id=video)
    start = (number - 1) * count
    unlabeled = pool.records(labeled=False)
    since = last_finetune(page.runtime.storage, camera)
    new_frames = len(pool.records(since=since, labeled=False, camera=camera))
    kept = {k: v for k, v in filters.items() if k != "page"}
    return page.render(
        "review.html",
        frames=waiting[start : start + count],
        scoring=scoring,
        classes=classes,
        problem=problem,
        limit=count,
        low_consistency=LOW_CONSISTENCY,
        waiting=len(waiting),
        first_number=start + 1,
        page_number=number,
        pages=max(1, -(-len(waiting) // count)),
        prev_url="/review?" + urlencode({**kept, "page": number - 1}) if number > 1 else None,
        next_url=(
            "/review?" + urlencode({**kept, "page": number + 1})
            if start + count < len(waiting)
            else None
        ),
        filters=filters,
        back=urlencode(filters),
        cameras=sorted({r.camera for r in unlabeled if r.camera}),
        videos=_video_choices(page.runtime.storage, unlabeled),
        needs=label_needs(pool.records(labeled=True, camera=camera), classes, settings),
        min_val=settings.finetune_min_val_per_class,
        new_frames=new_frames,
        min_new_frames=settings.finetune_min_new_frames,
    )


@router.post("/review/frames/{frame_id}/labels", response_class=HTMLResponse)
async def label_frame(request: Request, frame_id: str, page: PageDep) -> Response:
    principal = page.require(Role.operator)
    form = await page.form()
    labels = [str(v) for v in form.getlist("labels")]
    runtime = page.runtime
    try:
        served = runtime.served.current()
        pool = runtime.storage.frame_pool(
            served.info.input_size, runtime.settings.pool_val_fraction
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
    # back to the same filters and page (rebuilt from known keys: never a foreign URL)
    back = _filters(QueryParams(str(form.get("back") or "")))
    return page.redirect("/review?" + urlencode({**back, "labeled": 1}))
