"""Training, fine-tuning and evaluation from frame directories to checkpoint files.

The thin adapter between the files on disk (:mod:`worker.training.datasets`, checkpoints)
and the pure training code in :mod:`models`. The ``atcon train``, ``atcon
finetune`` and ``atcon evaluate`` commands call these, and so does the fine-tune
job. A checkpoint is written only when its run succeeded, atomically, so a crash,
a NaN loss or a collapse never replaces a good file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from models._exceptions import CheckpointError, TrainingError
from models.adaptation import AdaptConfig
from models.atcon import check_map_size
from models.backbones import build_backbone
from models.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from models.checkpoint_info import file_sha256
from models.distributed import DistributedContext
from models.finetune import FinetuneConfig, FinetuneOutcome, finetune_atcon, named_layer
from models.metrics import (
    choose_thresholds,
    classification_report,
    mean_attention_consistency,
    weak_localization_iou,
)
from models.resume import Checkpointing
from models.training import (
    Callback,
    ProgressBar,
    SupervisedConfig,
    config_to_dict,
    predict_scores,
    train_supervised,
)

from .._exceptions import ClassMismatchError
from ..serving.versions import GateDecision, promotion_gate
from .datasets import (
    BoxDataset,
    FrameTransform,
    LabeledFrameDataset,
    LabeledFrames,
    UnlabeledFrameDataset,
    find_unlabeled_frames,
    read_boxes,
    read_labeled_frames,
    split_indices,
)
from .log import JsonLinesLog

__all__ = [
    "MIN_VAL_PER_CLASS",
    "DataOptions",
    "GateCheck",
    "RunReport",
    "adapt_checkpoint",
    "evaluate_checkpoint",
    "evaluate_model",
    "finetune_checkpoint",
    "gate_against_parent",
    "train_model",
]

logger = logging.getLogger(__name__)

#: validation positives and negatives a class needs before its threshold is re-chosen
#: (``ATCON_FINETUNE_MIN_VAL_PER_CLASS`` sets the command line's default)
MIN_VAL_PER_CLASS = 5


@dataclass
class DataOptions:
    """How frames become tensors and how the labeled set is split (saved in checkpoints)."""

    image_size: int = 224
    val_fraction: float = 0.2
    augment: bool = False
    split_seed: int = 0


@dataclass
class RunReport:
    """What a train or fine-tune run produced."""

    out: Path | None
    sha256: str | None
    metrics: dict[str, Any]
    #: the reason ATCON fine-tuning stopped early (collapse, NaN), when it did
    atcon_error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _callbacks(log: JsonLinesLog | None, progress: bool) -> list[Callback]:
    callbacks: list[Callback] = []
    if progress:
        callbacks.append(ProgressBar())
    if log is not None:
        callbacks.append(log)
    return callbacks


def _describe_run(checkpointing: Checkpointing | None, **run: Any) -> None:
    """Record what a resumed run must share with the saved one; refuse ``--resume``
    when nothing was saved (:meth:`models.resume.Checkpointing.check_resumable`)."""
    if checkpointing is None:
        return
    checkpointing.check_resumable()
    checkpointing.run.update(run)


def _sha(path: str | Path | None) -> str | None:
    return None if path is None else file_sha256(path)


def _validation_metrics(
    model: nn.Module,
    dataset: Dataset[Any] | None,
    info: CheckpointInfo,
    *,
    choose: bool,
    min_per_class: int,
    kept_from: str,
    device: torch.device,
) -> dict[str, Any]:
    """Set ``info.thresholds`` on the validation set (when asked) and score it.

    A class's threshold is re-chosen only from at least ``min_per_class`` validation
    positives and as many negatives; otherwise ``info.thresholds`` keeps its value
    (``kept_from`` says whose: "the parent's", or "the default 0.5"), and
    ``metrics["thresholds"]`` lists which classes kept theirs and why.
    """
    if dataset is None or len(dataset) == 0:  # type: ignore[arg-type]
        if not choose:
            return {}
        return {
            "thresholds": {
                "min_per_class": min_per_class,
                "chosen": [],
                "kept": {
                    name: f"no validation split: kept {kept_from} threshold {t:.4f}"
                    for name, t in zip(info.class_names, info.thresholds, strict=True)
                },
            }
        }
    scores, targets = predict_scores(model, dataset, multi_label=info.multi_label, device=device)
    assert targets is not None
    metrics: dict[str, Any] = {}
    if choose:
        choices = choose_thresholds(scores, targets, info.thresholds, min_per_class=min_per_class)
        info.thresholds = [choice.threshold for choice in choices]
        kept = {
            name: (
                f"{c.positives} positive and {c.negatives} negative validation images (at "
                f"least {min_per_class} of each needed): kept {kept_from} threshold "
                f"{c.threshold:.4f}"
            )
            for name, c in zip(info.class_names, choices, strict=True)
            if not c.chosen
        }
        for name, why in kept.items():
            logger.warning("class %s: %s", name, why)
        metrics["thresholds"] = {
            "min_per_class": min_per_class,
            "chosen": [n for n, c in zip(info.class_names, choices, strict=True) if c.chosen],
            "kept": kept,
        }
    report = classification_report(
        scores,
        targets,
        info.thresholds,
        multi_label=info.multi_label,
        class_names=info.class_names,
    )
    metrics["validation"] = {**report, "images": len(dataset)}  # type: ignore[arg-type]
    return metrics


def _split(
    frames: LabeledFrames, transform: FrameTransform, plain: FrameTransform, data: DataOptions
) -> tuple[LabeledFrameDataset, LabeledFrameDataset | None]:
    train_idx, val_idx = split_indices(len(frames), data.val_fraction, seed=data.split_seed)
    val = LabeledFrameDataset(frames, plain, val_idx) if val_idx else None
    if val is None:
        logger.warning("no validation split: decision thresholds stay at 0.5")
    return LabeledFrameDataset(frames, transform, train_idx), val


def _finish(
    report: RunReport,
    model: nn.Module,
    info: CheckpointInfo,
    val_set: Dataset[Any] | None,
    out: str | Path,
    log: JsonLinesLog | None,
    device: torch.device,
    *,
    min_per_class: int,
    kept_from: str,
) -> None:
    """Choose thresholds and score on validation data, then write the checkpoint."""
    report.metrics.update(
        _validation_metrics(
            model,
            val_set,
            info,
            choose=True,
            min_per_class=min_per_class,
            kept_from=kept_from,
            device=device,
        )
    )
    info.metrics = report.metrics
    report.sha256 = save_checkpoint(out, model, info)
    report.out = Path(out)
    if log is not None:
        log.record("checkpoint", path=str(out), sha256=report.sha256, metrics=report.metrics)
        log.close()


def train_model(
    labeled_dir: str | Path,
    out: str | Path,
    *,
    arch: str = "resnet18",
    config: SupervisedConfig | None = None,
    data: DataOptions | None = None,
    unlabeled_dir: str | Path | None = None,
    finetune: FinetuneConfig | None = None,
    weights: str | Path | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    multi_label: bool | None = None,
    log_path: str | Path | None = None,
    progress: bool = True,
    context: DistributedContext | None = None,
    min_val_per_class: int = MIN_VAL_PER_CLASS,
    checkpointing: Checkpointing | None = None,
) -> RunReport:
    """Train a classifier on a labeled frame directory and write its checkpoint to ``out``.

    Supervised training (``config``) first; then, when ``finetune`` and
    ``unlabeled_dir`` are given, ATCON fine-tuning of that model. Decision thresholds
    are chosen on the validation split for each class with at least
    ``min_val_per_class`` positives and negatives there (0.5 otherwise, and
    ``metrics["thresholds"]`` says so). ``multi_label=None`` picks single-label
    (softmax) when every frame has exactly one class, multi-label otherwise. If ATCON
    fine-tuning stops (collapse, NaN), the supervised model is written and the
    reason is returned in ``RunReport.atcon_error``. ``checkpointing`` saves both
    phases' training state periodically and resumes the run (:mod:`models.resume`).
    """
    context = context or DistributedContext()
    config = config or SupervisedConfig()
    data = data or DataOptions()
    frames = read_labeled_frames(labeled_dir)
    if multi_label is None:
        multi_label = not frames.single_label
        logger.info(
            "%s-label training (%d classes)",
            "multi" if multi_label else "single",
            len(frames.class_names),
        )
    config.multi_label = multi_label
    info = CheckpointInfo(
        arch=arch,
        class_names=frames.class_names,
        input_size=data.image_size,
        multi_label=multi_label,
        arch_kwargs=dict(arch_kwargs or {}),
    )
    transform = FrameTransform(data.image_size, info.mean, info.std, augment=data.augment)
    plain = FrameTransform(data.image_size, info.mean, info.std)
    train_set, val_set = _split(frames, transform, plain, data)
    torch.manual_seed(config.seed)
    model = build_backbone(arch, len(frames.class_names), weights=weights, **info.arch_kwargs)
    if finetune is not None and unlabeled_dir is not None:
        _check_atcon_layer(model, finetune, data.image_size)  # before hours of training
    _describe_run(
        checkpointing,
        arch=arch,
        arch_kwargs=info.arch_kwargs,
        weights=_sha(weights),
        classes=frames.class_names,
        data=config_to_dict(data),
    )
    log = JsonLinesLog(log_path) if log_path is not None and context.is_main else None
    callbacks = _callbacks(log, progress)
    outcome = train_supervised(
        model, train_set, config, callbacks=callbacks, context=context, checkpointing=checkpointing
    )
    configs: dict[str, Any] = {
        "supervised": config_to_dict(config),
        "data": config_to_dict(data),
    }
    metrics: dict[str, Any] = {"supervised_steps": outcome.steps, "world_size": context.world_size}
    history = list(outcome.history)
    atcon_error = None
    if finetune is not None and unlabeled_dir is not None:
        finetune.multi_label = multi_label
        unlabeled = find_unlabeled_frames(unlabeled_dir)
        if not unlabeled.paths:
            raise TrainingError(f"{unlabeled_dir} holds no readable JPEG or PNG frame")
        try:
            tuned = finetune_atcon(
                model,
                UnlabeledFrameDataset(unlabeled.paths, plain),
                finetune,
                labeled=None if finetune.schedule == "unsupervised" else train_set,
                callbacks=callbacks,
                context=context,
                checkpointing=checkpointing,
            )
        except TrainingError as exc:
            atcon_error = str(exc)
            logger.error("%s", exc)
            metrics["atcon_error"] = atcon_error
        else:
            configs["finetune"] = config_to_dict(finetune)
            metrics.update(_finetune_metrics(tuned))
            history += tuned.history
    metrics["replica_max_abs_diff"] = context.replica_max_abs_diff(model)
    info.config = configs
    report = RunReport(
        out=None, sha256=None, metrics=metrics, atcon_error=atcon_error, history=history
    )
    if context.is_main:
        _finish(
            report,
            model,
            info,
            val_set,
            out,
            log,
            context.device,
            min_per_class=min_val_per_class,
            kept_from="the default",
        )
    return report


def _check_atcon_layer(model: nn.Module, config: FinetuneConfig, image_size: int) -> None:
    """Refuse, before any work, a layer name not in the model or maps too small for ATCON.

    :class:`models._exceptions.MapTooSmallError` names the layer, the map size and the
    fix; a control run without the ATCON loss (``atcon_weight == 0``) needs no map.
    """
    layer = named_layer(model, config.layer)
    if config.atcon_weight > 0:
        check_map_size(model, image_size, layer)


def _finetune_metrics(outcome: FinetuneOutcome) -> dict[str, Any]:
    return {
        "atcon_steps": outcome.steps,
        "atcon_labeled_steps": outcome.labeled_steps,
        "atcon_unlabeled_steps": outcome.unlabeled_steps,
        "atcon_labeled_probability": outcome.labeled_probability,
        "collapse_reference": outcome.reference_stats,
        "collapse_final": outcome.final_stats,
    }


def adapt_checkpoint(
    checkpoint: str | Path,
    unlabeled_dir: str | Path,
    out: str | Path,
    *,
    config: AdaptConfig,
    labeled_dir: str | Path | None = None,
    anchor_dir: str | Path | None = None,
    data: DataOptions | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    device: torch.device | str = "cpu",
    checkpointing: Checkpointing | None = None,
) -> RunReport:
    """Adapt the model in ``checkpoint`` with ``config.method`` and write it to ``out``.

    :func:`models.adaptation.adapt` on the frames of three directories: the unlabeled
    target frames, the labeled ones (``labels.csv``; the ``supervised`` component) and
    in-domain frames of the cameras the model already serves (``anchor``,
    ``recalibrate``). With ``data``, only the training split of the labeled frames
    (``data.val_fraction``, ``data.split_seed``) trains, so the rest can judge the
    result (:func:`gate_against_parent`). Decision thresholds stay the parent's; the new checkpoint
    records its parent's hash, the method and what it changed (BatchNorm statistics,
    output biases), so detection folds the new statistics when it loads it. Nothing
    is written when adaptation fails (:class:`TrainingError` propagates).
    ``checkpointing`` saves the training state periodically and resumes the run.
    """
    from models.adaptation import adapt

    model, parent = load_checkpoint(checkpoint, map_location=device)
    config.multi_label = parent.multi_label
    plain = FrameTransform(parent.input_size, parent.mean, parent.std)
    labeled_set: LabeledFrameDataset | None = None
    if labeled_dir is not None:
        frames = _frames_for(parent, labeled_dir, checkpoint)
        if data is not None:
            labeled_set, _val = _split(frames, plain, plain, data)
        else:
            labeled_set = LabeledFrameDataset(frames, plain)
    unlabeled = find_unlabeled_frames(unlabeled_dir)
    if not unlabeled.paths:
        raise TrainingError(f"{unlabeled_dir} holds no readable JPEG or PNG frame")
    anchor_set = None
    if anchor_dir is not None:
        anchors = find_unlabeled_frames(anchor_dir)
        if anchors.paths:
            anchor_set = UnlabeledFrameDataset(anchors.paths, plain)
    described = None if data is None else config_to_dict(data)
    _describe_run(checkpointing, parent=parent.sha256, data=described)
    outcome = adapt(
        model,
        UnlabeledFrameDataset(unlabeled.paths, plain),
        config,
        labeled=labeled_set,
        anchor=anchor_set,
        thresholds=parent.thresholds,
        callbacks=[*_callbacks(None, progress), *callbacks],
        device=device,
        checkpointing=checkpointing,
    )
    info = CheckpointInfo.from_dict(parent.to_dict())
    info.parent_hash = parent.sha256
    info.config = {**parent.config, "adapt": config_to_dict(config)}
    metrics: dict[str, Any] = {
        "method": outcome.method,
        "steps": outcome.steps,
        "adabn_images": outcome.adabn_images,
        "batchnorm_changed": outcome.batchnorm_changed,
        "pseudo_share": outcome.pseudo_share,
        "recalibration": outcome.recalibration,
        **({"labeled_steps": outcome.labeled_steps} if outcome.labeled_steps is not None else {}),
        "frames": {
            "unlabeled": len(unlabeled.paths),
            "labeled": 0 if labeled_set is None else len(labeled_set),
            "in_domain": 0 if anchor_set is None else len(anchor_set),
        },
        "thresholds": {"kept": "the parent's", "values": list(parent.thresholds)},
    }
    info.metrics = metrics
    sha = save_checkpoint(out, model, info)
    return RunReport(out=Path(out), sha256=sha, metrics=metrics, history=outcome.history)


def finetune_checkpoint(
    checkpoint: str | Path,
    unlabeled_dir: str | Path,
    out: str | Path,
    *,
    config: FinetuneConfig | None = None,
    labeled_dir: str | Path | None = None,
    data: DataOptions | None = None,
    log_path: str | Path | None = None,
    progress: bool = True,
    context: DistributedContext | None = None,
    callbacks: Sequence[Callback] = (),
    min_val_per_class: int = MIN_VAL_PER_CLASS,
    checkpointing: Checkpointing | None = None,
) -> RunReport:
    """ATCON fine-tune the model in ``checkpoint`` and write the result to ``out``.

    ``callbacks`` see every step (a job reports its progress through one);
    ``checkpointing`` saves the training state periodically and resumes the run.

    Nothing is written when fine-tuning stops (collapse, NaN): :class:`TrainingError`
    propagates and ``checkpoint`` is untouched. With ``labeled_dir``, its classes must
    be the checkpoint's (:class:`CheckpointError` otherwise), thresholds are chosen
    again on its validation split for each class with at least ``min_val_per_class``
    positives and negatives there (the parent's are kept otherwise, and
    ``metrics["thresholds"]`` says which and why), and the ``alternating``/``combined``
    schedules train on the rest. The new checkpoint records the parent's sha256.
    """
    context = context or DistributedContext()
    config = config or FinetuneConfig()
    model, parent = load_checkpoint(checkpoint, map_location=context.device)
    _check_atcon_layer(model, config, parent.input_size)
    data = data or DataOptions(image_size=parent.input_size)
    data.image_size = parent.input_size
    config.multi_label = parent.multi_label
    plain = FrameTransform(parent.input_size, parent.mean, parent.std)
    augmented = FrameTransform(parent.input_size, parent.mean, parent.std, augment=data.augment)
    labeled_set = val_set = None
    if labeled_dir is not None:
        frames = _frames_for(parent, labeled_dir, checkpoint)
        labeled_set, val_set = _split(frames, augmented, plain, data)
    if config.schedule != "unsupervised" and labeled_set is None:
        raise ValueError(f"the {config.schedule} schedule needs labeled frames (labeled_dir)")
    unlabeled = find_unlabeled_frames(unlabeled_dir)
    if not unlabeled.paths:
        raise TrainingError(f"{unlabeled_dir} holds no readable JPEG or PNG frame")
    _describe_run(checkpointing, parent=parent.sha256, data=config_to_dict(data))
    log = JsonLinesLog(log_path) if log_path is not None and context.is_main else None
    tuned = finetune_atcon(
        model,
        UnlabeledFrameDataset(unlabeled.paths, plain),
        config,
        labeled=labeled_set,
        callbacks=[*_callbacks(log, progress), *callbacks],
        context=context,
        checkpointing=checkpointing,
    )
    info = CheckpointInfo.from_dict(parent.to_dict())
    info.parent_hash = parent.sha256
    info.config = {
        **parent.config,
        "finetune": config_to_dict(config),
        "data": config_to_dict(data),
    }
    metrics: dict[str, Any] = {**_finetune_metrics(tuned), "world_size": context.world_size}
    metrics["replica_max_abs_diff"] = context.replica_max_abs_diff(model)
    report = RunReport(out=None, sha256=None, metrics=metrics, history=tuned.history)
    if context.is_main:
        _finish(
            report,
            model,
            info,
            val_set,
            out,
            log,
            context.device,
            min_per_class=min_val_per_class,
            kept_from="the parent's",
        )
    return report


def _frames_for(
    info: CheckpointInfo, labeled_dir: str | Path, checkpoint: str | Path
) -> LabeledFrames:
    """Read labeled frames against a checkpoint's classes; a mismatch is a CheckpointError."""
    try:
        return read_labeled_frames(
            labeled_dir, class_names=info.class_names, class_source=f"checkpoint {checkpoint}"
        )
    except ClassMismatchError as exc:
        raise CheckpointError(f"checkpoint classes do not match the data: {exc}") from exc


def evaluate_model(
    model: nn.Module,
    info: CheckpointInfo,
    dataset: Dataset[Any],
    *,
    boxes: Dataset[Any] | None = None,
    cam_threshold: float = 0.5,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    layer: str | None = None,
) -> dict[str, Any]:
    """``{"macro_f1", "map", "per_class_f1", "consistency", "miou"}`` of a model on data.

    ``consistency`` is the mean attention consistency (published ATCON settings, top
    class) over the images at Grad-CAM ``layer`` (a module name; ``None``: automatic,
    fine-tuning's layer when it used another); ``miou`` the mean weak-localisation
    IoU over ``boxes`` (``None`` without boxes).
    """
    from torch.utils.data import default_collate

    model.eval().to(device)
    scores, targets = predict_scores(
        model, dataset, multi_label=info.multi_label, batch_size=batch_size, device=device
    )
    if targets is None:
        raise ValueError("dataset must yield (image, target) pairs")
    report = classification_report(
        scores, targets, info.thresholds, multi_label=info.multi_label, class_names=info.class_names
    )
    size = len(dataset)  # type: ignore[arg-type]
    consistency: list[float] = []
    for start in range(0, size, batch_size):
        items = [dataset[i] for i in range(start, min(size, start + batch_size))]
        images = default_collate(items)[0].to(device)
        consistency.append(
            mean_attention_consistency(model, images, layer=named_layer(model, layer)) * len(items)
        )
    report["consistency"] = sum(consistency) / size
    report["miou"] = None
    if boxes is not None and len(boxes) > 0:  # type: ignore[arg-type]
        total, count = 0.0, len(boxes)  # type: ignore[arg-type]
        for start in range(0, count, batch_size):
            images, labels, rects = default_collate(
                [boxes[i] for i in range(start, min(count, start + batch_size))]
            )
            ious = weak_localization_iou(
                model, images.to(device), labels.to(device), rects, threshold=cam_threshold
            )
            total += float(ious.sum())
        report["miou"] = total / count
    report["images"] = size
    return report


def evaluate_checkpoint(
    checkpoint: str | Path,
    labeled_dir: str | Path,
    *,
    boxes_csv: str | Path | None = None,
    cam_threshold: float = 0.5,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    layer: str | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a labeled frame directory (and boxes), as :func:`evaluate_model`."""
    model, info = load_checkpoint(checkpoint, map_location=device)
    frames = _frames_for(info, labeled_dir, checkpoint)
    plain = FrameTransform(info.input_size, info.mean, info.std)
    box_set = None
    if boxes_csv is not None:
        box_list = read_boxes(boxes_csv, root=labeled_dir, class_names=info.class_names)
        box_set = BoxDataset(box_list, info.class_names, plain)
    result = evaluate_model(
        model,
        info,
        LabeledFrameDataset(frames, plain),
        boxes=box_set,
        cam_threshold=cam_threshold,
        batch_size=batch_size,
        device=device,
        layer=layer,
    )
    result["checkpoint_sha256"] = info.sha256
    result["skipped"] = len(frames.skipped)
    return result


@dataclass
class GateCheck:
    """The service's promotion gate applied to a fine-tuned checkpoint and its parent."""

    #: ``None`` when there were no labeled validation frames to decide on
    decision: GateDecision | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    #: labeled validation frames the decision rests on
    images: int

    @property
    def refused(self) -> bool:
        return self.decision is not None and not self.decision.promote

    def to_dict(self) -> dict[str, Any]:
        keys = ("macro_f1", "map", "consistency", "per_class_f1")
        return {
            "checked": self.decision is not None,
            "passed": None if self.decision is None else self.decision.promote,
            "reason": (
                "no labeled validation frames: the fine-tuned model could not be compared "
                "with its parent"
                if self.decision is None
                else self.decision.reason
            ),
            "validation_images": self.images,
            "before": {k: self.before[k] for k in keys if k in self.before}
            if self.before
            else None,
            "after": {k: self.after[k] for k in keys if k in self.after} if self.after else None,
        }


def gate_against_parent(
    parent: str | Path,
    candidate: str | Path,
    labeled_dir: str | Path | None,
    data: DataOptions,
    *,
    f1_tolerance_points: float,
    strict_consistency: bool = False,
    device: torch.device | str = "cpu",
    layer: str | None = None,
) -> GateCheck:
    """:func:`worker.serving.versions.promotion_gate` on the validation split of ``labeled_dir``.

    The split is the one :func:`finetune_checkpoint` held out with the same ``data``
    (fraction and seed), so no frame the candidate trained on is used. The candidate
    is scored with the thresholds it carries; where it re-chose them on this split
    (only from enough examples per class) that favours it a little. Without labeled
    frames, or with an empty split, ``decision`` is ``None``: nothing could be checked.
    """
    if labeled_dir is None:
        return GateCheck(None, None, None, 0)
    parent_model, parent_info = load_checkpoint(parent, map_location=device)
    frames = _frames_for(parent_info, labeled_dir, parent)
    _, val_idx = split_indices(len(frames), data.val_fraction, seed=data.split_seed)
    if not val_idx:
        return GateCheck(None, None, None, 0)
    plain = FrameTransform(parent_info.input_size, parent_info.mean, parent_info.std)
    val_set = LabeledFrameDataset(frames, plain, val_idx)
    before = evaluate_model(parent_model, parent_info, val_set, device=device, layer=layer)
    del parent_model
    model, info = load_checkpoint(candidate, map_location=device)
    after = evaluate_model(model, info, val_set, device=device, layer=layer)
    decision = promotion_gate(
        before,
        after,
        f1_tolerance_points=f1_tolerance_points,
        strict_consistency=strict_consistency,
    )
    return GateCheck(decision, before, after, len(val_idx))
