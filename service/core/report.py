"""A video's report for the patient's chart: facts, model, every event with its verdict,
and each event's peak frame beside its Grad-CAM overlay.

:func:`video_report` gathers what ``service/templates/report.html`` prints. The images
are embedded (``data:`` URIs) so the saved or printed page stands alone. Nothing
identifies the patient beyond what the upload carried (its file name and camera);
the report adds no person's data but the reviewers' token names.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from worker import InvalidIdError, NoResultsError
from worker.pool.reviews import history_of, read_history, read_reviews, review_of
from worker.storage import Storage

from .inbox import LOW_CONSISTENCY
from .maps import MapKind, map_source

__all__ = ["CONSISTENCY_SENTENCE", "video_report"]

CONSISTENCY_SENTENCE = (
    "Attention consistency (from -1 to 1) compares two explanations of the same "
    "decision: the Grad-CAM map of the peak frame, and the Grad-CAM map of that frame "
    "softly masked by its own Guided Backprop map. When the two agree (near 1) the model "
    "relied on the same image region both times; below {low:.2f} they disagree, the "
    "explanation is unstable, and the event deserves a closer look at the video itself."
)


def _image(storage: Storage, video_id: str, event: dict[str, Any], kind: MapKind) -> str | None:
    """The PNG behind ``kind`` as a data URI; None when the results hold none."""
    source = map_source(event, kind)
    if source is None or source[1]:  # a raw array only: not a picture to print
        return None
    try:
        data = storage.result_file(video_id, source[0]).read_bytes()
    except (InvalidIdError, OSError):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode()


def video_report(storage: Storage, video_id: str) -> dict[str, Any]:
    """Everything the report shows. Raises ``VideoNotFoundError`` and ``NoResultsError``."""
    record = storage.get_video(video_id)
    events = storage.read_events(video_id)
    if events is None:
        raise NoResultsError(f"video {video_id} has no results yet; report it once processed")
    reviews = read_reviews(storage, video_id)
    history = read_history(storage, video_id)
    rows = []
    for index, event in enumerate(e for e in events.get("events") or [] if isinstance(e, dict)):
        review = review_of(event, reviews)
        consistency = event.get("attention_consistency")
        rows.append(
            {
                "number": index + 1,
                "id": str(event.get("id")),
                "label": str(event.get("label")),
                "start_s": event.get("start_s"),
                "end_s": event.get("end_s"),
                "peak_s": event.get("peak_s"),
                "score": event.get("score"),
                "mean_score": event.get("mean_score"),
                "consistency": consistency,
                "low": isinstance(consistency, int | float) and consistency < LOW_CONSISTENCY,
                "review": review.to_dict() if review is not None else None,
                "changes": len(history_of(event, history)),
                "frame": _image(storage, video_id, event, MapKind.frame),
                "overlay": _image(storage, video_id, event, MapKind.overlay),
            }
        )
    rows.sort(key=lambda r: (r["start_s"] or 0.0, r["label"]))
    for number, row in enumerate(rows, start=1):
        row["number"] = number
    model = events.get("model") if isinstance(events.get("model"), dict) else {}
    video = events.get("video") if isinstance(events.get("video"), dict) else {}
    sampling = events.get("sampling") if isinstance(events.get("sampling"), dict) else {}
    return {
        "record": record,
        "video": video,
        "model": model,
        "sampling": sampling,
        "results_created_at": events.get("created_at"),
        "events": rows,
        "reviewed": sum(1 for r in rows if r["review"]),
        "consistency_sentence": CONSISTENCY_SENTENCE.format(low=LOW_CONSISTENCY),
        "low_consistency": LOW_CONSISTENCY,
        "generated_at": dt.datetime.now(dt.UTC),
    }
