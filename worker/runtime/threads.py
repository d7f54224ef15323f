r"""PyTorch's intra-op threads for a worker process: the cores the decoder leaves free.

Detection runs two things at once: the decoder thread (FFmpeg, which may start
threads of its own, and the motion gate) and the model (PyTorch's intra-op pool).
PyTorch's threads spin-wait between operations, so giving the pool a core the
decoder needs slows both (on two cores, several times). The thread count is
process-wide, so it is chosen once, when a worker process starts
(:func:`configure_torch_threads`), never per job:

.. math:: n = \max\bigl(1, \lfloor C - D \rfloor\bigr)

with :math:`C` the cores this process may use (:func:`available_cores`: its CPU
affinity, capped by a cgroup CPU quota) and :math:`D` the cores the decoder keeps
busy when it runs flat out, measured by :func:`measure_decoder_cores` on a short
synthetic ward clip (640x480, 30 fps, H.264, sampled at 2/s): CPU seconds of the
process over wall seconds of a decode-only pass. ``ATCON_TORCH_THREADS`` set to a
positive number skips the measurement.

Torch is imported only inside :func:`configure_torch_threads`; the rest is
torch-free.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

__all__ = [
    "available_cores",
    "choose_torch_threads",
    "configure_torch_threads",
    "measure_decoder_cores",
]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_configured: int | None = None


def available_cores() -> float:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 ``cpu.max``
    (or v1 ``cpu.cfs_quota_us``) quota when one is set."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = float(os.cpu_count() or 1)
    quota = _cgroup_quota()
    return min(cores, quota) if quota else cores


def _cgroup_quota() -> float | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def choose_torch_threads(cores: float, decoder_cores: float) -> int:
    r"""Intra-op threads for ``cores`` when the decoder keeps ``decoder_cores`` busy:
    :math:`\max(1, \lfloor C - D \rfloor)`."""
    if not math.isfinite(decoder_cores) or decoder_cores < 0:
        decoder_cores = 1.0
    return max(1, math.floor(cores - decoder_cores + 1e-9))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_decoder_cores(seconds: float = 4.0, *, video: Path | None = None) -> float:
    """Cores the decoder keeps busy decoding flat out: process CPU s / wall s.

    Decodes ``video`` (default: a ward clip of ``seconds``, 640x480 at 30 fps,
    synthesised into a temporary folder) at 2 samples/s to 224 px with motion gating,
    in the decoder thread behind the same queue as detection, twice; the second pass
    (warm caches) is measured.
    """
    from ..detection.motion import GateConfig, MotionGate, gate_batches
    from ..video.decode import FrameSampler
    from ..video.prefetch import Prefetcher

    with tempfile.TemporaryDirectory(prefix="atcon-threads-") as tmp:
        if video is None:
            from synthetic.synth import SynthConfig, synthesize

            config = SynthConfig(seconds=seconds, fps=30, width=640, height=480, crf=23, noise=8)
            video = synthesize(Path(tmp), config, name="calibration", frames=False).video
        share = 0.0
        for _ in range(2):
            cpu, started = _cpu_s(), time.perf_counter()
            sampler = FrameSampler(video, fps=2.0, size=(224, 224))
            source = gate_batches(sampler, MotionGate(GateConfig()))
            with Prefetcher(source, maxsize=4, name="atcon-calibrate") as batches:
                for _batch in batches:
                    pass
            wall = time.perf_counter() - started
            share = (_cpu_s() - cpu) / max(wall, 1e-9)
    return share


def configure_torch_threads(threads: int = 0) -> int:
    """Set PyTorch's intra-op threads for this process, once; return the count.

    ``threads`` positive: that many. ``0``: :func:`choose_torch_threads` from
    :func:`available_cores` and :func:`measure_decoder_cores` (a few seconds, once).
    Later calls return the first call's choice without measuring again.
    """
    global _configured
    with _lock:
        if _configured is not None:
            return _configured
        import torch

        cores = available_cores()
        if threads > 0:
            chosen, how = threads, "set by ATCON_TORCH_THREADS"
        else:
            try:
                decoder = measure_decoder_cores()
            except Exception as exc:  # a measurement must not stop a worker
                logger.warning("decoder load not measured (%s); assuming one core", exc)
                decoder = 1.0
            chosen = choose_torch_threads(cores, decoder)
            how = f"{cores:g} cores, the decoder keeps {decoder:.2f} busy"
        torch.set_num_threads(chosen)
        logger.info("PyTorch intra-op threads: %d (%s)", chosen, how)
        _configured = chosen
        return chosen
