"""Compiled scoring models, built once per checkpoint and machine and kept on local disk.

:func:`compiled_scorer` turns a scoring model (:func:`models.inference.prepare_for_inference`)
into an AOTInductor package: :func:`torch.export.export` captures the graph for one
input shape, Inductor freezes the weights into it and generates fused kernels
(convolution with its ReLU and residual add in one oneDNN call, say), and a C++
compiler builds them into a ``.pt2`` file. Building takes about half a minute on two
CPU cores; loading a built package takes a fraction of a second, so the package is
cached under a key of everything it depends on: the checkpoint's SHA-256, the input
shape and dtype, the PyTorch version, the device (and on CPU the instruction sets the
code was generated for, ``-march=native``) and the thread count baked into the kernels.

A package is checked on load against the eager model on one seeded batch; one that
fails to load or disagrees is deleted and built again. Anything that goes wrong
(no C++ compiler, an operator Inductor cannot export) is logged as a warning and the
caller keeps the eager model: compiling is an optimisation, never a reason to fail a
job.

Packages are executable code, so they live in a cache on the machine that built them
(``ATCON_COMPILE_CACHE_DIR``, default ``~/.cache/atcon/compiled``), never in the
shared data directory, which more people can write to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FORMAT", "compiled_scorer", "default_cache_dir", "package_key"]

logger = logging.getLogger(__name__)

#: bumped when what a package holds or how it is checked changes
FORMAT = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/atcon/compiled``, else ``~/.cache/atcon/compiled``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "atcon" / "compiled"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def package_key(example: Tensor, identity: dict[str, Any]) -> str:
    """The cache key of a package for inputs like ``example`` and a model named by ``identity``."""
    device = example.device
    environment: dict[str, Any] = {
        "format": FORMAT,
        "torch": torch.__version__,
        "shape": list(example.shape),
        "dtype": str(example.dtype),
        "channels_last": example.is_contiguous(memory_format=torch.channels_last),
        "device": device.type,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        environment["gpu"] = torch.cuda.get_device_name(device)
        environment["capability"] = list(torch.cuda.get_device_capability(device))
    else:
        environment["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        environment["cpu_flags"] = hashlib.sha256(_cpu_flags().encode()).hexdigest()[:16]
    text = json.dumps({"model": identity, "environment": environment}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _agrees(got: Tensor, expected: Tensor, dtype: torch.dtype) -> bool:
    """Relative L2 distance of two logit batches within what ``dtype`` rounding allows."""
    got, expected = got.float(), expected.float()
    if got.shape != expected.shape or not bool(torch.isfinite(got).all()):
        return False
    tolerance = 1e-3 if dtype in (torch.float32, torch.float64) else 5e-2
    scale = expected.norm().item() + 1e-6
    return (got - expected).norm().item() <= tolerance * scale


def _check_input(example: Tensor) -> Tensor:
    """A seeded batch shaped like ``example``, roughly the spread of normalised frames."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(example.shape, generator=generator).to(example.device, example.dtype)
    if example.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def compiled_scorer(
    scorer: nn.Module,
    example: Tensor,
    *,
    identity: dict[str, Any],
    cache_dir: Path | None = None,
) -> Callable[[Tensor], Tensor] | None:
    """A compiled ``scorer`` for inputs shaped exactly like ``example``, or ``None``.

    ``identity`` names the model's weights (the checkpoint's SHA-256 at least); with
    the input shape, dtype and this machine it forms the cache key. Call it with the
    thread count the scorer will run with: the kernels keep it. Returns ``None``, with
    a warning logged, when the package can be neither loaded nor built.
    """
    cache_dir = cache_dir or default_cache_dir()
    path = cache_dir / f"scorer-{package_key(example, identity)}.pt2"
    check = _check_input(example)
    with torch.inference_mode():
        expected = scorer(check)
    if path.is_file():
        runner = _load(path, check, expected, example.dtype)
        if runner is not None:
            return runner
        logger.warning("deleting %s and compiling again", path.name)
        path.unlink(missing_ok=True)
    try:
        _build(scorer, example, path)
    except Exception as exc:  # Inductor and the C++ toolchain raise many kinds
        logger.warning("could not compile the scoring model, using it as it is: %s", exc)
        return None
    runner = _load(path, check, expected, example.dtype)
    if runner is None:
        path.unlink(missing_ok=True)
    return runner


def _build(scorer: nn.Module, example: Tensor, path: Path) -> None:
    from torch._inductor import aoti_compile_and_package

    started = time.perf_counter()
    logger.info("compiling the scoring model for %s (once per model and machine)", path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt2")
    try:
        with torch.no_grad():
            program = torch.export.export(scorer, (example,))
            aoti_compile_and_package(
                program, package_path=str(staging), inductor_configs={"freezing": True}
            )
        os.replace(staging, path)  # another process building the same key may win: same bytes
    finally:
        staging.unlink(missing_ok=True)
    logger.info("compiled in %.1f s: %s", time.perf_counter() - started, path)


def _load(
    path: Path, check: Tensor, expected: Tensor, dtype: torch.dtype
) -> Callable[[Tensor], Tensor] | None:
    from torch._inductor import aoti_load_package

    try:
        runner = aoti_load_package(str(path))
        with torch.inference_mode():
            got = runner(check)
    except Exception as exc:  # a damaged or foreign package
        logger.warning("compiled scoring model %s is unusable: %s", path.name, exc)
        return None
    if not isinstance(got, Tensor) or not _agrees(got, expected, dtype):
        logger.warning("compiled scoring model %s disagrees with the model", path.name)
        return None
    logger.info("loaded the compiled scoring model %s", path.name)
    return runner
