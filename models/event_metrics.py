r"""Event-level metrics: precision/recall/F1 at a temporal IoU, and ActivityNet mAP.

Temporal IoU of segments :math:`a = [s_a, e_a]`, :math:`b = [s_b, e_b]`:

.. math::  \mathrm{tIoU}(a, b) = \frac{\max(0, \min(e_a, e_b) - \max(s_a, s_b))}
           {(e_a - s_a) + (e_b - s_b) - \max(0, \min(e_a, e_b) - \max(s_a, s_b))}

Matching (as the ActivityNet detection evaluation does it): per class, predictions are
taken in descending score order (ties keep input order); each one is compared with
the ground-truth events of its own video and class in descending tIoU order, and
takes the first that is not taken yet, provided its tIoU reaches the threshold;
otherwise it is a false positive. Each ground-truth event is matched at most once.

Average precision at one threshold is the area under the interpolated
precision-recall curve (precision made monotone from the right, summed over the
points where recall changes), as ``interpolated_prec_rec`` in ActivityNet's
``eval_detection.py``. mAP is the mean of AP over the classes present in the ground
truth and over the tIoU thresholds 0.50:0.05:0.95.

Events are mappings or objects with ``label``, ``start_s``, ``end_s`` and, for
predictions, ``score`` (1.0 when absent); an optional ``video_id`` (default ``""``)
keeps several videos apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "F1_TIOUS",
    "MAP_TIOUS",
    "EventMetrics",
    "average_precision",
    "evaluate_events",
    "interpolated_average_precision",
    "segment_iou",
]

F1_TIOUS: tuple[float, ...] = (0.3, 0.5, 0.7)
MAP_TIOUS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass(frozen=True)
class _Row:
    video_id: str
    label: str
    start: float
    end: float
    score: float


def _get(event: Any, key: str, default: Any = None) -> Any:
    if isinstance(event, dict):
        return event.get(key, default)
    return getattr(event, key, default)


def _rows(events: Iterable[Any], name: str) -> list[_Row]:
    rows = []
    for i, event in enumerate(events):
        if isinstance(event, _Row):
            rows.append(event)
            continue
        label, start, end = _get(event, "label"), _get(event, "start_s"), _get(event, "end_s")
        if label is None or start is None or end is None:
            raise ValueError(f"{name}[{i}] needs label, start_s and end_s; got {event!r}")
        start, end = float(start), float(end)
        if not end >= start:
            raise ValueError(f"{name}[{i}] ends before it starts: {start} > {end}")
        rows.append(
            _Row(
                str(_get(event, "video_id", "") or ""),
                str(label),
                start,
                end,
                float(_get(event, "score", 1.0)),
            )
        )
    return rows


def segment_iou(segment: Sequence[float], segments: np.ndarray) -> np.ndarray:
    """tIoU of one ``[start, end]`` with each row of ``segments`` (N, 2) -> (N,)."""
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    start, end = float(segment[0]), float(segment[1])
    inter = np.clip(np.minimum(end, segments[:, 1]) - np.maximum(start, segments[:, 0]), 0, None)
    union = (end - start) + (segments[:, 1] - segments[:, 0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _by_score(rows: Sequence[_Row]) -> list[_Row]:
    return sorted(rows, key=lambda r: -r.score)  # stable: ties keep input order


def _match(predictions: Sequence[_Row], truth: Sequence[_Row], tiou: float) -> np.ndarray:
    """True-positive flags (P,) for ``predictions`` of one class, in descending score order.

    ``predictions`` must already be sorted by descending score.
    """
    truth_by_video: dict[str, list[int]] = defaultdict(list)
    for j, row in enumerate(truth):
        truth_by_video[row.video_id].append(j)
    segments = np.array([[r.start, r.end] for r in truth], dtype=np.float64).reshape(-1, 2)
    taken = np.zeros(len(truth), dtype=bool)
    tp = np.zeros(len(predictions), dtype=bool)
    for i, pred in enumerate(predictions):
        candidates = np.array(truth_by_video.get(pred.video_id, []), dtype=np.int64)
        if candidates.size == 0:
            continue
        ious = segment_iou((pred.start, pred.end), segments[candidates])
        for k in np.argsort(-ious, kind="stable"):
            if ious[k] < tiou:
                break
            j = candidates[k]
            if taken[j]:
                continue
            taken[j] = True
            tp[i] = True
            break
    return tp


def interpolated_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the precision-recall curve made monotone, as ActivityNet computes it."""
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def average_precision(
    predictions: Iterable[Any], ground_truth: Iterable[Any], tious: Sequence[float] = MAP_TIOUS
) -> np.ndarray:
    """AP (len(tious),) of one class's predictions against its ground truth.

    0 at every threshold when there is no prediction; raises ``ValueError`` when there
    is no ground truth (AP is undefined then).
    """
    truth = _rows(ground_truth, "ground_truth")
    if not truth:
        raise ValueError("ground_truth must hold at least one event for average precision")
    preds = _by_score(_rows(predictions, "predictions"))
    result = np.zeros(len(tious))
    if not preds:
        return result
    for k, tiou in enumerate(tious):
        tp = _match(preds, truth, tiou).astype(np.float64)
        tp_cum, fp_cum = np.cumsum(tp), np.cumsum(1.0 - tp)
        result[k] = interpolated_average_precision(tp_cum / (tp_cum + fp_cum), tp_cum / len(truth))
    return result


def _prf(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    if n_pred == 0 and n_true == 0:
        precision = recall = f1 = 1.0
    else:
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": n_pred - tp,
        "fn": n_true - tp,
    }


@dataclass
class EventMetrics:
    """Results of :func:`evaluate_events`; ``to_dict`` gives JSON with tIoUs as strings."""

    #: tIoU -> micro-averaged precision, recall, f1, tp, fp, fn over all classes
    f1: dict[float, dict[str, float]] = field(default_factory=dict)
    #: label -> tIoU -> the same, per class
    per_class: dict[str, dict[float, dict[str, float]]] = field(default_factory=dict)
    #: label -> AP at each of ``map_tious`` (classes with ground truth only)
    ap: dict[str, list[float]] = field(default_factory=dict)
    map_tious: tuple[float, ...] = MAP_TIOUS
    #: tIoU -> mean AP over classes
    map_by_tiou: dict[float, float] = field(default_factory=dict)
    #: mean AP over classes and tIoUs; ``None`` without ground truth
    mean_ap: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "f1": {f"{k:g}": v for k, v in self.f1.items()},
            "per_class": {
                c: {f"{k:g}": v for k, v in d.items()} for c, d in self.per_class.items()
            },
            "ap": self.ap,
            "map_tious": list(self.map_tious),
            "map_by_tiou": {f"{k:g}": v for k, v in self.map_by_tiou.items()},
            "mean_ap": self.mean_ap,
        }


def evaluate_events(
    predictions: Iterable[Any],
    ground_truth: Iterable[Any],
    *,
    f1_tious: Sequence[float] = F1_TIOUS,
    map_tious: Sequence[float] = MAP_TIOUS,
) -> EventMetrics:
    """Event-level P/R/F1 at each of ``f1_tious`` and ActivityNet mAP over ``map_tious``.

    P/R/F1 count every prediction (they are already thresholded events); mAP ranks
    them by score. Classes are those appearing in either list; mAP averages over the
    classes with ground truth.
    """
    for name, tious in (("f1_tious", f1_tious), ("map_tious", map_tious)):
        if any(not 0 < t <= 1 for t in tious):
            raise ValueError(f"{name} must lie in (0, 1], got {list(tious)}")
    preds = _rows(predictions, "predictions")
    truth = _rows(ground_truth, "ground_truth")
    labels = sorted({r.label for r in preds} | {r.label for r in truth})
    preds_by = {c: _by_score([r for r in preds if r.label == c]) for c in labels}
    truth_by = {c: [r for r in truth if r.label == c] for c in labels}

    metrics = EventMetrics(map_tious=tuple(map_tious))
    for tiou in f1_tious:
        total_tp = 0
        for c in labels:
            tp = int(_match(preds_by[c], truth_by[c], tiou).sum())
            total_tp += tp
            metrics.per_class.setdefault(c, {})[tiou] = _prf(tp, len(preds_by[c]), len(truth_by[c]))
        metrics.f1[tiou] = _prf(total_tp, len(preds), len(truth))
    for c in labels:
        if truth_by[c]:
            metrics.ap[c] = average_precision(preds_by[c], truth_by[c], map_tious).tolist()
    if metrics.ap:
        table = np.array(list(metrics.ap.values()))
        metrics.map_by_tiou = {
            t: float(v) for t, v in zip(map_tious, table.mean(axis=0), strict=True)
        }
        metrics.mean_ap = float(table.mean())
    return metrics
