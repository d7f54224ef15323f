"""The videos pages: the list with upload, one video with its timeline, maps and reviews.

``GET /videos``: every stored video, newest first, with its status (progress while
its job runs, the error when it failed), event count and model version; operators
get an upload form (the browser sends the file to ``POST /v1/videos`` with the
session cookie and its CSRF header, showing progress).

``GET /videos/{video_id}``: the player (the source endpoint answers range requests,
so seeking works), a timeline with one lane per class drawn to scale, and the
selected event's peak frame as frame, Grad-CAM overlay, Guided Backprop and masked
frame. While the video is processed the page shows the job's progress instead; when
the job failed, its error.

``POST /videos/{video_id}/events/{event_id}/review``: the confirm / false-positive
form of operators (the page's script sends the same verdict to the API's
``PUT /v1/videos/{video_id}/events/{event_id}/review`` without reloading).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from worker import (
    EventNotFoundError,
    NoResultsError,
    QueueUnavailableError,
    VideoNotFoundError,
)
from worker.cameras import CAMERA_RULE
from worker.detection.results import EVENT_ID_PATTERN
from worker.pool.reviews import (
    EventReview,
    ReviewChange,
    Verdict,
    frame_pool,
    history_of,
    read_history,
    read_reviews,
    review_event,
    review_of,
)
from worker.queue.interface import Job, JobState
from worker.storage import ID_PATTERN, Storage, VideoRecord

from ..api.routes.videos import job_or_none, video_public
from ..core.config import Role
from ..core.maps import available_kinds
from ..core.runtime import Runtime
from .session import PageDep, PageError

__all__ = ["LOW_CONSISTENCY", "router"]

router = APIRouter(include_in_schema=False)

#: events whose attention consistency is below this stand out on the page
LOW_CONSISTENCY = 0.5
_ID = re.compile(ID_PATTERN)
_EVENT_ID = re.compile(EVENT_ID_PATTERN)
_LIST_LIMIT = 500


def _not_found(video_id: str) -> PageError:
    if not _ID.match(video_id):
        return PageError(
            404,
            "Video not found",
            "This address does not name a video (a video id is 32 lowercase hexadecimal "
            "digits). Go back to the list of videos and open one from there.",
        )
    return PageError(
        404,
        "Video not found",
        f"There is no video {video_id}. It may have been deleted; the list of videos "
        "shows the ones stored.",
    )


@router.get("/videos", response_class=HTMLResponse)
def videos_page(page: PageDep) -> Response:
    principal = page.require(Role.viewer)
    runtime = page.runtime
    records = runtime.storage.list_videos()
    shown = records[:_LIST_LIMIT]
    jobs: dict[str, Job] = {}
    queue_down = False
    try:
        jobs = runtime.queue.get_many([r.job_id for r in shown])
    except QueueUnavailableError:
        queue_down = True
    videos = [video_public(r, jobs.get(r.job_id), runtime.storage) for r in shown]
    if not page.live_refresh:  # a live part re-read while a job runs is not a new read
        runtime.audit.record("list_videos", principal.name)
    return page.render(
        "videos.html",
        videos=videos,
        total=len(records),
        queue_down=queue_down,
        max_upload=runtime.settings.max_upload_bytes,
        camera_rule=CAMERA_RULE,
    )


def _event_view(
    video_id: str,
    event: dict[str, Any],
    review: EventReview | None,
    history: list[ReviewChange],
    duration: float,
) -> dict[str, Any]:
    base = f"/v1/videos/{video_id}/events/{event['id']}/maps"
    maps = {kind.value: f"{base}/{kind.value}.png" for kind in available_kinds(event)}
    start = float(event.get("start_s") or 0.0)
    end = max(start, float(event.get("end_s") or start))
    consistency = event.get("attention_consistency")
    consistency = float(consistency) if isinstance(consistency, int | float) else None
    return {
        "id": str(event["id"]),
        "label": str(event.get("label")),
        "start_s": start,
        "end_s": end,
        "peak_s": event.get("peak_s"),
        "score": event.get("score"),
        "mean_score": event.get("mean_score"),
        "consistency": consistency,
        "low": consistency is not None and consistency < LOW_CONSISTENCY,
        "maps": maps,
        "review": review.to_dict() if review is not None else None,
        "review_history": [c.public() for c in history],
        "review_url": f"/v1/videos/{video_id}/events/{event['id']}/review",
        "clip_url": f"/v1/videos/{video_id}/events/{event['id']}/clip.mp4",
        "left_pct": round(100.0 * min(start, duration) / duration, 3),
        "width_pct": round(100.0 * max(0.0, min(end, duration) - start) / duration, 3),
    }


def _duration(events: dict[str, Any], record: VideoRecord, listed: list[dict[str, Any]]) -> float:
    video = events.get("video")
    candidates = [
        video.get("duration_s") if isinstance(video, dict) else None,
        record.duration_s,
        max((float(e.get("end_s") or 0.0) for e in listed), default=0.0),
    ]
    for value in candidates:
        if isinstance(value, int | float) and value > 0:
            return float(value)
    return 1.0


def _lanes(events: dict[str, Any], views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    model = events.get("model")
    names = model.get("class_names") if isinstance(model, dict) else None
    classes = [str(n) for n in names] if isinstance(names, list) else []
    for view in views:  # a label the model list lacks still gets a lane
        if view["label"] not in classes:
            classes.append(view["label"])
    return [{"label": c, "events": [v for v in views if v["label"] == c]} for c in classes]


def _video_view(runtime: Runtime, video_id: str) -> dict[str, Any]:
    storage: Storage = runtime.storage
    if not _ID.match(video_id):
        raise _not_found(video_id)
    try:
        record = storage.get_video(video_id)
    except VideoNotFoundError:
        raise _not_found(video_id) from None
    job = job_or_none(runtime.queue, record.job_id)
    video = video_public(record, job, storage)
    events = storage.read_events(video_id)
    view: dict[str, Any] = {"video": video, "record": record, "results": events is not None}
    if events is None:
        return view
    reviews = read_reviews(storage, video_id)
    history = read_history(storage, video_id)
    listed = [e for e in events.get("events") or [] if isinstance(e, dict) and "id" in e]
    duration = _duration(events, record, listed)
    views = [
        _event_view(video_id, e, review_of(e, reviews), history_of(e, history), duration)
        for e in listed
    ]
    views.sort(key=lambda v: (v["start_s"], v["label"]))
    model = events.get("model")
    view.update(
        events=views,
        lanes=_lanes(events, views),
        duration=duration,
        model=model if isinstance(model, dict) else {},
        low_consistency=LOW_CONSISTENCY,
        ticks=_ticks(duration),
    )
    return view


def _ticks(duration: float) -> list[dict[str, float]]:
    """About six evenly spaced, round time marks under the timeline."""
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
    step = next((s for s in steps if duration / s <= 6), 7200)
    count = int(duration // step)
    return [{"t": k * step, "pct": 100.0 * k * step / duration} for k in range(count + 1)]


@router.get("/videos/{video_id}", response_class=HTMLResponse)
def video_page(video_id: str, page: PageDep, event: str | None = None) -> Response:
    principal = page.require(Role.viewer)
    view = _video_view(page.runtime, video_id)
    if not page.live_refresh:
        page.runtime.audit.record("read_events", principal.name, video_id=video_id)
    selected = None
    if view["results"] and view["events"]:
        selected = next((e for e in view["events"] if e["id"] == event), view["events"][0])
    running = view["video"].status in (JobState.queued, JobState.running, None)
    return page.render(
        "video.html",
        selected=selected,
        running=running,
        clip_margin=page.runtime.settings.clip_margin_s,
        **view,
    )


@router.post("/videos/{video_id}/events/{event_id}/review", response_class=HTMLResponse)
async def review_form(video_id: str, event_id: str, page: PageDep) -> Response:
    principal = page.require(Role.operator)
    form = await page.form()
    if not _ID.match(video_id):
        raise _not_found(video_id)
    if not _EVENT_ID.match(event_id):
        raise PageError(404, "Event not found", "This address does not name an event.")
    try:
        verdict = Verdict(str(form.get("verdict")))
    except ValueError:
        raise PageError(
            422, "Unknown verdict", "Choose Confirm or False positive for the event."
        ) from None
    storage = page.runtime.storage

    def review() -> None:
        pool = frame_pool(storage, page.runtime.settings, storage.read_events(video_id))
        review_event(storage, pool, video_id, event_id, verdict, principal.name)

    try:
        await run_in_threadpool(review)
    except VideoNotFoundError:
        raise _not_found(video_id) from None
    except EventNotFoundError:
        raise PageError(
            404, "Event not found", f"Video {video_id} has no event {event_id} (any more)."
        ) from None
    except NoResultsError:
        raise PageError(
            409, "Not processed yet", "This video has no events yet; wait until it is processed."
        ) from None
    page.runtime.audit.record(
        "review", principal.name, video_id=video_id, outcome=f"{verdict.value} {event_id}"
    )
    return page.redirect(f"/videos/{video_id}?event={quote(event_id)}#event-detail")
