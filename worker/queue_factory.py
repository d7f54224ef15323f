"""Opening the deployment's queue: Redis Streams when ``ATCON_REDIS_URL`` is set, else
a new in-memory queue.

Apart from :mod:`worker.queue` (the interface, which knows neither implementation) so
that the interface and its implementations import each other in one direction only.
"""

from __future__ import annotations

from .memory_queue import MemoryQueue
from .queue import JobQueue
from .redis_queue import RedisQueue
from .settings import Settings

__all__ = ["open_queue"]


def open_queue(settings: Settings) -> JobQueue:
    """A Redis queue when ``settings.redis_url`` is set, else a new in-memory queue.

    The in-memory queue lives in the calling process; whoever opens it (the embedded
    ``atcon serve``) shares it between its API and its worker threads.
    """
    if not settings.embedded:
        return RedisQueue(settings)
    return MemoryQueue(settings)
