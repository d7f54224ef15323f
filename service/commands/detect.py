"""``atcon detect VIDEO --checkpoint model.pt --out results/``: find the events in a video.

Prints the results' ``events.json`` and leaves, for every event, its Grad-CAM
overlay, Guided Backprop map and masked frame as PNG under ``results/maps/``.
Input that is not a decodable video, a checkpoint that does not fit, or an existing
results folder end with a one-line reason and exit status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def _threshold(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"threshold must look like CLASS=0.6, got {text!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", type=Path, help="the video file")
    parser.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="results folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--video-id", help="id recorded in events.json (default: file stem)")
    parser.add_argument("--model-version", help="model version recorded in events.json")
    parser.add_argument("--fps", type=float, default=2.0, help="frames sampled per second")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    parser.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16", "float16", "int8"),
        default="auto",
        help="precision of the scoring model (maps are always float32)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the scoring model first (costs seconds to a minute; pays back "
        "on long videos)",
    )
    parser.add_argument(
        "--threshold",
        type=_threshold,
        action="append",
        default=[],
        metavar="CLASS=P",
        help="override a class's onset threshold (repeatable)",
    )
    parser.add_argument("--offset-ratio", type=float, default=0.8, help="offset / onset")
    parser.add_argument("--min-duration", type=float, default=1.0, help="shortest event (s)")
    parser.add_argument("--merge-gap", type=float, default=1.0, help="merge gaps shorter (s)")
    parser.add_argument("--padding", type=float, default=0.0, help="widen events by (s)")
    parser.add_argument("--no-maps", action="store_true", help="skip the attention maps")
    parser.add_argument(
        "--skip-nonref",
        action="store_true",
        help="decoder skips frames nothing refers to (B-frames): faster, samples up to a "
        "few frames early",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="PyTorch intra-op threads (default: ATCON_TORCH_THREADS; 0: the cores the "
        "decoder leaves free, measured)",
    )
    parser.add_argument(
        "--gating",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="motion gating: score only samples that changed (see worker.detection.motion)",
    )
    parser.add_argument(
        "--gate-max-interval",
        type=float,
        default=4.0,
        help="with gating, the longest time a sample may go unscored (s)",
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models import CheckpointError
    from worker import ResultsExistError, VideoDecodeError
    from worker.detection.detector import DetectionConfig, Detector
    from worker.detection.motion import GateConfig
    from worker.runtime.threads import configure_torch_threads

    threads = args.torch_threads
    if threads is None:
        from worker.settings import get_settings

        threads = get_settings().torch_threads
    if threads < 0:
        logger.error("--torch-threads must be 0 (measured) or positive")
        return 2
    configure_torch_threads(threads)
    try:
        config = DetectionConfig(
            sample_fps=args.fps,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            thresholds=dict(args.threshold),
            offset_ratio=args.offset_ratio,
            min_duration_s=args.min_duration,
            merge_gap_s=args.merge_gap,
            padding_s=args.padding,
            maps=not args.no_maps,
            skip_nonref=args.skip_nonref,
            compile=args.compile,
            gating=GateConfig(max_interval_s=args.gate_max_interval) if args.gating else None,
        )
        detector = Detector(args.checkpoint, config=config, model_version=args.model_version)
        with tqdm(total=100, desc="detecting", unit="%", disable=not sys.stderr.isatty()) as bar:

            def progress(fraction: float) -> None:
                bar.update(round(100 * fraction) - bar.n)

            document = detector.detect(
                args.video,
                args.out,
                video_id=args.video_id,
                progress=progress,
                overwrite=args.overwrite,
            )
    except (VideoDecodeError, CheckpointError, ResultsExistError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("results in %s (overlays under %s)", args.out, args.out / "maps")
    print(json.dumps(document, indent=2))  # noqa: T201 - the command's output
    return 0
