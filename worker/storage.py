"""The data directory: the product's source of truth, and the only place files live.

Layout (every name below is chosen by the server; no part of a request becomes a
path)::

    <data_dir>/
      uploads/<video_id>/source       the uploaded bytes
      uploads/<video_id>/video.json   VideoRecord: probe metadata, client file name, job id
      uploads/<video_id>/reviews.json clinicians' verdicts on its events (worker.pool.reviews)
      uploads/<video_id>/cache/       thumbnails and clips made from it (deleted with it)
      results/<video_id>/             the detector's output: events.json, scores, maps/
      models/                         model versions, the ACTIVE pointer (worker.serving.versions)
      frames/                         the frame pool for fine-tuning (worker.pool.frames)
      session.key                     signs the web pages' session cookies (service)
      jobs/<job_id>.json              finished jobs' records (worker.queue.retention)
      state/last_finetune.json        the last fine-tunes (worker.finetune.nightly)
      tmp/                            partial uploads and results being built
      audit.log                       JSON lines: who read, uploaded or deleted what

Small state every process shares goes through the *documents* methods
(:meth:`Storage.write_document` and its siblings) by a server-chosen name relative to
the data directory, so that the object store backend can keep it as objects.

Ids are 32 lowercase hex digits (a UUID4); :func:`validate_id` rejects anything
else before it reaches a path. Every file is written to a temporary name and
renamed into place; an upload and a result directory each appear in one rename,
so a reader sees all of it or none of it, and a crash leaves only ``tmp/`` debris
(cleared by :meth:`Storage.clean_tmp` when the API starts, and swept periodically by
the workers, :mod:`worker.runtime.tmp_sweep`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.atomic import atomic_write_bytes, atomic_write_json

from ._exceptions import InvalidIdError, StorageError, VideoNotFoundError
from .detection.results import EVENTS_FILE, read_events

if TYPE_CHECKING:
    from .pool.frames import FramePool
    from .serving.versions import ModelRegistry
    from .settings import Settings
    from .video.probe import StreamedVideo

__all__ = [
    "ID_PATTERN",
    "Storage",
    "VideoRecord",
    "atomic_write_bytes",
    "atomic_write_json",
    "clean_filename",
    "new_id",
    "open_storage",
    "validate_id",
]

logger = logging.getLogger(__name__)

#: the one form of every server-chosen id (videos, jobs, frames): a UUID4's 32 hex digits
ID_PATTERN = r"^[0-9a-f]{32}$"
_ID = re.compile(ID_PATTERN)
#: control characters, and the bidirectional controls that make a name display in
#: another order than it is (U+202E shows "gnp.mp4" as "mp4.png")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
SOURCE_NAME = "source"
RECORD_NAME = "video.json"
#: a video's reviews document, beside its record (worker.pool.reviews)
REVIEWS_NAME = "reviews.json"
#: the name of a video's events file (:mod:`worker.detection.results` owns it)
EVENTS_NAME = EVENTS_FILE
CACHE_NAME = "cache"


def new_id() -> str:
    """A fresh id for a video or a job."""
    return uuid.uuid4().hex


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is an id of the server's form, else raise ``InvalidIdError``."""
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidIdError(f"{what} must be 32 lowercase hexadecimal digits, got {value!r:.80}")
    return value


def clean_filename(name: str | None) -> str | None:
    """The client's file name as metadata only: control and bidirectional control
    characters dropped, 255 chars max.

    It is never used in a path; pages escape it when they show it.
    """
    if name is None:
        return None
    return _CONTROL.sub("", name)[:255] or None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _newest_mtime(entry: Path) -> float:
    """The latest modification under ``entry``: a folder a job still writes into is young
    however old the folder itself is."""
    newest = entry.lstat().st_mtime
    if entry.is_dir() and not entry.is_symlink():
        for root, dirs, files in os.walk(entry):
            for name in (*dirs, *files):
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


@dataclass
class VideoRecord:
    """What the service knows about an upload (``uploads/<video_id>/video.json``)."""

    video_id: str
    job_id: str
    size_bytes: int
    created_at: float = field(default_factory=time.time)
    filename: str | None = None
    uploaded_by: str | None = None
    container: str | None = None
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    fps: float | None = None
    #: the ward camera it was recorded by (:mod:`worker.cameras`); None: not given
    camera: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Storage:
    """Paths and atomic operations on one data directory: the local backend.

    This class is also the storage backend interface. :class:`worker.storage_s3.ObjectStorage`
    (``ATCON_STORAGE_URL=s3://...``) overrides the methods that share data between
    machines (videos, results, deletion) and keeps this data directory as the process's
    own scratch and cache; :func:`open_storage` picks one from the settings. Callers
    ask through the methods below (``video_exists``, ``video_input``, ``results_dir``,
    ``read_events``...) rather than looking at folders, so both backends answer.
    """

    #: False for the data directory alone; True when an object store holds the truth
    shared_store = False

    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir)
        self.uploads = self.root / "uploads"
        self.results = self.root / "results"
        self.models = self.root / "models"
        self.frames = self.root / "frames"
        self.tmp = self.root / "tmp"
        #: finished jobs' records, archived when the queue drops them (worker.queue.retention)
        self.jobs = self.root / "jobs"
        self.audit_log = self.root / "audit.log"

    @property
    def location(self) -> str:
        """Where the data lives, for logs and messages."""
        return str(self.root)

    def ensure_layout(self) -> None:
        try:
            for folder in (
                self.uploads,
                self.results,
                self.models,
                self.frames,
                self.tmp,
                self.jobs,
            ):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"data directory {self.root} cannot be created: {exc}") from exc

    def clean_tmp(self, older_than_s: float = 0.0) -> int:
        """Remove debris of interrupted uploads and results; return how many entries went.

        Several processes share ``tmp/``; a process only clears entries older than
        ``older_than_s`` so it never removes another's work in progress.
        """
        removed = 0
        now = time.time()
        for entry in self.tmp.iterdir() if self.tmp.is_dir() else []:
            try:
                if older_than_s > 0 and now - _newest_mtime(entry) < older_than_s:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
            except OSError:
                continue
        return removed

    def refresh_copies(self) -> None:
        """Bring this process's copies of the shared videos and results up to date.

        Nothing to do here (the data directory is the truth); the object store backend
        copies in records and results it lacks, for readers that scan folders (the
        events inbox, :mod:`service.core.inbox`)."""

    def purge_orphaned_copies(self) -> int:
        """Remove local copies of videos deleted elsewhere; return how many went.

        Nothing to do here: the data directory is the truth, and deletion removes from it.
        The object store backend's processes keep copies that another process's deletion
        cannot reach; the workers' sweep (:mod:`worker.runtime.tmp_sweep`) calls this."""
        return 0

    def check_writable(self) -> None:
        """Raise ``StorageError`` unless a file can be written and removed in ``tmp/``."""
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=".probe-", dir=self.tmp)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            raise StorageError(f"data directory {self.root} is not writable: {exc}") from exc

    # -- uploads ---------------------------------------------------------------------------

    def upload_dir(self, video_id: str) -> Path:
        return self.uploads / validate_id(video_id, "video_id")

    def cache_dir(self, video_id: str) -> Path:
        """Where files made from a video (thumbnails, clips) are kept; it lives inside
        the upload's folder, so deleting the video deletes them. Not created here."""
        return self.upload_dir(video_id) / CACHE_NAME

    def ensure_cache_dir(self, video_id: str) -> Path:
        """The video's cache folder, created if needed; ``VideoNotFoundError`` when the
        video is gone (its folder is never made again by a late writer)."""
        folder = self.cache_dir(video_id)
        try:
            folder.mkdir(exist_ok=True)
        except FileNotFoundError:
            raise VideoNotFoundError(f"no video {video_id}") from None
        return folder

    def source_path(self, video_id: str) -> Path:
        """The uploaded bytes as a local file (the object store backend copies them here
        first: for clips and the source download, not for decoding)."""
        return self.upload_dir(video_id) / SOURCE_NAME

    def video_input(self, video_id: str) -> Path | StreamedVideo:
        """What a worker decodes: the local file here; the object store streams it."""
        return self.source_path(video_id)

    def video_exists(self, video_id: str) -> bool:
        """Whether the video is stored (not deleted): asked before publishing results."""
        return self.upload_dir(video_id).is_dir()

    def new_upload_file(self) -> Path:
        """A fresh file name in ``tmp/`` for an upload being received."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=self.tmp)
        os.close(fd)
        return Path(name)

    def save_video(self, record: VideoRecord, received: Path) -> None:
        """Move a received, probed file and its record into ``uploads/`` in one rename."""
        target = self.upload_dir(record.video_id)
        staging = Path(tempfile.mkdtemp(prefix=f"video-{record.video_id}-", dir=self.tmp))
        try:
            os.replace(received, staging / SOURCE_NAME)
            atomic_write_json(staging / RECORD_NAME, record.to_dict())
            os.rename(staging, target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StorageError(f"upload {record.video_id} could not be stored: {exc}") from exc
        _fsync_dir(self.uploads)

    def update_video(self, record: VideoRecord) -> None:
        if not self.upload_dir(record.video_id).is_dir():
            raise VideoNotFoundError(f"no video {record.video_id}")
        atomic_write_json(self.upload_dir(record.video_id) / RECORD_NAME, record.to_dict())

    def get_video(self, video_id: str) -> VideoRecord:
        path = self.upload_dir(video_id) / RECORD_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise VideoNotFoundError(f"no video {video_id}") from None
        except (OSError, ValueError) as exc:
            raise StorageError(f"record of video {video_id} is unreadable: {exc}") from exc
        return VideoRecord.from_dict(data)

    def video_ids(self) -> Iterator[str]:
        if not self.uploads.is_dir():
            return
        for entry in self.uploads.iterdir():
            if _ID.match(entry.name) and (entry / RECORD_NAME).is_file():
                yield entry.name

    def list_videos(self) -> list[VideoRecord]:
        """Every stored video, newest first."""
        records = []
        for video_id in self.video_ids():
            try:
                records.append(self.get_video(video_id))
            except StorageError:  # deleted meanwhile, or unreadable: skip, the log says why
                logger.warning("skipping video %s: record unreadable or gone", video_id)
        return sorted(records, key=lambda r: (r.created_at, r.video_id), reverse=True)

    def delete_video(self, video_id: str) -> None:
        """Remove the upload and its results; each goes away in one rename."""
        found = False
        for folder in (self.upload_dir(video_id), self.results / video_id):
            if folder.exists():
                found = True
                self._discard(folder)
        if not found:
            raise VideoNotFoundError(f"no video {video_id}")

    def _discard(self, folder: Path) -> None:
        trash = Path(tempfile.mkdtemp(prefix="trash-", dir=self.tmp))
        with contextlib.suppress(FileNotFoundError):
            os.rename(folder, trash / folder.name)
        shutil.rmtree(trash, ignore_errors=True)

    # -- results ---------------------------------------------------------------------------

    def results_dir(self, video_id: str) -> Path:
        return self.results / validate_id(video_id, "video_id")

    def has_results(self, video_id: str) -> bool:
        return (self.results_dir(video_id) / EVENTS_NAME).is_file()

    def read_events(self, video_id: str) -> dict[str, Any] | None:
        """The ``events.json`` of a video (:func:`worker.detection.results.read_events`, schema
        version checked), or None while it has no results."""
        try:
            return read_events(self.results_dir(video_id))
        except FileNotFoundError:
            return None

    def staging_dir(self, video_id: str) -> Path:
        """A fresh empty folder in ``tmp/`` where a job builds a video's results."""
        validate_id(video_id, "video_id")
        self.tmp.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"results-{video_id}-", dir=self.tmp))

    def publish_results(self, video_id: str, staging: Path) -> Path:
        """Make ``staging`` the results of ``video_id``, replacing older ones.

        A job done twice publishes twice; each publication is one rename of a complete
        folder, so readers see one whole result set, never a mix.
        """
        target = self.results / validate_id(video_id, "video_id")
        if not (staging / EVENTS_NAME).is_file():
            raise StorageError(f"{staging} holds no {EVENTS_NAME}; nothing to publish")
        self.results.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # another worker may publish the same video meanwhile
            try:
                os.rename(staging, target)
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise StorageError(f"results of {video_id} not published: {exc}") from exc
                self._discard(target)  # older results: move them aside, then retry
        else:
            raise StorageError(f"results of {video_id} kept changing; not published")
        _fsync_dir(self.results)
        return target

    def result_file(self, video_id: str, relative: str) -> Path:
        """A file inside a video's results, refusing any name that leaves the folder."""
        base = self.results_dir(video_id).resolve()
        candidate = (base / relative).resolve()
        if not candidate.is_relative_to(base) or candidate == base:
            raise InvalidIdError(f"{relative!r} is not a file of the results of {video_id}")
        return candidate

    # -- documents: small state every process shares (reviews, job archives, ...) --------------

    def document_path(self, name: str) -> Path:
        """The local file of document ``name`` (a server-chosen name relative to the data
        directory, ``"uploads/<id>/reviews.json"``), which may not exist. The object
        store backend first brings this process's copy up to date with the store's
        (one conditional GET), so a caller may ``stat`` the path to see a change."""
        return self.root / _document_name(name)

    def read_document(self, name: str) -> bytes | None:
        """The document's bytes, or None when there is none."""
        try:
            return self.document_path(name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"{name} is unreadable: {exc}") from exc

    def write_document(self, name: str, data: bytes, *, make_folder: bool = False) -> None:
        """Replace the document in one step (readers see the old or the new bytes);
        ``StorageError`` when its folder is gone (a deleted video's, say), unless
        ``make_folder``."""
        path = self.root / _document_name(name)
        try:
            if make_folder:
                path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise StorageError(f"{name} could not be written: {exc}") from exc

    def create_document(self, name: str, data: bytes) -> bool:
        """Write the document only if there is none (its folder is made); False when
        one was there: of two processes creating it at once, one wins and both read
        the winner's."""
        path = self.root / _document_name(name)
        staging = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(staging, path)
            except FileExistsError:
                return False
            return True
        except OSError as exc:
            raise StorageError(f"{name} could not be created: {exc}") from exc
        finally:
            staging.unlink(missing_ok=True)

    def delete_document(self, name: str) -> None:
        """Remove the document (an absent one is no error)."""
        (self.root / _document_name(name)).unlink(missing_ok=True)

    def document_names(self, folder: str) -> list[str]:
        """The documents directly in ``folder`` (``"jobs"``), as names for the calls above."""
        base = self.root / _document_name(folder)
        try:
            entries = sorted(p.name for p in base.iterdir() if p.is_file())
        except FileNotFoundError:
            return []
        return [f"{folder}/{e}" for e in entries if not e.startswith(".")]

    def sync_documents(self, folder: str) -> Path:
        """The local folder of the documents in ``folder``, for a reader that scans it;
        the object store backend first copies in what changed (one LIST)."""
        return self.root / _document_name(folder)

    @contextlib.contextmanager
    def document_lock(self, name: str) -> Iterator[None]:
        """Hold the deployment's exclusive lock of document ``name`` (here an ``flock``
        on ``.<file name>.lock`` beside it; the object store backend's is a Redis lease).
        ``StorageError`` when its folder is gone."""
        path = self.root / _document_name(name)
        lock_path = path.with_name(f".{path.name}.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
        except FileNotFoundError:
            raise StorageError(f"{name} cannot be locked: its folder is gone") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- staged files (a zip of frames waiting for its import job) ------------------------------

    def staged_path(self, name: str) -> Path:
        """Where staged file ``name`` (a server-chosen name) is read by its job; the
        object store backend copies it in from the store first."""
        return self.tmp / name

    def stage(self, received: Path, name: str) -> None:
        """Hand a received file to a job on any machine (here: a rename into ``tmp/``)."""
        try:
            os.replace(received, self.tmp / name)
        except OSError as exc:
            raise StorageError(f"{name} could not be staged: {exc}") from exc

    def discard_staged(self, name: str) -> None:
        """Remove a staged file once its job is done with it (or could not be queued)."""
        (self.tmp / name).unlink(missing_ok=True)

    # -- frame pool --------------------------------------------------------------------------

    def frame_pool(self, image_size: int = 224, val_fraction: float = 0.3) -> FramePool:
        """The frame pool (:class:`~worker.pool.frames.FramePool` on ``frames/``; the
        object store backend's is brought up to date from the store first)."""
        from .pool.frames import FramePool

        return FramePool(self.frames, image_size, val_fraction)

    # -- model versions ----------------------------------------------------------------------

    def registry(self) -> ModelRegistry:
        """The model versions (:class:`~worker.serving.versions.ModelRegistry` on ``models/``; the
        object store backend's copies them from the store first)."""
        from .serving.versions import ModelRegistry

        return ModelRegistry(self.models)


def plain_name(name: str) -> bool:
    """Whether ``name`` is a relative path of plain parts: no hidden part (``..``
    included) and no empty one (``"/etc/x"`` or ``"a//b"`` would leave the folder or
    alias another name). What documents and copied objects may be called."""
    return all(part and not part.startswith(".") for part in name.split("/"))


def _document_name(name: str) -> str:
    """``name`` if it is a :func:`plain_name`; documents are named by the server, so
    anything else is a bug."""
    if not plain_name(name):
        raise ValueError(f"not a document name: {name!r}")
    return name


def open_storage(settings: Settings) -> Storage:
    """The storage backend the settings name: the data directory alone (default), or an
    S3-compatible object store (``ATCON_STORAGE_URL``) with the data directory as this
    process's scratch and cache."""
    if not settings.storage_url:
        return Storage(settings.data_dir)
    from .storage_s3 import ObjectStorage, frame_lock, named_lock, registry_lock

    return ObjectStorage(
        settings.data_dir,
        settings.storage_url,
        registry_lock=registry_lock(settings),
        frame_lock=frame_lock(settings),
        document_lock=named_lock(settings, "documents"),
    )
