"""``atcon train``: train a frame classifier on labeled frames, optionally with ATCON.

Runs data-parallel when started by ``torchrun --nproc_per_node=N -m service.cli train``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from . import _training

logger = logging.getLogger(__name__)


def _arch_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--labeled",
        type=Path,
        required=True,
        metavar="DIR",
        help="directory with labels.csv (path,labels) and the frames",
    )
    parser.add_argument(
        "--unlabeled",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory of unlabeled JPEG/PNG frames (for --atcon)",
    )
    parser.add_argument(
        "--arch",
        default="resnet18",
        help="resnet18, resnet34, resnet50, densenet121, efficientnet_b0, "
        "mobilenet_v2 or resnet18_slim (default resnet18)",
    )
    parser.add_argument(
        "--arch-option",
        type=_arch_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor option, e.g. width=16",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="local ImageNet state_dict file (nothing is downloaded)",
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument(
        "--atcon",
        choices=("off", "alternating", "combined"),
        default="off",
        help="ATCON fine-tuning after supervised training (default off)",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=224, metavar="PX")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument(
        "--freeze-batchnorm",
        action="store_true",
        help="keep BatchNorm statistics fixed during supervised training",
    )
    task = parser.add_mutually_exclusive_group()
    task.add_argument(
        "--multi-label",
        dest="multi_label",
        action="store_true",
        default=None,
        help="sigmoid + BCE (default when a frame has 0 or 2+ labels)",
    )
    task.add_argument(
        "--single-label",
        dest="multi_label",
        action="store_false",
        help="softmax + CE (default when every frame has exactly one label)",
    )
    _training.add_common_options(parser)
    _training.add_finetune_options(parser, prefix="atcon-")


def run(args: argparse.Namespace) -> int:
    return _training.run_guarded(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from models.distributed import init_from_environment, shutdown
    from models.training import SupervisedConfig
    from worker.training.adapters import DataOptions, train_model

    if args.atcon != "off" and args.unlabeled is None:
        raise ValueError("--atcon needs --unlabeled DIR")
    context = init_from_environment(args.device)
    try:
        report = train_model(
            args.labeled,
            args.out,
            arch=args.arch,
            arch_kwargs=dict(args.arch_option),
            weights=args.weights,
            config=SupervisedConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                weight_decay=args.weight_decay,
                freeze_batchnorm=args.freeze_batchnorm,
                seed=args.seed,
            ),
            data=DataOptions(
                image_size=args.image_size,
                val_fraction=args.val_fraction,
                augment=args.augment,
                split_seed=args.seed,
            ),
            unlabeled_dir=args.unlabeled if args.atcon != "off" else None,
            finetune=(
                _training.finetune_config(args, args.atcon, args.batch_size)
                if args.atcon != "off"
                else None
            ),
            multi_label=args.multi_label,
            min_val_per_class=_training.min_val_per_class(args),
            log_path=_training.log_path(args),
            progress=not args.no_progress,
            context=context,
            checkpointing=_training.checkpointing(args),
        )
    finally:
        shutdown(context)
    if context.is_main:
        _training.finish_run(args)
        _training.print_json(
            {"out": report.out, "sha256": report.sha256, "metrics": report.metrics}
        )
    if report.atcon_error:
        logger.error("ATCON fine-tuning stopped; %s holds the supervised model", args.out)
        return 1
    return 0
