"""``/v1/videos``: upload, list, metadata, events, maps, source, delete."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from worker import (
    InvalidIdError,
    JobNotFoundError,
    QueueError,
    QueueUnavailableError,
    VideoDecodeError,
    VideoNotFoundError,
    deletion,
)
from worker.cameras import CAMERA_RULE
from worker.pool.reviews import (
    EventReview,
    ReviewChange,
    history_of,
    read_history,
    read_reviews,
    review_of,
)
from worker.pool.reviews import document_name as reviews_document
from worker.queue.interface import Job, JobQueue, JobState
from worker.runtime.jobs import DETECT
from worker.storage import EVENTS_NAME, Storage, VideoRecord, clean_filename, new_id

from ...core.maps import MapKind, available_kinds, map_source, render_heat_png
from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ...core.runtime import Runtime
from ...core.uploads import (
    probe_upload,
    receive_upload,
    upload_openapi,
)
from ..deps import AdminDep, EventId, OperatorDep, RuntimeDep, VideoId, ViewerDep
from ..schemas import UploadAccepted, VideoList, VideoPublic, VideoUrls

__all__ = ["job_or_none", "router", "video_public"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/videos", tags=["videos"], responses=PROBLEM_RESPONSES)

_MEDIA_TYPES = {
    "mov,mp4,m4a,3gp,3g2,mj2": "video/mp4",
    "matroska,webm": "video/webm",
    "avi": "video/x-msvideo",
    "mpegts": "video/mp2t",
    "mpeg": "video/mpeg",
    "gif": "image/gif",
}

_UPLOAD_BODY = upload_openapi(
    f"the ward camera that recorded the video; {CAMERA_RULE}. Its frames in the pool "
    "carry it, and the video is scored by the model version activated for it, else the "
    "default"
)


def _urls(video_id: str, job_id: str) -> VideoUrls:
    base = f"/v1/videos/{video_id}"
    return VideoUrls(events=f"{base}/events", source=f"{base}/source", job=f"/v1/jobs/{job_id}")


def _model_version(events: dict[str, Any]) -> str | None:
    model = events.get("model")
    if isinstance(model, dict) and isinstance(model.get("version"), str):
        return str(model["version"])
    version = events.get("model_version")
    return version if isinstance(version, str) else None


def video_public(record: VideoRecord, job: Job | None, storage: Storage) -> VideoPublic:
    events = storage.read_events(record.video_id)
    status: JobState | None = job.status if job is not None else None
    progress = job.progress if job is not None else None
    if events is not None:  # results on disk are the truth, whatever the queue says
        status, progress = JobState.done, 1.0
    event_list = events.get("events") if events is not None else None
    return VideoPublic(
        video_id=record.video_id,
        job_id=record.job_id,
        filename=record.filename,
        size_bytes=record.size_bytes,
        created_at=record.created_at,  # type: ignore[arg-type]  # pydantic: epoch -> UTC
        status=status,
        progress=progress,
        error=job.error if job is not None and events is None else None,
        model_version=_model_version(events) if events is not None else None,
        event_count=len(event_list) if isinstance(event_list, list) else None,
        container=record.container,
        codec=record.codec,
        width=record.width,
        height=record.height,
        duration_s=record.duration_s,
        fps=record.fps,
        camera=record.camera,
        urls=_urls(record.video_id, record.job_id),
    )


def job_or_none(queue: JobQueue, job_id: str) -> Job | None:
    try:
        return queue.get(job_id)
    except (JobNotFoundError, QueueUnavailableError):
        return None


@router.post(
    "",
    status_code=202,
    response_model=UploadAccepted,
    summary="Upload a video; it is probed, stored and queued for detection",
    responses=problem_responses(400, 413, 415, 507),
    openapi_extra=_UPLOAD_BODY,
)
async def upload_video(
    request: Request, response: Response, principal: OperatorDep, runtime: RuntimeDep
) -> UploadAccepted:
    settings, storage, queue = runtime.settings, runtime.storage, runtime.queue
    await run_in_threadpool(queue.ping)  # 503 before a long transfer, not after it
    received = await receive_upload(
        request,
        storage.new_upload_file,
        limit=settings.max_upload_bytes,
        chunk=settings.upload_chunk_bytes,
    )
    try:
        probe = await run_in_threadpool(probe_upload, received.path)
    except VideoDecodeError:
        received.path.unlink(missing_ok=True)
        runtime.audit.record("upload", principal.name, outcome="rejected: not a video")
        raise
    video_id, job_id = new_id(), new_id()
    record = VideoRecord(
        video_id=video_id,
        job_id=job_id,
        size_bytes=received.size,
        filename=clean_filename(received.filename),
        uploaded_by=principal.name,
        container=probe.container,
        codec=probe.codec,
        width=probe.width,
        height=probe.height,
        duration_s=probe.duration_s,
        fps=probe.fps,
        camera=received.camera,
    )
    try:
        await run_in_threadpool(storage.save_video, record, received.path)
    finally:
        received.path.unlink(missing_ok=True)
    try:
        await run_in_threadpool(queue.enqueue, DETECT, {"video_id": video_id}, job_id=job_id)
    except QueueError:
        # not accepted: take the upload back so that a retry is the only copy
        with contextlib.suppress(VideoNotFoundError):
            await run_in_threadpool(storage.delete_video, video_id)
        runtime.audit.record("upload", principal.name, video_id=video_id, outcome="queue down")
        raise
    runtime.audit.record("upload", principal.name, video_id=video_id, job_id=job_id)
    logger.info("video %s accepted (%d bytes), job %s queued", video_id, received.size, job_id)
    status_url = f"/v1/jobs/{job_id}"
    response.headers["Location"] = f"/v1/videos/{video_id}"
    return UploadAccepted(video_id=video_id, job_id=job_id, status_url=status_url)


@router.get("", response_model=VideoList, summary="Stored videos, newest first")
def list_videos(
    principal: ViewerDep,
    runtime: RuntimeDep,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> VideoList:
    records = runtime.storage.list_videos()
    page = records[offset : offset + limit]
    jobs: dict[str, Job] = {}
    with contextlib.suppress(QueueUnavailableError):
        jobs = runtime.queue.get_many([r.job_id for r in page])
    runtime.audit.record("list_videos", principal.name)
    return VideoList(
        videos=[video_public(r, jobs.get(r.job_id), runtime.storage) for r in page],
        total=len(records),
    )


@router.get(
    "/{video_id}",
    response_model=VideoPublic,
    summary="A video's metadata and status",
    responses=problem_responses(404),
)
def get_video(video_id: VideoId, principal: ViewerDep, runtime: RuntimeDep) -> VideoPublic:
    record = runtime.storage.get_video(video_id)
    runtime.audit.record("read_video", principal.name, video_id=video_id)
    return video_public(record, job_or_none(runtime.queue, record.job_id), runtime.storage)


def _events_or_409(runtime: Runtime, video_id: str) -> dict[str, Any]:
    record = runtime.storage.get_video(video_id)
    events = runtime.storage.read_events(video_id)
    if events is None:
        job = job_or_none(runtime.queue, record.job_id)
        state = f"its job is {job.status.value}" if job is not None else "its job is unknown"
        if job is not None and job.status is JobState.running:
            state += f" ({job.progress:.0%} done)"
        if job is not None and job.status is JobState.failed:
            state += f": {job.error}"
        raise HTTPException(
            409, f"video {video_id} has no results yet: {state}; see /v1/jobs/{record.job_id}"
        )
    return events


def _events_and_reviews(
    runtime: Runtime, video_id: str
) -> tuple[dict[str, Any], dict[str, EventReview], dict[str, list[ReviewChange]]]:
    events = _events_or_409(runtime, video_id)
    storage = runtime.storage
    return events, read_reviews(storage, video_id), read_history(storage, video_id)


def _decorate(
    video_id: str, reviews: dict[str, EventReview], history: dict[str, list[ReviewChange]]
) -> Callable[[dict[str, Any]], None]:
    """Adds each event's map URLs, its review (None when not reviewed) and the history
    of its verdicts (oldest first)."""

    def decorate(events: dict[str, Any]) -> None:
        for event in events.get("events") or []:
            if isinstance(event, dict) and "id" in event:
                base = f"/v1/videos/{video_id}/events/{event['id']}/maps"
                event["map_urls"] = {
                    kind.value: f"{base}/{kind.value}.png" for kind in available_kinds(event)
                }
                review = review_of(event, reviews)
                event["review"] = review.to_dict() if review is not None else None
                event["review_history"] = [c.public() for c in history_of(event, history)]

    return decorate


@router.get(
    "/{video_id}/events",
    summary="The video's events (events.json of the detector) with map URLs and reviews",
    response_class=Response,
    responses={
        **problem_responses(404, 409),
        200: {"content": {"application/json": {"schema": {"type": "object"}}}},
    },
)
async def get_events(video_id: VideoId, principal: ViewerDep, runtime: RuntimeDep) -> Response:
    storage, cache = runtime.storage, runtime.events_cache
    path = storage.results_dir(video_id) / EVENTS_NAME
    # the object store: the replica's copy is brought up to date (one conditional GET)
    reviews_path = await run_in_threadpool(storage.document_path, reviews_document(video_id))
    version = (cache.version(path), cache.version(reviews_path))
    body = cache.get(video_id, version) if version[0] is not None else None
    if body is None:
        events, reviews, history = await run_in_threadpool(_events_and_reviews, runtime, video_id)
        if version[0] is None:  # published since the first look; stat what was read
            version = (cache.version(path) or (0, 0, 0), cache.version(reviews_path))
        # keyed by the versions seen *before* reading: a file changed meanwhile gets a
        # new key, so a stale answer is never served under it
        body = cache.build(video_id, version, events, _decorate(video_id, reviews, history))
    runtime.audit.record("read_events", principal.name, video_id=video_id)
    return Response(body, media_type="application/json")


@router.get(
    "/{video_id}/events/{event_id}/maps/{kind}.png",
    response_class=Response,
    summary="One attention map of one event, as PNG",
    responses={**problem_responses(404, 409), 200: {"content": {"image/png": {}}}},
)
def get_map(
    video_id: VideoId, event_id: EventId, kind: MapKind, principal: ViewerDep, runtime: RuntimeDep
) -> Response:
    events = _events_or_409(runtime, video_id)
    event = next(
        (
            e
            for e in events.get("events") or []
            if isinstance(e, dict) and str(e.get("id")) == event_id
        ),
        None,
    )
    if event is None:
        raise HTTPException(404, f"video {video_id} has no event {event_id}")
    source = map_source(event, kind)
    if source is None:
        raise HTTPException(404, f"event {event_id} has no {kind.value} map")
    name, raw = source
    try:
        path = runtime.storage.result_file(video_id, name)
    except InvalidIdError:
        logger.error("events.json of %s names a file outside its results", video_id)
        raise HTTPException(404, f"event {event_id} has no {kind.value} map") from None
    if not path.is_file():
        raise HTTPException(404, f"the {kind.value} map of event {event_id} is missing on disk")
    runtime.audit.record("read_map", principal.name, video_id=video_id)
    if not raw:
        return FileResponse(path, media_type="image/png")
    video = events.get("video")
    width, height = (video.get("width"), video.get("height")) if isinstance(video, dict) else (0, 0)
    size = (width, height) if isinstance(width, int) and isinstance(height, int) else None
    try:
        return Response(render_heat_png(path, size), media_type="image/png")
    except ValueError as exc:
        logger.error("map %s of video %s cannot be rendered: %s", name, video_id, exc)
        raise HTTPException(404, f"the {kind.value} map of event {event_id} is unreadable") from exc


@router.get(
    "/{video_id}/source",
    response_class=FileResponse,
    summary="The uploaded video; supports HTTP range requests for seeking",
    responses={
        **problem_responses(404, 416),
        200: {"content": {"video/*": {}, "image/gif": {}}},
        206: {"description": "Partial Content: the byte range asked for"},
    },
)
def get_source(video_id: VideoId, principal: ViewerDep, runtime: RuntimeDep) -> FileResponse:
    record = runtime.storage.get_video(video_id)
    runtime.audit.record("read_source", principal.name, video_id=video_id)
    media_type = _MEDIA_TYPES.get(record.container or "", "application/octet-stream")
    return FileResponse(runtime.storage.source_path(video_id), media_type=media_type)


@router.delete(
    "/{video_id}",
    status_code=204,
    summary="Delete a video and everything derived from it (admin)",
    description="Removes the upload, its results, the pool frames sampled from it with "
    "their labels and maps, staged work and the job. Refused with 409 when a model "
    "version was trained on its frames, unless `withdraw=true`: then the deletion is "
    "recorded on each such version's card.",
    responses=problem_responses(404, 409),
)
def delete_video(
    video_id: VideoId,
    principal: AdminDep,
    runtime: RuntimeDep,
    withdraw: bool = Query(
        False,
        description="delete even if model versions were trained on its frames, recording "
        "the withdrawal on their cards",
    ),
) -> Response:
    try:
        record, report = deletion.delete_video(
            runtime.storage, video_id, by=principal.name, withdraw=withdraw
        )
    except deletion.TrainedOnVideoError as exc:
        runtime.audit.record(
            "delete", principal.name, video_id=video_id, outcome="refused: trained on"
        )
        raise HTTPException(409, str(exc)) from exc
    runtime.events_cache.forget(video_id)
    try:
        runtime.queue.delete(record.job_id)
    except QueueError as exc:  # the worker finds the video gone and drops the job
        logger.warning("job %s of deleted video not removed from the queue: %s", record.job_id, exc)
    runtime.audit.record(
        "delete",
        principal.name,
        video_id=video_id,
        job_id=record.job_id,
        frame_ids=report.frames,
        outcome="ok"
        + (f"; withdrawn from {', '.join(report.withdrawn_from)}" if report.withdrawn_from else ""),
    )
    return Response(status_code=204)
