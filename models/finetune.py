r"""ATCON fine-tuning: the attention-consistency loss on unlabeled images.

Schedules (:mod:`models.schedules`): ``alternating`` takes a labeled batch with
probability :math:`\max(f_{min}, \alpha|L| / (\alpha|L| + |U|))` (``min_labeled_fraction``
is :math:`f_{min}`) and otherwise an unlabeled batch with the ATCON loss; ``combined`` minimises
:math:`\mathcal{L}_{sup} + \alpha\,\mathcal{L}_{U}` every step; ``unsupervised``
minimises :math:`\mathcal{L}_{U}` alone, where on an unlabeled batch

.. math::  \mathcal{L}_{U} = w_t\, \mathcal{L}_{ATCON} + \lambda\, KL(p_0 \| p)

with :math:`w_t` the ATCON weight after its linear warm-up and :math:`\lambda` the
prediction-preservation weight (KL divergence from the starting model's
predictions, :func:`models.guards.preservation_kl`). With gradient balancing the
gradient of :math:`w_t\mathcal{L}_{ATCON}` is scaled down, when needed, so its norm
is at most ``balance_ratio`` times the supervised gradient's (the same step's in
``combined``, a running mean of the labeled steps' in ``alternating``).

BatchNorm stays in eval mode throughout, as in the published code, so each image's
maps depend on that image alone. Before the first step, whatever the schedule, the
Grad-CAM map at the chosen layer is checked to be large enough for the loss at the
unlabeled images' size (:func:`models.atcon.check_map_size` raises
:class:`MapTooSmallError`); images whose maps or saliency are constant are left out
of each batch's ATCON loss and counted in ``extras["atcon_dropped"]``. Adam. The collapse guard
(:class:`models.guards.CollapseGuard`) stops a run whose predictions on unlabeled
data collapse; the model is then put back to its starting weights and
:class:`TrainingError` is raised. The same happens on a NaN loss.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ._exceptions import TrainingError
from .atcon import (
    GB_NORMALIZATIONS,
    MASK_INTENSITY,
    METHODS,
    SIMILARITIES,
    atcon_loss_parts,
    check_map_size,
)
from .distributed import DistributedContext
from .guards import CollapseGuard, CollapseGuardConfig, gradient_norm, preservation_kl
from .resume import Checkpointing
from .schedules import Schedule, labeled_probability, warmup_factor
from .training import (
    Callback,
    ShardedBatches,
    StepResult,
    Trainer,
    config_to_dict,
    dataset_size,
    freeze_batchnorm,
    supervised_loss,
)

__all__ = ["FinetuneConfig", "FinetuneOutcome", "finetune_atcon", "named_layer"]

logger = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """Hyperparameters of ATCON fine-tuning (saved as ``CheckpointInfo.config``).

    The guard defaults (balancing, warm-up, preservation, collapse stop) come from
    ``bench/digits.py`` (docs/results/digits.md): no setting lifted F1 there, and
    without them ATCON collapsed or lost most; with them it cost no more than the
    alternating schedule's fewer supervised steps at K = 3.
    """

    schedule: str = "alternating"
    steps: int = 200
    lr: float = 1e-4
    batch_size: int = 16
    unlabeled_batch_size: int = 16
    #: alternating: weight of |L| in the labeled-step probability; combined: weight
    #: of the unlabeled loss
    alpha: float = 1.0
    #: alternating: floor f_min of the labeled-step probability when there are labels,
    #: so a few labels are not drowned by a large pool (models.schedules)
    min_labeled_fraction: float = 0.25
    #: multiplier of the ATCON loss (w in the module docstring)
    atcon_weight: float = 1.0
    #: steps over which the ATCON weight ramps linearly from 0 to ``atcon_weight``
    atcon_warmup_steps: int = 40
    #: cap the ATCON gradient norm at ``balance_ratio`` x the supervised one; ``None``:
    #: whenever a labeled set is given (True without one is an error)
    balance_gradients: bool | None = None
    balance_ratio: float = 1.0
    #: weight of KL(starting model || current model) on unlabeled batches
    preserve_weight: float = 1.0
    mask_intensity: float = MASK_INTENSITY
    gb_normalization: str = "none"
    similarity: str = "pearson"
    method: str = "guided_backprop"
    #: dotted module name of the Grad-CAM layer ("layer4", "layer3"); None: automatic
    layer: str | None = None
    multi_label: bool = True
    seed: int = 0
    guard: CollapseGuardConfig = field(default_factory=CollapseGuardConfig)

    def __post_init__(self) -> None:
        if isinstance(self.guard, dict):
            self.guard = CollapseGuardConfig(**self.guard)
        allowed = tuple(s.value for s in Schedule)
        if self.schedule not in allowed:
            raise ValueError(f"schedule must be one of {', '.join(allowed)}; got {self.schedule!r}")
        for name, options in (
            ("gb_normalization", GB_NORMALIZATIONS),
            ("similarity", SIMILARITIES),
            ("method", METHODS),
        ):
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {', '.join(options)}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1 or self.unlabeled_batch_size < 1:
            raise ValueError("batch_size and unlabeled_batch_size must be at least 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("alpha", "atcon_weight", "preserve_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.mask_intensity <= 0:
            raise ValueError(f"mask_intensity must be positive, got {self.mask_intensity}")
        if not 0.0 <= self.min_labeled_fraction <= 1.0:
            raise ValueError(
                f"min_labeled_fraction must lie in [0, 1], got {self.min_labeled_fraction}"
            )
        if self.balance_ratio <= 0:
            raise ValueError(f"balance_ratio must be positive, got {self.balance_ratio}")
        if self.atcon_warmup_steps < 0:
            raise ValueError("atcon_warmup_steps must be non-negative")


@dataclass
class FinetuneOutcome:
    steps: int
    labeled_steps: int
    unlabeled_steps: int
    labeled_probability: float
    history: list[dict[str, Any]]
    #: collapse statistics of the starting model and of the last window
    reference_stats: dict[str, float] | None = None
    final_stats: dict[str, float] | None = None


def named_layer(model: nn.Module, name: str | None) -> nn.Module | None:
    """The submodule called ``name`` (e.g. ``"layer3"``), or ``None`` for automatic choice."""
    if name is None:
        return None
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        raise ValueError(f"layer {name!r} is not a module of {type(model).__name__}")
    return modules[name]


class _CollapseCallback:
    def __init__(self, guard: CollapseGuard) -> None:
        self.guard = guard

    def on_train_start(self, trainer: Trainer, total_steps: int) -> None:
        pass

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if result.unlabeled_logits is None:
            return
        error: TrainingError | None = None
        try:
            stats = self.guard.update(result.unlabeled_logits, result.step)
        except TrainingError as exc:
            error, stats = exc, self.guard.latest
        if stats is not None:
            result.extras.update(entropy=stats.entropy, distinct=stats.distinct)
        # every process stops together, whichever saw the collapse
        if trainer.context.any_flag(error is not None):
            raise error or TrainingError(
                f"ATCON fine-tuning collapsed at step {result.step} on another process; "
                "the starting model is kept"
            )

    def on_train_end(self, trainer: Trainer) -> None:
        pass


def _grads(loss: Tensor, params: list[nn.Parameter]) -> list[Tensor | None]:
    return list(torch.autograd.grad(loss, params, allow_unused=True))


def _add_into(total: list[Tensor | None], part: Sequence[Tensor | None], scale: float) -> None:
    for i, g in enumerate(part):
        if g is None:
            continue
        total[i] = g * scale if total[i] is None else total[i] + g * scale  # type: ignore[operator]


def finetune_atcon(
    model: nn.Module,
    unlabeled: Dataset[Any],
    config: FinetuneConfig,
    *,
    labeled: Dataset[tuple[Tensor, Tensor]] | None = None,
    callbacks: Sequence[Callback] = (),
    context: DistributedContext | None = None,
    checkpointing: Checkpointing | None = None,
) -> FinetuneOutcome:
    """Fine-tune ``model`` in place with ATCON; see the module docstring.

    ``unlabeled`` yields normalised images (or ``(image, ...)`` tuples, whose first
    item is used); ``labeled`` yields ``(image, multi-hot target)`` and is required by
    the ``alternating`` and ``combined`` schedules and by gradient balancing. On
    collapse or a NaN loss the model gets its starting weights back and
    :class:`TrainingError` is raised. ``checkpointing`` saves the run's state
    periodically and resumes it (:mod:`models.resume`).
    """
    context = context or DistributedContext()
    schedule = Schedule(config.schedule)
    num_unlabeled = dataset_size(unlabeled, "the unlabeled set")
    num_labeled = dataset_size(labeled, "the labeled set") if labeled is not None else 0
    if schedule is not Schedule.UNSUPERVISED and labeled is None:
        raise ValueError(f"the {schedule.value} schedule needs a labeled set (labeled=...)")
    if config.balance_gradients and labeled is None:
        raise ValueError("balance_gradients needs a labeled set to measure the supervised gradient")
    balance = labeled is not None if config.balance_gradients is None else config.balance_gradients

    torch.manual_seed(config.seed)
    model.to(context.device)
    start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    layer = named_layer(model, config.layer)
    if config.atcon_weight > 0:  # before any step: a map too small for ATCON is refused
        first_image = _FirstItem(unlabeled)[0]
        check_map_size(
            model,
            (int(first_image.shape[-2]), int(first_image.shape[-1])),
            layer,
            channels=int(first_image.shape[-3]),
        )
    params = [p for p in model.parameters() if p.requires_grad]
    reference: nn.Module | None = None
    if config.preserve_weight > 0:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    guard = CollapseGuard(config.guard, multi_label=config.multi_label)
    model.eval()  # the starting model's own predictions (no dropout) are the reference
    reference_stats = guard.set_reference(_reference_logits(model, unlabeled, config, context))

    model.train()
    freeze_batchnorm(model)
    optimizer = torch.optim.Adam(params, lr=config.lr)
    unlabeled_batches = ShardedBatches(
        _FirstItem(unlabeled), config.unlabeled_batch_size, seed=config.seed, context=context
    )
    labeled_batches = (
        ShardedBatches(labeled, config.batch_size, seed=config.seed + 1, context=context)
        if labeled is not None
        else None
    )
    p_labeled = (
        labeled_probability(
            config.alpha, num_labeled, num_unlabeled, min_fraction=config.min_labeled_fraction
        )
        if schedule is Schedule.ALTERNATING
        else 0.0
    )
    choice = torch.Generator().manual_seed(config.seed + 2)
    counts = {"labeled": 0, "unlabeled": 0}
    state: dict[str, float] = {}

    def supervised_part(step: int) -> tuple[list[Tensor | None], float]:
        assert labeled_batches is not None
        batch, global_size = next(labeled_batches)
        if batch is None:
            return [None] * len(params), 0.0
        images, targets = batch
        loss = supervised_loss(model(images), targets, multi_label=config.multi_label).sum()
        loss = loss / global_size
        grads = _grads(loss, params)
        norm = float(gradient_norm(grads))
        state["sup_norm_now"] = norm
        previous = state.get("sup_norm", norm)
        state["sup_norm"] = 0.9 * previous + 0.1 * norm
        return grads, float(loss.detach())

    def unlabeled_part(step: int, result: StepResult) -> list[Tensor | None]:
        batch, global_size = next(unlabeled_batches)
        total: list[Tensor | None] = [None] * len(params)
        result.losses.update(atcon=0.0, kl=0.0)
        if batch is None:
            return total
        share = batch.shape[0] / global_size
        weight = config.atcon_weight * warmup_factor(step, config.atcon_warmup_steps)
        atcon_grads = total
        if weight > 0:  # a zero weight (a control run) skips the costly loss
            parts = atcon_loss_parts(
                model,
                batch,
                layer=layer,
                mask_intensity=config.mask_intensity,
                gb_normalization=config.gb_normalization,
                similarity=config.similarity,
                method=config.method,
            )
            loss = parts.loss
            result.losses["atcon"] = float(loss.detach()) * share
            result.extras["atcon_dropped"] = int(parts.dropped.sum())
            atcon_grads = _grads(loss * share * weight, params)
        scale = 1.0
        norm = float(gradient_norm(atcon_grads))
        if balance:
            if "sup_norm" not in state:
                supervised_part(step)  # measure only; the step is not taken
            key = "sup_norm_now" if schedule is Schedule.COMBINED else "sup_norm"
            cap = config.balance_ratio * state[key]
            scale = min(1.0, cap / norm) if norm > 0 else 1.0
            result.extras["sup_grad_norm"] = state[key]
        _add_into(total, atcon_grads, scale)
        result.extras.update(atcon_grad_norm=norm, atcon_scale=scale, atcon_weight=weight)
        if reference is not None:
            logits = model(batch)
            kl = preservation_kl(logits, reference(batch), multi_label=config.multi_label)
            _add_into(total, _grads(kl * share * config.preserve_weight, params), 1.0)
            result.losses["kl"] = float(kl.detach()) * share
        else:
            with torch.no_grad():
                logits = model(batch)
        result.unlabeled_logits = logits.detach()
        return total

    def step_fn(step: int) -> StepResult:
        if schedule is Schedule.ALTERNATING:
            labeled_step = bool(torch.rand((), generator=choice) < p_labeled)
        else:
            labeled_step = False
        if labeled_step:
            counts["labeled"] += 1
            grads, loss = supervised_part(step)
            result = StepResult(step, "supervised", {"supervised": loss})
        elif schedule is Schedule.COMBINED:
            counts["labeled"] += 1
            counts["unlabeled"] += 1
            sup_grads, loss = supervised_part(step)
            result = StepResult(step, "combined", {"supervised": loss})
            grads = unlabeled_part(step, result)
            grads = [g * config.alpha if g is not None else None for g in grads]
            _add_into(grads, sup_grads, 1.0)
        else:
            counts["unlabeled"] += 1
            result = StepResult(step, "atcon", {})
            grads = unlabeled_part(step, result)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        return result

    resumable: dict[str, Any] = {
        "unlabeled_batches": unlabeled_batches,
        "choice": choice,
        "counts": counts,
        "norms": state,
        "guard": guard,
    }
    if labeled_batches is not None:
        resumable["labeled_batches"] = labeled_batches
    trainer = Trainer(
        model,
        optimizer,
        callbacks=[_CollapseCallback(guard), *callbacks],
        context=context,
        description=f"atcon-{schedule.value}",
        checkpointing=checkpointing,
        state=resumable,
        fingerprint={
            "config": config_to_dict(config),
            "items": {"unlabeled": num_unlabeled, "labeled": num_labeled},
        },
    )
    try:
        history = trainer.fit(step_fn, config.steps)
    except BaseException:
        model.load_state_dict(start_state)
        model.eval()
        raise
    model.eval()
    final = guard.latest
    return FinetuneOutcome(
        steps=config.steps,
        labeled_steps=counts["labeled"],
        unlabeled_steps=counts["unlabeled"],
        labeled_probability=p_labeled,
        history=history,
        reference_stats=dataclasses.asdict(reference_stats),
        final_stats=None if final is None else dataclasses.asdict(final),
    )


class _FirstItem(Dataset[Tensor]):
    """An unlabeled view of a dataset: the image of each item."""

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Tensor:
        item = self.dataset[index]
        return item[0] if isinstance(item, (list, tuple)) else item


@torch.no_grad()
def _reference_logits(
    model: nn.Module, unlabeled: Dataset[Any], config: FinetuneConfig, context: DistributedContext
) -> list[Tensor]:
    """The starting model's logits on ``guard.window`` unlabeled batches (own seed)."""
    batches = ShardedBatches(
        _FirstItem(unlabeled),
        config.unlabeled_batch_size,
        seed=config.seed + 3,
        context=context,
    )
    logits = []
    for _ in range(config.guard.window):
        batch, _size = next(batches)
        if batch is not None:
            logits.append(model(batch).float())
    if not logits:
        logits.append(model(_FirstItem(unlabeled)[0].unsqueeze(0).to(context.device)).float())
    return logits
