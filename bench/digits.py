"""The paper's small-labeled-set claim on real data: scikit-learn's handwritten digits.

ATCON (Mirzazadeh et al., WACV 2023) reports that fine-tuning with the attention-
consistency loss on unlabeled images lifts F1 when labels are few. This reproduces
the small-training-set experiment offline on the 1,797 real 8x8 digits bundled with
scikit-learn, upsampled to 32x32 with three channels:

- a fixed stratified test set, and a fixed stratified validation split carved from
  the rest (the labeled pool), used only to choose hyperparameters and never for
  the reported figures;
- for each K and seed: K labeled images per class drawn from what remains, every
  other remaining image unlabeled; a quarter-width ResNet-18 (3x3 stem) trained
  from scratch for a supervised warm-up;
- baseline: S more supervised steps; ATCON: S steps of alternating fine-tuning from
  the same warm-up, same learning rate and step budget;
- ATCON with the published mask (``gb_normalization="none"``) and the ``"max"``
  variant, each without and with the guards (collapse stop, gradient balancing,
  ATCON warm-up, prediction preservation);
- paired lift in macro-F1 over seeds with a 95% t interval;
- weak localisation: each test digit on a 64x64 canvas at a random position, the
  Grad-CAM mIoU of its box for the baseline and the ATCON models.

    python -m bench.digits                                 # full run, writes the page
    python -m bench.digits --quick --out /tmp/digits       # a smoke run in a minute
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import paired_interval
from models._exceptions import TrainingError
from models.atcon import MASK_INTENSITY, attention_consistency
from models.attention import grad_cam
from models.backbones import build_backbone
from models.finetune import FinetuneConfig, finetune_atcon
from models.guards import CollapseGuardConfig
from models.maps import normalize_maps, upsample_maps
from models.metrics import macro_f1, map_box_iou, predictions_from_scores
from models.training import SupervisedConfig, predict_scores, train_supervised

logger = logging.getLogger("bench.digits")

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
CANVAS = 64
NUM_CLASSES = 10
VARIANTS = ("none", "none+guards", "max", "max+guards")
#: the alternating schedule with ATCON weight 0: what the schedule alone costs
CONTROL = "control"
METHODS = ("baseline", CONTROL, *VARIANTS)


# --------------------------------------------------------------------------- data


@dataclass
class Digits:
    images: Tensor  # (N, 3, 32, 32) normalised
    raw: Tensor  # (N, 32, 32) in [0, 1]
    labels: Tensor  # (N,)
    test: list[int]
    val: list[int]
    pool: list[int]


def load_digits_data(test_per_class: int, val_per_class: int) -> Digits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw8 = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    raw = F.interpolate(raw8[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    raw = raw[:, 0].clamp(0, 1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    generator = torch.Generator().manual_seed(2024)
    test: list[int] = []
    val: list[int] = []
    pool: list[int] = []
    for c in range(NUM_CLASSES):
        found = torch.nonzero(labels == c).flatten()
        members = found[torch.randperm(len(found), generator=generator)].tolist()
        test += members[:test_per_class]
        val += members[test_per_class : test_per_class + val_per_class]
        pool += members[test_per_class + val_per_class :]
    return Digits(_normalise(raw), raw, labels, sorted(test), sorted(val), sorted(pool))


def _normalise(raw: Tensor) -> Tensor:
    return ((raw - 0.5) / 0.5)[:, None].repeat(1, 3, 1, 1)


class ShiftedDigits(Dataset[tuple[Tensor, Tensor]]):
    """Labeled digits with a random shift of up to ``shift`` px (torch's global generator)."""

    def __init__(self, images: Tensor, labels: Tensor, shift: int = 3) -> None:
        self.images = F.pad(images, (shift,) * 4, value=-1.0)
        self.targets = F.one_hot(labels, NUM_CLASSES).float()
        self.shift = shift

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        dy, dx = torch.randint(0, 2 * self.shift + 1, (2,)).tolist()
        return self.images[index, :, dy : dy + SIZE, dx : dx + SIZE], self.targets[index]


@dataclass
class Split:
    labeled: list[int]
    unlabeled: list[int]


def draw_split(data: Digits, k: int, seed: int) -> Split:
    generator = torch.Generator().manual_seed(10_000 + seed)
    pool = torch.tensor(data.pool)
    labeled: list[int] = []
    for c in range(NUM_CLASSES):
        members = pool[data.labels[pool] == c]
        labeled += members[torch.randperm(len(members), generator=generator)[:k]].tolist()
    chosen = set(labeled)
    return Split(sorted(labeled), [i for i in data.pool if i not in chosen])


def canvases(data: Digits, indices: list[int], seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Each digit pasted at a random place on a blank 64x64 canvas, with its ink's box."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.zeros(len(indices), CANVAS, CANVAS)
    boxes = torch.zeros(len(indices), 4)
    for row, i in enumerate(indices):
        top, left = torch.randint(0, CANVAS - SIZE + 1, (2,), generator=generator).tolist()
        raw[row, top : top + SIZE, left : left + SIZE] = data.raw[i]
        ys, xs = torch.nonzero(data.raw[i] > 0.25, as_tuple=True)
        boxes[row] = torch.tensor(
            [left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1]
        )
    return _normalise(raw), data.labels[indices], boxes


# --------------------------------------------------------------------------- runs


@dataclass
class Settings:
    width: int
    warmup_steps: int
    steps: int
    batch_size: int
    unlabeled_batch_size: int
    warmup_lr: float


@dataclass
class Candidate:
    """One ATCON setting tried on the validation split."""

    variant: str
    atcon_weight: float
    labeled_probability: float
    mask_intensity: float
    layer: str
    balance_ratio: float | None = None  # guarded variants only
    preserve_weight: float = 0.0  # guarded variants only

    @property
    def guarded(self) -> bool:
        return self.variant.endswith("+guards")

    def label(self) -> str:
        parts = [
            f"w={self.atcon_weight:g}",
            f"pL={self.labeled_probability:g}",
            f"mi={self.mask_intensity:g}",
            self.layer,
        ]
        if self.balance_ratio is not None:
            parts.append(f"balance={self.balance_ratio:g}")
        if self.guarded:
            parts.append(f"kl={self.preserve_weight:g}")
        return " ".join(parts)


def _model(width: int) -> nn.Module:
    return build_backbone("resnet18_slim", NUM_CLASSES, width=width)


def warm_start(data: Digits, split: Split, settings: Settings, seed: int) -> dict[str, Tensor]:
    torch.manual_seed(seed)
    model = _model(settings.width)
    labeled = ShiftedDigits(data.images[split.labeled], data.labels[split.labeled])
    config = SupervisedConfig(
        epochs=1,
        max_steps=settings.warmup_steps,
        batch_size=min(settings.batch_size, len(labeled)),
        lr=settings.warmup_lr,
        multi_label=False,
        seed=seed,
    )
    train_supervised(model, labeled, config)
    return copy.deepcopy(model.state_dict())


def run_baseline(
    data: Digits, split: Split, start: dict[str, Tensor], settings: Settings, lr: float, seed: int
) -> nn.Module:
    model = _model(settings.width)
    model.load_state_dict(start)
    labeled = ShiftedDigits(data.images[split.labeled], data.labels[split.labeled])
    config = SupervisedConfig(
        epochs=1,
        max_steps=settings.steps,
        batch_size=min(settings.batch_size, len(labeled)),
        lr=lr,
        multi_label=False,
        seed=seed + 1,
    )
    train_supervised(model, labeled, config)
    return model


def atcon_config(
    candidate: Candidate, split: Split, settings: Settings, lr: float, seed: int
) -> FinetuneConfig:
    p = candidate.labeled_probability
    alpha = p / (1 - p) * len(split.unlabeled) / len(split.labeled)
    guarded = candidate.guarded
    return FinetuneConfig(
        schedule="alternating",
        steps=settings.steps,
        lr=lr,
        batch_size=min(settings.batch_size, len(split.labeled)),
        unlabeled_batch_size=settings.unlabeled_batch_size,
        alpha=alpha,
        min_labeled_fraction=0.0,  # alpha sets pL exactly; no floor under it
        atcon_weight=candidate.atcon_weight,
        atcon_warmup_steps=settings.steps // 5 if guarded else 0,
        balance_gradients=guarded,
        balance_ratio=candidate.balance_ratio or 1.0,
        preserve_weight=candidate.preserve_weight if guarded else 0.0,
        mask_intensity=candidate.mask_intensity,
        gb_normalization="none"
        if candidate.variant == CONTROL
        else candidate.variant.split("+")[0],
        layer=candidate.layer,
        multi_label=False,
        seed=seed + 1,
        guard=CollapseGuardConfig(enabled=guarded, window=4),
    )


@dataclass
class AtconRun:
    model: nn.Module
    collapsed: bool
    final_distinct: float | None


def run_atcon(
    data: Digits,
    split: Split,
    start: dict[str, Tensor],
    settings: Settings,
    candidate: Candidate,
    lr: float,
    seed: int,
) -> AtconRun:
    model = _model(settings.width)
    model.load_state_dict(start)
    labeled = ShiftedDigits(data.images[split.labeled], data.labels[split.labeled])
    unlabeled = TensorDataset(data.images[split.unlabeled])
    config = atcon_config(candidate, split, settings, lr, seed)
    try:
        outcome = finetune_atcon(model, unlabeled, config, labeled=labeled)
    except TrainingError as exc:  # the guard stopped it: the warm-up model is kept
        logger.info("    stopped: %s", str(exc).split(".")[0])
        return AtconRun(model, True, None)
    final = outcome.final_stats["distinct"] if outcome.final_stats else None
    return AtconRun(model, False, final)


def f1_of(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    scores, _ = predict_scores(model, TensorDataset(images), multi_label=False, batch_size=256)
    predictions = predictions_from_scores(scores, multi_label=False)
    return macro_f1(predictions, F.one_hot(labels, NUM_CLASSES).bool())


def localisation(model: nn.Module, images: Tensor, labels: Tensor, boxes: Tensor) -> float:
    ious = []
    for start in range(0, len(images), 100):
        chunk = slice(start, start + 100)
        cams = grad_cam(model, images[chunk], labels[chunk])
        maps = normalize_maps(upsample_maps(cams, (CANVAS, CANVAS)))
        ious.append(map_box_iou(maps, boxes[chunk], threshold=0.5))
    return float(torch.cat(ious).mean())


def consistency_of(model: nn.Module, images: Tensor) -> float:
    return float(
        torch.cat(
            [attention_consistency(model, images[i : i + 100]) for i in range(0, len(images), 100)]
        ).mean()
    )


# --------------------------------------------------------------------------- selection


def candidates_stage1(variant: str, grid: dict[str, Any]) -> list[Candidate]:
    if variant.endswith("+guards"):
        return [
            Candidate(
                variant,
                1.0,
                grid["pL"],
                grid["mask"],
                "layer4",
                balance_ratio=ratio,
                preserve_weight=grid["preserve"],
            )
            for ratio in grid["balance_ratios"]
        ]
    return [
        Candidate(variant, weight, grid["pL"], grid["mask"], "layer4") for weight in grid["weights"]
    ]


def candidates_stage2(best: Candidate, grid: dict[str, Any]) -> list[Candidate]:
    out = [dataclasses.replace(best, layer="layer3")]
    out += [dataclasses.replace(best, mask_intensity=m) for m in grid["alt_masks"]]
    out += [dataclasses.replace(best, labeled_probability=p) for p in grid["alt_pL"]]
    if best.guarded:
        out += [dataclasses.replace(best, preserve_weight=w) for w in grid["alt_preserve"]]
    return out


def _trial(
    data: Digits,
    split: Split,
    start: dict[str, Tensor],
    settings: Settings,
    candidate: Candidate,
    lr: float,
    seed: int,
    k: int,
    tried: list[dict[str, Any]],
) -> tuple[float, Candidate]:
    result = run_atcon(data, split, start, settings, candidate, lr, seed)
    score = f1_of(result.model, data.images[data.val], data.labels[data.val])
    tried.append(
        {
            "k": k,
            "method": candidate.variant,
            "setting": candidate.label(),
            "val_f1": score,
            "collapsed": result.collapsed,
        }
    )
    logger.info(
        "  K=%d %s %s: val F1 %.3f%s",
        k,
        candidate.variant,
        candidate.label(),
        score,
        " (stopped)" if result.collapsed else "",
    )
    return score, candidate


def select(
    data: Digits, k: int, settings: Settings, grid: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Choose the baseline learning rate and each ATCON variant's setting on validation."""
    split = draw_split(data, k, seed)
    start = warm_start(data, split, settings, seed)
    val_images, val_labels = data.images[data.val], data.labels[data.val]
    tried: list[dict[str, Any]] = []
    lr_scores = {}
    for lr in grid["lrs"]:
        model = run_baseline(data, split, start, settings, lr, seed)
        lr_scores[lr] = f1_of(model, val_images, val_labels)
        tried.append(
            {"k": k, "method": "baseline", "setting": f"lr={lr:g}", "val_f1": lr_scores[lr]}
        )
        logger.info("  K=%d baseline lr=%g: val F1 %.3f", k, lr, lr_scores[lr])
    lr = max(grid["lrs"], key=lambda v: lr_scores[v])
    chosen: dict[str, Candidate] = {}
    for variant in VARIANTS:
        scores: list[tuple[float, Candidate]] = []
        for candidate in candidates_stage1(variant, grid):
            scores.append(_trial(data, split, start, settings, candidate, lr, seed, k, tried))
        best = max(scores, key=lambda item: item[0])[1]
        for candidate in candidates_stage2(best, grid):
            scores.append(_trial(data, split, start, settings, candidate, lr, seed, k, tried))
        chosen[variant] = max(scores, key=lambda item: item[0])[1]
    return {"lr": lr, "chosen": chosen, "tried": tried}


# --------------------------------------------------------------------------- statistics


# --------------------------------------------------------------------------- figures


def plot_f1(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(int(k) for k in results["per_k"])
    fig, ax = plt.subplots(figsize=(6, 4))
    methods = list(METHODS)
    for offset, method in enumerate(methods):
        means, errors = [], []
        for k in ks:
            values = [run[method]["test_f1"] for run in results["per_k"][str(k)]["runs"]]
            mean = statistics.fmean(values)
            half = paired_interval(values)[2] - mean if len(values) > 1 else 0.0
            means.append(mean)
            errors.append(half)
        xs = [k * (1 + 0.025 * (offset - 2.5)) for k in ks]
        ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("labeled images per class (K)")
    ax.set_ylabel("test macro-F1 (mean, 95% CI over seeds)")
    ax.set_title("Digits: supervised baseline vs ATCON fine-tuning")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gradcam_grid(
    models: dict[str, nn.Module],
    images: Tensor,
    raw: Tensor,
    labels: Tensor,
    boxes: Tensor,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(len(models), n, figsize=(1.4 * n, 1.5 * len(models)))
    for row, (name, model) in enumerate(models.items()):
        cams = normalize_maps(upsample_maps(grad_cam(model, images, labels), (CANVAS, CANVAS)))
        for col in range(n):
            ax = axes[row, col]
            ax.imshow(raw[col], cmap="gray")
            ax.imshow(cams[col], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            x0, y0, x1, y1 = boxes[col].tolist()
            ax.add_patch(
                patches.Rectangle(
                    (x0 - 0.5, y0 - 0.5),
                    x1 - x0,
                    y1 - y0,
                    fill=False,
                    edgecolor="white",
                    linewidth=1,
                )
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle("Grad-CAM of the true class (box: the digit's ink)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "results",
        help="folder for digits.md and its figures",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write all figures as JSON")
    parser.add_argument("--ks", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--render-only",
        type=Path,
        default=None,
        metavar="JSON",
        help="rewrite digits.md and the F1 plot from a saved --json file (no training)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # one thread: on a shared 2-core machine two threads wait on each other (5x slower)
    torch.set_num_threads(args.threads)
    if args.render_only is not None:
        saved = json.loads(args.render_only.read_text())
        args.ks = [int(k) for k in saved["per_k"]]
        args.out.mkdir(parents=True, exist_ok=True)
        plot_f1(saved, args.out / "digits_f1.png")
        (args.out / "digits.md").write_text(render_page(saved, saved["command"], args))
        print(table(saved))
        return 0

    if args.quick:
        settings = Settings(
            width=8,
            warmup_steps=30,
            steps=12,
            batch_size=32,
            unlabeled_batch_size=8,
            warmup_lr=1e-3,
        )
        grid: dict[str, Any] = {
            "lrs": [1e-4],
            "weights": [1e-2],
            "balance_ratios": [1.0],
            "pL": 0.5,
            "mask": MASK_INTENSITY,
            "alt_masks": [],
            "alt_pL": [],
            "preserve": 1.0,
            "alt_preserve": [],
        }
        data = load_digits_data(test_per_class=10, val_per_class=5)
        seeds = list(range(min(args.seeds, 2)))
    else:
        settings = Settings(
            width=8,
            warmup_steps=200,
            steps=100,
            batch_size=32,
            unlabeled_batch_size=16,
            warmup_lr=1e-3,
        )
        grid = {
            "lrs": [1e-4, 1e-3],
            "weights": [1e-3, 1e-2, 1e-1],
            "balance_ratios": [0.1, 1.0],
            "pL": 0.5,
            "mask": MASK_INTENSITY,
            "alt_masks": [32.0],
            "alt_pL": [0.8],
            "preserve": 1.0,
            "alt_preserve": [0.0],
        }
        data = load_digits_data(test_per_class=50, val_per_class=20)
        seeds = list(range(args.seeds))
    started = time.perf_counter()
    canvas_idx = data.test[: min(300, len(data.test))]
    canvas_images, canvas_labels, canvas_boxes = canvases(data, canvas_idx, seed=7)
    results: dict[str, Any] = {
        "settings": dataclasses.asdict(settings),
        "grid": grid,
        "sizes": {
            "test": len(data.test),
            "val": len(data.val),
            "pool": len(data.pool),
            "canvases": len(canvas_idx),
        },
        "seeds": seeds,
        "per_k": {},
    }
    grid_models: dict[str, nn.Module] = {}
    for k in args.ks:
        logger.info("K=%d: choosing settings on the validation split", k)
        selection = select(data, k, settings, grid, seed=100 + k)
        runs = []
        for seed in seeds:
            split = draw_split(data, k, seed)
            start = warm_start(data, split, settings, seed)
            test_images, test_labels = data.images[data.test], data.labels[data.test]
            record: dict[str, Any] = {"seed": seed}
            baseline = run_baseline(data, split, start, settings, selection["lr"], seed)
            models = {"baseline": baseline}
            record["baseline"] = {"test_f1": f1_of(baseline, test_images, test_labels)}
            control = Candidate(CONTROL, 0.0, grid["pL"], grid["mask"], "layer4")
            for variant in (CONTROL, *VARIANTS):
                candidate = control if variant == CONTROL else selection["chosen"][variant]
                run = run_atcon(data, split, start, settings, candidate, selection["lr"], seed)
                models[variant] = run.model
                record[variant] = {
                    "test_f1": f1_of(run.model, test_images, test_labels),
                    "collapsed": run.collapsed,
                    "final_distinct": run.final_distinct,
                }
            for name, model in models.items():
                record[name]["miou"] = localisation(
                    model, canvas_images, canvas_labels, canvas_boxes
                )
                record[name]["consistency"] = consistency_of(model, test_images[:200])
            logger.info(
                "K=%d seed %d: %s",
                k,
                seed,
                ", ".join(f"{m} {record[m]['test_f1']:.3f}" for m in METHODS),
            )
            runs.append(record)
            if seed == seeds[0] and k == args.ks[0]:
                grid_models = models
        summary = {}
        for method in METHODS:
            f1s = [r[method]["test_f1"] for r in runs]
            entry: dict[str, Any] = {
                "f1_mean": statistics.fmean(f1s),
                "miou_mean": statistics.fmean(r[method]["miou"] for r in runs),
                "consistency_mean": statistics.fmean(r[method]["consistency"] for r in runs),
            }
            if method != "baseline":
                lift = paired_interval(
                    [r[method]["test_f1"] - r["baseline"]["test_f1"] for r in runs]
                )
                miou_lift = paired_interval(
                    [r[method]["miou"] - r["baseline"]["miou"] for r in runs]
                )
                entry.update(
                    lift=lift,
                    miou_lift=miou_lift,
                    lift_vs_control=paired_interval(
                        [r[method]["test_f1"] - r[CONTROL]["test_f1"] for r in runs]
                    ),
                    wins=sum(r[method]["test_f1"] > r["baseline"]["test_f1"] for r in runs),
                    collapsed=sum(bool(r[method]["collapsed"]) for r in runs),
                    setting=(control if method == CONTROL else selection["chosen"][method]).label(),
                )
            summary[method] = entry
        results["per_k"][str(k)] = {
            "lr": selection["lr"],
            "selection": selection["tried"],
            "runs": runs,
            "summary": summary,
        }
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["machine"] = (
        f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    plot_f1(results, args.out / "digits_f1.png")
    show = list(range(8))
    plot_gradcam_grid(
        {n: grid_models[n] for n in ("baseline", *VARIANTS)},
        canvas_images[show],
        canvas_images[show, 0] * 0.5 + 0.5,
        canvas_labels[show],
        canvas_boxes[show],
        args.out / "digits_gradcam.png",
    )
    command = "python " + " ".join(
        ["-m bench.digits", *(argv if argv is not None else sys.argv[1:])]
    )
    results["command"] = command
    (args.out / "digits.md").write_text(render_page(results, command, args))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=_jsonable))
    print(table(results))
    return 0


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def _fmt_interval(entry: tuple[float, float, float]) -> str:
    mean, low, high = entry
    return f"{mean * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]"


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'K':>3} {'method':<12} {'F1':>6} {'lift (pts, 95% CI)':>22} {'wins':>5} "
        f"{'stops':>5} {'mIoU':>6}"
    ]
    for k, block in results["per_k"].items():
        for method, entry in block["summary"].items():
            lift = _fmt_interval(entry["lift"]) if "lift" in entry else ""
            wins = f"{entry['wins']}/{len(block['runs'])}" if "wins" in entry else ""
            stops = str(entry.get("collapsed", ""))
            lines.append(
                f"{k:>3} {method:<12} {entry['f1_mean']:>6.3f} {lift:>22} {wins:>5} "
                f"{stops:>5} {entry['miou_mean']:>6.3f}"
            )
    return "\n".join(lines)


def _pts(value: float) -> str:
    return f"{value * 100:+.1f}"


def _verdict(results: dict[str, Any]) -> list[str]:
    lines = []
    for k, block in results["per_k"].items():
        summary = block["summary"]
        n = len(block["runs"])
        base = summary["baseline"]["f1_mean"]
        ups = [m for m in VARIANTS if summary[m]["lift"][1] > 0]
        downs = [m for m in VARIANTS if summary[m]["lift"][2] < 0]
        best = max(VARIANTS, key=lambda m: summary[m]["lift"][0])
        control = summary[CONTROL]["lift"]
        text = (
            f"- **K = {k}** (baseline macro-F1 {base:.3f}, {n} seeds): the best ATCON variant "
            f"is `{best}`, lift {_fmt_interval(summary[best]['lift'])} points over the "
            f"baseline and {_fmt_interval(summary[best]['lift_vs_control'])} over the control "
            f"(the same schedule with ATCON weight 0, itself {_fmt_interval(control)} over the "
            "baseline). "
        )
        if ups:
            text += (
                "The 95% interval excludes zero on the positive side for "
                + ", ".join(f"`{m}`" for m in ups)
                + ". "
            )
        else:
            text += "No variant's 95% interval lies above zero. "
        if downs:
            text += (
                "ATCON is significantly *worse* than the baseline for "
                + ", ".join(f"`{m}`" for m in downs)
                + ". "
            )
        ended = {
            m: sum(
                1
                for r in block["runs"]
                if r[m]["final_distinct"] is not None and r[m]["final_distinct"] < 0.5
            )
            for m in VARIANTS
        }
        if any(ended.values()):
            text += (
                "Runs that ended predicting fewer than half the classes on unlabeled data: "
                + ", ".join(f"`{m}` {c}/{n}" for m, c in ended.items() if c)
                + ". "
            )
        guarded = [m for m in VARIANTS if m.endswith("+guards")]
        text += (
            "Attention consistency rose from "
            f"{summary['baseline']['consistency_mean']:.2f} (baseline) to "
            + " and ".join(f"{summary[m]['consistency_mean']:.2f} (`{m}`)" for m in guarded)
            + ". "
        )
        stops = {m: summary[m]["collapsed"] for m in VARIANTS if summary[m]["collapsed"]}
        if stops:
            text += (
                "The collapse guard stopped "
                + ", ".join(f"`{m}` in {c}/{n} seeds" for m, c in stops.items())
                + " (the warm-up model "
                "was kept, so those seeds score the warm-up model)."
            )
        lines.append(text)
    return lines


def _worst(block: dict[str, Any], method: str) -> float:
    return min(r[method]["test_f1"] - r["baseline"]["test_f1"] for r in block["runs"])


def _overall(results: dict[str, Any]) -> str:
    blocks = results["per_k"].values()
    lifted = any(b["summary"][m]["lift"][1] > 0 for b in blocks for m in VARIANTS)
    if lifted:
        return "**ATCON lifted test macro-F1 significantly in at least one setting (below).**"
    return (
        "**ATCON did not lift test macro-F1 here: no variant, at any K, has a lift whose "
        "95% interval lies above zero.** The details below say how far each fell short, how "
        "much of the gap is the schedule (the control) rather than the ATCON loss, and what "
        "was tried."
    )


def _defaults_evidence(results: dict[str, Any]) -> list[str]:
    """Validation comparisons behind the guard defaults, from the selection table."""
    lines = []
    for k, block in results["per_k"].items():
        summary = block["summary"]
        plain = max(("none", "max"), key=lambda m: summary[m]["lift"][0])
        guarded_best = max(("none+guards", "max+guards"), key=lambda m: summary[m]["lift"][0])
        lines.append(
            f"- K = {k} (test): best unguarded `{plain}` {_fmt_interval(summary[plain]['lift'])}"
            f" points (worst seed {_pts(_worst(block, plain))}, consistency "
            f"{summary[plain]['consistency_mean']:.2f}); best guarded `{guarded_best}` "
            f"{_fmt_interval(summary[guarded_best]['lift'])} (worst seed "
            f"{_pts(_worst(block, guarded_best))}, consistency "
            f"{summary[guarded_best]['consistency_mean']:.2f}). Worst single seed of any "
            f"unguarded variant {_pts(min(_worst(block, m) for m in ('none', 'max')))}, of any "
            f"guarded one {_pts(min(_worst(block, m) for m in ('none+guards', 'max+guards')))}."
        )
    for k, block in results["per_k"].items():
        rows = [r for r in block["selection"] if r["method"].endswith("+guards")]
        for method in sorted({r["method"] for r in rows}):
            mine = {r["setting"]: r["val_f1"] for r in rows if r["method"] == method}
            pairs = [
                (s, mine[s.replace("kl=1", "kl=0")], f1)
                for s, f1 in mine.items()
                if "kl=1" in s and s.replace("kl=1", "kl=0") in mine
            ]
            for setting, without, with_kl in pairs:
                lines.append(
                    f"- K = {k}, `{method}`: validation F1 {with_kl:.3f} with the preservation "
                    f"term, {without:.3f} without ({setting.replace(' kl=1', '')})."
                )
            ratios = {
                r: f1
                for s, f1 in mine.items()
                for r in ("0.1", "1")
                if f"balance={r} " in s
                and "layer4" in s
                and "mi=8" in s
                and "pL=0.5" in s
                and "kl=1" in s
            }
            if len(ratios) == 2:
                lines.append(
                    f"- K = {k}, `{method}`: balance ratio 0.1 gave {ratios['0.1']:.3f}, "
                    f"1 gave {ratios['1']:.3f}."
                )
    unguarded = [
        r["val_f1"]
        for b in results["per_k"].values()
        for r in b["selection"]
        if r["method"] in ("none", "max")
    ]
    guarded = [
        r["val_f1"]
        for b in results["per_k"].values()
        for r in b["selection"]
        if r["method"].endswith("+guards")
    ]
    if unguarded and guarded:
        lines.append(
            f"- Worst validation F1 over all settings tried: {min(unguarded):.3f} unguarded, "
            f"{min(guarded):.3f} guarded."
        )
    return lines


def render_page(results: dict[str, Any], command: str, args: argparse.Namespace) -> str:
    s = results["settings"]
    sizes = results["sizes"]
    defaults = FinetuneConfig()
    balance = (
        "on when labeled data is given"
        if defaults.balance_gradients is None
        else str(defaults.balance_gradients)
    )
    out: list[str] = [
        "# ATCON on scikit-learn's digits: does attention consistency lift F1 with few labels?",
        "",
        f"Produced by `{command}` (ks {args.ks}, {len(results['seeds'])} seeds) in "
        f"{results['elapsed_s'] / 60:.1f} minutes on {results['machine']}. "
        "Every figure on this page comes from that run; nothing was edited by hand.",
        "",
        "## Verdict",
        "",
        _overall(results),
        "",
        *_verdict(results),
        "",
        "Lifts are test macro-F1 differences in points (ATCON minus baseline from the same "
        "warm-up, paired by seed), mean with a two-sided 95% Student-t interval.",
        "",
        "## Setup",
        "",
        f"- Data: the 1,797 real 8x8 digits bundled with scikit-learn, upsampled bilinearly to "
        f"{SIZE}x{SIZE}, three channels. Fixed stratified test set of {sizes['test']} images; a "
        f"fixed stratified validation split of {sizes['val']} images carved from the labeled "
        f"pool, used only to choose hyperparameters; the remaining {sizes['pool']} images form "
        "the pool from which each seed draws K labeled images per class; all other pool images "
        "are the unlabeled set.",
        f"- Model: ResNet-18 layout at width {s['width']} (stages of {s['width']}, "
        f"{2 * s['width']}, {4 * s['width']}, {8 * s['width']} channels; `resnet18_slim`), 3x3 "
        "stride-1 stem so `layer4` is 4x4 at 32 px; trained from scratch.",
        f"- Warm-up: {s['warmup_steps']} supervised steps, Adam lr {s['warmup_lr']:g}, batch "
        f"min({s['batch_size']}, |L|), random shifts of up to 3 px; softmax + cross-entropy.",
        f"- Baseline: {s['steps']} more supervised steps. ATCON: {s['steps']} steps of the "
        "`alternating` schedule from the same warm-up, the same learning rate (the one chosen "
        f"for the baseline), unlabeled batches of {s['unlabeled_batch_size']}; alpha is set so "
        "a step is supervised with probability pL = alpha|L| / (alpha|L| + |U|). BatchNorm "
        "frozen, Adam.",
        "- Control: the same alternating schedule with ATCON weight 0 (its unlabeled steps "
        "change nothing), to separate what the schedule costs (fewer supervised steps) from "
        "what the ATCON loss does.",
        "- Variants: `none` = the published mask (raw Guided-Backprop magnitudes); `max` = "
        "the magnitudes divided by their per-image maximum before the threshold. `+guards` = "
        "collapse stop (window 4 batches, entropy or distinct-class fraction below half the "
        "starting model's), gradient balancing (ATCON gradient norm capped at `balance` x the "
        f"running supervised one), ATCON weight warm-up over {s['steps'] // 5} steps, and "
        "prediction preservation KL(start || current) with weight `kl`.",
        f"- Weak localisation: {sizes['canvases']} test digits each pasted at a random place on "
        f"a {CANVAS}x{CANVAS} blank canvas; box = the digit's ink (pixels above 0.25). Grad-CAM "
        "of the true class at `layer4`, rectified, upsampled, scaled to [0, 1], thresholded at "
        "0.5; mIoU of that region with the box. A uniform map would score about the box's "
        "share of the canvas.",
        "",
        "## Results: test macro-F1",
        "",
    ]
    for k, block in results["per_k"].items():
        n = len(block["runs"])
        out += [
            f"### K = {k} labeled images per class (lr {block['lr']:g})",
            "",
            "| method | chosen setting | macro-F1 | lift, pts [95% CI] | lift over control | "
            "better than baseline | guard stops | mIoU | mIoU lift, pts [95% CI] | consistency |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for method, e in block["summary"].items():
            if method == "baseline":
                out.append(
                    f"| baseline | lr {block['lr']:g} | {e['f1_mean']:.3f} | | | | | "
                    f"{e['miou_mean']:.3f} | | {e['consistency_mean']:.3f} |"
                )
            else:
                name = "control (ATCON weight 0)" if method == CONTROL else f"ATCON `{method}`"
                versus = "" if method == CONTROL else _fmt_interval(e["lift_vs_control"])
                out.append(
                    f"| {name} | {e['setting']} | {e['f1_mean']:.3f} | "
                    f"{_fmt_interval(e['lift'])} | {versus} | {e['wins']}/{n} | "
                    f"{e['collapsed']}/{n} | {e['miou_mean']:.3f} | "
                    f"{_fmt_interval(e['miou_lift'])} | {e['consistency_mean']:.3f} |"
                )
        out.append("")
    out += [
        "`consistency` is the mean attention consistency (the Pearson correlation ATCON "
        "maximises, published settings) on 200 test images.",
        "",
        "![macro-F1 by K](digits_f1.png)",
        "",
        "![Grad-CAM before and after ATCON](digits_gradcam.png)",
        "",
        f"Grad-CAM maps of the first K = {args.ks[0]}, seed {results['seeds'][0]} models on "
        "canvases (rows: baseline, then each ATCON variant).",
        "",
        "## Hyperparameters tried (validation split only)",
        "",
        "Chosen per K on one selection draw (its own labeled sample and initialisation, seed "
        "100 + K), by validation macro-F1. Stage 1 tries the ATCON weight `w` (unguarded) or the "
        "balance ratio (guarded, w = 1, kl = 1); stage 2 tries the best of stage 1 with the "
        "Grad-CAM layer `layer3`, with another mask intensity `mi`, with a higher labeled-step "
        "probability `pL` and (guarded) without the preservation term. The learning rate is "
        "chosen for the baseline and shared by ATCON (same budget).",
        "",
        "| K | method | setting | validation macro-F1 | guard stopped |",
        "|---|---|---|---|---|",
    ]
    for k, block in results["per_k"].items():
        for row in block["selection"]:
            stopped = "yes" if row.get("collapsed") else ""
            out.append(
                f"| {k} | {row['method']} | {row['setting']} | {row['val_f1']:.3f} | {stopped} |"
            )
    out += [
        "",
        "## Per seed",
        "",
        "| K | seed | baseline | control | " + " | ".join(VARIANTS) + " |",
        "|---|---|---|---|" + "---|" * len(VARIANTS),
    ]
    for k, block in results["per_k"].items():
        for run in block["runs"]:
            cells = [f"{run[m]['test_f1']:.3f}" for m in ("baseline", CONTROL)] + [
                f"{run[m]['test_f1']:.3f}" + (" (stopped)" if run[m]["collapsed"] else "")
                for m in VARIANTS
            ]
            out.append(f"| {k} | {run['seed']} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## What this does and does not show",
        "",
        "- Small test (one fixed test set of "
        f"{sizes['test']} images) and few seeds: intervals are wide, and the selection split "
        "is one draw, so a setting chosen there may not be the best on average.",
        "- The step budget is small (the whole run must fit in about 20 minutes of a shared "
        "2-core CPU); the paper fine-tuned far longer on larger images and pretrained models.",
        "- A guard stop scores the warm-up model, which had fewer supervised steps than the "
        "baseline: a stopped run can lose to the baseline without ATCON doing harm.",
        "",
        "## Defaults this run chose",
        "",
        "No setting lifted F1, and none was never worse than the baseline; the defaults "
        "keep the guards on because without them ATCON can wreck a model (the worst seeds "
        "below), accepting that where unguarded ATCON was harmless the guarded runs lost a "
        "few points. `models.finetune.FinetuneConfig` (read when this page was written): "
        f"atcon_weight {defaults.atcon_weight:g}, balance_gradients {balance}, balance_ratio "
        f"{defaults.balance_ratio:g}, atcon_warmup_steps {defaults.atcon_warmup_steps} (of "
        f"{defaults.steps} default steps), preserve_weight {defaults.preserve_weight:g}, mask "
        f"intensity {defaults.mask_intensity:g}, gb_normalization "
        f"`{defaults.gb_normalization}` (the published mask), layer automatic (`layer4`), "
        f"collapse guard {'on' if defaults.guard.enabled else 'off'} (window "
        f"{defaults.guard.window}). The evidence (test figures, then validation):",
        "",
        *_defaults_evidence(results),
        "",
        "In the product, ATCON fine-tuning should stay behind the promotion gate (a new model "
        "replaces the active one only if it is not worse on held-out labeled frames): this page "
        "gives no reason to expect a lift on its own.",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
