"""Event segmentation: hysteresis, gap merging, minimum duration, padding, ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.events import Event, segment_events

NAMES = ["a", "b"]


def _scores(*columns: list[float]) -> np.ndarray:
    return np.array(columns, dtype=np.float64).T


def test_hysteresis_keeps_event_open_until_below_offset() -> None:
    times = np.arange(6.0)
    column = [0.1, 0.6, 0.45, 0.45, 0.3, 0.1]
    scores = _scores(column, [0.0] * 6)
    (event,) = segment_events(times, scores, NAMES, 0.5, 0.4)
    assert (event.label, event.start_s, event.end_s) == ("a", 1.0, 4.0)
    (plain,) = segment_events(times, scores, NAMES, 0.5, 0.5)
    assert (plain.start_s, plain.end_s) == (1.0, 2.0)


def test_default_offset_is_a_ratio_of_the_onset() -> None:
    times = np.arange(5.0)
    scores = _scores([0.0, 0.5, 0.41, 0.39, 0.0], [0.0] * 5)
    (event,) = segment_events(times, scores, NAMES, 0.5, offset_ratio=0.8)
    assert event.end_s == 3.0  # 0.41 >= 0.4 keeps it open, 0.39 closes it


def test_peak_score_and_mean() -> None:
    times = np.arange(0.0, 3.0, 0.5)
    scores = _scores([0.0, 0.7, 0.9, 0.9, 0.6, 0.0], [0.0] * 6)
    (event,) = segment_events(times, scores, NAMES, 0.5)
    assert event.peak_s == 1.0  # first of the two maxima
    assert event.peak_index == 2
    assert event.score == pytest.approx(0.9)
    assert event.mean_score == pytest.approx((0.7 + 0.9 + 0.9 + 0.6) / 4)
    assert (event.start_s, event.end_s) == (0.5, 2.5)


def test_gap_merging_joins_short_gaps_only() -> None:
    times = np.arange(10.0)
    column = [0, 1, 1, 0, 1, 1, 0, 0, 0, 1]  # gaps: [3,4) is 1 s, [6,9) is 3 s
    scores = _scores(column, [0] * 10)
    spans = [(e.start_s, e.end_s) for e in segment_events(times, scores, NAMES, merge_gap_s=1.5)]
    assert spans == [(1.0, 6.0), (9.0, 10.0)]
    spans = [(e.start_s, e.end_s) for e in segment_events(times, scores, NAMES, merge_gap_s=1.0)]
    assert spans == [(1.0, 3.0), (4.0, 6.0), (9.0, 10.0)]  # a gap of exactly 1 s stays


def test_merged_event_mean_includes_gap_samples() -> None:
    times = np.arange(4.0)
    scores = _scores([0.8, 0.2, 0.8, 0.0], [0] * 4)
    (event,) = segment_events(times, scores, NAMES, 0.5, merge_gap_s=2.0)
    assert event.mean_score == pytest.approx(0.6)


def test_minimum_duration_drops_short_events_after_merging() -> None:
    times = np.arange(8.0)
    scores = _scores([1, 0, 1, 0, 0, 0, 1, 0], [0] * 8)
    kept = segment_events(times, scores, NAMES, min_duration_s=2.0, merge_gap_s=1.5)
    assert [(e.start_s, e.end_s) for e in kept] == [(0.0, 3.0)]


def test_padding_is_clipped_and_overlaps_merge() -> None:
    times = np.arange(10.0)
    scores = _scores([1, 0, 0, 1, 0, 0, 0, 0, 0, 1], [0] * 10)
    events = segment_events(times, scores, NAMES, padding_s=1.0, duration_s=10.0)
    assert [(e.start_s, e.end_s) for e in events] == [(0.0, 5.0), (8.0, 10.0)]
    assert [e.id for e in events] == ["a-1", "a-2"]
    assert events[0].score == 1.0 and events[0].mean_score == pytest.approx(0.5)


def test_ids_count_per_class_and_output_is_sorted_by_start() -> None:
    times = np.arange(6.0)
    scores = _scores([0, 0, 0, 1, 0, 1], [1, 0, 0, 0, 1, 0])
    events = segment_events(times, scores, NAMES)
    assert [(e.id, e.start_s) for e in events] == [
        ("b-1", 0.0),
        ("a-1", 3.0),
        ("b-2", 4.0),
        ("a-2", 5.0),
    ]
    again = segment_events(times, scores, NAMES)
    assert again == events


def test_ids_of_one_class_do_not_depend_on_another() -> None:
    times = np.arange(6.0)
    a = [0, 1, 0, 0, 1, 0]
    first = segment_events(times, _scores(a, [1, 1, 1, 1, 1, 1]), NAMES)
    second = segment_events(times, _scores(a, [0, 0, 0, 0, 0, 0]), NAMES)
    assert [e.id for e in first if e.label == "a"] == [e.id for e in second if e.label == "a"]


def test_per_class_thresholds() -> None:
    times = np.arange(3.0)
    scores = _scores([0.0, 0.6, 0.0], [0.0, 0.6, 0.0])
    events = segment_events(times, scores, NAMES, [0.5, 0.7])
    assert [e.label for e in events] == ["a"]


def test_irregular_sampling_ends_at_the_next_sample() -> None:
    times = np.array([0.0, 0.5, 0.6, 2.0])
    scores = _scores([0, 1, 0, 0], [0, 0, 0, 0])
    (event,) = segment_events(times, scores, NAMES, frame_duration_s=0.5)
    assert (event.start_s, event.end_s) == (0.5, 0.6)


def test_event_running_to_the_end_uses_frame_duration() -> None:
    times = np.array([0.0, 0.5, 1.0])
    scores = _scores([0, 1, 1], [0, 0, 0])
    (event,) = segment_events(times, scores, NAMES)
    assert event.end_s == 1.5


def test_accepts_tensors_and_empty_input() -> None:
    times = torch.arange(3, dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.0], [0.9, 0.0], [0.0, 0.0]])
    (event,) = segment_events(times, scores, NAMES)
    assert isinstance(event, Event) and event.end_s == 2.0
    assert segment_events(np.zeros(0), np.zeros((0, 2)), NAMES) == []


def test_to_dict_has_the_documented_fields() -> None:
    event = Event("a-1", "a", 1.00049, 2.0, 1.5, 0.912345, 0.7, 3)
    assert event.to_dict() == {
        "id": "a-1",
        "label": "a",
        "start_s": 1.0,
        "end_s": 2.0,
        "peak_s": 1.5,
        "score": 0.9123,
        "mean_score": 0.7,
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"off_thresholds": 0.6}, "off_thresholds must not exceed"),
        ({"on_thresholds": [0.5]}, "on_thresholds must be one number or one per class"),
        ({"on_thresholds": 1.5}, "on_thresholds must lie in"),
        ({"min_duration_s": -1.0}, "min_duration_s"),
        ({"padding_s": float("nan")}, "padding_s"),
        ({"offset_ratio": 0.0}, "offset_ratio"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        segment_events(np.arange(3.0), np.zeros((3, 2)), NAMES, **kwargs)


def test_bad_arrays_are_named() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        segment_events(np.array([0.0, 1.0, 1.0]), np.zeros((3, 2)), NAMES)
    with pytest.raises(ValueError, match="scores must be"):
        segment_events(np.arange(3.0), np.zeros((4, 2)), NAMES)
    with pytest.raises(ValueError, match="class_names"):
        segment_events(np.arange(3.0), np.zeros((3, 3)), NAMES)
    with pytest.raises(ValueError, match="finite"):
        segment_events(np.arange(3.0), np.full((3, 2), np.nan), NAMES)
