r"""Event segmentation: per-frame class scores -> events. A pure function of arrays.

For each class ``c`` with onset threshold :math:`\theta^{on}_c` and offset threshold
:math:`\theta^{off}_c \le \theta^{on}_c`, the samples are scanned in time order:

1. **hysteresis**: an event opens at the first sample with :math:`p_{t,c} \ge
   \theta^{on}_c` and stays open while :math:`p_{t,c} \ge \theta^{off}_c`; it closes at
   the first sample below :math:`\theta^{off}_c`. A sample at :math:`t_i` stands for
   the interval :math:`[t_i, \min(t_i + \Delta, t_{i+1}))`, :math:`\Delta` the frame
   duration (1 / sampling rate), so an open run of samples ``i..j`` spans
   :math:`[t_i, \min(t_j + \Delta, t_{j+1}))`;
2. **gap merging**: events of the class less than ``merge_gap_s`` apart become one;
3. **minimum duration**: events shorter than ``min_duration_s`` are dropped;
4. **padding**: each event is widened by ``padding_s`` on both sides, clipped to
   :math:`[0, \text{duration}]`; events that then overlap are merged.

Each event reports its peak (the first sample with the highest score in it), the peak
score (``score``) and the mean score of its samples (``mean_score``, gap samples
included). Ids are ``"<label>-<k>"``, ``k`` counting the class's events from 1 in time
order: stable for a given video, model and settings, and unaffected by other classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Event", "resolve_thresholds", "segment_events"]


@dataclass(frozen=True)
class Event:
    """One detected event. ``peak_index`` is the peak sample's row in the input scores."""

    id: str
    label: str
    start_s: float
    end_s: float
    peak_s: float
    score: float
    mean_score: float
    peak_index: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields: times rounded to milliseconds, scores to 1e-4."""
        return {
            "id": self.id,
            "label": self.label,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "peak_s": round(self.peak_s, 3),
            "score": round(self.score, 4),
            "mean_score": round(self.mean_score, 4),
        }


def resolve_thresholds(
    values: float | Sequence[float] | ArrayLike, num_classes: int, name: str
) -> np.ndarray:
    """A scalar or one value per class -> float array (num_classes,), checked to lie in [0, 1]."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(num_classes, float(array))
    if array.shape != (num_classes,):
        raise ValueError(
            f"{name} must be one number or one per class ({num_classes}), got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)) or np.any(array < 0) or np.any(array > 1):
        raise ValueError(f"{name} must lie in [0, 1], got {array.tolist()}")
    return array


def _check_inputs(
    times: ArrayLike, scores: ArrayLike, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"times must be 1-D (T,), got shape {t.shape}")
    if p.ndim != 2 or p.shape[0] != t.shape[0]:
        raise ValueError(f"scores must be (T, C) with T={t.shape[0]}, got shape {p.shape}")
    if p.shape[1] != len(class_names):
        raise ValueError(f"class_names has {len(class_names)} names for {p.shape[1]} score columns")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValueError("times and scores must be finite")
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise ValueError("times must be strictly increasing")
    return t, p


def _runs(column: np.ndarray, on: float, off: float) -> list[tuple[int, int]]:
    """Hysteresis runs ``(first, last)`` sample indices, inclusive."""
    runs = []
    start = -1
    for i, value in enumerate(column):
        if start < 0:
            if value >= on:
                start = i
        elif value < off:
            runs.append((start, i - 1))
            start = -1
    if start >= 0:
        runs.append((start, len(column) - 1))
    return runs


def segment_events(
    times: ArrayLike,
    scores: ArrayLike,
    class_names: Sequence[str],
    on_thresholds: float | Sequence[float] | ArrayLike = 0.5,
    off_thresholds: float | Sequence[float] | ArrayLike | None = None,
    *,
    offset_ratio: float = 0.8,
    min_duration_s: float = 0.0,
    merge_gap_s: float = 0.0,
    padding_s: float = 0.0,
    frame_duration_s: float | None = None,
    duration_s: float | None = None,
) -> list[Event]:
    """Events from sample ``times`` (T,) in seconds and ``scores`` (T, C) in [0, 1].

    ``off_thresholds`` defaults to ``offset_ratio * on_thresholds``.
    ``frame_duration_s`` is the time one sample stands for (default: the median
    spacing of ``times``, 0 for a single sample). ``duration_s`` bounds the padding.
    Returns events sorted by start time, then class order. See the module docstring.
    """
    t, p = _check_inputs(times, scores, class_names)
    num_classes = len(class_names)
    on = resolve_thresholds(on_thresholds, num_classes, "on_thresholds")
    if off_thresholds is None:
        if not 0 < offset_ratio <= 1:
            raise ValueError(f"offset_ratio must lie in (0, 1], got {offset_ratio}")
        off = on * offset_ratio
    else:
        off = resolve_thresholds(off_thresholds, num_classes, "off_thresholds")
        if np.any(off > on):
            raise ValueError(
                f"off_thresholds must not exceed on_thresholds, got {off.tolist()} "
                f"against {on.tolist()}"
            )
    for name, value in (
        ("min_duration_s", min_duration_s),
        ("merge_gap_s", merge_gap_s),
        ("padding_s", padding_s),
    ):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a non-negative number of seconds, got {value}")
    if frame_duration_s is None:
        frame_duration_s = float(np.median(np.diff(t))) if t.size > 1 else 0.0
    elif not frame_duration_s >= 0:
        raise ValueError(f"frame_duration_s must be non-negative, got {frame_duration_s}")
    if t.size == 0:
        return []
    ends = t + frame_duration_s
    ends[:-1] = np.minimum(ends[:-1], t[1:])
    upper = float(duration_s) if duration_s is not None else float(ends[-1])
    upper = max(upper, float(ends[-1]))

    events: list[Event] = []
    for c, label in enumerate(class_names):
        spans: list[list[Any]] = []  # [start_s, end_s, first, last]
        for first, last in _runs(p[:, c], on[c], off[c]):
            if spans and t[first] - spans[-1][1] < merge_gap_s:
                spans[-1][1], spans[-1][3] = ends[last], last
            else:
                spans.append([t[first], ends[last], first, last])
        spans = [s for s in spans if s[1] - s[0] >= min_duration_s]
        padded: list[list[Any]] = []
        for start, end, first, last in spans:
            start, end = max(0.0, start - padding_s), min(upper, end + padding_s)
            if padded and start <= padded[-1][1]:
                padded[-1][1], padded[-1][3] = max(end, padded[-1][1]), last
            else:
                padded.append([start, end, first, last])
        for k, (start, end, first, last) in enumerate(padded, start=1):
            window = p[first : last + 1, c]
            peak = first + int(np.argmax(window))
            events.append(
                Event(
                    id=f"{label}-{k}",
                    label=label,
                    start_s=float(start),
                    end_s=float(end),
                    peak_s=float(t[peak]),
                    score=float(p[peak, c]),
                    mean_score=float(window.mean()),
                    peak_index=peak,
                )
            )
    order = {name: i for i, name in enumerate(class_names)}
    return sorted(events, key=lambda e: (e.start_s, order[e.label]))
