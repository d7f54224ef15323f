"""What the workers measure, through ``prometheus_client``: the detect job's stages.

``atcon_detect_stage_seconds{stage}`` is a histogram of the seconds each detection
spent per stage:

* ``decode``: the decoder thread busy decoding and resizing sampled frames (it
  overlaps ``score``: the two add up to more than the wall time when both are busy);
* ``score``: normalising batches and running the scoring model;
* ``maps``: Grad-CAM, Guided Backprop and consistency of each event's peak frame,
  rendered to PNG;
* ``publish``: writing ``scores.npz`` and ``events.json`` and renaming the folder into
  ``results/``.

How the figures leave the process (see ``docs/architecture.md``, Metrics):

* in ``atcon serve``'s embedded workers they share the API's registry, so ``/metrics``
  shows them;
* a worker process on another machine serves its own registry on
  ``ATCON_METRICS_PORT`` (off by default) for Prometheus to scrape;
* a worker on the API's machine may instead share ``PROMETHEUS_MULTIPROC_DIR`` with
  the API, whose ``/metrics`` then adds up every process that writes there.

No torch here: the API imports this module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import Histogram, start_http_server

from ..settings import Settings

__all__ = ["DETECT_STAGES", "STAGE_SECONDS", "observe_detect_stages", "serve_worker_metrics"]

logger = logging.getLogger(__name__)

DETECT_STAGES = ("decode", "score", "maps", "publish")

#: from a short clip's maps (tens of milliseconds) to an hour-long video's decode
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

STAGE_SECONDS = Histogram(
    "atcon_detect_stage_seconds",
    "Seconds one detection spent in each stage (decode overlaps score).",
    ["stage"],
    buckets=STAGE_BUCKETS,
)


def _seconds(timings: Mapping[str, Any], *names: str) -> float:
    return float(sum(float(timings.get(name) or 0.0) for name in names))


def observe_detect_stages(timings: Mapping[str, Any], publish_s: float) -> dict[str, float]:
    """Record one detection's stages from its ``events.json`` ``timings_s`` block.

    ``publish_s`` is the time the job spent moving the results into place after the
    detector returned (the detector's own ``write`` time is added to it). Returns the
    seconds recorded per stage.
    """
    if publish_s < 0:
        raise ValueError(f"publish_s must not be negative, got {publish_s}")
    stages = {
        "decode": _seconds(timings, "decode_busy"),
        "score": _seconds(timings, "preprocess", "model"),
        "maps": _seconds(timings, "maps"),
        "publish": _seconds(timings, "write") + publish_s,
    }
    for stage, seconds in stages.items():
        STAGE_SECONDS.labels(stage=stage).observe(seconds)
    return stages


def serve_worker_metrics(settings: Settings) -> int | None:
    """Serve this process's metrics on ``ATCON_METRICS_PORT`` when it is set.

    Returns the port served, or None when the setting is off. The endpoint carries
    timings and counts only (no patient data, no ids) and has no authentication:
    bind it to an address only the scraper reaches (``ATCON_METRICS_HOST``).
    """
    if settings.metrics_port is None:
        return None
    server, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_host)
    port = int(server.server_port)
    logger.info("worker metrics on http://%s:%d/metrics", settings.metrics_host, port)
    return port
