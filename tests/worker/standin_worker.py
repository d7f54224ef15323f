"""A worker process with a slow stand-in for detection, for the crash test.

``python -m tests.worker.standin_worker NAME STEP_S`` consumes the ``detect`` queue
named by the ``ATCON_*`` environment with the real :class:`worker.runtime.jobs.Worker`
(heartbeats, leases, retries); only the work differs: ten steps of ``STEP_S`` seconds
with progress, then the results published like the real job publishes them. Each
publication appends ``job_id worker`` to ``<data_dir>/publications.log``, so a test
can count how often each job's results were written.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time

from worker.queue.factory import open_queue
from worker.runtime.jobs import JobContext, JobOutcome, Worker
from worker.settings import Settings
from worker.storage import Storage


def main() -> int:
    name, step_s = sys.argv[1], float(sys.argv[2])
    logging.basicConfig(level=logging.INFO, format=f"{name} %(levelname)s %(message)s")

    def slow_detect(ctx: JobContext, video_id: str) -> JobOutcome:
        for step in range(1, 11):
            time.sleep(step_s)
            ctx.progress(step / 10)
        storage = ctx.storage
        staging = storage.staging_dir(video_id)
        out = staging / "results"
        out.mkdir()
        content = {"schema_version": 1, "video_id": video_id, "worker": name, "events": []}
        (out / "events.json").write_text(json.dumps(content))
        storage.publish_results(video_id, out)
        staging.rmdir()
        fd = os.open(storage.root / "publications.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{ctx.job.job_id} {name}\n".encode())
        os.close(fd)
        return JobOutcome({"video_id": video_id, "event_count": 0}, frames=10)

    settings = Settings()
    storage = Storage(settings.data_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker = Worker(
        open_queue(settings), storage, settings, "detect", name=name, function=slow_detect
    )
    worker.run(stop, poll_s=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
