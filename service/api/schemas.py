"""The API's request and response models, one family per resource."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from worker.pool.reviews import EventReview, Verdict
from worker.queue.interface import Job, JobState

__all__ = [
    "DeadLetters",
    "InboxCounts",
    "InboxEvent",
    "InboxList",
    "JobPublic",
    "Readiness",
    "ReviewChangePublic",
    "ReviewCreate",
    "ReviewPublic",
    "UndoResult",
    "UploadAccepted",
    "VideoList",
    "VideoPublic",
]


def _time(value: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value, dt.UTC) if value else None


class UploadAccepted(BaseModel):
    video_id: str
    job_id: str
    status_url: str = Field(description="GET it for the job's status and progress")


class JobPublic(BaseModel):
    job_id: str
    kind: str
    status: JobState
    progress: float = Field(ge=0, le=1, description="fraction of the work done")
    error: str | None = Field(description="the last attempt's error, if any")
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    attempts: int
    detail: dict[str, Any] | None = Field(
        default=None, description="what a running job last reported (fine-tune: steps, losses)"
    )
    cancelling: bool = Field(
        default=False,
        description="an admin cancelled the running job; it stops at its next step",
    )
    result: dict[str, Any] | None = Field(
        default=None,
        description="what a finished job returned (an import: frames added, entries refused)",
    )

    @classmethod
    def from_job(cls, job: Job) -> JobPublic:
        return cls(
            job_id=job.job_id,
            kind=job.kind,
            status=job.status,
            progress=job.progress,
            error=job.error,
            created_at=_time(job.created_at) or dt.datetime.fromtimestamp(0, dt.UTC),
            started_at=_time(job.started_at),
            finished_at=_time(job.finished_at),
            attempts=job.attempts,
            detail=job.detail,
            cancelling=job.cancel is not None and job.status is JobState.running,
            result=job.result,
        )


class DeadLetters(BaseModel):
    kind: str
    jobs: list[JobPublic]


class VideoUrls(BaseModel):
    events: str
    source: str
    job: str


class VideoPublic(BaseModel):
    video_id: str
    job_id: str
    filename: str | None = Field(description="the client's file name, as metadata only")
    size_bytes: int
    created_at: dt.datetime
    status: JobState | None = Field(description="null while the job queue cannot be reached")
    progress: float | None
    error: str | None
    model_version: str | None
    event_count: int | None
    container: str | None
    codec: str | None
    width: int | None
    height: int | None
    duration_s: float | None
    fps: float | None
    camera: str | None = Field(
        default=None,
        description="the ward camera that recorded it, as given at upload; null: not given",
    )
    urls: VideoUrls


class VideoList(BaseModel):
    videos: list[VideoPublic]
    total: int


class Readiness(BaseModel):
    status: str
    checks: dict[str, Any]


class ReviewCreate(BaseModel):
    """A clinician's verdict on one event."""

    model_config = ConfigDict(extra="forbid")

    verdict: Verdict = Field(
        description="confirmed: the event happened; false_positive: it did not"
    )


class ReviewPublic(BaseModel):
    event_id: str
    verdict: Verdict
    reviewer: str = Field(description="the name of the token that reviewed it")
    reviewed_at: dt.datetime
    label: str
    start_s: float
    end_s: float
    peak_s: float | None
    model_version: str | None
    frame_id: str | None = Field(
        description="the event's peak frame in the frame pool, labeled by this verdict"
    )
    frame_labels: list[str] = Field(description="[label] when confirmed, [] when not")

    @classmethod
    def from_review(cls, review: EventReview) -> ReviewPublic:
        return cls.model_validate(review.to_dict())


class ReviewChangePublic(BaseModel):
    """One change of an event's verdict: who, when, what it was and became."""

    action: str = Field(description="review: a verdict given; undo: the latest taken back")
    verdict: Verdict | None = Field(description="the verdict after the change; null: none")
    previous_verdict: Verdict | None = Field(description="the verdict before it; null: none")
    reviewer: str
    at: dt.datetime


class InboxReview(BaseModel):
    state: str = Field(description="unreviewed, confirmed or false_positive")
    reviewer: str | None
    reviewed_at: dt.datetime | None


class InboxUrls(BaseModel):
    thumbnail: str | None = Field(description="the peak frame, small; null without maps")
    clip: str
    review: str
    page: str


class InboxEvent(BaseModel):
    video_id: str
    event_id: str
    label: str
    start_s: float
    end_s: float
    peak_s: float | None
    score: float | None = Field(description="peak probability (confidence)")
    attention_consistency: float | None
    low_consistency: bool
    camera: str | None
    model_version: str | None
    filename: str | None = Field(description="the client's file name, as metadata only")
    occurred_at: dt.datetime = Field(
        description="the video's upload time plus the event's start offset"
    )
    review: InboxReview
    review_history: list[ReviewChangePublic]
    urls: InboxUrls


class InboxCounts(BaseModel):
    """Per filter: events each value would list with the other filters applied."""

    label: dict[str, int]
    camera: dict[str, int] = Field(description='"" counts videos without a camera')
    review: dict[str, int]
    model_version: dict[str, int] = Field(description='"" counts results without a version')
    low_consistency: int


class InboxList(BaseModel):
    events: list[InboxEvent]
    total: int = Field(description="events matching the filters, on every page")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")
    counts: InboxCounts


class UndoResult(BaseModel):
    """What an undo left in force."""

    event_id: str
    review: ReviewPublic | None = Field(description="the verdict restored; null: unreviewed")
