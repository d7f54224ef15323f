"""Event-level metrics against hand-computed cases and a port of ActivityNet's evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from models.event_metrics import (
    MAP_TIOUS,
    average_precision,
    evaluate_events,
    interpolated_average_precision,
    segment_iou,
)


def ev(label: str, start: float, end: float, score: float = 1.0, video: str = "") -> dict:
    return {"label": label, "start_s": start, "end_s": end, "score": score, "video_id": video}


def test_segment_iou_by_hand() -> None:
    ious = segment_iou((0.0, 10.0), np.array([[0, 10], [5, 15], [10, 20], [2, 4], [-5, 0]]))
    np.testing.assert_allclose(ious, [1.0, 5 / 15, 0.0, 0.2, 0.0])


def test_interpolated_ap_by_hand() -> None:
    # precision 1, 0.5, 2/3 at recall 1/3, 1/3, 2/3: monotone envelope 1, 2/3, 2/3, 0
    ap = interpolated_average_precision(np.array([1.0, 0.5, 2 / 3]), np.array([1, 1, 2]) / 3)
    assert ap == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)


def test_average_precision_by_hand() -> None:
    truth = [ev("x", 0, 10), ev("x", 20, 30)]
    preds = [
        ev("x", 0, 10, 0.9),  # tIoU 1 with the first
        ev("x", 21, 30, 0.8),  # tIoU 0.9 with the second
        ev("x", 0, 5, 0.7),  # tIoU 0.5 with the first, which is already taken
    ]
    ap = average_precision(preds, truth, (0.5, 0.95))
    # 0.5: TP TP FP -> precision 1, 1, 2/3 at recall .5, 1, 1 -> AP 1
    # 0.95: TP FP FP -> precision 1, .5, 1/3 at recall .5 -> AP .5
    np.testing.assert_allclose(ap, [1.0, 0.5])


def test_each_ground_truth_matches_once_and_highest_score_wins() -> None:
    truth = [ev("x", 0, 10)]
    low_exact = ev("x", 0, 10, 0.2)
    high_rough = ev("x", 0, 8, 0.9)  # tIoU 0.8
    ap = average_precision([low_exact, high_rough], truth, (0.5, 0.9))
    # 0.5: the high-scoring rough one takes the GT first -> TP, FP -> AP 1
    # 0.9: rough fails (FP), exact matches (TP) -> precision 0, 0.5 at recall 0, 1 -> AP .5
    np.testing.assert_allclose(ap, [1.0, 0.5])


def test_a_prediction_falls_back_to_its_next_best_free_ground_truth() -> None:
    truth = [ev("x", 0, 10), ev("x", 2, 12)]
    preds = [ev("x", 0, 10, 0.9), ev("x", 1, 11, 0.8)]  # 2nd: tIoU 9/11 with both
    ap = average_precision(preds, truth, (0.5,))
    np.testing.assert_allclose(ap, [1.0])


def test_predictions_only_match_their_own_video() -> None:
    truth = [ev("x", 0, 10, video="v1")]
    assert average_precision([ev("x", 0, 10, 0.9, video="v2")], truth, (0.5,))[0] == 0.0
    assert average_precision([ev("x", 0, 10, 0.9, video="v1")], truth, (0.5,))[0] == 1.0


def test_average_precision_without_ground_truth_is_an_error() -> None:
    with pytest.raises(ValueError, match="ground_truth"):
        average_precision([ev("x", 0, 1)], [])
    np.testing.assert_array_equal(average_precision([], [ev("x", 0, 1)], (0.5,)), [0.0])


def test_f1_at_tious_by_hand() -> None:
    truth = [ev("a", 0, 10), ev("a", 20, 30), ev("b", 40, 50)]
    preds = [
        ev("a", 0, 6, 0.9),  # tIoU 0.6 with a[0:10]
        ev("a", 22, 30, 0.8),  # tIoU 0.8 with a[20:30]
        ev("b", 60, 70, 0.7),  # matches nothing
    ]
    metrics = evaluate_events(preds, truth)
    at = {t: (m["tp"], m["fp"], m["fn"]) for t, m in metrics.f1.items()}
    assert at == {0.3: (2, 1, 1), 0.5: (2, 1, 1), 0.7: (1, 2, 2)}
    assert metrics.f1[0.5]["precision"] == pytest.approx(2 / 3)
    assert metrics.f1[0.5]["recall"] == pytest.approx(2 / 3)
    assert metrics.f1[0.7]["f1"] == pytest.approx(1 / 3)
    assert metrics.per_class["b"][0.3]["f1"] == 0.0
    assert metrics.per_class["a"][0.7]["recall"] == 0.5


def test_map_averages_classes_and_tious() -> None:
    truth = [ev("a", 0, 10), ev("b", 0, 10)]
    preds = [ev("a", 0, 10, 0.9), ev("b", 0, 7, 0.9)]  # b: tIoU 0.7
    metrics = evaluate_events(preds, truth)
    assert metrics.ap["a"] == [1.0] * 10
    assert metrics.ap["b"] == [1.0 if t <= 0.7 else 0.0 for t in MAP_TIOUS]
    assert metrics.mean_ap == pytest.approx((1.0 + 0.5) / 2)
    assert metrics.map_by_tiou[0.75] == 0.5
    assert metrics.to_dict()["map_by_tiou"]["0.5"] == 1.0


def test_empty_cases() -> None:
    nothing = evaluate_events([], [])
    assert nothing.f1[0.5]["f1"] == 1.0 and nothing.mean_ap is None
    missed = evaluate_events([], [ev("a", 0, 1)])
    assert missed.f1[0.5]["recall"] == 0.0 and missed.mean_ap == 0.0


def test_accepts_objects_with_attributes() -> None:
    from models.events import Event

    pred = Event("a-1", "a", 0.0, 10.0, 5.0, 0.9, 0.8, 0)
    metrics = evaluate_events([pred], [ev("a", 0, 10)])
    assert metrics.mean_ap == 1.0


def test_bad_events_are_named() -> None:
    with pytest.raises(ValueError, match=r"predictions\[0\] needs label"):
        evaluate_events([{"start_s": 0}], [])
    with pytest.raises(ValueError, match=r"ground_truth\[0\] ends before it starts"):
        evaluate_events([], [ev("a", 5, 1)])
    with pytest.raises(ValueError, match="f1_tious"):
        evaluate_events([], [], f1_tious=(0.0,))


# -- a port of ActivityNet's compute_average_precision_detection (pandas replaced) -----


def _reference_ap(truth: list[dict], preds: list[dict], tious: np.ndarray) -> np.ndarray:
    ap = np.zeros(len(tious))
    if not preds:
        return ap
    npos = float(len(truth))
    lock_gt = np.ones((len(tious), len(truth))) * -1
    order = np.array([p["score"] for p in preds]).argsort()[::-1]
    preds = [preds[i] for i in order]
    tp = np.zeros((len(tious), len(preds)))
    fp = np.zeros((len(tious), len(preds)))
    for idx, pred in enumerate(preds):
        gt_index = [j for j, g in enumerate(truth) if g["video_id"] == pred["video_id"]]
        if not gt_index:
            fp[:, idx] = 1
            continue
        segments = np.array([[truth[j]["start_s"], truth[j]["end_s"]] for j in gt_index])
        tiou_arr = segment_iou((pred["start_s"], pred["end_s"]), segments)
        tiou_sorted_idx = tiou_arr.argsort()[::-1]
        for tidx, tiou_thr in enumerate(tious):
            for jdx in tiou_sorted_idx:
                if tiou_arr[jdx] < tiou_thr:
                    fp[tidx, idx] = 1
                    break
                if lock_gt[tidx, gt_index[jdx]] >= 0:
                    continue
                tp[tidx, idx] = 1
                lock_gt[tidx, gt_index[jdx]] = idx
                break
            if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
                fp[tidx, idx] = 1
    tp_cumsum = np.cumsum(tp, axis=1)
    fp_cumsum = np.cumsum(fp, axis=1)
    recall = tp_cumsum / npos
    precision = tp_cumsum / (tp_cumsum + fp_cumsum)
    for tidx in range(len(tious)):
        mprec = np.hstack([[0], precision[tidx], [0]])
        mrec = np.hstack([[0], recall[tidx], [1]])
        for i in range(len(mprec) - 1)[::-1]:
            mprec[i] = max(mprec[i], mprec[i + 1])
        idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
        ap[tidx] = np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])
    return ap


@pytest.mark.parametrize("seed", range(20))
def test_average_precision_agrees_with_activitynet(seed: int) -> None:
    rng = np.random.default_rng(seed)

    def random_events(n: int, scored: bool) -> list[dict]:
        out = []
        for _ in range(n):
            start = rng.uniform(0, 100)
            video = f"v{rng.integers(3)}"
            score = float(rng.uniform()) if scored else 1.0
            out.append(ev("x", start, start + rng.uniform(1, 20), score, video))
        return out

    truth = random_events(int(rng.integers(1, 12)), scored=False)
    # predictions: jittered copies of ground truth plus distractors
    preds = [
        ev("x", g["start_s"] + rng.normal(0, 2), g["end_s"] + rng.normal(0, 2), rng.uniform(), v)
        for g in truth
        if rng.uniform() < 0.8
        for v in [g["video_id"]]
    ] + random_events(int(rng.integers(0, 10)), scored=True)
    preds = [p for p in preds if p["end_s"] > p["start_s"]]
    tious = np.array(MAP_TIOUS)
    np.testing.assert_allclose(
        average_precision(preds, truth, MAP_TIOUS), _reference_ap(truth, preds, tious)
    )
