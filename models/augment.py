r"""Batched image augmentation on normalised tensors: the weak and strong views of adaptation.

Both act on a batch ``x`` of normalised images (N, 3, H, W) (zero mean and unit
variance per channel, roughly), each image drawing its own parameters from the
given generator, so a seeded run is repeatable.

- :func:`weak_view`: a random translation by up to ``shift`` of each side (edges
  replicated) and a horizontal flip with probability 1/2. The ward's classes do not
  depend on left and right, nor on a few pixels of camera drift.
- :func:`strong_view`: the weak view, then per image a contrast :math:`c \sim U(0.5,
  1.5)` and brightness :math:`b \sim U(-0.5, 0.5)` (in standard deviations:
  :math:`x \mapsto c\,x + b`), grey with probability 1/2 (the channel mean, which
  is what an infrared camera gives), Gaussian noise of standard deviation
  :math:`\sigma \sim U(0, 0.3)`, and one square cut out (a quarter of the side,
  set to 0, the mean). FixMatch's recipe (Sohn et al., NeurIPS 2020) with the
  photometric operations a night camera brings.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["strong_view", "weak_view"]


def _uniform(n: int, low: float, high: float, generator: torch.Generator, x: Tensor) -> Tensor:
    return (torch.rand(n, generator=generator) * (high - low) + low).to(x.device, x.dtype)


def weak_view(x: Tensor, generator: torch.Generator, *, shift: float = 0.08) -> Tensor:
    """Random translation (up to ``shift`` of each side) and horizontal flip."""
    if x.ndim != 4:
        raise ValueError(f"x must be a batch (N, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    max_dx, max_dy = max(1, round(shift * w)), max(1, round(shift * h))
    dx = torch.randint(-max_dx, max_dx + 1, (n,), generator=generator)
    dy = torch.randint(-max_dy, max_dy + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    cols = torch.arange(w).expand(n, w) - dx[:, None]
    cols = torch.where(flip[:, None], w - 1 - cols, cols).clamp(0, w - 1)
    rows = (torch.arange(h).expand(n, h) - dy[:, None]).clamp(0, h - 1)
    index_rows = rows.to(x.device)[:, None, :, None].expand(n, x.shape[1], h, w)
    moved = torch.gather(x, 2, index_rows)
    index_cols = cols.to(x.device)[:, None, None, :].expand(n, x.shape[1], h, w)
    return torch.gather(moved, 3, index_cols)


def strong_view(x: Tensor, generator: torch.Generator) -> Tensor:
    """The weak view, then contrast, brightness, grey, noise and a cut-out square."""
    out = weak_view(x, generator)
    n, c, h, w = out.shape
    contrast = _uniform(n, 0.5, 1.5, generator, out).view(n, 1, 1, 1)
    brightness = _uniform(n, -0.5, 0.5, generator, out).view(n, 1, 1, 1)
    out = out * contrast + brightness
    grey = (torch.rand(n, generator=generator) < 0.5).to(out.device).view(n, 1, 1, 1)
    out = torch.where(grey, out.mean(dim=1, keepdim=True).expand(n, c, h, w), out)
    sigma = _uniform(n, 0.0, 0.3, generator, out).view(n, 1, 1, 1)
    noise = torch.randn(out.shape, generator=generator).to(out.device, out.dtype)
    out = out + sigma * noise
    side_h, side_w = max(1, h // 4), max(1, w // 4)
    top = torch.randint(0, h - side_h + 1, (n,), generator=generator).to(out.device)
    left = torch.randint(0, w - side_w + 1, (n,), generator=generator).to(out.device)
    rows = torch.arange(h, device=out.device)[None, :, None]
    cols = torch.arange(w, device=out.device)[None, None, :]
    hole = (
        (rows >= top[:, None, None])
        & (rows < (top + side_h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + side_w)[:, None, None])
    )
    return out.masked_fill(hole[:, None], 0.0)
