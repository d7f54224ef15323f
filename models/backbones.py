"""Torchvision classifiers with a replaced head; weights only from local files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock

from ._exceptions import CheckpointError

__all__ = ["ARCHITECTURES", "SlimResNet", "build_backbone", "replace_head", "resnet18_slim"]

logger = logging.getLogger(__name__)


class SlimResNet(tvm.ResNet):
    """torchvision's ResNet-18 layout (BasicBlock, [2, 2, 2, 2]) with scaled widths.

    ``width`` is the first stage's channel count (64 in ResNet-18; 16 gives the
    quarter-width network); the stages have ``width * (1, 2, 4, 8)`` channels.
    ``small_input`` swaps the 7x7 stride-2 stem and max-pool for a 3x3 stride-1
    convolution (the CIFAR layout), so a 32x32 image reaches ``layer4`` at 4x4
    rather than 1x1 and Grad-CAM still has a map to show. The modules keep
    torchvision's names (``layer4``, ``fc``), so the attention methods find them.
    """

    def __init__(self, num_classes: int = 1000, *, width: int = 16, small_input: bool = True):
        if width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        if small_input:
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        )
        self.layer1 = self._make_layer(BasicBlock, width, 2)
        self.layer2 = self._make_layer(BasicBlock, width * 2, 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, width * 4, 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, width * 8, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)


def resnet18_slim(
    *, weights: None = None, num_classes: int = 1000, width: int = 16, small_input: bool = True
) -> SlimResNet:
    """A :class:`SlimResNet`; ``weights`` must be ``None`` (no pretrained slim weights exist)."""
    if weights is not None:
        raise ValueError("weights: resnet18_slim has no pretrained weights; leave it None")
    return SlimResNet(num_classes, width=width, small_input=small_input)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": tvm.resnet18,
    "resnet34": tvm.resnet34,
    "resnet50": tvm.resnet50,
    "densenet121": tvm.densenet121,
    "efficientnet_b0": tvm.efficientnet_b0,
    "mobilenet_v2": tvm.mobilenet_v2,
    "resnet18_slim": resnet18_slim,
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
