"""Opening the deployment's queue: Redis Streams when ``ATCON_REDIS_URL`` is set, else
a new in-memory queue.

Apart from :mod:`worker.queue.interface` (the interface, which knows neither implementation) so
that the interface and its implementations import each other in one direction only.
"""

from __future__ import annotations

from ..settings import Settings
from .interface import JobQueue
from .memory import MemoryQueue
from .redis_streams import RedisQueue

__all__ = ["open_queue"]


def open_queue(settings: Settings) -> JobQueue:
    """A Redis queue when ``settings.redis_url`` is set, else a new in-memory queue.

    The in-memory queue lives in the calling process; whoever opens it (the embedded
    ``atcon serve``) shares it between its API and its worker threads.
    """
    if not settings.embedded:
        return RedisQueue(settings)
    return MemoryQueue(settings)
