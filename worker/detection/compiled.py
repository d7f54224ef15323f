"""The scoring model compiled with :func:`torch.compile`, checked, or nothing.

:func:`compile_scorer` compiles a scoring model (:func:`models.inference.prepare_for_inference`)
with Inductor for one input shape (``dynamic=False``; the detector pads its last
batch), with the weights frozen into the graph so convolutions take their ReLU and
residual add as fused oneDNN post-ops and the rest becomes generated C++ (or Triton
on CUDA). It compiles at once, on a seeded batch, so the cost is paid when a worker
loads its model and not inside a job: on two CPU cores about 20 s (ResNet-18) the first time and
about 4 s when Inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, default
``/tmp/torchinductor_<user>``) has seen the model. The compiled model's answer on that
batch is checked against the eager one's.

Why not an AOTInductor package, which loads in a fraction of a second: its Python
binding holds the GIL for the whole forward pass, and the decoder thread, which
needs the GIL between frames, stalls meanwhile (measured: a spinning thread got 3-5%
of its idle rate during AOTInductor calls, 100% during ``torch.compile`` calls).

Anything that goes wrong (no C++ compiler, an operator Inductor cannot handle, a
compiled model that disagrees) is logged as a warning and ``None`` returned, so the
caller keeps the eager model: compiling is an optimisation, never a reason to fail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["compile_scorer", "outputs_agree"]

logger = logging.getLogger(__name__)


def outputs_agree(got: Tensor, expected: Tensor, dtype: torch.dtype) -> bool:
    """Whether two logit batches agree within the rounding of ``dtype``.

    The relative L2 distance ``||got - expected|| / ||expected||`` must stay within
    1e-3 in float32 and 5e-2 in half precision (whose 8- or 11-bit mantissa a
    different summation order changes visibly); shapes must match and ``got`` be finite.
    """
    got, expected = got.float(), expected.float()
    if got.shape != expected.shape or not bool(torch.isfinite(got).all()):
        return False
    tolerance = 1e-3 if dtype in (torch.float32, torch.float64) else 5e-2
    return (got - expected).norm().item() <= tolerance * (expected.norm().item() + 1e-6)


def _seeded_like(example: Tensor) -> Tensor:
    """A seeded batch shaped and laid out like ``example``, spread like normalised frames."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(example.shape, generator=generator).to(example.device, example.dtype)
    if example.dim() == 4 and example.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def compile_scorer(
    scorer: nn.Module, example: Tensor, *, precision: torch.dtype | None = None
) -> Callable[[Tensor], Tensor] | None:
    """``scorer`` compiled for inputs shaped exactly like ``example``, or ``None``.

    ``precision`` is what the scorer computes in (default: ``example``'s dtype; pass
    the autocast dtype for a mixed-precision scorer): it sets the check's tolerance.
    Call it with the thread count the scorer will run with (Inductor sizes its
    parallel loops by it).
    """
    check = _seeded_like(example)
    started = time.perf_counter()
    try:
        compiled = torch.compile(scorer, dynamic=False, options={"freezing": True})
        with torch.inference_mode():
            expected = scorer(check)
            got = compiled(check)  # the first call compiles
    except Exception as exc:  # Inductor and the C++ toolchain raise many kinds
        logger.warning("could not compile the scoring model, using it as it is: %s", exc)
        return None
    if not outputs_agree(got, expected, precision or example.dtype):
        logger.warning("the compiled scoring model disagrees with the model; using it as it is")
        return None
    logger.info("scoring model compiled in %.1f s", time.perf_counter() - started)
    return compiled
