"""The object-store backend: videos and results in an S3-compatible bucket.

Selected by ``ATCON_STORAGE_URL=s3://bucket/prefix`` (:func:`worker.storage.open_storage`).
The bucket is the truth every API replica and worker shares; each process's data
directory (``ATCON_DATA_DIR``) is only its scratch (``tmp/``) and a cache of what it
read. Objects, relative to the prefix::

    uploads/<video_id>/source                 the uploaded bytes
    uploads/<video_id>/video.json             the record: written last, so a video
                                              exists exactly when its record does
    results/<video_id>/<generation>/...       one publication of the results folder
                                              (events.json, scores.npz, maps/...)
    results/<video_id>/CURRENT.json           the pointer: {"generation", "files"}

Nothing is renamed. A publication uploads every file of a new generation (a fresh
id), then writes the pointer in one PUT, then deletes the generation the pointer named
before; a worker killed mid-upload leaves objects no pointer names, which readers
never see and the video's deletion removes. Readers fetch the pointer, then the
generation it names, into their local ``results/<video_id>/`` (with a
``.generation`` marker, so an unchanged result is not fetched again).

Workers decode the source with ranged GETs (:meth:`ObjectStorage.video_input`), never
copying it; the API copies it locally only to serve it or cut a clip.

Model versions live under ``models/`` in the bucket too (:mod:`worker.serving.versions_s3`), and
so does the frame pool under ``frames/`` (:mod:`worker.pool.frames_s3`), and the
documents (reviews, job archives, ``state/last_finetune.json``,
``secrets/session.key``: :meth:`ObjectStorage.document_path` and its siblings). Not in
the bucket: thumbnails and clips (each process's cache, made from the stored source).
See ``docs/architecture.md``, *Object storage*.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from ._exceptions import ResultsUnreadableError, StorageError, VideoNotFoundError
from .object_store import READ_BLOCK_BYTES, ObjectStore
from .queue.locks import LocalLock, RedisLock, held
from .storage import (
    _ID,
    RECORD_NAME,
    REVIEWS_NAME,
    SOURCE_NAME,
    Storage,
    VideoRecord,
    atomic_write_bytes,
    new_id,
    plain_name,
    validate_id,
)

if TYPE_CHECKING:
    from .pool.frames_s3 import StoredFramePool
    from .serving.versions_s3 import StoredRegistry
    from .settings import Settings

__all__ = ["POINTER_NAME", "ObjectStorage", "StoredVideo", "frame_lock", "registry_lock"]

logger = logging.getLogger(__name__)

_PROCESS_REGISTRY_LOCK = threading.Lock()


def _etag_marker(local: Path) -> Path:
    """Beside a document's local copy: the ETag it was copied at."""
    return local.with_name(f".{local.name}.etag")


def _process_lock() -> LocalLock:
    return LocalLock(_PROCESS_REGISTRY_LOCK)


_PROCESS_NAMED_LOCKS: dict[str, threading.Lock] = {}


def _process_named_lock(family: str) -> Callable[[str], LocalLock]:
    def make(name: str) -> LocalLock:
        with _PROCESS_REGISTRY_LOCK:
            return LocalLock(_PROCESS_NAMED_LOCKS.setdefault(f"{family}:{name}", threading.Lock()))

    return make


_process_frame_lock = _process_named_lock("frames")


def named_lock(settings: Settings, family: str) -> Callable[[str], RedisLock | LocalLock]:
    """Locks of named things of one ``family`` across the deployment: a Redis lease
    (``<prefix>:<family>:lock:<name>``) when there is a Redis, else a process lock."""
    if not settings.redis_url:
        return _process_named_lock(family)
    client: list[Any] = []

    def make(name: str) -> RedisLock:
        if not client:
            from .queue.connect import connect

            client.append(connect(settings))
        return RedisLock(client[0], f"{settings.queue_prefix}:{family}:lock:{name}", 30_000)

    return make


def frame_lock(settings: Settings) -> Callable[[str], RedisLock | LocalLock]:
    """The lock of one pool frame's record across the deployment (:func:`named_lock`)."""
    return named_lock(settings, "frames")


def registry_lock(settings: Settings) -> Callable[[], RedisLock | LocalLock]:
    """The lock serialising model version changes across the deployment: a Redis lease
    (``<prefix>:models:lock``) when there is a Redis, else a lock of this process."""
    if not settings.redis_url:
        return _process_lock
    client: list[Any] = []

    def make() -> RedisLock:
        if not client:
            from .queue.connect import connect

            client.append(connect(settings))
        return RedisLock(client[0], f"{settings.queue_prefix}:models:lock", ttl_ms=30_000)

    return make


#: the pointer object naming a video's published results generation
POINTER_NAME = "CURRENT.json"
#: inside a local copy of results: the generation it was fetched from
GENERATION_MARKER = ".generation"


@dataclass(frozen=True)
class StoredVideo:
    """A video in the store, opened as a seekable file read with ranged GETs
    (:class:`worker.video.probe.StreamedVideo`)."""

    store: ObjectStore
    key: str
    size: int
    name: str = SOURCE_NAME
    #: bytes per ranged GET
    block_bytes: int = READ_BLOCK_BYTES

    def open(self) -> BinaryIO:
        return self.store.open(self.key, self.block_bytes)


def _relative_files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()
    )


def _safe_relative(name: object) -> str:
    """A file name from a pointer, refused unless it stays inside the results folder."""
    if not isinstance(name, str) or not name:
        raise ResultsUnreadableError("a results pointer names a file that is not a string")
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("", ".", "..") for part in path.parts):
        raise ResultsUnreadableError(f"a results pointer names {name!r:.80}, outside its folder")
    return path.as_posix()


class ObjectStorage(Storage):
    """:class:`~worker.storage.Storage` with videos and results in an object store."""

    shared_store = True

    def __init__(
        self,
        data_dir: str | Path,
        url: str | None = None,
        *,
        store: ObjectStore | None = None,
        registry_lock: Callable[[], RedisLock | LocalLock] | None = None,
        frame_lock: Callable[[str], RedisLock | LocalLock] | None = None,
        document_lock: Callable[[str], RedisLock | LocalLock] | None = None,
    ) -> None:
        super().__init__(data_dir)
        if store is None:
            if url is None:
                raise StorageError("ObjectStorage needs a storage URL or a store")
            store = ObjectStore(url)
        self.store = store
        #: the deployment-wide lock of model version changes (a process lock by default)
        self.registry_lock = registry_lock or _process_lock
        #: the deployment-wide lock of one pool frame's record
        self.frame_lock = frame_lock or _process_frame_lock
        #: the deployment-wide lock of one document (reviews, ...)
        self._document_lock = document_lock or _process_named_lock("documents")

    # -- documents --------------------------------------------------------------------------

    def document_path(self, name: str) -> Path:
        """This process's copy of the document, brought up to date first: one GET with
        ``If-None-Match`` the ETag it was copied at (``.<file name>.etag`` beside it),
        answered 304 while it is unchanged. A document gone from the store loses its
        copy, and no folder is made for one that does not exist."""
        local = super().document_path(name)
        marker = _etag_marker(local)
        seen = None
        if local.is_file():
            with contextlib.suppress(OSError):
                seen = marker.read_text()
        changed, data, etag = self.store.get_if_changed(name, seen)
        if not changed:
            return local
        if data is None:
            local.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
            return local
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(local, data)
            atomic_write_bytes(marker, (etag or "").encode())
        except OSError as exc:
            raise StorageError(f"a local copy of {name} cannot be written: {exc}") from exc
        return local

    def read_document(self, name: str) -> bytes | None:
        return self.store.get_bytes(name)

    def write_document(self, name: str, data: bytes, *, make_folder: bool = False) -> None:
        """One PUT (readers see the old or the new object), then this process's copy
        (where its folder exists: a store has no folders to make)."""
        self.store.put_bytes(name, data)
        local = super().document_path(name)
        with contextlib.suppress(OSError):  # a copy only: the next read fetches it
            _etag_marker(local).unlink(missing_ok=True)
            if local.parent.is_dir():
                atomic_write_bytes(local, data)

    def create_document(self, name: str, data: bytes) -> bool:
        """A conditional PUT (``If-None-Match: *``): the store decides who was first."""
        return self.store.put_bytes(name, data, if_absent=True)

    def delete_document(self, name: str) -> None:
        self.store.delete([name])
        local = super().document_path(name)
        local.unlink(missing_ok=True)
        _etag_marker(local).unlink(missing_ok=True)

    def document_names(self, folder: str) -> list[str]:
        start = f"{folder}/"
        return sorted(
            n for n in self.store.names(start) if "/" not in n[len(start) :] and plain_name(n)
        )

    def sync_documents(self, folder: str) -> Path:
        from .store_sync import FolderCopy

        local = super().sync_documents(folder)
        local.mkdir(parents=True, exist_ok=True)
        FolderCopy(local, self.store, f"{folder}/").pull()
        return local

    @contextlib.contextmanager
    def document_lock(self, name: str) -> Iterator[None]:
        """The document's Redis lease (a process lock without Redis)."""
        with held(self._document_lock(name), lambda: None, poll_s=0.05):
            yield

    # -- staged files -------------------------------------------------------------------------

    def clean_tmp(self, older_than_s: float = 0.0) -> int:
        """This process's ``tmp/``, and the staged zips in the store (``staging/``) as
        old as ``tmp/``'s debris must be: an import job that never ran (lost with an
        in-memory queue, or failed before it read its file) leaves one there."""
        removed = super().clean_tmp(older_than_s)
        cutoff = time.time() - older_than_s
        stale = [n for n, when in self.store.modified("staging/").items() if when <= cutoff]
        if stale:
            self.store.delete(stale)
            logger.info("removed %d staged file(s) no job took", len(stale))
        return removed + len(stale)

    def stage(self, received: Path, name: str) -> None:
        """Upload to ``staging/<name>`` (the job may run on another machine)."""
        self.store.put_file(f"staging/{name}", received)
        received.unlink(missing_ok=True)

    def staged_path(self, name: str) -> Path:
        local = super().staged_path(name)
        if not local.is_file():
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(prefix=".staged-", dir=self.tmp)
            os.close(fd)
            try:
                if self.store.download(f"staging/{name}", Path(partial)):
                    os.replace(partial, local)
            finally:
                Path(partial).unlink(missing_ok=True)
        return local

    def discard_staged(self, name: str) -> None:
        self.store.delete([f"staging/{name}"])
        super().discard_staged(name)

    def frame_pool(self, image_size: int = 224, val_fraction: float = 0.3) -> StoredFramePool:
        """The frame pool, copied in from the store first; every change goes back to it
        (per-frame updates under a lease, :mod:`worker.pool.frames_s3`)."""
        from .pool.frames_s3 import PREFIX, StoredFramePool
        from .store_sync import FolderCopy

        copy = FolderCopy(self.frames, self.store, PREFIX)
        self.frames.mkdir(parents=True, exist_ok=True)
        copy.pull()
        locks = self.frames / ".locks"
        for lock in list(locks.iterdir()) if locks.is_dir() else []:
            if not (self.frames / f"{lock.name}.json").exists():  # removed elsewhere
                lock.unlink(missing_ok=True)
        return StoredFramePool(self.frames, copy, self.frame_lock, image_size, val_fraction)

    def registry(self) -> StoredRegistry:
        """The model versions, copied from the store (checkpoints on demand); changes
        go back to it under :attr:`registry_lock`."""
        from .serving.versions_s3 import StoredRegistry

        return StoredRegistry(self.models, self.store, self.registry_lock)

    @property
    def location(self) -> str:
        return self.store.location.url

    def check_writable(self) -> None:
        super().check_writable()  # the scratch directory
        self.store.check()

    # -- names in the store -----------------------------------------------------------------

    @staticmethod
    def _upload_key(video_id: str, name: str = "") -> str:
        return f"uploads/{validate_id(video_id, 'video_id')}/{name}"

    @staticmethod
    def _results_key(video_id: str, name: str = "") -> str:
        return f"results/{validate_id(video_id, 'video_id')}/{name}"

    # -- uploads ----------------------------------------------------------------------------

    def save_video(self, record: VideoRecord, received: Path) -> None:
        """Upload the source, then the record (the video exists once its record does),
        then keep the local copy as this process's cache. Nothing stays in the store
        when either upload fails."""
        video_id = record.video_id
        try:
            self.store.put_file(self._upload_key(video_id, SOURCE_NAME), received)
            self.store.put_bytes(
                self._upload_key(video_id, RECORD_NAME),
                json.dumps(record.to_dict(), indent=2).encode(),
            )
        except StorageError:
            self._forget_upload(video_id)
            raise
        try:
            super().save_video(record, received)
        except StorageError:
            self._forget_upload(video_id)
            raise

    def _forget_upload(self, video_id: str) -> None:
        try:
            self.store.delete([self._upload_key(video_id, RECORD_NAME)])
            self.store.delete_prefix(self._upload_key(video_id))
        except StorageError:
            logger.exception("video %s: a failed upload's objects could not be removed", video_id)

    def update_video(self, record: VideoRecord) -> None:
        if not self.video_exists(record.video_id):
            raise VideoNotFoundError(f"no video {record.video_id}")
        data = json.dumps(record.to_dict(), indent=2).encode()
        self.store.put_bytes(self._upload_key(record.video_id, RECORD_NAME), data)
        self._cache_record(record.video_id, data)

    def get_video(self, video_id: str) -> VideoRecord:
        data = self.store.get_bytes(self._upload_key(video_id, RECORD_NAME))
        if data is None:
            raise VideoNotFoundError(f"no video {video_id}")
        try:
            record = VideoRecord.from_dict(json.loads(data))
        except (ValueError, TypeError) as exc:
            raise StorageError(f"record of video {video_id} is unreadable: {exc}") from exc
        self._cache_record(video_id, data)
        return record

    def _cache_record(self, video_id: str, data: bytes) -> None:
        """Keep the record in the local upload folder (reviews, the cache and the
        inbox's change detection live there), rewritten only when it changed."""
        local = self.upload_dir(video_id) / RECORD_NAME
        try:
            if local.is_file() and local.read_bytes() == data:
                return
            local.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(local, data)
        except OSError as exc:
            raise StorageError(f"scratch directory {self.root} is not writable: {exc}") from exc

    def video_ids(self) -> Iterator[str]:
        for name in self.store.names("uploads/"):
            parts = name.split("/")
            if len(parts) == 3 and parts[2] == RECORD_NAME and _ID.match(parts[1]):
                yield parts[1]

    def list_videos(self) -> list[VideoRecord]:
        """Every video in the store, newest first: one LIST, and a GET only for records
        this process has not copied yet (a record does not change after its upload)."""
        records = []
        for video_id in self.video_ids():
            local = self.upload_dir(video_id) / RECORD_NAME
            try:
                if local.is_file():
                    records.append(VideoRecord.from_dict(json.loads(local.read_bytes())))
                else:
                    records.append(self.get_video(video_id))
            except (OSError, ValueError, TypeError, StorageError):
                logger.warning("skipping video %s: record unreadable or gone", video_id)
        return sorted(records, key=lambda r: (r.created_at, r.video_id), reverse=True)

    def video_exists(self, video_id: str) -> bool:
        return self.store.exists(self._upload_key(video_id, RECORD_NAME))

    def video_input(self, video_id: str) -> StoredVideo:
        key = self._upload_key(video_id, SOURCE_NAME)
        size = self.store.size(key)
        if size is None:
            raise VideoNotFoundError(f"no video {video_id}")
        return StoredVideo(self.store, key, size)

    def source_path(self, video_id: str) -> Path:
        """The source as a local file, downloaded once when this process lacks it."""
        local = super().source_path(video_id)
        if local.is_file():
            return local
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"video-{video_id}-", suffix=".part", dir=self.tmp)
        os.close(fd)
        partial = Path(name)
        try:
            if not self.store.download(self._upload_key(video_id, SOURCE_NAME), partial):
                return local  # gone: the caller's open fails as for a missing file
            local.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, local)
        finally:
            partial.unlink(missing_ok=True)
        return local

    def delete_video(self, video_id: str) -> None:
        """Remove the record first (the video is gone for every reader), then the
        results pointer, then every object under the video's two prefixes, then the
        local copies. Objects a killed job left behind go too."""
        found = self.video_exists(video_id)
        self.store.delete([self._upload_key(video_id, RECORD_NAME)])
        self.store.delete([self._results_key(video_id, POINTER_NAME)])
        removed = self.store.delete_prefix(self._results_key(video_id))
        removed += self.store.delete_prefix(self._upload_key(video_id))
        try:
            super().delete_video(video_id)
        except VideoNotFoundError:
            if not found and not removed:
                raise
        logger.info("video %s: %d objects removed from the store", video_id, removed)

    def refresh_copies(self) -> None:
        """Copy in the records and results of the store's videos that this process lacks
        (one LIST, then one HEAD per video without a local result), and drop copies of
        videos gone from the store. A result re-published after it was copied is
        fetched again at its video's next read. Reviews (``reviews.json``), which
        change, are compared by ETag from the same LIST and copied when they differ."""
        listing = self.store.listing("uploads/")
        stored = set()
        for name in listing:
            parts = name.split("/")
            if len(parts) == 3 and parts[2] == RECORD_NAME and _ID.match(parts[1]):
                stored.add(parts[1])
        for video_id in stored:
            try:
                if not (self.upload_dir(video_id) / RECORD_NAME).is_file():
                    self.get_video(video_id)
                if not (super().results_dir(video_id) / "events.json").is_file():
                    self.results_dir(video_id)
                reviews = f"uploads/{video_id}/{REVIEWS_NAME}"
                local = super().document_path(reviews)
                marker = _etag_marker(local)
                etag = listing.get(reviews)
                if etag is None:
                    local.unlink(missing_ok=True)
                elif not (local.is_file() and marker.is_file() and marker.read_text() == etag):
                    self.document_path(reviews)
            except (StorageError, OSError):  # deleted or re-published meanwhile: next time
                logger.warning("video %s: local copy not refreshed now", video_id)
        for folder in (self.uploads, self.results):
            for entry in list(folder.iterdir()) if folder.is_dir() else []:
                if _ID.match(entry.name) and entry.name not in stored:
                    self._discard(entry)

    def purge_orphaned_copies(self) -> int:
        """Drop this process's copies (records, results, cache) of videos no longer in
        the store: the API that deleted a video cannot reach the workers' disks."""
        removed = 0
        for folder in (self.uploads, self.results):
            for entry in list(folder.iterdir()) if folder.is_dir() else []:
                if _ID.match(entry.name) and not self.video_exists(entry.name):
                    self._discard(entry)
                    removed += 1
        if removed:
            logger.info("removed %d local copies of deleted videos", removed)
        return removed

    # -- results ----------------------------------------------------------------------------

    def publish_results(self, video_id: str, staging: Path) -> Path:
        """Upload ``staging`` as a new generation, then point ``CURRENT.json`` at it.

        Until the pointer is written no reader sees any of the new objects; after it,
        every reader sees all of them. The generation the pointer named before is then
        deleted; a publication that raced another (the same job done twice) may leave
        its generation unnamed, which the video's deletion removes.
        """
        if not (staging / "events.json").is_file():
            raise StorageError(f"{staging} holds no events.json; nothing to publish")
        generation = new_id()
        files = _relative_files(staging)
        # the generation's objects in parallel (boto3 clients are thread-safe); all of
        # them are up before the pointer is written, or the publication fails here
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="publish") as pool:
            uploads = [
                pool.submit(
                    self.store.put_file,
                    self._results_key(video_id, f"{generation}/{relative}"),
                    staging / relative,
                )
                for relative in files
            ]
            for upload in uploads:
                upload.result()
        before = self._pointer(video_id)
        pointer = {"generation": generation, "files": files, "published_at": time.time()}
        self.store.put_bytes(
            self._results_key(video_id, POINTER_NAME), json.dumps(pointer).encode()
        )
        if before is not None and before["generation"] != generation:
            try:
                self.store.delete_prefix(self._results_key(video_id, f"{before['generation']}/"))
            except StorageError:
                logger.exception("video %s: superseded results not removed", video_id)
        (staging / GENERATION_MARKER).write_text(generation)
        return super().publish_results(video_id, staging)  # this process's local copy

    def _pointer(self, video_id: str) -> dict[str, Any] | None:
        raw = self.store.get_bytes(self._results_key(video_id, POINTER_NAME))
        if raw is None:
            return None
        try:
            pointer = json.loads(raw)
            generation = validate_id(pointer["generation"], "results generation")
            files = [_safe_relative(f) for f in pointer["files"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ResultsUnreadableError(f"results pointer of {video_id} is unreadable") from exc
        return {"generation": generation, "files": files}

    def has_results(self, video_id: str) -> bool:
        """Whether results are published (one HEAD; nothing is fetched)."""
        return self.store.exists(self._results_key(video_id, POINTER_NAME))

    def results_dir(self, video_id: str) -> Path:
        """The local copy of the video's published results, brought up to date with
        the pointer first (absent when nothing is published)."""
        local = super().results_dir(video_id)
        pointer = self._pointer(video_id)
        if pointer is None:
            if local.exists():
                self._discard(local)
            return local
        marker = local / GENERATION_MARKER
        try:
            if marker.read_text() == pointer["generation"]:
                return local
        except OSError:
            pass
        self._fetch(video_id, pointer)
        return local

    def _fetch(self, video_id: str, pointer: dict[str, Any]) -> None:
        staging = self.staging_dir(video_id)
        generation = pointer["generation"]
        try:
            for relative in pointer["files"]:
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                key = self._results_key(video_id, f"{generation}/{relative}")
                if not self.store.download(key, target):
                    # superseded or deleted meanwhile: the next read fetches the new one
                    raise ResultsUnreadableError(
                        f"results of {video_id} changed while they were read; try again"
                    )
            (staging / GENERATION_MARKER).write_text(generation)
            super().publish_results(video_id, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
