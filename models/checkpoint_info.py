"""What a checkpoint says about its model, readable without torch.

The API process answers ``/readyz``, names the served model and checks labels against
its classes, but must not import torch (nor pay its import time and memory). This
module holds the torch-free half of :mod:`models.checkpoint`: the
:class:`CheckpointInfo` dataclass, :func:`file_sha256`, and
:func:`read_checkpoint_info`, which reads a checkpoint's ``info`` without loading a
single weight.

A ``torch.save`` file is a zip archive whose ``data.pkl`` pickles the saved object;
tensors are references (``persistent_id``) to other members of the archive. The
reader unpickles ``data.pkl`` with a restricted unpickler that turns each tensor
into ``None`` and refuses every global but the handful a state dict uses, so a
checkpoint cannot run code through it.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._exceptions import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CheckpointInfo",
    "file_sha256",
    "info_of_payload",
    "read_checkpoint_info",
]

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
    #: sha256 of the file this info was read from; set by the readers.
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
    """The SHA-256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tensor_placeholder(*_args: Any, **_kwargs: Any) -> None:
    """Stands for a tensor: the reader never needs the weights."""
    return None


class _StorageType:
    """Stands for ``torch.FloatStorage`` and the other storage classes."""


class _InfoUnpickler(pickle.Unpickler):
    """Unpickles a checkpoint's ``data.pkl`` with tensors as ``None``; refuses other code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name.startswith("_rebuild_"):
            return _tensor_placeholder
        if module == "torch" and (name.endswith("Storage") or name in ("float32", "bfloat16")):
            return _StorageType
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a checkpoint")

    def persistent_load(self, pid: Any) -> None:
        return None


def _read_payload(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(names) != 1:
            raise CheckpointError(f"checkpoint {path} holds no single data.pkl")
        with archive.open(names[0]) as fh:
            return _InfoUnpickler(fh).load()


def read_checkpoint_info(path: str | Path, *, sha256: bool = True) -> CheckpointInfo:
    """The :class:`CheckpointInfo` of the checkpoint at ``path``, without torch.

    ``sha256``: also hash the file into ``info.sha256`` (reads the whole file).
    Raises :class:`~models.CheckpointError` for a missing file, a file that is not a
    checkpoint of format :data:`FORMAT_VERSION`, or an invalid description.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = _read_payload(path)
    except CheckpointError:
        raise
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} could not be read: {exc}") from exc
    info = info_of_payload(path, payload)
    if sha256:
        info.sha256 = file_sha256(path)
    return info


def info_of_payload(path: Path, payload: Any) -> CheckpointInfo:
    """The :class:`CheckpointInfo` of an unpickled checkpoint ``payload`` read from
    ``path``; :class:`~models.CheckpointError` when it is not one of this format."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is not an ATCON checkpoint of format {FORMAT_VERSION} "
            "(train one with `atcon train`)"
        )
    try:
        return CheckpointInfo.from_dict(payload["info"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has an invalid description: {exc}") from exc
