"""The fine-tune request: what a caller may ask of a fine-tune, checked before it is
queued (:class:`FinetuneRequest`), and putting it on its queue (:func:`queue_finetune`).

The API, the pages, the CLI and the nightly trigger all queue through here; the job
itself is :func:`worker.finetune.job.finetune_job`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..cameras import CAMERA_MAX_LENGTH, CAMERA_PATTERN
from ..queue.interface import JobQueue
from ..runtime.jobs import FINETUNE
from ..storage import ID_PATTERN

__all__ = ["FinetuneRequest", "queue_finetune"]


class FinetuneRequest(BaseModel):
    """What a fine-tune may be asked to do; every field is optional (settings decide)."""

    model_config = ConfigDict(
        extra="forbid",
        # the document says what _one_length refuses: epochs and steps both given
        json_schema_extra={
            "not": {
                "required": ["epochs", "steps"],
                "properties": {"epochs": {"type": "number"}, "steps": {"type": "integer"}},
            }
        },
    )

    since: datetime | None = Field(
        default=None, description="use unlabeled frames added at or after this time"
    )
    video_ids: list[Annotated[str, Field(pattern=ID_PATTERN)]] | None = Field(
        default=None,
        max_length=10_000,
        description="use unlabeled frames from these videos only",
    )
    epochs: float | None = Field(
        default=None, gt=0, le=100, description="passes over the unlabeled frames"
    )
    steps: int | None = Field(default=None, ge=1, le=1_000_000, description="optimiser steps")
    mode: Literal["alternating", "unsupervised"] | None = Field(
        default=None,
        description="ATCON fine-tuning's schedule: alternating with the labeled frames "
        "(default when there are any), or ATCON alone; mode, alpha and mask_intensity "
        "apply to method 'atcon' only, and given without a method they ask for it",
    )
    alpha: float | None = Field(
        default=None, ge=0, le=1000, description="method 'atcon': weight of the labeled set"
    )
    mask_intensity: float | None = Field(
        default=None, gt=0, le=1000, description="method 'atcon': the Guided-Backprop mask's gain"
    )
    lr: float | None = Field(default=None, gt=0, le=10, description="Adam learning rate")
    batch_size: int | None = Field(default=None, ge=1, le=512)
    layer: str | None = Field(
        default=None,
        max_length=100,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$",
        description="Grad-CAM layer by module name, e.g. layer3 (default: automatic); "
        "an earlier layer when the automatic one's maps are too small for ATCON",
    )
    camera: str | None = Field(
        default=None,
        pattern=CAMERA_PATTERN,
        max_length=CAMERA_MAX_LENGTH,
        description="adapt to this camera only: start from the version serving it, use its "
        "unlabeled and labeled frames only, and if the gate promotes the new version, "
        "activate it for this camera only (the default version stays)",
    )
    compare_videos: bool | None = Field(
        default=None,
        description="detect again with the new version on the ATCON_FINETUNE_COMPARE_VIDEOS "
        "most recent videos and list the events it and the served model disagree on "
        "(minutes of CPU); default: only for a version left a candidate for an admin to "
        "decide on, not for one the gate promoted or rejected",
    )

    method: str | None = Field(
        default=None,
        max_length=100,
        pattern=r"^(none|(adabn|tent|atcon|pseudo|distill|anchor|supervised|recalibrate)"
        r"(\+(adabn|tent|atcon|pseudo|distill|anchor|supervised|recalibrate))*)$",
        description="how to adapt: 'atcon' (ATCON fine-tuning as published), or a "
        "'+'-joined set of adabn, tent, atcon, pseudo, distill, anchor, supervised, "
        "recalibrate (docs/results/adaptation.md measures them); default: "
        "ATCON_FINETUNE_METHOD",
    )

    @model_validator(mode="after")
    def _method_known(self) -> FinetuneRequest:
        from models.methods import ATCON, method_name, parse_method

        atcon_only = [
            n for n in ("mode", "alpha", "mask_intensity") if getattr(self, n) is not None
        ]
        if self.method is not None:
            method = method_name(parse_method(self.method))  # ValueError names the bad component
            if atcon_only and method != ATCON:
                raise ValueError(
                    f"{', '.join(atcon_only)} set ATCON fine-tuning (method 'atcon'), which "
                    f"method {method} does not run: drop them or ask for method 'atcon'"
                )
        elif atcon_only:
            self.method = ATCON  # the options of ATCON fine-tuning ask for it
        return self

    @model_validator(mode="after")
    def _one_length(self) -> FinetuneRequest:
        if self.epochs is not None and self.steps is not None:
            raise ValueError(
                "give either epochs or steps, not both: they both set how long the fine-tune runs"
            )
        return self


def _video_ids_valid(request: FinetuneRequest) -> None:
    from ..storage import validate_id

    for video_id in request.video_ids or []:
        validate_id(video_id, "video_ids entry")


def queue_finetune(
    queue: JobQueue, request: FinetuneRequest | None = None, *, trigger: str = "api"
) -> str:
    """Put a fine-tune on its queue; return the job id."""
    request = request or FinetuneRequest()
    _video_ids_valid(request)
    payload = {"request": request.model_dump(mode="json", exclude_none=True), "trigger": trigger}
    return queue.enqueue(FINETUNE, payload).job_id
