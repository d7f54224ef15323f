"""The job queue: the interface, its in-memory and Redis Streams implementations,
opening the configured one, the Redis connection, locks, and the retention of job
records.

Each module's public names are re-exported here and imported on first use
(PEP 562), so importing one module of this package never imports the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .factory import (
        open_queue,
    )
    from .interface import (
        DURATION_BUCKETS,
        Backlog,
        Job,
        JobNotFoundError,
        JobQueue,
        JobState,
        JobStats,
        Lease,
        QueueError,
        QueueUnavailableError,
    )
    from .locks import (
        HeldLock,
        LocalLock,
        RedisLock,
        held,
    )
    from .memory import (
        MemoryQueue,
    )
    from .redis_streams import (
        GROUP,
        RedisQueue,
    )
    from .retention import (
        archive_job,
        archived_job,
        find_job,
        list_jobs,
        prune_jobs,
    )

__all__ = [
    "DURATION_BUCKETS",
    "GROUP",
    "Backlog",
    "HeldLock",
    "Job",
    "JobNotFoundError",
    "JobQueue",
    "JobState",
    "JobStats",
    "Lease",
    "LocalLock",
    "MemoryQueue",
    "QueueError",
    "QueueUnavailableError",
    "RedisLock",
    "RedisQueue",
    "archive_job",
    "archived_job",
    "find_job",
    "held",
    "list_jobs",
    "open_queue",
    "prune_jobs",
]

#: public name -> the module that defines it
_MODULES = {
    "Backlog": "interface",
    "DURATION_BUCKETS": "interface",
    "GROUP": "redis_streams",
    "HeldLock": "locks",
    "Job": "interface",
    "JobNotFoundError": "interface",
    "JobQueue": "interface",
    "JobState": "interface",
    "JobStats": "interface",
    "Lease": "interface",
    "LocalLock": "locks",
    "MemoryQueue": "memory",
    "QueueError": "interface",
    "QueueUnavailableError": "interface",
    "RedisLock": "locks",
    "RedisQueue": "redis_streams",
    "archive_job": "retention",
    "archived_job": "retention",
    "find_job": "retention",
    "held": "locks",
    "list_jobs": "retention",
    "open_queue": "factory",
    "prune_jobs": "retention",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, __all__)
