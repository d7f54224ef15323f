"""``PUT /v1/videos/{video_id}/events/{event_id}/review``: a clinician's verdict on an event;
``DELETE`` of the same takes the latest verdict back.

The verdict is stored with the video and labels the event's peak frame in the frame
pool, so confirmed events and false positives feed the next fine-tune
(:mod:`worker.pool.reviews`). The events answer (``GET /v1/videos/{id}/events``) carries
each event's review and ``review_history`` (who, when, the verdict before and after),
and every verdict and undo is a line in the audit log.
"""

from __future__ import annotations

from fastapi import APIRouter

from worker.pool.reviews import frame_pool, review_event, undo_review

from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ..deps import EventId, OperatorDep, RuntimeDep, VideoId
from ..schemas import ReviewCreate, ReviewPublic, UndoResult

__all__ = ["router"]

router = APIRouter(prefix="/v1/videos", tags=["reviews"], responses=PROBLEM_RESPONSES)


@router.put(
    "/{video_id}/events/{event_id}/review",
    response_model=ReviewPublic,
    summary="Confirm an event or mark it a false positive (operator)",
    responses=problem_responses(400, 404, 409),
)
def put_review(
    video_id: VideoId,
    event_id: EventId,
    body: ReviewCreate,
    principal: OperatorDep,
    runtime: RuntimeDep,
) -> ReviewPublic:
    """Record the verdict (a second review replaces the first) and label the event's peak
    frame in the frame pool: the event's label when confirmed, none when a false positive.
    409 while the video has no results."""
    storage = runtime.storage
    pool = frame_pool(storage, runtime.settings, storage.read_events(video_id))
    review = review_event(storage, pool, video_id, event_id, body.verdict, principal.name)
    runtime.audit.record(
        "review", principal.name, video_id=video_id, outcome=f"{body.verdict.value} {event_id}"
    )
    return ReviewPublic.from_review(review)


@router.delete(
    "/{video_id}/events/{event_id}/review",
    response_model=UndoResult,
    summary="Undo the latest verdict on an event, restoring the one before (operator)",
    responses=problem_responses(404, 409),
)
def delete_review(
    video_id: VideoId, event_id: EventId, principal: OperatorDep, runtime: RuntimeDep
) -> UndoResult:
    """The verdict before the latest is restored (none: the event is unreviewed again)
    and the event's pool frame relabeled to match; the undo joins the event's history.
    409 when no verdict is left to undo."""
    storage = runtime.storage
    pool = frame_pool(storage, runtime.settings, storage.read_events(video_id))
    restored = undo_review(storage, pool, video_id, event_id, principal.name)
    state = restored.verdict.value if restored is not None else "unreviewed"
    runtime.audit.record(
        "review_undo", principal.name, video_id=video_id, outcome=f"{state} {event_id}"
    )
    return UndoResult(
        event_id=event_id,
        review=ReviewPublic.from_review(restored) if restored is not None else None,
    )
