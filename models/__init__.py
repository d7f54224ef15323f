"""The science of the product: attention maps, the ATCON loss, backbones, checkpoints.

Pure PyTorch: nothing here talks HTTP or Redis or touches files other than
checkpoints.
"""

from ._exceptions import (
    AtconError,
    CheckpointError,
    LayerNotFoundError,
    ModelError,
    TrainingError,
    UnsupportedActivationError,
)
from .atcon import atcon_loss, attention_consistency
from .attention import (
    grad_cam,
    gradcam_and_guided_backprop,
    guided_backprop,
    integrated_gradients,
)
from .backbones import build_backbone
from .checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint

__all__ = [
    "AtconError",
    "CheckpointError",
    "CheckpointInfo",
    "LayerNotFoundError",
    "ModelError",
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
