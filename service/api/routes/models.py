"""``/v1/models``: model versions with their cards; activation and roll-back (admin).

A version is activated either as the default (served to every video whose camera has
no version of its own) or, with ``cameras``, for those cameras only; ``DELETE
/v1/models/cameras/{camera}`` gives a camera back to the default.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from worker.cameras import CAMERA_MAX_LENGTH, CAMERA_PATTERN, CAMERA_RULE
from worker.serving.versions import (
    ModelCard,
    ModelRegistry,
)

from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ..deps import AdminDep, RuntimeDep, ViewerDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["models"], responses=PROBLEM_RESPONSES)

Version = Path(pattern=r"^v\d{4,9}$", description="a version name such as v0003")
Camera = Annotated[str, StringConstraints(pattern=CAMERA_PATTERN, max_length=CAMERA_MAX_LENGTH)]
CameraPath = Annotated[
    str,
    Path(pattern=CAMERA_PATTERN, max_length=CAMERA_MAX_LENGTH, description=CAMERA_RULE),
]


class ModelPublic(BaseModel):
    version: str
    status: str = Field(
        description="active (the default, served to cameras without a version of their "
        "own), candidate, rejected or retired"
    )
    reason: str
    created_at: str
    parent: str | None
    checkpoint_sha256: str
    config: dict[str, Any]
    data: dict[str, Any]
    metrics_before: dict[str, Any] | None
    metrics_after: dict[str, Any] | None
    history: list[dict[str, str]]
    cameras: list[str] | None = Field(
        default=None,
        description="the cameras whose frames it was adapted on; null: every camera's",
    )
    active_for: list[str] = Field(
        default_factory=list, description="the cameras it is activated for (their videos use it)"
    )
    withdrawn: list[dict[str, Any]] = Field(
        default_factory=list,
        description="training data deleted after it was trained (what, video_id, frames, "
        "at, by); the weights are unchanged",
    )

    @classmethod
    def from_card(cls, card: ModelCard, active_for: list[str] | None = None) -> ModelPublic:
        return cls(**card.to_dict(), active_for=active_for or [])


class ModelList(BaseModel):
    active: str | None = Field(description="the default version; null: ATCON_CHECKPOINT")
    cameras: dict[str, str] = Field(
        default_factory=dict,
        description="camera -> the version activated for it; other cameras use the default",
    )
    versions: list[ModelPublic]


class ActivateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="activated by an admin", max_length=500)
    cameras: list[Camera] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="activate for these cameras only, keeping the default version; "
        f"omitted: make it the default. {CAMERA_RULE}",
    )


class CameraScopes(BaseModel):
    cameras: dict[str, str] = Field(
        description="camera -> the version activated for it; other cameras use the default"
    )


def _registry(runtime: RuntimeDep) -> ModelRegistry:
    return runtime.storage.registry()


@router.get("", response_model=ModelList, summary="Every model version, newest first")
def list_models(principal: ViewerDep, runtime: RuntimeDep) -> ModelList:
    registry = _registry(runtime)
    cards = registry.versions()[::-1]
    scopes = _scopes(registry)
    return ModelList(
        active=registry.active_version(),
        cameras=scopes,
        versions=[ModelPublic.from_card(c, _served(scopes, c.version)) for c in cards],
    )


def _scopes(registry: ModelRegistry) -> dict[str, str]:
    """``VersionsUnreadableError`` (503) at the HTTP boundary when unreadable."""
    return registry.camera_versions()


def _served(scopes: dict[str, str], version: str) -> list[str]:
    return sorted(camera for camera, v in scopes.items() if v == version)


# before "/{version}": the first matching path wins
@router.get(
    "/cameras",
    response_model=CameraScopes,
    summary="The versions activated for single cameras",
)
def camera_scopes(principal: ViewerDep, runtime: RuntimeDep) -> CameraScopes:
    return CameraScopes(cameras=_scopes(_registry(runtime)))


@router.get(
    "/{version}",
    response_model=ModelPublic,
    summary="One version's card",
    responses=problem_responses(404),
)
def get_model(principal: ViewerDep, runtime: RuntimeDep, version: str = Version) -> ModelPublic:
    registry = _registry(runtime)
    card = registry.get(version)
    return ModelPublic.from_card(card, _served(_scopes(registry), version))


@router.post(
    "/{version}/activate",
    response_model=ModelPublic,
    summary="Serve this version from the next job on, as the default or for some cameras "
    "(also the way to roll back)",
    responses=problem_responses(400, 404, 409),
)
def activate_model(
    principal: AdminDep,
    runtime: RuntimeDep,
    body: ActivateRequest | None = None,
    version: str = Version,
) -> ModelPublic:
    body = body or ActivateRequest()
    registry = _registry(runtime)
    card = registry.activate(
        version, reason=f"{body.reason} ({principal.name})", cameras=body.cameras
    )
    scope = f"cameras {','.join(body.cameras)}" if body.cameras else "default"
    runtime.audit.record(
        "activate_model", principal.name, model_version=version, outcome=f"for {scope}"
    )
    return ModelPublic.from_card(card, _served(_scopes(registry), version))


@router.delete(
    "/cameras/{camera}",
    status_code=204,
    summary="Serve this camera's videos the default version again (admin)",
    responses=problem_responses(404),
)
def delete_camera_scope(principal: AdminDep, runtime: RuntimeDep, camera: CameraPath) -> Response:
    removed = _registry(runtime).deactivate_cameras(
        [camera], reason=f"deactivated by {principal.name}"
    )
    runtime.audit.record(
        "deactivate_camera_model",
        principal.name,
        model_version=removed[camera],
        outcome=f"camera {camera} back to the default",
    )
    return Response(status_code=204)
