"""The fine-tune job through a real Worker: pool -> ATCON -> evaluation -> version -> gate."""

from __future__ import annotations

import csv
import math
import threading
import time
from pathlib import Path

import pytest
import torch

from models.backbones import build_backbone
from models.checkpoint import CheckpointInfo, save_checkpoint
from synthetic.synth import SynthConfig, synthesize
from worker.finetune.job import _local_lock
from worker.finetune.nightly import (
    _nightly_targets,
    _queue_nightly,
    last_finetune,
    nightly_should_run,
)
from worker.finetune.request import FinetuneRequest, queue_finetune
from worker.pool.frames import FramePool
from worker.queue.memory import MemoryQueue
from worker.runtime.jobs import FINETUNE, Worker
from worker.serving.versions import GateDecision, ModelRegistry, VersionStatus
from worker.settings import Settings
from worker.storage import Storage

SIZE = 32


@pytest.fixture(scope="module")
def synth_frames(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth")
    result = synthesize(out, SynthConfig(seconds=40, fps=6, width=128, height=96, frames_fps=2))
    assert result.frames_dir is not None
    classes = (result.frames_dir / "classes.txt").read_text().split()
    with open(result.frames_dir / "labels.csv", newline="") as fh:
        rows = [
            (result.frames_dir / r["path"], [x for x in r["labels"].split("|") if x])
            for r in csv.DictReader(fh)
        ]
    return classes, rows


def _checkpoint(path: Path, classes: list[str]) -> Path:
    torch.manual_seed(0)
    model = build_backbone("resnet18_slim", len(classes), width=8)
    info = CheckpointInfo(
        arch="resnet18_slim", class_names=classes, input_size=SIZE, arch_kwargs={"width": 8}
    )
    save_checkpoint(path, model, info)
    return path


@pytest.fixture
def env(tmp_path: Path, synth_frames):
    classes, rows = synth_frames
    settings = Settings(
        data_dir=tmp_path / "data",
        checkpoint=_checkpoint(tmp_path / "model.pt", classes),
        dev=True,
        finetune_steps=6,
        finetune_batch_size=4,
        pool_val_fraction=0.5,
        finetune_min_new_frames=5,
        visibility_timeout_s=30,
    )
    storage = Storage(settings.data_dir)
    storage.ensure_layout()
    queue = MemoryQueue(settings)
    return settings, storage, queue, classes, rows


def _fill(storage: Storage, rows, classes, *, labeled: int, camera: str | None = None) -> FramePool:
    pool = FramePool(storage.frames, SIZE, 0.5)
    for i, (path, labels) in enumerate(rows):
        record = pool.add_image_bytes(path.read_bytes(), camera=camera)
        if i < labeled:
            pool.set_labels(record.frame_id, labels, classes)
    return pool


def _run(settings, storage, queue, job_id: str, seen: list | None = None):
    worker = Worker(queue, storage, settings, FINETUNE, name="test-finetune")
    if seen is not None:
        original = queue.set_progress

        def spy(lease, fraction, detail=None):
            seen.append(detail)
            return original(lease, fraction, detail)

        queue.set_progress = spy  # observe what reaches the queue, then really record it
    assert worker.run(threading.Event(), max_jobs=1, burst=True) == 1
    return queue.get(job_id)


@pytest.mark.slow
def test_finetune_registers_a_version_with_its_card(env) -> None:
    settings, storage, queue, classes, rows = env
    _fill(storage, rows, classes, labeled=40)
    job_id = queue_finetune(queue, FinetuneRequest(steps=6, method="atcon"))
    seen: list = []
    job = _run(settings, storage, queue, job_id, seen)
    assert job.status == "done", job.error
    registry = ModelRegistry(storage.models)
    versions = {card.version: card for card in registry.versions()}
    assert set(versions) == {"v0001", "v0002"}
    assert versions["v0001"].history[0]["reason"] == "initial model from ATCON_CHECKPOINT"
    card = versions["v0002"]
    assert card.parent == "v0001"
    assert card.data["counts"]["unlabeled"] == len(rows) - 40
    assert card.data["counts"]["train"] + card.data["counts"]["val"] == 40
    assert card.metrics_before is not None and card.metrics_after is not None
    assert {"macro_f1", "consistency"} <= set(card.metrics_after)
    assert card.config["finetune"]["schedule"] == "alternating"
    assert card.config["finetune"]["min_labeled_fraction"] == 0.25
    kept = card.config["thresholds"]["kept"]  # the pool's validation frames only gate
    assert set(kept) == set(classes) and "kept the parent's threshold" in kept[classes[0]]
    assert card.status in (VersionStatus.ACTIVE, VersionStatus.REJECTED)
    assert job.result["version"] == "v0002"
    training = [d for d in seen if d and d.get("phase") == "training"]
    assert training and training[-1]["steps"] == 6 and "losses" in training[-1]
    assert last_finetune(storage) is not None
    assert not list(storage.tmp.glob("finetune-*"))


@pytest.mark.slow
def test_a_ruined_finetune_is_rejected_and_the_active_model_kept(env) -> None:
    settings, storage, queue, classes, rows = env
    _fill(storage, rows, classes, labeled=40)
    registry = ModelRegistry(storage.models)
    registry.register(settings.checkpoint, status=VersionStatus.ACTIVE, reason="initial")
    active_bytes = registry.checkpoint_path("v0001").read_bytes()
    job_id = queue_finetune(queue, FinetuneRequest(steps=6, lr=5.0, method="atcon"))
    job = _run(settings, storage, queue, job_id)
    assert registry.active_version() == "v0001"
    assert registry.checkpoint_path("v0001").read_bytes() == active_bytes
    if job.status == "done":  # it finished: the gate must have refused it
        card = registry.get(job.result["version"])
        assert card.status is VersionStatus.REJECTED, card.reason
    else:  # or the loss blew up / the model collapsed: the job says so, nothing registered
        assert job.status == "failed" and "fine-tuning stopped" in job.error
        assert [c.version for c in registry.versions()] == ["v0001"]


def test_an_empty_pool_fails_the_job_with_no_frames(env) -> None:
    settings, storage, queue, _, _ = env
    job_id = queue_finetune(queue)
    job = _run(settings, storage, queue, job_id)
    assert job.status == "failed" and "no frames" in job.error
    assert job.attempts == 1  # not retried: another attempt cannot help


def test_a_second_finetune_waits_for_the_first(env) -> None:
    settings, storage, queue, classes, rows = env
    _fill(storage, rows[:12], classes, labeled=0)
    job_id = queue_finetune(queue, FinetuneRequest(steps=2))
    seen: list = []
    _local_lock.acquire()  # another fine-tune holds the deployment's lock
    runner = threading.Thread(target=_run, args=(settings, storage, queue, job_id, seen))
    try:
        runner.start()
        deadline = time.monotonic() + 30
        while not any(d and d.get("phase") == "waiting" for d in seen):
            assert time.monotonic() < deadline, "the job never reported waiting"
            time.sleep(0.1)
        assert queue.get(job_id).status == "running"
    finally:
        _local_lock.release()
    runner.join(120)
    job = queue.get(job_id)
    assert job.status == "done", job.error
    assert job.result["status"] == "candidate"  # no labeled validation frames: not promoted
    assert "no labeled validation set" in job.result["reason"]


def test_the_card_names_the_videos_its_frames_came_from(env) -> None:
    """What lets a deletion know which versions learned from a video (worker.deletion)."""
    import numpy as np
    from PIL import Image

    from worker.storage import VideoRecord, new_id

    settings, storage, queue, classes, rows = env
    pool = FramePool(storage.frames, SIZE, 0.5)
    videos = sorted([new_id(), new_id()])
    received = storage.new_upload_file()
    received.write_bytes(b"video")  # the first is stored; the second was deleted meanwhile
    storage.save_video(VideoRecord(video_id=videos[0], job_id=new_id(), size_bytes=5), received)
    for i, (path, _) in enumerate(rows[:8]):
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        pool.add_frame(rgb, video_id=videos[i % 2], time_s=float(i))
    _fill(storage, rows[8:10], classes, labeled=0)  # uploaded images: from no video
    request = FinetuneRequest(steps=2, mode="unsupervised")
    job = _run(settings, storage, queue, queue_finetune(queue, request))
    assert job.status == "done", job.error
    card = ModelRegistry(storage.models).get(job.result["version"])
    assert card.data["video_ids"] == videos
    assert card.data["counts"]["unlabeled"] == 10
    assert [w["video_id"] for w in card.withdrawn] == [videos[1]]  # deleted: recorded


def test_nightly_conditions(env) -> None:
    settings, storage, queue, classes, rows = env
    ok, why = nightly_should_run(storage, queue, settings)
    assert not ok and "only 0 new frames" in why
    _fill(storage, rows[:6], classes, labeled=0)
    assert nightly_should_run(storage, queue, settings)[0]
    queue_finetune(queue)
    ok, why = nightly_should_run(storage, queue, settings)
    assert not ok and "already queued" in why


def test_a_camera_finetune_uses_and_serves_that_camera_only(env, monkeypatch) -> None:
    settings, storage, queue, classes, rows = env
    _fill(storage, rows[:8], classes, labeled=0, camera="night-1")
    _fill(storage, rows[8:16], classes, labeled=4, camera="day-1")
    registry = ModelRegistry(storage.models)
    default = registry.register(settings.checkpoint, status=VersionStatus.ACTIVE, reason="init")
    # the gate's judgement is tested elsewhere; here: what a promotion of a camera's
    # version does
    monkeypatch.setattr(
        "worker.finetune.job.promotion_gate",
        lambda *a, **k: GateDecision(True, VersionStatus.ACTIVE, "promoted (test)"),
    )
    request = FinetuneRequest(steps=2, camera="night-1", mode="unsupervised")
    job = _run(settings, storage, queue, queue_finetune(queue, request))
    assert job.status == "done", job.error
    card = registry.get(job.result["version"])
    assert card.cameras == ["night-1"] and card.parent == default.version
    assert card.data["camera"] == "night-1"
    assert card.data["counts"] == {"unlabeled": 8, "train": 0, "val": 0}  # no day-1 labels
    assert card.data["counts_by_camera"] == {"night-1": {"unlabeled": 8, "train": 0, "val": 0}}
    assert job.result["active_for"] == ["night-1"] and job.result["cameras"] == ["night-1"]
    assert registry.active_version() == default.version  # the default stays
    assert registry.camera_versions() == {"night-1": card.version}
    assert last_finetune(storage) is None and last_finetune(storage, "night-1") is not None

    again = _run(settings, storage, queue, queue_finetune(queue, request))
    assert registry.get(again.result["version"]).parent == card.version  # the camera's own

    empty = FinetuneRequest(steps=2, camera="icu-9")
    failed = _run(settings, storage, queue, queue_finetune(queue, empty))
    assert failed.status == "failed" and "no unlabeled frames of camera icu-9" in failed.error


def test_nightly_per_camera(env) -> None:
    settings, storage, queue, classes, rows = env
    settings = settings.model_copy(update={"finetune_cameras": "night-1,day-1"})
    _fill(storage, rows[:6], classes, labeled=0, camera="night-1")
    ok, why = nightly_should_run(storage, queue, settings, "day-1")
    assert not ok and "only 0 new frames for camera day-1" in why
    assert nightly_should_run(storage, queue, settings, "night-1")[0]
    assert _nightly_targets(storage, queue, settings)[0]
    queued = _queue_nightly(storage, queue, settings).split(",")
    assert len(queued) == 2  # the global fine-tune and night-1's; day-1 has too few frames
    cameras = sorted(str(queue.get(j).payload["request"].get("camera")) for j in queued if j)
    assert cameras == ["None", "night-1"]
    ok, why = nightly_should_run(storage, queue, settings, "night-1")
    assert not ok and "for camera night-1 already queued" in why
    assert not _nightly_targets(storage, queue, settings)[0]


def test_request_validation() -> None:
    with pytest.raises(ValueError, match="extra"):
        FinetuneRequest.model_validate({"epochs": 1, "learning_rate": 0.1})
    with pytest.raises(ValueError, match="lr"):
        FinetuneRequest.model_validate({"lr": -1})
    with pytest.raises(ValueError):
        FinetuneRequest.model_validate({"mode": "combined"})
    with pytest.raises(ValueError, match="video_ids"):
        queue_finetune(MemoryQueue(Settings(dev=True)), FinetuneRequest(video_ids=["../x"]))


def test_a_cancelled_finetune_stops_at_the_next_step_and_keeps_the_active_model(env) -> None:
    settings, storage, queue, classes, rows = env
    _fill(storage, rows, classes, labeled=0)
    registry = ModelRegistry(storage.models)
    registry.register(settings.checkpoint, status=VersionStatus.ACTIVE, reason="initial")
    active_bytes = registry.checkpoint_path("v0001").read_bytes()
    request = FinetuneRequest(steps=5000, mode="unsupervised", method="atcon")
    job_id = queue_finetune(queue, request)
    seen: list = []
    runner = threading.Thread(target=_run, args=(settings, storage, queue, job_id, seen))
    runner.start()
    deadline = time.monotonic() + 120
    while not any(d and d.get("phase") == "training" for d in seen):
        assert runner.is_alive() and time.monotonic() < deadline, "training never started"
        time.sleep(0.05)
    assert queue.cancel(job_id, "cancelled by admin") == "running"
    runner.join(60)
    assert not runner.is_alive()
    job = queue.get(job_id)
    assert job.status == "failed" and job.error == "cancelled by admin"
    assert job.attempts == 1
    steps = [d["step"] for d in seen if d and d.get("phase") == "training"]
    assert steps and max(steps) < 5000
    assert [c.version for c in registry.versions()] == ["v0001"]
    assert registry.active_version() == "v0001"
    assert registry.checkpoint_path("v0001").read_bytes() == active_bytes
    assert not list(storage.tmp.glob("finetune-*"))

    with pytest.raises(ValueError, match="layer"):
        FinetuneRequest.model_validate({"layer": "layer4; rm -rf"})
    with pytest.raises(ValueError, match="camera"):
        FinetuneRequest.model_validate({"camera": "../ward"})
    assert FinetuneRequest(camera="icu-3").camera == "icu-3"


def test_a_layer_with_one_pixel_maps_fails_the_job_up_front(env, tmp_path) -> None:
    settings, storage, queue, classes, rows = env
    torch.manual_seed(0)
    options = {"width": 4, "small_input": False}  # stride-32 stem: layer4 is 1x1 at 32 px
    model = build_backbone("resnet18_slim", len(classes), **options)
    info = CheckpointInfo(
        arch="resnet18_slim", class_names=classes, input_size=SIZE, arch_kwargs=options
    )
    settings = settings.model_copy(update={"checkpoint": save_path(tmp_path, model, info)})
    _fill(storage, rows[:6], classes, labeled=0)
    asked = FinetuneRequest(steps=1, method="adabn+atcon+supervised")
    job = _run(settings, storage, queue, queue_finetune(queue, asked))
    assert job.status == "failed" and job.attempts == 1
    assert "'layer4' is 1x1" in job.error and '"layer": "layer3"' in job.error
    assert "active model is unchanged" in job.error
    assert not list(storage.tmp.glob("finetune-*"))  # refused before exporting frames
    # the default prefers adabn+atcon+supervised: with these maps it goes on to adabn
    job = _run(settings, storage, queue, queue_finetune(queue, FinetuneRequest(steps=1)))
    assert job.status == "done", job.error
    card = ModelRegistry(storage.models).get(job.result["version"])
    assert card.config["method"] == "adabn"
    assert "adabn+atcon+supervised skipped: " in card.config["method_note"]
    assert "'layer4' is 1x1" in card.config["method_note"]
    request = FinetuneRequest(steps=1, layer="layer3", method="atcon")
    job = _run(settings, storage, queue, queue_finetune(queue, request))
    assert job.status == "done", job.error
    card = ModelRegistry(storage.models).get(job.result["version"])
    assert card.config["finetune"]["layer"] == "layer3"
    comparison = ModelRegistry(storage.models).comparison(card.version)
    assert comparison is not None and comparison["layer"] == "layer3"  # not layer4's NaN
    assert math.isfinite(comparison["summary"]["consistency"]["candidate"])


def save_path(tmp_path: Path, model, info: CheckpointInfo) -> Path:
    path = tmp_path / "one-pixel.pt"
    save_checkpoint(path, model, info)
    return path


def test_without_labeled_validation_a_candidate_carries_its_comparison(env) -> None:
    settings, storage, queue, classes, rows = env
    settings = settings.model_copy(update={"finetune_compare_frames": 4})
    _fill(storage, rows[:10], classes, labeled=0)
    job = _run(settings, storage, queue, queue_finetune(queue, FinetuneRequest(steps=2)))
    assert job.status == "done", job.error
    registry = ModelRegistry(storage.models)
    card = registry.get(job.result["version"])
    assert card.status is VersionStatus.CANDIDATE and card.metrics_after is None
    assert registry.active_version() == "v0001"  # nothing promoted without labels
    comparison = registry.comparison(card.version)
    assert comparison is not None and comparison["parent"]["version"] == "v0001"
    assert comparison["sampled_from"] == 10 and len(comparison["frames"]) == 4
    summary = comparison["summary"]
    assert 0.0 <= summary["agreement"] <= 1.0
    assert set(summary["entropy"]) == set(summary["consistency"]) == {"parent", "candidate"}
    assert card.data["comparison"]["frames"] == 4
    frame = comparison["frames"][0]
    for role in ("parent", "candidate"):
        assert set(frame[role]["scores"]) == set(classes)
        assert frame[role]["confidence"] == max(frame[role]["scores"].values())
        overlay = registry.attachment_path(card.version, f"comparison/{frame[role]['overlay']}")
        assert overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert frame["agree"] == (frame["parent"]["labels"] == frame["candidate"]["labels"])


# -- adaptation methods ------------------------------------------------------------------


def test_recalibrate_adapts_a_camera_to_the_others(env) -> None:
    settings, storage, queue, classes, rows = env
    _fill(storage, rows[:30], classes, labeled=0, camera="day-1")
    _fill(storage, rows[30:60], classes, labeled=0, camera="night-1")
    # a preference list that anchors the camera: without labels, recalibrate runs
    settings = settings.model_copy(update={"finetune_method": "anchor+supervised,recalibrate"})
    request = FinetuneRequest(camera="night-1")
    job = _run(settings, storage, queue, queue_finetune(queue, request))
    assert job.status == "done", job.error
    assert job.result["method"] == "recalibrate"
    card = ModelRegistry(storage.models).get(job.result["version"])
    assert card.config["method"] == "recalibrate"
    assert "anchor+supervised needs labeled frames" in card.config["method_note"]
    assert card.config["adapt"]["method"] == "recalibrate"
    from models.checkpoint import load_checkpoint

    parent, _ = load_checkpoint(settings.checkpoint)
    model, info = load_checkpoint(ModelRegistry(storage.models).checkpoint_path(card.version))
    shift = info.metrics["recalibration"]["bias_shift"]
    assert info.metrics["frames"] == {"unlabeled": 30, "labeled": 0, "in_domain": 30}
    assert len(shift) == len(classes) and any(abs(s) > 0 for s in shift)
    assert torch.allclose(model.fc.bias - parent.fc.bias, torch.tensor(shift), atol=1e-5)
    assert torch.equal(model.fc.weight, parent.fc.weight)  # only the biases moved


def test_a_method_that_needs_a_camera_falls_back_or_fails_with_its_reason(env) -> None:
    settings, storage, queue, classes, rows = env
    settings = settings.model_copy(update={"finetune_method": "anchor+supervised,recalibrate"})
    _fill(storage, rows[:10], classes, labeled=0)
    job = _run(settings, storage, queue, queue_finetune(queue, FinetuneRequest(steps=2)))
    assert job.status == "done", job.error
    card = ModelRegistry(storage.models).get(job.result["version"])
    assert card.config["method"] == "atcon" and "needs a camera" in card.config["method_note"]
    asked = FinetuneRequest(steps=2, method="recalibrate")
    job = _run(settings, storage, queue, queue_finetune(queue, asked))
    assert job.status == "failed" and "give the request a camera" in job.error
    alone = FinetuneRequest(method="recalibrate", camera="night-9")
    _fill(storage, rows[10:14], classes, labeled=0, camera="night-9")
    job = _run(settings, storage, queue, queue_finetune(queue, alone))
    assert job.status == "failed" and "the pool has none besides camera night-9" in job.error
    needs_labels = FinetuneRequest(steps=2, method="adabn+supervised", camera="night-9")
    job = _run(settings, storage, queue, queue_finetune(queue, needs_labels))
    assert job.status == "failed" and "needs labeled frames" in job.error
    assert ModelRegistry(storage.models).active_version() == "v0001"


def test_adabn_changes_batchnorm_and_detection_folds_the_new_statistics(env) -> None:
    from models.checkpoint import load_checkpoint
    from worker.detection.detector import DetectionConfig, Detector

    settings, storage, queue, classes, rows = env
    _fill(storage, rows[:20], classes, labeled=0, camera="night-1")
    request = FinetuneRequest(camera="night-1", method="adabn")
    job = _run(settings, storage, queue, queue_finetune(queue, request))
    assert job.status == "done", job.error
    path = ModelRegistry(storage.models).checkpoint_path(job.result["version"])
    model, info = load_checkpoint(path)
    parent, _ = load_checkpoint(settings.checkpoint)
    assert info.metrics["batchnorm_changed"] and info.metrics["adabn_images"] == 20
    assert not torch.equal(model.bn1.running_mean, parent.bn1.running_mean)
    detector = Detector(path, config=DetectionConfig(precision="float32", maps=False))
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        scored = detector.scorer(x)
        assert torch.allclose(scored, model.eval()(x), atol=1e-4)
        assert not torch.allclose(scored, parent.eval()(x), atol=1e-3)


def test_request_refuses_unknown_methods() -> None:
    with pytest.raises(ValueError, match="method"):
        FinetuneRequest.model_validate({"method": "magic"})
    with pytest.raises(ValueError, match="twice"):
        FinetuneRequest.model_validate({"method": "adabn+adabn"})
    with pytest.raises(ValueError, match="tent and atcon"):
        FinetuneRequest.model_validate({"method": "tent+atcon"})
    assert FinetuneRequest(method="supervised+recalibrate").method == "supervised+recalibrate"
    # ATCON's own options ask for it, and are refused beside another method
    assert FinetuneRequest(mode="unsupervised").method == "atcon"
    assert FinetuneRequest(alpha=0.5, method="atcon").method == "atcon"
    with pytest.raises(ValueError, match="mode set ATCON fine-tuning"):
        FinetuneRequest(mode="alternating", method="adabn+atcon+supervised")
    with pytest.raises(ValueError, match="finetune_method"):
        Settings(finetune_method="magic")
    assert Settings(finetune_method="supervised+adabn").finetune_method == "adabn+supervised"
    both = Settings(finetune_method="supervised+anchor, recalibrate")
    assert both.finetune_method_list == ["anchor+supervised", "recalibrate"]


def test_with_labels_the_default_runs_adabn_then_atcon_alternating_with_them(env) -> None:
    from models.checkpoint import load_checkpoint

    settings, storage, queue, classes, rows = env
    # 30 steps, each labeled with probability >= 1/4 (the train split is random: uuid4
    # frame ids): all 30 unlabeled has probability 0.75^30 < 2e-4
    settings = settings.model_copy(update={"finetune_steps": 30})
    _fill(storage, rows[:20], classes, labeled=0, camera="day-1")
    _fill(storage, rows[20:60], classes, labeled=20, camera="night-1")
    # a small learning rate: ATCON's collapse guard stops this toy model now and then
    # at the default one, which fails the job with its reason (models/guards.py)
    request = FinetuneRequest(camera="night-1", lr=1e-5)
    job = _run(settings, storage, queue, queue_finetune(queue, request))
    assert job.status == "done", job.error
    registry = ModelRegistry(storage.models)
    card = registry.get(job.result["version"])
    assert card.config["method"] == "adabn+atcon+supervised" and "method_note" not in card.config
    assert card.config["adapt"]["steps"] == 30
    assert card.metrics_before is not None  # judged on the camera's validation frames
    _model, info = load_checkpoint(registry.checkpoint_path(card.version))
    # AdaBN on the camera's 20 unlabeled frames, then labeled and ATCON steps in turn
    assert info.metrics["adabn_images"] == 20 and info.metrics["batchnorm_changed"]
    assert 0 < info.metrics["labeled_steps"] < 30
    # without labels the same default re-estimates BatchNorm only: a candidate
    _fill(storage, rows[60:80], classes, labeled=0, camera="night-2")
    job = _run(settings, storage, queue, queue_finetune(queue, FinetuneRequest(camera="night-2")))
    assert job.status == "done", job.error
    card = registry.get(job.result["version"])
    assert card.config["method"] == "adabn" and "needs labeled frames" in card.config["method_note"]
    assert card.status is VersionStatus.CANDIDATE


class _Killed(BaseException):
    """Stands for the worker process dying (nothing in the worker catches it)."""


@pytest.mark.slow
def test_a_finetune_job_killed_mid_run_resumes_from_its_last_checkpoint(env, monkeypatch) -> None:
    import models.training
    from models.checkpoint import load_checkpoint

    settings, storage, queue, classes, rows = env
    settings = settings.model_copy(update={"finetune_save_every": 2, "visibility_timeout_s": 1})
    queue = MemoryQueue(settings)
    _fill(storage, rows, classes, labeled=40)
    registry = ModelRegistry(storage.models)
    whole = _run(settings, storage, queue, queue_finetune(queue, FinetuneRequest(steps=6)))
    assert whole.status == "done", whole.error
    registry.activate("v0001", reason="the same start for the second run")

    real = models.training.save_training_state
    saved: list[int] = []

    def save_then_die(path, **kwargs):
        real(path, **kwargs)
        saved.append(kwargs["step"])
        if kwargs["step"] == 4 and len(saved) == 2:
            raise _Killed

    job_id = queue_finetune(queue, FinetuneRequest(steps=6))
    monkeypatch.setattr(models.training, "save_training_state", save_then_die)
    with pytest.raises(_Killed):
        Worker(queue, storage, settings, FINETUNE).run(threading.Event(), burst=True)
    state = storage.tmp / f"finetune-{job_id}" / "state"
    assert saved == [2, 4] and any(state.iterdir())  # the dead worker's training state
    time.sleep(1.5)  # its lease runs out; the job is delivered again
    resumed = _run(settings, storage, queue, job_id)
    assert resumed.status == "done", resumed.error
    assert resumed.attempts == 2 and saved == [2, 4, 6]  # steps 5 and 6 only, then saved
    first, _ = load_checkpoint(registry.checkpoint_path(whole.result["version"]))
    second, _ = load_checkpoint(registry.checkpoint_path(resumed.result["version"]))
    a, b = first.state_dict(), second.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert not list(storage.tmp.glob("finetune-*"))  # removed once the job ended


@pytest.mark.slow
@pytest.mark.parametrize(
    "labeled,asked,compared",
    [(0, None, True), (40, None, False), (40, True, True), (0, False, False)],
)
def test_only_a_candidate_is_compared_on_recent_videos_unless_asked(
    env, monkeypatch, labeled, asked, compared
) -> None:
    """Re-detecting recent videos costs minutes: a version the gate promoted or rejected
    skips it; one left a candidate (no labeled validation frames) gets it."""
    import worker.finetune.job

    settings, storage, queue, classes, rows = env
    _fill(storage, rows, classes, labeled=labeled)
    calls: list[str | None] = []
    monkeypatch.setattr(
        worker.finetune.job,
        "_disagreements",
        lambda s, st, camera, c, w: calls.append(camera) or {},
    )
    job_id = queue_finetune(queue, FinetuneRequest(steps=2, compare_videos=asked))
    job = _run(settings, storage, queue, job_id)
    assert job.status == "done", job.error
    candidate = job.result["status"] == "candidate"
    assert candidate == (labeled == 0)
    assert calls == ([None] if compared else [])
