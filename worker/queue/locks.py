"""Locks that keep one fine-tune running per deployment, and tell a holder it lost.

:class:`RedisLock` is a lease: taken with ``SET key token NX PX ttl``, renewed by a
side thread with a compare-and-extend (a Lua script that extends the key only while it
still holds this holder's token, atomically, so a renewal can never extend another
holder's lock), released with a compare-and-delete. The lock is *lost* when a renewal
finds another token (the lease expired and someone took it) or when no renewal has
succeeded for a whole TTL (Redis away: the key may have expired). The holder learns it
at its next :meth:`RedisLock.check` (the fine-tune job checks at every progress
report and before it registers a version), which raises
:class:`~worker.LockLostError`: the job is failed with that reason and registers
nothing.

:class:`LocalLock` is the same contract within one process (the embedded default).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from .._exceptions import LockLostError

__all__ = ["HeldLock", "LocalLock", "RedisLock", "held"]

logger = logging.getLogger(__name__)

#: KEYS[1] the lock, ARGV[1] the holder's token, ARGV[2] the TTL in ms
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class HeldLock(Protocol):
    """What a holder may ask of a lock it holds."""

    def check(self) -> None:
        """Raise :class:`~worker.LockLostError` if the lock is no longer held."""


class RedisLock:
    """A lease lock on Redis; see the module docstring. Not reentrant."""

    def __init__(self, client: Any, key: str, ttl_ms: int = 60_000) -> None:
        if ttl_ms < 100:
            raise ValueError(f"ttl_ms must be at least 100, got {ttl_ms}")
        self.client = client
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = uuid.uuid4().hex
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)
        self._stop = threading.Event()
        self._lost: str | None = None
        self._renewer: threading.Thread | None = None
        self._renewed_at = 0.0

    def try_acquire(self) -> bool:
        """Take the lock if it is free; start renewing it. False if another holds it."""
        if not self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return False
        self._renewed_at = time.monotonic()
        self._stop.clear()
        self._lost = None
        self._renewer = threading.Thread(
            target=self._renew_loop, name=f"lock-{self.key}", daemon=True
        )
        self._renewer.start()
        return True

    def extend(self) -> bool:
        """Extend the lease by a TTL if this holder still holds it (atomic)."""
        return bool(self._extend(keys=[self.key], args=[self.token, self.ttl_ms]))

    def _renew_loop(self) -> None:
        interval = self.ttl_ms / 3000.0
        while not self._stop.wait(interval):
            try:
                held = self.extend()
            except Exception as exc:  # Redis away for a moment: try again, sooner
                silent = time.monotonic() - self._renewed_at
                if silent * 1000.0 >= self.ttl_ms:
                    self._lose(f"it could not be renewed for {silent:.0f} s ({exc})")
                    return
                logger.warning("lock %s: renewal failed, retrying: %s", self.key, exc)
                interval = min(interval, 1.0)
                continue
            if not held:
                self._lose("its lease expired and another process holds it now")
                return
            self._renewed_at = time.monotonic()
            interval = self.ttl_ms / 3000.0

    def _lose(self, why: str) -> None:
        self._lost = f"the lock {self.key} was lost: {why}"
        logger.error("%s", self._lost)

    def check(self) -> None:
        """Raise :class:`~worker.LockLostError` if the lock was lost."""
        if self._lost is not None:
            raise LockLostError(self._lost)

    def release(self) -> None:
        """Stop renewing and delete the key if it is still this holder's."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        try:
            self._release(keys=[self.key], args=[self.token])
        except Exception as exc:  # it expires by itself within a TTL
            logger.warning("lock %s not released (it expires by itself): %s", self.key, exc)


class LocalLock:
    """The same contract inside one process: a mutex that is never lost."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def try_acquire(self, timeout_s: float = 2.0) -> bool:
        return self._lock.acquire(timeout=timeout_s)

    def check(self) -> None:
        return None

    def release(self) -> None:
        self._lock.release()


@contextmanager
def held(
    lock: RedisLock | LocalLock, waiting: Callable[[], None], poll_s: float = 2.0
) -> Iterator[HeldLock]:
    """Hold ``lock`` for the block, calling ``waiting()`` every ``poll_s`` while another
    holder has it."""
    while not lock.try_acquire():
        waiting()
        if isinstance(lock, RedisLock):
            time.sleep(poll_s)
    try:
        yield lock
    finally:
        lock.release()
