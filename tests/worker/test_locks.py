"""The fine-tune lock on a real Redis: renewal is compare-and-extend, loss is reported.

Each test waits for the renewer thread by polling with a deadline; no test asserts
how long anything took.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.redis_helpers import DB_QUEUE, flushed_db
from worker._exceptions import JobError, LockLostError
from worker.finetune.job import _finetune_lock, _guarded
from worker.queue.locks import RedisLock
from worker.settings import Settings

pytestmark = pytest.mark.redis


@pytest.fixture
def url() -> Iterator[str]:
    with flushed_db(DB_QUEUE) as url:
        yield url


def _eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not become true")
        time.sleep(0.02)


def _lost(lock: Any) -> bool:
    try:
        lock.check()
    except LockLostError:
        return True
    return False


def test_a_lock_taken_over_is_lost_and_the_new_holders_lease_is_left_alone(url: str) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    lock = RedisLock(client, "t:lock", ttl_ms=300)
    assert lock.try_acquire()
    # the lease expired (a long GC pause, say) and another worker took the lock
    client.set("t:lock", "other-holder", px=600_000)
    _eventually(lambda: _lost(lock))
    with pytest.raises(LockLostError, match="another process holds it"):
        lock.check()
    lock.release()
    assert client.get("t:lock") == "other-holder"  # neither extended nor deleted by us
    assert client.pttl("t:lock") > 300_000


class _Flaky:
    """The Redis client at the IO boundary, its scripts failing ``failures`` times."""

    def __init__(self, client: Any, failures: int) -> None:
        self._client = client
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def register_script(self, script: str) -> Callable[..., Any]:
        real = self._client.register_script(script)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.failures > 0:
                self.failures -= 1
                raise redis.ConnectionError("Redis went away for a moment")
            return real(*args, **kwargs)

        return call


def test_a_redis_hiccup_shorter_than_the_lease_keeps_the_lock(url: str) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    flaky = _Flaky(client, failures=1)
    lock = RedisLock(flaky, "t:lock", ttl_ms=1_500)
    assert lock.try_acquire()
    _eventually(lambda: flaky.failures == 0)  # the failed renewal happened
    first_ttl = client.pttl("t:lock")
    _eventually(lambda: client.pttl("t:lock") > first_ttl)  # and renewal went on
    lock.check()
    assert client.get("t:lock") == lock.token
    lock.release()
    assert client.get("t:lock") is None


def test_redis_away_for_a_whole_lease_loses_the_lock(url: str) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    lock = RedisLock(_Flaky(client, failures=1_000), "t:lock", ttl_ms=300)
    assert lock.try_acquire()
    _eventually(lambda: _lost(lock))
    with pytest.raises(LockLostError, match="could not be renewed"):
        lock.check()
    lock.release()


def test_a_fine_tune_whose_lock_is_lost_stops_at_its_next_report(url: str, tmp_path: Path) -> None:
    """The job's progress reports raise LockLostError (a JobError: failed, with the
    reason, not retried) once another holder has the lock."""
    settings = Settings(data_dir=tmp_path, redis_url=url, finetune_lock_ttl_s=0.3)
    client = redis.Redis.from_url(url, decode_responses=True)
    reports: list[float] = []
    with _finetune_lock(settings, lambda f, d=None: reports.append(f)) as lock:
        progress = _guarded(lambda f, d=None: reports.append(f), lock)
        progress(0.1)
        key = f"{settings.queue_prefix}:finetune:lock"
        client.set(key, "another-worker", px=600_000)
        _eventually(lambda: _lost(lock))
        with pytest.raises(LockLostError) as caught:
            progress(0.2)
    assert isinstance(caught.value, JobError) and "was lost" in str(caught.value)
    assert reports == [0.1]
    assert client.get(key) == "another-worker"
