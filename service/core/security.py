"""Bearer tokens with roles.

A token is a random string handed to a person once (``atcon token new NAME ROLE``);
the server keeps only its SHA-256 in ``ATCON_API_TOKENS``. A request's token is
hashed and compared with every configured hash in constant time
(``hmac.compare_digest``, no early exit), so neither the answer nor its timing says
how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from .config import Role, Settings, TokenEntry

__all__ = ["DEV_PRINCIPAL", "Principal", "authenticate", "hash_token", "new_token"]

TOKEN_PREFIX = "atcon_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name (logged) and its role."""

    name: str
    role: Role


#: every caller in development mode when no tokens are configured
DEV_PRINCIPAL = Principal("dev", Role.admin)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(name: str, role: Role) -> tuple[str, TokenEntry]:
    """A fresh random token and the ``ATCON_API_TOKENS`` entry that accepts it."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, TokenEntry(name, role, hash_token(token))


def authenticate(token: str | None, settings: Settings) -> Principal | None:
    """The principal a presented token belongs to, or None for no or a wrong token."""
    entries = settings.tokens
    if not entries and settings.dev:
        return DEV_PRINCIPAL
    if not token:
        return None
    digest = hash_token(token)
    found: TokenEntry | None = None
    for entry in entries:
        if hmac.compare_digest(entry.sha256, digest) and found is None:
            found = entry
    return Principal(found.name, found.role) if found else None
