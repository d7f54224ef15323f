r"""Guards that keep ATCON fine-tuning useful: collapse detection, loss balancing, NaN checks.

A measurement on digits (issue 3) found that with an ATCON weight of 0.01 or more
the ATCON gradient is about 50x the cross-entropy gradient, and within ten steps
the model predicts one class for every input: its maps are then perfectly
consistent and worthless. :class:`CollapseGuard` watches for that state.

Over a window of recent unlabeled batches with predicted distributions
:math:`p_i` (softmax, or the sigmoid scores scaled to sum to one for multi-label
models) it tracks

- the normalised entropy of the mean prediction,
  :math:`H(\bar p) / \log C` with :math:`\bar p = \frac{1}{n}\sum_i p_i`, and
- the fraction of distinct predicted classes, :math:`|\{\arg\max p_i\}| / C`,

and stops when either falls below a set ratio of the starting model's value on the
same kind of data.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._exceptions import TrainingError

__all__ = [
    "CollapseGuard",
    "CollapseGuardConfig",
    "CollapseStats",
    "check_finite",
    "collapse_stats",
    "gradient_norm",
    "prediction_distribution",
    "preservation_kl",
]

_EPS = 1e-12


@dataclass
class CollapseGuardConfig:
    """When to call ATCON fine-tuning collapsed (see :mod:`models.guards`)."""

    enabled: bool = True
    #: number of recent unlabeled batches the statistics are taken over
    window: int = 4
    #: stop when H(mean p) / log C falls below this fraction of the starting value
    min_entropy_ratio: float = 0.5
    #: stop when the fraction of distinct predicted classes falls below this
    #: fraction of the starting value
    min_distinct_ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")
        for name in ("min_entropy_ratio", "min_distinct_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class CollapseStats:
    entropy: float  # H(mean p) / log C, in [0, 1]
    distinct: float  # distinct predicted classes / C, in (0, 1]


def prediction_distribution(logits: Tensor, *, multi_label: bool) -> Tensor:
    """Per-image class distribution (N, C): softmax, or sigmoids scaled to sum to one."""
    if not multi_label:
        return F.softmax(logits.float(), dim=1)
    scores = torch.sigmoid(logits.float())
    return scores / scores.sum(dim=1, keepdim=True).clamp_min(_EPS)


def collapse_stats(logits: Tensor, *, multi_label: bool) -> CollapseStats:
    """:class:`CollapseStats` of a set of logits (N, C)."""
    if logits.dim() != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty (N, C) tensor, got {tuple(logits.shape)}")
    classes = logits.shape[1]
    if classes < 2:
        return CollapseStats(entropy=1.0, distinct=1.0)
    mean = prediction_distribution(logits, multi_label=multi_label).mean(dim=0)
    entropy = float(-(mean * mean.clamp_min(_EPS).log()).sum()) / math.log(classes)
    distinct = logits.argmax(dim=1).unique().numel() / classes
    return CollapseStats(entropy=entropy, distinct=distinct)


class CollapseGuard:
    """Raise :class:`TrainingError` when predictions on unlabeled data collapse.

    Call :meth:`set_reference` with the starting model's logits on unlabeled
    batches, then :meth:`update` with each unlabeled batch's logits during training.
    """

    def __init__(self, config: CollapseGuardConfig, *, multi_label: bool) -> None:
        self.config = config
        self.multi_label = multi_label
        self.reference: CollapseStats | None = None
        self.latest: CollapseStats | None = None
        self._recent: deque[Tensor] = deque(maxlen=config.window)

    def state_dict(self) -> dict[str, Any]:
        """The recent batches and the latest statistics (for a resumable run)."""
        latest = None if self.latest is None else dataclasses.asdict(self.latest)
        return {"recent": list(self._recent), "latest": latest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._recent = deque(state["recent"], maxlen=self.config.window)
        self.latest = None if state["latest"] is None else CollapseStats(**state["latest"])

    def set_reference(self, logits: Sequence[Tensor]) -> CollapseStats:
        self.reference = collapse_stats(torch.cat(list(logits)), multi_label=self.multi_label)
        return self.reference

    def update(self, logits: Tensor, step: int) -> CollapseStats | None:
        """Add a batch; return the window's statistics once it is full (or ``None``)."""
        self._recent.append(logits.detach().float().cpu())
        if len(self._recent) < self.config.window:
            return None
        self.latest = collapse_stats(torch.cat(list(self._recent)), multi_label=self.multi_label)
        if self.config.enabled and self.reference is not None:
            self._check(self.latest, step)
        return self.latest

    def _check(self, stats: CollapseStats, step: int) -> None:
        ref = self.reference
        assert ref is not None
        entropy_low = stats.entropy < self.config.min_entropy_ratio * ref.entropy
        distinct_low = stats.distinct < self.config.min_distinct_ratio * ref.distinct
        if entropy_low or distinct_low:
            raise TrainingError(
                f"ATCON fine-tuning collapsed at step {step}: over the last "
                f"{self.config.window} unlabeled batches the model predicted "
                f"{stats.distinct:.0%} of the classes (the starting model {ref.distinct:.0%}) "
                f"and the entropy of its mean prediction fell to {stats.entropy:.2f} of the "
                f"maximum (the starting model {ref.entropy:.2f}). The starting model is kept. "
                "Lower the ATCON weight or learning rate, or turn on gradient balancing, "
                "the ATCON warm-up or the prediction-preservation term."
            )


def check_finite(losses: dict[str, float], step: int) -> None:
    """Raise :class:`TrainingError` naming the loss that became NaN or infinite."""
    for name, value in losses.items():
        if not math.isfinite(value):
            raise TrainingError(
                f"the {name} loss became {value} at step {step}; training stopped and no "
                "checkpoint was written (earlier checkpoints are intact). Lower the "
                "learning rate or check the input data."
            )


def gradient_norm(grads: Sequence[Tensor | None]) -> Tensor:
    """The L2 norm of a list of gradients (``None`` entries count as zero)."""
    present = [g.detach().float().pow(2).sum() for g in grads if g is not None]
    if not present:
        return torch.zeros(())
    return torch.stack(present).sum().sqrt()


def preservation_kl(logits: Tensor, reference_logits: Tensor, *, multi_label: bool) -> Tensor:
    r"""Mean KL divergence from the starting model's predictions to the current ones.

    Single-label: :math:`KL(p_0 \| p) = \sum_c p_{0c} (\log p_{0c} - \log p_c)` of the
    softmax outputs; multi-label: the sum over classes of the Bernoulli KL of the
    sigmoid outputs. ``reference_logits`` carries no gradient.
    """
    ref = reference_logits.detach()
    if not multi_label:
        return F.kl_div(
            F.log_softmax(logits, dim=1),
            F.log_softmax(ref, dim=1),
            reduction="batchmean",
            log_target=True,
        )
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    log_q, log_not_q = F.logsigmoid(ref), F.logsigmoid(-ref)
    q = torch.sigmoid(ref)
    kl = q * (log_q - log_p) + (1 - q) * (log_not_q - log_not_p)
    return kl.sum(dim=1).mean()
