r"""Pure schedule functions of ATCON fine-tuning: which batch, what weight, which rows.

ATCON's two published schedules (Mirzazadeh et al., WACV 2023):

- ``alternating``: each step draws a labeled batch with probability
  :math:`p_L = \max\big(f_{min},\ \alpha |L| / (\alpha |L| + |U|)\big)` (for
  :math:`|L| > 0`; :math:`f_{min}` the floor, :func:`labeled_probability`) and
  otherwise an unlabeled batch on which only the ATCON loss is minimised;
- ``combined``: every step minimises
  :math:`\mathcal{L}_{sup} + \alpha\, w_t\, \mathcal{L}_{ATCON}`;

plus ``unsupervised``: the ATCON loss alone. :math:`w_t` is the ATCON weight after
its warm-up (:func:`warmup_factor`).
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

import torch

__all__ = [
    "Schedule",
    "global_batches",
    "labeled_probability",
    "local_slice",
    "warmup_factor",
]


class Schedule(StrEnum):
    ALTERNATING = "alternating"
    COMBINED = "combined"
    UNSUPERVISED = "unsupervised"


def labeled_probability(
    alpha: float, num_labeled: int, num_unlabeled: int, *, min_fraction: float = 0.0
) -> float:
    r"""The chance a step of the alternating schedule is supervised.

    .. math::  p_L = \max\Big(f_{min},\ \frac{\alpha |L|}{\alpha |L| + |U|}\Big)
               \quad (|L| > 0), \qquad p_L = 0 \quad (|L| = 0)

    The published rule alone drowns a few labels: 9 labeled and 471 unlabeled frames
    at :math:`\alpha = 1` give :math:`p_L = 9/480 \approx 1.9\%`, about 4 labeled
    steps in 200. The floor :math:`f_{min}` (``min_fraction``; 0.25 gives
    :math:`E[\text{labeled steps}] = 0.25 \times 200 = 50`) keeps them in play;
    ``alpha = 0`` still means no labeled step (a control run).
    """
    if alpha < 0:
        raise ValueError(f"alpha must be non-negative, got {alpha}")
    if num_labeled < 0 or num_unlabeled < 0:
        raise ValueError("num_labeled and num_unlabeled must be non-negative")
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must lie in [0, 1], got {min_fraction}")
    total = alpha * num_labeled + num_unlabeled
    if total == 0:
        raise ValueError("alpha * num_labeled + num_unlabeled must be positive")
    if num_labeled == 0 or alpha == 0:
        return 0.0
    return max(min_fraction, alpha * num_labeled / total)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear ramp of the ATCON weight: ``(step + 1) / warmup_steps``, then 1."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be non-negative, got {warmup_steps}")
    if warmup_steps == 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def global_batches(
    num_items: int, batch_size: int, *, seed: int, drop_last: bool = False
) -> Iterator[list[int]]:
    """Endless global batches of indices: a fresh seeded permutation per epoch.

    Every process of a data-parallel run draws the same sequence, so together
    they see exactly the batches a single process would.
    """
    if num_items < 1:
        raise ValueError(f"num_items must be at least 1, got {num_items}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if drop_last and num_items < batch_size:
        drop_last = False
    epoch = 0
    while True:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(num_items, generator=generator).tolist()
        for start in range(0, num_items, batch_size):
            batch = order[start : start + batch_size]
            if drop_last and len(batch) < batch_size:
                break
            yield batch
        epoch += 1


def local_slice(batch: list[int], rank: int, world_size: int) -> list[int]:
    """The contiguous share of a global batch that process ``rank`` computes."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    per_rank, extra = divmod(len(batch), world_size)
    start = rank * per_rank + min(rank, extra)
    return batch[start : start + per_rank + (1 if rank < extra else 0)]
