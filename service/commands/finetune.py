"""``atcon finetune``: ATCON fine-tuning of a checkpoint on unlabeled frames.

Writes a new checkpoint (recording its parent's hash); on collapse or a NaN loss it
stops with a message and writes nothing. Runs data-parallel under ``torchrun``.

Before ``--out`` is written, the service's promotion gate
(:func:`worker.serving.versions.promotion_gate`) compares the new model with its parent on
the labeled validation frames held out of ``--labeled``: when the new one is worse,
nothing is written (an existing ``--out`` is left as it was), the reason and the
figures are logged, and the exit status is 3, unless ``--force`` is given. Without
labeled validation frames it writes and says that it could not check.
"""

from __future__ import annotations

import argparse
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from . import _training

logger = logging.getLogger(__name__)

#: exit status when the gate refuses the fine-tuned model
REFUSED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nightly",
        action="store_true",
        help="do what the nightly scheduler does, once: queue a fine-tune of the active "
        "model on the frame pool if enough new frames arrived (for an outside cron)",
    )
    parser.add_argument(
        "--camera",
        default=None,
        metavar="CAMERA",
        help="with --nightly: a fine-tune of this camera's frames only, starting from the "
        "version serving it and promoted for it only (counts only its new frames)",
    )
    parser.add_argument("--checkpoint", type=Path, help="model to start from")
    parser.add_argument(
        "--unlabeled",
        type=Path,
        metavar="DIR",
        help="directory of unlabeled JPEG/PNG frames",
    )
    parser.add_argument(
        "--labeled",
        type=Path,
        default=None,
        metavar="DIR",
        help="labeled frames (labels.csv) for the alternating/combined schedules",
    )
    parser.add_argument("--out", type=Path, help="checkpoint to write")
    parser.add_argument(
        "--schedule",
        choices=_training.SCHEDULES,
        default=None,
        help="default: alternating with --labeled, unsupervised without",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="labeled images per step")
    parser.add_argument(
        "--method",
        default="atcon",
        help="how to adapt: atcon (ATCON fine-tuning, the default here) or a '+'-joined set "
        "of adabn, tent, atcon, pseudo, distill, anchor, supervised, recalibrate "
        "(docs/results/adaptation.md); recalibrate and anchor need --in-domain",
    )
    parser.add_argument(
        "--in-domain",
        type=Path,
        default=None,
        metavar="DIR",
        help="unlabeled frames of the cameras the model already serves (anchor, recalibrate)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write --out even when the fine-tuned model is worse than its parent on the "
        "labeled validation frames (otherwise nothing is written and the exit status is 3)",
    )
    _training.add_common_options(parser)
    _training.add_finetune_options(parser)


def run(args: argparse.Namespace) -> int:
    if args.nightly:
        return _nightly(args.camera)
    if args.camera is not None:
        logger.error("--camera applies to --nightly (the service's frame pool) only")
        return 2
    missing = [flag for flag in ("checkpoint", "unlabeled", "out") if getattr(args, flag) is None]
    if missing:
        logger.error("atcon finetune needs %s (or --nightly)", ", ".join(f"--{m}" for m in missing))
        return 2
    return _training.run_guarded(lambda: _run(args))


def _nightly(camera: str | None) -> int:
    """Queue a fine-tune if the nightly conditions hold; print the job id or why not."""
    import json

    from worker import InvalidCameraError
    from worker.cameras import validate_camera
    from worker.finetune.nightly import run_nightly_once
    from worker.queue.factory import open_queue
    from worker.settings import get_settings
    from worker.storage import open_storage

    if camera is not None:
        try:
            validate_camera(camera, "--camera")
        except InvalidCameraError as exc:
            logger.error("%s", exc)
            return 2
    settings = get_settings()
    if settings.embedded:
        logger.error(
            "atcon finetune --nightly queues work for `atcon worker finetune` and so needs "
            "ATCON_REDIS_URL; the embedded default (`atcon serve`) schedules by itself"
        )
        return 2
    storage = open_storage(settings)
    storage.ensure_layout()
    queue = open_queue(settings)
    try:
        job_id, why = run_nightly_once(storage, queue, settings, camera)
    finally:
        queue.close()
    answer = {"queued": job_id is not None, "job_id": job_id, "reason": why, "camera": camera}
    print(json.dumps(answer))  # noqa: T201
    return 0


def _run(args: argparse.Namespace) -> int:
    from models.distributed import init_from_environment, shutdown
    from models.methods import ATCON, NEEDS_ANCHOR, NEEDS_LABELS, method_name, parse_method
    from worker.settings import get_settings
    from worker.training.adapters import DataOptions, finetune_checkpoint, gate_against_parent

    method = method_name(parse_method(args.method))
    components = set(parse_method(method))
    if method != ATCON:
        if NEEDS_ANCHOR & components and args.in_domain is None:
            raise ValueError(f"--method {method} needs --in-domain DIR")
        if NEEDS_LABELS & components and args.labeled is None:
            raise ValueError(f"--method {method} needs --labeled DIR")
    schedule = args.schedule or ("alternating" if args.labeled else "unsupervised")
    if schedule != "unsupervised" and args.labeled is None:
        raise ValueError(f"--schedule {schedule} needs --labeled DIR")
    out = Path(args.out)
    candidate = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.candidate")
    data = DataOptions(val_fraction=args.val_fraction, augment=args.augment, split_seed=args.seed)
    context = init_from_environment(args.device)
    try:
        try:
            report = (
                _adapt(args, method, candidate, data, context.device)
                if method != ATCON
                else finetune_checkpoint(
                    args.checkpoint,
                    args.unlabeled,
                    candidate,
                    config=_training.finetune_config(args, schedule, args.batch_size),
                    labeled_dir=args.labeled,
                    data=data,
                    log_path=_training.log_path(args),
                    progress=not args.no_progress,
                    context=context,
                    min_val_per_class=_training.min_val_per_class(args),
                    checkpointing=_training.checkpointing(args),
                )
            )
        finally:
            shutdown(context)
        if not context.is_main:
            return 0
        _training.finish_run(args)
        gate = gate_against_parent(
            args.checkpoint,
            candidate,
            args.labeled,
            data,
            f1_tolerance_points=get_settings().gate_f1_tolerance_points,
            strict_consistency=get_settings().gate_strict_consistency,
            device=context.device,
            layer=args.layer,
        )
        summary = {"sha256": report.sha256, "metrics": report.metrics, "gate": gate.to_dict()}
        if gate.refused and not args.force:
            logger.error(
                "%s was not written: the fine-tuned model is worse than its parent on the %d "
                "labeled validation frames (%s). Its parent stays the better model; pass "
                "--force to write it anyway.",
                out,
                gate.images,
                gate.to_dict()["reason"],
            )
            _training.print_json({"out": None, **summary})
            return REFUSED
        if gate.refused:
            logger.warning("--force: writing %s although the gate refused it", out)
        elif gate.decision is None:
            logger.warning(
                "could not check the fine-tuned model against its parent: no labeled "
                "validation frames (give --labeled with enough frames for --val-fraction); "
                "%s is written unchecked",
                out,
            )
        os.replace(candidate, out)
        _training.print_json({"out": out, **summary})
        return 0
    finally:
        candidate.unlink(missing_ok=True)


def _adapt(args: argparse.Namespace, method: str, candidate: Path, data: Any, device: Any) -> Any:
    """``--method`` other than atcon: :func:`worker.training.adapters.adapt_checkpoint`."""
    from models.adaptation import AdaptConfig
    from worker.training.adapters import adapt_checkpoint

    config = AdaptConfig(
        method=method,
        steps=args.ft_steps if args.ft_steps is not None else AdaptConfig.steps,
        lr=args.ft_lr if args.ft_lr is not None else AdaptConfig.lr,
        batch_size=args.batch_size,
        layer=args.layer,
        seed=args.seed,
    )
    return adapt_checkpoint(
        args.checkpoint,
        args.unlabeled,
        candidate,
        config=config,
        labeled_dir=args.labeled if config.needs_labels else None,
        anchor_dir=args.in_domain,
        data=data,
        progress=not args.no_progress,
        device=device,
        checkpointing=_training.checkpointing(args),
    )
