"""The nightly scheduler: fires at the set time (injected clock), once across processes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis

from tests.redis_helpers import REDIS_PORT
from worker.runtime.scheduler import LocalClaim, NightlyScheduler, RedisClaim, validate_cron

REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/10"


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _scheduler(clock: Clock, claim, fired: list[str], should: bool = True) -> NightlyScheduler:
    def trigger() -> str:
        fired.append(clock.now.isoformat())
        return f"job-{len(fired)}"

    return NightlyScheduler(
        "0 2 * * *",
        "Europe/Zurich",
        claim=claim,
        should_run=lambda: (should, "enough frames" if should else "only 3 new frames"),
        trigger=trigger,
        clock=clock,
    )


def test_fires_at_two_in_the_configured_zone_and_only_once() -> None:
    # 00:58 UTC on 26 Nov is 01:58 in Zurich (UTC+1)
    clock = Clock(datetime(2026, 11, 26, 0, 58, tzinfo=UTC))
    fired: list[str] = []
    scheduler = _scheduler(clock, LocalClaim(), fired)
    assert scheduler.tick() is None
    clock.now += timedelta(minutes=1)
    assert scheduler.tick() is None
    clock.now += timedelta(minutes=1, seconds=5)  # 02:00:05 local
    assert scheduler.tick() == "job-1"
    clock.now += timedelta(minutes=10)
    assert scheduler.tick() is None
    clock.now += timedelta(days=1)
    assert scheduler.tick() == "job-2"
    assert len(fired) == 2


def test_skips_when_the_caller_says_not_worth_it() -> None:
    clock = Clock(datetime(2026, 11, 26, 0, 0, tzinfo=UTC))
    fired: list[str] = []
    scheduler = _scheduler(clock, LocalClaim(), fired, should=False)
    scheduler.tick()
    clock.now += timedelta(hours=2)
    assert scheduler.tick() is None and fired == []


@pytest.mark.redis
def test_two_processes_sharing_redis_fire_once() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        clock = Clock(datetime(2026, 11, 26, 0, 30, tzinfo=UTC))
        fired: list[str] = []
        first = _scheduler(clock, RedisClaim(client), fired)
        second = _scheduler(clock, RedisClaim(redis.Redis.from_url(REDIS_URL)), fired)
        first.tick(), second.tick()
        clock.now += timedelta(hours=1)
        results = [first.tick(), second.tick()]
        assert sorted(r is None for r in results) == [False, True]
        assert len(fired) == 1
        late = _scheduler(clock, RedisClaim(client), fired)  # a third process, started late
        late._next = first.next_fire(clock.now - timedelta(hours=1))
        assert late.tick() is None and len(fired) == 1
    finally:
        client.flushdb()


def test_bad_schedule_and_zone_are_named() -> None:
    with pytest.raises(ValueError, match="cron expression"):
        validate_cron("every night")
    with pytest.raises(ValueError, match="cron expression"):
        validate_cron("0 2 * *")
    with pytest.raises(ValueError, match="timezone"):
        NightlyScheduler(
            "0 2 * * *",
            "Mars/Olympus",
            claim=LocalClaim(),
            should_run=lambda: (True, ""),
            trigger=lambda: "x",
        )


_PROCESS_SCRIPT = """
import sys
from datetime import UTC, datetime, timedelta
import redis
from worker.runtime.scheduler import NightlyScheduler, RedisClaim

url = sys.argv[1]
client = redis.Redis.from_url(url)
now = [datetime(2026, 11, 26, 0, 30, tzinfo=UTC)]
scheduler = NightlyScheduler(
    "0 2 * * *", "Europe/Zurich", claim=RedisClaim(client),
    should_run=lambda: (True, "enough frames"),
    trigger=lambda: str(client.rpush("fired", sys.argv[2])),
    clock=lambda: now[0],
)
scheduler.tick()
client.rpush("ready", sys.argv[2])
while client.llen("ready") < 2:  # both processes reach the fire time together
    pass
now[0] += timedelta(hours=1)
scheduler.tick()
"""


@pytest.mark.redis
def test_two_real_processes_fire_once(tmp_path) -> None:
    import subprocess
    import sys

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        script = tmp_path / "tick.py"
        script.write_text(_PROCESS_SCRIPT)
        processes = [
            subprocess.Popen([sys.executable, str(script), REDIS_URL, name])
            for name in ("first", "second")
        ]
        assert [p.wait(timeout=60) for p in processes] == [0, 0]
        assert client.llen("fired") == 1
    finally:
        client.flushdb()
