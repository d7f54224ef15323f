from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score
from torch import nn

from models.metrics import (
    average_precision,
    best_f1_thresholds,
    box_masks,
    choose_thresholds,
    classification_report,
    label_set_agreement,
    macro_f1,
    map_box_iou,
    mean_attention_consistency,
    mean_average_precision,
    per_class_f1,
    prediction_entropy,
    predictions_from_scores,
    weak_localization_iou,
)


@pytest.fixture
def scored():
    generator = torch.Generator().manual_seed(0)
    targets = (torch.rand(40, 4, generator=generator) < 0.4).float()
    scores = (0.5 * targets + 0.7 * torch.rand(40, 4, generator=generator)).clamp(0, 1)
    scores[:5, 2] = 0.3  # ties
    return scores, targets


def test_f1_matches_scikit_learn(scored):
    scores, targets = scored
    predictions = predictions_from_scores(scores, [0.5, 0.4, 0.6, 0.5])
    expected = f1_score(targets.numpy(), predictions.numpy(), average=None, zero_division=0)
    assert per_class_f1(predictions, targets).tolist() == pytest.approx(expected.tolist())
    assert macro_f1(predictions, targets) == pytest.approx(expected.mean())


def test_single_label_predictions_are_the_argmax():
    scores = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    predictions = predictions_from_scores(scores, [0.9, 0.9, 0.9], multi_label=False)
    assert predictions.tolist() == [[False, True, False], [True, False, False]]


def test_macro_f1_leaves_out_classes_absent_from_targets_and_predictions():
    targets = torch.tensor([[1, 0, 0], [0, 1, 0]])
    predictions = torch.tensor([[1, 0, 0], [1, 0, 0]])
    f1 = per_class_f1(predictions, targets)
    assert f1[0] == pytest.approx(2 / 3) and f1[1] == 0 and math.isnan(f1[2])
    assert macro_f1(predictions, targets) == pytest.approx(1 / 3)


def test_average_precision_matches_scikit_learn_with_ties(scored):
    scores, targets = scored
    for c in range(4):
        expected = average_precision_score(targets[:, c].numpy(), scores[:, c].numpy())
        assert average_precision(scores[:, c], targets[:, c]) == pytest.approx(expected)
    expected_map = average_precision_score(targets.numpy(), scores.numpy(), average="macro")
    assert mean_average_precision(scores, targets) == pytest.approx(expected_map)
    assert math.isnan(average_precision(torch.rand(3), torch.zeros(3)))


def test_best_thresholds_maximise_f1_on_the_data(scored):
    scores, targets = scored
    thresholds = best_f1_thresholds(scores, targets)
    best = per_class_f1(predictions_from_scores(scores, thresholds), targets)
    for c in range(4):
        for t in torch.linspace(0, 1, 101).tolist() + scores[:, c].tolist():
            f1 = f1_score(targets[:, c].numpy(), (scores[:, c] >= t).numpy(), zero_division=0)
            assert f1 <= float(best[c]) + 1e-6
    no_positive = best_f1_thresholds(torch.rand(5, 1), torch.zeros(5, 1), default=0.7)
    assert no_positive == [0.7]


def test_thresholds_need_enough_positives_and_negatives_per_class():
    """Two validation images put the best cut anywhere between them (0.006 in issue 12)."""
    scores = torch.tensor([[0.01, 0.9], [0.002, 0.8], [0.5, 0.1], [0.6, 0.2], [0.7, 0.3]])
    targets = torch.tensor([[1, 1], [0, 1], [0, 0], [1, 0], [1, 0]])
    parent = [0.42, 0.37]
    few = choose_thresholds(scores[:2], targets[:2], parent, min_per_class=1)
    assert [c.chosen for c in few] == [True, False]  # class 1: two positives, no negative
    assert few[0].threshold == pytest.approx(0.006) and few[1].threshold == 0.37
    strict = choose_thresholds(scores, targets, parent, min_per_class=3)
    assert [(c.chosen, c.positives, c.negatives) for c in strict] == [(False, 3, 2), (False, 2, 3)]
    assert [c.threshold for c in strict] == parent
    assert best_f1_thresholds(scores, targets, default=parent, min_per_class=2) != parent
    with pytest.raises(ValueError, match="min_per_class"):
        choose_thresholds(scores, targets, min_per_class=0)
    with pytest.raises(ValueError, match="fallback has 1 thresholds for 2 classes"):
        choose_thresholds(scores, targets, [0.5])


def test_prediction_entropy_and_label_set_agreement():
    certain = torch.tensor([[1.0, 0.0, 0.0]])
    even = torch.full((1, 3), 1 / 3)
    assert prediction_entropy(certain, multi_label=False).tolist() == [0.0]
    assert prediction_entropy(even, multi_label=False).item() == pytest.approx(1.0)
    halves = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    assert prediction_entropy(halves, multi_label=True).tolist() == pytest.approx([1.0, 0.0])
    q = 0.2
    binary = -(q * math.log(q) + (1 - q) * math.log(1 - q)) / math.log(2)
    mixed = prediction_entropy(torch.tensor([[q, 1.0]]), multi_label=True)
    assert mixed.item() == pytest.approx(binary / 2)
    a = torch.tensor([[1, 0], [0, 0], [1, 1], [0, 1]], dtype=torch.bool)
    b = torch.tensor([[1, 0], [0, 1], [1, 1], [1, 1]], dtype=torch.bool)
    assert label_set_agreement(a, b) == 0.5
    with pytest.raises(ValueError):
        label_set_agreement(a[:0], b[:0])


def test_classification_report_names_classes(scored):
    scores, targets = scored
    report = classification_report(scores, targets, class_names=["a", "b", "c", "d"])
    assert set(report) == {"macro_f1", "map", "per_class_f1"}
    assert list(report["per_class_f1"]) == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="class_names"):
        classification_report(scores, targets, class_names=["a"])


def test_box_masks_and_iou():
    masks = box_masks(torch.tensor([[1.0, 0.0, 3.0, 2.0]]), (4, 4))
    assert masks[0].int().tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    maps = torch.zeros(2, 4, 4)
    maps[0, 0:2, 1:3] = 1.0  # exactly the box
    maps[1, 0:2, 1:4] = 0.8  # the box plus a column
    iou = map_box_iou(maps, torch.tensor([[1.0, 0.0, 3.0, 2.0]] * 2), threshold=0.5)
    assert iou.tolist() == pytest.approx([1.0, 4 / 6])
    with pytest.raises(ValueError, match="threshold"):
        map_box_iou(maps, torch.zeros(2, 4), threshold=0.0)


class _CornerNet(nn.Module):
    """Both feature channels are the image's brightness: Grad-CAM lights up what is bright."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].weight[:, 0] = 1.0
            self.features[0].bias.zero_()
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def test_weak_localization_finds_the_bright_box():
    images = torch.zeros(2, 3, 8, 8)
    images[0, :, 0:4, 0:4] = 1.0
    images[1, :, 4:8, 4:8] = 1.0
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [4.0, 4.0, 8.0, 8.0]])
    iou = weak_localization_iou(_CornerNet(), images, torch.tensor([0, 1]), boxes)
    assert iou.tolist() == pytest.approx([1.0, 1.0])
    wrong = weak_localization_iou(_CornerNet(), images, torch.tensor([0, 1]), boxes.flip(0))
    assert wrong.max() < 0.2


def test_mean_attention_consistency_is_a_correlation(tiny_net, images):
    value = mean_attention_consistency(tiny_net, images)
    assert -1.0 <= value <= 1.0
