r"""Supervised training, and the model-agnostic trainer both training kinds share.

Read top to bottom: the configuration dataclass (stored in every checkpoint), the
losses, the :class:`Trainer` with its callbacks, then :func:`train_supervised`.
ATCON fine-tuning builds on the same trainer in :mod:`models.finetune`.

Losses, per image :math:`i` with logits :math:`z_i` and multi-hot target :math:`y_i`:

- multi-label (sigmoid + binary cross-entropy, the paper's video and PASCAL tasks):
  :math:`\ell_i = -\frac{1}{C}\sum_c y_{ic}\log\sigma(z_{ic}) + (1-y_{ic})\log(1-\sigma(z_{ic}))`;
- single-label (softmax + cross-entropy): :math:`\ell_i = -\log \mathrm{softmax}(z_i)_{y_i}`.

A step minimises the mean of :math:`\ell_i` over the global batch (see
:mod:`models.distributed` for how processes share it). Datasets yield
``(image, target)`` pairs: a normalised (C, H, W) image and a multi-hot (classes,)
float target; unlabeled datasets yield the image alone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from ._exceptions import ResumeError, TrainingError
from .distributed import DistributedContext
from .guards import check_finite
from .resume import Checkpointing, load_training_state, save_training_state
from .schedules import global_batches, local_slice

__all__ = [
    "Callback",
    "ProgressBar",
    "StepResult",
    "SupervisedConfig",
    "SupervisedOutcome",
    "Trainer",
    "config_to_dict",
    "freeze_batchnorm",
    "predict_scores",
    "supervised_loss",
    "train_supervised",
]

logger = logging.getLogger(__name__)


@dataclass
class SupervisedConfig:
    """Hyperparameters of supervised training (saved as ``CheckpointInfo.config``)."""

    epochs: int = 10
    #: stop after this many steps instead of ``epochs`` passes when set
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    multi_label: bool = True
    #: keep BatchNorm in eval mode (small batches, or pretrained statistics)
    freeze_batchnorm: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def num_steps(self, num_items: int) -> int:
        return self.max_steps or self.epochs * math.ceil(num_items / self.batch_size)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass configuration as plain JSON-able data (nested dataclasses too)."""
    return dataclasses.asdict(config)


# --------------------------------------------------------------------------- losses


def supervised_loss(logits: Tensor, targets: Tensor, *, multi_label: bool) -> Tensor:
    """Per-image losses (N,): mean binary cross-entropy, or softmax cross-entropy.

    ``targets`` is multi-hot (N, C); single-label targets must hold exactly one 1 per row.
    """
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape"
        )
    if multi_label:
        return F.binary_cross_entropy_with_logits(
            logits, targets.to(logits.dtype), reduction="none"
        ).mean(dim=1)
    if bool((targets.sum(dim=1) != 1).any()):
        raise TrainingError(
            "single-label training needs exactly one class per image; some images have "
            "none or several (train a multi-label model instead)"
        )
    return F.cross_entropy(logits, targets.argmax(dim=1), reduction="none")


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode: running statistics fixed, none updated."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


# --------------------------------------------------------------------------- trainer


@dataclass
class StepResult:
    """What one optimisation step did; ``losses`` are global means over the batch."""

    step: int
    kind: str
    losses: dict[str, float]
    #: per-process figures that are not averaged (gradient norms, scales)
    extras: dict[str, float] = field(default_factory=dict)
    #: logits of this process's unlabeled images, for the collapse guard
    unlabeled_logits: Tensor | None = None


class Callback(Protocol):
    def on_train_start(self, trainer: Trainer, total_steps: int) -> None: ...

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


class ProgressBar:
    """A tqdm bar over the steps, shown only on a terminal and only by rank 0."""

    def __init__(self, description: str = "train") -> None:
        self.description = description
        self._bar: Any = None

    def on_train_start(self, trainer: Trainer, total_steps: int) -> None:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() and trainer.context.is_main
        self._bar = tqdm(
            total=total_steps,
            initial=trainer.start_step,
            desc=trainer.description or self.description,
            disable=not show,
        )

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in result.losses.items()}, refresh=False)
            self._bar.update(1)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


StepFunction = Callable[[int], StepResult]


class Trainer:
    """Runs step functions: zero grads, step_fn fills them, reduce, check, update, callbacks.

    The trainer knows nothing of the model or the loss: a step function computes
    the gradients of its loss (each process its share, see
    :mod:`models.distributed`) and reports its losses; the trainer sums the
    gradients over processes, stops on a NaN or infinite loss with
    :class:`TrainingError`, takes the optimiser step and calls the callbacks.

    With ``checkpointing`` (:mod:`models.resume`) it saves the training state every
    ``checkpointing.every_steps`` steps and after the last, and with
    ``checkpointing.resume`` it starts from the saved state of this phase
    (``description``) when there is one. ``state`` names what else the step function
    keeps between steps (batch iterators, generators, running values), and
    ``fingerprint`` what must match for a saved state to be resumed.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        callbacks: Sequence[Callback] = (),
        context: DistributedContext | None = None,
        description: str = "",
        checkpointing: Checkpointing | None = None,
        state: Mapping[str, Any] | None = None,
        fingerprint: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.callbacks = list(callbacks)
        self.context = context or DistributedContext()
        self.description = description
        self.checkpointing = checkpointing
        self.state = dict(state or {})
        self.fingerprint = dict(fingerprint or {})
        self.history: list[dict[str, Any]] = []
        #: the first step this run takes (above 0 when it resumed)
        self.start_step = 0

    def _fingerprint(self, steps: int) -> dict[str, Any]:
        run = self.checkpointing.run if self.checkpointing is not None else {}
        return {
            "run": run,
            "phase": self.description,
            "steps": steps,
            "world_size": self.context.world_size,
            **self.fingerprint,
        }

    def _resume(self, steps: int) -> int:
        """Load this phase's saved state when resuming; return the step to start at."""
        cp = self.checkpointing
        if cp is None or not cp.resume:
            return 0
        path = cp.path(self.description, self.context.rank, self.context.world_size)
        if not path.is_file():
            return 0
        start, self.history = load_training_state(
            path,
            model=self.model,
            optimizer=self.optimizer,
            state=self.state,
            fingerprint=self._fingerprint(steps),
        )
        return start

    def _save(self, step: int, steps: int) -> None:
        cp = self.checkpointing
        if cp is None or (step % cp.every_steps and step != steps):
            return
        save_training_state(
            cp.path(self.description, self.context.rank, self.context.world_size),
            step=step,
            model=self.model,
            optimizer=self.optimizer,
            state=self.state,
            fingerprint=self._fingerprint(steps),
            history=self.history,
        )

    def fit(self, step_fn: StepFunction, steps: int) -> list[dict[str, Any]]:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.start_step = self._resume(steps)
        for callback in self.callbacks:
            callback.on_train_start(self, steps)
        started = time.perf_counter()
        try:
            for step in range(self.start_step, steps):
                self.optimizer.zero_grad(set_to_none=True)
                result = step_fn(step)
                result.losses = {k: self.context.sum_scalar(v) for k, v in result.losses.items()}
                check_finite(result.losses, step)
                self.context.all_reduce_gradients(params)
                self.optimizer.step()
                self.context.broadcast_buffers(self.model)
                self.history.append(
                    {
                        "phase": self.description,
                        "step": step,
                        "kind": result.kind,
                        **result.losses,
                        **result.extras,
                        "elapsed_s": round(time.perf_counter() - started, 3),
                    }
                )
                for callback in self.callbacks:
                    callback.on_step_end(self, result)
                self._save(step + 1, steps)
        finally:
            for callback in self.callbacks:
                callback.on_train_end(self)
        return self.history


# --------------------------------------------------------------------------- data


class ShardedBatches:
    """Endless batches of a dataset: this process's share of each seeded global batch."""

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        *,
        seed: int,
        context: DistributedContext,
        drop_last: bool = False,
    ) -> None:
        self.dataset = dataset
        self.size = len(dataset)  # type: ignore[arg-type]
        self.context = context
        self._plan = (batch_size, seed, drop_last)
        self._batches = global_batches(self.size, batch_size, seed=seed, drop_last=drop_last)
        #: global batches drawn so far (a resumed run draws them again, unread)
        self.drawn = 0

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "plan": list(self._plan), "drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the ``state["drawn"]`` batches a saved run had drawn."""
        if state["size"] != self.size or list(state["plan"]) != list(self._plan):
            raise ResumeError(
                f"saved batches of {state['size']} items {state['plan']} do not match "
                f"{self.size} items {list(self._plan)}"
            )
        batch_size, seed, drop_last = self._plan
        self._batches = global_batches(self.size, batch_size, seed=seed, drop_last=drop_last)
        for _ in range(int(state["drawn"])):
            next(self._batches)
        self.drawn = int(state["drawn"])

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        return self

    def __next__(self) -> tuple[Any, int]:
        """``(collated local batch or None when this share is empty, global batch size)``."""
        batch = next(self._batches)
        self.drawn += 1
        mine = local_slice(batch, self.context.rank, self.context.world_size)
        if not mine:
            return None, len(batch)
        items = default_collate([self.dataset[i] for i in mine])
        return _to_device(items, self.context.device), len(batch)


def _to_device(items: Any, device: torch.device) -> Any:
    if isinstance(items, Tensor):
        return items.to(device)
    if isinstance(items, (list, tuple)):
        return type(items)(_to_device(item, device) for item in items)
    return items


def dataset_size(dataset: Dataset[Any], name: str) -> int:
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError(f"{name} must be a map-style Dataset with a length") from exc
    if size == 0:
        raise TrainingError(f"{name} is empty: there is nothing to train on")
    return size


# --------------------------------------------------------------------------- supervised


@dataclass
class SupervisedOutcome:
    steps: int
    final_loss: float
    history: list[dict[str, Any]]


def train_supervised(
    model: nn.Module,
    labeled: Dataset[tuple[Tensor, Tensor]],
    config: SupervisedConfig,
    *,
    callbacks: Sequence[Callback] = (),
    context: DistributedContext | None = None,
    checkpointing: Checkpointing | None = None,
) -> SupervisedOutcome:
    """Train ``model`` in place on ``(image, multi-hot target)`` pairs with Adam.

    Deterministic on the CPU for a given ``config.seed`` (which also seeds any
    random augmentation the dataset draws from torch's global generator), resumed
    runs included (``checkpointing``, :mod:`models.resume`).
    """
    context = context or DistributedContext()
    size = dataset_size(labeled, "the labeled set")
    torch.manual_seed(config.seed)
    model.to(context.device)
    model.train()
    if config.freeze_batchnorm:
        freeze_batchnorm(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batches = ShardedBatches(labeled, config.batch_size, seed=config.seed, context=context)

    def step_fn(step: int) -> StepResult:
        batch, global_size = next(batches)
        if batch is None:  # more processes than images in this batch
            return StepResult(step, "supervised", {"supervised": 0.0})
        images, targets = batch
        losses = supervised_loss(model(images), targets, multi_label=config.multi_label)
        loss = losses.sum() / global_size
        loss.backward()
        return StepResult(step, "supervised", {"supervised": float(loss.detach())})

    steps = config.num_steps(size)
    trainer = Trainer(
        model,
        optimizer,
        callbacks=callbacks,
        context=context,
        description="supervised",
        checkpointing=checkpointing,
        state={"batches": batches},
        fingerprint={"config": config_to_dict(config), "items": size},
    )
    history = trainer.fit(step_fn, steps)
    model.eval()
    return SupervisedOutcome(steps=steps, final_loss=history[-1]["supervised"], history=history)


@torch.no_grad()
def predict_scores(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    multi_label: bool,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor | None]:
    """Class probabilities (N, C) of a dataset in eval mode, with its targets when it has them.

    Sigmoid scores for multi-label models, softmax for single-label ones. Restores
    the model's train/eval flags.
    """
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    scores: list[Tensor] = []
    targets: list[Tensor] = []
    try:
        size = len(dataset)  # type: ignore[arg-type]
        for start in range(0, size, batch_size):
            items = default_collate(
                [dataset[i] for i in range(start, min(size, start + batch_size))]
            )
            images = items[0] if isinstance(items, (list, tuple)) else items
            logits = model(images.to(device)).float()
            scores.append(torch.sigmoid(logits) if multi_label else F.softmax(logits, dim=1))
            if isinstance(items, (list, tuple)) and len(items) > 1:
                targets.append(items[1].float())
    finally:
        for module, flag in was_training.items():
            module.train(flag)
    if not scores:
        raise ValueError("dataset must hold at least one image")
    return torch.cat(scores).cpu(), (torch.cat(targets) if targets else None)
