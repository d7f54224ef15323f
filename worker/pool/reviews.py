"""Clinicians' verdicts on detected events, and the labeled frames they give fine-tuning.

A reviewer confirms an event or marks it a false positive. The verdict is kept per
video in ``uploads/<video_id>/reviews.json`` (beside the upload, so re-running
detection does not lose it and deleting the video removes it)::

    {"schema_version": 1, "video_id": "...", "reviews": {"<event_id>": EventReview}}

and the event's peak frame (the ``frame`` PNG the detector wrote) joins the frame
pool (:class:`worker.pool.frames.FramePool`) labeled with the verdict: ``[label]`` for
a confirmed event, ``[]`` ("no event") for a false positive. Fine-tuning then uses it
like any labeled frame.

Reviewing an event again updates its record and relabels the same pool frame; it
never adds a second one. A review belongs to the event it was made on: when a video
is detected again and its event ``bed_exit-1`` now has another label or peak, the old
review no longer matches (:func:`review_of`) and a new review adds a new frame (the
old frame keeps its label, which stays true of that image).

Every change is also kept, per event, in the document's ``history`` (who, when, the
verdict before and after; :class:`ReviewChange`), and a verdict can be taken back
(:func:`undo_review`): the previous verdict is restored, or none, and the pool frame
is relabeled (or unlabeled) to match::

    "history": {"<event_id>": [ReviewChange, ...]}   oldest first

The document goes through the storage backend's documents
(:meth:`worker.storage.Storage.write_document`): a file in the data directory, or an
object in the store that every API replica reads. Concurrent reviews of one video are
serialised by the backend's document lock (an ``flock`` beside the file; a Redis lease
with the object store); a write replaces the whole document, so readers never see half
of it, and a review racing the video's deletion leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
from PIL import Image

from .._exceptions import EventNotFoundError, NoResultsError, NothingToUndoError, StorageError
from ..settings import Settings
from ..storage import REVIEWS_NAME, Storage, validate_id
from .frames import FramePool, UnknownFrameError

__all__ = [
    "REVIEWS_NAME",
    "EventReview",
    "ReviewChange",
    "Verdict",
    "document_name",
    "find_event",
    "frame_pool",
    "history_of",
    "read_history",
    "read_reviews",
    "review_event",
    "review_of",
    "undo_review",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: frame size of the pool when the results do not name the model's input size
DEFAULT_POOL_SIZE = 224


class Verdict(StrEnum):
    confirmed = "confirmed"
    false_positive = "false_positive"


@dataclass
class EventReview:
    """One verdict on one event, and the pool frame it labeled."""

    event_id: str
    verdict: Verdict
    reviewer: str
    reviewed_at: str
    label: str
    start_s: float
    end_s: float
    peak_s: float | None
    model_version: str | None
    #: the event's peak frame in the frame pool (None when the results hold no frame PNG)
    frame_id: str | None
    #: the labels that frame now carries: [label] or [] (no event)
    frame_labels: list[str]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EventReview:
        data = dict(data)
        data["verdict"] = Verdict(data["verdict"])
        return cls(**data)


@dataclass
class ReviewChange:
    """One change of an event's verdict: a review, or the undo of one."""

    #: "review" (a verdict given) or "undo" (the latest one taken back)
    action: str
    #: the verdict after the change (None: not reviewed)
    verdict: str | None
    #: the verdict before it (None: not reviewed)
    previous_verdict: str | None
    reviewer: str
    at: str
    #: the event it was made on (a re-detected event with another label or peak is
    #: another event)
    label: str
    peak_s: float | None
    #: the whole review before the change, restored when this change is undone
    previous: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public(self) -> dict[str, Any]:
        """What pages and the API show: who, when, what it was and became."""
        return {
            "action": self.action,
            "verdict": self.verdict,
            "previous_verdict": self.previous_verdict,
            "reviewer": self.reviewer,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReviewChange:
        names = {"action", "verdict", "previous_verdict", "reviewer", "at", "label", "peak_s"}
        return cls(**{k: data[k] for k in names}, previous=data.get("previous"))


def frame_pool(
    storage: Storage, settings: Settings, events: dict[str, Any] | None = None
) -> FramePool:
    """The data directory's frame pool, at the input size of the model that produced
    ``events`` (the size detection adds that model's frames at)."""
    size = DEFAULT_POOL_SIZE
    model = (events or {}).get("model")
    if isinstance(model, dict) and isinstance(model.get("input_size"), int):
        size = int(model["input_size"])
    return storage.frame_pool(size, settings.pool_val_fraction)


def document_name(video_id: str) -> str:
    """The video's reviews as a storage document (:meth:`worker.storage.Storage.document_path`)."""
    return f"uploads/{validate_id(video_id, 'video_id')}/{REVIEWS_NAME}"


def _document(storage: Storage, video_id: str) -> dict[str, Any]:
    try:
        data = storage.read_document(document_name(video_id))
        document = json.loads(data) if data is not None else {}
    except (StorageError, ValueError) as exc:
        raise StorageError(f"reviews of video {video_id} are unreadable: {exc}") from exc
    return document if isinstance(document, dict) else {}


def read_reviews(storage: Storage, video_id: str) -> dict[str, EventReview]:
    """The reviews of a video by event id (empty when none was made)."""
    return _reviews(_document(storage, video_id))


def read_history(storage: Storage, video_id: str) -> dict[str, list[ReviewChange]]:
    """Every verdict change of a video's events, by event id, oldest first."""
    return _history(_document(storage, video_id))


def _history(document: dict[str, Any]) -> dict[str, list[ReviewChange]]:
    history: dict[str, list[ReviewChange]] = {}
    for event_id, entries in (document.get("history") or {}).items():
        changes = []
        for entry in entries if isinstance(entries, list) else []:
            try:
                changes.append(ReviewChange.from_dict(entry))
            except (TypeError, KeyError):
                logger.warning("skipping an unreadable history entry of event %s", event_id)
        history[str(event_id)] = changes
    return history


def history_of(event: dict[str, Any], history: dict[str, list[ReviewChange]]) -> list[ReviewChange]:
    """The changes made on this very event (same id, label and peak), oldest first."""
    return [
        change
        for change in history.get(str(event.get("id")), [])
        if change.label == event.get("label") and change.peak_s == event.get("peak_s")
    ]


def _reviews(document: dict[str, Any]) -> dict[str, EventReview]:
    reviews: dict[str, EventReview] = {}
    for event_id, entry in (document.get("reviews") or {}).items():
        try:
            reviews[event_id] = EventReview.from_dict(entry)
        except (TypeError, ValueError, KeyError):
            logger.warning("skipping an unreadable review of event %s", event_id)
    return reviews


def review_of(event: dict[str, Any], reviews: dict[str, EventReview]) -> EventReview | None:
    """The review made on this very event (same id, label and peak), if any."""
    review = reviews.get(str(event.get("id")))
    if review is None or review.label != event.get("label"):
        return None
    if review.peak_s != event.get("peak_s"):
        return None
    return review


def find_event(events: dict[str, Any], event_id: str) -> dict[str, Any] | None:
    for event in events.get("events") or []:
        if isinstance(event, dict) and str(event.get("id")) == event_id:
            return event
    return None


@contextlib.contextmanager
def _locked(storage: Storage, video_id: str) -> Iterator[None]:
    """The video's reviews, locked across the deployment; the video must still exist."""
    gone = f"video {video_id} was deleted during the review"
    if not storage.video_exists(video_id):
        raise StorageError(gone)
    with storage.document_lock(document_name(video_id)):
        if not storage.video_exists(video_id):
            raise StorageError(gone)
        yield


def _peak_frame(storage: Storage, video_id: str, event: dict[str, Any]) -> np.ndarray | None:
    """The event's peak frame as the detector saved it, RGB uint8; None if there is none."""
    maps = event.get("maps")
    name = maps.get("frame") if isinstance(maps, dict) else None
    if not isinstance(name, str):
        return None
    path = storage.result_file(video_id, name)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        logger.warning("peak frame of an event of video %s unreadable: %s", video_id, exc)
        return None


def _model_version(events: dict[str, Any]) -> str | None:
    model = events.get("model")
    version = model.get("version") if isinstance(model, dict) else None
    return version if isinstance(version, str) else None


def review_event(
    storage: Storage,
    pool: FramePool,
    video_id: str,
    event_id: str,
    verdict: Verdict | str,
    reviewer: str,
    class_names: Sequence[str] | None = None,
) -> EventReview:
    """Record ``verdict`` on an event and label its peak frame in ``pool``; return the record.

    ``class_names`` are the classes a label may name (default: the classes of the model
    that produced the results). Raises ``VideoNotFoundError``, ``NoResultsError`` (no
    results yet), ``EventNotFoundError``, and ``ValueError`` for a bad ``verdict`` or
    ``reviewer``.
    """
    try:
        verdict = Verdict(verdict)
    except ValueError:
        allowed = ", ".join(v.value for v in Verdict)
        raise ValueError(f"verdict must be one of {allowed}, got {verdict!r}") from None
    if not reviewer:
        raise ValueError("reviewer must name who reviewed the event")
    camera = storage.get_video(video_id).camera  # VideoNotFoundError for an unknown video
    events = storage.read_events(video_id)
    if events is None:
        raise NoResultsError(f"video {video_id} has no results yet; review it once it is processed")
    event = find_event(events, event_id)
    if event is None:
        raise EventNotFoundError(f"video {video_id} has no event {event_id}")
    label = str(event.get("label"))
    if class_names is None:
        model = events.get("model")
        names = model.get("class_names") if isinstance(model, dict) else None
        class_names = list(names) if isinstance(names, list) else [label]
    if verdict is Verdict.confirmed and label not in class_names:
        raise ValueError(
            f"event {event_id} is labeled {label!r}, which is not among class_names "
            f"{list(class_names)}"
        )
    frame_labels = [label] if verdict is Verdict.confirmed else []
    version = _model_version(events)
    with _locked(storage, video_id):
        document = _document(storage, video_id)
        reviews, history = _reviews(document), _history(document)
        previous = review_of(event, reviews)
        frame_id = previous.frame_id if previous is not None else None
        if frame_id is not None:
            try:
                pool.get(frame_id)
            except UnknownFrameError:  # removed from the pool meanwhile: add it again
                frame_id = None
        if frame_id is None:
            rgb = _peak_frame(storage, video_id, event)
            if rgb is not None:
                peak = event.get("peak_s")
                record = pool.add_frame(
                    rgb,
                    source="review",
                    video_id=video_id,
                    camera=camera,
                    time_s=float(peak) if isinstance(peak, int | float) else None,
                )
                frame_id = record.frame_id
                consistency = event.get("attention_consistency")
                if isinstance(consistency, int | float) and version is not None:
                    pool.set_consistency(frame_id, float(consistency), version)
        if frame_id is not None:
            pool.set_labels(frame_id, frame_labels, list(class_names))
        review = EventReview(
            event_id=event_id,
            verdict=verdict,
            reviewer=reviewer,
            reviewed_at=_now(),
            label=label,
            start_s=float(event.get("start_s", 0.0)),
            end_s=float(event.get("end_s", 0.0)),
            peak_s=event.get("peak_s"),
            model_version=version,
            frame_id=frame_id,
            frame_labels=frame_labels,
        )
        reviews[event_id] = review
        history.setdefault(event_id, []).append(
            ReviewChange(
                action="review",
                verdict=verdict.value,
                previous_verdict=previous.verdict.value if previous is not None else None,
                reviewer=reviewer,
                at=review.reviewed_at,
                label=label,
                peak_s=event.get("peak_s"),
                previous=previous.to_dict() if previous is not None else None,
            )
        )
        _write(storage, video_id, reviews, history)
    logger.info("event %s of video %s reviewed: %s", event_id, video_id, verdict.value)
    return review


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _write(
    storage: Storage,
    video_id: str,
    reviews: dict[str, EventReview],
    history: dict[str, list[ReviewChange]],
) -> None:
    document = {
        "schema_version": SCHEMA_VERSION,
        "video_id": video_id,
        "reviews": {k: v.to_dict() for k, v in reviews.items()},
        "history": {k: [c.to_dict() for c in v] for k, v in history.items() if v},
    }
    name = document_name(video_id)
    storage.write_document(name, json.dumps(document, indent=1).encode("utf-8"))
    if not storage.video_exists(video_id):  # deleted meanwhile: leave nothing of it
        storage.delete_document(name)
        raise StorageError(f"video {video_id} was deleted during the review")


def _open_changes(changes: list[ReviewChange]) -> list[ReviewChange]:
    """The reviews not undone yet, oldest first (each undo takes back the latest)."""
    stack: list[ReviewChange] = []
    for change in changes:
        if change.action == "review":
            stack.append(change)
        elif change.action == "undo" and stack:
            stack.pop()
    return stack


def undo_review(
    storage: Storage,
    pool: FramePool,
    video_id: str,
    event_id: str,
    reviewer: str,
    class_names: Sequence[str] | None = None,
) -> EventReview | None:
    """Take back the event's latest verdict: restore the one before it (None: the event
    is unreviewed again) and relabel its pool frame to match; return what is now in force.

    The undo is itself kept in the history. Raises ``NothingToUndoError`` when every
    verdict on the event is taken back already, and the errors of :func:`review_event`.
    """
    if not reviewer:
        raise ValueError("reviewer must name who took the verdict back")
    storage.get_video(video_id)  # VideoNotFoundError for an unknown video
    events = storage.read_events(video_id)
    if events is None:
        raise NoResultsError(f"video {video_id} has no results yet; nothing was reviewed")
    event = find_event(events, event_id)
    if event is None:
        raise EventNotFoundError(f"video {video_id} has no event {event_id}")
    if class_names is None:
        model = events.get("model")
        names = model.get("class_names") if isinstance(model, dict) else None
        class_names = list(names) if isinstance(names, list) else [str(event.get("label"))]
    with _locked(storage, video_id):
        document = _document(storage, video_id)
        reviews, history = _reviews(document), _history(document)
        current = review_of(event, reviews)
        open_changes = _open_changes(history_of(event, history))
        if current is None or not open_changes:
            raise NothingToUndoError(f"event {event_id} of video {video_id} has no verdict to undo")
        latest = open_changes[-1]
        restored = EventReview.from_dict(latest.previous) if latest.previous else None
        if restored is not None:
            restored.frame_id = current.frame_id
            reviews[event_id] = restored
        else:
            reviews.pop(event_id, None)
        if current.frame_id is not None:
            try:
                if restored is not None:
                    pool.set_labels(current.frame_id, restored.frame_labels, list(class_names))
                else:
                    pool.clear_labels(current.frame_id)
            except UnknownFrameError:
                logger.warning("pool frame %s of event %s is gone", current.frame_id, event_id)
        history.setdefault(event_id, []).append(
            ReviewChange(
                action="undo",
                verdict=restored.verdict.value if restored is not None else None,
                previous_verdict=current.verdict.value,
                reviewer=reviewer,
                at=_now(),
                label=str(event.get("label")),
                peak_s=event.get("peak_s"),
            )
        )
        _write(storage, video_id, reviews, history)
    logger.info("verdict on event %s of video %s undone", event_id, video_id)
    return restored
