"""Deleting a video and everything derived from it.

A recording of a patient is withdrawn as a whole. :func:`delete_video` removes, under
the data directory:

- the pool frames sampled from it (a detection job's samples and the peak frames of
  reviewed events), with their labels (in the frame records), their rendered maps
  (``frames/maps/<frame_id>.*``), and the hard links a running fine-tune exported
  (``tmp/finetune-*/**/<frame_id>.*``);
- results staged in ``tmp/`` by a job that was interrupted (``tmp/results-<id>-*``)
  and an upload being stored (``tmp/video-<id>-*``);
- the frames of candidate-beside-parent comparisons (``models/vNNNN/comparison/
  <frame_id>.*.png`` and their entries in ``comparison.json``);
- last, the results (``events.json``, ``scores.npz``, maps, masked frames) and the
  upload (the video, its record, its reviews). The upload goes last so that a
  deletion interrupted half-way can simply be asked for again.

A model version whose training data held frames of the video (its card's
``data.video_ids``) keeps what it learned, so the deletion is refused with
:class:`TrainedOnVideoError` naming the versions, unless the caller withdraws the data
(``withdraw=True``): then each such card records a ``withdrawn`` entry (what, when,
who) and a history line. A card written before cards listed their videos, trained on
pool frames after the video was uploaded, may have used it and counts as trained on
it.

The API's in-memory caches and the job record are the caller's to drop; what stays
is the audit log's line saying who deleted which id, and the withdrawn entries.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ._exceptions import StorageError, TrainedOnVideoError, VideoNotFoundError
from .serving.versions import ModelCard
from .storage import Storage, VideoRecord, validate_id

__all__ = [
    "DeletionReport",
    "TrainedOnVideoError",
    "delete_video",
    "purge_derived",
    "purge_orphaned_frames",
    "versions_trained_on",
    "withdraw_missing",
]

logger = logging.getLogger(__name__)


@dataclass
class DeletionReport:
    """What :func:`delete_video` removed."""

    video_id: str
    #: pool frames removed (their records, images and maps)
    frames: list[str] = field(default_factory=list)
    #: files and folders removed besides the frames (staging, links, comparison images)
    other: int = 0
    #: versions whose cards now record the withdrawal
    withdrawn_from: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "frames": len(self.frames),
            "other": self.other,
            "withdrawn_from": self.withdrawn_from,
        }


def _trained_on(card: ModelCard, video_id: str, uploaded_at: float | None) -> bool:
    video_ids = card.data.get("video_ids")
    if isinstance(video_ids, list):
        return video_id in video_ids
    if "counts" not in card.data:  # not trained on pool frames (a registered checkpoint)
        return False
    # written before cards listed their videos: it may have used the video's frames if
    # it was trained after the upload
    if uploaded_at is None:
        return True
    try:
        created = datetime.fromisoformat(card.created_at).timestamp()
    except ValueError:
        return True
    return created >= uploaded_at


def versions_trained_on(storage: Storage, video_id: str) -> list[str]:
    """The model versions whose training data held frames of ``video_id``."""
    validate_id(video_id, "video_id")
    try:
        uploaded_at: float | None = storage.get_video(video_id).created_at
    except (VideoNotFoundError, StorageError):
        uploaded_at = None
    if not storage.models.is_dir():
        return []
    registry = storage.registry()
    return [c.version for c in registry.versions() if _trained_on(c, video_id, uploaded_at)]


def _remove(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return 1
    if path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
        return 1
    return 0


def _purge_comparisons(storage: Storage, frame_ids: set[str], video_id: str) -> int:
    """Drop the video's frames from every version's comparison; return files removed
    (through the registry, so the object store's copies go too)."""
    return storage.registry().withdraw_comparison_frames(frame_ids, video_id)


def _purge_tmp(storage: Storage, video_id: str, frame_ids: set[str]) -> int:
    """Staged results and uploads of the video, and exported links to its frames."""
    removed = 0
    if not storage.tmp.is_dir():
        return 0
    for prefix in ("results", "video"):
        for entry in storage.tmp.glob(f"{prefix}-{video_id}-*"):
            removed += _remove(entry)
    if frame_ids:
        for export in storage.tmp.glob("finetune-*"):
            for path in export.rglob("*"):
                if path.is_file() and path.name.split(".", 1)[0] in frame_ids:
                    removed += _remove(path)
    return removed


def purge_derived(storage: Storage, video_id: str) -> DeletionReport:
    """Remove everything derived from ``video_id`` except its upload and results.

    Also what a job that raced a deletion calls for the frames it added meanwhile.
    """
    validate_id(video_id, "video_id")
    report = DeletionReport(video_id)
    pool = storage.frame_pool()
    for record in pool.records(video_ids=[video_id]):
        if pool.remove(record.frame_id):
            report.frames.append(record.frame_id)
    frame_ids = set(report.frames)
    report.other += _purge_tmp(storage, video_id, frame_ids)
    report.other += _purge_comparisons(storage, frame_ids, video_id)
    return report


def purge_orphaned_frames(storage: Storage) -> list[str]:
    """Remove the pool frames whose video is gone; return their ids.

    Frames left by deletions made before a deletion took the frames along, or added
    by a job that raced a deletion. A frame joins the pool only after its video is
    stored, so a frame without its video is never work in progress."""
    pool = storage.frame_pool()
    removed = []
    gone: dict[str, bool] = {}
    for record in pool.records():
        video_id = record.video_id
        if video_id is None:
            continue
        if video_id not in gone:
            try:
                gone[video_id] = not storage.video_exists(video_id)
            except StorageError:  # not an id of ours: leave it to a person
                gone[video_id] = False
        if gone[video_id] and pool.remove(record.frame_id):
            removed.append(record.frame_id)
    if removed:
        videos = sorted(v for v, missing in gone.items() if missing)
        logger.info("removed %d pool frame(s) of %d deleted video(s)", len(removed), len(videos))
    return removed


def withdraw_missing(storage: Storage, card: ModelCard, *, by: str) -> list[str]:
    """Record on ``card`` the videos of its ``data.video_ids`` deleted meanwhile (while
    it was trained on an export of their frames); return their ids."""
    video_ids = card.data.get("video_ids")
    if not isinstance(video_ids, list):
        return []
    gone = [v for v in video_ids if not storage.video_exists(v)]
    registry = storage.registry()
    for video_id in gone:
        registry.record_withdrawal(
            card.version,
            {
                "what": f"video {video_id} was deleted while this version was trained on it",
                "video_id": video_id,
                "frames": None,
            },
            by=by,
        )
    return gone


def delete_video(
    storage: Storage, video_id: str, *, by: str, withdraw: bool = False
) -> tuple[VideoRecord, DeletionReport]:
    """Delete ``video_id`` and everything derived from it (see the module docstring).

    Raises :class:`~worker._exceptions.VideoNotFoundError` for an unknown video and
    :class:`TrainedOnVideoError` when a model version was trained on it and
    ``withdraw`` is false. ``by`` names who asked (recorded on withdrawn cards).
    """
    record = storage.get_video(video_id)
    versions = versions_trained_on(storage, video_id)
    if versions and not withdraw:
        raise TrainedOnVideoError(video_id, versions)
    report = purge_derived(storage, video_id)
    registry = storage.registry() if versions else None
    for version in versions:
        assert registry is not None
        registry.record_withdrawal(
            version,
            {
                "what": f"video {video_id} deleted with its {len(report.frames)} pool frame(s)",
                "video_id": video_id,
                "frames": len(report.frames),
            },
            by=by,
        )
        report.withdrawn_from.append(version)
    for stale in storage.tmp.glob(f"results-{video_id}-*") if storage.tmp.is_dir() else []:
        report.other += _remove(stale)  # a job that staged meanwhile
    storage.delete_video(video_id)
    logger.info(
        "video %s deleted with %d pool frame(s) and %d other derived file(s)%s",
        video_id,
        len(report.frames),
        report.other,
        f"; withdrawn from {', '.join(versions)}" if versions else "",
    )
    return record, report
