"""Benchmark: the scoring step alone, as detection used to run it and as it runs now.

ResNet-18 at 224 px, batch 16, one PyTorch thread (what detection gives the model
on a 2-core CPU), random weights with batch-norm statistics far from the identity:

* baseline: the model as trained, channels-last, under bfloat16 autocast (how
  detection scored before :mod:`models.inference`);
* folded: :func:`models.inference.prepare_for_inference` (batch norms folded into
  the convolutions, bfloat16 weights, channels-last), eager;
* compiled: the folded model through :func:`worker.detection.compiled.compile_scorer`.

Variants run in alternation, batch by batch, so a noisy neighbour slows all alike;
the median batch time gives images/s. Each variant's probabilities are compared
with float32 on the same frames (largest absolute difference), so speed is never
bought with answers. Where the CPU has no native bfloat16, float32 is used
throughout (say so with ``--precision float32``).

    python -m bench.scoring --json bench/out/scoring.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger("bench.scoring")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15, help="batches per variant")
    parser.add_argument("--precision", choices=("auto", "bfloat16", "float32"), default="auto")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variant")
    parser.add_argument("--json", type=Path, default=None)
    return parser


def _model(arch: str) -> torch.nn.Module:
    from models.backbones import build_backbone

    torch.manual_seed(0)
    model = build_backbone(arch, 4)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    from models.inference import prepare_for_inference
    from worker.detection.compiled import compile_scorer
    from worker.detection.detector import cpu_has_native_bfloat16

    precision = args.precision
    if precision == "auto":
        precision = "bfloat16" if cpu_has_native_bfloat16() else "float32"
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32

    model = _model(args.arch)
    shape = (args.batch_size, 3, args.input_size, args.input_size)
    frames = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    x32 = frames.contiguous(memory_format=torch.channels_last)
    xd = x32.to(dtype)
    baseline_model = model.to(memory_format=torch.channels_last)
    folded = prepare_for_inference(model, dtype=dtype, channels_last=True)

    def baseline() -> Tensor:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            return baseline_model(x32)

    variants: dict[str, Callable[[], Tensor]] = {
        "baseline": baseline,
        "folded": lambda: folded(xd),
    }
    compile_s = None
    if not args.no_compile:
        started = time.perf_counter()
        compiled = compile_scorer(folded, xd)
        compile_s = time.perf_counter() - started
        if compiled is None:
            raise SystemExit("compiling failed; see the warning above (or pass --no-compile)")
        variants["compiled"] = lambda: compiled(xd)

    with torch.inference_mode():
        reference = model(frames).float().softmax(dim=1)
        deviation = {
            name: (run().float().softmax(dim=1) - reference).abs().max().item()
            for name, run in variants.items()
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for run in variants.values():
            run()
        for _ in range(args.rounds):
            for name, run in variants.items():
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)

    rate = {name: args.batch_size / statistics.median(t) for name, t in times.items()}
    results: dict[str, Any] = {
        "arch": args.arch,
        "input_size": args.input_size,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "precision": precision,
        "images_per_s": rate,
        "over_baseline": {name: r / rate["baseline"] for name, r in rate.items()},
        "max_probability_deviation_from_float32": deviation,
        "compile_s": compile_s,
    }
    width = max(len(name) for name in variants)
    logger.info(
        "%s @ %d px, batch %d, %d thread(s), %s",
        args.arch,
        args.input_size,
        args.batch_size,
        args.threads,
        precision,
    )
    for name in variants:
        logger.info(
            "%-*s  %7.1f img/s  %5.2fx of baseline  max |p - p_float32| %.4f",
            width,
            name,
            rate[name],
            results["over_baseline"][name],
            deviation[name],
        )
    if compile_s is not None:
        logger.info("compiling took %.1f s (Inductor's disk cache may have helped)", compile_s)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
