"""``/v1/jobs``: a job's status and progress, a stream of several jobs' progress (the
pages' live parts); dead letters, requeue and cancel (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from worker.queue.retention import find_job
from worker.runtime.jobs import JOB_KINDS

from ...core.job_stream import job_events
from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ..deps import AdminDep, JobId, RuntimeDep, ViewerDep
from ..schemas import DeadLetters, JobPublic

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["jobs"], responses=PROBLEM_RESPONSES)

KindQuery = Query("detect", pattern="^(" + "|".join(JOB_KINDS) + ")$", description="job kind")


@router.get(
    "/jobs/stream",
    response_class=StreamingResponse,
    # the pages' live parts; clients poll GET /v1/jobs/{id}. Out of the OpenAPI document,
    # whose fuzzers would hold a stream of a queued job open until it ends
    include_in_schema=False,
    summary="Server-sent events: each listed job whenever it changes, until none runs",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_jobs(
    request: Request,
    principal: ViewerDep,
    runtime: RuntimeDep,
    job: Annotated[
        list[str],
        Query(
            min_length=1,
            max_length=200,
            description="job ids to follow (repeat: job=...&job=...)",
        ),
    ],
) -> StreamingResponse:
    """``event: job`` carries the job as ``GET /v1/jobs/{id}`` answers it, sent when it
    changes; ``event: end`` when no listed job is queued or running. Not audited."""
    ids = [j for j in job if len(j) == 32 and all(c in "0123456789abcdef" for c in j)]
    stream = job_events(
        runtime.queue,
        ids,
        request.is_disconnected,
        lambda j: JobPublic.from_job(j).model_dump(mode="json"),
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/jobs/{job_id}", response_model=JobPublic, responses=problem_responses(404))
def get_job(job_id: JobId, principal: ViewerDep, runtime: RuntimeDep) -> JobPublic:
    """The job's status, progress (fraction of the video decoded) and last error; a
    job finished more than ``ATCON_JOB_RETENTION_DAYS`` ago answers from its archive."""
    return JobPublic.from_job(find_job(runtime.queue, runtime.storage, job_id))


@router.post(
    "/jobs/{job_id}/requeue",
    status_code=202,
    response_model=JobPublic,
    responses=problem_responses(404, 409),
)
def requeue_job(job_id: JobId, principal: AdminDep, runtime: RuntimeDep) -> JobPublic:
    """Start a failed job afresh (its attempts reset); 409 unless it failed."""
    job = runtime.queue.requeue(job_id)
    runtime.audit.record("requeue", principal.name, job_id=job_id)
    return JobPublic.from_job(job)


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    response_model=JobPublic,
    responses=problem_responses(404, 409),
)
def cancel_job(job_id: JobId, principal: AdminDep, runtime: RuntimeDep) -> JobPublic:
    """Cancel a detection or fine-tune job. A queued job fails at once; a running one
    stops at its next progress report (a fine-tune at its next training step,
    registering no version, so the active model is unchanged) and then shows
    ``failed`` with the cancellation as its error. ``requeue`` starts it again.
    409 when it is done or failed already."""
    reason = f"cancelled by {principal.name}"
    runtime.queue.cancel(job_id, reason)
    runtime.audit.record("cancel", principal.name, job_id=job_id)
    return JobPublic.from_job(runtime.queue.get(job_id))


@router.get("/dead-letters", response_model=DeadLetters)
def dead_letters(principal: AdminDep, runtime: RuntimeDep, kind: str = KindQuery) -> DeadLetters:
    """Jobs that failed for good, newest first, with their last error."""
    jobs = runtime.queue.dead_letters(kind)
    return DeadLetters(kind=kind, jobs=[JobPublic.from_job(j) for j in jobs])
