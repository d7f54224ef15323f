"""Options shared by ``atcon train`` and ``atcon finetune``, and their error handling."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.finetune import FinetuneConfig
    from models.resume import Checkpointing

logger = logging.getLogger(__name__)

SCHEDULES = ("alternating", "combined", "unsupervised")


def add_finetune_options(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    """ATCON options; ``prefix`` ("atcon-") keeps ``train``'s supervised options apart.

    Options left out take the defaults of ``models.finetune.FinetuneConfig`` (chosen
    by ``bench/digits.py``), so the dataclass is the one place they are set.
    """
    group = parser.add_argument_group(
        "ATCON fine-tuning (defaults: models.finetune.FinetuneConfig)"
    )
    add = group.add_argument
    # own destinations: `atcon train` has a supervised --lr of its own
    add(f"--{prefix}steps", dest="ft_steps", type=int, help="fine-tuning steps")
    add(f"--{prefix}lr", dest="ft_lr", type=float, help="fine-tuning learning rate")
    add("--unlabeled-batch-size", type=int, help="unlabeled images per ATCON step")
    add(
        "--alpha",
        type=float,
        help="alternating: weight of |L| in the labeled-step probability "
        "alpha|L|/(alpha|L|+|U|); combined: weight of the ATCON term",
    )
    add(
        "--min-labeled-fraction",
        type=float,
        metavar="F",
        help="alternating: floor of the labeled-step probability when labels are given, "
        "max(F, alpha|L|/(alpha|L|+|U|)), so a few labels are not drowned by a large pool",
    )
    add("--atcon-weight", type=float, help="multiplier of the ATCON loss")
    add(
        "--atcon-warmup",
        dest="atcon_warmup_steps",
        type=int,
        metavar="STEPS",
        help="ramp the ATCON weight linearly over this many steps",
    )
    add(
        "--balance-gradients",
        action=argparse.BooleanOptionalAction,
        help="cap the ATCON gradient norm at --balance-ratio x the supervised one "
        "(default: on when labeled frames are given)",
    )
    add("--balance-ratio", type=float)
    add(
        "--preserve-weight",
        type=float,
        help="weight of KL(starting model || current) on unlabeled batches",
    )
    add("--mask-intensity", type=float)
    add("--gb-normalization", choices=("none", "max"))
    add("--similarity", choices=("pearson", "ssim"))
    add(
        "--attention-method",
        dest="attention_method",
        choices=("guided_backprop", "integrated_gradients"),
        help="the map that masks the frame in the ATCON loss (default guided_backprop)",
    )
    add("--layer", help="Grad-CAM layer by module name, e.g. layer3 (default: automatic)")
    add(
        "--collapse-guard",
        dest="guard_enabled",
        action=argparse.BooleanOptionalAction,
        help="stop when predictions on unlabeled frames collapse",
    )
    add("--collapse-window", dest="guard_window", type=int, metavar="BATCHES")


_FINETUNE_FIELDS = (
    "unlabeled_batch_size",
    "alpha",
    "min_labeled_fraction",
    "atcon_weight",
    "atcon_warmup_steps",
    "balance_gradients",
    "balance_ratio",
    "preserve_weight",
    "mask_intensity",
    "gb_normalization",
    "similarity",
    "layer",
)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="labeled frames held out to choose thresholds (default 0.2)",
    )
    parser.add_argument(
        "--min-val-per-class",
        type=int,
        default=None,
        metavar="N",
        help="re-choose a class's decision threshold only from at least N held-out "
        "positives and N negatives; otherwise keep the parent's (0.5 for train) "
        "(default: ATCON_FINETUNE_MIN_VAL_PER_CLASS, 5)",
    )
    parser.add_argument(
        "--augment", action="store_true", help="random flips and crops of labeled frames"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        help="JSON-lines log (default: OUT with the suffix .log.jsonl)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the run's training checkpoints (model, optimiser, step, random state); "
        "removed when the run ends (default: OUT with the suffix .work)",
    )
    parser.add_argument(
        "--save-every",
        type=int,
        default=50,
        metavar="STEPS",
        help="save the training state every STEPS steps (default 50; 0: never)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last training checkpoint in --work-dir "
        "(same options as the interrupted run); the result equals an uninterrupted run's",
    )


def finetune_config(args: argparse.Namespace, schedule: str, batch_size: int) -> FinetuneConfig:
    """The options given on the command line over ``FinetuneConfig``'s defaults."""
    import dataclasses

    from models.finetune import FinetuneConfig

    given: dict[str, Any] = {
        name: getattr(args, name) for name in _FINETUNE_FIELDS if getattr(args, name) is not None
    }
    if getattr(args, "attention_method", None) is not None:
        given["method"] = args.attention_method
    if args.ft_steps is not None:
        given["steps"] = args.ft_steps
    if args.ft_lr is not None:
        given["lr"] = args.ft_lr
    config = FinetuneConfig(schedule=schedule, batch_size=batch_size, seed=args.seed, **given)
    guard = {
        name: getattr(args, f"guard_{name}")
        for name in ("enabled", "window")
        if getattr(args, f"guard_{name}") is not None
    }
    if guard:
        config.guard = dataclasses.replace(config.guard, **guard)
    return config


def min_val_per_class(args: argparse.Namespace) -> int:
    """``--min-val-per-class``, else the setting ``ATCON_FINETUNE_MIN_VAL_PER_CLASS``."""
    if args.min_val_per_class is not None:
        if args.min_val_per_class < 1:
            raise ValueError(
                f"--min-val-per-class must be at least 1, got {args.min_val_per_class}"
            )
        return int(args.min_val_per_class)
    from worker.settings import get_settings

    return get_settings().finetune_min_val_per_class


def work_dir(args: argparse.Namespace) -> Path:
    """``--work-dir``, else ``OUT.work`` beside the output."""
    if args.work_dir is not None:
        return Path(args.work_dir)
    out = Path(args.out)
    return out.with_name(out.name + ".work")


def checkpointing(args: argparse.Namespace) -> Checkpointing | None:
    """The run's periodic training checkpoints and ``--resume`` (:mod:`models.resume`)."""
    from models.resume import Checkpointing

    if args.save_every < 0:
        raise ValueError(f"--save-every must be 0 or more, got {args.save_every}")
    if args.save_every == 0 and not args.resume:
        return None
    every = args.save_every or 1_000_000_000  # resuming without saving again
    return Checkpointing(work_dir(args), every_steps=every, resume=args.resume)


def finish_run(args: argparse.Namespace) -> None:
    """Remove the run's training checkpoints once it has ended (its output is written)."""
    import shutil

    shutil.rmtree(work_dir(args), ignore_errors=True)


def log_path(args: argparse.Namespace) -> Path:
    if args.log is not None:
        return Path(args.log)
    out = Path(args.out)
    return out.with_name(out.name + ".log.jsonl")


def print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, default=str))  # noqa: T201 - the command's output


def run_guarded(body: Any) -> int:
    """Run ``body()``; turn the project's named errors into one log line and exit code 1."""
    from models._exceptions import AtconError
    from worker import WorkerError

    try:
        return int(body())
    except (AtconError, WorkerError, ValueError) as exc:
        logger.error("%s", exc)
        return 1
    finally:
        sys.stdout.flush()
