"""One ATCON loss-and-backward step: the batched implementation against a per-image loop.

The baseline has the published implementation's cost profile: images one at a
time, three passes each (Grad-CAM, Guided Backprop, Grad-CAM of the masked image),
with the Grad-CAM gradients taken back to the input. Both run in the same process on
the same model (BatchNorm frozen), so the ratio is what to read. Each configuration
runs in a fresh subprocess so that peak memory is its own.

    python bench/atcon_step.py                       # CPU: batch 8 @128 px, batch 16 @224 px
    python bench/atcon_step.py --device cuda --arch resnet50 --config 32x256
    python bench/atcon_step.py --json bench/out/atcon_step.json --bf16
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models._hooks import capture_layer, find_target_layer, guided_relus
from models.atcon import MASK_INTENSITY, atcon_loss, pearson, soft_mask
from models.backbones import build_backbone

logger = logging.getLogger("bench.atcon_step")


def _published_cam(model: nn.Module, layer: nn.Module, x: Tensor, c: Tensor) -> Tensor:
    """Grad-CAM with its gradient taken back through the whole network to the input."""
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    with capture_layer(layer) as capture:
        logits = model(x)
    acts = capture.activations
    grad_a, _ = torch.autograd.grad(
        logits.gather(1, c[:, None]).sum(), (acts, x), create_graph=True
    )
    return (grad_a.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1)


def _published_gb(model: nn.Module, x: Tensor, c: Tensor) -> Tensor:
    leaf = x.detach().requires_grad_(True)
    with guided_relus(model):
        logits = model(leaf)
    (grad,) = torch.autograd.grad(logits.gather(1, c[:, None]).sum(), leaf, create_graph=True)
    return grad


def per_image_step(
    model: nn.Module, images: Tensor, mask_intensity: float = MASK_INTENSITY
) -> Tensor:
    """The per-image loop; backward after every image. Returns the mean loss."""
    layer = find_target_layer(model)
    total = torch.zeros((), device=images.device)
    for i in range(images.shape[0]):
        x = images[i : i + 1]
        with torch.no_grad():
            c = model(x).argmax(dim=1)
        first = _published_cam(model, layer, x, c)
        mask = soft_mask(_published_gb(model, x, c), mask_intensity)
        second = _published_cam(model, layer, mask.unsqueeze(1) * x, c)
        z = [torch.sigmoid((m.flatten(1) - m.mean()) / m.std()) for m in (first, second)]
        loss = -pearson(z[0], z[1]).mean() / images.shape[0]
        loss.backward()
        total = total + loss.detach()
    return total


def batched_step(model: nn.Module, images: Tensor, bf16: bool = False) -> Tensor:
    device_type = images.device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        loss = atcon_loss(model, images)
    loss.backward()
    return loss.detach()


def _make(arch: str, size: int, batch: int, device: str, seed: int = 0) -> tuple[nn.Module, Tensor]:
    torch.manual_seed(seed)
    model = build_backbone(arch, 10).to(device).eval()  # BatchNorm frozen, as in fine-tuning
    images = torch.randn(batch, 3, size, size, device=device)
    return model, images


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _grads(model: nn.Module) -> list[Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one (implementation, configuration) in this process; time and peak memory."""
    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    model, images = _make(spec["arch"], spec["size"], spec["batch"], device)
    impl = spec["impl"]

    def step() -> Tensor:
        model.zero_grad(set_to_none=True)
        if impl == "per_image":
            return per_image_step(model, images)
        return batched_step(model, images, bf16=impl == "batched_bf16")

    loss = step()  # warm-up, and the figures compared for numerics
    grads = _grads(model)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(spec["repeats"]):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    torch.save({"loss": loss.cpu(), "grads": [g.cpu() for g in grads]}, spec["numerics_path"])
    return {"seconds": statistics.median(times), "peak_mb": peak_mb}


def _in_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, (spec,))


def _deviation(reference: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    ref_flat = torch.cat([g.flatten().float() for g in reference["grads"]])
    oth_flat = torch.cat([g.flatten().float() for g in other["grads"]])
    return {
        "loss_abs_diff": float((reference["loss"] - other["loss"]).abs()),
        "grad_rel_l2": float((ref_flat - oth_flat).norm() / ref_flat.norm().clamp_min(1e-30)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--config",
        action="append",
        help="BATCHxSIZE, repeatable (default: 8x128 and 16x224)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--bf16", action="store_true", help="add a bfloat16 autocast row")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    configs = args.config or ["8x128", "16x224"]
    workdir = Path("bench/out")
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for config in configs:
        batch, size = (int(v) for v in config.lower().split("x"))
        impls = ["per_image", "batched"] + (["batched_bf16"] if args.bf16 else [])
        results: dict[str, dict[str, Any]] = {}
        for impl in impls:
            spec = {
                "impl": impl,
                "arch": args.arch,
                "device": args.device,
                "batch": batch,
                "size": size,
                "repeats": args.repeats,
                "threads": args.threads,
                "numerics_path": str(workdir / f".numerics-{impl}.pt"),
            }
            logger.info("running %s batch %d at %d px on %s", impl, batch, size, args.device)
            results[impl] = _in_subprocess(spec)
        numerics = {
            impl: torch.load(workdir / f".numerics-{impl}.pt", weights_only=True) for impl in impls
        }
        for impl in impls:
            base = results["per_image"]["seconds"]
            row = {
                "arch": args.arch,
                "device": args.device,
                "batch": batch,
                "size": size,
                "impl": impl,
                "seconds_per_step": results[impl]["seconds"],
                "images_per_second": batch / results[impl]["seconds"],
                "speedup_vs_per_image": base / results[impl]["seconds"],
                "peak_mb": results[impl]["peak_mb"],
                **_deviation(numerics["per_image"], numerics[impl]),
            }
            rows.append(row)
    columns = ("config", "impl", "s/step", "img/s", "speedup", "peak MB", "grad dev")
    widths = (10, 13, 8, 7, 8, 8, 9)
    print(" ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print(
            f"{r['batch']:>4}x{r['size']:<5} {r['impl']:>13} {r['seconds_per_step']:8.3f} "
            f"{r['images_per_second']:7.1f} {r['speedup_vs_per_image']:7.2f}x {r['peak_mb']:8.0f} "
            f"{r['grad_rel_l2']:9.1e}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"torch": torch.__version__, "threads": args.threads, "repeats": args.repeats}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
