"""Self-describing checkpoints, written atomically.

A checkpoint file is a ``torch.save`` dictionary::

    {"format": 1, "info": CheckpointInfo as a dict, "state_dict": model weights}

``load_checkpoint`` rebuilds the architecture from the info alone, so a checkpoint
is all a worker needs to serve a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._exceptions import CheckpointError
from .backbones import build_backbone

__all__ = ["FORMAT_VERSION", "CheckpointInfo", "file_sha256", "load_checkpoint", "save_checkpoint"]

FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class CheckpointInfo:
    """Everything needed to rebuild and use a model, stored inside its checkpoint."""

    arch: str
    class_names: list[str]
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    multi_label: bool = True
    thresholds: list[float] = field(default_factory=list)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    parent_hash: str | None = None
    #: sha256 of the file this info was read from; set by ``load_checkpoint``.
    sha256: str | None = None

    def __post_init__(self) -> None:
        if not self.class_names:
            raise ValueError("class_names must name at least one class")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names has duplicates: {self.class_names}")
        if not self.thresholds:
            self.thresholds = [0.5] * len(self.class_names)
        if len(self.thresholds) != len(self.class_names):
            raise ValueError(
                f"thresholds has {len(self.thresholds)} entries for {len(self.class_names)} classes"
            )
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("sha256")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names and k != "sha256"})


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path: str | Path, model: nn.Module, info: CheckpointInfo) -> str:
    """Write ``model`` and ``info`` to ``path`` atomically; return the file's sha256.

    The bytes go to a temporary file in the same directory, are flushed to disk, and
    the file is renamed over ``path``: a crash leaves the old checkpoint untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT_VERSION,
        "info": info.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return file_sha256(path)


def load_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the model stored at ``path``; return it in eval mode with its info."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} could not be read: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is not an ATCON checkpoint of format {FORMAT_VERSION} "
            "(train one with `atcon train`)"
        )
    try:
        info = CheckpointInfo.from_dict(payload["info"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has an invalid description: {exc}") from exc
    info.sha256 = file_sha256(path)
    model = build_backbone(info.arch, info.num_classes, **info.arch_kwargs)
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} weights do not fit {info.arch}: {exc}") from exc
    model.eval()
    return model, info
