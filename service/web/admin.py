"""The models page (admin): versions with their cards, activation and roll-back, and
fine-tune jobs with their progress, a button that queues one and a button that cancels
a queued or running one.

Each version shows its scope: whether it is the default, the cameras it is activated
for (``POST /v1/models/{version}/activate`` with ``cameras``), and the cameras whose
frames it was adapted on, with its frame counts per camera.

Activating a retired version is the roll-back: the registry moves its ``ACTIVE``
pointer and the workers pick the model up between jobs (:mod:`worker.serving.versions`).
The button queues a fine-tune with the default settings
(:func:`worker.finetune.request.queue_finetune`, trigger ``page``); ``POST /v1/finetune``
takes options. A running fine-tune shows its phase, step and losses (the job's
``detail``).

A chart (:mod:`service.web.model_history`) draws each version's validation F1, mAP
and attention consistency, and a table the per-class F1 change of each fine-tune;
each version lists the events it and the served model disagree on, on recent videos
(:mod:`worker.finetune.disagreements`).

A candidate that no labeled frame could gate shows beside its parent on a sample
of unlabeled pool frames (both models' labels, confidence and Grad-CAM overlay)
with a label-free report. The fine-tune job computed all of it
(:mod:`worker.training.comparison`); this page only reads the version's files.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

from worker import (
    InvalidCameraError,
    JobNotFoundError,
    QueueError,
    QueueUnavailableError,
)
from worker.finetune.request import queue_finetune
from worker.queue.interface import Job
from worker.queue.retention import list_jobs
from worker.runtime.jobs import FINETUNE
from worker.serving.versions import (
    NoCameraVersionError,
    UnknownVersionError,
    VersionError,
    VersionStatus,
)

from ..core.config import Role
from .model_history import history_view
from .session import PageDep, PageError

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_JOBS_SHOWN = 20


@router.get("/models", response_class=HTMLResponse)
def models_page(page: PageDep) -> Response:
    page.require(Role.admin)
    runtime = page.runtime
    registry = runtime.storage.registry()
    versions = list(reversed(registry.versions()))
    comparisons: dict[str, dict[str, Any]] = {}
    disagreements: dict[str, dict[str, Any]] = {}
    for card in versions:
        found_events = registry.disagreements(card.version)
        if found_events is not None:
            disagreements[card.version] = found_events
        if card.status is VersionStatus.CANDIDATE:
            found = registry.comparison(card.version)
            if found is not None:
                comparisons[card.version] = found
    jobs: list[Job] = []
    queue_down = False
    try:
        jobs = list_jobs(runtime.queue, runtime.storage, FINETUNE, _JOBS_SHOWN)
    except QueueUnavailableError:
        queue_down = True
    try:
        scopes = registry.camera_versions()
    except VersionError as exc:
        raise PageError(
            503, "Per-camera versions unreadable", f"The per-camera model versions: {exc}"
        ) from None
    served_for: dict[str, list[str]] = {}
    for camera, version in sorted(scopes.items()):
        served_for.setdefault(version, []).append(camera)
    return page.render(
        "models.html",
        versions=versions,
        scopes=scopes,
        served_for=served_for,
        active=registry.active_version(),
        served=runtime.model_check.check(),
        jobs=jobs,
        queue_down=queue_down,
        comparisons=comparisons,
        history=history_view(versions),
        disagreements=disagreements,
    )


@router.get("/models/{version}/comparison/{name}")
def comparison_image(version: str, name: str, page: PageDep) -> Response:
    """An overlay PNG of a version's comparison (admin, like the page that shows it)."""
    page.require(Role.admin)
    registry = page.runtime.storage.registry()
    if not name.endswith(".png"):
        raise PageError(404, "No such image", "That image does not exist.")
    try:
        path = registry.attachment_path(version, f"comparison/{name}")
    except UnknownVersionError:
        raise PageError(404, "No such image", "That image does not exist.") from None
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private"})


@router.post("/models/{version}/activate", response_class=HTMLResponse)
async def activate(version: str, page: PageDep) -> Response:
    """Make ``version`` the default, or with a ``cameras`` field (comma-separated) serve
    it to those cameras only."""
    principal = page.require(Role.admin)
    form = await page.form()
    field = form.get("cameras")
    names = [c.strip() for c in field.split(",") if c.strip()] if isinstance(field, str) else []
    if field is not None and not names:  # the per-camera form, left empty: not the default
        raise PageError(
            422, "No camera named", "Name at least one camera (comma-separated), then try again."
        )
    registry = page.runtime.storage.registry()
    try:
        registry.activate(
            version,
            reason=f"activated by {principal.name} on the models page",
            cameras=names or None,
        )
    except UnknownVersionError:
        raise PageError(404, "No such version", f"There is no model version {version}.") from None
    except InvalidCameraError as exc:
        raise PageError(422, "Not a camera", f"{exc}. Go back and correct it.") from None
    except VersionError as exc:
        raise PageError(409, "Cannot activate", str(exc)) from None
    scope = f"for cameras {','.join(names)}" if names else "for default"
    page.runtime.audit.record(
        "activate_model", principal.name, model_version=version, outcome=scope
    )
    suffix = "&cameras=" + quote(",".join(names)) if names else ""
    return page.redirect(f"/models?activated={version}{suffix}")


@router.post("/models/cameras/{camera}/default", response_class=HTMLResponse)
async def camera_to_default(camera: str, page: PageDep) -> Response:
    """Serve ``camera`` the default version again."""
    principal = page.require(Role.admin)
    await page.form()
    registry = page.runtime.storage.registry()
    try:
        removed = registry.deactivate_cameras([camera], reason=f"by {principal.name}")
    except InvalidCameraError as exc:
        raise PageError(404, "Not a camera", str(exc)) from None
    except NoCameraVersionError as exc:
        raise PageError(404, "Nothing to change", str(exc)) from None
    except VersionError as exc:
        raise PageError(409, "Cannot change", str(exc)) from None
    page.runtime.audit.record(
        "deactivate_camera_model",
        principal.name,
        model_version=removed[camera],
        outcome=f"camera {camera} back to the default",
    )
    return page.redirect("/models?default_for=" + quote(camera))


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
