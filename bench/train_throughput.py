"""Training throughput: images per second of a supervised step and of an ATCON step.

Both steps run in the same process on the same model and data, so their ratio is
what to read: an ATCON step (three forward and backward passes with double
backward, BatchNorm frozen) against a plain cross-entropy step. Each step is the
full optimiser step: loss, backward, Adam.

    python bench/train_throughput.py                          # ResNet-18, 224 px, batch 16, CPU
    python bench/train_throughput.py --device cuda --arch resnet50 --size 256 --batch 32
    python bench/train_throughput.py --size 64 --batch 4 --steps 2 --json out.json   # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.atcon import atcon_loss
from models.backbones import build_backbone
from models.training import freeze_batchnorm


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - started)
    return times


def measure(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_backbone(args.arch, args.classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    targets = torch.randint(0, args.classes, (args.batch,), device=device)

    def supervised() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), targets).backward()
        optimizer.step()

    def atcon() -> None:
        optimizer.zero_grad(set_to_none=True)
        atcon_loss(model, images).backward()
        optimizer.step()

    model.train()
    sup_times = _time(supervised, args.steps, args.warmup, device)
    model.train()
    freeze_batchnorm(model)
    atcon_times = _time(atcon, args.steps, args.warmup, device)
    rows = {}
    for name, times in (("supervised", sup_times), ("atcon", atcon_times)):
        median = statistics.median(times)
        rows[name] = {
            "median_step_s": median,
            "images_per_s": args.batch / median,
            "steps": len(times),
        }
    memory = None
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) / 2**20
    return {
        "arch": args.arch,
        "size": args.size,
        "batch": args.batch,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
        "atcon_cost_ratio": rows["atcon"]["median_step_s"] / rows["supervised"]["median_step_s"],
        "peak_cuda_mib": memory,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per kind")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args)
    print(
        f"{result['arch']} {result['size']}px batch {result['batch']} on {result['device_name']}"
        f" ({result['threads']} threads)"
    )
    print(f"{'step':<11} {'median s':>9} {'images/s':>9}")
    for name, row in result["rows"].items():
        print(f"{name:<11} {row['median_step_s']:>9.3f} {row['images_per_s']:>9.1f}")
    print(f"an ATCON step costs {result['atcon_cost_ratio']:.1f}x a supervised step")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
