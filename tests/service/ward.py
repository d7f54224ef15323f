"""A synthetic ward video and a small checkpoint that finds its events, for page tests.

The checkpoint is a seeded ResNet-18 at 64 px whose last layer is fitted (a linear
probe, well under a second on a CPU) to the video's own labeled frames, so detection
finds ``patient_sitting`` and ``staff_present`` near their true times, not at 0 s:
a test can then check that selecting an event seeks the player to a real start.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.backbones import build_backbone
from models.checkpoint import CheckpointInfo, save_checkpoint
from synthetic.synth import GroundTruthEvent, SynthConfig, synthesize

CLASSES = ["staff_present", "patient_sitting"]
INPUT_SIZE = 64


@dataclass(frozen=True)
class Ward:
    video: Path
    checkpoint: Path
    frames_dir: Path
    truth: list[GroundTruthEvent]


def _frames(frames_dir: Path) -> tuple[np.ndarray, torch.Tensor]:
    with open(frames_dir / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    images = np.stack(
        [
            np.asarray(
                Image.open(frames_dir / row["path"])
                .convert("RGB")
                .resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
            )
            for row in rows
        ]
    )
    targets = torch.tensor(
        [[float(c in row["labels"].split("|")) for c in CLASSES] for row in rows]
    )
    return images, targets


def make_ward(out: Path, *, seconds: float = 16.0, seed: int = 0) -> Ward:
    """Write ``ward.mp4`` (160x120, 10 fps) and ``model.pt`` into ``out``."""
    result = synthesize(
        out,
        SynthConfig(seconds=seconds, fps=10, width=160, height=120, seed=seed, frames_fps=4),
    )
    assert result.frames_dir is not None
    torch.manual_seed(0)
    model = build_backbone("resnet18", len(CLASSES)).eval()
    info = CheckpointInfo(
        arch="resnet18", class_names=CLASSES, input_size=INPUT_SIZE, thresholds=[0.5, 0.5]
    )
    images, targets = _frames(result.frames_dir)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    head = model.fc
    model.fc = torch.nn.Identity()
    with torch.no_grad():
        features = model((x - mean) / std)
    model.fc = head
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=200)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(features), targets)
        loss = loss + 1e-3 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)  # type: ignore[arg-type]
    checkpoint = out / "model.pt"
    save_checkpoint(checkpoint, model, info)
    return Ward(result.video, checkpoint, result.frames_dir, result.events)
