"""The models page (admin): versions with their cards, activation and roll-back, and
fine-tune jobs with their progress, a button that queues one and a button that cancels
a queued or running one.

Activating a retired version is the roll-back: the registry moves its ``ACTIVE``
pointer and the workers pick the model up between jobs (:mod:`worker.versions`).
The button queues a fine-tune with the default settings
(:func:`worker.finetune.queue_finetune`, trigger ``page``); ``POST /v1/finetune``
takes options. A running fine-tune shows its phase, step and losses (the job's
``detail``).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from worker._exceptions import JobNotFoundError, QueueError, QueueUnavailableError
from worker.finetune import queue_finetune
from worker.jobs import FINETUNE
from worker.queue import Job
from worker.versions import ModelRegistry, UnknownVersionError, VersionError

from ..core.config import Role
from .session import PageDep, PageError

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_JOBS_SHOWN = 20


@router.get("/models", response_class=HTMLResponse)
def models_page(page: PageDep) -> Response:
    page.require(Role.admin)
    runtime = page.runtime
    registry = ModelRegistry(runtime.storage.models)
    versions = list(reversed(registry.versions()))
    jobs: list[Job] = []
    queue_down = False
    try:
        jobs = runtime.queue.jobs(FINETUNE, _JOBS_SHOWN)
    except QueueUnavailableError:
        queue_down = True
    return page.render(
        "models.html",
        versions=versions,
        active=registry.active_version(),
        served=runtime.model_check.check(),
        jobs=jobs,
        queue_down=queue_down,
    )


@router.post("/models/{version}/activate", response_class=HTMLResponse)
async def activate(version: str, page: PageDep) -> Response:
    principal = page.require(Role.admin)
    await page.form()
    registry = ModelRegistry(page.runtime.storage.models)
    try:
        registry.activate(version, reason=f"activated by {principal.name} on the models page")
    except UnknownVersionError:
        raise PageError(404, "No such version", f"There is no model version {version}.") from None
    except VersionError as exc:
        raise PageError(409, "Cannot activate", str(exc)) from None
    page.runtime.audit.record("activate_model", principal.name, model_version=version)
    return page.redirect("/models?activated=" + version)


@router.post("/models/finetune", response_class=HTMLResponse)
async def start_finetune(page: PageDep) -> Response:
    principal = page.require(Role.admin)
    await page.form()
    try:
        job_id = queue_finetune(page.runtime.queue, trigger="page")
    except QueueUnavailableError:
        raise PageError(
            503, "Queue unavailable", "The job queue cannot be reached; try again in a minute."
        ) from None
    except QueueError as exc:
        raise PageError(409, "Not queued", str(exc)) from None
    page.runtime.audit.record("finetune", principal.name, job_id=job_id)
    return page.redirect("/models?queued=" + job_id)


@router.post("/models/jobs/{job_id}/cancel", response_class=HTMLResponse)
async def cancel_finetune(job_id: str, page: PageDep) -> Response:
    principal = page.require(Role.admin)
    await page.form()
    try:
        job = page.runtime.queue.get(job_id)
        if job.kind != FINETUNE:
            raise JobNotFoundError(job_id)
        page.runtime.queue.cancel(job_id, f"cancelled by {principal.name}")
    except JobNotFoundError:
        raise PageError(404, "No such job", "There is no fine-tune job with that id.") from None
    except QueueUnavailableError:
        raise PageError(
            503, "Queue unavailable", "The job queue cannot be reached; try again in a minute."
        ) from None
    except QueueError as exc:
        raise PageError(409, "Not cancelled", str(exc)) from None
    page.runtime.audit.record("cancel", principal.name, job_id=job_id)
    return page.redirect("/models?cancelled=" + job_id)
