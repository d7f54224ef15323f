"""The audit log: one JSON line per upload, read or deletion of patient video, and per
failed authentication (with the client's address, never the token presented).

Each line holds the time (UTC, ISO 8601), the token's name (never the token), the
action and the ids it touched; never a file name or anything else a patient could
be recognised by. Several processes append to the same file; each line is one
``write`` on a file opened with ``O_APPEND``, which the kernel does not interleave.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from pathlib import Path

__all__ = ["AuditLog"]

logger = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

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
