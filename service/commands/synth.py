"""``atcon synth``: write synthetic ward videos, their ground truth and labeled frames.

Prints a JSON summary: the videos, their ground-truth files and events, and the
labeled-frames folder (``labels.csv`` + ``classes.txt``) for ``atcon train``.
``--shift night --severity 4`` (or ``--shift night:4,camera:1``) films the same
script through a deployment shift (:mod:`synthetic.shifts`); ``--masks`` also writes
each video's object masks (``<name>.masks.npz``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, got {text!r}") from None
    return width, height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("synth-output"), help="output folder")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each video")
    parser.add_argument("--fps", type=float, default=15.0, help="frame rate of the videos")
    parser.add_argument("--size", type=_size, default=(320, 240), help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first video")
    parser.add_argument("--videos", type=int, default=1, help="how many videos (seeds seed..)")
    parser.add_argument("--name", default="ward", help="file name stem of the videos")
    parser.add_argument(
        "--frames-fps", type=float, default=2.0, help="labeled frames per second (0: none)"
    )
    parser.add_argument("--noise", type=float, default=5.0, help="camera noise (std, 0-255)")
    parser.add_argument("--crf", type=int, default=26, help="H.264 quality (lower is better)")
    parser.add_argument(
        "--shift",
        action="append",
        default=[],
        metavar="NAME[:SEVERITY]",
        help="a deployment shift: night, camera, room, blur or compression; repeat or "
        "comma-separate to combine (night,camera:1)",
    )
    parser.add_argument(
        "--severity",
        type=int,
        default=3,
        choices=range(1, 6),
        metavar="1..5",
        help="severity of the shifts that name none (default 3)",
    )
    parser.add_argument(
        "--masks", action="store_true", help="also write the object masks (<name>.masks.npz)"
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from synthetic.shifts import parse_shifts
    from synthetic.synth import SynthConfig, synthesize, write_labeled_frames

    if args.videos < 1:
        raise SystemExit("--videos must be at least 1")
    try:
        shifts = parse_shifts(args.shift, args.severity)
    except ValueError as exc:
        raise SystemExit(f"atcon synth: --shift: {exc}") from None
    width, height = args.size
    results = []
    show = sys.stderr.isatty()
    with tqdm(total=args.videos, desc="synthesising", unit="video", disable=not show) as bar:
        for k in range(args.videos):
            config = SynthConfig(
                seconds=args.seconds,
                fps=args.fps,
                width=width,
                height=height,
                seed=args.seed + k,
                noise=args.noise,
                crf=args.crf,
                frames_fps=args.frames_fps,
                shifts=shifts,
            )
            name = args.name if args.videos == 1 else f"{args.name}-{k}"
            results.append(synthesize(args.out, config, name=name, frames=False, masks=args.masks))
            bar.update(1)
    frames_dir = None
    count = 0
    if args.frames_fps > 0:
        frames_dir = args.out / "frames"
        count = write_labeled_frames(
            [(r.video, r.events) for r in results], frames_dir, fps=args.frames_fps
        )
    summary = {
        "videos": [
            {
                "video": str(r.video),
                "ground_truth": str(r.ground_truth),
                "masks": str(r.masks) if r.masks else None,
                "events": [e.__dict__ for e in r.events],
            }
            for r in results
        ],
        "frames_dir": str(frames_dir) if frames_dir else None,
        "labeled_frames": count,
        "shifts": [str(s) for s in shifts],
    }
    logger.info("wrote %d video(s) and %d labeled frames to %s", len(results), count, args.out)
    print(json.dumps(summary, indent=2))  # noqa: T201 - the command's output
    return 0
