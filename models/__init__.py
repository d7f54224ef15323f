"""The science of the product: attention maps, the ATCON loss, backbones, checkpoints.

Pure PyTorch: nothing here talks HTTP or Redis or touches files other than
checkpoints.

Importing the package (or ``models._exceptions``, ``models.methods``,
``models.checkpoint_info``) does not import torch: the names below that need it are
loaded on first access (PEP 562 module ``__getattr__``), so the API process, which
only needs the exceptions and checkpoint descriptions, stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._exceptions import (
    AtconError,
    CheckpointError,
    LayerNotFoundError,
    ModelError,
    ResumeError,
    TrainingError,
    UnsupportedActivationError,
)
from .checkpoint_info import CheckpointInfo

if TYPE_CHECKING:
    from .atcon import atcon_loss, attention_consistency
    from .attention import (
        grad_cam,
        gradcam_and_guided_backprop,
        guided_backprop,
        integrated_gradients,
    )
    from .backbones import build_backbone
    from .checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "AtconError",
    "CheckpointError",
    "CheckpointInfo",
    "LayerNotFoundError",
    "ModelError",
    "ResumeError",
    "TrainingError",
    "UnsupportedActivationError",
    "atcon_loss",
    "attention_consistency",
    "build_backbone",
    "grad_cam",
    "gradcam_and_guided_backprop",
    "guided_backprop",
    "integrated_gradients",
    "load_checkpoint",
    "save_checkpoint",
]

#: public names that import torch, and the submodule each lives in
_LAZY = {
    "atcon_loss": "atcon",
    "attention_consistency": "atcon",
    "grad_cam": "attention",
    "gradcam_and_guided_backprop": "attention",
    "guided_backprop": "attention",
    "integrated_gradients": "attention",
    "build_backbone": "backbones",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
