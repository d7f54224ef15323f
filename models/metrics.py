r"""Classification and attention metrics, as pure tensor functions.

Scores are per-class probabilities (N, C) (sigmoid outputs for multi-label models,
softmax outputs for single-label ones); targets are multi-hot (N, C) tensors.

- F1 of class c: :math:`F_1 = 2\,TP / (2\,TP + FP + FN)`; macro-F1 is the mean over
  the classes that occur in the targets or the predictions (a class absent from
  both has no defined F1 and is left out, as is usual for small evaluation sets).
- Average precision of class c (the step-wise area under the precision-recall
  curve, as scikit-learn computes it): :math:`AP = \sum_n (R_n - R_{n-1}) P_n` over
  the distinct score thresholds in decreasing order; mAP is the mean over the
  classes with at least one positive.
- Weak-localisation IoU: the Grad-CAM map of the box's class, rectified, upsampled
  to the image and scaled to [0, 1], thresholded at ``threshold``; the IoU of that
  region with the box's pixels.
- Against object masks (:func:`mask_attention_scores`): the *pointing game* (Zhang
  et al., ECCV 2016) counts a hit when the maximum of the class's Grad-CAM map,
  upsampled to the mask, falls on the object's pixels or within ``tolerance``
  pixels of them; the *mask IoU* is the IoU of the map thresholded as above with
  the object's pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .atcon import attention_consistency
from .attention import grad_cam
from .maps import normalize_maps, upsample_maps

__all__ = [
    "ThresholdChoice",
    "average_precision",
    "best_f1_thresholds",
    "box_masks",
    "choose_thresholds",
    "classification_report",
    "label_set_agreement",
    "macro_f1",
    "map_box_iou",
    "mask_attention_scores",
    "mean_attention_consistency",
    "mean_average_precision",
    "per_class_f1",
    "prediction_entropy",
    "predictions_from_scores",
    "weak_localization_iou",
]


def _check_pair(scores: Tensor, targets: Tensor) -> None:
    if scores.dim() != 2 or scores.shape != targets.shape:
        raise ValueError(
            f"scores and targets must both be (N, C); got {tuple(scores.shape)} and "
            f"{tuple(targets.shape)}"
        )


def predictions_from_scores(
    scores: Tensor, thresholds: Tensor | list[float] | None = None, *, multi_label: bool = True
) -> Tensor:
    """Boolean predictions (N, C): ``scores >= thresholds`` per class, or the argmax one-hot.

    Single-label models predict exactly one class per image (the argmax); the
    thresholds then play no part.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (N, C), got {tuple(scores.shape)}")
    if not multi_label:
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(
            1, scores.argmax(dim=1, keepdim=True), True
        )
    if thresholds is None:
        return scores >= 0.5
    limits = torch.as_tensor(thresholds, dtype=scores.dtype, device=scores.device)
    if limits.shape != (scores.shape[1],):
        raise ValueError(f"thresholds must have {scores.shape[1]} entries, got {limits.numel()}")
    return scores >= limits


def per_class_f1(predictions: Tensor, targets: Tensor) -> Tensor:
    """F1 per class (C,) from boolean (N, C) tensors; NaN for a class absent from both."""
    _check_pair(predictions, targets)
    pred = predictions.bool()
    true = targets.bool()
    tp = (pred & true).sum(dim=0).double()
    fp = (pred & ~true).sum(dim=0).double()
    fn = (~pred & true).sum(dim=0).double()
    denominator = 2 * tp + fp + fn
    f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.nan)
    return f1.float()


def macro_f1(predictions: Tensor, targets: Tensor) -> float:
    """Mean F1 over the classes present in the targets or the predictions."""
    f1 = per_class_f1(predictions, targets)
    defined = f1[~f1.isnan()]
    return float(defined.mean()) if defined.numel() else 0.0


def average_precision(scores: Tensor, targets: Tensor) -> float:
    """Average precision of one class: scores (N,), binary targets (N,); NaN with no positive."""
    if scores.dim() != 1 or scores.shape != targets.shape:
        raise ValueError("scores and targets must both be (N,) for one class")
    true = targets.bool()
    positives = int(true.sum())
    if positives == 0:
        return math.nan
    order = torch.argsort(scores.double(), descending=True, stable=True)
    ranked_scores = scores.double()[order]
    hits = true[order].double()
    tp = hits.cumsum(0)
    # keep only the last position of each run of tied scores: one threshold per value
    last_of_value = torch.ones_like(hits, dtype=torch.bool)
    last_of_value[:-1] = ranked_scores[1:] != ranked_scores[:-1]
    tp = tp[last_of_value]
    counted = torch.arange(1, hits.numel() + 1, dtype=torch.float64)[last_of_value]
    precision = tp / counted
    recall = tp / positives
    previous = torch.cat([recall.new_zeros(1), recall[:-1]])
    return float(((recall - previous) * precision).sum())


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """Mean over classes with at least one positive of :func:`average_precision`."""
    _check_pair(scores, targets)
    values = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


@dataclass(frozen=True)
class ThresholdChoice:
    """One class's decision threshold and whether the data were enough to choose it."""

    threshold: float
    #: chosen on the data (False: the fallback was kept)
    chosen: bool
    positives: int
    negatives: int


def choose_thresholds(
    scores: Tensor,
    targets: Tensor,
    fallback: float | Sequence[float] = 0.5,
    *,
    min_per_class: int = 1,
) -> list[ThresholdChoice]:
    r"""Per-class thresholds that maximise each class's F1, where the data allow it.

    For class c the images are ranked by score; predicting the top k positive gives
    :math:`F_1(k) = 2\,TP_k / (k + P)`. The best cut k (only between distinct scores)
    sets the threshold halfway between the k-th score and the next lower one.

    A class with fewer than ``min_per_class`` positives, or fewer than
    ``min_per_class`` negatives, keeps its ``fallback`` (one value for every class,
    or one per class: a parent model's thresholds). With two validation images the
    "best" cut is whatever separates them, which can put an alarm threshold at 0.006.
    """
    _check_pair(scores, targets)
    if min_per_class < 1:
        raise ValueError(f"min_per_class must be at least 1, got {min_per_class}")
    classes = scores.shape[1]
    fallbacks = [float(fallback)] * classes if isinstance(fallback, int | float) else list(fallback)
    if len(fallbacks) != classes:
        raise ValueError(f"fallback has {len(fallbacks)} thresholds for {classes} classes")
    choices: list[ThresholdChoice] = []
    for c in range(classes):
        column = scores[:, c].double()
        true = targets[:, c].bool()
        positives = int(true.sum())
        negatives = int(true.numel()) - positives
        if positives < min_per_class or negatives < min_per_class:
            choices.append(ThresholdChoice(fallbacks[c], False, positives, negatives))
            continue
        order = torch.argsort(column, descending=True, stable=True)
        ranked = column[order]
        tp = true[order].double().cumsum(0)
        k = torch.arange(1, ranked.numel() + 1, dtype=torch.float64)
        f1 = 2 * tp / (k + positives)
        valid = torch.ones_like(f1, dtype=torch.bool)
        valid[:-1] = ranked[1:] != ranked[:-1]
        f1 = torch.where(valid, f1, -1.0)
        best = int(f1.argmax())
        upper = float(ranked[best])
        lower = float(ranked[best + 1]) if best + 1 < ranked.numel() else upper - 1e-6
        choices.append(ThresholdChoice((upper + lower) / 2, True, positives, negatives))
    return choices


def best_f1_thresholds(
    scores: Tensor,
    targets: Tensor,
    *,
    default: float | Sequence[float] = 0.5,
    min_per_class: int = 1,
) -> list[float]:
    """The thresholds of :func:`choose_thresholds`: chosen on the data, else ``default``."""
    return [
        choice.threshold
        for choice in choose_thresholds(scores, targets, default, min_per_class=min_per_class)
    ]


def classification_report(
    scores: Tensor,
    targets: Tensor,
    thresholds: Tensor | list[float] | None = None,
    *,
    multi_label: bool = True,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """``{"macro_f1", "map", "per_class_f1"}``; ``per_class_f1`` maps class name -> F1."""
    _check_pair(scores, targets)
    predictions = predictions_from_scores(scores, thresholds, multi_label=multi_label)
    f1 = per_class_f1(predictions, targets)
    names = class_names or [str(c) for c in range(scores.shape[1])]
    if len(names) != scores.shape[1]:
        raise ValueError(f"class_names has {len(names)} names for {scores.shape[1]} classes")
    return {
        "macro_f1": macro_f1(predictions, targets),
        "map": mean_average_precision(scores, targets),
        "per_class_f1": {
            name: (None if math.isnan(v) else v) for name, v in zip(names, f1.tolist(), strict=True)
        },
    }


def prediction_entropy(scores: Tensor, *, multi_label: bool) -> Tensor:
    r"""Normalised entropy (N,) in [0, 1] of each image's predicted scores: 0 certain, 1 unsure.

    Single-label (softmax scores :math:`p`): :math:`H(p) / \log C`. Multi-label
    (independent sigmoid scores): the mean over classes of the binary entropy,
    :math:`\frac{1}{C} \sum_c H_b(p_c) / \log 2` with
    :math:`H_b(q) = -q \log q - (1 - q) \log(1 - q)`.
    """
    if scores.dim() != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must be (N, C) with C >= 1, got {tuple(scores.shape)}")
    p = scores.double().clamp(0.0, 1.0)
    if not multi_label:
        if scores.shape[1] < 2:
            return torch.zeros(scores.shape[0], dtype=scores.dtype)
        h = -(p * p.clamp_min(1e-12).log()).sum(dim=1) / math.log(scores.shape[1])
        return h.to(scores.dtype)
    binary = -(p * p.clamp_min(1e-12).log() + (1 - p) * (1 - p).clamp_min(1e-12).log())
    return (binary.mean(dim=1) / math.log(2)).to(scores.dtype)


def label_set_agreement(first: Tensor, second: Tensor) -> float:
    """Fraction of images (rows of two boolean (N, C) predictions) with the same label set."""
    _check_pair(first, second)
    if first.shape[0] == 0:
        raise ValueError("need at least one image to measure agreement")
    same = (first.bool() == second.bool()).all(dim=1)
    return float(same.double().mean())


def box_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Boolean masks (N, H, W) of boxes (N, 4) ``x0, y0, x1, y1`` in pixel coordinates.

    A pixel belongs to a box when its centre ``(j + 0.5, i + 0.5)`` lies inside it.
    """
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) x0, y0, x1, y1; got {tuple(boxes.shape)}")
    height, width = size
    ys = torch.arange(height, dtype=torch.float32, device=boxes.device) + 0.5
    xs = torch.arange(width, dtype=torch.float32, device=boxes.device) + 0.5
    b = boxes.float()
    inside_y = (ys[None, :] >= b[:, 1:2]) & (ys[None, :] < b[:, 3:4])
    inside_x = (xs[None, :] >= b[:, 0:1]) & (xs[None, :] < b[:, 2:3])
    return inside_y[:, :, None] & inside_x[:, None, :]


def map_box_iou(maps01: Tensor, boxes: Tensor, *, threshold: float = 0.5) -> Tensor:
    """IoU (N,) of the region ``maps01 >= threshold`` (maps in [0, 1], (N, H, W)) with boxes."""
    if maps01.dim() != 3:
        raise ValueError(f"maps01 must be (N, H, W), got {tuple(maps01.shape)}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    region = maps01 >= threshold
    box = box_masks(boxes.to(maps01.device), (maps01.shape[1], maps01.shape[2]))
    intersection = (region & box).flatten(1).sum(1).float()
    union = (region | box).flatten(1).sum(1).float()
    return intersection / union.clamp_min(1)


def weak_localization_iou(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    boxes: Tensor,
    *,
    threshold: float = 0.5,
    layer: nn.Module | None = None,
) -> Tensor:
    """Grad-CAM weak-localisation IoU (N,) of each image's box of class ``labels``.

    The raw Grad-CAM map of the box's class is rectified, upsampled to the image
    size, scaled to [0, 1] by its own maximum, and thresholded (:func:`map_box_iou`).
    """
    cams = grad_cam(model, images, labels.long(), layer=layer)
    maps = normalize_maps(upsample_maps(cams, (images.shape[2], images.shape[3])))
    return map_box_iou(maps, boxes, threshold=threshold)


def mean_attention_consistency(model: nn.Module, images: Tensor, **options: Any) -> float:
    """Mean over the batch of :func:`models.atcon.attention_consistency` (top classes)."""
    return float(attention_consistency(model, images, **options).mean())


def mask_attention_scores(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    masks: Tensor,
    *,
    threshold: float = 0.5,
    tolerance: int = 0,
    layer: nn.Module | None = None,
) -> tuple[Tensor, Tensor]:
    """``(pointing-game hits (N,) bool, mask IoU (N,))`` of class ``labels`` against ``masks``.

    ``masks`` (N, H, W) are the objects' pixels at any resolution (the frame's,
    say); the Grad-CAM map of each image's class is rectified, upsampled to it and
    scaled to [0, 1]. A hit is a map maximum on the object or within ``tolerance``
    pixels (Chebyshev distance) of it. An empty mask is an error: nothing to point at.
    """
    if masks.dim() != 3 or masks.shape[0] != images.shape[0]:
        raise ValueError(
            f"masks must be (N, H, W) with N={images.shape[0]}, got {tuple(masks.shape)}"
        )
    objects = masks.bool().to(images.device)
    if not bool(objects.flatten(1).any(1).all()):
        raise ValueError("every mask must mark at least one pixel")
    cams = grad_cam(model, images, labels.long(), layer=layer)
    maps = normalize_maps(upsample_maps(cams, (masks.shape[1], masks.shape[2])))
    if tolerance > 0:
        size = 2 * tolerance + 1
        grown = torch.nn.functional.max_pool2d(
            objects[:, None].float(), size, stride=1, padding=tolerance
        )[:, 0].bool()
    else:
        grown = objects
    peak = maps.flatten(1).argmax(1)
    hits = grown.flatten(1).gather(1, peak[:, None])[:, 0]
    region = maps >= threshold
    intersection = (region & objects).flatten(1).sum(1).float()
    union = (region | objects).flatten(1).sum(1).float()
    return hits, intersection / union.clamp_min(1)
