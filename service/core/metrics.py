"""``/metrics`` in the Prometheus text format (version 0.0.4), written by hand.

Every figure is read from the queue and the data directory when scraped, so any API
replica answers for the whole deployment (workers on other machines included).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from worker._exceptions import QueueError
from worker.queue import DURATION_BUCKETS, JobQueue, JobState

__all__ = ["CONTENT_TYPE", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.name = name

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.lines.append(f"{self.name}{suffix}{_labels(**labels)} {_number(value)}")


def render_metrics(queue: JobQueue, kinds: Iterable[str], model_version: str | None) -> str:
    up = _Family("atcon_queue_up", "gauge", "1 when the job queue answers.")
    depth = _Family("atcon_queue_depth", "gauge", "Jobs waiting for a worker, per queue.")
    jobs = _Family("atcon_jobs", "gauge", "Jobs known to the queue, by queue and status.")
    duration = _Family("atcon_job_duration_seconds", "histogram", "Wall time of successful jobs.")
    frames = _Family("atcon_frames_total", "counter", "Video frames processed by finished jobs.")
    fps = _Family(
        "atcon_frames_per_second",
        "gauge",
        "Frames processed per second of job time, over all finished jobs.",
    )
    model = _Family("atcon_active_model_info", "gauge", "The model version served (label).")
    families = [up, depth, jobs, duration, frames, fps, model]
    try:
        queue.ping()
        up.add(1)
        for kind in kinds:
            counts = queue.counts(kind)
            depth.add(counts[JobState.queued], queue=kind)
            for state in JobState:
                jobs.add(counts[state], queue=kind, status=state.value)
            stats = queue.stats(kind)
            for bound in DURATION_BUCKETS:
                duration.add(stats.buckets.get(bound, 0), "_bucket", queue=kind, le=str(bound))
            duration.add(stats.duration_count, "_bucket", queue=kind, le="+Inf")
            duration.add(stats.duration_sum, "_sum", queue=kind)
            duration.add(stats.duration_count, "_count", queue=kind)
            frames.add(stats.frames_total, queue=kind)
            rate = stats.frames_total / stats.duration_sum if stats.duration_sum > 0 else 0.0
            fps.add(round(rate, 3), queue=kind)
    except QueueError:
        up.lines = up.lines[:2]
        up.add(0)
    if model_version is not None:
        model.add(1, version=model_version)
    return "\n".join(line for family in families for line in family.lines) + "\n"
