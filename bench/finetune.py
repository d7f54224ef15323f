"""The nightly fine-tune job end to end, against supervised training on the same frames.

Fills a frame pool with ``--frames`` synthetic ward frames (a share of them labeled),
then runs the real fine-tune job (:func:`worker.finetune.job.finetune_job` through a
:class:`worker.runtime.jobs.Worker`: export, ATCON fine-tuning for one pass over the
unlabeled frames, evaluation of both models, registration, gate) and reports its
wall time and the training phase's frames per second. The baseline, in the same
run, is plain supervised training of the same model on the same frames (same batch
size, same number of images), so the ratio says what ATCON's three passes with
double backward cost.

    python bench/finetune.py                                   # ResNet-18, 224 px, 2,000 frames
    python bench/finetune.py --arch resnet50 --size 256 --batch 32 --device cuda
    python bench/finetune.py --frames 64 --size 64 --json bench/out/finetune.json   # smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.backbones import build_backbone
from models.checkpoint import CheckpointInfo, save_checkpoint
from synthetic.synth import SynthConfig, synthesize
from worker.finetune.request import FinetuneRequest, queue_finetune
from worker.pool.frames import FramePool
from worker.queue.memory import MemoryQueue
from worker.runtime.jobs import FINETUNE, Worker
from worker.settings import Settings
from worker.storage import Storage

logger = logging.getLogger("bench.finetune")


def _fill_pool(pool: FramePool, frames: int, labeled_share: float, workdir: Path) -> list[str]:
    """Synthetic ward frames into the pool; every ``1/labeled_share``-th one labeled."""
    import csv

    seconds = frames / 2.0 + 1.0  # two labeled frames per second of video
    clip = synthesize(workdir, SynthConfig(seconds=seconds, fps=6, frames_fps=2.0))
    assert clip.frames_dir is not None
    classes = (clip.frames_dir / "classes.txt").read_text().split()
    with open(clip.frames_dir / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:frames]
    every = max(1, round(1 / labeled_share)) if labeled_share > 0 else 0
    for i, row in enumerate(rows):
        record = pool.add_image_bytes((clip.frames_dir / row["path"]).read_bytes())
        if every and i % every == 0:
            pool.set_labels(record.frame_id, [x for x in row["labels"].split("|") if x], classes)
    return classes


def _supervised_fps(
    arch: str, classes: int, size: int, batch: int, images: int, device: str
) -> float:
    """Frames per second of plain supervised steps over ``images`` frames (the baseline)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = build_backbone(arch, classes).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.rand(batch, classes, device=device).round()
    steps = max(1, images // batch)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()

    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="atcon-bench-finetune-") as tmp:
        root = Path(tmp)
        data = root / "data"
        storage = Storage(data)
        storage.ensure_layout()
        pool = FramePool(storage.frames, args.size, 0.3)
        started = time.perf_counter()
        classes = _fill_pool(pool, args.frames, args.labeled_share, root / "synth")
        fill_s = time.perf_counter() - started
        torch.manual_seed(0)
        checkpoint = save_checkpoint(
            root / "model.pt",
            build_backbone(args.arch, len(classes)),
            CheckpointInfo(arch=args.arch, class_names=classes, input_size=args.size),
        )
        del checkpoint
        settings = Settings(
            data_dir=data,
            checkpoint=root / "model.pt",
            dev=True,
            finetune_batch_size=args.batch,
            device=args.device,
            visibility_timeout_s=3600,
        )
        queue = MemoryQueue(settings)
        unlabeled = len(pool.records(labeled=False))
        steps = max(1, unlabeled // args.batch)
        job_id = queue_finetune(queue, FinetuneRequest(steps=steps, batch_size=args.batch))
        phases: dict[str, float] = {}
        original = queue.set_progress

        def spy(lease: Any, fraction: float, detail: Any = None) -> bool:
            phase = (detail or {}).get("phase")
            if phase and phase not in phases:
                phases[phase] = time.perf_counter()
            return original(lease, fraction, detail)

        queue.set_progress = spy  # type: ignore[method-assign]
        worker = Worker(queue, storage, settings, FINETUNE, name="bench")
        job_started = time.perf_counter()
        worker.run(threading.Event(), max_jobs=1, burst=True)
        job_s = time.perf_counter() - job_started
        job = queue.get(job_id)
        if job.status != "done":
            raise SystemExit(f"the fine-tune job failed: {job.error}")
        training_s = phases.get("evaluating", time.perf_counter()) - phases.get(
            "training", job_started
        )
        # the first training report comes after the first step: add one step's share
        train_fps = steps * args.batch / training_s * steps / max(1, steps - 1)
        baseline_fps = _supervised_fps(
            args.arch, len(classes), args.size, args.batch, steps * args.batch, args.device
        )
        return {
            "arch": args.arch,
            "size": args.size,
            "batch": args.batch,
            "device": args.device,
            "frames": args.frames,
            "unlabeled": unlabeled,
            "labeled": args.frames - unlabeled,
            "steps": steps,
            "pool_fill_s": round(fill_s, 1),
            "nightly_job_wall_s": round(job_s, 1),
            "atcon_training_frames_per_s": round(train_fps, 2),
            "supervised_frames_per_s": round(baseline_fps, 2),
            "atcon_over_supervised": round(train_fps / baseline_fps, 3),
            "result": job.result,
            "torch_threads": torch.get_num_threads(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--labeled-share", type=float, default=0.1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    np.random.seed(0)
    figures = run(args)
    for key, value in figures.items():
        print(f"{key:>30}: {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
