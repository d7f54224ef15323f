"""The deployment broker: the job queue on plain Redis Streams with a consumer group.

Why plain Redis rather than a library, against what the queue must do here:

* **Workers keep a model loaded and must survive a dead peer.** rq forks a process
  per job (the model would be reloaded, and CUDA does not survive ``fork``); its
  no-fork worker has no heartbeats, so a job held by a killed worker stays
  "started" until a janitor guesses. Celery survives a dead worker only with late
  acknowledgement plus a broker visibility timeout, its prefork pool breaks CUDA,
  and its Redis transport re-delivers by polling a sorted set without heartbeats,
  so a job longer than the timeout runs twice at once.
* **Streams give the primitives directly.** ``XREADGROUP`` hands each entry to one
  consumer and records it in the group's pending list (PEL) with that consumer's
  name and an idle time. A worker's heartbeat is ``XCLAIM <own entry> 0 JUSTID``,
  which resets the idle time without a delivery. When a worker dies its entries
  stop being claimed; any other worker's ``XAUTOCLAIM`` with ``min-idle-time`` =
  the visibility timeout takes them over. Nothing needs a janitor process or a
  clock shared between machines: idle times are the server's.
* **State changes are atomic Lua scripts** over the job hash, the per-state id
  sets, the stream and the delay set, so a crash between two commands cannot leave
  a job both done and queued. Timestamps come from the server's ``TIME``.

Keys, for prefix ``p`` (``ATCON_QUEUE_PREFIX``) and kind ``k``::

    p:job:<id>           hash: kind, payload, status, progress, error, attempts, times,
                         result, worker, lease (the current delivery), entry (stream id)
    p:stream:k           stream of {"job_id": id}; consumer group "workers"
    p:jobs:k:<state>     set of job ids in each JobState (counts, /metrics)
    p:delayed:k          sorted set: job id -> time its retry is due
    p:dead:k             list of failed job ids (dead letters), newest first
    p:stats:k            hash: duration sum/count, histogram buckets, frames

A lease token is ``consumer/entry/attempt``; ``complete``, ``fail``, ``set_progress``
and ``heartbeat`` check it, so a worker that lost its job (stalled past the
timeout) cannot ack the entry the new holder depends on nor overwrite its state.
Retries wait in ``p:delayed:k``; every ``reserve`` first moves due ones back into
the stream. Requires Redis 6.2 or newer (``XAUTOCLAIM``); Redis Cluster is not
supported (scripts touch keys of one job and one kind that are not hash-tagged).
Run Redis with ``appendonly yes`` so queued jobs survive its restart; the data
directory can rebuild the queue if they do not (:mod:`worker.runtime.reconcile`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis

from .._exceptions import JobNotFoundError, QueueError, QueueUnavailableError
from ..settings import Settings
from ..storage import new_id
from .connect import connect
from .interface import DURATION_BUCKETS, Backlog, Job, JobQueue, JobState, JobStats, Lease

__all__ = ["GROUP", "RedisQueue"]

logger = logging.getLogger(__name__)

GROUP = "workers"
_STATES = tuple(s.value for s in JobState)

_PRELUDE = """
local prefix, kind, job_id = ARGV[1], ARGV[2], ARGV[3]
local jkey = prefix .. ':job:' .. job_id
local stream = prefix .. ':stream:' .. kind
local delayed = prefix .. ':delayed:' .. kind
local dead = prefix .. ':dead:' .. kind
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function move(to)
  for _, s in ipairs({'queued', 'running', 'done', 'failed'}) do
    redis.call('SREM', prefix .. ':jobs:' .. kind .. ':' .. s, job_id)
  end
  if to then redis.call('SADD', prefix .. ':jobs:' .. kind .. ':' .. to, job_id) end
end
local function drop(entry)
  redis.call('XACK', stream, 'workers', entry)
  redis.call('XDEL', stream, entry)
end
"""

# ARGV: prefix kind job_id payload
_ENQUEUE = """
if redis.call('EXISTS', jkey) == 1 then return 0 end
redis.call('HSET', jkey, 'job_id', job_id, 'kind', kind, 'payload', ARGV[4],
  'status', 'queued', 'progress', '0', 'attempts', '0', 'created_at', now())
move('queued')
redis.call('XADD', stream, '*', 'job_id', job_id)
return 1
"""

# ARGV: prefix kind job_id consumer entry max_attempts
_START = """
local consumer, entry, max_attempts = ARGV[4], ARGV[5], tonumber(ARGV[6])
if redis.call('EXISTS', jkey) == 0 then drop(entry); return {'gone'} end
local status = redis.call('HGET', jkey, 'status')
if status == 'done' or status == 'failed' then drop(entry); return {'finished'} end
local cancelled = redis.call('HGET', jkey, 'cancel')
if cancelled then
  redis.call('HSET', jkey, 'status', 'failed', 'error', cancelled, 'finished_at', now())
  redis.call('HDEL', jkey, 'lease')
  move('failed')
  redis.call('LPUSH', dead, job_id)
  drop(entry)
  return {'finished'}
end
local attempts = tonumber(redis.call('HGET', jkey, 'attempts'))
if status == 'running' then
  local previous = redis.call('HGET', jkey, 'worker') or '?'
  redis.call('HSET', jkey, 'error', 'attempt ' .. attempts .. ' stopped: its worker ' ..
    previous .. ' sent no heartbeat within the visibility timeout (killed, out of memory, ' ..
    'or power lost)')
end
local t = now()
if attempts >= max_attempts then
  redis.call('HSET', jkey, 'status', 'failed', 'finished_at', t)
  redis.call('HDEL', jkey, 'lease')
  move('failed')
  redis.call('LPUSH', dead, job_id)
  drop(entry)
  return {'dead'}
end
attempts = redis.call('HINCRBY', jkey, 'attempts', 1)
local lease = consumer .. '/' .. entry .. '/' .. attempts
redis.call('HSET', jkey, 'status', 'running', 'started_at', t, 'worker', consumer,
  'lease', lease, 'entry', entry, 'progress', '0', 'heartbeat_at', t)
move('running')
return {'ok', lease}
"""

# ARGV: prefix kind job_id consumer entry lease
_HEARTBEAT = """
if redis.call('HGET', jkey, 'lease') ~= ARGV[6] then return 0 end
local pending = redis.call('XPENDING', stream, 'workers', ARGV[5], ARGV[5], 1, ARGV[4])
if #pending == 0 then return 0 end
redis.call('XCLAIM', stream, 'workers', ARGV[4], 0, ARGV[5], 'JUSTID')
redis.call('HSET', jkey, 'heartbeat_at', now())
return 1
"""

# ARGV: prefix kind job_id lease fraction detail
_PROGRESS = """
if redis.call('HGET', jkey, 'lease') ~= ARGV[4] then return 0 end
redis.call('HSET', jkey, 'progress', ARGV[5], 'detail', ARGV[6])
return 1
"""

# ARGV: prefix kind job_id lease entry result frames bucket...
_COMPLETE = """
local entry = ARGV[5]
if redis.call('EXISTS', jkey) == 0 then drop(entry); return 0 end
if redis.call('HGET', jkey, 'lease') ~= ARGV[4] then return 0 end
local t = now()
local started = tonumber(redis.call('HGET', jkey, 'started_at')) or t
local took = math.max(0, t - started)
redis.call('HSET', jkey, 'status', 'done', 'progress', '1', 'finished_at', t, 'result', ARGV[6])
redis.call('HDEL', jkey, 'lease', 'error')
move('done')
drop(entry)
local stats = prefix .. ':stats:' .. kind
redis.call('HINCRBYFLOAT', stats, 'duration_sum', took)
redis.call('HINCRBY', stats, 'duration_count', 1)
redis.call('HINCRBY', stats, 'frames_total', ARGV[7])
for i = 8, #ARGV do
  if took <= tonumber(ARGV[i]) then redis.call('HINCRBY', stats, 'le:' .. ARGV[i], 1) end
end
return 1
"""

# ARGV: prefix kind job_id lease entry error retry max_attempts base cap
_FAIL = """
local entry = ARGV[5]
if redis.call('EXISTS', jkey) == 0 then drop(entry); return 'gone' end
if redis.call('HGET', jkey, 'lease') ~= ARGV[4] then return 'lost' end
drop(entry)
local attempts = tonumber(redis.call('HGET', jkey, 'attempts'))
local t = now()
redis.call('HDEL', jkey, 'lease')
if ARGV[7] == '1' and attempts < tonumber(ARGV[8]) then
  local delay = math.min(tonumber(ARGV[10]), tonumber(ARGV[9]) * 2 ^ (attempts - 1))
  redis.call('HSET', jkey, 'status', 'queued', 'error', ARGV[6], 'progress', '0')
  move('queued')
  redis.call('ZADD', delayed, t + delay, job_id)
  return 'queued'
end
redis.call('HSET', jkey, 'status', 'failed', 'error', ARGV[6], 'finished_at', t)
move('failed')
redis.call('LPUSH', dead, job_id)
return 'failed'
"""

# ARGV: prefix kind - limit
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now(), 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(due) do
  redis.call('ZREM', delayed, id)
  if redis.call('HGET', prefix .. ':job:' .. id, 'status') == 'queued' then
    redis.call('XADD', stream, '*', 'job_id', id)
  end
end
return #due
"""

# ARGV: prefix kind job_id
_REQUEUE = """
local status = redis.call('HGET', jkey, 'status')
if not status then return 'missing' end
if status ~= 'failed' then return status end
redis.call('LREM', dead, 0, job_id)
redis.call('HSET', jkey, 'status', 'queued', 'attempts', '0', 'progress', '0')
redis.call('HDEL', jkey, 'error', 'started_at', 'finished_at', 'lease', 'result', 'worker',
  'cancel')
move('queued')
redis.call('XADD', stream, '*', 'job_id', job_id)
return 'queued'
"""

# ARGV: prefix kind job_id reason
_CANCEL = """
local status = redis.call('HGET', jkey, 'status')
if not status then return 'missing' end
if status == 'done' or status == 'failed' then return status end
if status == 'queued' then
  redis.call('HSET', jkey, 'status', 'failed', 'error', ARGV[4], 'finished_at', now())
  redis.call('ZREM', delayed, job_id)
  move('failed')
  redis.call('LPUSH', dead, job_id)
  return 'stopped'
end
redis.call('HSET', jkey, 'cancel', ARGV[4])
return 'running'
"""

# ARGV: prefix kind job_id
_DELETE = """
redis.call('DEL', jkey)
move(nil)
redis.call('ZREM', delayed, job_id)
redis.call('LREM', dead, 0, job_id)
return 1
"""


class RedisQueue(JobQueue):
    """:class:`~worker.queue.interface.JobQueue` on Redis Streams; see the module docstring."""

    def __init__(self, settings: Settings, *, client: redis.Redis | None = None) -> None:
        super().__init__(settings)
        if client is None:
            if settings.redis_url is None:
                raise ValueError("settings.redis_url must be set for a RedisQueue")
            client = connect(settings)
        # decode_responses=True: replies are str, which redis-py's annotations cannot express
        self.client: Any = client
        self.prefix = settings.queue_prefix
        self._groups: set[str] = set()
        self._autoclaim_cursor: dict[str, str] = {}
        self._last_prune = 0.0
        scripts = {
            "enqueue": _ENQUEUE,
            "start": _START,
            "heartbeat": _HEARTBEAT,
            "progress": _PROGRESS,
            "complete": _COMPLETE,
            "fail": _FAIL,
            "promote": _PROMOTE,
            "requeue": _REQUEUE,
            "cancel": _CANCEL,
            "delete": _DELETE,
        }
        self._scripts = {
            name: client.register_script(_PRELUDE + body) for name, body in scripts.items()
        }

    # -- plumbing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            where = self.settings.redis_url or "?"
            host = where.split("@")[-1]  # never log a password
            raise QueueUnavailableError(
                f"the job queue (Redis at {host}) cannot be reached: {exc}"
            ) from exc
        except redis.RedisError as exc:
            raise QueueError(f"the job queue refused an operation: {exc}") from exc

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _run(self, name: str, kind: str, job_id: str, *args: Any) -> Any:
        with self._errors():
            return self._scripts[name](args=[self.prefix, kind, job_id, *args])

    def _ensure_group(self, kind: str, *, force: bool = False) -> None:
        if kind in self._groups and not force:
            return
        with self._errors():
            try:
                self.client.xgroup_create(self._key("stream", kind), GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups.add(kind)

    def _job_from_hash(self, data: Mapping[str, str]) -> Job:
        def number(name: str) -> float | None:
            value = data.get(name)
            return float(value) if value not in (None, "") else None

        result = data.get("result")
        detail = data.get("detail")
        return Job(
            job_id=data["job_id"],
            kind=data["kind"],
            payload=json.loads(data.get("payload") or "{}"),
            status=JobState(data["status"]),
            progress=float(data.get("progress") or 0.0),
            error=data.get("error") or None,
            created_at=float(data.get("created_at") or 0.0),
            started_at=number("started_at"),
            finished_at=number("finished_at"),
            attempts=int(data.get("attempts") or 0),
            result=json.loads(result) if result else None,
            worker=data.get("worker") or None,
            detail=json.loads(detail) if detail else None,
            cancel=data.get("cancel") or None,
        )

    # -- the interface ------------------------------------------------------------------------

    def enqueue(self, kind: str, payload: Mapping[str, Any], *, job_id: str | None = None) -> Job:
        job_id = job_id or new_id()
        self._ensure_group(kind)
        if not self._run("enqueue", kind, job_id, json.dumps(dict(payload))):
            raise QueueError(f"job {job_id} exists already")
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        with self._errors():
            data = self.client.hgetall(self._key("job", job_id))
        if not data:
            raise JobNotFoundError(f"no job {job_id}")
        return self._job_from_hash(data)

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(self._key("job", job_id))
            rows = pipe.execute()
        return {row["job_id"]: self._job_from_hash(row) for row in rows if row}

    def finished(self, kind: str) -> list[Job]:
        with self._errors():
            ids = self.client.sunion(
                [self._key("jobs", kind, s.value) for s in (JobState.done, JobState.failed)]
            )
        return list(self.get_many(sorted(ids)).values())

    def jobs(self, kind: str, limit: int = 50) -> list[Job]:
        """Every job of ``kind`` is in one of its per-state sets; read them all, sort by
        creation time. Fine for the tens to thousands of jobs a kind like ``finetune``
        accumulates; the sets are never scanned on a hot path."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._errors():
            ids = self.client.sunion([self._key("jobs", kind, s.value) for s in JobState])
        found = list(self.get_many(sorted(ids)).values())
        found.sort(key=lambda job: (job.created_at, job.job_id), reverse=True)
        return found[:limit]

    def _start(self, kind: str, consumer: str, entry: str, job_id: str) -> Lease | None:
        outcome = self._run("start", kind, job_id, consumer, entry, self.settings.max_attempts)
        if outcome[0] != "ok":
            logger.info("job %s not started: %s", job_id, outcome[0])
            return None
        return Lease(self.get(job_id), consumer, outcome[1])

    def _promote(self, kind: str) -> None:
        moved = self._run("promote", kind, "-", 100)
        if moved:
            logger.info("%d %s job(s) back from their retry delay", moved, kind)

    def _autoclaim(self, kind: str, consumer: str) -> Lease | None:
        stream = self._key("stream", kind)
        min_idle_ms = int(self.settings.visibility_timeout_s * 1000)
        cursor = self._autoclaim_cursor.get(kind, "0-0")
        with self._errors():
            reply = self.client.xautoclaim(stream, GROUP, consumer, min_idle_ms, cursor, count=1)
        self._autoclaim_cursor[kind] = reply[0]
        for entry, fields in reply[1]:
            if fields is None:  # deleted while pending
                continue
            logger.warning(
                "taking over job %s (entry %s): its worker went silent", fields.get("job_id"), entry
            )
            lease = self._start(kind, consumer, entry, fields["job_id"])
            if lease is not None:
                return lease
        return None

    def _prune_consumers(self, kind: str) -> None:
        """Forget consumers of dead workers that hold nothing (they pile up otherwise)."""
        now = time.monotonic()
        if now - self._last_prune < 600:
            return
        self._last_prune = now
        idle_ms = int(max(3600.0, 10 * self.settings.visibility_timeout_s) * 1000)
        stream = self._key("stream", kind)
        with self._errors():
            for info in self.client.xinfo_consumers(stream, GROUP):
                if info["pending"] == 0 and info["idle"] > idle_ms:
                    self.client.xgroup_delconsumer(stream, GROUP, info["name"])

    def reserve(self, kind: str, consumer: str, timeout_s: float) -> Lease | None:
        self._ensure_group(kind)
        try:
            return self._reserve(kind, consumer, timeout_s)
        except QueueError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ensure_group(kind, force=True)  # the stream was removed under us
            return None

    def _reserve(self, kind: str, consumer: str, timeout_s: float) -> Lease | None:
        deadline = time.monotonic() + timeout_s
        self._promote(kind)
        self._prune_consumers(kind)
        lease = self._autoclaim(kind, consumer)
        if lease is not None:
            return lease
        stream = self._key("stream", kind)
        while True:
            block_ms = max(1, int((deadline - time.monotonic()) * 1000))
            with self._errors():
                reply = self.client.xreadgroup(
                    GROUP, consumer, {stream: ">"}, count=1, block=block_ms
                )
            for _stream, entries in reply or []:
                for entry, fields in entries:
                    lease = self._start(kind, consumer, entry, fields["job_id"])
                    if lease is not None:
                        return lease
            if time.monotonic() >= deadline:
                return None

    def heartbeat(self, lease: Lease) -> bool:
        entry = lease.token.split("/")[1]
        return bool(
            self._run("heartbeat", lease.job.kind, lease.job_id, lease.consumer, entry, lease.token)
        )

    def set_progress(
        self, lease: Lease, fraction: float, detail: Mapping[str, Any] | None = None
    ) -> bool:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        encoded = json.dumps(dict(detail)) if detail else ""
        return bool(
            self._run(
                "progress", lease.job.kind, lease.job_id, lease.token, f"{fraction:.4f}", encoded
            )
        )

    def complete(
        self, lease: Lease, result: Mapping[str, Any] | None = None, *, frames: int = 0
    ) -> bool:
        entry = lease.token.split("/")[1]
        done = self._run(
            "complete",
            lease.job.kind,
            lease.job_id,
            lease.token,
            entry,
            json.dumps(dict(result or {})),
            int(frames),
            *DURATION_BUCKETS,
        )
        return bool(done)

    def fail(self, lease: Lease, error: str, *, retry: bool = True) -> JobState | None:
        entry = lease.token.split("/")[1]
        outcome = self._run(
            "fail",
            lease.job.kind,
            lease.job_id,
            lease.token,
            entry,
            error,
            "1" if retry else "0",
            self.settings.max_attempts,
            self.settings.retry_backoff_s,
            self.settings.retry_backoff_max_s,
        )
        return JobState(outcome) if outcome in _STATES else None

    def dead_letters(self, kind: str) -> list[Job]:
        with self._errors():
            ids = self.client.lrange(self._key("dead", kind), 0, -1)
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self._key("job", job_id))
            rows = pipe.execute()
        return [self._job_from_hash(row) for row in rows if row]

    def requeue(self, job_id: str) -> Job:
        job = self.get(job_id)
        self._ensure_group(job.kind)
        outcome = self._run("requeue", job.kind, job_id)
        if outcome == "missing":
            raise JobNotFoundError(f"no job {job_id}")
        if outcome != "queued":
            raise QueueError(f"job {job_id} is {outcome}; only a failed job can be requeued")
        return self.get(job_id)

    def cancel(self, job_id: str, reason: str) -> JobState:
        job = self.get(job_id)
        outcome = self._run("cancel", job.kind, job_id, reason)
        if outcome == "missing":
            raise JobNotFoundError(f"no job {job_id}")
        if outcome == "stopped":
            return JobState.failed
        if outcome == "running":
            return JobState.running
        raise QueueError(f"job {job_id} is {outcome} already; nothing to cancel")

    def cancel_requested(self, job_id: str) -> str | None:
        with self._errors():
            value = self.client.hget(self._key("job", job_id), "cancel")
        return str(value) if value else None

    def delete(self, job_id: str) -> None:
        try:
            job = self.get(job_id)
        except JobNotFoundError:
            return
        self._run("delete", job.kind, job_id)

    def counts(self, kind: str) -> dict[JobState, int]:
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for state in JobState:
                pipe.scard(self._key("jobs", kind, state.value))
            values = pipe.execute()
        return {state: int(v) for state, v in zip(JobState, values, strict=True)}

    def stats(self, kind: str) -> JobStats:
        with self._errors():
            data = self.client.hgetall(self._key("stats", kind))
        buckets = {b: int(data.get(f"le:{b}", 0)) for b in DURATION_BUCKETS}
        return JobStats(
            duration_sum=float(data.get("duration_sum", 0.0)),
            duration_count=int(data.get("duration_count", 0)),
            buckets=buckets,
            frames_total=int(data.get("frames_total", 0)),
        )

    def backlog(self, kind: str) -> Backlog:
        """Read from the stream: the group's lag (``XINFO GROUPS``; entries never
        delivered), its pending entries (``XPENDING``), and the age of the oldest
        entry after the group's last delivered one (by its id, against the server's
        clock). Finished jobs' entries are deleted, so the stream holds exactly the
        waiting and the pending ones; that is the fallback when Redis cannot tell the
        lag (before 7.0, or after a deletion it cannot count past)."""
        stream = self._key("stream", kind)
        with self._errors():
            groups = self.client.xinfo_groups(stream) if self.client.exists(stream) else []
            group = next((g for g in groups if g.get("name") == GROUP), None)
            if group is None:
                return Backlog(waiting=0, pending=0)
            pending = int(self.client.xpending(stream, GROUP)["pending"])
            lag = group.get("lag")
            waiting = int(lag) if lag is not None else max(0, self.client.xlen(stream) - pending)
            oldest = self.client.xrange(stream, f"({group['last-delivered-id']}", "+", count=1)
            seconds, micros = self.client.time()
        oldest_wait_s = None
        if oldest:
            added_ms = int(str(oldest[0][0]).split("-")[0])
            oldest_wait_s = max(0.0, seconds + micros / 1e6 - added_ms / 1000)
        return Backlog(waiting=waiting, pending=pending, oldest_wait_s=oldest_wait_s)

    def running(self, kind: str) -> list[Job]:
        with self._errors():
            ids = self.client.smembers(self._key("jobs", kind, JobState.running.value))
        return [
            job for job in self.get_many(sorted(ids)).values() if job.status is JobState.running
        ]

    def ping(self) -> None:
        with self._errors():
            self.client.ping()

    def mark_alive(self, kind: str, consumer: str, ttl_s: float) -> None:
        """``<prefix>:alive:<kind>:<consumer>`` set for ``ttl_s`` (see the interface)."""
        with self._errors():
            self.client.set(
                self._key("alive", kind, consumer), str(time.time()), px=max(1, int(ttl_s * 1000))
            )

    def alive(self, kind: str) -> list[str]:
        prefix = self._key("alive", kind, "")
        with self._errors():
            keys = list(self.client.scan_iter(match=prefix + "*", count=500))
        return sorted(key[len(prefix) :] for key in keys)

    def close(self) -> None:
        self.client.close()
