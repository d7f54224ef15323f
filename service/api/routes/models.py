"""``/v1/models``: model versions with their cards; activation and roll-back (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from worker.versions import ModelCard, ModelRegistry, UnknownVersionError, VersionError

from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ..deps import AdminDep, RuntimeDep, ViewerDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["models"], responses=PROBLEM_RESPONSES)

Version = Path(pattern=r"^v\d{4,9}$", description="a version name such as v0003")


class ModelPublic(BaseModel):
    version: str
    status: str = Field(description="active, candidate, rejected or retired")
    reason: str
    created_at: str
    parent: str | None
    checkpoint_sha256: str
    config: dict[str, Any]
    data: dict[str, Any]
    metrics_before: dict[str, Any] | None
    metrics_after: dict[str, Any] | None
    history: list[dict[str, str]]

    @classmethod
    def from_card(cls, card: ModelCard) -> ModelPublic:
        return cls(**card.to_dict())


class ModelList(BaseModel):
    active: str | None
    versions: list[ModelPublic]


class ActivateRequest(BaseModel):
    model_config = {"extra": "forbid"}
    reason: str = Field(default="activated by an admin", max_length=500)


def _registry(runtime: RuntimeDep) -> ModelRegistry:
    return ModelRegistry(runtime.storage.models)


@router.get("", response_model=ModelList, summary="Every model version, newest first")
def list_models(principal: ViewerDep, runtime: RuntimeDep) -> ModelList:
    registry = _registry(runtime)
    cards = registry.versions()[::-1]
    return ModelList(
        active=registry.active_version(), versions=[ModelPublic.from_card(c) for c in cards]
    )


@router.get(
    "/{version}",
    response_model=ModelPublic,
    summary="One version's card",
    responses=problem_responses(404),
)
def get_model(principal: ViewerDep, runtime: RuntimeDep, version: str = Version) -> ModelPublic:
    try:
        return ModelPublic.from_card(_registry(runtime).get(version))
    except UnknownVersionError as exc:
        raise HTTPException(404, str(exc)) from exc


@router.post(
    "/{version}/activate",
    response_model=ModelPublic,
    summary="Serve this version from the next job on (also the way to roll back)",
    responses=problem_responses(400, 404, 409),
)
def activate_model(
    principal: AdminDep,
    runtime: RuntimeDep,
    body: ActivateRequest | None = None,
    version: str = Version,
) -> ModelPublic:
    reason = (body or ActivateRequest()).reason
    try:
        card = _registry(runtime).activate(version, reason=f"{reason} ({principal.name})")
    except UnknownVersionError as exc:
        raise HTTPException(404, str(exc)) from exc
    except VersionError as exc:
        raise HTTPException(409, str(exc)) from exc
    runtime.audit.record("activate_model", principal.name, model_version=version)
    return ModelPublic.from_card(card)
