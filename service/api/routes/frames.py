"""``/v1/frames``: the frame pool: upload frames, the review queue, labels."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path as PathType
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from worker.cameras import CAMERA_MAX_LENGTH, CAMERA_PATTERN, CAMERA_RULE
from worker.frame_pool import (
    FramePool,
    FrameRecord,
    InvalidFrameError,
    UnknownFrameError,
    ZipTooLargeError,
)
from worker.settings import Settings

from ...core.frame_maps import FRAME_MAP_KINDS, frame_maps
from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ...core.uploads import CAMERA_FIELD, FILE_FIELD, receive_upload
from ..deps import OperatorDep, RuntimeDep, ViewerDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/frames", tags=["frames"], responses=PROBLEM_RESPONSES)

FrameId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="a frame id")]
#: a zip's local file header, and the end record an empty zip starts with
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "an image, or a zip of images",
                        },
                        CAMERA_FIELD: {
                            "type": "string",
                            "pattern": CAMERA_PATTERN,
                            "maxLength": CAMERA_MAX_LENGTH,
                            "description": "optional: the ward camera the frames come from; "
                            f"{CAMERA_RULE}",
                        },
                    },
                }
            }
        },
    }
}


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
    responses=problem_responses(400, 413, 415, 507),
    openapi_extra=_UPLOAD_BODY,
)
async def add_frames(request: Request, principal: OperatorDep, runtime: RuntimeDep) -> FramesAdded:
    """Zip entries that are not images or whose paths leave the archive are rejected
    and listed; the others are kept.

    The body is streamed to the data directory's ``tmp/`` after the caller is
    authenticated, and refused with 413 at the first byte over
    ``ATCON_MAX_FRAME_UPLOAD_BYTES``."""
    settings = runtime.settings
    received = await receive_upload(
        request,
        runtime.storage.new_upload_file,
        limit=settings.max_frame_upload_bytes,
        chunk=settings.upload_chunk_bytes,
        setting="ATCON_MAX_FRAME_UPLOAD_BYTES",
        what="image or zip of images",
        example="frames.zip",
    )
    try:
        if received.size == 0:
            raise HTTPException(400, "the file is empty; send an image or a zip of images")
        try:
            pool = await run_in_threadpool(frame_maps(request).pool)
        except (LookupError, OSError) as exc:
            raise _no_model(exc) from exc
        try:
            accepted, rejected = await run_in_threadpool(
                _add_file, pool, received.path, received.camera, settings
            )
        except ZipTooLargeError as exc:
            raise HTTPException(413, str(exc)) from exc
        except InvalidFrameError as exc:
            raise HTTPException(415, f"{exc}; send a PNG or JPEG image, or a zip of them") from exc
    finally:
        received.path.unlink(missing_ok=True)
    runtime.audit.record("add_frames", principal.name, frame_ids=accepted)
    return FramesAdded(
        accepted=accepted, rejected=[RejectedEntry(name=n, reason=r) for n, r in rejected]
    )


def _add_file(
    pool: FramePool, path: PathType, camera: str | None, settings: Settings
) -> tuple[list[str], list[tuple[str, str]]]:
    """Add a received image or zip of images; (accepted ids, rejected (name, reason))."""
    with open(path, "rb") as fh:
        if fh.read(4) in _ZIP_MAGICS:
            fh.seek(0)
            result = pool.import_zip(
                fh,
                camera=camera,
                max_entries=settings.zip_max_entries,
                max_total_bytes=settings.zip_max_total_bytes,
            )
            if not result.accepted and not result.rejected:
                raise InvalidFrameError("the zip archive holds no files")
            return result.accepted, result.rejected
        fh.seek(0)
        record = pool.add_image_bytes(fh.read(), camera=camera)
    return [record.frame_id], []


@router.get(
    "/review",
    response_model=ReviewQueue,
    summary="Frames to label next: the hardest to learn from, and a random sample to judge by",
)
def review_queue(
    request: Request,
    principal: ViewerDep,
    runtime: RuntimeDep,
    limit: int = Query(20, ge=1, le=200),
    camera: str | None = Query(
        None,
        pattern=CAMERA_PATTERN,
        max_length=CAMERA_MAX_LENGTH,
        description="that camera's frames only (the ones a camera's fine-tune learns from)",
    ),
) -> ReviewQueue:
    maps = frame_maps(request)
    try:
        pool = maps.pool()
        maps.score_unscored(pool, pool.records(labeled=False, camera=camera), limit=limit)
    except (LookupError, OSError) as exc:
        raise _no_model(exc) from exc
    frames = pool.review_queue(limit, camera=camera)
    return ReviewQueue(frames=[FramePublic.from_record(r) for r in frames])


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
