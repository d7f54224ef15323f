"""The GPU check: one script, under 10 minutes, for the day a CUDA device is lent.

It runs, in order, and stops at the first failure (naming the check, exit status 1):

1. ``maps``: Grad-CAM and Guided Backprop of a seeded ResNet-18 on the device against
   the same maps on the CPU (float32, TF32 off), within ``--map-tolerance`` of each
   map's peak;
2. ``detect``: :mod:`bench.video` on a generated 10-minute ward video (one minute
   synthesised, remuxed ten times: synthesising ten would take minutes of CPU):
   detection (CUDA: the scoring model under autocast, bfloat16 or float16) against
   decode-only on the same file; the detect / decode-only ratio and the real-time factor;
3. ``atcon_step``: :mod:`bench.atcon_step` for ResNet-50 at 256 px, batch 32: one
   batched ATCON loss-and-backward step against the per-image loop (and the batched
   step under bfloat16 autocast);
4. ``finetune``: :func:`models.finetune.finetune_atcon` (unsupervised schedule)
   frames per second in one process;
5. ``distributed``: the same fine-tune in two ``torch.distributed`` processes sharing
   the one device: NCCL when it allows two ranks on one device, else gloo (the table
   says which, and why); the replicas must end identical.

The output is a JSON table on stdout (``rows``: check, figure, value), also written
to ``--json``; the sub-benchmarks' own tables and the log go to stderr.

Without CUDA it exits with status 2 and says so, unless ``--allow-cpu`` is given;
``--tiny`` shrinks every size (a 6-second video, ResNet-18 at 64 px, batch 2) so the
CPU dry run takes about a minute: ``tests/bench`` runs ``--allow-cpu --tiny`` so the
script cannot rot.

    python -m bench.gpu_check --json bench/out/gpu_check.json     # on a CUDA machine
    python -m bench.gpu_check --allow-cpu --tiny                  # the dry run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

logger = logging.getLogger("bench.gpu_check")

#: exit status when no CUDA device is present and --allow-cpu was not given
NO_DEVICE = 2


@dataclass(frozen=True)
class Sizes:
    """Every size the checks use; ``full`` on a device, ``tiny`` for the CPU dry run."""

    video_minutes: float
    detect_arch: str
    detect_input: int
    detect_batch: int
    step_arch: str
    step_config: str
    step_repeats: int
    finetune_arch: str
    finetune_input: int
    finetune_batch: int
    finetune_steps: int


FULL = Sizes(10.0, "resnet18", 224, 32, "resnet50", "32x256", 3, "resnet50", 224, 32, 20)
TINY = Sizes(0.1, "resnet18", 64, 4, "resnet18", "2x64", 1, "resnet18", 64, 2, 2)


class CheckFailed(Exception):
    """A check failed; the message says which and why."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run on the CPU when there is no CUDA device (a dry run; use with --tiny)",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU dry run)")
    parser.add_argument(
        "--map-tolerance",
        type=float,
        default=0.02,
        help="largest difference between device and CPU maps, as a fraction of each "
        "map's peak (default: %(default)s)",
    )
    parser.add_argument(
        "--grad-tolerance",
        type=float,
        default=0.05,
        help="largest relative L2 difference between the batched ATCON step's gradients "
        "and the per-image loop's (default: %(default)s)",
    )
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "out" / "cache")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    # one rank of the distributed check (started by this script)
    parser.add_argument("--dist-rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dist-backend", help=argparse.SUPPRESS)
    parser.add_argument("--dist-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dist-device", help=argparse.SUPPRESS)
    parser.add_argument("--dist-out", type=Path, help=argparse.SUPPRESS)
    return parser


# -- the checks ---------------------------------------------------------------------------


def check_maps(device: str, tolerance: float) -> dict[str, Any]:
    """Grad-CAM and Guided Backprop on ``device`` against the CPU, float32."""
    import torch

    from models.attention import gradcam_and_guided_backprop
    from models.backbones import build_backbone

    torch.manual_seed(0)
    model = build_backbone("resnet18", 4).eval()
    images = torch.randn(4, 3, 128, 128)
    targets = torch.tensor([0, 1, 2, 3])
    cpu_cam, cpu_gb, _ = gradcam_and_guided_backprop(model, images, targets)
    model.to(device)
    # full float32 on the device too: the check is of the maps, not of TF32's rounding
    tf32 = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        cam, gb, _ = gradcam_and_guided_backprop(model, images.to(device), targets.to(device))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32[0]
        torch.set_float32_matmul_precision(tf32[1])

    def deviation(ref: torch.Tensor, other: torch.Tensor) -> float:
        ref, other = ref.flatten(1).float(), other.detach().cpu().flatten(1).float()
        scale = ref.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        return float(((ref - other).abs() / scale).max())

    figures = {
        "gradcam_max_dev": deviation(cpu_cam, cam),
        "guided_backprop_max_dev": deviation(cpu_gb, gb),
        "tolerance": tolerance,
    }
    worst = max(figures["gradcam_max_dev"], figures["guided_backprop_max_dev"])
    if not worst <= tolerance:  # also catches NaN
        raise CheckFailed(
            f"maps on {device} differ from the CPU's by {worst:.3g} of their peak "
            f"(tolerance {tolerance}): {figures}"
        )
    return figures


def check_detect(device: str, sizes: Sizes, cache: Path, workdir: Path) -> dict[str, Any]:
    """bench.video: detect against decode-only on a generated video."""
    from bench import video

    out = workdir / "video.json"
    minutes = sizes.video_minutes
    long_video = cache / f"ward-640x480-30fps-{minutes:g}min.mp4"  # video.make_video's name
    if minutes > 1 and not long_video.is_file():
        # synthesising 10 minutes takes minutes of CPU; one minute remuxed ten times
        # (bench.video's long-video machinery, no re-encoding) decodes and scores alike
        video.concatenate(video.make_video(cache, 1.0), round(minutes), long_video)
    argv = [
        "--minutes",
        f"{sizes.video_minutes:g}",
        "--long-minutes",
        "0",
        "--arch",
        sizes.detect_arch,
        "--input-size",
        str(sizes.detect_input),
        "--batch-size",
        str(sizes.detect_batch),
        "--precision",
        "auto",
        "--device",
        device,
        "--cache",
        str(cache),
        "--variants",
        "decode,detect",  # every sample scored: the device's own speed, no int8 copy
        "--json",
        str(out),
    ]
    _quietly(lambda: video.main(argv), "bench.video")
    result = json.loads(out.read_text())
    detect = result["variants"]["detect"]
    ran_on = result["rounds"][-1]["detect"]["device"]
    if ran_on.split(":")[0] != device.split(":")[0]:
        raise CheckFailed(f"detection ran on {ran_on}, not {device}")
    return {
        "video_minutes": sizes.video_minutes,
        "precision": detect["precision"],
        "detect_over_decode": detect["over_decode_median"],
        "realtime_factor": detect["realtime_factor"],
        "detect_s": detect["wall_s_median"],
        "decode_only_s": result["decode_only"]["wall_s_median"],
        "model_s": detect["timings_s"]["model"],
        "maps_s": detect["timings_s"]["maps"],
        "events": detect["events"],
    }


def check_atcon_step(device: str, sizes: Sizes, workdir: Path, tolerance: float) -> dict[str, Any]:
    """bench.atcon_step: the batched ATCON step against the per-image loop."""
    from bench import atcon_step

    out = workdir / "atcon_step.json"
    argv = [
        "--device",
        device,
        "--arch",
        sizes.step_arch,
        "--config",
        sizes.step_config,
        "--repeats",
        str(sizes.step_repeats),
        "--bf16",
        "--json",
        str(out),
    ]
    _quietly(lambda: atcon_step.main(argv), "bench.atcon_step")
    rows = {row["impl"]: row for row in json.loads(out.read_text())["rows"]}
    figures: dict[str, Any] = {"arch": sizes.step_arch, "config": sizes.step_config}
    for impl in ("per_image", "batched", "batched_bf16"):
        figures[f"{impl}_s_per_step"] = rows[impl]["seconds_per_step"]
    figures["batched_speedup"] = rows["batched"]["speedup_vs_per_image"]
    figures["batched_bf16_speedup"] = rows["batched_bf16"]["speedup_vs_per_image"]
    figures["batched_grad_rel_l2"] = rows["batched"]["grad_rel_l2"]
    if not rows["batched"]["grad_rel_l2"] <= tolerance:
        raise CheckFailed(
            f"the batched step's gradients differ from the per-image loop's by "
            f"{rows['batched']['grad_rel_l2']:.3g} (relative L2; tolerance {tolerance})"
        )
    return figures


def _finetune(device: str, sizes: Sizes, context: Any = None) -> tuple[float, int, int, Any, Any]:
    """Run the ATCON fine-tune on seeded random frames; (wall s, frames, steps run, model,
    context). A NaN loss raises inside the trainer (``check_finite``)."""
    import torch
    from torch.utils.data import TensorDataset

    from models.backbones import build_backbone
    from models.finetune import FinetuneConfig, finetune_atcon
    from models.guards import CollapseGuardConfig

    torch.manual_seed(0)
    model = build_backbone(sizes.finetune_arch, 4)
    frames = sizes.finetune_steps * sizes.finetune_batch
    size = sizes.finetune_input
    unlabeled = TensorDataset(torch.randn(frames, 3, size, size))
    config = FinetuneConfig(
        schedule="unsupervised",
        steps=sizes.finetune_steps,
        unlabeled_batch_size=sizes.finetune_batch,
        atcon_warmup_steps=0,
        # random frames: nothing to collapse from; the guard is checked elsewhere
        guard=CollapseGuardConfig(enabled=False),
    )
    if context is None:
        from models.distributed import DistributedContext

        context = DistributedContext(device=torch.device(device))
    _sync(device)
    started = time.perf_counter()
    outcome = finetune_atcon(model, unlabeled, config, context=context)
    _sync(device)
    wall = time.perf_counter() - started
    return wall, frames, len(outcome.history), model, context


def check_finetune(device: str, sizes: Sizes) -> dict[str, Any]:
    """Fine-tune frames per second in one process."""
    wall, frames, steps_run, _, _ = _finetune(device, sizes)
    if steps_run != sizes.finetune_steps:
        raise CheckFailed(f"the fine-tune ran {steps_run} of {sizes.finetune_steps} steps")
    return {
        "arch": sizes.finetune_arch,
        "input_size": sizes.finetune_input,
        "batch": sizes.finetune_batch,
        "steps": sizes.finetune_steps,
        "frames_per_s": frames / wall,
        "wall_s": wall,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_ranks(
    backend: str, device: str, tiny: bool, workdir: Path, timeout_s: float
) -> tuple[bool, str, dict[str, Any] | None]:
    """Start two ranks; (succeeded, their stderr's tail, rank 0's figures)."""
    port = _free_port()
    out = workdir / f"dist-{backend}.json"
    procs = []
    logs = []
    for rank in range(2):
        log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed below
        logs.append(log)
        command = [
            sys.executable,
            "-m",
            "bench.gpu_check",
            "--dist-rank",
            str(rank),
            "--dist-backend",
            backend,
            "--dist-port",
            str(port),
            "--dist-device",
            device,
            "--dist-out",
            str(out),
        ] + (["--tiny"] if tiny else [])
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log))
    ok = True
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            ok = False
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ok = ok and proc.returncode == 0
    tails = []
    for log in logs:
        log.seek(0)
        tails.append(log.read()[-1500:])
        log.close()
    figures = json.loads(out.read_text()) if ok and out.is_file() else None
    return ok and figures is not None, "\n".join(tails), figures


def check_distributed(device: str, tiny: bool, workdir: Path) -> dict[str, Any]:
    """Two processes on the one device: NCCL if it allows, else gloo."""
    import torch.distributed as dist

    timeout_s = 300.0
    tried: dict[str, str] = {}
    backends = ["gloo"]
    if device.startswith("cuda") and dist.is_nccl_available():
        backends.insert(0, "nccl")
    for backend in backends:
        # NCCL refusing two ranks on one device may hang rather than fail: a shorter leash
        limit = 120.0 if backend == "nccl" else timeout_s
        ok, tail, figures = _run_ranks(backend, device, tiny, workdir, limit)
        if ok and figures is not None:
            if figures["replica_max_abs_diff"] != 0.0:
                raise CheckFailed(
                    f"the two {backend} replicas disagree by {figures['replica_max_abs_diff']}"
                )
            return {**figures, "backend": backend, "fell_back_from": tried or None}
        logger.warning("two-process fine-tune with %s failed:\n%s", backend, tail)
        tried[backend] = tail.strip().splitlines()[-1] if tail.strip() else "no output"
    raise CheckFailed(f"the two-process fine-tune failed with every backend: {tried}")


def _dist_child(args: argparse.Namespace) -> int:
    """One rank of :func:`check_distributed`."""
    import torch
    import torch.distributed as dist

    from models.distributed import DistributedContext, shutdown

    device = torch.device(args.dist_device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        args.dist_backend,
        init_method=f"tcp://127.0.0.1:{args.dist_port}",
        rank=args.dist_rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=90),
    )
    context = DistributedContext(rank=args.dist_rank, world_size=2, local_rank=0, device=device)
    sizes = TINY if args.tiny else FULL
    wall, frames, steps_run, model, context = _finetune(args.dist_device, sizes, context)
    difference = context.replica_max_abs_diff(model)
    wall = context.sum_scalar(wall) / 2
    shutdown(context)
    if args.dist_rank == 0:
        figures = {
            "world_size": 2,
            "frames_per_s": frames / wall,
            "wall_s": wall,
            "steps": steps_run,
            "replica_max_abs_diff": difference,
        }
        args.dist_out.write_text(json.dumps(figures))
    return 0


# -- running ------------------------------------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _quietly(run: Callable[[], int], name: str) -> None:
    """Run a benchmark's ``main`` with its table on stderr; fail on a non-zero status."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            status = run()
    except SystemExit as exc:  # the benchmarks exit with a message on failure
        raise CheckFailed(f"{name} stopped: {exc}") from exc
    if status != 0:
        raise CheckFailed(f"{name} exited with status {status}")


def _table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"check": check, "figure": figure, "value": value}
        for check, figures in results.items()
        for figure, value in figures.items()
    ]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.dist_rank is not None:
        return _dist_child(args)
    import torch

    if torch.cuda.is_available():
        device = "cuda"
    elif args.allow_cpu:
        device = "cpu"
        logger.warning("no CUDA device: a CPU dry run (--allow-cpu); no figure is a GPU's")
    else:
        logger.error(
            "no CUDA device is visible (torch %s, CUDA build %s): the GPU check needs one; "
            "pass --allow-cpu (with --tiny) for a CPU dry run",
            torch.__version__,
            torch.version.cuda,
        )
        return NO_DEVICE
    sizes = TINY if args.tiny else FULL
    os.chdir(ROOT)  # bench.atcon_step writes under bench/out relative to here
    args.cache.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "device": (
            torch.cuda.get_device_name()
            if device == "cuda"
            else f"{platform.machine()} CPU, {os.cpu_count()} cores"
        ),
        "device_type": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tiny": args.tiny,
        "seconds": {},
    }
    results: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] | None = None
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        workdir = Path(tmp)
        checks: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("maps", lambda: check_maps(device, args.map_tolerance)),
            ("detect", lambda: check_detect(device, sizes, args.cache, workdir)),
            ("atcon_step", lambda: check_atcon_step(device, sizes, workdir, args.grad_tolerance)),
            ("finetune", lambda: check_finetune(device, sizes)),
            ("distributed", lambda: check_distributed(device, args.tiny, workdir)),
        ]
        for name, run in checks:
            logger.info("gpu check: %s ...", name)
            started = time.perf_counter()
            try:
                results[name] = run()
            except Exception as exc:
                logger.exception("gpu check %s failed", name)
                failed = {"check": name, "error": f"{type(exc).__name__}: {exc}"}
                break
            finally:
                meta["seconds"][name] = round(time.perf_counter() - started, 2)
    report = {"meta": meta, "rows": _table(results), "failed": failed}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    if failed is not None:
        logger.error("gpu check %s failed: %s", failed["check"], failed["error"])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
