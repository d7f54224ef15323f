"""``/v1/frames``: the frame pool: upload frames, the review queue, labels."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from worker.cameras import CAMERA_MAX_LENGTH, CAMERA_PATTERN, CAMERA_RULE
from worker.frame_pool import FrameRecord, InvalidFrameError, UnknownFrameError

from ...core.frame_maps import FRAME_MAP_KINDS, frame_maps
from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ..deps import OperatorDep, RuntimeDep, ViewerDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/frames", tags=["frames"], responses=PROBLEM_RESPONSES)

FrameId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="a frame id")]
MAX_FRAME_UPLOAD = 256 * 2**20
_ZIP_MAGIC = b"PK\x03\x04"


class FramePublic(BaseModel):
    frame_id: str
    source: str
    added_at: datetime
    video_id: str | None
    time_s: float | None
    labels: list[str] | None
    split: str | None
    consistency: float | None = Field(description="attention consistency; low: maps disagree")
    camera: str | None = Field(
        default=None, description="the ward camera it came from; null: not known"
    )
    image_url: str
    maps: dict[str, str]

    @classmethod
    def from_record(cls, record: FrameRecord) -> FramePublic:
        base = f"/v1/frames/{record.frame_id}"
        return cls(
            frame_id=record.frame_id,
            source=record.source,
            added_at=datetime.fromisoformat(record.added_at),
            video_id=record.video_id,
            time_s=record.time_s,
            labels=record.labels,
            split=record.split,
            consistency=record.consistency,
            camera=record.camera,
            image_url=f"{base}/image.png",
            maps={kind: f"{base}/maps/{kind}.png" for kind in FRAME_MAP_KINDS},
        )


class RejectedEntry(BaseModel):
    name: str
    reason: str


class FramesAdded(BaseModel):
    accepted: list[str]
    rejected: list[RejectedEntry]


class ReviewQueue(BaseModel):
    frames: list[FramePublic]


class LabelsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[str] = Field(
        max_length=100, description="class names present in the frame; empty: no event"
    )


def _no_model(exc: Exception) -> HTTPException:
    return HTTPException(503, f"the frame pool needs a model to serve: {exc}")


@contextmanager
def _answers() -> Iterator[None]:
    """Unknown frames answer 404; no model to serve, 503."""
    try:
        yield
    except UnknownFrameError as exc:
        raise HTTPException(404, str(exc)) from exc
    except LookupError as exc:
        raise _no_model(exc) from exc


@router.post(
    "",
    status_code=201,
    response_model=FramesAdded,
    summary="Add unlabeled frames: one image (PNG, JPEG) or a zip of images",
    responses=problem_responses(400, 413, 415),
)
async def add_frames(
    request: Request,
    principal: OperatorDep,
    runtime: RuntimeDep,
    file: Annotated[UploadFile, File(description="an image, or a zip of images")],
    camera: Annotated[
        str | None,
        Form(
            pattern=CAMERA_PATTERN,
            max_length=CAMERA_MAX_LENGTH,
            description=f"optional: the ward camera the frames come from; {CAMERA_RULE}",
        ),
    ] = None,
) -> FramesAdded:
    """Zip entries that are not images or whose paths leave the archive are rejected
    and listed; the others are kept."""
    data = await file.read(MAX_FRAME_UPLOAD + 1)
    if len(data) > MAX_FRAME_UPLOAD:
        raise HTTPException(413, "frame uploads are limited to 256 MiB; split the zip")
    if not data:
        raise HTTPException(400, "the file is empty; send an image or a zip of images")
    try:
        pool = await run_in_threadpool(frame_maps(request).pool)
    except (LookupError, OSError) as exc:
        raise _no_model(exc) from exc
    try:
        if data.startswith(_ZIP_MAGIC):
            import io

            result = await run_in_threadpool(pool.import_zip, io.BytesIO(data), camera=camera)
            accepted, rejected = result.accepted, result.rejected
        else:
            record = await run_in_threadpool(pool.add_image_bytes, data, camera=camera)
            accepted, rejected = [record.frame_id], []
    except InvalidFrameError as exc:
        raise HTTPException(415, f"{exc}; send a PNG or JPEG image, or a zip of them") from exc
    runtime.audit.record("add_frames", principal.name, frame_ids=accepted)
    return FramesAdded(
        accepted=accepted, rejected=[RejectedEntry(name=n, reason=r) for n, r in rejected]
    )


@router.get(
    "/review",
    response_model=ReviewQueue,
    summary="Unlabeled frames whose attention maps disagree most, first",
)
def review_queue(
    request: Request,
    principal: ViewerDep,
    runtime: RuntimeDep,
    limit: int = Query(20, ge=1, le=200),
) -> ReviewQueue:
    maps = frame_maps(request)
    try:
        pool = maps.pool()
        maps.score_unscored(pool, pool.records(labeled=False), limit=limit)
    except (LookupError, OSError) as exc:
        raise _no_model(exc) from exc
    return ReviewQueue(frames=[FramePublic.from_record(r) for r in pool.review_queue(limit)])


@router.get(
    "/{frame_id}",
    response_model=FramePublic,
    summary="One frame's record",
    responses=problem_responses(404),
)
def get_frame(
    request: Request, frame_id: FrameId, principal: ViewerDep, runtime: RuntimeDep
) -> FramePublic:
    with _answers():
        return FramePublic.from_record(frame_maps(request).pool().get(frame_id))


@router.get(
    "/{frame_id}/image.png",
    response_class=FileResponse,
    summary="The frame at model input size",
    responses={**problem_responses(404), 200: {"content": {"image/png": {}}}},
)
def frame_image(
    request: Request, frame_id: FrameId, principal: ViewerDep, runtime: RuntimeDep
) -> FileResponse:
    with _answers():
        path = frame_maps(request).pool().image_path(frame_id)
    return FileResponse(path, media_type="image/png")


@router.get(
    "/{frame_id}/maps/{kind}.png",
    response_class=FileResponse,
    summary="The frame's Grad-CAM overlay or Guided Backprop map under the served model",
    responses={**problem_responses(404), 200: {"content": {"image/png": {}}}},
)
def frame_map(
    request: Request,
    frame_id: FrameId,
    principal: ViewerDep,
    runtime: RuntimeDep,
    kind: str = Path(pattern="^(" + "|".join(FRAME_MAP_KINDS) + ")$"),
) -> FileResponse:
    maps = frame_maps(request)
    with _answers():
        path = maps.render(maps.pool(), frame_id, kind)
    return FileResponse(path, media_type="image/png")


@router.put(
    "/{frame_id}/labels",
    response_model=FramePublic,
    summary="Store a clinician's labels; the frame joins the training or validation set",
    responses=problem_responses(400, 404),
)
def put_labels(
    request: Request,
    frame_id: FrameId,
    body: LabelsUpdate,
    principal: OperatorDep,
    runtime: RuntimeDep,
) -> FramePublic:
    maps = frame_maps(request)
    with _answers():
        try:
            record = maps.pool().set_labels(frame_id, body.labels, maps.class_names())
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
    runtime.audit.record("label_frame", principal.name, frame_ids=[frame_id])
    return FramePublic.from_record(record)
