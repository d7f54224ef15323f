"""``/metrics`` through ``prometheus_client``.

Two sources make one exposition:

* :class:`QueueCollector` reads the queue and the served model *when scraped*, so any
  API replica answers for the whole deployment (workers on other machines included):
  queue health and depth, jobs per state, job durations, frames, the stream backlog
  per kind (queue lag), and the progress of running fine-tunes;
* the process's own metrics: HTTP requests by route (:class:`RequestMetrics`) and the
  detect stages of the embedded workers (:mod:`worker.runtime.metrics`). With
  ``PROMETHEUS_MULTIPROC_DIR`` set (``atcon serve --workers N``, or ``atcon worker``
  processes on the same machine writing there) they come from that directory, added
  up over every process by
  :class:`prometheus_client.multiprocess.MultiProcessCollector`.

The figures read from the queue are computed on each scrape, not kept in process
memory: several API processes would otherwise each hold a part.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from worker import QueueError
from worker.queue.interface import DURATION_BUCKETS, JobQueue, JobState

__all__ = ["QueueCollector", "RequestMetrics", "metrics_registry", "render_metrics"]

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: the label of requests no route answered (404s, static files)
UNROUTED = "other"

HTTP_REQUESTS = Counter(
    "atcon_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "atcon_http_request_seconds",
    "Seconds from a request's arrival to the end of its response, by method and route.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request by its route's template
    (``/v1/videos/{video_id}``, never the path itself, so ids add no series)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]  # what an exception escaping the app becomes

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNROUTED
            method = str(scope.get("method", "?"))
            HTTP_REQUESTS.labels(method, route, str(status[0])).inc()
            HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)


class QueueCollector(Collector):
    """The deployment's figures, read from the queue on every scrape."""

    def __init__(
        self,
        queue: JobQueue,
        kinds: Sequence[str],
        model_version: Callable[[], str | None],
    ) -> None:
        self.queue = queue
        self.kinds = tuple(kinds)
        self.model_version = model_version

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("atcon_queue_up", "1 when the job queue answers.")
        families = self._queue_families()
        up.add_metric([], 0 if families is None else 1)
        yield up
        yield from families or []
        version = self.model_version()
        if version is not None:
            model = InfoMetricFamily("atcon_active_model", "The model version served (label).")
            model.add_metric([], {"version": version})
            yield model

    def _queue_families(self) -> list[Metric] | None:
        depth = GaugeMetricFamily(
            "atcon_queue_depth",
            "Jobs waiting for a worker, per queue (retries waiting for their delay included).",
            labels=["queue"],
        )
        jobs = GaugeMetricFamily(
            "atcon_jobs",
            "Jobs known to the queue, by queue and status.",
            labels=["queue", "status"],
        )
        duration = HistogramMetricFamily(
            "atcon_job_duration_seconds", "Wall time of successful jobs.", labels=["queue"]
        )
        frames = CounterMetricFamily(
            "atcon_frames", "Video frames processed by finished jobs.", labels=["queue"]
        )
        fps = GaugeMetricFamily(
            "atcon_frames_per_second",
            "Frames processed per second of job time, over all finished jobs.",
            labels=["queue"],
        )
        lag = GaugeMetricFamily(
            "atcon_queue_lag",
            "Jobs in the queue's stream that no worker was handed yet (consumer-group lag).",
            labels=["queue"],
        )
        pending = GaugeMetricFamily(
            "atcon_queue_pending",
            "Jobs handed to a worker and not finished (the stream's pending entries).",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "atcon_queue_oldest_wait_seconds",
            "How long the oldest job no worker was handed yet has waited (0 when none waits).",
            labels=["queue"],
        )
        progress = GaugeMetricFamily(
            "atcon_finetune_progress",
            "Fraction done of each running fine-tune (0 to 1), by job and phase.",
            labels=["job_id", "phase"],
        )
        try:
            self.queue.ping()
            for kind in self.kinds:
                counts = self.queue.counts(kind)
                depth.add_metric([kind], counts[JobState.queued])
                for state in JobState:
                    jobs.add_metric([kind, state.value], counts[state])
                stats = self.queue.stats(kind)
                buckets = [(str(b), stats.buckets.get(b, 0)) for b in DURATION_BUCKETS]
                buckets.append(("+Inf", stats.duration_count))
                duration.add_metric([kind], buckets, sum_value=stats.duration_sum)
                frames.add_metric([kind], stats.frames_total)
                rate = stats.frames_total / stats.duration_sum if stats.duration_sum > 0 else 0.0
                fps.add_metric([kind], round(rate, 3))
                backlog = self.queue.backlog(kind)
                lag.add_metric([kind], backlog.waiting)
                pending.add_metric([kind], backlog.pending)
                oldest.add_metric([kind], backlog.oldest_wait_s or 0.0)
            if "finetune" in self.kinds:
                for job in self.queue.running("finetune"):
                    phase = str((job.detail or {}).get("phase", "training"))
                    progress.add_metric([job.job_id, phase], job.progress)
        except QueueError as exc:
            logger.warning("metrics without the queue: %s", exc)
            return None
        return [depth, jobs, duration, frames, fps, lag, pending, oldest, progress]


class _ProcessMetrics(Collector):
    """This process's own metrics, or every process's through the multiprocess directory."""

    def __init__(self) -> None:
        self._source: Collector = REGISTRY
        directory = os.environ.get(MULTIPROC_ENV)
        if directory:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)
            self._source = registry

    def collect(self) -> Iterable[Metric]:
        return self._source.collect()


def metrics_registry(
    queue: JobQueue, kinds: Sequence[str], model_version: Callable[[], str | None]
) -> CollectorRegistry:
    """One app's registry: the queue's figures and the process (or processes) metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(queue, kinds, model_version))
    registry.register(_ProcessMetrics())
    return registry


def render_metrics(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition in the format ``accept`` asks for (OpenMetrics or text), and its type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
