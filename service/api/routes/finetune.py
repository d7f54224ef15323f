"""``/v1/finetune``: queue an ATCON fine-tune of the active model on the frame pool (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from worker.finetune.request import FinetuneRequest, queue_finetune

from ...core.config import Settings
from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ..deps import AdminDep, RuntimeDep

__all__ = ["document_limits", "router"]

router = APIRouter(prefix="/v1", tags=["finetune"], responses=PROBLEM_RESPONSES)


class FinetuneAccepted(BaseModel):
    job_id: str
    status_url: str


@router.post(
    "/finetune",
    status_code=202,
    response_model=FinetuneAccepted,
    summary="Queue a fine-tune; GET the status URL for its steps, losses and result",
    responses=problem_responses(400, 422),
)
def start_finetune(
    principal: AdminDep, runtime: RuntimeDep, body: FinetuneRequest | None = None
) -> FinetuneAccepted:
    """Fine-tunes run one at a time: a second request waits in the queue. The result
    is a new model version, promoted only if the gate allows (see ``/v1/models``).
    ``steps`` may not exceed ``ATCON_FINETUNE_MAX_STEPS``; ``epochs`` that work out to
    more steps are capped there."""
    most = runtime.settings.finetune_max_steps
    if body is not None and body.steps is not None and body.steps > most:
        raise HTTPException(
            422,
            f"steps: {body.steps} is more than this server allows for one fine-tune ({most}, "
            "ATCON_FINETUNE_MAX_STEPS); ask for fewer steps",
        )
    job_id = queue_finetune(runtime.queue, body, trigger="api")  # InvalidIdError: 422
    runtime.audit.record("finetune", principal.name, job_id=job_id)
    return FinetuneAccepted(job_id=job_id, status_url=f"/v1/jobs/{job_id}")


def document_limits(document: dict[str, Any], settings: Settings) -> None:
    """Write this server's ``ATCON_FINETUNE_MAX_STEPS`` into the OpenAPI document as
    the maximum of ``steps``, so the document says what the server accepts."""
    schema = document.get("components", {}).get("schemas", {}).get("FinetuneRequest", {})
    steps = schema.get("properties", {}).get("steps", {})
    for option in [steps, *steps.get("anyOf", [])]:
        if option.get("type") == "integer":
            option["maximum"] = settings.finetune_max_steps
