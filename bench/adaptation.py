"""Deployment-shift benchmark: which adaptation recovers a detector where it is deployed?

A small ResNet-18 is trained once on labeled frames of normal (day-time) wards: the
*source model*, shared by every method. Each *target* is a ward seen through a
deployment shift (:mod:`synthetic.shifts`: a night camera, another mounting, another
room, a blurred lens, a starved stream). For a target the benchmark has

- an unlabeled pool: an hour of the target camera's video sampled at 1 frame/s;
- K labeled frames per class (K in ``--ks``), picked as a clinician would label them:
  walking the review queue least-consistent first (attention consistency under the
  source model, the product's review order) over the frames one night brings (a
  seeded half of the pool), keeping each frame that adds a positive to a class
  short of K, and K frames with no event;
- held-out target test videos, and a held-out source (day) test video to catch
  forgetting.

Every method starts from the source model with the same budget: AdaBN's forward
passes over at most ``adabn_images`` pool frames, then ``--steps`` Adam steps with
the same batch sizes, through the product's own :func:`models.adaptation.adapt`. A
method with ``atcon`` runs :func:`models.finetune.finetune_atcon` with its published
settings (BatchNorm frozen, after AdaBN when asked, alternating with the labels when
``supervised`` is named) and the product's guards; a run the guards stop keeps the
source model, as the product's failed job does. Decision thresholds stay the source
model's.

Metrics on the target test videos: event F1 at tIoU 0.5 (the detector's own
segmentation, :func:`models.events.segment_events` with
:class:`worker.detection.detector.DetectionConfig`'s defaults, on the frames the detector would
sample), frame mAP, and the attention pointing game and mIoU of each active class's
Grad-CAM against the object masks. Event F1 on the source test video measures
forgetting. Lifts are paired by seed (the K frames and the training order) with
two-sided 95% Student-t intervals.

``python -m bench.adaptation`` writes ``docs/results/adaptation.md`` (the verdict,
the tables, the figures) and ``adaptation.json``; ``--quick`` runs a toy size.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from bench._stats import paired_interval
from models._exceptions import TrainingError
from models.adaptation import AdaptConfig, adapt, parse_method
from models.atcon import attention_consistency
from models.backbones import build_backbone
from models.checkpoint import CheckpointInfo
from models.event_metrics import evaluate_events
from models.events import segment_events
from models.metrics import (
    best_f1_thresholds,
    mask_attention_scores,
    mean_attention_consistency,
    mean_average_precision,
)
from models.training import SupervisedConfig, train_supervised
from synthetic.shifts import Shift, parse_shifts
from synthetic.synth import CLASSES, SynthConfig, WardScene, make_script, synthesize
from worker.settings import Settings
from worker.video.decode import FrameSampler

logger = logging.getLogger("bench.adaptation")

ROOT = Path(__file__).resolve().parents[1]
NO_ADAPTATION = "none"
#: the published-settings ATCON rows (run through models.finetune, BatchNorm frozen)
ATCON = "atcon"
ADABN_ATCON = "adabn+atcon"
#: the product as it runs at K > 0: the default's candidate, promoted only when the
#: promotion gate passes it on the camera's labeled validation frames (else the
#: camera keeps the source model); not a method, a row of the tables
PRODUCT = "default, gated"


# --------------------------------------------------------------------------- recipe


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the data and the source model (a change rebuilds them)."""

    width: int = 160
    height: int = 120
    fps: float = 4.0
    input_size: int = 48
    train_seeds: tuple[int, ...] = (11, 12, 13)
    train_seconds: float = 150.0
    val_seed: int = 14
    val_seconds: float = 120.0
    source_test_seed: int = 21
    test_seconds: float = 180.0
    target_test_seeds: tuple[int, ...] = (41, 42)
    pool_seeds: tuple[int, ...] = (31, 32, 33, 34, 35, 36)
    pool_seconds: float = 600.0
    pool_fps: float = 1.0
    #: day-time frames of the cameras the model already serves (the ``anchor`` set)
    anchor_seeds: tuple[int, ...] = (51, 52)
    anchor_seconds: float = 300.0
    sample_fps: float = 2.0
    source_steps: int = 500
    source_lr: float = 2e-3
    arch: str = "resnet18_slim"
    width_mult: int = 8
    version: int = 1

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @classmethod
    def quick(cls) -> Recipe:
        return cls(
            train_seeds=(11, 12),
            train_seconds=60.0,
            val_seconds=40.0,
            test_seconds=60.0,
            target_test_seeds=(41,),
            pool_seeds=(31,),
            pool_seconds=120.0,
            anchor_seeds=(51,),
            anchor_seconds=60.0,
            source_steps=60,
        )


@dataclass
class Frames:
    """Frames as the model sees them: uint8 (N, S, S, 3), their labels and times."""

    images: np.ndarray
    targets: np.ndarray  # (N, C) multi-hot
    times: np.ndarray
    video: np.ndarray  # index of the video each frame came from
    masks: np.ndarray | None = None  # (N, H, W) uint8 bit masks at the frame size

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: Sequence[int] | np.ndarray) -> Frames:
        index = np.asarray(index, dtype=np.int64)
        return Frames(
            self.images[index],
            self.targets[index],
            self.times[index],
            self.video[index],
            None if self.masks is None else self.masks[index],
        )


@dataclass
class Target:
    """One deployment shift's data."""

    name: str
    shifts: tuple[Shift, ...]
    pool: Frames
    tests: list[tuple[Frames, list[Any], float]]  # (frames at sample_fps, truth, duration)


@dataclass
class Data:
    recipe: Recipe
    train: Frames
    val: Frames
    anchor: Frames
    source_test: tuple[Frames, list[Any], float]
    targets: dict[str, Target] = field(default_factory=dict)


def _video(
    folder: Path, seed: int, seconds: float, recipe: Recipe, shifts: tuple[Shift, ...]
) -> tuple[Path, list[Any]]:
    config = SynthConfig(
        seconds=seconds,
        fps=recipe.fps,
        width=recipe.width,
        height=recipe.height,
        seed=seed,
        frames_fps=0,
        shifts=shifts,
    )
    result = synthesize(folder, config, name=f"s{seed}", frames=False)
    return result.video, result.events


def _decode(
    video: Path,
    events: list[Any],
    fps: float,
    recipe: Recipe,
    index: int,
    scene: WardScene | None = None,
) -> Frames:
    """Sample ``video`` at ``fps`` at the model's input size, as the detector does."""
    size = recipe.input_size
    images, times = [], []
    for batch in FrameSampler(video, fps=fps, size=(size, size), batch_size=64):
        images.append(batch.frames)
        times.append(batch.times)
    t = np.concatenate(times)
    targets = np.array(
        [[any(e.label == c and e.active(float(x)) for e in events) for c in CLASSES] for x in t],
        dtype=np.float32,
    )
    masks = None
    if scene is not None:
        masks = np.stack([scene.render_with_masks(float(x))[1] for x in t])
    return Frames(np.concatenate(images), targets, t, np.full(len(t), index), masks)


def _concat(parts: list[Frames]) -> Frames:
    return Frames(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.targets for p in parts]),
        np.concatenate([p.times for p in parts]),
        np.concatenate([p.video for p in parts]),
    )


def build_source(recipe: Recipe, work: Path) -> Data:
    work.mkdir(parents=True, exist_ok=True)
    train = []
    for k, seed in enumerate(recipe.train_seeds):
        video, events = _video(work / "source", seed, recipe.train_seconds, recipe, ())
        train.append(_decode(video, events, recipe.sample_fps, recipe, k))
    video, events = _video(work / "source", recipe.val_seed, recipe.val_seconds, recipe, ())
    val = _decode(video, events, recipe.sample_fps, recipe, 0)
    anchor = []
    for k, seed in enumerate(recipe.anchor_seeds):
        video, events = _video(work / "source", seed, recipe.anchor_seconds, recipe, ())
        anchor.append(_decode(video, events, recipe.pool_fps, recipe, k))
    test = _test_video(work / "source", recipe.source_test_seed, recipe, ())
    return Data(recipe, _concat(train), val, _concat(anchor), test)


def _test_video(
    folder: Path, seed: int, recipe: Recipe, shifts: tuple[Shift, ...]
) -> tuple[Frames, list[Any], float]:
    video, events = _video(folder, seed, recipe.test_seconds, recipe, shifts)
    scene = WardScene(
        recipe.width,
        recipe.height,
        make_script(recipe.test_seconds, np.random.default_rng(seed)),
        seed=seed,
        noise=0.0,
        shifts=shifts,
    )
    return _decode(video, events, recipe.sample_fps, recipe, 0, scene), events, recipe.test_seconds


def build_target(recipe: Recipe, work: Path, name: str) -> Target:
    shifts = parse_shifts([name])
    folder = work / name.replace(":", "-").replace(",", "_")
    pool = []
    for k, seed in enumerate(recipe.pool_seeds):
        video, events = _video(folder, seed, recipe.pool_seconds, recipe, shifts)
        pool.append(_decode(video, events, recipe.pool_fps, recipe, k))
        video.unlink()  # decoded: an hour of video need not stay on disk
    tests = [_test_video(folder, seed, recipe, shifts) for seed in recipe.target_test_seeds]
    return Target(name, shifts, _concat(pool), tests)


# --------------------------------------------------------------------------- model


def normalise(images: np.ndarray, info: CheckpointInfo) -> Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    return (x - mean) / std


def train_source(data: Data, seed: int = 0) -> tuple[nn.Module, CheckpointInfo]:
    """The source model: ``seed`` draws its initial weights and its batches' order."""
    recipe = data.recipe
    torch.manual_seed(seed)
    model = build_backbone(recipe.arch, len(CLASSES), width=recipe.width_mult)
    info = CheckpointInfo(
        arch=recipe.arch,
        class_names=list(CLASSES),
        input_size=recipe.input_size,
        arch_kwargs={"width": recipe.width_mult},
    )
    x = normalise(data.train.images, info)
    dataset = _Augmented(x, torch.from_numpy(data.train.targets))
    config = SupervisedConfig(max_steps=recipe.source_steps, batch_size=32, lr=recipe.source_lr)
    train_supervised(model, dataset, config)
    model.eval()
    # 0.5 for every class, not thresholds chosen on the validation video: that video
    # is separated with a wide margin, the F1-optimal thresholds sit at its edge (0.03
    # for one class in a trial run), and any change of the weights then flips events
    scores = predict(model, normalise(data.val.images, info))
    chosen = best_f1_thresholds(torch.from_numpy(scores), torch.from_numpy(data.val.targets))
    logger.info("validation's F1-optimal thresholds %s; kept 0.5", [round(t, 3) for t in chosen])
    info.thresholds = [0.5] * len(CLASSES)
    return model, info


class _Augmented(Dataset[tuple[Tensor, Tensor]]):
    """Labeled tensors with the weak view drawn per item (translation, flip)."""

    def __init__(self, images: Tensor, targets: Tensor) -> None:
        self.images, self.targets = images, targets
        self._generator = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        from models.augment import weak_view

        image = weak_view(self.images[index][None], self._generator)[0]
        return image, self.targets[index]


class _Images(Dataset[Tensor]):
    """A tensor of images as a dataset."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch: int = 256) -> np.ndarray:
    model.eval()
    out = [torch.sigmoid(model(x[i : i + batch])) for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------- evaluation


def event_f1(
    scores: np.ndarray, frames: Frames, truth: list[Any], duration: float, info: CheckpointInfo
) -> float:
    from worker.detection.detector import DetectionConfig

    cfg = DetectionConfig()
    events = segment_events(
        frames.times,
        scores,
        info.class_names,
        info.thresholds,
        [t * cfg.offset_ratio for t in info.thresholds],
        min_duration_s=cfg.min_duration_s,
        merge_gap_s=cfg.merge_gap_s,
        padding_s=cfg.padding_s,
        frame_duration_s=1.0 / cfg.sample_fps,
        duration_s=duration,
    )
    metrics = evaluate_events([e.to_dict() for e in events], truth)
    return float(metrics.f1[0.5]["f1"])


def test_consistency(
    model: nn.Module, frames: Frames, info: CheckpointInfo, *, limit: int = 96
) -> float:
    """Mean attention consistency of a seeded sample of test frames, as the gate measures
    it (:func:`models.metrics.mean_attention_consistency`: top class, published ATCON
    settings), so the page can set the gate's label-free proxy beside the pointing game
    and mIoU measured against the objects' masks."""
    rng = np.random.default_rng(0)
    index = np.arange(len(frames))
    if len(index) > limit:
        index = np.sort(rng.choice(len(index), limit, replace=False))
    return mean_attention_consistency(model, normalise(frames.images[index], info))


def attention_scores(
    model: nn.Module, frames: Frames, info: CheckpointInfo, *, limit: int = 96
) -> tuple[float, float]:
    """Pointing game and mask mIoU, mean over classes of the (frame, active class) pairs."""
    assert frames.masks is not None
    pairs = [
        (i, c)
        for i in range(len(frames))
        for c in range(len(CLASSES))
        if frames.targets[i, c] and ((frames.masks[i] >> c) & 1).any()
    ]
    rng = np.random.default_rng(0)
    if len(pairs) > limit:
        pairs = [pairs[j] for j in sorted(rng.choice(len(pairs), limit, replace=False))]
    if not pairs:
        return math.nan, math.nan
    index = [i for i, _ in pairs]
    labels = torch.tensor([c for _, c in pairs])
    x = normalise(frames.images[index], info)
    masks = torch.from_numpy(np.stack([(frames.masks[i] >> c) & 1 for i, c in pairs]))
    hits, ious = mask_attention_scores(model, x, labels, masks, tolerance=3)
    per_class_hit = [float(hits[labels == c].float().mean()) for c in labels.unique()]
    per_class_iou = [float(ious[labels == c].mean()) for c in labels.unique()]
    return statistics.fmean(per_class_hit), statistics.fmean(per_class_iou)


def evaluate(
    model: nn.Module, info: CheckpointInfo, data: Data, target: Target, *, attention: bool = True
) -> dict[str, float]:
    f1s, all_scores, all_targets = [], [], []
    for frames, truth, duration in target.tests:
        scores = predict(model, normalise(frames.images, info))
        f1s.append(event_f1(scores, frames, truth, duration, info))
        all_scores.append(scores)
        all_targets.append(frames.targets)
    frame_map = mean_average_precision(
        torch.from_numpy(np.concatenate(all_scores)), torch.from_numpy(np.concatenate(all_targets))
    )
    frames, truth, duration = data.source_test
    source_scores = predict(model, normalise(frames.images, info))
    result = {
        "f1": statistics.fmean(f1s),
        "map": float(frame_map),
        "source_f1": event_f1(source_scores, frames, truth, duration, info),
    }
    if attention:
        pg, iou = zip(*(attention_scores(model, f, info) for f, _, _ in target.tests), strict=True)
        result["pointing"] = statistics.fmean(pg)
        result["miou"] = statistics.fmean(iou)
        result["consistency"] = statistics.fmean(
            test_consistency(model, f, info) for f, _, _ in target.tests
        )
    return result


# --------------------------------------------------------------------------- the K frames


def review_order(model: nn.Module, x: Tensor, batch: int = 128) -> np.ndarray:
    """Pool frame indices least-consistent first, as the review queue shows them."""
    values = [attention_consistency(model, x[i : i + batch]) for i in range(0, len(x), batch)]
    return np.argsort(torch.cat(values).numpy(), kind="stable")


def pick_labeled(order: np.ndarray, targets: np.ndarray, k: int, seed: int) -> list[int]:
    """The frames a clinician labels walking the queue (see the module docstring)."""
    if k == 0:
        return []
    rng = np.random.default_rng(1000 + seed)
    tonight = rng.random(len(targets)) < 0.5
    counts = np.zeros(targets.shape[1] + 1, dtype=np.int64)  # last: frames with no event
    chosen = []
    for i in order:
        if not tonight[i]:
            continue
        positives = np.flatnonzero(targets[i])
        wanted = any(counts[c] < k for c in positives) if positives.size else counts[-1] < k
        if wanted:
            chosen.append(int(i))
            counts[positives] += 1
            if not positives.size:
                counts[-1] += 1
        if (counts >= k).all():
            break
    return chosen


# --------------------------------------------------------------------------- methods


@dataclass
class Budget:
    steps: int = 100
    batch_size: int = 16
    unlabeled_batch_size: int = 32
    lr: float = 5e-4
    adabn_images: int = 2048


def gate_frames(
    targets: np.ndarray, chosen: Sequence[int], seed: int, fraction: float
) -> list[int]:
    r"""The labeled validation frames the product's gate decides on, beside ``chosen``.

    The review queue interleaves a uniformly random sample of the pool (validation)
    with the least-consistent-first frames (training) so that ``fraction`` of what a
    clinician labels validates (:meth:`worker.pool.frames.FramePool.review_queue`):
    with :math:`n` training frames labeled, :math:`v = \lceil n f / (1 - f) \rceil`
    validation frames are, drawn here uniformly (seeded) from the rest of the pool.
    """
    if not chosen or fraction <= 0:
        return []
    count = math.ceil(len(chosen) * fraction / (1 - fraction)) if fraction < 1 else len(chosen)
    rest = np.setdiff1d(np.arange(len(targets)), np.asarray(chosen))
    rng = np.random.default_rng(2000 + seed)
    return sorted(int(i) for i in rng.choice(rest, min(count, len(rest)), replace=False))


def gate_decision(
    source: nn.Module,
    candidate: nn.Module,
    method: str,
    info: CheckpointInfo,
    x: Tensor,
    targets: np.ndarray,
) -> tuple[bool, str]:
    """The product's promotion gate (:func:`worker.serving.versions.promotion_gate`, with
    the settings' defaults) on labeled validation frames ``x``: ``(promoted, reason)``."""
    from worker.serving.versions import promotion_gate
    from worker.training.adapters import evaluate_model

    labeled = TensorDataset(x, torch.from_numpy(targets).float())
    before = evaluate_model(source, info, labeled)
    after = evaluate_model(candidate, info, labeled)
    fields = Settings.model_fields
    decision = promotion_gate(
        before,
        after,
        f1_tolerance_points=float(fields["gate_f1_tolerance_points"].default),
        maps_unchanged=set(parse_method(method)) == {"recalibrate"},
        strict_consistency=bool(fields["gate_strict_consistency"].default),
    )
    return decision.promote, decision.reason


def methods_for(k: int, names: Sequence[str]) -> list[str]:
    """The methods of the table at K: without labels only unsupervised ones, with labels
    the supervised one and its combinations."""
    out = []
    for name in names:
        parts = parse_method(name) if name != NO_ADAPTATION else ()
        if (k == 0) == ("supervised" not in parts):
            out.append(name)
    return out


def run_method(
    method: str,
    source: nn.Module,
    info: CheckpointInfo,
    pool_x: Tensor,
    labeled: TensorDataset | None,
    budget: Budget,
    seed: int,
    anchor_x: Tensor | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    model = copy.deepcopy(source)
    pool = _Images(pool_x)
    anchors = _Images(anchor_x) if anchor_x is not None else None
    pairs = cast("Dataset[tuple[Tensor, Tensor]] | None", labeled)
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if method != NO_ADAPTATION:
        # the product's path (worker.training.adapters.adapt_checkpoint): adapt()
        config = AdaptConfig(
            method=method,
            steps=budget.steps,
            lr=budget.lr,
            batch_size=budget.batch_size,
            unlabeled_batch_size=budget.unlabeled_batch_size,
            adabn_images=budget.adabn_images,
            seed=seed,
        )
        try:
            outcome = adapt(
                model, pool, config, labeled=pairs, anchor=anchors, thresholds=info.thresholds
            )
        except TrainingError as exc:
            # the product's job fails and the camera keeps its model: so does this row
            extra["stopped"] = str(exc)[:200]
        else:
            extra["recalibration"] = outcome.recalibration
            extra["pseudo_share"] = outcome.pseudo_share
            if outcome.labeled_steps is not None:
                extra["labeled_steps"] = outcome.labeled_steps
    extra["seconds"] = round(time.perf_counter() - started, 2)
    model.eval()
    return model, extra


# --------------------------------------------------------------------------- the run


#: the methods of the main table (K = 0 rows: no label; K > 0 rows: with the labels)
ALL_METHODS: tuple[str, ...] = (
    NO_ADAPTATION,
    "adabn",
    "tent",
    ATCON,
    ADABN_ATCON,
    "adabn+pseudo",
    "distill+anchor",
    "recalibrate",
    "supervised",
    "adabn+supervised",
    "tent+supervised",
    "atcon+supervised",
    "adabn+atcon+supervised",
    "adabn+pseudo+supervised",
    "anchor+supervised",
    "supervised+recalibrate",
    "anchor+supervised+recalibrate",
)
#: the product's default nightly methods in order of preference (worker.settings:
#: ATCON_FINETUNE_METHOD); the first whose needs the frames meet runs
DEFAULT_METHOD = "adabn+atcon+supervised,adabn"
#: the share of labeled pool frames that validate (the setting ATCON_POOL_VAL_FRACTION)
_VAL_FRACTION = float(Settings.model_fields["pool_val_fraction"].default)


def default_for_k(default: str, k: int) -> str:
    """The method of the preference list ``default`` that runs with ``k`` labels per class.

    As in the product (``worker.finetune.job._method_for_frames``): a method that needs
    labels is skipped when there are none; the last one runs if nothing else can.
    """
    methods = [m.strip() for m in default.split(",") if m.strip()]
    for method in methods:
        if k > 0 or "supervised" not in parse_method(method):
            return method
    return methods[-1]


def _summary(runs: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in runs if r.get(key) is not None and not math.isnan(r[key])]
    return statistics.fmean(values) if values else math.nan


def _interval(values: list[float]) -> list[float]:
    mean, low, high = paired_interval(values)
    return [100 * mean, 100 * low, 100 * high]


def run_target(
    data: Data,
    target: Target,
    source: nn.Module,
    info: CheckpointInfo,
    *,
    ks: Sequence[int],
    seeds: int,
    methods: Sequence[str],
    budget: Budget,
    attention: bool,
    default: str | None = None,
) -> dict[str, Any]:
    """Every method at every K and seed on one target; lifts paired by seed.

    With ``default`` (the product's preference list), each K > 0 also gets the
    :data:`PRODUCT` row: the default method's candidate of each seed through the
    promotion gate on :func:`gate_frames`, the source model where it is rejected.
    """
    pool_x = normalise(target.pool.images, info)
    anchor_x = normalise(data.anchor.images, info)
    before = evaluate(source, info, data, target, attention=attention)
    order = review_order(source, pool_x)
    by_k: dict[str, Any] = {}
    for k in ks:
        names = methods_for(k, methods)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
        gated = default_for_k(default, k) if default is not None and k > 0 else None
        if gated is not None and gated not in names:
            logger.info("%s K=%d: the default %s is not run, no gated row", target.name, k, gated)
            gated = None
        if gated is not None:
            runs[PRODUCT] = []
        labels_used: list[int] = []
        for seed in range(seeds):
            chosen = pick_labeled(order, target.pool.targets, k, seed)
            labels_used.append(len(chosen))
            labeled = (
                TensorDataset(pool_x[chosen], torch.from_numpy(target.pool.targets[chosen]))
                if chosen
                else None
            )
            for method in names:
                if method == NO_ADAPTATION:
                    runs[method].append({**before, "seconds": 0.0})
                    continue
                model, extra = run_method(
                    method, source, info, pool_x, labeled, budget, seed, anchor_x
                )
                metrics = evaluate(model, info, data, target, attention=attention)
                runs[method].append({**metrics, **extra})
                if method == gated:
                    val = gate_frames(target.pool.targets, chosen, seed, _VAL_FRACTION)
                    promoted, reason = gate_decision(
                        source, model, method, info, pool_x[val], target.pool.targets[val]
                    )
                    kept = metrics if promoted else before
                    runs[PRODUCT].append(
                        {
                            **kept,
                            "seconds": extra["seconds"],
                            "promoted": promoted,
                            "gate_frames": len(val),
                            "gate_reason": reason,
                        }
                    )
                    logger.info("%s K=%d seed %d gate: %s", target.name, k, seed, reason)
                logger.info(
                    "%s K=%d seed %d %-26s F1 %.3f (source %.3f) %.0f s",
                    target.name,
                    k,
                    seed,
                    method,
                    metrics["f1"],
                    metrics["source_f1"],
                    extra["seconds"],
                )
        by_k[str(k)] = {
            "labeled_frames": labels_used,
            "methods": {m: _method_block(runs[m], before, data) for m in runs},
        }
        if gated is not None:
            product = by_k[str(k)]["methods"][PRODUCT]
            product["method"] = gated
            product["promoted"] = sum(1 for r in runs[PRODUCT] if r["promoted"])
            product["gate_frames"] = [r["gate_frames"] for r in runs[PRODUCT]]
    return {"before": before, "by_k": by_k}


def _method_block(
    runs: list[dict[str, Any]], before: dict[str, float], data: Data
) -> dict[str, Any]:
    f1 = [r["f1"] - before["f1"] for r in runs]
    source = [r["source_f1"] - before["source_f1"] for r in runs]
    block: dict[str, Any] = {
        "runs": runs,
        "mean": {
            key: _summary(runs, key)
            for key in ("f1", "map", "source_f1", "pointing", "miou", "consistency")
        },
        "lift_points": _interval(f1),
        "source_change_points": _interval(source),
        "map_lift_points": _interval([r["map"] - before["map"] for r in runs]),
        "seconds": _summary(runs, "seconds"),
        "stopped": sum(1 for r in runs if r.get("stopped")),
    }
    if "pointing" in before and all("pointing" in r for r in runs):
        block["pointing_lift_points"] = _interval(
            [r["pointing"] - before["pointing"] for r in runs]
        )
        block["miou_lift_points"] = _interval([r["miou"] - before["miou"] for r in runs])
        block["consistency_change"] = _interval(
            [r["consistency"] - before["consistency"] for r in runs]
        )
    return block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a toy size (the test command)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--ks", default="0,3,10", help="labeled frames per class")
    parser.add_argument(
        "--main-shift",
        default="night:4,camera:1",
        help="the target of the main table (default: a grey, dark, noisy, slightly zoomed "
        "night camera)",
    )
    parser.add_argument(
        "--other-shifts",
        default="camera:3,room:3,blur:3,compression:3",
        help="targets where the default is checked against no adaptation (K = 3)",
    )
    parser.add_argument("--severities", default="1,2,3,5", help="night severities for the plot")
    parser.add_argument("--default", default=DEFAULT_METHOD, help="the candidate default")
    parser.add_argument("--steps", type=int, default=Budget.steps)
    parser.add_argument("--sweep-seeds", type=int, default=2, help="seeds per severity")
    parser.add_argument(
        "--other-seeds", type=int, default=0, help="seeds per other shift (0: --seeds)"
    )
    parser.add_argument("--methods", default=",".join(ALL_METHODS))
    parser.add_argument("--work", type=Path, default=ROOT / ".bench-cache" / "adaptation")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--page", type=Path, default=None, help="the results page to write")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument(
        "--source-seeds",
        type=int,
        default=1,
        help="above 1: only the main table, on that many source models (seeds 0..N-1), "
        "with lifts summarised across them (--json and --page get that study)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    recipe = Recipe.quick() if args.quick else Recipe()
    budget = Budget(steps=args.steps if not args.quick else min(args.steps, 4))
    ks = [int(k) for k in args.ks.split(",")]
    if any(k < 0 for k in ks):
        parser.error("--ks must be non-negative")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    defaults = [m.strip() for m in args.default.split(",") if m.strip()]
    for method in [*methods, *defaults]:
        if method != NO_ADAPTATION:
            parse_method(method)
    if NO_ADAPTATION not in methods:
        methods.insert(0, NO_ADAPTATION)
    work = args.work / recipe.key()
    if args.quick:
        shutil.rmtree(work, ignore_errors=True)
    data = build_source(recipe, work)
    if args.source_seeds > 1:
        return _across_sources(args, argv, data, recipe, budget, ks, methods, started)
    source, info = train_source(data)
    logger.info("source model trained (%.0f s)", time.perf_counter() - started)

    results: dict[str, Any] = {
        "machine": {
            "cpu": _cpu_name(),
            "cores": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "recipe": asdict(recipe),
        "budget": asdict(budget),
        "seeds": args.seeds,
        "other_seeds": args.other_seeds or args.seeds,
        "sweep_seeds": max(1, min(args.seeds, args.sweep_seeds)),
        "ks": ks,
        "default_candidate": args.default,
        "thresholds": info.thresholds,
    }
    main_target = build_target(recipe, work, args.main_shift)
    results["main"] = {
        "shift": args.main_shift,
        **run_target(
            data,
            main_target,
            source,
            info,
            ks=ks,
            seeds=args.seeds,
            methods=methods,
            budget=budget,
            attention=True,
            default=args.default,
        ),
    }
    results["in_domain_f1"] = results["main"]["before"]["source_f1"]
    examples = _gradcam_examples(data, main_target, source, info, budget, args.default, ks)
    del main_target
    k_check = 3 if 3 in ks else max(ks)
    # K = 0 rows take the unsupervised methods, K = 3 rows the supervised ones
    check_methods = list(
        dict.fromkeys([NO_ADAPTATION, "adabn", ATCON, *defaults, "supervised", "anchor+supervised"])
    )
    others: dict[str, Any] = {}
    shift_names = [s for s in args.other_shifts.split(",") if s.strip()]
    severities = [int(s) for s in args.severities.split(",") if s.strip()]
    if args.quick:
        shift_names, severities = shift_names[:1], severities[:1]
    for name in shift_names:
        target = build_target(recipe, work, name)
        others[name] = run_target(
            data,
            target,
            source,
            info,
            ks=sorted({0, k_check}),
            seeds=args.other_seeds or args.seeds,
            methods=check_methods,
            budget=budget,
            attention=False,
            default=args.default,
        )
    results["other_shifts"] = others
    sweep: dict[str, Any] = {}
    sweep_methods = list(
        dict.fromkeys([NO_ADAPTATION, "adabn", ATCON, *defaults, "supervised", "atcon+supervised"])
    )
    main_shifts = parse_shifts([args.main_shift])
    main_severity = main_shifts[0]
    rest = "".join(f",{s}" for s in main_shifts[1:])
    for severity in severities:
        name = f"{main_severity.name}:{severity}{rest}"
        target = build_target(recipe, work, name)
        sweep[str(severity)] = run_target(
            data,
            target,
            source,
            info,
            ks=sorted({0, k_check}),
            seeds=max(1, min(args.seeds, args.sweep_seeds)),
            methods=sweep_methods,
            budget=budget,
            attention=False,
            default=args.default,
        )
    results["severity_sweep"] = {
        "shift": main_severity.name,
        "with": rest.lstrip(","),
        "k": k_check,
        "runs": sweep,
    }
    results["wall_minutes"] = round((time.perf_counter() - started) / 60, 1)
    results["verdict"] = verdict(results)
    command = _write_outputs(args, argv, results)
    if args.page is not None:
        from bench import adaptation_report

        adaptation_report.write_page(results, args.page, command, examples)
    print(json.dumps(_jsonable(results["verdict"]), indent=2))
    return 0


def _across_sources(
    args: argparse.Namespace,
    argv: list[str] | None,
    data: Data,
    recipe: Recipe,
    budget: Budget,
    ks: list[int],
    methods: list[str],
    started: float,
) -> int:
    r"""The main table on ``--source-seeds`` source models, summarised across them.

    For source model :math:`m` and seed :math:`s` the lift is :math:`d_{ms}`; the
    per-source mean is :math:`\bar d_m`. ``across`` is the Student-t interval of the
    :math:`\bar d_m` over the :math:`M` source models (:math:`M - 1` degrees of
    freedom): the variance a new source model brings, which the per-seed intervals
    of one source model leave out.
    """
    target = build_target(recipe, args.work / recipe.key(), args.main_shift)
    per_source: list[dict[str, Any]] = []
    for seed in range(args.source_seeds):
        source, info = train_source(data, seed)
        logger.info("source model %d trained (%.0f s)", seed, time.perf_counter() - started)
        per_source.append(
            run_target(
                data,
                target,
                source,
                info,
                ks=ks,
                seeds=args.seeds,
                methods=methods,
                budget=budget,
                attention=False,
                default=args.default,
            )
        )
    summary: dict[str, dict[str, Any]] = {}
    for k in (str(k) for k in ks):
        for method in per_source[0]["by_k"][k]["methods"]:
            blocks = [r["by_k"][k]["methods"][method] for r in per_source]
            means = [b["lift_points"][0] for b in blocks]
            summary.setdefault(k, {})[method] = {
                "per_source": means,
                "across": list(paired_interval([m / 100 for m in means])),
                "before_f1": [r["before"]["f1"] for r in per_source],
                "in_domain_f1": [r["before"]["source_f1"] for r in per_source],
            }
            summary[k][method]["across"] = [100 * v for v in summary[k][method]["across"]]
    results = {
        "machine": {
            "cpu": _cpu_name(),
            "cores": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "recipe": asdict(recipe),
        "budget": asdict(budget),
        "atcon_contrasts": atcon_contrasts(per_source, [str(k) for k in ks]),
        "shift": args.main_shift,
        "source_seeds": args.source_seeds,
        "seeds": args.seeds,
        "ks": ks,
        "default_candidate": args.default,
        "per_source": per_source,
        "across_sources": summary,
        "wall_minutes": round((time.perf_counter() - started) / 60, 1),
    }
    command = _write_outputs(args, argv, results)
    if args.page is not None:
        from bench import adaptation_report

        adaptation_report.write_sources_page(results, args.page, command)
    return 0


def atcon_contrasts(per_source: list[dict[str, Any]], ks: Sequence[str]) -> dict[str, Any]:
    r"""What the ``atcon`` component adds: each method with it against the same method
    without it, paired by seed on each source model.

    For source model :math:`m` and seed :math:`s`,
    :math:`c_{ms} = F1(\text{with}) - F1(\text{without})`; ``per_source`` holds the mean
    and paired 95% interval of :math:`c_{m\cdot}` over seeds, ``across`` the Student-t
    interval of the per-source means (as in :func:`_across_sources`), in points.
    Only methods whose counterpart ran at the same K are compared.
    """
    out: dict[str, Any] = {}
    for k in ks:
        methods = per_source[0]["by_k"][k]["methods"]
        for method in methods:
            if method in (NO_ADAPTATION, PRODUCT) or "atcon" not in parse_method(method):
                continue
            rest = tuple(c for c in parse_method(method) if c != "atcon")
            without = "+".join(rest) or NO_ADAPTATION
            if without not in methods:
                continue
            intervals = []
            for result in per_source:
                runs = result["by_k"][k]["methods"]
                pairs = zip(runs[method]["runs"], runs[without]["runs"], strict=True)
                intervals.append(_interval([a["f1"] - b["f1"] for a, b in pairs]))
            means = [i[0] for i in intervals]
            out.setdefault(k, {})[method] = {
                "without": without,
                "per_source": intervals,
                "across": [100 * v for v in paired_interval([m / 100 for m in means])],
            }
    return out


def _write_outputs(
    args: argparse.Namespace, argv: list[str] | None, results: dict[str, Any]
) -> str:
    """Write ``--json`` (when given), log the wall time; return the command line run."""
    given = argv if argv is not None else sys.argv[1:]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_jsonable(results), indent=1) + "\n")
    logger.info("done in %.1f minutes", results["wall_minutes"])
    return " ".join(["python -m bench.adaptation", *given])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    return value


def _gradcam_examples(
    data: Data,
    target: Target,
    source: nn.Module,
    info: CheckpointInfo,
    budget: Budget,
    default: str,
    ks: Sequence[int],
) -> dict[str, Any]:
    """Grad-CAM of the same night frames before and after the default method (seed 0)."""
    from models.attention import grad_cam
    from models.maps import normalize_maps, upsample_maps

    frames = target.tests[0][0]
    picks: list[tuple[int, int]] = []
    for c in range(len(CLASSES)):
        rows = np.flatnonzero(frames.targets[:, c])
        if rows.size:
            picks.append((int(rows[len(rows) // 2]), c))
    k = 3 if 3 in ks else max(ks)
    pool_x = normalise(target.pool.images, info)
    chosen = pick_labeled(review_order(source, pool_x), target.pool.targets, k, 0)
    labeled = (
        TensorDataset(pool_x[chosen], torch.from_numpy(target.pool.targets[chosen]))
        if chosen
        else None
    )
    default = default_for_k(default, k if chosen else 0)
    anchor_x = normalise(data.anchor.images, info)
    adapted, _ = run_method(default, source, info, pool_x, labeled, budget, 0, anchor_x)
    index = [i for i, _ in picks]
    x = normalise(frames.images[index], info)
    labels = torch.tensor([c for _, c in picks])
    size = (frames.images.shape[1], frames.images.shape[2])
    out: dict[str, Any] = {
        "frames": frames.images[index],
        "labels": [CLASSES[c] for c in labels],
        "method": default,
        "k": k if chosen else 0,
    }
    for name, model in (("before", source), ("after", adapted)):
        cams = normalize_maps(upsample_maps(grad_cam(model, x, labels), size))
        out[name] = cams.numpy()
        out[f"{name}_scores"] = predict(model, x)[np.arange(len(index)), labels.numpy()]
    return out


def _product_entry(methods: dict[str, Any]) -> dict[str, Any]:
    """The :data:`PRODUCT` row of one K in short: lift, promotions, gate frames."""
    entry = methods.get(PRODUCT)
    if entry is None:
        return {}
    return {
        "product_lift_points": entry["lift_points"],
        "promoted": entry["promoted"],
        "runs": len(entry["runs"]),
        "gate_frames": entry["gate_frames"],
    }


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """Which method recovers the shift: lift interval above zero, never worse in-domain."""
    main = results["main"]
    before = main["before"]
    cost = results["in_domain_f1"] - before["f1"]
    rows = []
    for k, block in main["by_k"].items():
        for method, entry in block["methods"].items():
            if method in (NO_ADAPTATION, PRODUCT):
                continue
            lift, low, _high = entry["lift_points"]
            source_mean = entry["source_change_points"][0]
            rows.append(
                {
                    "k": int(k),
                    "method": method,
                    "lift_points": entry["lift_points"],
                    "recovered": (lift / 100) / cost if cost > 0 else math.nan,
                    "source_change_points": entry["source_change_points"],
                    "significant": bool(low > 0),
                    "in_domain_kept": bool(source_mean > -1.0),
                }
            )
    good = [r for r in rows if r["significant"] and r["in_domain_kept"]]
    default = results["default_candidate"]
    others = results.get("other_shifts", {})
    default_other: dict[str, dict[str, Any]] = {}
    for name, block in others.items():
        for k, by_k in block["by_k"].items():
            method = default_for_k(default, int(k))
            if method in by_k["methods"]:
                default_other.setdefault(name, {})[str(k)] = {
                    "method": method,
                    "lift_points": by_k["methods"][method]["lift_points"],
                    **_product_entry(by_k["methods"]),
                }
    best_by_k: dict[str, Any] = {}
    for k in sorted({r["k"] for r in rows}):
        candidates = sorted(
            (r for r in good if r["k"] == k), key=lambda r: r["lift_points"][0], reverse=True
        )
        best_by_k[str(k)] = candidates[0] if candidates else None
    return {
        "shift": main["shift"],
        "in_domain_f1": results["in_domain_f1"],
        "shifted_f1": before["f1"],
        "shift_cost_points": 100 * cost,
        "best_by_k": best_by_k,
        "default": default,
        "default_rows": [r for r in rows if r["method"] == default_for_k(default, r["k"])],
        "product_rows": {k: _product_entry(b["methods"]) for k, b in main["by_k"].items()},
        "default_on_other_shifts": default_other,
        "atcon_rows": [r for r in rows if "atcon" in r["method"].split("+")],
    }


if __name__ == "__main__":
    raise SystemExit(main())
