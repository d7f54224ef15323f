"""The worker: jobs run in-process with heartbeats, progress, retries; the model cache.

Most tests run the detection job against a fast stand-in with the contract of
``worker.detection.detector.Detector`` (``detect(video, out_dir, *, video_id, progress)``);
``test_real_detector_through_the_worker`` runs the real one.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests import media
from worker._exceptions import (
    JobError,
    NoModelError,
    QueueError,
    QueueUnavailableError,
    StorageError,
    VideoDecodeError,
)
from worker.detection.job import detect_video
from worker.queue.interface import Job, JobState
from worker.queue.memory import MemoryQueue
from worker.runtime.jobs import JobContext, JobOutcome, Worker
from worker.runtime.reconcile import reconcile
from worker.serving.model_cache import ModelCache, ModelRef, ensure_first_version, model_reference
from worker.settings import Settings
from worker.storage import Storage, VideoRecord, new_id


@pytest.fixture
def settings(tmp_path):
    return Settings(
        data_dir=tmp_path / "data", visibility_timeout_s=2, retry_backoff_s=0.05, max_attempts=2
    )


@pytest.fixture
def storage(settings):
    storage = Storage(settings.data_dir)
    storage.ensure_layout()
    return storage


@pytest.fixture
def queue(settings):
    return MemoryQueue(settings)


def add_video(
    storage: Storage, data: bytes | None = None, camera: str | None = None
) -> VideoRecord:
    received = storage.new_upload_file()
    received.write_bytes(data if data is not None else media.video_bytes())
    record = VideoRecord(video_id=new_id(), job_id=new_id(), size_bytes=1, camera=camera)
    storage.save_video(record, received)
    return record


# job functions used below (importable, they take ids like real jobs)
progress_seen: list[float] = []


def counting_job(ctx: JobContext, n: int) -> JobOutcome:
    for step in range(1, 5):
        ctx.progress(step / 4)
        progress_seen.append(ctx.job.progress)
    return JobOutcome({"n": n * 2}, frames=n)


def flaky_job(ctx: JobContext, n: int) -> JobOutcome:
    if ctx.job.attempts == 1:
        raise RuntimeError("disk hiccup")
    return JobOutcome({"attempt": ctx.job.attempts})


def hopeless_job(ctx: JobContext, n: int) -> JobOutcome:
    raise JobError("video 42 was deleted")


def undecodable_job(ctx: JobContext, n: int) -> JobOutcome:
    raise VideoDecodeError("the file is not a video")


def test_worker_runs_a_job_and_reports_progress(queue, storage, settings):
    job = queue.enqueue("test", {"n": 21})
    reported = []
    real_set_progress = queue.set_progress

    def spy(lease, fraction, detail=None):  # observe what reaches the queue, then record it
        reported.append(fraction)
        return real_set_progress(lease, fraction, detail)

    queue.set_progress = spy  # type: ignore[method-assign]
    worker = Worker(queue, storage, settings, "test", function=counting_job)
    assert worker.run(burst=True, poll_s=0.1) == 1
    done = queue.get(job.job_id)
    assert done.status is JobState.done and done.result == {"n": 42}
    assert queue.stats("test").frames_total == 21
    assert reported[0] == 0.25 and reported[-1] == 1.0


def test_an_error_is_retried_then_succeeds(queue, storage, settings):
    job = queue.enqueue("test", {"n": 1})
    worker = Worker(queue, storage, settings, "test", function=flaky_job)
    worker.run(max_jobs=2, poll_s=0.2)
    done = queue.get(job.job_id)
    assert done.status is JobState.done and done.result == {"attempt": 2}


@pytest.mark.parametrize("function", [hopeless_job, undecodable_job])
def test_hopeless_jobs_fail_at_once(queue, storage, settings, function):
    job = queue.enqueue("test", {"n": 1})
    Worker(queue, storage, settings, "test", function=function).run(burst=True, poll_s=0.1)
    failed = queue.get(job.job_id)
    assert failed.status is JobState.failed and failed.attempts == 1
    assert [j.job_id for j in queue.dead_letters("test")] == [job.job_id]


def test_a_payload_that_does_not_fit_fails_at_once(queue, storage, settings):
    job = queue.enqueue("test", {"wrong": 1})
    Worker(queue, storage, settings, "test", function=counting_job).run(burst=True, poll_s=0.1)
    failed = queue.get(job.job_id)
    assert failed.status is JobState.failed and "does not fit" in (failed.error or "")


def test_a_job_whose_lease_is_lost_is_abandoned(queue, storage, settings):
    calls = []

    def losing_job(ctx: JobContext, n: int) -> JobOutcome:
        queue.delete(ctx.job.job_id)  # from here on this worker holds nothing
        calls.append("before")
        ctx.progress(0.9)
        calls.append("after")  # never reached
        return JobOutcome()

    queue.enqueue("test", {"n": 1})
    worker = Worker(queue, storage, settings, "test", function=losing_job)
    assert worker.run(burst=True, poll_s=0.1) == 1
    assert calls == ["before"]


class StandInDetector:
    """Same contract as worker.detect.Detector; writes a tiny events.json."""

    loads = 0

    def __init__(self, version: str) -> None:
        type(self).loads += 1
        self.version = version

    def detect(self, video, out_dir, *, video_id=None, progress=None):
        out = Path(out_dir)
        out.mkdir(parents=True)
        assert Path(video).is_file()
        if progress:
            progress(0.5)
            progress(1.0)
        content = {
            "schema_version": 1,
            "video_id": video_id,
            "model": {"version": self.version},
            "sampling": {"samples": 7},
            "events": [{}],
        }
        (out / "events.json").write_text(json.dumps(content))
        return content


def stand_in_loader(ref, version, settings):
    return StandInDetector(version)


def test_model_cache_reloads_only_when_the_model_changes(storage, settings, tmp_path):
    from worker.serving.versions import ModelRegistry, VersionStatus

    first_file = tmp_path / "first.pt"
    first_file.write_bytes(b"weights")
    settings = settings.model_copy(update={"checkpoint": first_file})
    assert ensure_first_version(storage, settings) is not None  # ATCON_CHECKPOINT: v0001
    cache = ModelCache(storage, settings, loader=stand_in_loader)
    StandInDetector.loads = 0
    first, version = cache.current()
    assert version == "v0001" and cache.current()[0] is first
    assert StandInDetector.loads == 1

    new = tmp_path / "new.pt"
    new.write_bytes(b"new weights")
    card = ModelRegistry(storage.models).register(new, status=VersionStatus.ACTIVE, reason="t")
    second, version = cache.current()
    assert version == card.version and second is not first and StandInDetector.loads == 2
    assert cache.current()[0] is second


def test_model_reference_follows_the_pointers(storage, settings, tmp_path):
    from worker.serving.versions import ModelRegistry

    with pytest.raises(NoModelError, match="set ATCON_CHECKPOINT"):
        model_reference(storage, settings)
    missing = settings.model_copy(update={"checkpoint": tmp_path / "gone.pt"})
    assert ensure_first_version(storage, missing) is None
    with pytest.raises(NoModelError, match="does not exist"):
        model_reference(storage, missing)
    day, night = _versions(storage, tmp_path)
    ModelRegistry(storage.models).activate(night, cameras=["icu-3"])
    ref = model_reference(storage, settings)
    assert ref == ModelRef(storage.models / day / "checkpoint.pt", day)
    assert model_reference(storage, settings, "icu-3").version == night
    assert model_reference(storage, settings, "icu-4").version == day
    (storage.models / "ACTIVE").write_text("../../etc\n")
    with pytest.raises(StorageError, match="active model version"):
        model_reference(storage, settings)


def _versions(storage: Storage, tmp_path: Path) -> tuple[str, str]:
    """A default version and a second one, candidate, to activate for a camera."""
    from worker.serving.versions import ModelRegistry, VersionStatus

    registry = ModelRegistry(storage.models)
    (tmp_path / "day.pt").write_bytes(b"day weights")
    (tmp_path / "night.pt").write_bytes(b"night weights")
    day = registry.register(tmp_path / "day.pt", status=VersionStatus.ACTIVE, reason="day")
    night = registry.register(tmp_path / "night.pt", status=VersionStatus.CANDIDATE, reason="n")
    return day.version, night.version


def test_model_cache_keeps_a_detector_per_version(storage, settings, tmp_path):
    from worker.serving.versions import ModelRegistry

    day, night = _versions(storage, tmp_path)
    ModelRegistry(storage.models).activate(night, cameras=["icu-3"])
    cache = ModelCache(storage, settings, loader=stand_in_loader, capacity=2)
    StandInDetector.loads = 0
    first, version = cache.current("icu-3")
    assert version == night and cache.current("icu-4")[1] == day
    assert cache.current()[1] == day and cache.current("icu-3")[0] is first
    assert StandInDetector.loads == 2  # switching between cameras reloads nothing
    assert cache.loaded == [day, night]

    small = ModelCache(storage, settings, loader=stand_in_loader, capacity=1)
    StandInDetector.loads = 0
    small.current("icu-3")
    small.current("icu-4")
    small.current("icu-3")
    assert StandInDetector.loads == 3 and small.loaded == [night]
    with pytest.raises(ValueError, match="capacity"):
        ModelCache(storage, settings, capacity=0)


def test_a_video_is_scored_by_its_cameras_version(queue, storage, settings, tmp_path):
    from worker.pool.frames import FramePool
    from worker.serving.versions import ModelRegistry

    day, night = _versions(storage, tmp_path)
    registry = ModelRegistry(storage.models)
    registry.activate(night, cameras=["icu-3"])
    worker = Worker(
        queue, storage, settings, "detect", models=ModelCache(storage, settings, stand_in_loader)
    )

    def detect(camera: str | None) -> str:
        record = add_video(storage, camera=camera)
        queue.enqueue("detect", {"video_id": record.video_id}, job_id=record.job_id)
        assert worker.run(burst=True, poll_s=0.1) == 1
        job = queue.get(record.job_id)
        assert job.status is JobState.done, job.error
        events = storage.read_events(record.video_id)
        assert events is not None and events["model"]["version"] == job.result["model_version"]
        return str(job.result["model_version"])

    assert detect("icu-3") == night
    assert detect("icu-4") == day and detect(None) == day
    registry.deactivate_cameras(["icu-3"])
    assert detect("icu-3") == day
    registry.activate(night, cameras=["icu-3"])
    assert detect("icu-3") == night
    assert FramePool(storage.frames).records() == []  # the stand-in adds no frames


def test_no_model_is_a_job_error(storage, settings):
    with pytest.raises(JobError, match="no model to serve"):
        ModelCache(storage, settings).current()


def test_detect_job_publishes_results(queue, storage, settings, tmp_path):
    checkpoint = tmp_path / "m.pt"
    checkpoint.write_bytes(b"x")
    settings = settings.model_copy(update={"checkpoint": checkpoint})
    record = add_video(storage)
    queue.enqueue("detect", {"video_id": record.video_id}, job_id=record.job_id)
    worker = Worker(
        queue,
        storage,
        settings,
        "detect",
        models=ModelCache(storage, settings, loader=stand_in_loader),
    )
    assert worker.run(burst=True, poll_s=0.1) == 1
    job = queue.get(record.job_id)
    assert job.status is JobState.done, job.error
    # the Worker registered ATCON_CHECKPOINT as the first version when it started
    assert job.result["event_count"] == 1 and job.result["model_version"] == "v0001"
    assert queue.stats("detect").frames_total == 7
    assert storage.read_events(record.video_id)["video_id"] == record.video_id
    assert list(storage.tmp.iterdir()) == []


def test_detect_job_of_a_deleted_video_fails_for_good(queue, storage, settings):
    record = add_video(storage)
    storage.delete_video(record.video_id)
    models = ModelCache(storage, settings, loader=stand_in_loader)
    ctx = JobContext(queue.enqueue("detect", {}), settings, storage, models, lambda f: None)
    with pytest.raises(JobError, match="deleted"):
        detect_video(ctx, record.video_id)


def test_a_detect_worker_waits_for_a_model(queue, storage, settings):
    stop = threading.Event()
    worker = Worker(queue, storage, settings, "detect")
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    queue.enqueue("detect", {"video_id": new_id()})
    assert not stop.wait(0.3)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert queue.depth("detect") == 1  # it never took the job without a model


def test_reconcile_requeues_uploads_without_results(queue, storage):
    pending = add_video(storage)
    finished = add_video(storage)
    staging = storage.staging_dir(finished.video_id) / "r"
    staging.mkdir()
    (staging / "events.json").write_text('{"schema_version": 1}')
    storage.publish_results(finished.video_id, staging)
    queued = add_video(storage)
    queue.enqueue("detect", {"video_id": queued.video_id}, job_id=queued.job_id)

    assert reconcile(storage, queue) == [pending.video_id]
    job = queue.get(pending.job_id)  # the same job id as before the restart
    assert job.payload == {"video_id": pending.video_id}
    assert reconcile(storage, queue) == []


class _RefusingQueue(MemoryQueue):
    """The in-memory queue, refusing to read one job's record (a corrupt hash, say)."""

    def __init__(self, settings: Settings, refused: str) -> None:
        super().__init__(settings)
        self.refused = refused

    def get(self, job_id: str) -> Job:
        if job_id == self.refused:
            raise QueueError(f"job {job_id} has an unreadable record")
        return super().get(job_id)


def test_reconcile_goes_on_past_a_job_it_cannot_check(settings, storage):
    first, second, third = (add_video(storage) for _ in range(3))
    queue = _RefusingQueue(settings, refused=second.job_id)
    requeued = reconcile(storage, queue)
    assert sorted(requeued) == sorted([first.video_id, third.video_id])
    assert queue.get(third.job_id).payload == {"video_id": third.video_id}


def test_reconcile_stops_when_the_queue_is_unreachable(settings, storage):
    add_video(storage)

    class Unreachable(MemoryQueue):
        def get(self, job_id: str) -> Job:
            raise QueueUnavailableError("Redis cannot be reached")

    with pytest.raises(QueueUnavailableError):
        reconcile(storage, Unreachable(settings))


def test_real_detector_through_the_worker(queue, storage, settings, tmp_path):
    from tests.service.test_health import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "model.pt", arch="resnet18")
    settings = settings.model_copy(update={"checkpoint": checkpoint, "sample_fps": 2.0})
    data = media.video_bytes(frames=24, size=(96, 64), fps=8)
    record = add_video(storage, data, camera="icu-3")
    queue.enqueue("detect", {"video_id": record.video_id}, job_id=record.job_id)
    Worker(queue, storage, settings, "detect").run(burst=True, poll_s=0.1)
    job = queue.get(record.job_id)
    assert job.status is JobState.done, job.error
    events = storage.read_events(record.video_id)
    assert events is not None and isinstance(events.get("events"), list)
    assert events["model"]["version"] == job.result["model_version"]
    from worker.pool.frames import FramePool

    frames = FramePool(storage.frames).records()
    assert frames and {(f.video_id, f.camera) for f in frames} == {(record.video_id, "icu-3")}
