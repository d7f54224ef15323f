"""``atcon worker KIND``: a queue consumer that keeps its model loaded between jobs.

Run any number of them, on any machine that reaches Redis (``ATCON_REDIS_URL``) and
shares the data directory (``ATCON_DATA_DIR``). SIGTERM or Ctrl-C finishes the job
in hand and stops; a second one stops at once (the job goes to another worker after
the visibility timeout). Each worker also sweeps orphaned staging from ``tmp/``
(:mod:`worker.runtime.tmp_sweep`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading

logger = logging.getLogger(__name__)

KINDS = ("detect", "finetune", "frames", "import")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind",
        choices=KINDS,
        help="which queue to consume (a detect worker also takes frames jobs)",
    )
    parser.add_argument("--name", help="consumer name (default: host-pid-random)")
    parser.add_argument("--max-jobs", type=int, default=None, help="stop after this many jobs")
    parser.add_argument(
        "--burst", action="store_true", help="stop when the queue is empty instead of waiting"
    )
    parser.add_argument(
        "--no-scheduler",
        action="store_true",
        help="finetune: do not run the nightly scheduler in this process",
    )
    parser.add_argument(
        "--healthcheck",
        action="store_true",
        help="check Redis answers, a worker of KIND on this host (or --name) marked itself "
        "alive within three heartbeats, and (detect) the model file exists; exit 0 or 1",
    )


def _healthcheck(kind: str, name: str | None = None) -> int:
    import json

    from models import AtconError
    from worker.queue.factory import open_queue
    from worker.serving.model_cache import ModelCache
    from worker.settings import get_settings
    from worker.storage import open_storage

    settings = get_settings()
    checks: dict[str, str] = {}
    try:
        if settings.embedded:
            raise ValueError("ATCON_REDIS_URL is not set")
        queue = open_queue(settings)
        try:
            queue.ping()
            checks["queue"] = "ok"
            # the worker process itself: it renews its mark every heartbeat, job or not
            mine = [
                c
                for c in queue.alive(kind)
                if (c == name if name else c.startswith(f"{socket.gethostname()}-"))
            ]
        finally:
            queue.close()
        if not mine:
            who = name or f"on host {socket.gethostname()}"
            raise ValueError(f"no {kind} worker {who} marked itself alive recently")
        checks["worker"] = ", ".join(mine)
        if kind == "detect":
            ref = ModelCache(open_storage(settings), settings).reference()
            if not ref.checkpoint.is_file():
                raise ValueError(f"checkpoint {ref.checkpoint} does not exist")
            checks["model"] = "ok"
    except (AtconError, ValueError) as exc:
        checks["error"] = str(exc)
    print(json.dumps(checks))  # noqa: T201 - the command's output
    return 1 if "error" in checks else 0


def run(args: argparse.Namespace) -> int:
    from worker.queue.factory import open_queue
    from worker.runtime.jobs import Worker
    from worker.runtime.metrics import serve_worker_metrics
    from worker.runtime.tmp_sweep import start_tmp_sweeper
    from worker.settings import get_settings
    from worker.storage import open_storage

    if args.healthcheck:
        return _healthcheck(args.kind, args.name)
    settings = get_settings()
    if settings.embedded:
        logger.error(
            "atcon worker needs ATCON_REDIS_URL; without Redis, `atcon serve` runs the "
            "workers in its own process"
        )
        return 2
    storage = open_storage(settings)
    storage.ensure_layout()
    if storage.shared_store:
        storage.check_writable()  # ObjectStoreError naming the bucket, at start
    logger.info("storage: %s", storage.location)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        logger.info("signal %d: finishing the job in hand, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.kind in ("detect", "frames"):
        from worker.runtime.threads import configure_torch_threads

        # process-wide, so chosen here once: the cores the decoder leaves free
        configure_torch_threads(settings.torch_threads)
    worker = Worker(open_queue(settings), storage, settings, args.kind, name=args.name)
    start_tmp_sweeper(storage, settings, stop)
    serve_worker_metrics(settings)
    if args.kind == "finetune" and not args.no_scheduler:
        from worker.finetune.nightly import start_scheduler

        start_scheduler(storage, worker.queue, settings, stop)
    try:
        handled = worker.run(stop, max_jobs=args.max_jobs, burst=args.burst)
    finally:
        worker.queue.close()
    logger.info("worker %s stops after %d job(s)", worker.name, handled)
    return 0
