"""``/v1/events``: every video's events in one list (the inbox); each event's thumbnail
and clip.

``GET /v1/events`` lists events across videos, newest first
(:mod:`service.core.inbox`), filtered by class, camera, date range, review state,
low attention consistency and model version, in pages cut by an opaque cursor, with
counts per filter value. ``GET /v1/videos/{id}/events/{event_id}/thumbnail.jpg`` is
the small peak frame each row shows, cached with the video (:mod:`worker.video.thumbnails`).
``GET /v1/videos/{id}/events/{event_id}/clip.mp4`` is the event with
``ATCON_CLIP_MARGIN_S`` either side, cut by :mod:`worker.video.clips` (which imports PyAV
only when it cuts) and cached with the video; ``X-Clip-Method`` says whether it was
copied or re-encoded.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from worker.cameras import CAMERA_MAX_LENGTH
from worker.video.clips import event_clip
from worker.video.thumbnails import event_thumbnail

from ...core.inbox import (
    InboxFilters,
    InvalidCursorError,
    ReviewState,
    parse_bound,
)
from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ..deps import EventId, RuntimeDep, VideoId, ViewerDep
from ..schemas import InboxList

__all__ = ["inbox_filters", "router"]

router = APIRouter(tags=["events"], responses=PROBLEM_RESPONSES)

_LABEL = Query(max_length=20, description="classes to list (repeat for several)")
_CAMERA = Query(max_length=20, description="cameras to list (repeat for several)")


def inbox_filters(
    label: list[str] | None,
    camera: list[str] | None,
    since: str | None,
    until: str | None,
    review: ReviewState | None,
    low_consistency: bool,
    model_version: str | None,
    video_id: str | None,
) -> InboxFilters:
    """The filters of a request; ``ValueError`` with a sentence for a bad date."""
    return InboxFilters(
        labels=frozenset(label) if label else None,
        cameras=frozenset(camera) if camera else None,
        since=parse_bound(since, "since") if since else None,
        until=parse_bound(until, "until", end=True) if until else None,
        review=review,
        low_consistency=low_consistency,
        model_version=model_version or None,
        video_id=video_id or None,
    )


@router.get(
    "/v1/events",
    response_class=Response,
    summary="Events of every video, newest first, filtered, in pages",
    responses={
        **problem_responses(422),
        200: {"model": InboxList, "content": {"application/json": {}}},
    },
)
def list_events(
    principal: ViewerDep,
    runtime: RuntimeDep,
    label: Annotated[list[str] | None, _LABEL] = None,
    camera: Annotated[list[str] | None, _CAMERA] = None,
    since: Annotated[
        str | None, Query(max_length=40, description="from this date or time (UTC)")
    ] = None,
    until: Annotated[
        str | None, Query(max_length=40, description="to this date (inclusive) or time")
    ] = None,
    review: ReviewState | None = None,
    low_consistency: Annotated[
        bool, Query(description="only events whose attention consistency is low")
    ] = False,
    model_version: Annotated[str | None, Query(max_length=64)] = None,
    video_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """Each event carries its review state and history, and URLs of its thumbnail,
    clip and page. ``counts`` gives, per filter, the events each value would list with
    the other filters applied. A date ``until`` includes that whole day."""
    if camera and any(len(c) > CAMERA_MAX_LENGTH for c in camera):
        raise HTTPException(422, f"a camera is at most {CAMERA_MAX_LENGTH} characters")
    try:
        filters = inbox_filters(
            label, camera, since, until, review, low_consistency, model_version, video_id
        )
        page = runtime.inbox.query(filters, limit=limit, cursor=cursor)
    except InvalidCursorError as exc:
        raise HTTPException(422, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    runtime.audit.record("list_events", principal.name)
    body = {
        "events": [row.public() for row in page.rows],
        "total": page.total,
        "next_cursor": page.next_cursor,
        "counts": page.counts,
    }
    # the rows are built to InboxList's shape (tests check it against the schema):
    # serialised directly, not validated twice per request by pydantic
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.get(
    "/v1/videos/{video_id}/events/{event_id}/thumbnail.jpg",
    response_class=Response,
    summary="A small JPEG of the event's peak frame",
    responses={**problem_responses(404, 409), 200: {"content": {"image/jpeg": {}}}},
)
async def get_thumbnail(
    video_id: VideoId, event_id: EventId, principal: ViewerDep, runtime: RuntimeDep
) -> Response:
    data = await run_in_threadpool(event_thumbnail, runtime.storage, video_id, event_id)
    if data is None:
        raise HTTPException(404, f"event {event_id} has no peak frame (detected without maps)")
    runtime.audit.record("read_thumbnail", principal.name, video_id=video_id)
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"}
    )


@router.get(
    "/v1/videos/{video_id}/events/{event_id}/clip.mp4",
    response_class=FileResponse,
    summary="The event with a margin either side, as MP4",
    responses={**problem_responses(404, 409, 422), 200: {"content": {"video/mp4": {}}}},
)
async def get_clip(
    video_id: VideoId, event_id: EventId, principal: ViewerDep, runtime: RuntimeDep
) -> FileResponse:
    """Cut on the first request (stream copy when a keyframe lies at the window's
    start, else re-encoded; header ``X-Clip-Method``: ``copy`` or ``reencode``), then
    served from the video's cache; deleting the video deletes it. The window is
    ``X-Clip-Start``..``X-Clip-End`` seconds of the video."""
    margin = runtime.settings.clip_margin_s
    clip = await run_in_threadpool(event_clip, runtime.storage, video_id, event_id, margin)
    runtime.audit.record("read_clip", principal.name, video_id=video_id)
    return FileResponse(
        clip.path,
        media_type="video/mp4",
        filename=f"event-{event_id}.mp4",
        headers={
            "X-Clip-Method": clip.method,
            "X-Clip-Start": f"{clip.start_s:.3f}",
            "X-Clip-End": f"{clip.end_s:.3f}",
            "Cache-Control": "private, no-store",
        },
    )
