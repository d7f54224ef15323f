r"""Adapting a trained classifier to where it is deployed, from unlabeled frames and a few labels.

A *method* is a ``+``-joined set of components, applied in this order:

``adabn``
    BatchNorm statistics re-estimated on the unlabeled target frames (AdaBN, Li et
    al. 2016): every BatchNorm layer's running mean and variance are reset and
    replaced by the cumulative averages of the batch statistics over up to
    ``adabn_images`` frames; no weight changes.

then ``steps`` Adam steps minimising the sum of the chosen losses (every step has
each of them, so a few labels are never drowned out by many unlabeled frames):

``supervised``
    the labeled target frames (weak view, :func:`models.augment.weak_view`):
    :math:`\mathcal{L}_{sup}`, binary cross-entropy (softmax cross-entropy for a
    single-label model);
``pseudo``
    confidence-thresholded pseudo-labels with weak and strong views (FixMatch, Sohn
    et al. 2020). On an unlabeled batch, :math:`q = \sigma(f(\mathrm{weak}(x)))`
    without gradient; a class is a confident positive where :math:`q \ge \tau`, a
    confident negative where :math:`q \le 1 - \tau`, and

    .. math:: \mathcal{L}_{pl} = \frac{1}{NC} \sum_{i,c} m_{ic}\,
              \mathrm{BCE}\big(f(\mathrm{strong}(x))_{ic}, [q_{ic} \ge \tfrac12]\big)

    with :math:`m_{ic} = [\max(q_{ic}, 1 - q_{ic}) \ge \tau]` (single-label: the
    arg-max class where its softmax probability reaches :math:`\tau`);
``tent``
    entropy minimisation (Tent, Wang et al., ICLR 2021) of the BatchNorm affine
    parameters alone (every other weight frozen unless another loss trains it),
    BatchNorm normalising with batch statistics and its running statistics
    following them: :math:`\mathcal{L}_{ent} = -\frac{1}{NC}\sum_{i,c} q_{ic}\log
    q_{ic} + (1-q_{ic})\log(1-q_{ic})` (softmax entropy for single-label);
``distill``
    distillation from an AdaBN teacher: :math:`T` is a frozen copy of the starting
    model whose BatchNorm statistics were re-estimated on the unlabeled target
    frames (the student's own statistics stay as they were), and

    .. math:: \mathcal{L}_{dist} = \frac{1}{NC} \sum_{i,c}
              \mathrm{BCE}\big(f(\mathrm{strong}(x))_{ic}, T(\mathrm{weak}(x))_{ic}\big)

    with soft targets (no threshold, so no collapse onto confident negatives);
``anchor``
    the starting model as the teacher of in-domain frames (``anchor=`` frames from
    the cameras the model already serves): the same soft loss with :math:`T` the
    frozen starting model, so what the model did well in-domain it keeps doing,
    also under the strong view's night-like photometry.

or, in place of those steps,

``atcon``
    ATCON fine-tuning as published (:func:`models.finetune.finetune_atcon`, BatchNorm
    frozen, its guards on): with ``supervised``, the ``alternating`` schedule, whose
    steps are either a supervised step on the labeled frames or an ATCON step on
    the unlabeled ones (:func:`models.atcon.atcon_loss`, weight ramped linearly over
    ``atcon_warmup_steps``), each labeled with probability at least a quarter
    (:mod:`models.schedules`); without it, the ``unsupervised`` schedule. An ATCON
    step computes each frame twice (the frame and its masked copy) and a Guided
    Backprop map, so it takes half of ``unlabeled_batch_size`` frames, for about the
    compute of a step of the other methods. ``atcon`` shares its steps with no other
    loss (``pseudo``, ``tent``, ``distill``, ``anchor``): :func:`parse_method` refuses
    those pairs. ``adabn+atcon+supervised`` is the combination
    ``docs/results/adaptation_sources.md`` found to lift a night camera most
    consistently across source models at K = 3 (and above ``adabn+supervised`` on
    each of them);

and, after the steps,

``recalibrate``
    the output layer's biases shifted so each class fires on the target camera as
    often as it does in-domain (a label-free recalibration under the assumption that
    the events are as frequent there, only seen differently). With :math:`\pi_c` the
    share of in-domain (``anchor``) frames the starting model puts above its
    threshold :math:`\theta_c`, and :math:`q_c` the :math:`1 - \pi_c` quantile of the
    adapted model's logits of class :math:`c` on the unlabeled target frames,

    .. math:: b_c \leftarrow b_c + \mathrm{logit}(\theta_c) - q_c .

    A shift of the logits rather than of the thresholds: a night camera can saturate
    a class's sigmoid at 1.0 for most frames while still ranking them well, and no
    probability threshold separates saturated scores. Multi-label models only.

``none`` is no adaptation. Unless ``tent`` is chosen, BatchNorm layers stay in eval
mode during the steps (their statistics are the source's, or AdaBN's). Class
thresholds are not touched here. On a NaN loss, or when ATCON's collapse guard stops
it, the model gets its starting weights and statistics back (AdaBN's included) and
:class:`TrainingError` is raised.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from .atcon import MASK_INTENSITY
from .augment import strong_view, weak_view
from .distributed import DistributedContext
from .finetune import FinetuneConfig, finetune_atcon, named_layer
from .finetune import _FirstItem as _Images
from .methods import COMPONENTS, parse_method
from .resume import Checkpointing
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

__all__ = [
    "COMPONENTS",
    "AdaptConfig",
    "AdaptOutcome",
    "adapt",
    "batchnorm_layers",
    "parse_method",
    "reestimate_batchnorm",
]

logger = logging.getLogger(__name__)

_TRAINING: Final = ("tent", "atcon", "pseudo", "distill", "anchor", "supervised")


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """AdaBN: replace every BatchNorm layer's running statistics by those of ``batches``.

    Statistics are reset and accumulated as cumulative averages (``momentum=None``)
    over the batches; weights do not change, and each module's train/eval flag and
    momentum are restored. Returns the number of images seen (0 and nothing changed
    when the model has no BatchNorm layer or ``batches`` is empty).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    flags = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in layers}
    saved = {bn: (bn.running_mean, bn.running_var) for bn in layers}
    seen = 0
    try:
        model.eval()
        for bn in layers:
            if bn.running_mean is not None:
                bn.running_mean = bn.running_mean.clone()
                bn.running_var = bn.running_var.clone()  # type: ignore[union-attr]
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for batch in batches:
            model(batch)
            seen += int(batch.shape[0])
    finally:
        for bn in layers:
            bn.momentum = momenta[bn]
            if seen == 0:
                bn.running_mean, bn.running_var = saved[bn]
        for module, flag in flags.items():
            module.train(flag)
    return seen


@dataclass
class AdaptConfig:
    """Hyperparameters of adaptation (saved in the adapted checkpoint's card)."""

    method: str = "adabn+pseudo+supervised"
    steps: int = 150
    lr: float = 5e-4
    batch_size: int = 16
    unlabeled_batch_size: int = 32
    #: at most this many unlabeled frames re-estimate the BatchNorm statistics
    adabn_images: int = 2048
    #: a pseudo-label counts where the teacher is at least this sure (tau)
    pseudo_threshold: float = 0.9
    pseudo_weight: float = 1.0
    tent_weight: float = 1.0
    distill_weight: float = 1.0
    anchor_weight: float = 1.0
    #: ``atcon``: FinetuneConfig's weight and warm-up of the ATCON loss
    atcon_weight: float = 1.0
    atcon_warmup_steps: int = 40
    mask_intensity: float = MASK_INTENSITY
    #: dotted module name of the Grad-CAM layer for ATCON; None: automatic
    layer: str | None = None
    multi_label: bool = True
    seed: int = 0
    components: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        self.components = parse_method(self.method)
        self.method = "+".join(self.components) or "none"
        if self.steps < 0:
            raise ValueError(f"steps must be non-negative, got {self.steps}")
        if self.steps == 0 and any(c in _TRAINING for c in self.components):
            raise ValueError(f"method {self.method} trains and needs steps >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.batch_size < 1 or self.unlabeled_batch_size < 1:
            raise ValueError("batch_size and unlabeled_batch_size must be at least 1")
        if self.adabn_images < 1:
            raise ValueError(f"adabn_images must be at least 1, got {self.adabn_images}")
        if not 0.5 < self.pseudo_threshold < 1:
            raise ValueError(f"pseudo_threshold must lie in (0.5, 1), got {self.pseudo_threshold}")
        for name in (
            "pseudo_weight",
            "tent_weight",
            "atcon_weight",
            "distill_weight",
            "anchor_weight",
            "mask_intensity",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.atcon_warmup_steps < 0:
            raise ValueError("atcon_warmup_steps must be non-negative")

    @property
    def needs_labels(self) -> bool:
        return "supervised" in self.components

    @property
    def needs_anchor(self) -> bool:
        return "anchor" in self.components or "recalibrate" in self.components

    @property
    def trains(self) -> bool:
        return any(c in _TRAINING for c in self.components)


@dataclass
class AdaptOutcome:
    method: str
    steps: int
    #: frames that re-estimated the BatchNorm statistics (0: not re-estimated)
    adabn_images: int
    #: mean share of (frame, class) entries confident enough to be pseudo-labels
    pseudo_share: float | None
    history: list[dict[str, Any]]
    #: ``recalibrate``: per class, the in-domain positive share and the bias shift
    recalibration: dict[str, list[float]] | None = None
    #: ``atcon``: the steps that trained on labeled frames
    labeled_steps: int | None = None

    @property
    def batchnorm_changed(self) -> bool:
        """Whether the BatchNorm statistics differ from the starting model's."""
        return self.adabn_images > 0 or "tent" in self.method.split("+")


def _probabilities(logits: Tensor, multi_label: bool) -> Tensor:
    return torch.sigmoid(logits) if multi_label else F.softmax(logits, dim=1)


def _entropy(logits: Tensor, multi_label: bool) -> Tensor:
    if multi_label:
        p = torch.sigmoid(logits)
        # -p log p - (1-p) log(1-p), written with logsigmoid for stability
        return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).mean()
    return -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1).mean()


def _pseudo_loss(
    student: Tensor, teacher: Tensor, threshold: float, multi_label: bool
) -> tuple[Tensor, float]:
    """FixMatch's masked loss (see the module docstring) and the confident share."""
    if multi_label:
        confident = torch.maximum(teacher, 1 - teacher) >= threshold
        targets = (teacher >= 0.5).float()
        loss = F.binary_cross_entropy_with_logits(student, targets, reduction="none")
        return (loss * confident).sum() / confident.numel(), float(confident.float().mean())
    best, classes = teacher.max(dim=1)
    confident = best >= threshold
    loss = F.cross_entropy(student, classes, reduction="none")
    return (loss * confident).sum() / confident.numel(), float(confident.float().mean())


def _bn_batches(
    unlabeled: Dataset[Tensor], config: AdaptConfig, device: torch.device
) -> Iterable[Tensor]:
    size = len(unlabeled)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(config.seed + 11)
    order = torch.randperm(size, generator=generator)[: config.adabn_images].tolist()
    for start in range(0, len(order), config.unlabeled_batch_size):
        chunk = order[start : start + config.unlabeled_batch_size]
        yield torch.stack([unlabeled[i] for i in chunk]).to(device)


def adapt(
    model: nn.Module,
    unlabeled: Dataset[Any],
    config: AdaptConfig,
    *,
    labeled: Dataset[tuple[Tensor, Tensor]] | None = None,
    anchor: Dataset[Any] | None = None,
    thresholds: Sequence[float] | None = None,
    callbacks: Sequence[Callback] = (),
    device: torch.device | str = "cpu",
    checkpointing: Checkpointing | None = None,
) -> AdaptOutcome:
    """Adapt ``model`` in place with ``config.method``; see the module docstring.

    ``unlabeled`` yields normalised images (or ``(image, ...)`` tuples); ``labeled``
    yields ``(image, target)`` and is required by the ``supervised`` component;
    ``anchor`` yields in-domain images and is required by the ``anchor`` and
    ``recalibrate`` components; ``thresholds`` are the model's decision thresholds
    (required by ``recalibrate``). ``checkpointing`` saves the training steps' state
    periodically and resumes it (:mod:`models.resume`).
    """
    device = torch.device(device)
    components = config.components
    images = _Images(unlabeled)
    dataset_size(images, "the unlabeled set")
    if config.needs_labels:
        if labeled is None:
            raise ValueError(f"method {config.method} needs labeled frames (labeled=...)")
        dataset_size(labeled, "the labeled set")
    anchors = None
    if config.needs_anchor:
        if anchor is None:
            raise ValueError(f"method {config.method} needs in-domain frames (anchor=...)")
        anchors = _Images(anchor)
        dataset_size(anchors, "the in-domain (anchor) set")
    if "recalibrate" in components:
        if thresholds is None:
            raise ValueError("recalibrate needs the model's decision thresholds (thresholds=...)")
        if not config.multi_label:
            raise ValueError("recalibrate shifts sigmoid outputs: multi-label models only")
        _output_layer(model)  # fails early when there is none
    model.to(device)
    start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    named_layer(model, config.layer)  # an unknown layer name fails before any step
    torch.manual_seed(config.seed)
    try:
        seen = 0
        if "adabn" in components:
            seen = reestimate_batchnorm(model, _bn_batches(images, config, device))
            logger.info("BatchNorm statistics re-estimated on %d frames", seen)
        history: list[dict[str, Any]] = []
        shares: list[float] = []
        priors = None
        if "recalibrate" in components:
            assert anchors is not None and thresholds is not None
            priors = _positive_shares(model, anchors, thresholds, config, device)
        labeled_steps = None
        if "atcon" in components:
            outcome = finetune_atcon(
                model,
                images,
                _atcon_config(config),
                labeled=labeled if config.needs_labels else None,
                callbacks=callbacks,
                context=DistributedContext(device=device),
                checkpointing=checkpointing,
            )
            history, labeled_steps = outcome.history, outcome.labeled_steps
        elif config.trains:
            teachers = _teachers(model, images, config, device)
            history = _train(
                model,
                images,
                labeled,
                anchors,
                teachers,
                config,
                callbacks,
                shares,
                checkpointing,
            )
        recalibration = None
        if priors is not None:
            assert thresholds is not None
            recalibration = _recalibrate(model, images, priors, thresholds, config, device)
    except BaseException:
        model.load_state_dict(start_state)
        model.eval()
        raise
    model.eval()
    return AdaptOutcome(
        method=config.method,
        steps=config.steps if config.trains else 0,
        adabn_images=seen,
        pseudo_share=sum(shares) / len(shares) if shares else None,
        history=history,
        recalibration=recalibration,
        labeled_steps=labeled_steps,
    )


def _atcon_config(config: AdaptConfig) -> FinetuneConfig:
    """The published ATCON schedule for ``config`` (see the module docstring)."""
    return FinetuneConfig(
        schedule="alternating" if config.needs_labels else "unsupervised",
        steps=config.steps,
        lr=config.lr,
        batch_size=config.batch_size,
        unlabeled_batch_size=max(1, config.unlabeled_batch_size // 2),
        atcon_weight=config.atcon_weight,
        atcon_warmup_steps=config.atcon_warmup_steps,
        mask_intensity=config.mask_intensity,
        layer=config.layer,
        multi_label=config.multi_label,
        seed=config.seed,
    )


def _output_layer(model: nn.Module) -> nn.Linear:
    """The last linear layer (the classifier head) of ``model``."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None or last.bias is None:
        raise ValueError("recalibrate needs a final linear layer with a bias")
    return last


@torch.no_grad()
def _logits(
    model: nn.Module, images: Dataset[Tensor], config: AdaptConfig, device: torch.device
) -> Tensor:
    model.eval()
    size = len(images)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(config.seed + 13)
    order = torch.randperm(size, generator=generator)[: config.adabn_images].tolist()
    out = []
    for start in range(0, len(order), 128):
        batch = torch.stack([images[i] for i in order[start : start + 128]]).to(device)
        out.append(model(batch).float().cpu())
    return torch.cat(out)


def _positive_shares(
    model: nn.Module,
    anchors: Dataset[Tensor],
    thresholds: Sequence[float],
    config: AdaptConfig,
    device: torch.device,
) -> Tensor:
    """pi_c: the share of in-domain frames the starting model puts at or above theta_c."""
    probs = torch.sigmoid(_logits(model, anchors, config, device))
    theta = torch.tensor([float(t) for t in thresholds])
    if theta.shape[0] != probs.shape[1]:
        raise ValueError(f"thresholds has {theta.shape[0]} values for {probs.shape[1]} classes")
    return (probs >= theta).float().mean(0)


@torch.no_grad()
def _recalibrate(
    model: nn.Module,
    images: Dataset[Tensor],
    priors: Tensor,
    thresholds: Sequence[float],
    config: AdaptConfig,
    device: torch.device,
) -> dict[str, list[float]]:
    """Shift the head's biases (module docstring); classes never or always on are left."""
    logits = _logits(model, images, config, device)
    head = _output_layer(model)
    shifts = []
    for c, share in enumerate(priors.tolist()):
        theta = min(max(float(thresholds[c]), 1e-6), 1 - 1e-6)
        if not 0.0 < share < 1.0:  # no frame (or every frame) in-domain: nothing to match
            shifts.append(0.0)
            continue
        quantile = float(torch.quantile(logits[:, c], 1.0 - share))
        shift = math.log(theta / (1 - theta)) - quantile
        head.bias[c] += shift
        shifts.append(shift)
    logger.info("recalibrated the output biases by %s", [round(s, 3) for s in shifts])
    return {"positive_share": [float(p) for p in priors], "bias_shift": shifts}


def _teachers(
    model: nn.Module, images: Dataset[Tensor], config: AdaptConfig, device: torch.device
) -> dict[str, nn.Module]:
    """Frozen copies of the starting model: ``anchor`` as it is, ``distill`` after AdaBN."""
    teachers: dict[str, nn.Module] = {}
    if "anchor" in config.components:
        teachers["anchor"] = copy.deepcopy(model).eval().requires_grad_(False)
    if "distill" in config.components:
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        seen = reestimate_batchnorm(teacher, _bn_batches(images, config, device))
        logger.info("distillation teacher: BatchNorm statistics of %d target frames", seen)
        teachers["distill"] = teacher
    return teachers


def _soft_loss(student: Tensor, teacher: Tensor, multi_label: bool) -> Tensor:
    """Cross-entropy of the student's logits against the teacher's probabilities."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(student, teacher)
    return -(teacher * F.log_softmax(student, dim=1)).sum(1).mean()


def _train(
    model: nn.Module,
    images: Dataset[Tensor],
    labeled: Dataset[tuple[Tensor, Tensor]] | None,
    anchors: Dataset[Tensor] | None,
    teachers: dict[str, nn.Module],
    config: AdaptConfig,
    callbacks: Sequence[Callback],
    shares: list[float],
    checkpointing: Checkpointing | None = None,
) -> list[dict[str, Any]]:
    components = set(config.components)
    tent_only = components <= {"tent", "adabn"}
    trainable = {p: p.requires_grad for p in model.parameters()}
    model.train()
    if "tent" in components:
        for bn in batchnorm_layers(model):
            bn.train()  # batch statistics; running statistics follow them
    else:
        freeze_batchnorm(model)
    if tent_only:
        for p in model.parameters():
            p.requires_grad_(False)
        params = [p for bn in batchnorm_layers(model) for p in bn.parameters()]
        for p in params:
            p.requires_grad_(True)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"method {config.method} has no parameter to train in this model")
    optimizer = torch.optim.Adam(params, lr=config.lr)
    context = DistributedContext()
    unlabeled_batches = ShardedBatches(
        images, config.unlabeled_batch_size, seed=config.seed, context=context
    )
    labeled_batches = (
        ShardedBatches(labeled, config.batch_size, seed=config.seed + 1, context=context)
        if labeled is not None and "supervised" in components
        else None
    )
    anchor_batches = (
        ShardedBatches(anchors, config.unlabeled_batch_size, seed=config.seed + 2, context=context)
        if anchors is not None and "anchor" in components
        else None
    )
    views = torch.Generator().manual_seed(config.seed + 5)
    multi = config.multi_label

    def step_fn(step: int) -> StepResult:
        total: Tensor | None = None
        losses: dict[str, float] = {}
        extras: dict[str, float] = {}

        def add(name: str, value: Tensor) -> None:
            nonlocal total
            losses[name] = float(value.detach())
            total = value if total is None else total + value

        if labeled_batches is not None:
            (x, y), _size = next(labeled_batches)
            logits = model(weak_view(x, views))
            add("supervised", supervised_loss(logits, y.float(), multi_label=multi).mean())
        if anchor_batches is not None:
            xa, _size = next(anchor_batches)
            with torch.no_grad():
                target = _probabilities(teachers["anchor"](weak_view(xa, views)), multi)
            student = model(strong_view(xa, views))
            add("anchor", config.anchor_weight * _soft_loss(student, target, multi))
        if components & {"pseudo", "tent", "distill"}:
            xu, _size = next(unlabeled_batches)
            if "distill" in components:
                with torch.no_grad():
                    target = _probabilities(teachers["distill"](weak_view(xu, views)), multi)
                student = model(strong_view(xu, views))
                add("distill", config.distill_weight * _soft_loss(student, target, multi))
            if "pseudo" in components:
                with torch.no_grad():
                    teacher = _probabilities(model(weak_view(xu, views)), multi)
                loss, share = _pseudo_loss(
                    model(strong_view(xu, views)), teacher, config.pseudo_threshold, multi
                )
                shares.append(share)
                extras["pseudo_share"] = share
                add("pseudo", config.pseudo_weight * loss)
            if "tent" in components:
                add("entropy", config.tent_weight * _entropy(model(xu), multi))
        assert total is not None
        total.backward()
        return StepResult(step, config.method, losses, extras=extras)

    resumable: dict[str, Any] = {
        "unlabeled_batches": unlabeled_batches,
        "views": views,
        "shares": shares,
    }
    if labeled_batches is not None:
        resumable["labeled_batches"] = labeled_batches
    if anchor_batches is not None:
        resumable["anchor_batches"] = anchor_batches
    trainer = Trainer(
        model,
        optimizer,
        callbacks=callbacks,
        context=context,
        description=config.method,
        checkpointing=checkpointing,
        state=resumable,
        fingerprint={
            "config": config_to_dict(config),
            "items": {
                "unlabeled": unlabeled_batches.size,
                "labeled": 0 if labeled_batches is None else labeled_batches.size,
                "anchor": 0 if anchor_batches is None else anchor_batches.size,
            },
        },
    )
    try:
        return trainer.fit(step_fn, config.steps)
    finally:
        for p, flag in trainable.items():
            p.requires_grad_(flag)
