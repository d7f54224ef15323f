"""Frame directories on disk, and torch Datasets over them.

Formats (also in the README):

- Labeled frames: a directory with ``labels.csv``, columns ``path,labels``; ``labels``
  holds class names separated by ``|`` (empty: no event); paths are relative to the
  directory and may not leave it. An optional ``classes.txt`` (one name a line)
  fixes the class order; otherwise the classes are the sorted names that occur.
- Unlabeled frames: a directory searched recursively for JPEG and PNG files.
- Boxes (optional, for weak-localisation evaluation): ``boxes.csv`` with columns
  ``path,label,x0,y0,x1,y1`` in pixels of the original image, ``x1``/``y1`` exclusive.

Unreadable or non-image files are skipped and counted, with one warning naming a
few. A ``labels.csv`` or ``boxes.csv`` with missing columns, unknown class names or
paths outside the directory is refused with its line number, and so is a labeled
set with no usable frame (:class:`FrameDataError`).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .._exceptions import ClassMismatchError, FrameDataError

__all__ = [
    "IMAGE_SUFFIXES",
    "Box",
    "BoxDataset",
    "FrameTransform",
    "LabeledFrame",
    "LabeledFrameDataset",
    "LabeledFrames",
    "UnlabeledFrameDataset",
    "UnlabeledFrames",
    "find_unlabeled_frames",
    "normalization",
    "read_boxes",
    "read_class_names",
    "read_labeled_frames",
    "split_indices",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
LABELS_FILE = "labels.csv"
CLASSES_FILE = "classes.txt"
BOXES_FILE = "boxes.csv"
_METADATA = frozenset({LABELS_FILE, CLASSES_FILE, BOXES_FILE})
_LABEL_SEPARATOR = "|"


@dataclass(frozen=True)
class LabeledFrame:
    path: Path
    labels: tuple[str, ...]
    line: int


@dataclass
class LabeledFrames:
    """The usable rows of a labeled frame directory."""

    root: Path
    class_names: list[str]
    frames: list[LabeledFrame]
    skipped: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def targets(self) -> Tensor:
        """Multi-hot targets (N, C), float."""
        index = {name: i for i, name in enumerate(self.class_names)}
        out = torch.zeros(len(self.frames), len(self.class_names))
        for row, frame in enumerate(self.frames):
            for label in frame.labels:
                out[row, index[label]] = 1.0
        return out

    @property
    def single_label(self) -> bool:
        """Whether every frame carries exactly one class."""
        return all(len(frame.labels) == 1 for frame in self.frames)


@dataclass
class UnlabeledFrames:
    root: Path
    paths: list[Path]
    skipped: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class Box:
    path: Path
    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    line: int


def _is_readable_image(path: Path) -> bool:
    """Decode the file (JPEG at reduced resolution, which still reads every byte)."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
        return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _warn_skipped(skipped: Sequence[Path], root: Path) -> None:
    if skipped:
        examples = ", ".join(str(_relative(p, root)) for p in skipped[:3])
        logger.warning(
            "skipped %d unreadable or non-image file(s) in %s, e.g. %s",
            len(skipped),
            root,
            examples,
        )


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path


def _inside(root: Path, relative: str, *, where: str) -> Path:
    """``root / relative`` if ``relative`` is a relative path that stays inside ``root``."""
    text = relative.strip()
    if not text:
        raise FrameDataError(f"{where}: the path is empty")
    pure = PurePosixPath(text.replace("\\", "/"))
    normal = os.path.normpath(pure.as_posix())
    if pure.is_absolute() or Path(text).is_absolute() or normal == ".." or normal.startswith("../"):
        raise FrameDataError(f"{where}: path {text!r} lies outside the directory {root}")
    return root / normal


def read_class_names(path: Path) -> list[str]:
    """``classes.txt``: one class name a line; blank lines ignored; no duplicates."""
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise FrameDataError(f"{path} names no class")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FrameDataError(f"{path} names a class more than once: {', '.join(duplicates)}")
    bad = [n for n in names if _LABEL_SEPARATOR in n]
    if bad:
        raise FrameDataError(f"{path}: class names may not contain '|': {bad}")
    return names


def _open_csv(path: Path, required: Sequence[str]) -> tuple[csv.DictReader[str], object]:
    handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed by caller
    reader = csv.DictReader(handle)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [column for column in required if column not in header]
    if missing:
        handle.close()
        raise FrameDataError(
            f"{path} line 1: missing column(s) {', '.join(missing)}; the header must name "
            f"{','.join(required)} (found {','.join(header) or 'nothing'})"
        )
    reader.fieldnames = header
    return reader, handle


def read_labeled_frames(
    directory: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    class_source: str = "the checkpoint",
) -> LabeledFrames:
    """Read a labeled frame directory (see the module docstring).

    ``class_names`` fixes the classes (a checkpoint's); the directory's
    ``classes.txt``, when present, must then list the same names in the same order,
    and every label must be one of them. ``class_source`` names where
    ``class_names`` came from, for messages.
    """
    root = Path(directory)
    labels_path = root / LABELS_FILE
    if not labels_path.is_file():
        raise FrameDataError(f"{root} has no {LABELS_FILE} (columns path,labels)")
    classes_path = root / CLASSES_FILE
    fixed: list[str] | None = None
    source = ""
    if classes_path.is_file():
        fixed, source = read_class_names(classes_path), str(classes_path)
    if class_names is not None:
        wanted = list(class_names)
        if fixed is not None and fixed != wanted:
            raise ClassMismatchError(
                f"the classes of {class_source} ({', '.join(wanted)}) differ from those of "
                f"{classes_path} ({', '.join(fixed)})"
            )
        fixed, source = wanted, class_source

    rows: list[LabeledFrame] = []
    seen: dict[Path, int] = {}
    reader, handle = _open_csv(labels_path, ("path", "labels"))
    with handle:  # type: ignore[attr-defined]
        for record in reader:
            line = reader.line_num
            where = f"{labels_path} line {line}"
            path = _inside(root, record.get("path") or "", where=where)
            text = record.get("labels") or ""
            labels = tuple(dict.fromkeys(p.strip() for p in text.split(_LABEL_SEPARATOR)))
            labels = tuple(label for label in labels if label)
            if fixed is not None:
                unknown = [label for label in labels if label not in fixed]
                if unknown:
                    raise ClassMismatchError(
                        f"{where}: unknown class {', '.join(map(repr, unknown))} "
                        f"(the classes of {source} are {', '.join(fixed)})"
                    )
            if path in seen:
                raise FrameDataError(
                    f"{where}: {path.name} is listed twice (also line {seen[path]})"
                )
            seen[path] = line
            rows.append(LabeledFrame(path=path, labels=labels, line=line))

    names = fixed if fixed is not None else sorted({lab for row in rows for lab in row.labels})
    usable = [row for row in rows if _is_readable_image(row.path)]
    skipped = [row.path for row in rows if row not in usable]
    _warn_skipped(skipped, root)
    if not usable:
        raise FrameDataError(
            f"{labels_path} lists no usable frame ({len(rows)} rows, {len(skipped)} unreadable)"
        )
    if not names:
        raise FrameDataError(f"{labels_path} names no class and there is no {CLASSES_FILE}")
    return LabeledFrames(root=root, class_names=list(names), frames=usable, skipped=skipped)


def find_unlabeled_frames(directory: str | Path) -> UnlabeledFrames:
    """Every readable JPEG/PNG under ``directory`` (recursively), in sorted order."""
    root = Path(directory)
    if not root.is_dir():
        raise FrameDataError(f"unlabeled frame directory {root} does not exist")
    paths: list[Path] = []
    skipped: list[Path] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.parent == root and path.name in _METADATA:
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and _is_readable_image(path):
            paths.append(path)
        else:
            skipped.append(path)
    _warn_skipped(skipped, root)
    return UnlabeledFrames(root=root, paths=paths, skipped=skipped)


def read_boxes(path: str | Path, *, root: str | Path, class_names: Sequence[str]) -> list[Box]:
    """Read ``boxes.csv``; image paths are relative to ``root``. Unreadable images skipped."""
    csv_path, base = Path(path), Path(root)
    if not csv_path.is_file():
        raise FrameDataError(f"boxes file {csv_path} does not exist")
    columns = ("path", "label", "x0", "y0", "x1", "y1")
    boxes: list[Box] = []
    reader, handle = _open_csv(csv_path, columns)
    with handle:  # type: ignore[attr-defined]
        for record in reader:
            where = f"{csv_path} line {reader.line_num}"
            image_path = _inside(base, record.get("path") or "", where=where)
            label = (record.get("label") or "").strip()
            if label not in class_names:
                raise FrameDataError(
                    f"{where}: unknown class {label!r} (classes: {', '.join(class_names)})"
                )
            try:
                x0, y0, x1, y1 = (float(record[c] or "") for c in columns[2:])
            except ValueError:
                raise FrameDataError(f"{where}: x0, y0, x1, y1 must be numbers") from None
            if not (x1 > x0 and y1 > y0 and min(x0, y0) >= 0):
                raise FrameDataError(f"{where}: the box needs 0 <= x0 < x1 and 0 <= y0 < y1")
            boxes.append(Box(image_path, label, x0, y0, x1, y1, reader.line_num))
    usable = [box for box in boxes if _is_readable_image(box.path)]
    _warn_skipped(sorted({b.path for b in boxes if b not in usable}), base)
    if not usable:
        raise FrameDataError(f"{csv_path} lists no box on a usable image")
    return usable


def split_indices(count: int, fraction: float, *, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of ``range(count)`` into (train, validation) with ``fraction`` held out.

    At least one item stays for training; no validation set when ``fraction`` is 0.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    held = min(count - 1, round(count * fraction)) if fraction > 0 else 0
    return sorted(order[held:]), sorted(order[:held])


def normalization(
    mean: Sequence[float], std: Sequence[float], *, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """``(scale, shift)``, each (1, 3, 1, 1), such that ``x * scale - shift`` equals
    ``(x / 255 - mean) / std`` for 0-255 pixel values ``x``: the one input
    normalisation of training, detection and frame scoring (fused in one multiply-add)."""
    std_t = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, 3, 1, 1)
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return 1.0 / (255.0 * std_t), mean_t / std_t


class FrameTransform:
    """Decode an image file to a normalised float tensor (3, size, size).

    The image is resized (not cropped) to ``size`` x ``size``. With ``augment``:
    a random horizontal flip and a random crop of 80-100% of each side before the
    resize, drawn from torch's global generator (seeded by the trainer).
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        augment: bool = False,
    ) -> None:
        if size < 8:
            raise ValueError(f"size must be at least 8 px, got {size}")
        self.size = size
        scale, shift = normalization(mean, std)
        self._scale, self._shift = scale[0], shift[0]
        self.augment = augment

    def load(self, path: Path) -> Image.Image:
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise FrameDataError(f"could not read frame {path.name}: {exc}") from exc

    def __call__(self, image: Image.Image) -> Tensor:
        if self.augment:
            width, height = image.size
            scale = float(torch.empty(()).uniform_(0.8, 1.0))
            w, h = max(1, round(width * scale)), max(1, round(height * scale))
            left = int(torch.randint(0, width - w + 1, ()))
            top = int(torch.randint(0, height - h + 1, ()))
            image = image.crop((left, top, left + w, top + h))
            if bool(torch.rand(()) < 0.5):
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.float32)
        tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
        return tensor * self._scale - self._shift


class LabeledFrameDataset(Dataset[tuple[Tensor, Tensor]]):
    """``(image, multi-hot target)`` for the frames at ``indices`` (all by default)."""

    def __init__(
        self,
        frames: LabeledFrames,
        transform: FrameTransform,
        indices: Sequence[int] | None = None,
    ) -> None:
        self.frames = frames
        self.transform = transform
        self.indices = list(range(len(frames))) if indices is None else list(indices)
        self._targets = frames.targets()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        row = self.indices[index]
        image = self.transform(self.transform.load(self.frames.frames[row].path))
        return image, self._targets[row]


class UnlabeledFrameDataset(Dataset[Tensor]):
    """Normalised images of a list of frame files."""

    def __init__(self, paths: Sequence[Path], transform: FrameTransform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        return self.transform(self.transform.load(self.paths[index]))


class BoxDataset(Dataset[tuple[Tensor, int, Tensor]]):
    """``(image, class index, box (4,) in input-size pixels)`` for each box."""

    def __init__(
        self, boxes: Sequence[Box], class_names: Sequence[str], transform: FrameTransform
    ) -> None:
        self.boxes = list(boxes)
        self.index = {name: i for i, name in enumerate(class_names)}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor]:
        box = self.boxes[index]
        image = self.transform.load(box.path)
        sx = self.transform.size / image.width
        sy = self.transform.size / image.height
        scaled = torch.tensor([box.x0 * sx, box.y0 * sy, box.x1 * sx, box.y1 * sy])
        return self.transform(image), self.index[box.label], scaled
