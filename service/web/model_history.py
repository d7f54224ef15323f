"""The models page's history: validation F1, mAP and attention consistency per version as
a small server-rendered SVG line chart, and the per-class F1 change of each fine-tune.

:func:`history_view` turns the versions' cards (``metrics_after``: the version on the
validation split of its fine-tune; ``metrics_before``: its parent on the same split)
into coordinates and rows; ``templates/_model_history.html`` draws them (no script,
escaped text, a data table beside the chart for screen readers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from worker.serving.versions import ModelCard

__all__ = ["SERIES", "history_view"]

#: (metric key in a card, what the chart calls it, CSS class: colour and dash pattern)
SERIES = (
    ("macro_f1", "Validation macro-F1", "s-f1"),
    ("map", "Validation mAP", "s-map"),
    ("consistency", "Attention consistency", "s-cons"),
)
WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 16, 12, 44


def _value(metrics: dict[str, Any] | None, key: str) -> float | None:
    value = (metrics or {}).get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def history_view(cards: Sequence[ModelCard]) -> dict[str, Any]:
    """Chart coordinates and per-class F1 changes of ``cards`` (any order; drawn oldest
    first). ``points`` is 0 when no version has validation metrics."""
    ordered = sorted(cards, key=lambda c: c.version)
    values = [[_value(c.metrics_after, key) for key, _, _ in SERIES] for c in ordered]
    known = [v for row in values for v in row if v is not None]
    low = min(0.0, math.floor(min(known, default=0.0) * 10) / 10)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(1, len(ordered) - 1)

    def x(i: int) -> float:
        return round(LEFT + (i * step if len(ordered) > 1 else plot_w / 2), 1)

    def y(v: float) -> float:
        return round(TOP + (1.0 - (v - low) / (1.0 - low)) * plot_h, 1)

    series = []
    for s, (key, name, css) in enumerate(SERIES):
        points: list[dict[str, Any]] = []
        segments: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        for i, card in enumerate(ordered):
            v = values[i][s]
            if v is None:  # a version without this metric breaks the line
                if current:
                    segments.append(current)
                current = []
                continue
            point = {"x": x(i), "y": y(v), "value": v, "version": card.version}
            points.append(point)
            current.append(point)
        if current:
            segments.append(current)
        series.append(
            {
                "key": key,
                "name": name,
                "css": css,
                "points": points,
                "lines": [" ".join(f"{p['x']},{p['y']}" for p in seg) for seg in segments],
            }
        )
    ticks = [
        {"value": t / 10, "y": y(t / 10)} for t in range(round(low * 10), 11, 2 if low < 0 else 1)
    ]
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": HEIGHT - BOTTOM,
        "versions": [
            {"version": c.version, "x": x(i), "status": str(c.status)}
            for i, c in enumerate(ordered)
        ],
        "series": series,
        "ticks": ticks,
        "points": len(known),
        "rows": [{"version": c.version, "values": values[i]} for i, c in enumerate(ordered)],
        "deltas": _deltas(ordered),
    }


def _deltas(cards: Sequence[ModelCard]) -> list[dict[str, Any]]:
    """Per fine-tuned version, each class's F1 before (the parent) and after."""
    out = []
    for card in reversed(cards):  # newest first, as the versions below
        before = (card.metrics_before or {}).get("per_class_f1")
        after = (card.metrics_after or {}).get("per_class_f1")
        if not isinstance(before, dict) or not isinstance(after, dict):
            continue
        classes = []
        for name in sorted(set(before) | set(after)):
            b, a = _value(before, name), _value(after, name)
            delta = a - b if a is not None and b is not None else None
            classes.append({"name": name, "before": b, "after": a, "delta": delta})
        out.append({"version": card.version, "parent": card.parent, "classes": classes})
    return out
