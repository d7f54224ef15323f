"""``atcon demo``: the main job end to end on generated data, no server needed.

Today it computes the attention maps and the ATCON loss of a seeded ResNet-18 on
a generated ward-like frame and writes them as PNG; it grows into
video -> events as the video pipeline lands.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    parser.add_argument("--image-size", type=int, default=224, help="model input size (px)")
    parser.add_argument("--seed", type=int, default=0)


def _ward_frame(size: int, seed: int) -> np.ndarray:
    """A plain drawing of a bed with a patient on it, uint8 RGB (size, size, 3)."""

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    frame = np.full((size, size, 3), 70, dtype=np.float32)
    frame += 30 * yy[..., None]
    bed = (xx > 0.2) & (xx < 0.8) & (yy > 0.45) & (yy < 0.75)
    frame[bed] = (200, 200, 190)
    patient = ((xx - 0.45) / 0.2) ** 2 + ((yy - 0.55) / 0.08) ** 2 < 1
    frame[patient] = (180, 140, 120)
    head = ((xx - 0.7) ** 2 + (yy - 0.53) ** 2) < 0.05**2
    frame[head] = (220, 180, 150)
    frame += rng.normal(0, 6, frame.shape)
    return np.asarray(frame.clip(0, 255), dtype=np.uint8)


def run(args: argparse.Namespace) -> int:
    import torch
    from torchvision.models import resnet18

    from models import atcon_loss, attention_consistency, gradcam_and_guided_backprop
    from models.checkpoint import IMAGENET_MEAN, IMAGENET_STD
    from models.maps import normalize_maps, saliency_magnitude, upsample_maps
    from worker.render import heat_overlay, save_png_atomic

    torch.manual_seed(args.seed)
    size = args.image_size
    frame = _ward_frame(size, args.seed)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    images = (torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255 - mean) / std
    model = resnet18(num_classes=4).eval()

    cam, gb, classes = gradcam_and_guided_backprop(model, images)
    heat = normalize_maps(upsample_maps(cam, (size, size)))[0].numpy()
    gb_map = normalize_maps(saliency_magnitude(gb))[0].numpy()
    loss = atcon_loss(model, images)
    loss.backward()
    consistency = float(attention_consistency(model, images)[0])

    out: Path = args.out
    save_png_atomic(frame, out / "frame.png")
    save_png_atomic(heat_overlay(frame, heat), out / "gradcam_overlay.png")
    save_png_atomic((gb_map * 255).round().astype(np.uint8), out / "guided_backprop.png")
    summary = {
        "class": int(classes[0]),
        "atcon_loss": float(loss.detach()),
        "attention_consistency": consistency,
        "files": sorted(p.name for p in out.glob("*.png")),
    }
    logger.info("maps written to %s", out.resolve())
    print(json.dumps(summary, indent=2))  # noqa: T201 - the command's output
    return 0
