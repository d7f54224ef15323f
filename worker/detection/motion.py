r"""Motion gating: run the model only on samples that differ from the last scored one.

Ward cameras show an unchanged room most of the time. Detection samples the video at
a fixed rate (2/s by default) and, without gating, classifies every sample. With
gating, the decoder thread computes a cheap change score for each sample and the
scoring loop runs the model only where something changed; every other sample
*inherits* the scores of the last scored sample before it. The idea is Frigate's
(motion detection in front of object detection), made safe for event boundaries.

Change score
    Each sample (the RGB frame the model would see, ``S x S``) is turned into a grey
    thumbnail of ``G x G`` cells, each the mean luma of a ``b x b`` block,
    :math:`b = \lfloor S / G \rfloor`:

    .. math:: c_{ij} = \frac{1}{b^2} \sum_{(y, x) \in \mathrm{block}_{ij}}
              (0.299 R + 0.587 G + 0.114 B)_{yx}

    Averaging :math:`b^2` pixels divides independent sensor noise of standard
    deviation :math:`\sigma` by :math:`b` (:math:`\sigma / 14` at 224 px, 16 cells),
    and smooths compression blocking. A cell has *changed* against the reference
    thumbnail :math:`r` (the last scored sample's) when its value leaves the range of
    the reference's 3x3 neighbourhood by more than the threshold :math:`\tau`:

    .. math:: \mathrm{changed}_{ij} = c_{ij} > \max_{N(i,j)} r + \tau
              \;\lor\; c_{ij} < \min_{N(i,j)} r - \tau

    so a camera drifting or a patient breathing (a shift of under a cell) moves no
    cell, while a person entering, a patient sitting up or the light going out does.
    The change score is the fraction of changed cells, and the sample is *changed*
    when the score reaches ``min_area``. Because the reference is the last scored
    sample, not the previous one, a slow change (light fading over minutes)
    accumulates until it crosses the threshold.

Decisions (in the decoder thread, :meth:`MotionGate.decide`)
    A sample is scored when it is the first, when it changed, when it is one of the
    ``dense_after`` samples that follow a changed one (dense scoring around every
    change), or when ``max_interval_s`` has passed since the last scored sample (slow
    changes the thumbnail cannot see are still caught). Otherwise it is skipped.

Boundaries (in the scoring loop, :class:`GatedScores`)
    When two consecutive scored samples fall in different *states* (for each class:
    below its offset threshold, between offset and onset, at or above onset, the
    bands :func:`models.events.segment_events` reads), the skipped samples between
    them are scored too (``backfill``), so an event's start and end are found at the
    sample where they happen, not up to ``max_interval_s`` late.

Every decision is recorded (:data:`REASONS`), and ``scores.npz`` keeps it per sample.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..video.decode import FrameBatch

__all__ = [
    "REASONS",
    "GateConfig",
    "GatedBatch",
    "GatedScores",
    "MotionGate",
    "change_score",
    "gate_batches",
    "thumbnail",
]

#: why a sample has its scores: index = the code stored in ``scores.npz`` (``gate_reason``)
REASONS = ("inherited", "first", "change", "after_change", "interval", "boundary", "ungated")
INHERITED, FIRST, CHANGE, AFTER_CHANGE, INTERVAL, BOUNDARY, UNGATED = range(len(REASONS))

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class GateConfig:
    """Settings of motion gating (see the module docstring for what each one does).

    ``grid`` cells per side of the thumbnail; ``threshold`` grey levels (0..255) a
    cell must leave its reference neighbourhood by; ``min_area`` the fraction of cells
    that must change; ``dense_after`` samples scored after each change;
    ``max_interval_s`` the longest time a sample may go unscored; ``max_pending``
    the most skipped frames kept for a boundary's backfill (memory bound).
    """

    max_interval_s: float = 4.0
    threshold: float = 8.0
    min_area: float = 0.005
    dense_after: int = 2
    grid: int = 16
    max_pending: int = 64

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_interval_s) and self.max_interval_s > 0):
            raise ValueError(f"max_interval_s must be positive, got {self.max_interval_s}")
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"threshold must be non-negative, got {self.threshold}")
        if not 0 <= self.min_area <= 1:
            raise ValueError(f"min_area must lie in [0, 1], got {self.min_area}")
        if self.dense_after < 0:
            raise ValueError(f"dense_after must be non-negative, got {self.dense_after}")
        if self.grid < 2:
            raise ValueError(f"grid must be at least 2, got {self.grid}")
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {self.max_pending}")

    def to_dict(self) -> dict[str, float | int]:
        return {
            "max_interval_s": self.max_interval_s,
            "threshold": self.threshold,
            "min_area": self.min_area,
            "dense_after": self.dense_after,
            "grid": self.grid,
        }


def thumbnail(frame: np.ndarray, grid: int) -> np.ndarray:
    """Grey ``(grid, grid)`` float32 block means of a uint8 RGB ``(H, W, 3)`` frame.

    The frame is cropped to a whole number of blocks (at most ``grid - 1`` pixels
    per side); a frame smaller than ``grid`` pixels uses one pixel per cell.
    """
    h, w = frame.shape[:2]
    by, bx = max(1, h // grid), max(1, w // grid)
    gy, gx = min(grid, h), min(grid, w)
    crop = frame[: gy * by, : gx * bx].astype(np.float32)
    grey = crop @ _LUMA
    return grey.reshape(gy, by, gx, bx).mean(axis=(1, 3), dtype=np.float32)


def _neighbourhood(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum and maximum of each cell's 3x3 neighbourhood (edges replicated)."""
    padded = np.pad(reference, 1, mode="edge")
    h, w = reference.shape
    stack = np.stack([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
    return stack.min(axis=0), stack.max(axis=0)


def change_score(cells: np.ndarray, reference: np.ndarray, threshold: float) -> float:
    """Fraction of ``cells`` outside their reference neighbourhood's range by > ``threshold``."""
    low, high = _neighbourhood(reference)
    changed = (cells > high + threshold) | (cells < low - threshold)
    return float(changed.mean())


@dataclass(frozen=True)
class GatedBatch:
    """A decoded batch with its gate decisions: ``change`` (B,) float32 change scores
    (NaN for a first sample), ``reason`` (B,) uint8 codes of :data:`REASONS` (0: skip)."""

    batch: FrameBatch
    change: np.ndarray
    reason: np.ndarray

    def __len__(self) -> int:
        return len(self.batch)


class MotionGate:
    """The decoder-side half of gating: change scores and the decision to score.

    Stateful over one video (make one per pass). :meth:`decide` is fed the samples
    in time order.
    """

    def __init__(self, config: GateConfig) -> None:
        self.config = config
        self._reference: np.ndarray | None = None
        self._reference_low: np.ndarray | None = None
        self._reference_high: np.ndarray | None = None
        self._last_scored_t: float | None = None
        self._dense_left = 0
        #: seconds spent computing change scores (in the decoder thread)
        self.busy_s = 0.0

    def decide(self, frame: np.ndarray, t: float) -> tuple[float, int]:
        """The change score of ``frame`` (sampled at ``t`` s) and its reason code."""
        cfg = self.config
        cells = thumbnail(frame, cfg.grid)
        if self._reference is None or self._last_scored_t is None:
            self._score(cells, t)
            return math.nan, FIRST
        assert self._reference_low is not None and self._reference_high is not None
        changed_cells = (cells > self._reference_high + cfg.threshold) | (
            cells < self._reference_low - cfg.threshold
        )
        change = float(changed_cells.mean())
        if change > 0 and change >= cfg.min_area:
            self._score(cells, t)
            self._dense_left = cfg.dense_after
            return change, CHANGE
        if self._dense_left > 0:
            self._dense_left -= 1
            self._score(cells, t)
            return change, AFTER_CHANGE
        if t - self._last_scored_t >= cfg.max_interval_s - 1e-9:
            self._score(cells, t)
            return change, INTERVAL
        return change, INHERITED

    def _score(self, cells: np.ndarray, t: float) -> None:
        self._reference = cells
        self._reference_low, self._reference_high = _neighbourhood(cells)
        self._last_scored_t = t


def gate_batches(batches: Iterable[FrameBatch], gate: MotionGate) -> Iterator[GatedBatch]:
    """``batches`` with ``gate``'s decisions; meant to run in the decoder thread.

    Closing this generator closes ``batches`` too (in the same thread), so a sampler's
    container is closed where it was opened.
    """
    iterator = iter(batches)
    try:
        for batch in iterator:
            started = time.perf_counter()
            change = np.empty(len(batch), dtype=np.float32)
            reason = np.empty(len(batch), dtype=np.uint8)
            for i in range(len(batch)):
                change[i], reason[i] = gate.decide(batch.frames[i], float(batch.times[i]))
            gate.busy_s += time.perf_counter() - started
            yield GatedBatch(batch, change, reason)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def score_states(scores: np.ndarray, on: Sequence[float], off: Sequence[float]) -> np.ndarray:
    """Per class: 0 below the offset threshold, 1 between offset and onset, 2 at or above
    onset; ``scores`` (..., C)."""
    on_a = np.asarray(on, dtype=np.float64)
    off_a = np.asarray(off, dtype=np.float64)
    return (scores >= off_a).astype(np.int8) + (scores >= on_a).astype(np.int8)


@dataclass
class GatedScores:
    """The scoring-side half of gating: run the model where the gate says, inherit
    elsewhere, and backfill the skipped samples between two scored ones whose states
    differ (see the module docstring).

    ``classify`` maps uint8 frames (N, S, S, 3) to probabilities (N, C); it is called
    with the frames to score, never with an empty array. Feed batches in time order
    with :meth:`add`, then read :meth:`result`. Batches are held until at least
    ``batch_size`` of their samples need the model (or ``max_queued`` batches wait),
    so the model sees full batches, as a compiled scorer that pads every call to
    ``batch_size`` needs to gain from skipping.
    """

    classify: Callable[[np.ndarray], np.ndarray]
    on_thresholds: Sequence[float]
    off_thresholds: Sequence[float]
    max_pending: int = 64
    batch_size: int = 1
    max_queued: int = 16
    scores: list[np.ndarray] = field(default_factory=list)
    reasons: list[np.ndarray] = field(default_factory=list)
    changes: list[np.ndarray] = field(default_factory=list)
    _last: np.ndarray | None = None
    _last_state: np.ndarray | None = None
    #: skipped samples since the last scored one: (batch number, row, frame)
    _pending: list[tuple[int, int, np.ndarray]] = field(default_factory=list)
    _queued: list[GatedBatch] = field(default_factory=list)
    _queued_rows: int = 0

    def add(self, gated: GatedBatch) -> None:
        """Queue one batch; score (or inherit) the queue once enough samples need the model."""
        if not len(gated):
            return
        self._queued.append(gated)
        self._queued_rows += int(np.count_nonzero(gated.reason != INHERITED))
        if self._queued_rows >= self.batch_size or len(self._queued) >= self.max_queued:
            self.flush()

    def flush(self) -> None:
        """Score the queued batches' samples that need the model, in one call, and walk them."""
        queued, self._queued, self._queued_rows = self._queued, [], 0
        wanted = [g.batch.frames[g.reason != INHERITED] for g in queued]
        nonempty = [f for f in wanted if len(f)]
        fresh = self.classify(np.concatenate(nonempty)) if nonempty else None
        offset = 0
        for gated, frames in zip(queued, wanted, strict=True):
            count = len(frames)
            part = None if fresh is None else fresh[offset : offset + count]
            offset += count
            self._walk(gated, part)

    def _walk(self, gated: GatedBatch, fresh: np.ndarray | None) -> None:
        """Place one batch's scores: fresh where scored, inherited elsewhere; backfill."""
        frames, reason = gated.batch.frames, gated.reason.copy()
        rows = np.flatnonzero(reason != INHERITED)
        out: np.ndarray | None = None
        number = len(self.scores)
        self.reasons.append(reason)
        self.changes.append(gated.change)
        position = {int(r): k for k, r in enumerate(rows)}
        for i in range(len(gated)):
            k = position.get(i)
            if k is None:
                if self._last is None:  # cannot happen: the first sample is always scored
                    raise RuntimeError("a skipped sample before any scored one")
                if out is None:
                    out = np.empty((len(gated), self._last.shape[0]), dtype=np.float32)
                    self.scores.append(out)
                out[i] = self._last
                if len(self._pending) >= self.max_pending:
                    self._pending.pop(0)
                self._pending.append((number, i, frames[i].copy()))
                continue
            assert fresh is not None
            if out is None:
                out = np.empty((len(gated), fresh.shape[1]), dtype=np.float32)
                self.scores.append(out)
            out[i] = fresh[k]
            state = score_states(fresh[k], self.on_thresholds, self.off_thresholds)
            if self._last_state is not None and self._pending and (state != self._last_state).any():
                self._backfill()
            self._pending.clear()
            self._last, self._last_state = out[i].copy(), state

    def _backfill(self) -> None:
        """Score the pending skipped samples (an event boundary lies among them)."""
        pending = self._pending
        probs = self.classify(np.stack([frame for _, _, frame in pending]))
        for (number, row, _), p in zip(pending, probs, strict=True):
            self.scores[number][row] = p
            self.reasons[number][row] = BOUNDARY

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores (T, C) float32, reason codes (T,) uint8, change scores (T,) float32."""
        self.flush()
        if not self.scores:
            return (
                np.zeros((0, len(self.on_thresholds)), dtype=np.float32),
                np.zeros(0, dtype=np.uint8),
                np.zeros(0, dtype=np.float32),
            )
        return (
            np.concatenate(self.scores),
            np.concatenate(self.reasons),
            np.concatenate(self.changes),
        )
