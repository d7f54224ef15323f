"""The events inbox: every event of every video in one list, newest first, filtered.

A ward's night produces dozens of videos and hundreds of events; reviewers work
through them across videos. :class:`EventIndex` keeps one row per event in memory,
rebuilt per video only when that video's ``video.json``, ``events.json`` or
``reviews.json`` changed (inode, size and modification time, as
:mod:`service.core.events_cache`), so a query costs a directory listing, three
``stat`` calls per video and a pass over the rows.

An event's time (:attr:`InboxRow.occurred_at`) is the video's upload time plus the
event's start offset: the recording's own start time is not part of an upload.

Pages are cut with an opaque cursor (the last row's sort key), so rows added while a
reviewer pages never shift the next page. Each answer also counts, per filter, the
matching events for each value of that filter with the *other* filters applied (the
numbers a filter menu shows next to each choice).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from worker import StorageError
from worker.pool.reviews import REVIEWS_NAME, history_of, read_history, read_reviews, review_of
from worker.storage import EVENTS_NAME, RECORD_NAME, Storage

from .._exceptions import InvalidCursorError

__all__ = [
    "LOW_CONSISTENCY",
    "EventIndex",
    "InboxFilters",
    "InboxPage",
    "InboxRow",
    "InvalidCursorError",
    "ReviewState",
]

#: events whose attention consistency is below this count as "low"
LOW_CONSISTENCY = 0.5


class ReviewState(StrEnum):
    unreviewed = "unreviewed"
    confirmed = "confirmed"
    false_positive = "false_positive"


@dataclass(frozen=True)
class InboxRow:
    """One event as the inbox lists it."""

    video_id: str
    event_id: str
    label: str
    start_s: float
    end_s: float
    peak_s: float | None
    score: float | None
    consistency: float | None
    camera: str | None
    model_version: str | None
    filename: str | None
    video_created_at: float
    review: ReviewState
    reviewer: str | None
    reviewed_at: str | None
    history: tuple[dict[str, Any], ...]
    has_frame: bool

    @property
    def occurred_at(self) -> float:
        """Epoch seconds: the upload time plus the event's start offset."""
        return self.video_created_at + self.start_s

    @property
    def low(self) -> bool:
        return self.consistency is not None and self.consistency < LOW_CONSISTENCY

    @property
    def sort_key(self) -> tuple[float, str, str]:
        return (self.occurred_at, self.video_id, self.event_id)

    def public(self) -> dict[str, Any]:
        base = f"/v1/videos/{self.video_id}/events/{self.event_id}"
        return {
            "video_id": self.video_id,
            "event_id": self.event_id,
            "label": self.label,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "peak_s": self.peak_s,
            "score": self.score,
            "attention_consistency": self.consistency,
            "low_consistency": self.low,
            "camera": self.camera,
            "model_version": self.model_version,
            "filename": self.filename,
            "occurred_at": dt.datetime.fromtimestamp(self.occurred_at, dt.UTC).isoformat(),
            "review": {
                "state": self.review.value,
                "reviewer": self.reviewer,
                "reviewed_at": self.reviewed_at,
            },
            "review_history": list(self.history),
            "urls": {
                "thumbnail": f"{base}/thumbnail.jpg" if self.has_frame else None,
                "clip": f"{base}/clip.mp4",
                "review": f"{base}/review",
                "page": f"/videos/{self.video_id}?event={self.event_id}",
            },
        }


@dataclass(frozen=True)
class InboxFilters:
    """What to list; every field None (or False) lists everything."""

    labels: frozenset[str] | None = None
    cameras: frozenset[str] | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    review: ReviewState | None = None
    low_consistency: bool = False
    model_version: str | None = None
    video_id: str | None = None

    def failed(self, row: InboxRow) -> list[str]:
        """The names of the filters ``row`` does not pass (empty: it is listed)."""
        out = []
        if self.labels is not None and row.label not in self.labels:
            out.append("label")
        if self.cameras is not None and row.camera not in self.cameras:
            out.append("camera")
        if self.since is not None and row.occurred_at < self.since.timestamp():
            out.append("since")
        if self.until is not None and row.occurred_at >= self.until.timestamp():
            out.append("until")
        if self.review is not None and row.review is not self.review:
            out.append("review")
        if self.low_consistency and not row.low:
            out.append("low_consistency")
        if self.model_version is not None and row.model_version != self.model_version:
            out.append("model_version")
        if self.video_id is not None and row.video_id != self.video_id:
            out.append("video_id")
        return out

    def matches(self, row: InboxRow, skip: str | None = None) -> bool:
        """Whether ``row`` passes every filter but ``skip`` (a field name)."""
        return all(name == skip for name in self.failed(row))


@dataclass
class InboxPage:
    rows: list[InboxRow]
    total: int
    next_cursor: str | None
    counts: dict[str, Any] = field(default_factory=dict)


def encode_cursor(row: InboxRow) -> str:
    raw = json.dumps([row.occurred_at, row.video_id, row.event_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, video_id, event_id = json.loads(raw)
        return (float(when), str(video_id), str(event_id))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursorError(
            "cursor is not one this server handed out; start again without it"
        ) from exc


_ID = re.compile(r"^[0-9a-f]{32}$")


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class EventIndex:
    """Rows of every video's events, kept per video until one of its files changes."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._uploads = str(storage.uploads)
        self._results = str(storage.results)
        self._lock = threading.Lock()
        self._videos: dict[str, tuple[tuple[Any, ...], list[InboxRow]]] = {}
        #: the last answer of rows() and the versions it was built from
        self._sorted: tuple[dict[str, tuple[Any, ...]], list[InboxRow]] | None = None

    def _version(self, video_id: str) -> tuple[Any, ...] | None:
        """What identifies the video's files now; None when it is not (or no longer) a
        video. Plain ``os.stat`` on strings: this runs for every video on every query."""
        upload = os.path.join(self._uploads, video_id)
        record = _stat(os.path.join(upload, RECORD_NAME))
        if record is None:
            return None
        return (
            record,
            _stat(os.path.join(self._results, video_id, EVENTS_NAME)),
            _stat(os.path.join(upload, REVIEWS_NAME)),
        )

    def _build(self, video_id: str) -> list[InboxRow]:
        record = self.storage.get_video(video_id)
        events = self.storage.read_events(video_id)
        if events is None:
            return []
        reviews = read_reviews(self.storage, video_id)
        history = read_history(self.storage, video_id)
        model = events.get("model")
        version = model.get("version") if isinstance(model, dict) else None
        rows = []
        for event in events.get("events") or []:
            if not isinstance(event, dict) or "id" not in event:
                continue
            review = review_of(event, reviews)
            maps = event.get("maps")
            start = _number(event.get("start_s")) or 0.0
            rows.append(
                InboxRow(
                    video_id=video_id,
                    event_id=str(event["id"]),
                    label=str(event.get("label")),
                    start_s=start,
                    end_s=max(start, _number(event.get("end_s")) or start),
                    peak_s=_number(event.get("peak_s")),
                    score=_number(event.get("score")),
                    consistency=_number(event.get("attention_consistency")),
                    camera=record.camera,
                    model_version=version if isinstance(version, str) else None,
                    filename=record.filename,
                    video_created_at=float(record.created_at),
                    review=ReviewState(review.verdict.value) if review else ReviewState.unreviewed,
                    reviewer=review.reviewer if review else None,
                    reviewed_at=review.reviewed_at if review else None,
                    history=tuple(c.public() for c in history_of(event, history)),
                    has_frame=isinstance(maps, dict) and isinstance(maps.get("frame"), str),
                )
            )
        return rows

    def rows(self) -> list[InboxRow]:
        """Every event of every video, newest first (sorted again only after a change)."""
        if self.storage.shared_store:  # the object store: copy in what others published
            self.storage.refresh_copies()
        try:
            names = os.listdir(self._uploads)
        except FileNotFoundError:
            names = []
        versions = {}
        for video_id in names:
            if _ID.match(video_id):
                version = self._version(video_id)
                if version is not None:
                    versions[video_id] = version
        with self._lock:
            if self._sorted is not None and self._sorted[0] == versions:
                return self._sorted[1]
        out: list[InboxRow] = []
        for video_id, version in versions.items():
            with self._lock:
                cached = self._videos.get(video_id)
            if cached is None or cached[0] != version:
                try:
                    built = self._build(video_id)
                except StorageError:  # deleted or half-written meanwhile: skip it this time
                    continue
                cached = (version, built)
                with self._lock:
                    self._videos[video_id] = cached
            out.extend(cached[1])
        out.sort(key=lambda r: r.sort_key, reverse=True)
        with self._lock:
            for gone in set(self._videos) - set(versions):
                del self._videos[gone]
            self._sorted = (versions, out)
        return out

    def query(
        self, filters: InboxFilters, *, limit: int = 50, cursor: str | None = None
    ) -> InboxPage:
        """One page of the rows ``filters`` lets through, after ``cursor``, with counts."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        checked = [(row, filters.failed(row)) for row in self.rows()]
        matching = [row for row, failed in checked if not failed]
        start = 0
        if cursor is not None:
            after = decode_cursor(cursor)
            start = next((i for i, r in enumerate(matching) if r.sort_key < after), len(matching))
        page = matching[start : start + limit]
        more = start + limit < len(matching)
        return InboxPage(
            rows=page,
            total=len(matching),
            next_cursor=encode_cursor(page[-1]) if more and page else None,
            counts=_counts(checked),
        )


def _counts(checked: Iterable[tuple[InboxRow, list[str]]]) -> dict[str, Any]:
    """Per filter, how many events each of its values would list, other filters kept.

    ``checked`` pairs each row with the filters it fails: a row counts for a filter's
    values when it fails no filter, or that one alone."""
    label: Counter[str] = Counter()
    camera: Counter[str] = Counter()
    review: Counter[str] = Counter()
    version: Counter[str] = Counter()
    low = 0
    for row, failed in checked:
        if len(failed) > 1:
            continue
        only = failed[0] if failed else None
        if only in (None, "label"):
            label[row.label] += 1
        if only in (None, "camera"):
            camera[row.camera or ""] += 1
        if only in (None, "review"):
            review[row.review.value] += 1
        if only in (None, "model_version"):
            version[row.model_version or ""] += 1
        if row.low and only in (None, "low_consistency"):
            low += 1
    return {
        "label": dict(sorted(label.items())),
        "camera": dict(sorted(camera.items())),
        "review": {state.value: review.get(state.value, 0) for state in ReviewState},
        "model_version": dict(sorted(version.items())),
        "low_consistency": low,
    }


def parse_bound(value: str, what: str, *, end: bool = False) -> dt.datetime:
    """A date (``2026-03-01``) or an ISO 8601 time as an aware UTC datetime.

    A bare date as the ``end`` of a range means the end of that day, so
    ``since=2026-03-01&until=2026-03-01`` lists that whole day. Raises ``ValueError``
    naming ``what``.
    """
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return start + dt.timedelta(days=1) if end else start
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{what} must be a date (2026-03-01) or an ISO 8601 time "
            f"(2026-03-01T22:00:00Z), got {value!r:.40}"
        ) from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
