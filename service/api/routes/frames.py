"""``/v1/frames``: the frame pool: upload frames, the review queue, labels.

The API never runs the model: frames without a score, and maps not drawn yet, are
asked of a detect worker as a ``frames`` job (:mod:`worker.pool.scoring`). The
review queue answers with what is stored and says ``scoring: true`` while the job
runs; a map not drawn yet answers 202 with the job and ``Retry-After``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path as PathType
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from worker import EmptyZipError, InvalidFrameError, QueueError, ZipTooLargeError
from worker.cameras import CAMERA_MAX_LENGTH, CAMERA_PATTERN, CAMERA_RULE
from worker.pool.frames import FramePool, FrameRecord, check_zip
from worker.pool.importer import IMPORT, discard_archive, stage_archive
from worker.pool.scoring import FRAME_MAP_KINDS, frame_map_path, request_scoring
from worker.serving.model_cache import ServedModel
from worker.settings import Settings
from worker.storage import ID_PATTERN, Storage, new_id

from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ...core.runtime import Runtime
from ...core.uploads import receive_upload, upload_openapi
from ..deps import OperatorDep, RuntimeDep, ViewerDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/frames", tags=["frames"], responses=PROBLEM_RESPONSES)

FrameId = Annotated[str, Path(pattern=ID_PATTERN, description="a frame id")]
#: a zip's local file header, and the end record an empty zip starts with
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")

_UPLOAD_BODY = upload_openapi(
    f"the ward camera the frames come from; {CAMERA_RULE}", "an image, or a zip of images"
)


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


class ImportAccepted(BaseModel):
    job_id: str
    status_url: str = Field(
        description="GET it: when done, its result lists the frames added and each entry "
        "refused with its reason; an archive without a usable image fails with the reason"
    )
    entries: int = Field(description="file entries in the archive, to be checked one by one")


class ReviewQueue(BaseModel):
    frames: list[FramePublic]
    scoring: bool = Field(
        default=False,
        description="unscored frames are being scored by a worker; ask again to see them",
    )
    scoring_job_id: str | None = Field(
        default=None, description="the job scoring them (GET /v1/jobs/{job_id})"
    )


class MapPending(BaseModel):
    job_id: str
    status: str
    detail: str


class LabelsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[str] = Field(
        max_length=100, description="class names present in the frame; empty: no event"
    )


def _pool(runtime: Runtime) -> tuple[FramePool, ServedModel]:
    """The frame pool at the served model's input size, and that model.

    ``NoModelError`` and ``CheckpointError`` become 503 at the HTTP boundary
    (:mod:`service.core.problems`)."""
    served = runtime.served.current()
    pool = runtime.storage.frame_pool(served.info.input_size, runtime.settings.pool_val_fraction)
    return pool, served


@router.post(
    "",
    status_code=201,
    response_model=FramesAdded,
    summary="Add unlabeled frames: one image (PNG, JPEG) at once, or a zip of images by a job",
    responses={
        **problem_responses(400, 413, 415, 503, 507),
        202: {
            "model": ImportAccepted,
            "description": "a zip archive: checked and queued; its import job adds the frames",
        },
    },
    openapi_extra=_UPLOAD_BODY,
)
async def add_frames(request: Request, principal: OperatorDep, runtime: RuntimeDep) -> Any:
    """One image is added at once (201). A zip of images is checked from its directory
    (entry count and declared size under ``ATCON_ZIP_MAX_ENTRIES`` and
    ``ATCON_ZIP_MAX_TOTAL_BYTES``, not empty) and answered 202 with an ``import`` job:
    a worker extracts it, and the job's result lists the frames added and each entry
    refused with its reason (not an image, a path leaving the archive, ...).

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
        if await run_in_threadpool(_is_zip, received.path):
            return await _queue_import(runtime, principal.name, received.path, received.camera)
        pool, _ = await run_in_threadpool(_pool, runtime)
        try:
            record = await run_in_threadpool(_add_image, pool, received.path, received.camera)
        except InvalidFrameError as exc:
            raise HTTPException(415, f"{exc}; send a PNG or JPEG image, or a zip of them") from exc
    finally:
        received.path.unlink(missing_ok=True)  # a queued archive was moved away already
    runtime.audit.record("add_frames", principal.name, frame_ids=[record.frame_id])
    return FramesAdded(accepted=[record.frame_id], rejected=[])


def _is_zip(path: PathType) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in _ZIP_MAGICS


def _add_image(pool: FramePool, path: PathType, camera: str | None) -> FrameRecord:
    with open(path, "rb") as fh:
        return pool.add_image_bytes(fh.read(), camera=camera)


def _check_and_stage(settings: Settings, storage: Storage, path: PathType, upload_id: str) -> int:
    with open(path, "rb") as fh:
        entries = check_zip(
            fh, max_entries=settings.zip_max_entries, max_total_bytes=settings.zip_max_total_bytes
        )
    stage_archive(storage, path, upload_id)
    return entries


async def _queue_import(
    runtime: Runtime, principal: str, path: PathType, camera: str | None
) -> JSONResponse:
    """Check a received zip cheaply, stage it and queue its ``import`` job (202)."""
    upload_id = new_id()
    try:
        entries = await run_in_threadpool(
            _check_and_stage, runtime.settings, runtime.storage, path, upload_id
        )
    except ZipTooLargeError as exc:
        raise HTTPException(413, str(exc)) from exc
    except EmptyZipError as exc:
        raise HTTPException(415, str(exc)) from exc
    except InvalidFrameError as exc:
        raise HTTPException(415, f"{exc}; send a PNG or JPEG image, or a zip of them") from exc
    payload = {"upload_id": upload_id, "camera": camera}
    try:
        await run_in_threadpool(runtime.queue.enqueue, IMPORT, payload, job_id=upload_id)
    except QueueError:
        await run_in_threadpool(discard_archive, runtime.storage, upload_id)
        runtime.audit.record("import_frames", principal, job_id=upload_id, outcome="queue down")
        raise
    runtime.audit.record("import_frames", principal, job_id=upload_id)
    status_url = f"/v1/jobs/{upload_id}"
    accepted = ImportAccepted(job_id=upload_id, status_url=status_url, entries=entries)
    return JSONResponse(accepted.model_dump(), status_code=202, headers={"Location": status_url})


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
    """Unscored frames are not waited for: a worker scores them (``scoring: true``)
    and they join the queue in order when their score is stored."""
    pool, served = _pool(runtime)
    unscored = [
        r.frame_id for r in pool.records(labeled=False, camera=camera) if r.consistency is None
    ]
    job_id = None
    if unscored:
        job_id = request_scoring(runtime.queue, served.name, unscored).job_id
    frames = pool.review_queue(limit, camera=camera)
    return ReviewQueue(
        frames=[FramePublic.from_record(r) for r in frames],
        scoring=bool(unscored),
        scoring_job_id=job_id,
    )


@router.get(
    "/{frame_id}",
    response_model=FramePublic,
    summary="One frame's record",
    responses=problem_responses(404),
)
def get_frame(frame_id: FrameId, principal: ViewerDep, runtime: RuntimeDep) -> FramePublic:
    return FramePublic.from_record(_pool(runtime)[0].get(frame_id))


@router.get(
    "/{frame_id}/image.png",
    response_class=FileResponse,
    summary="The frame at model input size",
    responses={**problem_responses(404), 200: {"content": {"image/png": {}}}},
)
def frame_image(frame_id: FrameId, principal: ViewerDep, runtime: RuntimeDep) -> FileResponse:
    path = runtime.storage.frame_pool().image_path(frame_id)
    return FileResponse(path, media_type="image/png")


@router.get(
    "/{frame_id}/maps/{kind}.png",
    response_class=FileResponse,
    summary="The frame's Grad-CAM overlay or Guided Backprop map under the served model",
    responses={
        **problem_responses(404, 503),
        200: {"content": {"image/png": {}}},
        202: {"model": MapPending, "description": "not drawn yet: a worker draws it"},
    },
)
def frame_map(
    frame_id: FrameId,
    principal: ViewerDep,
    runtime: RuntimeDep,
    kind: str = Path(pattern="^(" + "|".join(FRAME_MAP_KINDS) + ")$"),
) -> Response:
    """A map not drawn yet under the served model answers 202 with the job drawing
    it and ``Retry-After``; ask again then."""
    pool, served = _pool(runtime)
    pool.get(frame_id)
    path = frame_map_path(pool.root, frame_id, served.name, kind)
    if path.is_file():
        return FileResponse(path, media_type="image/png")
    job = request_scoring(runtime.queue, served.name, [frame_id], maps=True)
    pending = MapPending(
        job_id=job.job_id,
        status=str(job.status),
        detail=f"the map is being drawn under model {served.name}; ask again shortly",
    )
    return JSONResponse(pending.model_dump(), status_code=202, headers={"Retry-After": "2"})


@router.put(
    "/{frame_id}/labels",
    response_model=FramePublic,
    summary="Store a clinician's labels; the frame joins the training or validation set",
    responses=problem_responses(400, 404),
)
def put_labels(
    frame_id: FrameId,
    body: LabelsUpdate,
    principal: OperatorDep,
    runtime: RuntimeDep,
) -> FramePublic:
    pool, served = _pool(runtime)
    pool.get(frame_id)
    record = pool.set_labels(frame_id, body.labels, list(served.info.class_names))
    runtime.audit.record("label_frame", principal.name, frame_ids=[frame_id])
    return FramePublic.from_record(record)
