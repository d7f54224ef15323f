"""``atcon evaluate``: F1, mAP, attention consistency and weak-localisation mIoU of a model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import _training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument(
        "--labeled",
        type=Path,
        required=True,
        metavar="DIR",
        help="directory with labels.csv (path,labels) and the frames",
    )
    parser.add_argument(
        "--boxes",
        type=Path,
        default=None,
        help="boxes.csv (path,label,x0,y0,x1,y1; paths relative to --labeled)",
    )
    parser.add_argument(
        "--cam-threshold",
        type=float,
        default=0.5,
        help="Grad-CAM level (of its maximum) that marks the located region",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the figures as JSON (keys macro_f1, map, per_class_f1, consistency, miou)",
    )


def _table(result: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        f"images                 {result['images']}",
        f"macro-F1               {fmt(result['macro_f1'])}",
        f"mAP                    {fmt(result['map'])}",
        f"attention consistency  {fmt(result['consistency'])}",
        f"weak-localisation mIoU {fmt(result['miou'])}",
        "per-class F1:",
    ]
    lines += [f"  {name:<20} {fmt(v)}" for name, v in result["per_class_f1"].items()]
    return "\n".join(lines)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from models.atomic import atomic_write_json

    atomic_write_json(path, data, sort_keys=False)


def run(args: argparse.Namespace) -> int:
    return _training.run_guarded(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from worker.training.adapters import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint,
        args.labeled,
        boxes_csv=args.boxes,
        cam_threshold=args.cam_threshold,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(_table(result))  # noqa: T201 - the command's output
    if args.json is not None:
        keys = ("macro_f1", "map", "per_class_f1", "consistency", "miou")
        _write_json(args.json, {key: result[key] for key in keys})
    return 0
