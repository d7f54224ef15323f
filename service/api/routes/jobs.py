"""``/v1/jobs``: a job's status and progress; dead letters, requeue and cancel (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from worker.jobs import JOB_KINDS
from worker.retention import find_job

from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ..deps import AdminDep, JobId, RuntimeDep, ViewerDep
from ..schemas import DeadLetters, JobPublic

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["jobs"], responses=PROBLEM_RESPONSES)

KindQuery = Query("detect", pattern="^(" + "|".join(JOB_KINDS) + ")$", description="job kind")


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
