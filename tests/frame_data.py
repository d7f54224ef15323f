"""Tiny frame directories written with Pillow, for the training and CLI tests.

Class ``k`` of ``n`` draws a bright square in its own place on a dark noisy frame, so
a tiny model can learn the classes in a few steps and Grad-CAM has a place to find.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def square_box(label: int, size: int, num_classes: int) -> tuple[int, int, int, int]:
    """The square class ``label`` draws: (x0, y0, x1, y1), x1/y1 exclusive."""
    side = size // 2
    corners = [(0, 0), (size - side, size - side), (size - side, 0), (0, size - side)]
    x0, y0 = corners[label % len(corners)]
    return x0, y0, x0 + side, y0 + side


def frame(labels: Sequence[int], size: int, num_classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, size=(size, size, 3)).astype(np.uint8)
    for label in labels:
        x0, y0, x1, y1 = square_box(label, size, num_classes)
        image[y0:y1, x0:x1] = (220, 200 - 40 * (label % 4), 60 + 40 * (label % 4))
    return image


def write_labeled_dir(
    root: Path,
    labels: Sequence[Sequence[int]],
    class_names: Sequence[str] = ("bed_exit", "staff"),
    *,
    size: int = 16,
    classes_file: bool = True,
    seed: int = 0,
    subdir: str = "img",
) -> Path:
    """Write frames and ``labels.csv`` (and ``classes.txt``); returns ``root``."""
    (root / subdir).mkdir(parents=True, exist_ok=True)
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "labels"])
        for i, row in enumerate(labels):
            name = f"{subdir}/f{i:03d}.png"
            Image.fromarray(frame(row, size, len(class_names), seed + i)).save(root / name)
            writer.writerow([name, "|".join(class_names[k] for k in row)])
    if classes_file:
        (root / "classes.txt").write_text("\n".join(class_names) + "\n")
    return root


def write_unlabeled_dir(
    root: Path, count: int, num_classes: int = 2, *, size: int = 16, seed: int = 100
) -> Path:
    (root / "a" / "b").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        folder = root / "a" if i % 2 else root / "a" / "b"
        suffix = ".png" if i % 3 else ".jpg"
        Image.fromarray(frame([i % num_classes], size, num_classes, seed + i)).save(
            folder / f"u{i:03d}{suffix}"
        )
    return root


def write_boxes(
    root: Path, labels: Sequence[Sequence[int]], class_names: Sequence[str], size: int = 16
) -> Path:
    path = root / "boxes.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "x0", "y0", "x1", "y1"])
        for i, row in enumerate(labels):
            for label in row:
                writer.writerow(
                    [
                        f"img/f{i:03d}.png",
                        class_names[label],
                        *square_box(label, size, len(class_names)),
                    ]
                )
    return path
