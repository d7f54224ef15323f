r"""An int8 scoring copy of a model, for CPUs without native bfloat16.

Built once per checkpoint (:func:`build_int8`) and stored beside it
(:func:`int8_path`: ``<checkpoint stem>.int8.pt2``, with ``.int8.json`` recording
the check), so a version's folder holds its calibrated copy. The toolchain is
PyTorch 2 export quantization with the x86 Inductor quantizer (``torchao``'s
``prepare_pt2e`` / ``convert_pt2e`` and ``X86InductorQuantizer``): the model is
exported, observed on calibration frames, converted to a graph of quantize /
dequantize pairs around float operators, and compiled by Inductor with freezing,
which fuses each pair into oneDNN's int8 convolutions and matrix products (the VNNI
or AVX2 instructions of the CPU). ONNX Runtime's static quantisation was measured
against it and dropped (``docs/results/benchmarks.md``): slower here, and its
kernels cannot be held to AVX2 to emulate the older CPU class.

Quantisation is affine per tensor for activations and symmetric per output channel
for weights: a value :math:`x` is stored as
:math:`q = \mathrm{clamp}(\mathrm{round}(x / s) + z, q_{min}, q_{max})` with the
scale :math:`s` and zero point :math:`z` observed (min/max) on the calibration
frames. The check (:func:`max_probability_change`) is the largest absolute
difference of any class probability between the float32 model and the int8 copy,

.. math:: \Delta = \max_{i, c} \lvert p^{\mathrm{int8}}_{ic} - p^{\mathrm{fp32}}_{ic} \rvert

over held-out frames; ``precision="auto"`` uses the copy only when
:math:`\Delta \le` :data:`MAX_PROBABILITY_CHANGE`. Maps and consistency always use
the float32 model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models.atomic import atomic_path, atomic_write_text

__all__ = [
    "MAX_PROBABILITY_CHANGE",
    "build_int8",
    "int8_check",
    "int8_path",
    "load_int8_scorer",
    "max_probability_change",
]

logger = logging.getLogger(__name__)

#: the largest probability change from float32 a usable int8 copy may show
MAX_PROBABILITY_CHANGE = 0.02


def int8_path(checkpoint: str | Path) -> Path:
    """Where the int8 copy of ``checkpoint`` lives: beside it, ``<stem>.int8.pt2``."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.int8.pt2")


def _check_path(checkpoint: str | Path) -> Path:
    return int8_path(checkpoint).with_suffix(".json")


def int8_check(checkpoint: str | Path) -> dict[str, Any] | None:
    """The stored check of ``checkpoint``'s int8 copy, or ``None`` when there is no copy."""
    if not int8_path(checkpoint).is_file():
        return None
    try:
        document: dict[str, Any] = json.loads(_check_path(checkpoint).read_text())
    except (OSError, ValueError):
        return None
    return document


def _quantize(model: nn.Module, calibration: Tensor, batch_size: int) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    example = _chunks(calibration, batch_size)[0]  # exactly batch_size, as every call
    # strict export: the reused ReLU of torchvision's blocks breaks the quantizer's
    # partitions under non-strict tracing
    graph = torch.export.export(model, (example,), strict=True).module()
    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for chunk in _chunks(calibration, batch_size):
            prepared(chunk)
    converted: nn.Module = convert_pt2e(prepared)
    return converted


def _chunks(frames: Tensor, batch_size: int) -> list[Tensor]:
    """``frames`` in batches of exactly ``batch_size`` (the last padded by repeating)."""
    out = []
    for start in range(0, frames.shape[0], batch_size):
        chunk = frames[start : start + batch_size]
        if chunk.shape[0] < batch_size:
            reps = -(-batch_size // chunk.shape[0])
            chunk = chunk.repeat(reps, 1, 1, 1)[:batch_size]
        out.append(chunk)
    return out


def build_int8(
    model: nn.Module,
    calibration: Tensor,
    validation: Tensor,
    checkpoint: str | Path,
    *,
    batch_size: int = 16,
    multi_label: bool = False,
) -> dict[str, Any]:
    """Quantise ``model`` (float32, eval) on normalised ``calibration`` frames (N, 3, S, S),
    check it on ``validation`` frames, store it beside ``checkpoint``; return the check.

    The stored program takes exactly ``batch_size`` frames (callers pad).
    """
    model = model.eval()
    converted = _quantize(model, calibration.float(), batch_size)
    example = _chunks(calibration.float(), batch_size)[0]
    program = torch.export.export(converted, (example,), strict=False)
    target = int8_path(checkpoint)
    with atomic_path(target, suffix=".pt2") as tmp:
        torch.export.save(program, str(tmp))
    scorer = load_int8_scorer(target)
    change = max_probability_change(model, scorer, validation, batch_size, multi_label)
    document = {
        "max_probability_change": change,
        "usable": change <= MAX_PROBABILITY_CHANGE,
        "target": MAX_PROBABILITY_CHANGE,
        "calibration_frames": int(calibration.shape[0]),
        "validation_frames": int(validation.shape[0]),
        "batch_size": batch_size,
        "toolchain": "pt2e X86InductorQuantizer (torchao), Inductor",
        "torch": torch.__version__,
    }
    atomic_write_text(_check_path(checkpoint), json.dumps(document, indent=2) + "\n")
    logger.info(
        "int8 copy of %s: largest probability change %.4f on %d validation frames (%s)",
        Path(checkpoint).name,
        change,
        validation.shape[0],
        "usable" if document["usable"] else "not used: above the target",
    )
    return document


def load_int8_scorer(path: str | Path) -> Callable[[Tensor], Tensor]:
    """The stored int8 program, compiled by Inductor with freezing (int8 kernels)."""
    import torch._inductor.config as inductor_config
    import torchao.quantization.pt2e  # noqa: F401 - registers the quantize/dequantize ops

    module = torch.export.load(str(path)).module()
    inductor_config.freezing = True
    compiled: Callable[[Tensor], Tensor] = torch.compile(module)
    return compiled


def max_probability_change(
    model: nn.Module,
    scorer: Callable[[Tensor], Tensor],
    frames: Tensor,
    batch_size: int,
    multi_label: bool,
) -> float:
    r"""The check: :math:`\max_{i,c} |p^{int8}_{ic} - p^{fp32}_{ic}|` over ``frames``."""

    def probs(logits: Tensor) -> Tensor:
        logits = logits.float()
        return logits.sigmoid() if multi_label else logits.softmax(dim=1)

    worst = 0.0
    with torch.inference_mode():
        for start in range(0, frames.shape[0], batch_size):
            chunk = frames[start : start + batch_size].float()
            n = chunk.shape[0]
            padded = _chunks(chunk, batch_size)[0]
            change = (probs(scorer(padded)[:n]) - probs(model(chunk))).abs().max()
            worst = max(worst, float(change))
    return worst
