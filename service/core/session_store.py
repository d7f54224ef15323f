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

With the object store (``ATCON_STORAGE_URL``) API replicas share no disk, so the
records live in Redis instead (:class:`RedisSessionStore`: one key per session that
expires with it, and a set per token name for "revoke all"); checking a session
costs one ``EXISTS``. A Redis that cannot answer counts as "no session": the page
asks to sign in again, it never lets a caller through.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any, Protocol

from redis.exceptions import RedisError

from models.atomic import atomic_write_bytes
from worker import StorageError

logger = logging.getLogger(__name__)

__all__ = ["RedisSessionStore", "SessionStore", "Sessions"]

_ID = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
#: sweep expired records at most this often (seconds)
_SWEEP_EVERY_S = 600.0


class Sessions(Protocol):
    """What :class:`~service.core.sessions.SessionCodec` needs of a session store."""

    def create(self, name: str, expires: float) -> str: ...

    def active(self, session_id: str | None) -> bool: ...

    def end(self, session_id: str | None) -> bool: ...

    def end_all(self, name: str) -> int: ...


class RedisSessionStore:
    """Session records in Redis: ``<prefix>:session:<id>`` (the token's name, expiring
    with the session) and ``<prefix>:sessions:<name>`` (the ids of a token's sessions)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"

    def _names(self, name: str) -> str:
        return f"{self.prefix}:sessions:{name}"

    def create(self, name: str, expires: float) -> str:
        session_id = secrets.token_urlsafe(24)
        ttl_ms = max(1000, int((expires - time.time()) * 1000))
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self._key(session_id), name, px=ttl_ms)
            pipe.sadd(self._names(name), session_id)
            pipe.pexpire(self._names(name), ttl_ms, gt=True)
            pipe.pexpire(self._names(name), ttl_ms, nx=True)
            pipe.execute()
        except RedisError as exc:
            raise StorageError(f"a session cannot be recorded in Redis: {exc}") from exc
        return session_id

    def active(self, session_id: str | None) -> bool:
        if not session_id or not _ID.match(session_id):
            return False
        try:
            return bool(self.client.exists(self._key(session_id)))
        except RedisError as exc:  # fail closed: sign in again
            logger.warning("sessions cannot be checked in Redis now: %s", exc)
            return False

    def end(self, session_id: str | None) -> bool:
        if not session_id or not _ID.match(session_id):
            return False
        try:
            return bool(self.client.delete(self._key(session_id)))
        except RedisError as exc:
            raise StorageError(f"the session cannot be ended in Redis: {exc}") from exc

    def end_all(self, name: str) -> int:
        try:
            ids = [
                i.decode() if isinstance(i, bytes) else str(i)
                for i in self.client.smembers(self._names(name))
            ]
            ended = int(self.client.delete(*[self._key(i) for i in ids])) if ids else 0
            self.client.delete(self._names(name))
        except RedisError as exc:
            raise StorageError(f"sessions cannot be ended in Redis: {exc}") from exc
        return ended


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
