"""Motion gating (worker/detection/motion.py): change scores, decisions, inheritance and
backfill."""

from __future__ import annotations

import numpy as np
import pytest

from worker.detection.motion import (
    AFTER_CHANGE,
    BOUNDARY,
    CHANGE,
    FIRST,
    INHERITED,
    INTERVAL,
    GateConfig,
    GatedBatch,
    GatedScores,
    MotionGate,
    change_score,
    gate_batches,
    thumbnail,
)
from worker.video.decode import FrameBatch

SIZE = 224


def _room(seed: int = 0) -> np.ndarray:
    """A static scene with strong edges: a bright wall, a dark door, a bed."""
    image = np.full((SIZE, SIZE, 3), 180, dtype=np.float32)
    image[40:200, 20:70] = (120, 90, 60)
    image[120:170, 90:200] = (230, 230, 220)
    image[100:120, 100:140] = (240, 240, 240)
    return image


def _noisy(image: np.ndarray, seed: int, sigma: float = 8.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def _cells(image: np.ndarray) -> np.ndarray:
    return thumbnail(np.clip(image, 0, 255).astype(np.uint8), 16)


def test_thumbnail_is_block_mean_luma() -> None:
    frame = np.zeros((32, 32, 3), dtype=np.uint8)
    frame[:16, :16] = (255, 0, 0)
    cells = thumbnail(frame, 2)
    assert cells.shape == (2, 2)
    assert cells[0, 0] == pytest.approx(0.299 * 255, abs=1e-3)
    assert cells[1, 1] == 0


def test_sensor_noise_and_drift_are_not_change() -> None:
    room = _room()
    reference = thumbnail(_noisy(room, 1), 16)
    assert change_score(thumbnail(_noisy(room, 2), 16), reference, 8.0) == 0.0
    shifted = np.roll(np.roll(room, 3, axis=1), 2, axis=0)  # a camera drifting a few pixels
    assert change_score(thumbnail(_noisy(shifted, 3), 16), reference, 8.0) == 0.0


def test_a_person_and_the_light_going_out_are_change() -> None:
    room = _room()
    reference = thumbnail(_noisy(room, 1), 16)
    person = room.copy()
    person[60:160, 150:180] = (38, 88, 172)  # blue scrubs
    assert change_score(thumbnail(_noisy(person, 2), 16), reference, 8.0) >= 0.01
    dimmed = 38 + 0.42 * room
    assert change_score(thumbnail(_noisy(dimmed, 2), 16), reference, 8.0) > 0.5


def test_slow_fade_accumulates_against_the_last_scored_sample() -> None:
    """One grey level per sample is under the threshold, but the gate compares with
    the last scored sample, so the fade is scored once it has moved far enough."""
    room = _room()
    gate = MotionGate(GateConfig(max_interval_s=1e9, threshold=8.0, dense_after=0))
    reasons = [gate.decide(_noisy(room * (1 - 0.006 * k), k), float(k))[1] for k in range(30)]
    assert reasons[0] == FIRST
    assert reasons[1:4] == [INHERITED] * 3
    assert CHANGE in reasons[4:]
    assert 2 <= reasons.count(CHANGE) <= 6


def test_decisions_change_dense_after_and_interval() -> None:
    room = _room()
    person = room.copy()
    person[60:160, 150:180] = (38, 88, 172)
    frames = [room] * 3 + [person] * 8 + [room] * 2
    gate = MotionGate(GateConfig(max_interval_s=2.0, dense_after=2))
    reasons = [gate.decide(_noisy(f, k), 0.5 * k)[1] for k, f in enumerate(frames)]
    assert reasons == [
        FIRST,
        INHERITED,
        INHERITED,
        CHANGE,  # the person came in
        AFTER_CHANGE,
        AFTER_CHANGE,  # t = 2.5
        INHERITED,
        INHERITED,
        INHERITED,
        INTERVAL,  # t = 4.5: 2 s after the last scored sample
        INHERITED,
        CHANGE,  # the person left
        AFTER_CHANGE,
    ]


def test_gate_batches_closes_its_source() -> None:
    closed = []

    def source():
        try:
            frames = np.zeros((2, 32, 32, 3), dtype=np.uint8)
            for k in range(3):
                yield FrameBatch(np.array([2.0 * k, 2.0 * k + 1]), np.array([k, k]), frames)
        finally:
            closed.append(True)

    gated = gate_batches(source(), MotionGate(GateConfig()))
    first = next(gated)
    assert list(first.reason) == [FIRST, INHERITED]
    gated.close()
    assert closed == [True]


def _gated(times: list[float], reasons: list[int], marks: list[float]) -> GatedBatch:
    """A batch whose frame k is filled with ``marks[k]`` (the fake model reads it back)."""
    frames = np.stack([np.full((4, 4, 3), m, dtype=np.uint8) for m in marks])
    batch = FrameBatch(np.array(times), np.arange(len(times)), frames)
    return GatedBatch(batch, np.zeros(len(times), np.float32), np.array(reasons, np.uint8))


def test_skipped_samples_inherit_and_boundaries_are_backfilled() -> None:
    calls: list[int] = []

    def classify(frames: np.ndarray) -> np.ndarray:
        calls.append(len(frames))
        p = frames[:, 0, 0, 0].astype(np.float32) / 100
        return np.stack([p, 1 - p], axis=1)

    scores = GatedScores(classify, on_thresholds=[0.5, 0.5], off_thresholds=[0.4, 0.4])
    # samples 0..3: the first scored, three skipped; sample 4 scored in the same state
    scores.add(_gated([0, 1, 2, 3], [FIRST, 0, 0, 0], [10, 11, 12, 13]))
    scores.add(_gated([4, 5, 6, 7], [INTERVAL, 0, 0, CHANGE], [14, 60, 70, 80]))
    result, reasons, _ = scores.result()
    # 0..4 stay below both thresholds: 1..3 inherit sample 0's scores
    np.testing.assert_allclose(result[1:4, 0], 0.10)
    assert list(reasons[:5]) == [FIRST, INHERITED, INHERITED, INHERITED, INTERVAL]
    # sample 7 crosses the onset: the skipped 5 and 6 are scored (an event boundary)
    assert list(reasons[5:]) == [BOUNDARY, BOUNDARY, CHANGE]
    np.testing.assert_allclose(result[5:, 0], [0.6, 0.7, 0.8])
    assert calls == [1, 2, 2]


def test_gate_config_is_checked() -> None:
    with pytest.raises(ValueError, match="max_interval_s"):
        GateConfig(max_interval_s=0)
    with pytest.raises(ValueError, match="min_area"):
        GateConfig(min_area=2)


def test_batches_wait_until_the_model_gets_a_full_batch() -> None:
    """A compiled scorer pads every call to its batch: queued batches are scored
    together once enough of their samples need the model."""
    calls: list[int] = []

    def classify(frames: np.ndarray) -> np.ndarray:
        calls.append(len(frames))
        return np.full((len(frames), 1), 0.1, dtype=np.float32)

    scores = GatedScores(classify, [0.5], [0.4], batch_size=4)
    scores.add(_gated([0, 1, 2], [FIRST, 0, CHANGE], [1, 1, 1]))
    scores.add(_gated([3, 4, 5], [AFTER_CHANGE, 0, 0], [1, 1, 1]))
    assert calls == []  # three samples to score so far
    scores.add(_gated([6, 7, 8], [INTERVAL, 0, 0], [1, 1, 1]))
    assert calls == [4]
    result, reasons, _ = scores.result()
    assert result.shape == (9, 1) and list(reasons[:3]) == [FIRST, INHERITED, CHANGE]
