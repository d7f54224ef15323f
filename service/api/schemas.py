"""The API's request and response models, one family per resource."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from worker.queue import Job, JobState

__all__ = [
    "DeadLetters",
    "JobPublic",
    "Readiness",
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
    urls: VideoUrls


class VideoList(BaseModel):
    videos: list[VideoPublic]
    total: int


class Readiness(BaseModel):
    status: str
    checks: dict[str, Any]
