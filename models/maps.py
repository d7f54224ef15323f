"""Post-processing of raw attention maps: rectify, upsample, normalise.

The attention functions return raw maps; these helpers turn them into what is shown
or compared. All take and return tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["as_float", "normalize_maps", "saliency_magnitude", "upsample_maps"]

_EPS = 1e-12


def upsample_maps(maps: Tensor, size: tuple[int, int], *, relu: bool = True) -> Tensor:
    """(N, h, w) -> (N, H, W) by bilinear interpolation, after a ReLU when ``relu``."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be (N, h, w), got shape {tuple(maps.shape)}")
    if relu:
        maps = maps.clamp(min=0)
    out = F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
    return out.squeeze(1)


def normalize_maps(maps: Tensor) -> Tensor:
    """Scale each map of (N, ...) to [0, 1] by its own minimum and maximum."""
    flat = maps.flatten(1)
    low = flat.amin(dim=1, keepdim=True)
    high = flat.amax(dim=1, keepdim=True)
    return ((flat - low) / (high - low).clamp_min(_EPS)).view_as(maps)


def saliency_magnitude(saliency: Tensor) -> Tensor:
    """(N, C, H, W) input-space attributions -> (N, H, W) channel sum of absolute values."""
    if saliency.dim() != 4:
        raise ValueError(f"saliency must be (N, C, H, W), got shape {tuple(saliency.shape)}")
    return saliency.abs().sum(dim=1)


def as_float(value: Tensor) -> float:
    return float(torch.as_tensor(value).detach().cpu())
