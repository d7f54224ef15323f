"""A candidate model beside its parent on unlabeled pool frames, when no label can gate it.

Without labeled validation frames the promotion gate keeps a fine-tuned model a
candidate (:func:`worker.serving.versions.promotion_gate`), and an admin decides. This is
what they decide on, computed by the fine-tune job right after training (the API
process only reads the result):

- a sample of unlabeled pool frames (``ATCON_FINETUNE_COMPARE_FRAMES``, seeded by
  the job, optionally narrowed by a frame filter), and for each frame both models'
  predicted labels, scores, confidence (the top score) and Grad-CAM overlay;
- a label-free report: the agreement of the two models (the fraction of frames
  with the same predicted label set, :func:`models.metrics.label_set_agreement`),
  and each model's mean prediction entropy
  (:func:`models.metrics.prediction_entropy`) and mean attention consistency
  (:func:`models.atcon.attention_consistency`).

Stored in the version's directory::

    comparison.json
    comparison/<frame_id>.parent.png      Grad-CAM overlay of the parent's top class
    comparison/<frame_id>.candidate.png   the same for the candidate
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from models.checkpoint import CheckpointInfo, load_checkpoint

from ..pool.frames import FramePool, FrameRecord
from ..serving.versions import COMPARISON_DIR, COMPARISON_JSON
from .datasets import FrameTransform

__all__ = [
    "COMPARISON_DIR",
    "COMPARISON_JSON",
    "ROLES",
    "compare_models",
    "sample_frames",
]

logger = logging.getLogger(__name__)

ROLES = ("parent", "candidate")

FrameFilter = Callable[[FrameRecord], bool]


def sample_frames(
    records: Sequence[FrameRecord],
    count: int,
    *,
    seed: str,
    frame_filter: FrameFilter | None = None,
) -> list[FrameRecord]:
    """Up to ``count`` of ``records`` (those ``frame_filter`` keeps), drawn with ``seed``.

    The same records and seed give the same sample, oldest first.
    """
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    kept = [r for r in records if frame_filter is None or frame_filter(r)]
    chosen = random.Random(seed).sample(kept, min(count, len(kept)))
    return sorted(chosen, key=lambda r: (r.added_at, r.frame_id))


def _predict(
    model: nn.Module, info: CheckpointInfo, images: torch.Tensor, layer_name: str | None
) -> dict[str, torch.Tensor]:
    from models.atcon import attention_consistency
    from models.attention import grad_cam_with_targets
    from models.finetune import named_layer
    from models.metrics import prediction_entropy, predictions_from_scores

    layer = named_layer(model, layer_name)

    model.eval()
    with torch.no_grad():
        logits = model(images)
    scores = torch.sigmoid(logits) if info.multi_label else torch.softmax(logits, dim=1)
    cam, _ = grad_cam_with_targets(model, images, layer=layer)
    return {
        "scores": scores,
        "labels": predictions_from_scores(scores, info.thresholds, multi_label=info.multi_label),
        "entropy": prediction_entropy(scores, multi_label=info.multi_label),
        "consistency": attention_consistency(model, images, layer=layer),
        "cam": cam.detach(),
    }


def _overlay(frame: np.ndarray, cam: torch.Tensor, path: Path) -> None:
    from ..detection.render import gradcam_heat, heat_overlay, save_png_atomic

    heat = gradcam_heat(cam.float().cpu().numpy(), (frame.shape[0], frame.shape[1]))
    save_png_atomic(heat_overlay(frame, heat), path)


def compare_models(
    parent: str | Path,
    candidate: str | Path,
    pool: FramePool,
    records: Sequence[FrameRecord],
    out_dir: str | Path,
    *,
    parent_version: str | None = None,
    sampled_from: int | None = None,
    layer: str | None = None,
) -> dict[str, Any]:
    """Score ``records`` with both checkpoints; write the overlays under ``out_dir``.

    Grad-CAM overlays and consistency use ``layer`` (a module name, the one the
    fine-tune used; ``None``: automatic).

    Returns the contents of ``comparison.json`` (see the module docstring). The two
    checkpoints must have the same classes; ``records`` must not be empty.
    """
    from models.metrics import label_set_agreement

    if not records:
        raise ValueError("records must hold at least one pool frame to compare on")
    out_dir = Path(out_dir)
    models = dict(zip(ROLES, (load_checkpoint(parent), load_checkpoint(candidate)), strict=True))
    infos = {role: info for role, (_, info) in models.items()}
    if infos["parent"].class_names != infos["candidate"].class_names:
        raise ValueError("the parent and the candidate have different classes")
    size = infos["candidate"].input_size
    transform = FrameTransform(size, infos["candidate"].mean, infos["candidate"].std)
    pictures, tensors = [], []
    for record in records:
        with Image.open(pool.image_path(record.frame_id)) as image:
            rgb = image.convert("RGB")
        pictures.append(np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR)))
        tensors.append(transform(rgb))
    images = torch.stack(tensors)
    results = {
        role: _predict(model, infos[role], images, layer) for role, (model, _) in models.items()
    }
    names = infos["candidate"].class_names
    frames: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        entry: dict[str, Any] = {
            "frame_id": record.frame_id,
            "video_id": record.video_id,
            "time_s": record.time_s,
        }
        for role in ROLES:
            result = results[role]
            overlay = f"{record.frame_id}.{role}.png"
            _overlay(pictures[i], result["cam"][i], out_dir / overlay)
            scores = result["scores"][i].tolist()
            entry[role] = {
                "labels": [
                    n for n, on in zip(names, result["labels"][i].tolist(), strict=True) if on
                ],
                "scores": dict(zip(names, scores, strict=True)),
                "confidence": max(scores),
                "entropy": float(result["entropy"][i]),
                "consistency": float(result["consistency"][i]),
                "overlay": overlay,
            }
        entry["agree"] = entry["parent"]["labels"] == entry["candidate"]["labels"]
        frames.append(entry)
    summary = {
        "frames": len(records),
        "agreement": label_set_agreement(
            results["parent"]["labels"], results["candidate"]["labels"]
        ),
        "entropy": {role: float(results[role]["entropy"].mean()) for role in ROLES},
        "consistency": {role: float(results[role]["consistency"].mean()) for role in ROLES},
    }
    logger.info(
        "candidate beside its parent on %d pool frames: agreement %.2f",
        len(records),
        summary["agreement"],
    )
    return {
        "parent": {"version": parent_version, "sha256": infos["parent"].sha256},
        "candidate": {"sha256": infos["candidate"].sha256},
        "classes": names,
        "layer": layer,
        "sampled_from": sampled_from,
        "summary": summary,
        "frames": frames,
    }
