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

logger = logging.getLogger(__name__)

SCHEDULES = ("alternating", "combined", "unsupervised")


def add_finetune_options(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    """ATCON options; ``prefix`` ("atcon-") keeps ``train``'s supervised options apart."""
    group = parser.add_argument_group("ATCON fine-tuning")
    group.add_argument(
        f"--{prefix}steps",
        dest="ft_steps",
        type=int,
        default=200,
        help="fine-tuning steps (default 200)",
    )
    group.add_argument(
        f"--{prefix}lr",
        dest="ft_lr",
        type=float,
        default=1e-4,
        help="fine-tuning learning rate (default 1e-4)",
    )
    group.add_argument(
        "--unlabeled-batch-size",
        type=int,
        default=16,
        help="unlabeled images per ATCON step (default 16)",
    )
    group.add_argument(
        "--alpha",
        type=float,
        default=1.0,
        help="alternating: weight of |L| in the labeled-step probability "
        "alpha|L|/(alpha|L|+|U|); combined: weight of the ATCON term (default 1)",
    )
    group.add_argument(
        "--atcon-weight", type=float, default=1.0, help="multiplier of the ATCON loss (default 1)"
    )
    group.add_argument(
        "--atcon-warmup",
        type=int,
        default=0,
        metavar="STEPS",
        help="ramp the ATCON weight linearly over this many steps (default 0)",
    )
    group.add_argument(
        "--balance-gradients",
        action="store_true",
        help="cap the ATCON gradient norm at --balance-ratio x the supervised one",
    )
    group.add_argument("--balance-ratio", type=float, default=1.0)
    group.add_argument(
        "--preserve-weight",
        type=float,
        default=0.0,
        help="weight of KL(starting model || current) on unlabeled batches",
    )
    group.add_argument("--mask-intensity", type=float, default=8.0)
    group.add_argument("--gb-normalization", choices=("none", "max"), default="none")
    group.add_argument("--similarity", choices=("pearson", "ssim"), default="pearson")
    group.add_argument(
        "--method", choices=("guided_backprop", "integrated_gradients"), default="guided_backprop"
    )
    group.add_argument(
        "--layer",
        default=None,
        help="Grad-CAM layer by module name, e.g. layer3 (default: automatic)",
    )
    group.add_argument(
        "--no-collapse-guard",
        action="store_true",
        help="do not stop when predictions on unlabeled frames collapse",
    )
    group.add_argument("--collapse-window", type=int, default=4, metavar="BATCHES")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="labeled frames held out to choose thresholds (default 0.2)",
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


def finetune_config(args: argparse.Namespace, schedule: str, batch_size: int) -> FinetuneConfig:
    from models.finetune import FinetuneConfig
    from models.guards import CollapseGuardConfig

    return FinetuneConfig(
        schedule=schedule,
        steps=args.ft_steps,
        lr=args.ft_lr,
        batch_size=batch_size,
        unlabeled_batch_size=args.unlabeled_batch_size,
        alpha=args.alpha,
        atcon_weight=args.atcon_weight,
        atcon_warmup_steps=args.atcon_warmup,
        balance_gradients=args.balance_gradients,
        balance_ratio=args.balance_ratio,
        preserve_weight=args.preserve_weight,
        mask_intensity=args.mask_intensity,
        gb_normalization=args.gb_normalization,
        similarity=args.similarity,
        method=args.method,
        layer=args.layer,
        seed=args.seed,
        guard=CollapseGuardConfig(enabled=not args.no_collapse_guard, window=args.collapse_window),
    )


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
    from worker._exceptions import WorkerError

    try:
        return int(body())
    except (AtconError, WorkerError, ValueError) as exc:
        logger.error("%s", exc)
        return 1
    finally:
        sys.stdout.flush()
