"""``atcon demo``: the main job end to end on the embedded default, no server, no GPU.

1. synthesise ward videos with ground truth (``synthetic.synth``): two for training,
   one held out;
2. train a small frame classifier on the training videos' labeled frames (or reuse
   the one cached in the output folder from an earlier run with the same settings);
3. detect the events of the held-out video with their attention maps
   (``worker.detection.detector``), exactly as a detection worker does;
4. print the events and the event-level F1 against the ground truth, and say where
   the overlays are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: everything that decides the cached model; a change retrains
_RECIPE: dict[str, Any] = {
    "train_videos": [{"seed": 1, "seconds": 90.0}, {"seed": 2, "seconds": 90.0}],
    "size": [160, 120],
    "frames_fps": 2.0,
    "arch": "resnet18_slim",
    "arch_kwargs": {"width": 8},
    "image_size": 48,
    "steps": 300,
    "batch_size": 32,
    "lr": 2e-3,
    "version": 2,  # 2: the ward has a wall lamp
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    parser.add_argument(
        "--seconds", type=float, default=120.0, help="length of the held-out video (s)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the held-out video")
    parser.add_argument("--retrain", action="store_true", help="ignore the cached model")
    parser.add_argument(
        "--train-steps",
        type=int,
        default=_RECIPE["steps"],
        help="training steps of the demo model (fewer: faster, worse)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _recipe_key(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


class _Bar:
    """A tqdm bar fed with fractions in [0, 1], or nothing when progress is off."""

    def __init__(self, description: str, enabled: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=100, desc=description, unit="%", disable=not enabled)

    def __call__(self, fraction: float) -> None:
        self._bar.update(max(0, round(100 * fraction) - self._bar.n))

    def close(self) -> None:
        self(1.0)
        self._bar.close()


def _merge_labeled(sources: list[Path], target: Path) -> Path:
    """Combine several synthetic ``frames/`` folders into one training folder."""
    import csv

    if target.exists():
        shutil.rmtree(target)
    (target / "images").mkdir(parents=True)
    rows: list[tuple[str, str]] = []
    classes: list[str] = []
    for index, source in enumerate(sources):
        classes = (source / "classes.txt").read_text().split()
        with open(source / "labels.csv", newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                name = f"v{index}-{Path(row['path']).name}"
                shutil.copyfile(source / row["path"], target / "images" / name)
                rows.append((f"images/{name}", row["labels"]))
    with open(target / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "labels"])
        writer.writerows(rows)
    (target / "classes.txt").write_text("\n".join(classes) + "\n")
    return target


def _model(out: Path, recipe: dict[str, Any], retrain: bool, progress: bool) -> tuple[Path, bool]:
    """The cached demo model, trained first when missing or stale."""
    from models.training import SupervisedConfig
    from synthetic.synth import SynthConfig, synthesize
    from worker.training.adapters import DataOptions, train_model

    checkpoint = out / "model.pt"
    key_file = out / "model.key"
    key = _recipe_key(recipe)
    fresh = key_file.is_file() and key_file.read_text().strip() == key
    if not retrain and checkpoint.is_file() and fresh:
        return checkpoint, True
    width, height = recipe["size"]
    frame_dirs = []
    for spec in recipe["train_videos"]:
        bar = _Bar(f"synthesise training video {spec['seed']}", progress)
        clip = synthesize(
            out / "train" / f"seed{spec['seed']}",
            SynthConfig(
                seconds=spec["seconds"],
                width=width,
                height=height,
                seed=spec["seed"],
                frames_fps=recipe["frames_fps"],
            ),
            progress=bar,
        )
        bar.close()
        assert clip.frames_dir is not None
        frame_dirs.append(clip.frames_dir)
    labeled = _merge_labeled(frame_dirs, out / "train" / "labeled")
    logger.info("training %s on %s", recipe["arch"], labeled)
    train_model(
        labeled,
        checkpoint,
        arch=recipe["arch"],
        arch_kwargs=dict(recipe["arch_kwargs"]),
        config=SupervisedConfig(
            max_steps=recipe["steps"], batch_size=recipe["batch_size"], lr=recipe["lr"]
        ),
        data=DataOptions(image_size=recipe["image_size"], val_fraction=0.2),
        multi_label=True,
        progress=progress,
    )
    key_file.write_text(key + "\n")
    return checkpoint, False


def run(args: argparse.Namespace) -> int:
    from models.event_metrics import evaluate_events
    from synthetic.synth import SynthConfig, load_ground_truth, synthesize
    from worker.detection.detector import DetectionConfig, Detector
    from worker.detection.motion import GateConfig
    from worker.runtime.threads import configure_torch_threads
    from worker.settings import get_settings

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    started = time.monotonic()

    if args.train_steps < 1:
        raise SystemExit("atcon demo: --train-steps must be at least 1")
    recipe = {**_RECIPE, "steps": args.train_steps}
    checkpoint, cached = _model(out, recipe, args.retrain, progress)
    trained_at = time.monotonic()
    width, height = _RECIPE["size"]
    bar = _Bar("synthesise the held-out video", progress)
    held_out = synthesize(
        out / "held-out",
        SynthConfig(seconds=args.seconds, width=width, height=height, seed=args.seed),
        frames=False,
        progress=bar,
    )
    bar.close()
    results = out / "results"
    if results.exists():
        shutil.rmtree(results)
    configure_torch_threads(get_settings().torch_threads)
    detector = Detector(checkpoint, config=DetectionConfig(gating=GateConfig()))
    bar = _Bar("detect events", progress)
    document = detector.detect(held_out.video, results, video_id="demo", progress=bar)
    bar.close()
    metrics = evaluate_events(document["events"], load_ground_truth(held_out.ground_truth))
    f1 = {f"{tiou:g}": row["f1"] for tiou, row in metrics.f1.items()}
    summary: dict[str, Any] = {
        "video": str(held_out.video),
        "model": {"checkpoint": str(checkpoint), "cached": cached},
        "events": [
            {
                key: event[key]
                for key in ("id", "label", "start_s", "end_s", "score", "attention_consistency")
                if key in event
            }
            for event in document["events"]
        ],
        "ground_truth_events": len(held_out.events),
        "event_f1": f1,
        "event_map": metrics.mean_ap,
        "overlays": str(results / "maps"),
        "seconds": {
            "model": round(trained_at - started, 1),
            "total": round(time.monotonic() - started, 1),
        },
    }
    logger.info(
        "%d events; event F1 at tIoU 0.5: %.3f; overlays in %s",
        len(summary["events"]),
        f1.get("0.5", float("nan")),
        results / "maps",
    )
    print(json.dumps(summary, indent=2))  # noqa: T201 - the command's output
    return 0
