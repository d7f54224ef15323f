"""Browser sessions: a signed cookie that names who signed in, and a CSRF secret.

A person signs in on the sign-in page with their API token once; the server checks
it like a bearer token and answers with a session cookie. The cookie holds

    {"c": csrf secret, "n": token name, "r": role, "k": key fingerprint, "e": expiry,
     "i": session id}

never the token. It is signed with HMAC-SHA256 under a server secret, ``HttpOnly``
(scripts cannot read it), ``SameSite=Lax`` (other sites' forms and images do not
carry it), ``Secure`` over HTTPS, and expires after :data:`SESSION_LIFETIME_S`.

On every request the session is checked against the *current* token settings: the
name must still have an entry with the same role, and ``k`` (an HMAC of the entry's
stored SHA-256, so neither the token nor its hash) must still match, so removing or
replacing a token ends its sessions at once. With a :class:`SessionStore` (the API
always has one), a signed-in session also needs its server-side record, ``i``: signing
out and an admin's revocation delete records, which ends those sessions at once too.

Cross-site request forgery: every request that changes something and is
authenticated by the cookie must carry the session's CSRF secret, as the form field
``csrf_token`` (pages) or the ``X-CSRF-Token`` header (scripts), compared in constant
time. A visitor who has not signed in gets an anonymous session whose CSRF secret
protects the sign-in form itself; signing in issues a new secret.

The signing secret is ``<data_dir>/session.key``, made on first use (32 random bytes,
mode 0600, created with ``O_EXCL`` so two processes starting at once agree on one):
every API process sharing the data directory accepts the others' sessions, and
deleting the file signs everybody out. With the object store the replicas share no
directory: the secret is the store's document ``secrets/session.key``
(:func:`load_shared_secret`), made the same way by a create-only write.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from worker import StorageError
from worker.storage import Storage

from .config import Role, Settings, TokenEntry
from .security import DEV_PRINCIPAL, Principal
from .session_store import Sessions

__all__ = [
    "COOKIE_NAME",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_LIFETIME_S",
    "Session",
    "SessionCodec",
    "load_secret",
    "load_shared_secret",
]

logger = logging.getLogger(__name__)

COOKIE_NAME = "atcon_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_LIFETIME_S = 12 * 3600
#: an anonymous session (CSRF secret of the sign-in form only) lives a day
ANONYMOUS_LIFETIME_S = 24 * 3600
_SECRET_BYTES = 32


@dataclass(frozen=True)
class Session:
    csrf: str
    expires: float
    name: str | None = None
    role: Role | None = None
    key: str | None = None
    #: the id of its server-side record (signed-in sessions)
    sid: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.name is not None and self.role is not None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Signs and checks session cookies with one secret."""

    def __init__(
        self,
        secret: bytes,
        *,
        lifetime_s: float = SESSION_LIFETIME_S,
        store: Sessions | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        if lifetime_s <= 0:
            raise ValueError(f"lifetime_s must be positive, got {lifetime_s}")
        self._secret = secret
        self.lifetime_s = lifetime_s
        self.store = store

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, b"session:" + payload, hashlib.sha256).digest()

    def encode(self, session: Session) -> str:
        data: dict[str, object] = {"c": session.csrf, "e": int(session.expires)}
        if session.signed_in:
            assert session.role is not None
            data.update(n=session.name, r=session.role.value, k=session.key)
            if session.sid is not None:
                data["i"] = session.sid
        payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def decode(self, value: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie holds; None when it is absent, forged, malformed or expired."""
        if not value or len(value) > 4096 or value.count(".") != 1:
            return None
        body, signature = value.split(".")
        try:
            payload, mac = _unb64(body), _unb64(signature)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(mac, self._sign(payload)):
            return None
        try:
            data = json.loads(payload)
            session = Session(
                csrf=str(data["c"]),
                expires=float(data["e"]),
                name=str(data["n"]) if "n" in data else None,
                role=Role(data["r"]) if "r" in data else None,
                key=str(data["k"]) if data.get("k") is not None else None,
                sid=str(data["i"]) if data.get("i") is not None else None,
            )
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires < (time.time() if now is None else now):
            return None
        return session

    def anonymous(self) -> Session:
        return Session(csrf=secrets.token_urlsafe(24), expires=time.time() + ANONYMOUS_LIFETIME_S)

    def fingerprint(self, entry: TokenEntry) -> str:
        """Names one token entry without revealing its hash: HMAC of it, 16 hex digits."""
        mac = hmac.new(self._secret, b"token:" + entry.sha256.encode(), hashlib.sha256)
        return mac.hexdigest()[:16]

    def signed_in(self, principal: Principal, settings: Settings) -> Session:
        """A fresh session (new CSRF secret) for someone whose token was just accepted."""
        entry = next((e for e in settings.tokens if e.name == principal.name), None)
        key = self.fingerprint(entry) if entry is not None else "dev"
        expires = time.time() + self.lifetime_s
        sid = self.store.create(principal.name, expires) if self.store is not None else None
        return Session(
            csrf=secrets.token_urlsafe(24),
            expires=expires,
            name=principal.name,
            role=principal.role,
            key=key,
            sid=sid,
        )

    def end(self, session: Session) -> None:
        """Sign ``session`` out on the server: its cookie stops working everywhere."""
        if self.store is not None:
            self.store.end(session.sid)

    def principal(self, session: Session, settings: Settings) -> Principal | None:
        """Who the session speaks for under the current tokens; None when that ended."""
        if not session.signed_in:
            return None
        if self.store is not None and not self.store.active(session.sid):
            return None  # signed out, revoked, or from before server-side sessions
        if not settings.tokens:
            # development mode without tokens: only its own sessions are valid
            dev = settings.dev and session.name == DEV_PRINCIPAL.name and session.key == "dev"
            return DEV_PRINCIPAL if dev else None
        for entry in settings.tokens:
            if entry.name == session.name:
                if entry.role is not session.role:
                    return None
                if not hmac.compare_digest(self.fingerprint(entry), session.key or ""):
                    return None
                return Principal(entry.name, entry.role)
        return None

    def check_csrf(self, session: Session | None, presented: str | None) -> bool:
        if session is None or not presented:
            return False
        return hmac.compare_digest(session.csrf.encode(), presented.encode())


def load_secret(path: Path) -> bytes:
    """The session-signing secret stored at ``path``, created on first use."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(_SECRET_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(staging, path)
    except OSError as exc:
        raise StorageError(f"session secret {path} cannot be created: {exc}") from exc
    finally:
        staging.unlink(missing_ok=True)
    return _read_secret(path)


#: the session-signing secret as a storage document (the object store backend)
SECRET_DOCUMENT = "secrets/session.key"


def load_shared_secret(storage: Storage) -> bytes:
    """The session-signing secret every API replica shares through the storage: the
    document :data:`SECRET_DOCUMENT`, created on first use by whichever replica asks
    first (a create-only write, so two replicas starting together agree)."""
    secret = storage.read_document(SECRET_DOCUMENT)
    if secret is None:
        storage.create_document(SECRET_DOCUMENT, secrets.token_bytes(_SECRET_BYTES))
        secret = storage.read_document(SECRET_DOCUMENT)
    if secret is None or len(secret) < 16:
        raise StorageError(
            f"session secret {SECRET_DOCUMENT} in {storage.location} is missing or shorter "
            "than 16 bytes; delete it"
        )
    return secret


def _read_secret(path: Path) -> bytes:
    secret = path.read_bytes()
    if len(secret) < 16:
        raise StorageError(f"session secret {path} is shorter than 16 bytes; delete it")
    return secret
