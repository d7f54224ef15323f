"""What one API process holds: settings, storage, queue, audit log, embedded workers.

``Runtime.start`` prepares the data directory, opens the queue, queues again the
uploads that have no results (the data directory is the source of truth; with Redis
this is checked again every ``ATCON_RECONCILE_INTERVAL_S``, should Redis lose its
data) and, in the embedded default, starts the worker threads (detect, fine-tune, zip
import); ``stop`` ends them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from models._exceptions import CheckpointError
from worker import JobError, NoModelError, QueueError, StorageError
from worker.queue.factory import open_queue
from worker.queue.interface import JobQueue
from worker.queue.retention import prune_jobs
from worker.runtime.jobs import DETECT, FINETUNE, IMPORT, JOB_KINDS, Worker
from worker.runtime.reconcile import reconcile
from worker.runtime.tmp_sweep import start_tmp_sweeper
from worker.serving.model_cache import ModelCache, ServedModels, ensure_first_version
from worker.serving.versions import VersionError
from worker.settings import Settings
from worker.storage import Storage, open_storage

from .audit import AuditLog, AuditShipper
from .events_cache import EventsCache
from .inbox import EventIndex
from .session_store import RedisSessionStore, Sessions, SessionStore
from .sessions import SessionCodec, load_secret, load_shared_secret
from .throttle import AuthThrottle

__all__ = ["ModelCheck", "ModelStatus", "Runtime"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelStatus:
    ok: bool
    version: str | None
    detail: str


class ModelCheck:
    """Can the model to serve be served? Its checkpoint is read without torch: the
    file must exist, describe a model (:func:`models.checkpoint_info.read_checkpoint_info`)
    and match the hash on its version's card."""

    def __init__(self, served: ServedModels) -> None:
        self.served = served
        self._version: str | None = None

    def check(self) -> ModelStatus:
        try:
            model = self.served.current()
        except (StorageError, NoModelError, CheckpointError) as exc:
            return ModelStatus(False, None, str(exc))
        self._version = model.name
        try:
            card = self.served.storage.registry().get(model.ref.version)
        except (VersionError, OSError, ValueError) as exc:
            return ModelStatus(False, model.name, f"the card cannot be read: {exc}")
        if card.checkpoint_sha256 != model.info.sha256:
            return ModelStatus(
                False,
                model.name,
                f"the checkpoint of {model.name} differs from its card (sha256 "
                f"{(model.info.sha256 or '')[:12]}, card {card.checkpoint_sha256[:12]})",
            )
        return ModelStatus(True, model.name, "loadable")

    @property
    def version(self) -> str | None:
        return self._version


def _audit_log(storage: Storage) -> AuditLog:
    """The audit log: the data directory's file, also sent to the object store when the
    replicas share no disk (:class:`~service.core.audit.AuditShipper`)."""
    store = getattr(storage, "store", None) if storage.shared_store else None
    if store is not None:
        return AuditLog(storage.audit_log, AuditShipper(store))
    return AuditLog(storage.audit_log)


def _sessions(storage: Storage, settings: Settings) -> SessionCodec:
    """Session cookies' secret and records: the data directory's, or with the object
    store (replicas sharing no disk) the store's secret and records in Redis (a store
    without Redis means one process: its own directory keeps the records)."""
    if not storage.shared_store:
        return SessionCodec(
            load_secret(storage.root / "session.key"),
            store=SessionStore(storage.root / "sessions"),
        )
    records: Sessions = SessionStore(storage.root / "sessions")
    if settings.redis_url:
        from worker.queue.connect import connect

        records = RedisSessionStore(connect(settings), settings.queue_prefix)
    return SessionCodec(load_shared_secret(storage), store=records)


@dataclass
class Runtime:
    settings: Settings
    storage: Storage
    queue: JobQueue
    audit: AuditLog
    model_check: ModelCheck
    #: the served models' descriptions (names, classes, input size), read without torch
    served: ServedModels
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
        storage = open_storage(settings)
        storage.ensure_layout()
        if storage.shared_store:
            storage.check_writable()  # ObjectStoreError naming the bucket, at start
        # embedded: this process is the only one using tmp/; shared: leave others' work
        storage.clean_tmp(older_than_s=0.0 if settings.embedded else 24 * 3600.0)
        ensure_first_version(storage, settings)  # a served model always has a version and card
        served = ServedModels(storage, settings)
        runtime = cls(
            settings=settings,
            storage=storage,
            queue=queue or open_queue(settings),
            audit=_audit_log(storage),
            model_check=ModelCheck(served),
            served=served,
            sessions=_sessions(storage, settings),
            throttle=AuthThrottle(settings),
        )
        try:
            reconcile(storage, runtime.queue)
        except QueueError as exc:
            logger.warning("uploads without results not requeued now: %s", exc)
        runtime.start_housekeeping()
        count = (
            workers
            if workers is not None
            else (settings.embedded_workers if settings.embedded else 0)
        )
        runtime.start_workers(count)
        if count > 0:  # the embedded workers sweep tmp/ like `atcon worker` does
            runtime._threads.append(start_tmp_sweeper(storage, settings, runtime._stop))
        if settings.embedded and count > 0:
            runtime.start_finetune()
            runtime.start_import()
        return runtime

    def start_housekeeping(self) -> None:
        """Every ``ATCON_RECONCILE_INTERVAL_S``: archive and drop the jobs finished more
        than ``ATCON_JOB_RETENTION_DAYS`` ago (:mod:`worker.queue.retention`); with the
        object store, drop this replica's copies of videos deleted elsewhere (their
        thumbnails and clips with them); and with Redis
        queue again the uploads without results whose job is gone (Redis restarted
        without its data, or was flushed; an in-memory queue cannot lose jobs)."""
        thread = threading.Thread(target=self._housekeeping_loop, name="housekeeping", daemon=True)
        self._threads.append(thread)
        thread.start()

    def prune(self) -> list[str]:
        """Archive and drop the jobs finished longer ago than the retention."""
        retention_s = self.settings.job_retention_days * 86400.0
        return prune_jobs(self.queue, self.storage, self.kinds, retention_s)

    def _housekeeping_loop(self) -> None:
        failing = False
        while not self._stop.wait(self.settings.reconcile_interval_s):
            try:
                self.prune()
            except (QueueError, StorageError, OSError) as exc:
                logger.warning("finished jobs not archived now: %s", exc)
            if self.storage.shared_store:  # copies (thumbnails, clips) of videos deleted
                try:  # through another replica
                    self.storage.purge_orphaned_copies()
                except (StorageError, OSError) as exc:
                    logger.warning("copies of deleted videos not checked now: %s", exc)
            if self.settings.embedded:
                continue
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
        from worker.finetune.nightly import start_scheduler

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

    def start_import(self) -> None:
        """Embedded default: one worker thread extracting zip imports of pool frames."""
        worker = Worker(self.queue, self.storage, self.settings, IMPORT, name="embedded-import")
        thread = threading.Thread(
            target=self._work, args=(worker,), name="import-worker", daemon=True
        )
        self.workers.append(worker)
        self._threads.append(thread)
        thread.start()

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
        self.audit.close()
        self.queue.close()

    @property
    def kinds(self) -> list[str]:
        return list(JOB_KINDS)
