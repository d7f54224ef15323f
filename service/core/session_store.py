"""Server-side records of signed-in browser sessions, so that they can be ended.

A signed cookie alone stays valid until it expires, whatever the server thinks; here
every signed-in session also has a record, ``<data_dir>/sessions/<id>.json`` (the
token's name and the expiry, never the token), and a cookie counts only while its
record exists. So:

* signing out deletes the session's record: the old cookie stops working at once;
* an admin's "revoke all sessions of this token" deletes every record naming it;
* deleting the directory signs everybody out.

The records live in the data directory, which every API process shares (as it shares
``session.key``), so an ending takes effect on the next request to any of them.
Checking a session costs one ``stat``; expired records are swept when sessions are
created or revoked.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from pathlib import Path

from models.atomic import atomic_write_bytes
from worker import StorageError

__all__ = ["SessionStore"]

_ID = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
#: sweep expired records at most this often (seconds)
_SWEEP_EVERY_S = 600.0


class SessionStore:
    """The directory of session records."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._swept_at = 0.0

    def _path(self, session_id: str) -> Path | None:
        return self.root / f"{session_id}.json" if _ID.match(session_id) else None

    def create(self, name: str, expires: float) -> str:
        """Record a new session of token ``name``; return its id."""
        session_id = secrets.token_urlsafe(24)
        record = json.dumps({"name": name, "expires": int(expires)}).encode()
        path = self.root / f"{session_id}.json"
        try:
            atomic_write_bytes(path, record)  # 0600, as every atomic write
        except OSError as exc:
            raise StorageError(f"a session cannot be recorded in {self.root}: {exc}") from exc
        self._maybe_sweep()
        return session_id

    def active(self, session_id: str | None) -> bool:
        path = self._path(session_id) if session_id else None
        return path is not None and path.is_file()

    def end(self, session_id: str | None) -> bool:
        """Delete one session's record; True if it existed."""
        path = self._path(session_id) if session_id else None
        if path is None:
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def end_all(self, name: str) -> int:
        """Delete the records of every session of token ``name``; how many there were."""
        ended = 0
        for path, record in self._records():
            if record.get("name") == name:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    ended += 1
        self._sweep()
        return ended

    def _records(self) -> list[tuple[Path, dict[str, object]]]:
        found = []
        try:
            paths = list(self.root.glob("*.json"))
        except OSError:
            return []
        for path in paths:
            try:
                found.append((path, json.loads(path.read_bytes())))
            except (OSError, ValueError):
                continue  # ended meanwhile, or not ours
        return found

    def _maybe_sweep(self) -> None:
        if time.monotonic() - self._swept_at > _SWEEP_EVERY_S:
            self._sweep()

    def _sweep(self) -> None:
        self._swept_at = time.monotonic()
        now = time.time()
        for path, record in self._records():
            expires = record.get("expires")
            if isinstance(expires, int | float) and expires < now:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
