"""``PUT /v1/videos/{video_id}/events/{event_id}/review``: a clinician's verdict on an event.

The verdict is stored with the video and labels the event's peak frame in the frame
pool, so confirmed events and false positives feed the next fine-tune
(:mod:`worker.reviews`). The events answer (``GET /v1/videos/{id}/events``) carries
each event's review.
"""

from __future__ import annotations

from fastapi import APIRouter

from worker.reviews import frame_pool, review_event

from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ..deps import EventId, OperatorDep, RuntimeDep, VideoId
from ..schemas import ReviewCreate, ReviewPublic

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
