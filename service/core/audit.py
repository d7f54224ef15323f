"""The audit log: one JSON line per upload, read or deletion of patient video, and per
failed authentication (with the client's address, never the token presented).

Each line holds the time (UTC, ISO 8601), the token's name (never the token), the
action and the ids it touched; never a file name or anything else a patient could
be recognised by. Several processes append to the same file; each line is one
``write`` on a file opened with ``O_APPEND``, which the kernel does not interleave.

With the object store (``ATCON_STORAGE_URL``) no disk is shared, so the file is only
this replica's copy: :class:`AuditShipper` also sends the lines to the store, as
objects ``audit/<YYYY-MM-DD>/<time>-<host>-<pid>-<n>.jsonl`` (one per batch, every
``interval_s`` and when the API stops; a batch the store refuses is kept and sent
with the next), which together are the deployment's audit log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from worker import ObjectStoreError

if TYPE_CHECKING:
    from worker.object_store import ObjectStore

__all__ = ["AuditLog", "AuditShipper"]

logger = logging.getLogger(__name__)


class AuditShipper:
    """Batches of audit lines sent to the object store by a background thread."""

    def __init__(
        self, store: ObjectStore, interval_s: float = 2.0, max_pending: int = 50_000
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        #: lines held while the store refuses them; beyond this the oldest are dropped
        #: from memory (the replica's file still has every line), so an outage of the
        #: store cannot grow the API's memory without bound
        self.max_pending = max_pending
        self.dropped = 0
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._count = 0
        self._origin = f"{socket.gethostname()[:40]}-{os.getpid()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, line: bytes) -> None:
        with self._lock:
            self._pending.append(line)
            self._trim()
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="audit-shipper", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> bool:
        """Send what is pending as one object; False (and kept) if the store refused."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._count += 1
            number = self._count
        if not batch:
            return True
        now = dt.datetime.now(dt.UTC)
        name = f"audit/{now:%Y-%m-%d}/{now:%Y%m%dT%H%M%S.%f}-{self._origin}-{number}.jsonl"
        try:
            self.store.put_bytes(name, b"".join(batch))
        except ObjectStoreError:
            logger.exception("%d audit lines not sent to the store now; kept", len(batch))
            with self._lock:
                self._pending[:0] = batch
                self._trim()
            return False
        return True

    def _trim(self) -> None:
        """Drop the oldest pending lines beyond ``max_pending`` (the lock is held)."""
        excess = len(self._pending) - self.max_pending
        if excess > 0:
            del self._pending[:excess]
            self.dropped += excess
            logger.error(
                "%d audit lines not sent to the store are dropped from memory (the "
                "replica's audit.log keeps them); %d so far",
                excess,
                self.dropped,
            )

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
        self.flush()


class AuditLog:
    def __init__(self, path: Path, shipper: AuditShipper | None = None) -> None:
        self.path = path
        self.shipper = shipper
        self._lock = threading.Lock()

    def close(self) -> None:
        """Send what the shipper still holds (the API stopping)."""
        if self.shipper is not None:
            self.shipper.close()

    def record(
        self,
        action: str,
        token: str,
        *,
        video_id: str | None = None,
        job_id: str | None = None,
        model_version: str | None = None,
        frame_ids: list[str] | None = None,
        outcome: str = "ok",
        address: str | None = None,
    ) -> None:
        entry: dict[str, object] = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "token": token,
            "action": action,
            "video_id": video_id,
            "job_id": job_id,
            "outcome": outcome,
        }
        if model_version is not None:
            entry["model_version"] = model_version
        if frame_ids is not None:
            entry["frame_ids"] = frame_ids
        if address is not None:
            entry["address"] = address
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        if self.shipper is not None:
            self.shipper.add(line)
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
        except OSError:
            # the request itself succeeded; losing an audit line must be loud, not fatal
            logger.exception("audit log %s could not be written", self.path)
