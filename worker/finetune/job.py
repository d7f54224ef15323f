"""The fine-tune job: frame pool -> ATCON fine-tuning -> evaluation -> model version -> gate.

::

    finetune_job(ctx, request={...}, trigger="api" | "nightly" | "cli")

1. take the deployment's fine-tune lock (Redis ``SET NX PX`` renewed while the job
   runs; a process lock in the embedded default), so two fine-tunes never overlap:
   a second one waits, its job still ``running`` with ``detail.phase = "waiting"``;
2. start from the active model version (``ATCON_CHECKPOINT`` is registered as the
   first version when the worker starts; a request restricted to a ``camera`` starts
   from the version serving that camera), and refuse at once a Grad-CAM layer whose maps are
   too small for the ATCON loss at its input size (:func:`models.atcon.check_map_size`);
3. export a snapshot of the frame pool (:meth:`FramePool.export`): unlabeled frames,
   and the clinicians' labels split into train and validation (with ``camera``: that
   camera's frames only);
4. adapt with the request's ``method`` (default ``ATCON_FINETUNE_METHOD``,
   ``adabn+atcon+supervised,adabn``; :mod:`models.adaptation`), fitted to the frames
   there are (a method that needs labels, other cameras' frames or larger Grad-CAM
   maps and lacks them falls back, when it was not asked for explicitly, and the card
   says so), or, for ``atcon`` alone, ATCON fine-tune with the request's ATCON options
   (``alternating`` with the labeled train frames when there are any, else
   ``unsupervised``, BatchNorm frozen), progress reported per step;
5. evaluate the starting and the new model on the validation frames (a random sample
   of the pool: :meth:`FramePool.review_queue`);
6. register the new version with its card (data counts per camera, and the camera it
   was adapted on) and apply the promotion gate (:func:`worker.serving.versions.promotion_gate`);
   a camera's version is promoted for that camera only; a version left a candidate for
   want of labeled validation frames carries a comparison with its parent on a sample
   of unlabeled pool frames (:mod:`worker.training.comparison`), which the models page shows.

A loss that turns NaN or a collapsing model fails the job with its reason; nothing is
registered and the active model is untouched. The active version's files are never
written: the new checkpoint is built under ``tmp/`` and copied into a new version.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models._exceptions import AtconError, CheckpointError, TrainingError

from .._exceptions import JobError, NoModelError
from ..pool.frames import FramePool
from ..queue.locks import HeldLock, LocalLock, RedisLock, held
from ..runtime.jobs import JobContext, JobOutcome, ProgressFn
from ..serving.model_cache import ModelRef, model_reference
from ..serving.versions import VersionStatus, promotion_gate
from ..settings import Settings
from ..storage import Storage, atomic_write_json
from .nightly import record_last
from .request import FinetuneRequest

if TYPE_CHECKING:
    from models.resume import Checkpointing

    from ..training.adapters import RunReport
    from ..training.comparison import FrameFilter

__all__ = ["finetune_job"]

logger = logging.getLogger(__name__)

_local_lock = threading.Lock()


# -- the lock --------------------------------------------------------------------------------


@contextmanager
def _finetune_lock(settings: Settings, progress: ProgressFn) -> Iterator[HeldLock]:
    """One fine-tune at a time per deployment; waits (reporting so) while another runs.

    With Redis the lock is a lease renewed by compare-and-extend (:mod:`worker.queue.locks`);
    the holder checks it with ``check()``, which raises :class:`~worker.LockLostError`
    once it is lost."""

    def waiting() -> None:
        progress(0.0, {"phase": "waiting", "message": "another fine-tune is running"})

    lock: RedisLock | LocalLock
    if not settings.embedded:
        from ..queue.connect import connect

        client = connect(settings)
        key = f"{settings.queue_prefix}:finetune:lock"
        lock = RedisLock(client, key, round(settings.finetune_lock_ttl_s * 1000))
    else:
        client, lock = None, LocalLock(_local_lock)
    try:
        with held(lock, waiting) as holding:
            yield holding
    finally:
        if client is not None:
            client.close()


def _guarded(progress: ProgressFn, lock: HeldLock) -> ProgressFn:
    """``progress`` that first checks the lock is still held (LockLostError if not)."""

    def report(fraction: float, detail: Mapping[str, Any] | None = None) -> None:
        lock.check()
        progress(fraction, detail)

    return report


class _StepProgress:
    """A training callback that reports steps done of total and the losses to the job."""

    def __init__(self, progress: ProgressFn, start: float, end: float) -> None:
        self.progress = progress
        self.start, self.end = start, end
        self.total = 1

    def on_train_start(self, trainer: object, total_steps: int) -> None:
        self.total = max(1, total_steps)

    def on_step_end(self, trainer: object, result: Any) -> None:
        done = int(result.step) + 1
        losses = {k: round(float(v), 6) for k, v in dict(result.losses).items()}
        fraction = self.start + (self.end - self.start) * done / self.total
        self.progress(
            fraction,
            {"phase": "training", "step": done, "steps": self.total, "losses": losses},
        )

    def on_train_end(self, trainer: object) -> None:
        return None


def _starting_version(storage: Storage, settings: Settings, camera: str | None) -> ModelRef:
    """The version serving ``camera`` (the camera's own, else the default)."""
    try:
        return model_reference(storage, settings, camera)
    except NoModelError as exc:
        raise JobError(f"there is no model to fine-tune: {exc}") from exc


def _resumable_state(work: Path, settings: Settings) -> Checkpointing:
    """The job's training checkpoints under ``work/state``, resumed when a previous
    delivery of the same job left some (its worker died mid-run)."""
    from models.resume import Checkpointing

    state = Checkpointing(work / "state", every_steps=settings.finetune_save_every)
    state.resume = bool(state.saved())
    if state.resume:
        logger.info("fine-tune %s resumes from %s", work.name, state.directory)
    return state


def _resuming(state: Checkpointing, run: Callable[[], RunReport]) -> RunReport:
    """``run()``; when the saved state cannot be resumed (the pool changed between two
    deliveries of the job), start again from the first step."""
    from models._exceptions import ResumeError

    try:
        return run()
    except ResumeError as exc:
        if not state.resume:
            raise
        logger.warning("fine-tune state not resumed (%s); starting again", exc)
        shutil.rmtree(state.directory, ignore_errors=True)
        state.resume = False
        return run()


def finetune_job(
    ctx: JobContext, request: Mapping[str, Any] | None = None, trigger: str = "api"
) -> JobOutcome:
    """Run one fine-tune (see the module docstring); return the new version's card summary."""
    from models.adaptation import AdaptConfig
    from models.atcon import MASK_INTENSITY, check_map_size
    from models.checkpoint import load_checkpoint
    from models.finetune import FinetuneConfig, named_layer
    from models.methods import ATCON, parse_method

    from ..training.adapters import (
        DataOptions,
        adapt_checkpoint,
        evaluate_checkpoint,
        finetune_checkpoint,
    )

    try:
        options = FinetuneRequest.model_validate(request or {})
    except ValueError as exc:
        raise JobError(f"the fine-tune request is invalid: {exc}") from exc
    settings, storage = ctx.settings, ctx.storage
    registry = storage.registry()
    started = datetime.now(UTC)
    with _finetune_lock(settings, ctx.progress) as lock:
        # a lost lock stops the job at its next progress report, and before registering
        ctx = dataclasses.replace(ctx, progress=_guarded(ctx.progress, lock))
        registry.cleanup()
        parent = _starting_version(storage, settings, options.camera)
        parent_version, parent_checkpoint = parent.version, parent.checkpoint
        parent_model, info = load_checkpoint(parent_checkpoint)
        methods, method_note = _choose_method(options, settings)
        if any("atcon" in parse_method(m) for m in methods):
            try:  # ATCON's precondition, before any frame is exported
                check_map_size(
                    parent_model, info.input_size, named_layer(parent_model, options.layer)
                )
            except ValueError as exc:
                rest = [m for m in methods if "atcon" not in parse_method(m)]
                if options.method is not None or not rest:
                    raise JobError(
                        f"fine-tuning refused: {exc} The active model is unchanged."
                    ) from exc
                skipped = ", ".join(m for m in methods if m not in rest)
                methods = rest  # a configured preference: the next one that can run
                method_note = "; ".join(
                    n for n in (method_note, f"method {skipped} skipped: {exc}") if n
                )
        method = methods[0]
        del parent_model
        pool = storage.frame_pool(info.input_size, settings.pool_val_fraction)
        work = storage.tmp / f"finetune-{ctx.job.job_id}"
        state = _resumable_state(work, settings)
        for part in work.glob("*"):  # all but the training state is made again
            if part != state.directory:
                shutil.rmtree(part, ignore_errors=True) if part.is_dir() else part.unlink()
        try:
            ctx.progress(0.01, {"phase": "exporting frames"})
            exported = pool.export(
                work / "data",
                since=options.since,
                video_ids=options.video_ids,
                class_names=info.class_names,
                camera=options.camera,
            )
            if exported.counts["unlabeled"] == 0:
                of = f" of camera {options.camera}" if options.camera else ""
                raise JobError(
                    f"no frames: the frame pool holds no unlabeled frames{of} for this "
                    "request; process videos or upload frames (POST /v1/frames) first"
                )
            anchor_dir: Path | None = None
            if method != ATCON:
                method, method_note, anchor_dir = _method_for_frames(
                    methods, method_note, options, pool, exported, work / "in_domain"
                )
            mode = options.mode or ("alternating" if exported.train_dir else "unsupervised")
            if method == ATCON and mode == "alternating" and exported.train_dir is None:
                raise JobError(
                    "mode alternating needs labeled frames and the pool has none in its "
                    "training split; label frames or ask for mode unsupervised"
                )
            batch = options.batch_size or settings.finetune_batch_size
            steps = options.steps or (
                math.ceil(options.epochs * exported.counts["unlabeled"] / batch)
                if options.epochs
                else settings.finetune_steps
            )
            if steps > settings.finetune_max_steps:
                logger.warning(
                    "fine-tune %s: %d steps asked, capped at ATCON_FINETUNE_MAX_STEPS=%d",
                    ctx.job.job_id,
                    steps,
                    settings.finetune_max_steps,
                )
                steps = settings.finetune_max_steps
            candidate = work / "model.pt"
            config: FinetuneConfig | AdaptConfig
            report: RunReport
            if method == ATCON:
                config = FinetuneConfig(
                    schedule=mode,
                    steps=steps,
                    lr=options.lr or settings.finetune_lr,
                    batch_size=batch,
                    unlabeled_batch_size=batch,
                    alpha=options.alpha if options.alpha is not None else 1.0,
                    mask_intensity=options.mask_intensity or MASK_INTENSITY,
                    layer=options.layer,
                )
                atcon_config = config
                try:
                    report = _resuming(
                        state,
                        lambda: finetune_checkpoint(
                            parent_checkpoint,
                            exported.unlabeled_dir,
                            candidate,
                            config=atcon_config,
                            labeled_dir=exported.train_dir if mode == "alternating" else None,
                            data=DataOptions(image_size=info.input_size, val_fraction=0.0),
                            progress=False,
                            callbacks=[_StepProgress(ctx.progress, 0.05, 0.85)],
                            min_val_per_class=settings.finetune_min_val_per_class,
                            checkpointing=state,
                        ),
                    )
                except (TrainingError, CheckpointError, ValueError) as exc:
                    raise JobError(
                        f"fine-tuning stopped: {exc}; the active model is unchanged"
                    ) from exc
            else:
                config = AdaptConfig(
                    method=method,
                    steps=steps,
                    lr=options.lr or AdaptConfig.lr,
                    batch_size=batch,
                    layer=options.layer,
                )
                adapt_config = config
                try:
                    report = _resuming(
                        state,
                        lambda: adapt_checkpoint(
                            parent_checkpoint,
                            exported.unlabeled_dir,
                            candidate,
                            config=adapt_config,
                            labeled_dir=exported.train_dir if adapt_config.needs_labels else None,
                            anchor_dir=anchor_dir,
                            progress=False,
                            callbacks=[_StepProgress(ctx.progress, 0.05, 0.85)],
                            checkpointing=state,
                        ),
                    )
                except (TrainingError, CheckpointError, ValueError) as exc:
                    raise JobError(
                        f"adaptation ({method}) stopped: {exc}; the active model is unchanged"
                    ) from exc

            before = after = None
            components = set(parse_method(method))
            # the validation split: a random sample of the pool (FramePool.review_queue)
            judge = exported.val_dir
            if judge is not None:
                ctx.progress(0.88, {"phase": "evaluating"})
                try:
                    before = evaluate_checkpoint(parent_checkpoint, judge, layer=options.layer)
                    after = evaluate_checkpoint(candidate, judge, layer=options.layer)
                except AtconError as exc:
                    raise JobError(f"evaluation failed: {exc}") from exc
            decision = promotion_gate(
                before,
                after,
                f1_tolerance_points=settings.gate_f1_tolerance_points,
                maps_unchanged=components == {"recalibrate"},
                strict_consistency=settings.gate_strict_consistency,
            )
            attachments: dict[str, Path] = {}
            comparison_note: dict[str, Any] | None = None
            if decision.status is VersionStatus.CANDIDATE and settings.finetune_compare_frames:
                ctx.progress(0.9, {"phase": "comparing with the parent on pool frames"})
                attachments, comparison_note = _compare_with_parent(
                    pool,
                    options,
                    parent_checkpoint,
                    parent_version,
                    candidate,
                    work / "comparison",
                    count=settings.finetune_compare_frames,
                    seed=ctx.job.job_id,
                    layer=options.layer,
                )
            if _compare_on_videos(options, decision.status, settings):
                ctx.progress(0.93, {"phase": "detecting on recent videos with the new version"})
                attachments.update(
                    _disagreements(storage, settings, options.camera, candidate, work)
                )
            lock.check()  # never register a version after another fine-tune took over
            card = registry.register(
                candidate,
                status=decision.status,
                reason=decision.reason,
                parent=parent_version,
                config={
                    "method": method,
                    **({"method_note": method_note} if method_note else {}),
                    ("finetune" if method == ATCON else "adapt"): config_dict(config),
                    "trigger": trigger,
                    # the pool's validation frames gate; they never choose thresholds
                    "thresholds": report.metrics.get("thresholds"),
                },
                data={
                    **exported.describe(),
                    # every video whose frames it learned from, the in-domain reference
                    # included: deleting one of them is refused, or recorded here
                    "video_ids": sorted(
                        {
                            *exported.video_ids,
                            *(
                                pool.video_ids_of(p.stem for p in anchor_dir.glob("*.png"))
                                if anchor_dir is not None
                                else []
                            ),
                        }
                    ),
                    "parent_sha256": info.sha256,
                    **({"comparison": comparison_note} if comparison_note else {}),
                },
                metrics_before=_summary(before),
                metrics_after=_summary(after),
                attachments=attachments,
                # a camera's fine-tune is promoted for that camera only
                cameras=[options.camera] if options.camera else None,
            )
        except Exception:  # failed for good: the state is of no use any more
            shutil.rmtree(work, ignore_errors=True)
            raise
        # a worker killed or stopped (SystemExit) mid-run keeps it: the job comes back
        shutil.rmtree(work, ignore_errors=True)
        from ..deletion import withdraw_missing

        if withdraw_missing(storage, card, by="an admin (see audit.log)"):
            card = registry.get(card.version)
        record_last(
            storage,
            options.camera,
            {"started_at": started.isoformat(), "job_id": ctx.job.job_id, "version": card.version},
        )
    ctx.progress(1.0, {"phase": "done", "version": card.version, "status": str(card.status)})
    logger.info("fine-tune %s -> %s (%s)", ctx.job.job_id, card.version, card.status)
    return JobOutcome(
        {
            "version": card.version,
            "status": str(card.status),
            "reason": card.reason,
            "parent": parent_version,
            "method": method,
            "frames": exported.counts,
            "cameras": card.cameras,
            "active_for": registry.cameras_of(card.version),
        },
        frames=sum(exported.counts.values()),
    )


def _choose_method(options: FinetuneRequest, settings: Settings) -> tuple[list[str], str | None]:
    """The methods to try, in order, before any frame is read, and a note on any skipped.

    A request's ``method`` is the only candidate. Otherwise the candidates are
    ``ATCON_FINETUNE_METHOD``'s, in order of preference. A method that needs in-domain
    frames (``anchor``, ``recalibrate``) adapts one camera to the others, so a
    fine-tune of every camera at once cannot use it: asked for explicitly, that is an
    error; among the configured ones it is skipped, and with none left ATCON runs.
    """
    from models.methods import ATCON, NEEDS_ANCHOR, method_name, parse_method

    asked = options.method
    wanted = [asked] if asked is not None else settings.finetune_method_list
    methods = [method_name(parse_method(m)) for m in wanted]
    if "none" in methods:
        raise JobError("method none adapts nothing: choose a method that changes the model")
    usable, skipped = [], []
    for method in methods:
        if NEEDS_ANCHOR & set(parse_method(method)) and options.camera is None:
            skipped.append(method)
        else:
            usable.append(method)
    note = None
    if skipped:
        why = (
            f"method {', '.join(skipped)} adapts one camera to the ones the model already "
            "serves and needs a camera"
        )
        if asked is not None:
            raise JobError(
                f"{why}: give the request a camera (or ATCON_FINETUNE_CAMERAS for the "
                "nightly run), or choose another method"
            )
        note = f"{why}; this fine-tune of every camera at once skipped it"
    return (usable or [ATCON]), note


def _method_for_frames(
    methods: list[str],
    note: str | None,
    options: FinetuneRequest,
    pool: FramePool,
    exported: Any,
    in_domain: Path,
) -> tuple[str, str | None, Path | None]:
    """The first of ``methods`` the frames allow (labels, other cameras' frames).

    Returns the method, a note on what was skipped and why, and the folder of
    in-domain frames (if the method uses them). A method asked for explicitly that
    the frames do not allow fails the job with the reason; with none left, ATCON runs.
    """
    from models.methods import ATCON, NEEDS_ANCHOR, NEEDS_LABELS, parse_method

    asked = options.method is not None
    notes = [note] if note else []
    exported_in_domain: int | None = None
    for method in methods:
        if method == ATCON:
            return ATCON, "; ".join(notes) or None, None
        components = set(parse_method(method))
        if NEEDS_LABELS & components and exported.train_dir is None:
            why = (
                f"method {method} needs labeled frames and the pool has none in its training split"
            )
            if asked:
                raise JobError(
                    f"{why}; label frames in the review queue, or choose a method without "
                    "'supervised'"
                )
            notes.append(f"{why}: skipped")
            continue
        if NEEDS_ANCHOR & components:
            assert options.camera is not None  # _choose_method saw to it
            if exported_in_domain is None:
                exported_in_domain = pool.export_in_domain(in_domain, exclude_camera=options.camera)
            if exported_in_domain == 0:
                why = (
                    f"method {method} needs frames of the cameras the model already serves "
                    f"and the pool has none besides camera {options.camera}'s"
                )
                if asked:
                    raise JobError(f"{why}; process videos of those cameras first")
                notes.append(f"{why}: skipped")
                continue
            return method, "; ".join(notes) or None, in_domain
        return method, "; ".join(notes) or None, None
    notes.append(f"ran {ATCON} instead")
    return ATCON, "; ".join(notes), None


def _compare_with_parent(
    pool: FramePool,
    options: FinetuneRequest,
    parent_checkpoint: Path,
    parent_version: str,
    candidate: Path,
    folder: Path,
    *,
    count: int,
    seed: str,
    layer: str | None = None,
    frame_filter: FrameFilter | None = None,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """The candidate beside its parent on a sample of the request's unlabeled pool frames.

    Returns the files to store with the version (``comparison.json`` and the overlays)
    and a note for its card. A comparison that cannot be made is not a failed
    fine-tune: the note then says why, and the version has no comparison.
    """
    from models._exceptions import AtconError

    from ..training.comparison import COMPARISON_DIR, COMPARISON_JSON, compare_models, sample_frames

    records = pool.records(
        since=options.since, video_ids=options.video_ids, labeled=False, camera=options.camera
    )
    chosen = sample_frames(records, count, seed=seed, frame_filter=frame_filter)
    if not chosen:
        return {}, {"frames": 0, "error": "no unlabeled pool frame to compare on"}
    overlays = folder / COMPARISON_DIR
    try:
        report = compare_models(
            parent_checkpoint,
            candidate,
            pool,
            chosen,
            overlays,
            parent_version=parent_version,
            sampled_from=len(records),
            layer=layer,
        )
    except (AtconError, OSError, ValueError) as exc:
        logger.warning("could not compare the candidate with its parent: %s", exc)
        return {}, {"frames": 0, "error": f"could not compare with the parent: {exc}"}
    atomic_write_json(folder / COMPARISON_JSON, report)
    files = {COMPARISON_JSON: folder / COMPARISON_JSON}
    for path in sorted(overlays.iterdir()):
        files[f"{COMPARISON_DIR}/{path.name}"] = path
    return files, {"frames": report["summary"]["frames"], **report["summary"]}


def _compare_on_videos(options: FinetuneRequest, status: VersionStatus, settings: Settings) -> bool:
    """Whether the new version detects again on recent videos (:func:`_disagreements`).

    That costs minutes of CPU per video, so by default only a version that waits for
    an admin's decision (a ``candidate``) gets it: the models page shows it beside the
    activate button. A version the gate promoted or rejected does not, unless the
    request asks (``compare_videos``); ``ATCON_FINETUNE_COMPARE_VIDEOS=0`` turns it off.
    """
    if not settings.finetune_compare_videos or options.compare_videos is False:
        return False
    return bool(options.compare_videos) or status is VersionStatus.CANDIDATE


def _disagreements(
    storage: Storage, settings: Settings, camera: str | None, candidate: Path, work: Path
) -> dict[str, Path]:
    """``disagreements.json`` (:mod:`worker.finetune.disagreements`) to store with the version; none
    when there is no recent video or the comparison cannot be made (not a failed
    fine-tune: the log says why)."""
    from .disagreements import DISAGREEMENTS_JSON, event_disagreements, recent_videos

    videos = recent_videos(storage, settings.finetune_compare_videos, camera)
    if not videos:
        return {}
    try:
        report = event_disagreements(storage, settings, candidate, videos, work / "detect")
    except (AtconError, OSError, ValueError) as exc:
        logger.warning("the new version was not compared on recent videos: %s", exc)
        return {}
    path = work / DISAGREEMENTS_JSON
    atomic_write_json(path, report)
    return {DISAGREEMENTS_JSON: path}


def config_dict(config: Any) -> dict[str, Any]:
    from models.training import config_to_dict

    return config_to_dict(config)


def _summary(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if report is None:
        return None
    keys = ("macro_f1", "map", "per_class_f1", "consistency", "images")
    return {k: report[k] for k in keys if k in report}
