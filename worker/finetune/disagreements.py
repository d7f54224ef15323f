"""What a fine-tune would change on the ward: the events a new version and the served
model disagree on, on the most recent videos.

The fine-tune job (:mod:`worker.finetune.job`) runs the candidate's detector (without
maps) on the ``ATCON_FINETUNE_COMPARE_VIDEOS`` most recent processed videos (of the
fine-tune's camera, for a camera's fine-tune) when the version is left a candidate for
an admin to decide on, or the request asks (``compare_videos``), and compares its
events with the ones stored for each video (found by the model that served it then).
Two events agree when they have the same label and overlap by a temporal IoU of at
least 0.5; the rest are events only the served model found (the candidate would drop
them) and events only the candidate found (it would add them). Stored with the version as
``disagreements.json``; the models page lists them with links to the videos.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._exceptions import StorageError, WorkerError
from ..settings import Settings
from ..storage import Storage

__all__ = ["DISAGREEMENTS_JSON", "compare_events", "event_disagreements", "recent_videos"]

logger = logging.getLogger(__name__)

DISAGREEMENTS_JSON = "disagreements.json"
#: two events of one label agree from this temporal IoU on
TIOU = 0.5


def _iou(a: dict[str, Any], b: dict[str, Any]) -> float:
    start_a, end_a = float(a.get("start_s") or 0.0), float(a.get("end_s") or 0.0)
    start_b, end_b = float(b.get("start_s") or 0.0), float(b.get("end_s") or 0.0)
    inter = max(0.0, min(end_a, end_b) - max(start_a, start_b))
    union = max(end_a, end_b) - min(start_a, start_b)
    return inter / union if union > 0 else float(start_a == start_b and end_a == end_b)


def _brief(event: dict[str, Any]) -> dict[str, Any]:
    return {k: event.get(k) for k in ("id", "label", "start_s", "end_s", "score")}


def compare_events(
    served: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]], tiou: float = TIOU
) -> dict[str, Any]:
    """Match events of the same label greedily by temporal IoU (best pairs first);
    ``{"agreed": n, "only_served": [...], "only_candidate": [...]}``."""
    if not 0 < tiou <= 1:
        raise ValueError(f"tiou must be in (0, 1], got {tiou}")
    pairs = sorted(
        (
            (_iou(s, c), i, j)
            for i, s in enumerate(served)
            for j, c in enumerate(candidate)
            if s.get("label") == c.get("label")
        ),
        reverse=True,
    )
    used_s: set[int] = set()
    used_c: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < tiou:
            break
        if i not in used_s and j not in used_c:
            used_s.add(i)
            used_c.add(j)
    return {
        "agreed": len(used_s),
        "only_served": [_brief(e) for i, e in enumerate(served) if i not in used_s],
        "only_candidate": [_brief(e) for j, e in enumerate(candidate) if j not in used_c],
    }


def recent_videos(storage: Storage, count: int, camera: str | None = None) -> list[str]:
    """The ``count`` most recently uploaded videos with results (of ``camera``, if given)."""
    chosen: list[str] = []
    for record in storage.list_videos():  # newest first
        if len(chosen) >= count:
            break
        if camera is not None and record.camera != camera:
            continue
        if storage.has_results(record.video_id):
            chosen.append(record.video_id)
    return chosen


def event_disagreements(
    storage: Storage,
    settings: Settings,
    candidate: Path,
    video_ids: Sequence[str],
    work: Path,
) -> dict[str, Any]:
    """Detect with ``candidate`` on each video and compare with its stored events.

    A video that cannot be detected again (deleted meanwhile, undecodable) is listed
    with its error; the comparison of the others stands.
    """
    from ..detection.detector import DetectionConfig, Detector  # heavy: torch, the model
    from ..detection.motion import GateConfig

    config = DetectionConfig(
        sample_fps=settings.sample_fps,
        batch_size=settings.batch_size,
        device=settings.device,
        maps=False,
        # gated as the served model's detections were, so only the models differ
        gating=(
            GateConfig(max_interval_s=settings.gate_max_interval_s) if settings.gating else None
        ),
    )
    detector = Detector(candidate, config=config)
    videos = []
    totals = {"agreed": 0, "only_served": 0, "only_candidate": 0}
    for video_id in video_ids:
        entry: dict[str, Any] = {"video_id": video_id}
        try:
            record = storage.get_video(video_id)
            stored = storage.read_events(video_id)
            if stored is None:
                raise StorageError(f"video {video_id} has no results any more")
            model = stored.get("model")
            entry["camera"] = record.camera
            entry["served_version"] = model.get("version") if isinstance(model, dict) else None
            out = work / video_id
            found = detector.detect(storage.video_input(video_id), out, video_id=video_id)
            shutil.rmtree(out, ignore_errors=True)
            served = [e for e in stored.get("events") or [] if isinstance(e, dict)]
            result = compare_events(served, found.get("events") or [])
            entry.update(result)
            totals["agreed"] += result["agreed"]
            totals["only_served"] += len(result["only_served"])
            totals["only_candidate"] += len(result["only_candidate"])
        except (WorkerError, OSError) as exc:  # WorkerError: decode, storage, checkpoint
            logger.warning("candidate not compared on video %s: %s", video_id, exc)
            entry["error"] = str(exc)
        videos.append(entry)
    return {"tiou": TIOU, "videos": videos, "summary": {"videos": len(videos), **totals}}
