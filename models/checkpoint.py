"""Self-describing checkpoints, written atomically.

A checkpoint file is a ``torch.save`` dictionary::

    {"format": 1, "info": CheckpointInfo as a dict, "state_dict": model weights}

``load_checkpoint`` rebuilds the architecture from the info alone, so a checkpoint
is all a worker needs to serve a model. The info alone is read without torch by
:func:`models.checkpoint_info.read_checkpoint_info`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ._exceptions import CheckpointError
from .atomic import atomic_file
from .backbones import build_backbone
from .checkpoint_info import FORMAT_VERSION, CheckpointInfo, file_sha256, info_of_payload

#: ``CheckpointInfo`` and ``file_sha256`` live in :mod:`models.checkpoint_info`
#: (torch-free) and are re-exported here
__all__ = ["FORMAT_VERSION", "CheckpointInfo", "file_sha256", "load_checkpoint", "save_checkpoint"]


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
    with atomic_file(path) as fh:
        torch.save(payload, fh)
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
    info = info_of_payload(path, payload)
    info.sha256 = file_sha256(path)
    model = build_backbone(info.arch, info.num_classes, **info.arch_kwargs)
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} weights do not fit {info.arch}: {exc}") from exc
    model.eval()
    return model, info
