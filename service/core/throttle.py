"""Throttling failed authentication per client address.

Every wrong bearer token and every wrong sign-in counts against the caller's address
(the peer, or the client a trusted proxy names: see ``ATCON_FORWARDED_ALLOW_IPS``).
Once an address has ``ATCON_AUTH_FAILURE_LIMIT`` failures within
``ATCON_AUTH_FAILURE_WINDOW_S`` seconds, every attempt from it to authenticate with a
token, right or wrong, answers 429 with ``Retry-After`` until the window has room
again: otherwise a right guess would still stand out. Requests carrying a valid
session cookie are not affected (a signed cookie cannot be guessed).

The counts live in Redis when the deployment has one, so every API replica shares
them, and in memory otherwise (the ``limits`` library's sliding-window counter on
either storage). If Redis cannot be reached the throttle lets requests through with
a warning: the queue is unusable then anyway, and authentication itself still holds.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import SlidingWindowCounterRateLimiter
from redis import RedisError
from starlette.requests import Request

from worker.settings import Settings

__all__ = ["AuthThrottle", "Throttled", "client_address"]

logger = logging.getLogger(__name__)

_NAMESPACE = "auth-failures"


@dataclass(frozen=True)
class Throttled:
    """An address over its limit: seconds until it may try again."""

    retry_after_s: int

    def sentence(self) -> str:
        return (
            "too many failed sign-ins or wrong tokens came from your address; wait "
            f"{self.retry_after_s} s before trying again (ask an admin if your token "
            "should work)"
        )


class AuthThrottle:
    """Counts failed authentications per address and says when one must wait."""

    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self.item = RateLimitItemPerSecond(
            settings.auth_failure_limit, int(settings.auth_failure_window_s)
        )
        if storage is None:
            storage = (
                MemoryStorage()
                if settings.redis_url is None  # embedded (narrows the type for mypy)
                else RedisStorage(
                    settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
                )
            )
        self.storage = storage
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.prefix = settings.queue_prefix
        self._warned_at = -math.inf

    def check(self, address: str) -> Throttled | None:
        """None when ``address`` may try to authenticate now."""
        try:
            if self.limiter.test(self.item, self.prefix, _NAMESPACE, address):
                return None
            stats = self.limiter.get_window_stats(self.item, self.prefix, _NAMESPACE, address)
        except RedisError as exc:
            self._unavailable(exc)
            return None
        return Throttled(max(1, math.ceil(stats.reset_time - time.time())))

    def failed(self, address: str) -> bool:
        """Count one failure; True when this one reached the limit."""
        try:
            self.limiter.hit(self.item, self.prefix, _NAMESPACE, address)
            return not self.limiter.test(self.item, self.prefix, _NAMESPACE, address)
        except RedisError as exc:
            self._unavailable(exc)
            return False

    def _unavailable(self, exc: Exception) -> None:
        if time.monotonic() - self._warned_at > 60:  # once a minute, not once a request
            self._warned_at = time.monotonic()
            logger.warning(
                "the authentication throttle cannot reach its storage, so it lets "
                "requests through: %s",
                exc,
            )


def client_address(request: Request) -> str:
    """The caller's address as uvicorn saw it (a trusted proxy's client, if any)."""
    return request.client.host if request.client is not None else "unknown"
