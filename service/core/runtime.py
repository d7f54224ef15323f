"""What one API process holds: settings, storage, queue, audit log, embedded workers.

``Runtime.start`` prepares the data directory, opens the queue, queues again the
uploads that have no results (the data directory is the source of truth; with Redis
this is checked again every ``ATCON_RECONCILE_INTERVAL_S``, should Redis lose its
data) and, in the embedded default, starts the worker threads; ``stop`` ends them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from models._exceptions import CheckpointError
from worker._exceptions import JobError, QueueError, StorageError
from worker.jobs import DETECT, FINETUNE, JOB_KINDS, Worker, reconcile
from worker.model_cache import ModelCache, model_version
from worker.queue import JobQueue, open_queue
from worker.settings import Settings
from worker.storage import ModelRef, Storage

from .audit import AuditLog
from .events_cache import EventsCache
from .inbox import EventIndex
from .session_store import SessionStore
from .sessions import SessionCodec, load_secret
from .throttle import AuthThrottle

__all__ = ["ModelCheck", "ModelStatus", "Runtime"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelStatus:
    ok: bool
    version: str | None
    detail: str


class ModelCheck:
    """Can the model to serve be loaded? Checked once per checkpoint file version."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._status = ModelStatus(False, None, "not checked yet")

    def check(self) -> ModelStatus:
        try:
            ref = self.storage.model_to_serve(self.settings.checkpoint)
        except StorageError as exc:
            return ModelStatus(False, None, str(exc))
        if ref is None:
            return ModelStatus(
                False,
                None,
                "no model to serve: set ATCON_CHECKPOINT or activate a model version",
            )
        try:
            stat = ref.checkpoint.stat()
        except OSError:
            return ModelStatus(False, ref.version, f"checkpoint {ref.checkpoint} does not exist")
        key = (str(ref.checkpoint), ref.version, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key != self._key:
                self._status = self._load(ref)
                self._key = key
            return self._status

    def _load(self, ref: ModelRef) -> ModelStatus:
        from models.checkpoint import load_checkpoint

        try:
            load_checkpoint(ref.checkpoint)
        except CheckpointError as exc:
            return ModelStatus(False, ref.version, str(exc))
        return ModelStatus(True, model_version(ref), "loadable")

    @property
    def version(self) -> str | None:
        return self._status.version


@dataclass
class Runtime:
    settings: Settings
    storage: Storage
    queue: JobQueue
    audit: AuditLog
    model_check: ModelCheck
    #: signs the browser pages' session cookies (secret: <data_dir>/session.key)
    sessions: SessionCodec
    #: counts failed authentications per client address (429 over the limit)
    throttle: AuthThrottle
    events_cache: EventsCache = field(default_factory=EventsCache)
    #: every video's events for the inbox (GET /v1/events, /events)
    inbox: EventIndex = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.inbox = EventIndex(self.storage)

    @classmethod
    def start(
        cls, settings: Settings, *, queue: JobQueue | None = None, workers: int | None = None
    ) -> Runtime:
        settings.check_safe_to_serve()
        storage = Storage(settings.data_dir)
        storage.ensure_layout()
        # embedded: this process is the only one using tmp/; shared: leave others' work
        storage.clean_tmp(older_than_s=0.0 if settings.embedded else 24 * 3600.0)
        runtime = cls(
            settings=settings,
            storage=storage,
            queue=queue or open_queue(settings),
            audit=AuditLog(storage.audit_log),
            model_check=ModelCheck(storage, settings),
            sessions=SessionCodec(
                load_secret(storage.root / "session.key"),
                store=SessionStore(storage.root / "sessions"),
            ),
            throttle=AuthThrottle(settings),
        )
        try:
            reconcile(storage, runtime.queue)
        except QueueError as exc:
            logger.warning("uploads without results not requeued now: %s", exc)
        if not settings.embedded:  # an in-memory queue cannot lose jobs while it runs
            runtime.start_reconciler()
        count = (
            workers
            if workers is not None
            else (settings.embedded_workers if settings.embedded else 0)
        )
        runtime.start_workers(count)
        if settings.embedded and count > 0:
            runtime.start_finetune()
        return runtime

    def start_reconciler(self) -> None:
        """Every ``ATCON_RECONCILE_INTERVAL_S``, queue again the uploads without results
        whose job is gone (Redis restarted without its data, or was flushed)."""
        thread = threading.Thread(target=self._reconcile_loop, name="reconciler", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _reconcile_loop(self) -> None:
        failing = False
        while not self._stop.wait(self.settings.reconcile_interval_s):
            try:
                requeued = reconcile(self.storage, self.queue)
            except QueueError as exc:
                if not failing:
                    logger.warning("uploads without results not checked now: %s", exc)
                failing = True
                continue
            failing = False
            if requeued:
                logger.warning(
                    "%d upload(s) had lost their job (did Redis lose its data?); queued again",
                    len(requeued),
                )

    def start_finetune(self) -> None:
        """Embedded default: one fine-tune worker thread and the nightly scheduler."""
        from worker.finetune import start_scheduler

        worker = Worker(
            self.queue,
            self.storage,
            self.settings,
            FINETUNE,
            name="embedded-finetune",
            models=ModelCache(self.storage, self.settings),
        )
        thread = threading.Thread(
            target=self._work, args=(worker,), name="finetune-worker", daemon=True
        )
        self.workers.append(worker)
        self._threads.append(thread)
        thread.start()
        self._threads.append(start_scheduler(self.storage, self.queue, self.settings, self._stop))

    def start_workers(self, count: int) -> None:
        if count <= 0:
            return
        for index in range(count):
            # each thread its own model: attention maps put hooks on the model, which
            # two threads must not share
            worker = Worker(
                self.queue,
                self.storage,
                self.settings,
                DETECT,
                name=f"embedded-{index}",
                models=ModelCache(self.storage, self.settings),
            )
            thread = threading.Thread(
                target=self._work, args=(worker,), name=f"detect-worker-{index}", daemon=True
            )
            self.workers.append(worker)
            self._threads.append(thread)
            thread.start()
        logger.info("embedded default: %d detect worker thread(s) in this process", count)

    def _work(self, worker: Worker) -> None:
        try:
            worker.run(self._stop)
        except (JobError, QueueError):
            logger.exception("embedded worker %s stopped", worker.name)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
            if thread.is_alive():
                logger.warning("%s still busy with a job at shutdown", thread.name)
        self.queue.close()

    @property
    def kinds(self) -> list[str]:
        return list(JOB_KINDS)
