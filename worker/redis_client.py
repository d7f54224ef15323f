"""The one place that opens a Redis connection, and the one "Redis or embedded?" switch.

Everything that talks to Redis (the job queue, the fine-tune lock, the scheduler's
claims) gets its client from :func:`connect`, with the same timeouts and retry
policy; :func:`uses_redis` is the one test of which deployment this is.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .settings import Settings

__all__ = ["connect", "uses_redis"]


def uses_redis(settings: Settings) -> bool:
    """Whether this deployment has a broker (``ATCON_REDIS_URL``) or is the embedded
    default (API and workers in one process, an in-memory queue)."""
    return settings.redis_url is not None


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
