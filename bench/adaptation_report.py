"""The results page of ``bench/adaptation.py``: verdict, tables and figures, from one run."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from synthetic.shifts import parse_shifts

ROOT = Path(__file__).resolve().parent.parent
#: bench.adaptation.PRODUCT (not imported: this module stays free of torch)
PRODUCT_ROW = "default, gated"

__all__ = ["write_page"]


def _pts(entry: list[float] | None) -> str:
    if not entry:
        return ""
    mean, low, high = entry
    if low is None or high is None or math.isnan(low):
        return f"{mean:+.1f}"
    return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _verdict_lines(results: dict[str, Any]) -> list[str]:
    v = results["verdict"]
    cost = v["shift_cost_points"]
    lines = [
        f"The `{v['shift']}` shift costs the source model **{cost:.1f} points** of event F1 "
        f"(tIoU 0.5): {v['in_domain_f1']:.3f} on an unseen day-time ward, "
        f"{v['shifted_f1']:.3f} on the same kind of ward through the shifted camera.",
        "",
    ]
    for k, best in v["best_by_k"].items():
        if best is None:
            lines.append(
                f"- **K = {k}**: no method has a lift whose 95% interval lies above zero while "
                "keeping in-domain F1 within one point."
            )
            continue
        lines.append(
            f"- **K = {k}**: best is `{best['method']}`, lift {_pts(best['lift_points'])} points, "
            f"recovering {100 * best['recovered']:.0f}% of the shift's cost; in-domain change "
            f"{_pts(best['source_change_points'])} points."
        )
    lines += ["", *_scoped_lines(results)]
    default = v["default"]
    rows = {str(r["k"]): r for r in v["default_rows"]}
    lines.append("")
    if rows:
        lines.append(
            f"The product's default nightly fine-tune, `{default}` (the first method whose "
            "needs the frames meet), on this camera alone:"
        )
        lines.append("")
        for k, r in rows.items():
            share = r["recovered"]
            low = r["lift_points"][1]
            holds = share >= 0.5 and low is not None and not math.isnan(low) and low > 0
            lines.append(
                f"- K = {k}: `{r['method']}` {_pts(r['lift_points'])} points, "
                f"{100 * share:.0f}% of the shift's cost recovered"
                + (" (at least half, interval above zero)" if holds else "")
                + f"; the adapted weights on day-time video: {_pts(r['source_change_points'])}"
                " points, which a camera-scoped version never serves."
            )
    other = v.get("default_on_other_shifts") or {}
    if other:
        parts = []
        for name, by_k in other.items():
            for k, entry in by_k.items():
                parts.append(f"`{name}` K = {k} (`{entry['method']}`) {_pts(entry['lift_points'])}")
        lines.append("")
        lines.append(
            "On the other shifts (severity 3) the default's lift over no adaptation is "
            + ", ".join(parts)
            + " points."
        )
    lines += _product_lines(results)
    lines += _proxy_lines(results)
    atcon = v.get("atcon_rows") or []
    if atcon:
        parts = [
            f"`{r['method']}` at K = {r['k']}: {_pts(r['lift_points'])}"
            + (" (above zero)" if r["significant"] else "")
            for r in atcon
        ]
        lines.append("")
        lines.append("ATCON, reported as it did: " + "; ".join(parts) + " points.")
    return lines


def _product_lines(results: dict[str, Any]) -> list[str]:
    """The product as it runs: the default's candidate through the promotion gate.

    The criterion of the default: a lift whose 95% interval lies above zero where the
    shift costs F1, and never worse, on any shift or in-domain. The method alone
    cannot meet it (above); the method with the gate is what a camera gets.
    """
    v = results["verdict"]
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for k, entry in (v.get("product_rows") or {}).items():
        if entry:
            rows.append((v["shift"], k, entry))
    for name, by_k in (v.get("default_on_other_shifts") or {}).items():
        for k, entry in by_k.items():
            if "product_lift_points" in entry:
                rows.append((name, k, entry))
    if not rows:
        return []
    lines = [
        "",
        "**The product as it runs** (row `" + PRODUCT_ROW + "`): the default's candidate "
        "is promoted for the camera only when the promotion gate "
        "(`worker.serving.versions.promotion_gate`, default settings) passes it on the "
        "camera's labeled validation frames, a uniformly random sample of the pool in the "
        "proportion the review queue asks for (`ATCON_POOL_VAL_FRACTION`); otherwise the "
        "camera keeps the source model (lift 0 for that seed). At K = 0 there are no "
        "labels, so nothing is promoted automatically and the product's lift is 0 by "
        "construction: an admin decides from the label-free comparison.",
        "",
        "| shift | K | lift, pts [95% CI] | promoted | validation frames |",
        "|---|---|---|---|---|",
    ]
    negative = []
    for name, k, entry in rows:
        frames = entry["gate_frames"]
        span = f"{min(frames)}" if min(frames) == max(frames) else f"{min(frames)}-{max(frames)}"
        lines.append(
            f"| `{name}` | {k} | {_pts(entry['product_lift_points'])} | "
            f"{entry['promoted']} of {entry['runs']} | {span} |"
        )
        high = entry["product_lift_points"][2]
        if high is not None and not math.isnan(high) and high < 0:
            negative.append(f"`{name}` K = {k}")
    lines.append("")
    lines.append(
        "No shift's interval lies wholly below zero: the gated default is never "
        "significantly worse than leaving the camera alone."
        if not negative
        else "Significantly worse than leaving the camera alone: " + ", ".join(negative) + "."
    )
    return lines


def _proxy_lines(results: dict[str, Any]) -> list[str]:
    """The gate's label-free proxy (attention consistency) beside the maps' truth.

    Pointing game and mIoU are measured against the objects' pixel masks; consistency
    is what the promotion gate can measure without them. Where the two move in
    opposite directions, consistency is no evidence that the maps got worse.
    """
    lines: list[str] = []
    default_at = {str(r["k"]): r["method"] for r in results["verdict"]["default_rows"]}
    for k, block in results["main"]["by_k"].items():
        for method, entry in block["methods"].items():
            change = entry.get("consistency_change")
            pointing = entry.get("pointing_lift_points")
            if method == "none" or not change or not pointing:
                continue
            if method != default_at.get(k) and "atcon" not in method.split("+"):
                continue
            lines.append(
                f"- K = {k}, `{method}`: pointing game {_pts(pointing)} points, mIoU "
                f"{_pts(entry.get('miou_lift_points'))} points, attention consistency "
                f"{_pts(change)} (x0.01)."
            )
    if not lines:
        return []
    return [
        "",
        "Maps against the objects' masks, and the gate's label-free proxy (the change of "
        "mean attention consistency on the test frames, Pearson x100), for the default "
        "and the ATCON methods:",
        "",
        *lines,
    ]


def _scoped_lines(results: dict[str, Any]) -> list[str]:
    """The product's view: a camera's fine-tune serves that camera only.

    The day-time cameras keep the model they had whatever the adapted weights do on
    day-time video, so what counts there is the lift on the shifted camera.
    """
    main = results["main"]
    cost = results["in_domain_f1"] - main["before"]["f1"]
    lines = [
        "In the product a fine-tune restricted to a camera serves that camera only, so "
        "the day-time cameras' F1 does not move (0 points) whatever the adapted weights "
        "would do on them. Counting only the shifted camera:",
        "",
    ]
    for k, block in main["by_k"].items():
        best = None
        for method, entry in block["methods"].items():
            if method in ("none", PRODUCT_ROW):
                continue
            mean, low, _high = entry["lift_points"]
            significant = low is not None and not math.isnan(low) and low > 0
            if significant and (best is None or mean > best[1][0]):
                best = (method, entry["lift_points"])
        if best is None:
            lines.append(f"- K = {k}: no method's lift has a 95% interval above zero.")
            continue
        share = (best[1][0] / 100) / cost if cost > 0 else math.nan
        half = "at least half" if share >= 0.5 else "less than half"
        lines.append(
            f"- K = {k}: `{best[0]}` lifts event F1 by {_pts(best[1])} points, "
            f"{100 * share:.0f}% of the shift's cost ({half})."
        )
    lines += [
        "",
        "These intervals are over seeds (the K labeled frames and the training order) "
        "for one source model and one set of videos, not over wards. `recalibrate` "
        "assumes each class is about as frequent on the shifted camera as on the cameras "
        "the model already serves; where that does not hold (short recordings, a ward "
        "whose nights differ from its days) it moves the operating point the wrong way. "
        "The promotion gate judges every candidate on the camera's labeled validation "
        "frames, a random sample of its pool, detection first: it keeps the camera on its "
        "old model when their F1 falls, and promotes a rise even when attention "
        "consistency falls (the maps against the masks, below). "
        "`tests/service/test_adaptation_e2e.py` runs the whole loop over HTTP with minutes "
        "of video instead of an hour and a dozen labels: when the gate promotes the "
        "default's candidate (for the night camera only), a held-out night video's events "
        "improve; when its validation F1 falls, the camera keeps its model. Both have "
        "happened on small changes of the code, so one such run proves little.",
    ]
    return lines


def _main_tables(results: dict[str, Any]) -> list[str]:
    main = results["main"]
    before = main["before"]
    lines = []
    for k, block in main["by_k"].items():
        used = block["labeled_frames"]
        lines += [
            "",
            f"### K = {k} labeled frames per class"
            + (f" ({min(used)}-{max(used)} frames labeled)" if int(k) else ""),
            "",
            "| method | event F1 | lift, pts [95% CI] | recovered | frame mAP | mAP lift | "
            "in-domain F1 | in-domain change | pointing | mIoU | consistency | s/run |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        cost = results["in_domain_f1"] - before["f1"]
        for method, entry in block["methods"].items():
            mean = entry["mean"]
            lift = entry["lift_points"]
            recovered = (lift[0] / 100) / cost if cost > 0 else math.nan
            base = method == "none"
            lines.append(
                f"| `{method}` | {_num(mean['f1'])} | {'' if base else _pts(lift)} | "
                f"{'' if base else f'{100 * recovered:.0f}%'} | {_num(mean['map'])} | "
                f"{'' if base else _pts(entry['map_lift_points'])} | {_num(mean['source_f1'])} | "
                f"{'' if base else _pts(entry['source_change_points'])} | "
                f"{_num(mean.get('pointing'))} | {_num(mean.get('miou'))} | "
                f"{_num(mean.get('consistency'))} | {entry['seconds']:.0f} |"
            )
            if entry.get("stopped"):
                lines[-1] = lines[-1][:-1] + f" ({entry['stopped']} stopped by a guard) |"
    return lines


def _other_tables(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "| shift | no adaptation F1 | K | method | event F1 | lift, pts [95% CI] "
        "| in-domain change |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, block in results.get("other_shifts", {}).items():
        for k, entry in block["by_k"].items():
            for method, row in entry["methods"].items():
                if method == "none":
                    continue
                lines.append(
                    f"| `{name}` | {_num(block['before']['f1'])} | {k} | `{method}` | "
                    f"{_num(row['mean']['f1'])} | {_pts(row['lift_points'])} | "
                    f"{_pts(row['source_change_points'])} |"
                )
    return lines


def plot_severity(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = results["severity_sweep"]
    main_severity = parse_shifts([results["main"]["shift"]])[0].severity
    k = str(sweep["k"])
    points: dict[str, dict[int, float]] = {}
    for severity, block in sweep["runs"].items():
        for entry_k in block["by_k"].values():
            for method, entry in entry_k["methods"].items():
                if method != PRODUCT_ROW:
                    points.setdefault(method, {})[int(severity)] = entry["mean"]["f1"]
    for main_k in results["main"]["by_k"].values():
        for method, entry in main_k["methods"].items():
            if method in points:
                points[method][main_severity] = entry["mean"]["f1"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method, by_severity in points.items():
        xs = sorted(by_severity)
        ax.plot(xs, [by_severity[x] for x in xs], marker="o", label=method)
    ax.axhline(results["in_domain_f1"], color="grey", linestyle=":", label="in-domain (day)")
    ax.set_xlabel(f"{sweep['shift']} severity")
    ax.set_ylabel("event F1 at tIoU 0.5 (target test videos)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(range(1, 6))
    ax.legend(fontsize=8)
    ax.set_title(f"F1 against severity (methods with labels: K = {k} per class)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gradcam(examples: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = examples["frames"]
    n = len(frames)
    fig, axes = plt.subplots(3, n, figsize=(2.2 * n, 6.6), squeeze=False)
    for j in range(n):
        label = examples["labels"][j]
        axes[0, j].imshow(frames[j])
        axes[0, j].set_title(label, fontsize=8)
        for row, name in ((1, "before"), (2, "after")):
            axes[row, j].imshow(frames[j])
            axes[row, j].imshow(examples[name][j], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            score = examples[f"{name}_scores"][j]
            axes[row, j].set_title(f"{name}: p={score:.2f}", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_shifts(path: Path, size: tuple[int, int] = (160, 120)) -> None:
    """One frame of the same moment before and after each shift (severity 3 and 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synthetic.shifts import SHIFTS, Shift
    from synthetic.synth import WardScene, make_script

    events = make_script(60.0, np.random.default_rng(3))
    t = 4.0
    columns: list[tuple[str, tuple[Shift, ...]]] = [("day (source)", ())] + [
        (f"{name}:{s}", (Shift(name, s),)) for name in SHIFTS for s in (3, 5)
    ]
    fig, axes = plt.subplots(1, len(columns), figsize=(1.9 * len(columns), 1.9))
    for ax, (title, shifts) in zip(axes, columns, strict=True):
        scene = WardScene(*size, events, seed=3, shifts=shifts)
        image = scene.render(t)
        if any(s.name == "compression" for s in shifts):
            from synthetic.synth import degrade

            image = degrade(image, shifts[0].severity)
        ax.imshow(image)
        ax.set_title(title, fontsize=7)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _in_repository(command: str) -> str:
    """``command`` with paths inside the checkout written relative to it, as a reader
    runs it from the repository root."""
    return command.replace(f"{ROOT}/", "")


def _load_line() -> str:
    """The load average when the page is written: other work on the machine slows the
    run (its wall time), never its figures."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return ""
    return (
        "Load average when the page was written (1, 5, 15 minutes): "
        f"{one:.1f}, {five:.1f}, {fifteen:.1f}."
    )


def write_page(results: dict[str, Any], page: Path, command: str, examples: dict[str, Any]) -> None:
    page.parent.mkdir(parents=True, exist_ok=True)
    command = _in_repository(command)
    stem = page.stem
    severity_png = page.with_name(f"{stem}_severity.png")
    gradcam_png = page.with_name(f"{stem}_gradcam.png")
    shifts_png = page.with_name(f"{stem}_shifts.png")
    plot_severity(results, severity_png)
    plot_shifts(shifts_png)
    if examples:
        plot_gradcam(examples, gradcam_png)
    machine = results["machine"]
    recipe = results["recipe"]
    budget = results["budget"]
    lines = [
        "# Deployment shifts: what brings a ward detector back where it is deployed",
        "",
        f"Produced by `{command}` in {results['wall_minutes']} minutes on "
        f"{machine['cpu']} ({machine['cores']} threads), torch {machine['torch']}. "
        "Every figure and picture on this page comes from that run; nothing was edited by hand. "
        + _load_line(),
        "",
        "## Verdict",
        "",
        *_verdict_lines(results),
        "",
        "Lifts are event-F1 differences in points (method minus no adaptation, paired by "
        f"seed: the K frames and the training order), mean with a two-sided 95% Student-t "
        f"interval over {results['seeds']} seeds (the other shifts: "
        f"{results.get('other_seeds', results['seeds'])}; each severity of the sweep: "
        f"{results.get('sweep_seeds', 2)}). *Recovered* is the lift over the shift's "
        "cost. *In-domain change* is the same difference on the day-time test video: the "
        "adapted weights' own forgetting. In the product a fine-tune restricted to a camera "
        "is activated for that camera only, so the day-time cameras keep the model they had "
        "and their F1 does not move whatever this column says.",
        "",
        "## Setup",
        "",
        f"- Source model: `{recipe['arch']}` width {recipe['width_mult']} at "
        f"{recipe['input_size']} px, trained {recipe['source_steps']} steps on "
        f"{len(recipe['train_seeds'])} day-time ward videos of {recipe['train_seconds']:.0f} s "
        f"({recipe['width']}x{recipe['height']}, sampled at {recipe['sample_fps']:g} frames/s); "
        "decision thresholds 0.5 for every class (the F1-optimal ones on a validation "
        "video that the model separates with a wide margin sit at its edge and turn every "
        "method's F1 into a coin toss), the same for every method but `recalibrate`, which "
        "moves the logits instead.",
        f"- Target: the same kind of ward through the shift. Unlabeled pool: "
        f"{len(recipe['pool_seeds'])} videos of {recipe['pool_seconds']:.0f} s sampled at "
        f"{recipe['pool_fps']:g} frame/s. Test: {len(recipe['target_test_seeds'])} videos of "
        f"{recipe['test_seconds']:.0f} s; in-domain test: one day-time video of the same length.",
        "- Labels: K frames per class (and K with no event), chosen walking the review queue "
        "least-consistent first over a seeded half of the pool, as a clinician labels them.",
        f"- Budget, the same for every method: AdaBN over at most {budget['adabn_images']} pool "
        f"frames; {budget['steps']} Adam steps at lr {budget['lr']}, labeled batches of "
        f"{budget['batch_size']}, unlabeled batches of {budget['unlabeled_batch_size']} "
        "(ATCON: half that, its step costs three backward passes).",
        "- Methods (`models/adaptation.py`): `adabn` (BatchNorm statistics re-estimated on the "
        "pool), `tent` (entropy minimisation of the BatchNorm affine parameters), `atcon` (the "
        "published ATCON schedule, BatchNorm frozen, with the product's guards; with "
        "`supervised`, alternating with the labels; after `adabn` when both are named), "
        "`pseudo` (FixMatch pseudo-labels, confidence 0.9, "
        "weak and strong views), `distill` (soft targets from an AdaBN copy of the source "
        "model), `anchor` (the source model as the teacher of day-time frames of the "
        "cameras it already serves, under night-like photometric views), `recalibrate` "
        "(output biases shifted so each class fires on the target camera as often as "
        "in-domain; no label), `supervised` (the K labeled frames); `+` combines them.",
        "- Metrics: event F1 at tIoU 0.5 of the detector's segmentation on the frames it "
        "samples; frame mAP; pointing game (Grad-CAM maximum on the object, 3 px tolerance) "
        "and mIoU (Grad-CAM above half its maximum against the object mask) per class, "
        "averaged over classes.",
        "",
        "What each shift looks like (the same moment; the first picture is the source ward):",
        "",
        f"![shifts]({shifts_png.name})",
        "",
        f"## Main table: `{results['main']['shift']}`",
        *_main_tables(results),
        "",
        "## Other shifts: the default against no adaptation",
        *_other_tables(results),
        "",
        "## F1 against severity",
        "",
        f"![F1 against severity]({severity_png.name})",
        "",
    ]
    if examples:
        lines += [
            "## Grad-CAM before and after, on the same night frames",
            "",
            f"Top: the test frame; middle: the source model's Grad-CAM of the frame's class; "
            f"bottom: after the default's `{examples['method']}` at K = {examples['k']} "
            "(seed 0).",
            "",
            f"![Grad-CAM before and after]({gradcam_png.name})",
            "",
        ]
    page.write_text("\n".join(lines))


def write_sources_page(results: dict[str, Any], page: Path, command: str) -> None:
    """The page of ``--source-seeds N``: the main table's lifts on each source model and
    the interval across source models."""
    page.parent.mkdir(parents=True, exist_ok=True)
    machine = results["machine"]
    count = results["source_seeds"]
    lines = [
        "# Deployment shifts across source models",
        "",
        f"Produced by `{_in_repository(command)}` in {results['wall_minutes']} minutes on "
        f"{machine['cpu']} ({machine['cores']} threads), torch {machine['torch']}. Every "
        "figure on this page comes from that run. " + _load_line(),
        "",
        f"The main table of `adaptation.md` (shift `{results['shift']}`) run on {count} "
        "source models, trained alike but for their seed (initial weights, batch order). "
        f"Each cell of *per source model* is the mean lift over {results['seeds']} seeds "
        "(the K frames, the training order) on that source model; *across* is the 95% "
        f"Student-t interval of those {count} means ({count - 1} degrees of freedom): "
        "the uncertainty a new source model brings, which `adaptation.md`'s per-seed "
        "intervals of one source model leave out. Event F1 at tIoU 0.5, points.",
        "",
    ]
    first = next(iter(results["across_sources"].values()))
    anything = next(iter(first.values()))
    before = ", ".join(f"{v:.3f}" for v in anything["before_f1"])
    in_domain = ", ".join(f"{v:.3f}" for v in anything["in_domain_f1"])
    lines += [
        f"No adaptation: shifted F1 {before}; in-domain F1 {in_domain} (per source model).",
        "",
        "| K | method | per source model | across, mean [95% CI] |",
        "|---|---|---|---|",
    ]
    for k, methods in results["across_sources"].items():
        for method, entry in methods.items():
            if method == "none":
                continue
            per = ", ".join(f"{v:+.1f}" for v in entry["per_source"])
            lines.append(f"| {k} | `{method}` | {per} | {_pts(entry['across'])} |")
    above = [
        f"`{m}` at K = {k}"
        for k, methods in results["across_sources"].items()
        for m, e in methods.items()
        if m != "none" and not math.isnan(e["across"][1]) and e["across"][1] > 0
    ]
    lines += [
        "",
        "Lift interval above zero across source models: "
        + (", ".join(above) if above else "none")
        + ".",
        "",
    ]
    contrasts = results.get("atcon_contrasts") or {}
    if contrasts:
        lines += [
            "## What ATCON adds",
            "",
            "Each method with `atcon` against the same method without it, paired by seed "
            "on each source model: the mean difference in event F1 points and its paired "
            "95% interval over seeds per source model, then the interval across source "
            "models. The pair differs in more than the loss: with `atcon` the steps follow "
            "ATCON's published schedule (each step either labeled or ATCON, at least a "
            "quarter labeled, with its guards), without it every step has the labeled loss, "
            "so the contrast is ATCON fine-tuning as a whole against its absence.",
            "",
            "| K | with `atcon` | without | per source model, mean [95% CI] | across |",
            "|---|---|---|---|---|",
        ]
        for k, methods in contrasts.items():
            for method, entry in methods.items():
                per = "; ".join(_pts(i) for i in entry["per_source"])
                lines.append(
                    f"| {k} | `{method}` | `{entry['without']}` | {per} | {_pts(entry['across'])} |"
                )
        lines.append("")
    page.write_text("\n".join(lines))
