"""Torchvision classifiers with a replaced head; weights only from local files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from ._exceptions import CheckpointError

__all__ = ["ARCHITECTURES", "build_backbone", "replace_head"]

logger = logging.getLogger(__name__)

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": tvm.resnet18,
    "resnet34": tvm.resnet34,
    "resnet50": tvm.resnet50,
    "densenet121": tvm.densenet121,
    "efficientnet_b0": tvm.efficientnet_b0,
    "mobilenet_v2": tvm.mobilenet_v2,
}


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the final linear layer of a torchvision classifier for one with ``num_classes``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear):
        model.fc = nn.Linear(fc.in_features, num_classes)
        return model
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Linear):
        model.classifier = nn.Linear(classifier.in_features, num_classes)
        return model
    if isinstance(classifier, nn.Sequential) and isinstance(classifier[-1], nn.Linear):
        last = classifier[-1]
        classifier[-1] = nn.Linear(last.in_features, num_classes)
        return model
    raise ValueError(f"model {type(model).__name__} has no linear head (fc or classifier)")


def build_backbone(
    arch: str, num_classes: int, *, weights: str | Path | None = None, **arch_kwargs: object
) -> nn.Module:
    """Build ``arch`` with a new ``num_classes`` head.

    ``arch_kwargs`` go to the torchvision constructor. ``weights`` is a local file
    with an ImageNet ``state_dict`` for the original architecture; the head is
    replaced after loading. Nothing is ever downloaded.
    """
    try:
        factory = ARCHITECTURES[arch]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"arch must be one of {known}; got {arch!r}") from None
    model = factory(weights=None, **arch_kwargs)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise CheckpointError(
                f"weights file {path} does not exist; pass a local ImageNet state_dict file "
                "(nothing is downloaded) or leave --weights out for random initialisation"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"could not read weights file {path}: {exc}") from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing:
            raise CheckpointError(
                f"weights file {path} does not fit {arch}: {len(missing)} missing tensors, "
                f"e.g. {missing[:3]}"
            )
        if unexpected:
            logger.warning("weights file has %d tensors %s does not use", len(unexpected), arch)
    return replace_head(model, num_classes)
