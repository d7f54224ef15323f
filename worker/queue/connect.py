"""The one place that opens a Redis connection.

Everything that talks to Redis (the job queue, the fine-tune lock, the scheduler's
claims) gets its client from :func:`connect`, with the same timeouts and retry
policy. Which deployment this is (Redis or the embedded default) is
:attr:`worker.settings.Settings.embedded`, the one switch.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..settings import Settings

__all__ = ["connect"]


def connect(settings: Settings, *, decode_responses: bool = True) -> Any:
    """A client for ``ATCON_REDIS_URL``: 2 s to connect, 10 s per reply, one quick retry.

    ``decode_responses``: replies as ``str`` (the default) rather than ``bytes``.
    Returns ``redis.Redis``, typed ``Any`` because its replies' types depend on
    ``decode_responses``, which redis-py's annotations cannot express.
    """
    if settings.redis_url is None:
        raise ValueError("settings.redis_url must be set to connect to Redis")
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=decode_responses,
        socket_connect_timeout=2.0,
        socket_timeout=10.0,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), 1),
    )
