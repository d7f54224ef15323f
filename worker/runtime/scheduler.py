"""The nightly fine-tune trigger: a cron expression, one acting scheduler at a time.

Every process may run a scheduler; each due fire time is *claimed* before anything
is queued (``SET key NX EX`` in Redis, keyed by the fire time), so exactly one
process acts on it however many are running, and a process that starts late sees the
claim and does nothing. The scheduler decides only *when*; whether a fine-tune is
worth running (enough new frames, none running) and how to queue it are callables
the caller provides, which keeps this module free of storage and HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

__all__ = ["Claim", "LocalClaim", "NightlyScheduler", "RedisClaim", "validate_cron"]

logger = logging.getLogger(__name__)


def validate_cron(expression: str) -> str:
    """Return ``expression`` if it is a valid 5-field cron expression, else raise ValueError."""
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ValueError(
            f"schedule must be a 5-field cron expression like '0 2 * * *', got {expression!r}"
        )
    return expression


class Claim(Protocol):
    def claim(self, key: str, ttl_s: int) -> bool:
        """Take ``key`` for ``ttl_s`` seconds; ``False`` when someone already holds it."""


class LocalClaim:
    """Claims within one process (the embedded default)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._held: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def claim(self, key: str, ttl_s: int) -> bool:
        now = self._clock()
        with self._lock:
            if self._held.get(key, float("-inf")) > now:
                return False
            self._held[key] = now + ttl_s
            return True


class RedisClaim:
    """Claims shared by every process that talks to one Redis (``SET NX EX``)."""

    def __init__(self, redis: object, prefix: str = "atcon:scheduler:") -> None:
        self._redis = redis
        self._prefix = prefix

    def claim(self, key: str, ttl_s: int) -> bool:
        return bool(self._redis.set(self._prefix + key, "1", nx=True, ex=ttl_s))  # type: ignore[attr-defined]


class NightlyScheduler:
    """Fire ``trigger`` at each time ``cron`` names, in ``timezone``, when ``should_run`` agrees."""

    def __init__(
        self,
        cron: str,
        timezone: str,
        *,
        claim: Claim,
        should_run: Callable[[], tuple[bool, str]],
        trigger: Callable[[], str],
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.cron = validate_cron(cron)
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone {timezone!r} is not a known IANA time zone") from exc
        self._claim = claim
        self._should_run = should_run
        self._trigger = trigger
        self._clock = clock or (lambda: datetime.now(UTC))
        self._next: datetime | None = None

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (timezone-aware)."""
        local = after.astimezone(self.zone)
        fire: datetime = croniter(self.cron, local).get_next(datetime)
        return fire

    def tick(self) -> str | None:
        """Act if a fire time has come; return the queued job id, if any."""
        now = self._clock()
        if self._next is None:
            self._next = self.next_fire(now)
            return None
        if now < self._next:
            return None
        due, self._next = self._next, self.next_fire(now)
        if not self._claim.claim(f"nightly:{due.isoformat()}", ttl_s=24 * 3600):
            logger.info("nightly fine-tune for %s is handled by another process", due.isoformat())
            return None
        ok, why = self._should_run()
        if not ok:
            logger.info("nightly fine-tune for %s skipped: %s", due.isoformat(), why)
            return None
        job_id = self._trigger()
        logger.info("nightly fine-tune for %s queued as job %s", due.isoformat(), job_id)
        return job_id

    def run(self, stop: threading.Event, interval_s: float = 30.0) -> None:
        """Tick every ``interval_s`` seconds until ``stop`` is set; errors are logged, not fatal."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("nightly scheduler tick failed; trying again next tick")
            stop.wait(interval_s)
