"""Detection: video -> frame scores -> events -> per-event attention maps -> results folder.

One :class:`Detector` loads a checkpoint once and serves any number of videos (the
queue worker keeps one per process). For each video:

1. :func:`worker.video.probe.probe` rejects what is not a decodable video, before anything
   is written;
2. a decoder thread samples frames at ``sample_fps`` by presentation time, resized
   by FFmpeg straight to the model's input size, and hands them over a bounded queue
   (:class:`worker.video.prefetch.Prefetcher`) so decoding overlaps inference;
3. batches are normalised and classified by a scoring copy of the model
   (:func:`models.inference.prepare_for_inference`: batch norms folded into the
   convolutions, channels-last) on CUDA when present, in mixed precision (autocast),
   else on the CPU with its weights cast to bfloat16 where the CPU computes it
   natively;
4. :func:`models.events.segment_events` turns the per-frame scores into events, with
   the checkpoint's per-class thresholds unless overridden;
5. each event's peak frame is decoded again, pixel-identical, and its Grad-CAM and
   Guided Backprop maps (one guided pass where exact), soft mask and attention
   consistency (one more Grad-CAM pass, on the masked frame: the quantity
   :func:`models.atcon.attention_consistency` computes) are made in float32 and rendered;
6. everything lands in a temporary folder renamed to ``out_dir`` at the end
   (:mod:`worker.detection.results` documents the layout and the ``events.json`` schema).

Input frames are the whole picture resized to ``input_size`` x ``input_size`` (no
crop: a person entering at the edge of the room must stay in view), RGB scaled to
[0, 1] and normalised with the checkpoint's mean and std. Training must prepare its
frames the same way.

Cancelling: ``progress`` may raise (say, when a job is cancelled); the exception
propagates and no results folder is left behind.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models._hooks import resolve_layer
from models.atcon import GB_NORMALIZATIONS, MASK_INTENSITY, map_consistency, soft_mask
from models.attention import grad_cam, gradcam_and_guided_backprop
from models.checkpoint import CheckpointInfo, load_checkpoint
from models.events import Event, segment_events
from models.inference import prepare_for_inference

from .._exceptions import CheckpointMismatchError
from ..serving.model_cache import checkpoint_name
from ..training.datasets import normalization
from ..video.decode import FrameSampler, extract_frames
from ..video.memory import release_free_memory
from ..video.prefetch import Prefetcher
from ..video.probe import StreamedVideo, VideoInfo, VideoInput, probe, source_name
from .motion import INHERITED, REASONS, UNGATED, GateConfig, GatedScores, MotionGate, gate_batches
from .results import (
    EVENTS_FILE,
    MAPS_DIR,
    SCHEMA_VERSION,
    SCORES_FILE,
    safe_stem,
    staged_directory,
    write_event_maps,
    write_json,
)

__all__ = ["PRECISIONS", "DetectionConfig", "Detector", "cpu_has_native_bfloat16"]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "bfloat16", "float16", "int8")
_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "int8": torch.float32,  # the int8 copy takes float32 frames and quantises inside
}
_MIN_INPUT_SIZE = 16
#: scoring batches between returns of free heap pages to the OS (:mod:`worker.video.memory`)
_TRIM_EVERY_BATCHES = 16


#: ``ONEDNN_MAX_CPU_ISA`` values that keep oneDNN below its bfloat16 instructions
_ONEDNN_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), read from Linux.

    False also when PyTorch is held to an older instruction set by
    ``ATEN_CPU_CAPABILITY`` (``default``, ``avx2``) or ``ONEDNN_MAX_CPU_ISA`` (below
    ``AVX512_CORE_BF16``): how the benchmark emulates a CPU without bfloat16.
    """
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx2"):
        return False
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ONEDNN_WITHOUT_BF16:
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class DetectionConfig:
    """Settings of the detection pipeline (the model's own settings are in its checkpoint).

    ``thresholds`` overrides the checkpoint's onset thresholds by class name; offsets
    are ``offset_ratio`` times the onsets. ``precision`` is the scoring model's
    (attention maps are always float32): ``"auto"`` picks bfloat16 (float16 where
    unsupported) on CUDA, bfloat16 on a CPU with native support, else int8 when the
    checkpoint has a checked int8 copy beside it (:mod:`worker.detection.int8`), else float32.
    ``"int8"`` requires that copy.
    ``channels_last=None`` uses channels-last memory format on CUDA and below float32.
    ``expected_classes``, when set, must equal the checkpoint's classes (as a set).
    PyTorch's intra-op thread count is process-wide and not this class's to set: the
    worker chooses it at start-up (:mod:`worker.runtime.threads`) from the cores the decoder
    leaves free.
    ``gating`` turns on motion gating (:mod:`worker.detection.motion`): the model scores only
    samples that changed since the last scored one (plus the samples after each
    change, one every ``max_interval_s`` at least, and every skipped sample between
    two scored ones on either side of an event boundary); the others inherit the last
    scores. ``None`` (the default) scores every sample, exactly as without gating.
    ``skip_nonref`` lets the decoder skip frames nothing refers to (B-frames): less
    decoding, samples up to a few source frames before each instant (their times stay
    exact).
    ``compile`` scores with the scoring model compiled by :func:`torch.compile`
    (:mod:`worker.detection.compiled`: frozen weights, fused kernels, batches padded to
    ``batch_size`` so one shape serves every batch), compiled when the detector is
    made: about 20 s on two CPU cores the first time, about 4 s once Inductor's disk
    cache holds it. When compiling fails (no C++ compiler, say) a warning is logged
    and the eager model scores.
    """

    sample_fps: float = 2.0
    batch_size: int = 16
    device: str | None = None
    precision: str = "auto"
    channels_last: bool | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    offset_ratio: float = 0.8
    min_duration_s: float = 1.0
    merge_gap_s: float = 1.0
    padding_s: float = 0.0
    maps: bool = True
    mask_intensity: float = MASK_INTENSITY
    gb_normalization: str = "none"
    prefetch_batches: int = 4
    decode_threads: int = 0
    max_display_side: int = 960
    expected_classes: list[str] | None = None
    skip_nonref: bool = False
    compile: bool = False
    gating: GateConfig | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sample_fps) and self.sample_fps > 0):
            raise ValueError(f"sample_fps must be positive, got {self.sample_fps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        if not 0 < self.offset_ratio <= 1:
            raise ValueError(f"offset_ratio must lie in (0, 1], got {self.offset_ratio}")
        for name in ("min_duration_s", "merge_gap_s", "padding_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number of seconds, got {value}")
        for name, value in self.thresholds.items():
            if not 0 <= value <= 1:
                raise ValueError(f"thresholds[{name!r}] must lie in [0, 1], got {value}")
        if self.mask_intensity <= 0:
            raise ValueError(f"mask_intensity must be positive, got {self.mask_intensity}")
        if self.gb_normalization not in GB_NORMALIZATIONS:
            raise ValueError(f"gb_normalization must be one of {', '.join(GB_NORMALIZATIONS)}")
        if self.prefetch_batches < 1:
            raise ValueError(f"prefetch_batches must be at least 1, got {self.prefetch_batches}")
        if self.max_display_side < 16:
            raise ValueError(f"max_display_side must be at least 16, got {self.max_display_side}")


@dataclass
class _Timings:
    decode_busy: float = 0.0
    decode_wait: float = 0.0
    gate: float = 0.0
    preprocess: float = 0.0
    model: float = 0.0
    segment: float = 0.0
    maps: float = 0.0
    write: float = 0.0
    total: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class _Scored:
    """What the scoring pass gives: per sample times (s), pts, scores (T, C), the
    reason codes of :data:`worker.detection.motion.REASONS` and, with gating, change scores."""

    times: np.ndarray
    pts: np.ndarray
    scores: np.ndarray
    reasons: np.ndarray
    changes: np.ndarray | None
    sampler: FrameSampler


def _memory_format(x: Tensor) -> torch.memory_format:
    """Channels-last when ``x`` (4-D) is laid out so, else contiguous."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _module_name(model: nn.Module, layer: nn.Module) -> str:
    return next((name for name, module in model.named_modules() if module is layer), "?")


class Detector:
    """A loaded model and the settings to turn videos into events. Not thread-safe.

    Raises :class:`~models.CheckpointError` for a missing or unreadable checkpoint and
    :class:`~worker.CheckpointMismatchError` when its classes or input size do not
    fit (see :meth:`_check_fit`).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        config: DetectionConfig | None = None,
        model_version: str | None = None,
    ) -> None:
        self.config = config or DetectionConfig()
        cfg = self.config
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, info = load_checkpoint(checkpoint, map_location="cpu")
        self.checkpoint = Path(checkpoint)
        self.info: CheckpointInfo = info
        self.class_names = list(info.class_names)
        self.model_version = model_version or checkpoint_name(self.checkpoint, info.sha256)
        self.layer = resolve_layer(model, None)
        self._check_fit(model, info)
        self.precision = self._resolve_precision()
        self._dtype = _DTYPES[self.precision]
        self.channels_last = (
            cfg.channels_last
            if cfg.channels_last is not None
            else (self.device.type == "cuda" or self._dtype != torch.float32)
        ) and self.precision != "int8"
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.eval()
        # the copy of the model that scores frames (maps use :attr:`model`): on CPU its
        # weights are cast to the scoring precision (autocast re-cast every weight on
        # every batch); on CUDA it runs in mixed precision over float32 weights
        reduced = self._dtype != torch.float32
        on_cpu = self.device.type == "cpu"
        self._input_dtype = self._dtype if on_cpu else torch.float32
        self.scoring_model = prepare_for_inference(
            self.model,
            dtype=self._dtype if on_cpu else None,
            autocast=self._dtype if reduced and not on_cpu else None,
            channels_last=self.channels_last,
        )
        self.scorer: Callable[[Tensor], Tensor] = self.scoring_model
        #: whether :attr:`scorer` is compiled (then it takes exactly ``batch_size`` frames)
        self.compiled = False
        self._scale, self._shift = normalization(info.mean, info.std, device=self.device)
        on = dict(zip(self.class_names, info.thresholds, strict=True))
        on.update(cfg.thresholds)
        self.on_thresholds = [float(on[name]) for name in self.class_names]
        self.off_thresholds = [v * cfg.offset_ratio for v in self.on_thresholds]
        if self.precision == "int8":
            from .int8 import int8_path, load_int8_scorer

            # compiled with a static batch: :meth:`_classify` pads to ``batch_size``
            self.scorer, self.compiled = load_int8_scorer(int8_path(self.checkpoint)), True
        elif cfg.compile:
            self._compile_scorer()

    def frame_consistency(self, frames: np.ndarray) -> np.ndarray:
        """Attention consistency (the Pearson ATCON maximises) of uint8 (B, S, S, 3) frames.

        ``S`` is the checkpoint's input size; the top class of each frame is explained.
        """
        from models.atcon import attention_consistency

        x = self._preprocess(np.ascontiguousarray(frames))
        scores = attention_consistency(
            self.model,
            x,
            layer=self.layer,
            mask_intensity=self.config.mask_intensity,
            gb_normalization=self.config.gb_normalization,
        )
        return np.asarray(scores.float().cpu().numpy(), dtype=np.float64)

    def frame_maps(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw Grad-CAM (B, h, w) and Guided Backprop (B, 3, S, S) of uint8 (B, S, S, 3)
        frames, for each frame's top class."""
        x = self._preprocess(np.ascontiguousarray(frames))
        cam, guided, _ = gradcam_and_guided_backprop(self.model, x, layer=self.layer)
        return cam.float().cpu().numpy(), guided.float().cpu().numpy()

    def build_int8(self, calibration: np.ndarray, validation: np.ndarray) -> dict[str, Any]:
        """Build, check and store this checkpoint's int8 copy (:mod:`worker.detection.int8`) from
        uint8 (N, S, S, 3) calibration and validation frames (pool or training frames);
        return the check. A detector made afterwards with ``precision="auto"`` on a CPU
        without native bfloat16 uses it when the check passed."""
        import copy

        from .int8 import build_int8

        model = copy.deepcopy(self.model).float().to(memory_format=torch.contiguous_format)
        return build_int8(
            model,
            self._preprocess(np.ascontiguousarray(calibration)),
            self._preprocess(np.ascontiguousarray(validation)),
            self.checkpoint,
            batch_size=self.config.batch_size,
            multi_label=self.info.multi_label,
        )

    # -- setup -----------------------------------------------------------------------
    def _check_fit(self, model: nn.Module, info: CheckpointInfo) -> None:
        """Raise :class:`CheckpointMismatchError` unless the checkpoint fits this job.

        The classes must equal ``expected_classes`` when set and include every class
        named in ``thresholds``; the input size must run through the model and give
        ``(1, classes)`` logits, and (with maps) a Grad-CAM layer of at least 2x2.
        """
        cfg, names, name = self.config, info.class_names, self.checkpoint.name
        if cfg.expected_classes is not None and set(cfg.expected_classes) != set(names):
            missing = sorted(set(cfg.expected_classes) - set(names))
            extra = sorted(set(names) - set(cfg.expected_classes))
            raise CheckpointMismatchError(
                f"checkpoint {name} predicts {names}, not the expected classes: missing "
                f"{missing}, unexpected {extra}; use a checkpoint trained on these classes"
            )
        unknown = sorted(set(cfg.thresholds) - set(names))
        if unknown:
            raise CheckpointMismatchError(
                f"thresholds name classes {unknown} that checkpoint {name} does not predict; "
                f"its classes are {names}"
            )
        if len(info.mean) != 3 or len(info.std) != 3 or min(info.std) <= 0:
            raise CheckpointMismatchError(
                f"checkpoint {name} has mean {info.mean} and std {info.std}; RGB video needs "
                "three values each (std positive); retrain or fix the checkpoint"
            )
        size = info.input_size
        if not _MIN_INPUT_SIZE <= size <= 4096:
            raise CheckpointMismatchError(
                f"checkpoint {name} has input size {size}; detection needs "
                f"{_MIN_INPUT_SIZE}..4096 px; retrain at a usable size"
            )
        shapes: list[tuple[int, ...]] = []
        handle = self.layer.register_forward_hook(
            lambda module, inputs, output: shapes.append(tuple(output.shape))
        )
        try:
            with torch.no_grad():
                logits = model(torch.zeros(1, 3, size, size))
        except RuntimeError as exc:
            raise CheckpointMismatchError(
                f"checkpoint {name} ({info.arch}) cannot run at its input size {size}: {exc}"
            ) from exc
        finally:
            handle.remove()
        if tuple(logits.shape) != (1, len(names)):
            raise CheckpointMismatchError(
                f"checkpoint {name} gives {tuple(logits.shape)[1:]} outputs for "
                f"{len(names)} classes {names}; the head does not fit its class list"
            )
        feature = shapes[-1] if shapes else ()
        if cfg.maps and (len(feature) != 4 or min(feature[2:]) < 2):
            raise CheckpointMismatchError(
                f"checkpoint {name} at input size {size} gives a {feature[2:]} feature map "
                f"at {_module_name(model, self.layer)}: its Grad-CAM could not show where "
                "the model looks; use a checkpoint trained at a larger input size (or "
                "turn maps off)"
            )

    def _resolve_precision(self) -> str:
        wanted = self.config.precision
        if wanted == "int8":
            from .int8 import int8_path

            if self.device.type != "cpu" or not int8_path(self.checkpoint).is_file():
                raise CheckpointMismatchError(
                    f"precision int8 needs a CPU and the int8 copy {int8_path(self.checkpoint)} "
                    "of the checkpoint; build it first (Detector.build_int8)"
                )
        if wanted != "auto":
            return wanted
        if self.device.type == "cuda":
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if cpu_has_native_bfloat16():
            return "bfloat16"
        from .int8 import int8_check

        check = int8_check(self.checkpoint)
        if check and check.get("usable") and check.get("batch_size") == self.config.batch_size:
            return "int8"
        return "float32"

    def _compile_scorer(self) -> None:
        """Swap :attr:`scorer` for its compiled form (:mod:`worker.detection.compiled`), if one
        works."""
        from .compiled import compile_scorer

        size, batch = self.info.input_size, self.config.batch_size
        example = torch.zeros(batch, 3, size, size, dtype=self._input_dtype, device=self.device)
        if self.channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        compiled = compile_scorer(self.scoring_model, example, precision=self._dtype)
        if compiled is not None:
            self.scorer, self.compiled = compiled, True

    # -- steps -----------------------------------------------------------------------
    def _preprocess(self, frames: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
        """uint8 (B, H, W, 3) -> normalised (B, 3, H, W) of ``dtype`` on the device."""
        batch = torch.from_numpy(frames)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        x = batch.permute(0, 3, 1, 2).float()  # NHWC strides: already channels-last
        if not self.channels_last:
            x = x.contiguous()
        return x.mul_(self._scale).sub_(self._shift).to(dtype)

    def _probabilities(self, logits: Tensor) -> Tensor:
        logits = logits.float()
        return logits.sigmoid() if self.info.multi_label else logits.softmax(dim=1)

    def _classify(self, x: Tensor) -> np.ndarray:
        n, batch = x.shape[0], self.config.batch_size
        if self.compiled and n < batch:  # the compiled graph takes whole batches only
            padding = x.new_zeros((batch - n, *x.shape[1:]))
            x = torch.cat([x, padding]).contiguous(memory_format=_memory_format(x))
        with torch.inference_mode():
            probs = self._probabilities(self.scorer(x)[:n])
        result: np.ndarray = probs.cpu().numpy()
        return result

    def _classify_frames(self, frames: np.ndarray, timings: _Timings) -> np.ndarray:
        """Probabilities (N, C) of uint8 frames (N, S, S, 3), in batches of ``batch_size``."""
        out = []
        for start in range(0, frames.shape[0], self.config.batch_size):
            mark = time.perf_counter()
            x = self._preprocess(
                np.ascontiguousarray(frames[start : start + self.config.batch_size]),
                self._input_dtype,
            )
            prepared = time.perf_counter()
            out.append(self._classify(x))
            timings.preprocess += prepared - mark
            timings.model += time.perf_counter() - prepared
        return np.concatenate(out)

    def _score(
        self,
        video: VideoInput,
        timings: _Timings,
        duration: float | None,
        progress: Callable[[float], None] | None,
    ) -> _Scored:
        cfg, size = self.config, self.info.input_size
        sampler = FrameSampler(
            video,
            fps=cfg.sample_fps,
            size=(size, size),
            batch_size=cfg.batch_size,
            threads=cfg.decode_threads,
            skip_nonref=cfg.skip_nonref,
        )
        if cfg.gating is not None:
            return self._score_gated(sampler, cfg.gating, timings, duration, progress)
        times, pts, scores = [], [], []
        with Prefetcher(sampler, maxsize=cfg.prefetch_batches, name="atcon-decode") as batches:
            for index, batch in enumerate(batches, start=1):
                if index % _TRIM_EVERY_BATCHES == 0:
                    release_free_memory()  # see worker.video.memory: memory flat over hours
                started = time.perf_counter()
                x = self._preprocess(batch.frames, self._input_dtype)
                prepared = time.perf_counter()
                scores.append(self._classify(x))
                timings.preprocess += prepared - started
                timings.model += time.perf_counter() - prepared
                times.append(batch.times)
                pts.append(batch.pts)
                if progress is not None and duration:
                    progress(min(0.9, 0.9 * float(batch.times[-1]) / duration))
            timings.decode_wait = batches.wait_s
        timings.decode_busy = sampler.busy_s
        all_times = np.concatenate(times)
        return _Scored(
            times=all_times,
            pts=np.concatenate(pts),
            scores=np.concatenate(scores),
            reasons=np.full(all_times.shape[0], UNGATED, dtype=np.uint8),
            changes=None,
            sampler=sampler,
        )

    def _score_gated(
        self,
        sampler: FrameSampler,
        gate_config: GateConfig,
        timings: _Timings,
        duration: float | None,
        progress: Callable[[float], None] | None,
    ) -> _Scored:
        """:meth:`_score` with motion gating (:mod:`worker.detection.motion`)."""
        cfg = self.config
        gate = MotionGate(gate_config)
        gated = GatedScores(
            classify=lambda frames: self._classify_frames(frames, timings),
            on_thresholds=self.on_thresholds,
            off_thresholds=self.off_thresholds,
            max_pending=gate_config.max_pending,
            batch_size=cfg.batch_size,
        )
        times, pts = [], []
        source = gate_batches(sampler, gate)
        with Prefetcher(source, maxsize=cfg.prefetch_batches, name="atcon-decode") as batches:
            for index, item in enumerate(batches, start=1):
                if index % _TRIM_EVERY_BATCHES == 0:
                    release_free_memory()
                gated.add(item)
                times.append(item.batch.times)
                pts.append(item.batch.pts)
                if progress is not None and duration:
                    progress(min(0.9, 0.9 * float(item.batch.times[-1]) / duration))
            timings.decode_wait = batches.wait_s
        timings.decode_busy = sampler.busy_s
        timings.gate = gate.busy_s
        scores, reasons, changes = gated.result()
        return _Scored(
            times=np.concatenate(times),
            pts=np.concatenate(pts),
            scores=scores,
            reasons=reasons,
            changes=changes,
            sampler=sampler,
        )

    def _maps(
        self,
        video: VideoInput,
        events: list[Event],
        pts: np.ndarray,
        maps_dir: Path,
        progress: Callable[[float], None] | None,
    ) -> list[tuple[dict[str, str], float]]:
        """Render each event's maps on its peak frame; return (file names, consistency)."""
        cfg, size = self.config, self.info.input_size
        frames = extract_frames(
            video,
            [int(pts[e.peak_index]) for e in events],
            sizes=[(size, size), None],
            max_side=cfg.max_display_side,
        )
        results: list[tuple[dict[str, str], float]] = []
        used: set[str] = set()
        for start in range(0, len(events), cfg.batch_size):
            chunk = events[start : start + cfg.batch_size]
            model_frames = np.stack([frames[start + i][0] for i in range(len(chunk))])
            x = self._preprocess(model_frames)
            targets = torch.tensor(
                [self.class_names.index(e.label) for e in chunk], device=self.device
            )
            cam, guided, _ = gradcam_and_guided_backprop(self.model, x, targets, layer=self.layer)
            mask = soft_mask(guided, cfg.mask_intensity, cfg.gb_normalization)
            masked_cam = grad_cam(self.model, mask.unsqueeze(1) * x, targets, layer=self.layer)
            consistency = map_consistency(cam, masked_cam)
            for i, event in enumerate(chunk):
                stem = safe_stem(event.id)
                while stem in used:
                    stem += "_"
                used.add(stem)
                names = write_event_maps(
                    maps_dir,
                    stem,
                    frames[start + i][1],
                    cam[i].float().cpu().numpy(),
                    guided[i].float().cpu().numpy(),
                    mask[i].float().cpu().numpy(),
                )
                results.append((names, float(consistency[i])))
            if progress is not None:
                progress(0.9 + 0.09 * min(1.0, (start + len(chunk)) / len(events)))
        return results

    # -- the job ---------------------------------------------------------------------
    def detect(
        self,
        video: VideoInput,
        out_dir: str | Path,
        *,
        video_id: str | None = None,
        progress: Callable[[float], None] | None = None,
        overwrite: bool = False,
    ) -> dict[str, Any]:
        """Detect the events of ``video``, write the results folder ``out_dir``, return events.json.

        Raises :class:`~worker.VideoDecodeError` (and kin) for input that is not a
        decodable video and :class:`~worker.ResultsExistError` when ``out_dir`` holds
        results already and ``overwrite`` is false; nothing is written in either case,
        and no partial folder is left after any error. ``progress`` receives the
        fraction done, in [0, 1].
        """
        started = time.perf_counter()
        if not isinstance(video, StreamedVideo):
            video = Path(video)
        info = probe(video)
        try:
            return self._detect(video, info, Path(out_dir), video_id, progress, overwrite, started)
        finally:
            release_free_memory()  # a worker idles between jobs at its resting size

    def _detect(
        self,
        video: VideoInput,
        info: VideoInfo,
        out_dir: Path,
        video_id: str | None,
        progress: Callable[[float], None] | None,
        overwrite: bool,
        started: float,
    ) -> dict[str, Any]:
        timings = _Timings()
        with staged_directory(out_dir, overwrite=overwrite) as staging:
            scored = self._score(video, timings, info.duration_s, progress)
            times, pts, scores, sampler = scored.times, scored.pts, scored.scores, scored.sampler
            mark = time.perf_counter()
            cfg = self.config
            stats = sampler.stats
            events = segment_events(
                times,
                scores,
                self.class_names,
                self.on_thresholds,
                self.off_thresholds,
                min_duration_s=cfg.min_duration_s,
                merge_gap_s=cfg.merge_gap_s,
                padding_s=cfg.padding_s,
                frame_duration_s=1.0 / cfg.sample_fps,
                duration_s=stats.expected_s or info.duration_s,
            )
            timings.segment = time.perf_counter() - mark
            mark = time.perf_counter()
            rendered = (
                self._maps(video, events, pts, staging / MAPS_DIR, progress)
                if cfg.maps and events
                else []
            )
            timings.maps = time.perf_counter() - mark
            mark = time.perf_counter()
            arrays: dict[str, np.ndarray] = {
                "times": times,
                "pts": pts,
                "scores": scores.astype(np.float32),
                "class_names": np.array(self.class_names),
                "scored": scored.reasons != INHERITED,
                "gate_reason": scored.reasons,
            }
            if scored.changes is not None:
                arrays["change"] = scored.changes
            np.savez_compressed(staging / SCORES_FILE, **arrays)  # type: ignore[arg-type]
            stem = Path(source_name(video)).stem
            document = self._document(video_id or stem, info, sampler, events, rendered)
            document["gating"] = self._gating_summary(scored.reasons, times)
            timings.write = time.perf_counter() - mark
            timings.total = time.perf_counter() - started
            document["timings_s"] = timings.to_dict()
            write_json(staging / EVENTS_FILE, document)
        if progress is not None:
            progress(1.0)
        duration = info.duration_s or stats.expected_s
        logger.info(
            "%d events in %.1f s of video (%d samples, %.1f%% covered) in %.1f s: %.1fx real time",
            len(events),
            duration,
            len(times),
            100 * stats.coverage,
            timings.total,
            duration / max(timings.total, 1e-9),
        )
        return document

    def _gating_summary(self, reasons: np.ndarray, times: np.ndarray) -> dict[str, Any]:
        """The ``gating`` entry of ``events.json``: settings, samples per reason, and the
        stretches of samples that inherited their scores (first and last sample time)."""
        gating = self.config.gating
        counts = np.bincount(reasons, minlength=len(REASONS))
        inherited = np.concatenate([[False], reasons == INHERITED, [False]])
        edges = np.flatnonzero(np.diff(inherited.astype(np.int8)))
        spans = [
            [round(float(times[a]), 3), round(float(times[b - 1]), 3)]
            for a, b in zip(edges[::2], edges[1::2], strict=True)
        ]
        return {
            "enabled": gating is not None,
            **(gating.to_dict() if gating is not None else {}),
            "scored_samples": int(reasons.size - counts[INHERITED]),
            "inherited_samples": int(counts[INHERITED]),
            "reasons": {name: int(counts[code]) for code, name in enumerate(REASONS)},
            "inherited_spans_s": spans,
        }

    def _document(
        self,
        video_id: str,
        info: VideoInfo,
        sampler: FrameSampler,
        events: list[Event],
        rendered: list[tuple[dict[str, str], float]],
    ) -> dict[str, Any]:
        cfg = self.config
        stats = sampler.stats.to_dict()
        stats.pop("warnings", None)
        event_dicts = []
        for i, event in enumerate(events):
            entry = event.to_dict()
            if rendered:
                names, consistency = rendered[i]
                entry["attention_consistency"] = (
                    round(consistency, 4) if math.isfinite(consistency) else None
                )
                entry["maps"] = names
            else:
                entry["attention_consistency"] = None
            event_dicts.append(entry)
        return {
            "schema_version": SCHEMA_VERSION,
            "video_id": video_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "video": info.to_dict(),
            "sampling": {"fps": cfg.sample_fps, "samples": stats.pop("sampled_frames"), **stats},
            "model": {
                "version": self.model_version,
                "checkpoint_sha256": self.info.sha256,
                "arch": self.info.arch,
                "class_names": self.class_names,
                "input_size": self.info.input_size,
                "multi_label": self.info.multi_label,
                "thresholds": {
                    "on": dict(zip(self.class_names, self.on_thresholds, strict=True)),
                    "off": dict(zip(self.class_names, self.off_thresholds, strict=True)),
                },
                "device": str(self.device),
                "precision": self.precision,
            },
            "segmentation": {
                "offset_ratio": cfg.offset_ratio,
                "min_duration_s": cfg.min_duration_s,
                "merge_gap_s": cfg.merge_gap_s,
                "padding_s": cfg.padding_s,
            },
            "maps": (
                {
                    "layer": _module_name(self.model, self.layer),
                    "mask_intensity": cfg.mask_intensity,
                    "gb_normalization": cfg.gb_normalization,
                }
                if cfg.maps
                else None
            ),
            "scores_file": SCORES_FILE,
            "events": event_dicts,
        }
