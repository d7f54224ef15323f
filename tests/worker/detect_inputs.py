"""Inputs the detection tests share: a small real checkpoint and a short synthetic ward."""

from __future__ import annotations

from pathlib import Path

import torch

from models.backbones import build_backbone
from models.checkpoint import CheckpointInfo, save_checkpoint
from synthetic.synth import CLASSES, SynthConfig, SynthResult, synthesize

#: the test checkpoint's input size
INPUT = 64
#: 10 s at 10 fps, 160x120: 20 samples at the default 2 per second
WARD = SynthConfig(seconds=10.0, fps=10.0, width=160, height=120, seed=1)


def make_checkpoint(path: Path, *, input_size: int = INPUT, names: list[str] | None = None) -> Path:
    """A ResNet-18 whose batch norms hold statistics as a trained one would (not the
    identity), so that folding them for scoring is exercised for real."""
    torch.manual_seed(0)
    model = build_backbone("resnet18", 4)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.7, 1.3)
            module.bias.data.uniform_(-0.1, 0.1)
    info = CheckpointInfo(
        arch="resnet18", class_names=names or list(CLASSES), input_size=input_size
    )
    save_checkpoint(path, model, info)
    return path


def make_ward(folder: Path) -> SynthResult:
    return synthesize(folder, WARD, frames=False)
