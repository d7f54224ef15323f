"""Redis losing its data under a running API and worker (a real Redis, flushed): the
API notices within ``ATCON_RECONCILE_INTERVAL_S`` that an upload without results has
lost its job, queues it again under the same id, and the worker finishes it once."""

from __future__ import annotations

import httpx
import pytest
import redis

from tests import media
from tests.processes import Process, Server, wait_for
from tests.redis_helpers import DB_E2E, flushed_db
from worker.settings import Role

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_jobs_lost_by_redis_are_queued_again(tmp_path, token_setting, tokens):
    from .test_health import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "model.pt", arch="resnet18", thresholds=[0.01, 0.01])
    with flushed_db(DB_E2E) as url:
        env = {
            "ATCON_DATA_DIR": str(tmp_path / "data"),
            "ATCON_API_TOKENS": token_setting,
            "ATCON_REDIS_URL": url,
            "ATCON_CHECKPOINT": str(checkpoint),
            "ATCON_RECONCILE_INTERVAL_S": "1",
        }
        server = Server(env, tmp_path / "api.log").start()
        worker: Process | None = None
        client = redis.Redis.from_url(url)
        viewer = {"Authorization": f"Bearer {tokens[Role.viewer]}"}
        try:
            upload = httpx.post(
                f"{server.url}/v1/videos",
                files={"file": ("ward.mp4", media.video_bytes(frames=24, fps=6))},
                headers={"Authorization": f"Bearer {tokens[Role.operator]}"},
            )
            assert upload.status_code == 202, upload.text
            body = upload.json()
            job_url = server.url + body["status_url"]
            client.flushdb()  # Redis restarted without its data
            assert httpx.get(job_url, headers=viewer).status_code == 404

            def queued_again():
                answer = httpx.get(job_url, headers=viewer)
                return answer.status_code == 200 and answer.json()["status"] == "queued"

            wait_for(queued_again, 30, "the lost job queued again")
            worker = Process(["service.cli", "worker", "detect"], env, tmp_path / "w.log")
            worker.start()

            def finished():
                job = httpx.get(job_url, headers=viewer).json()
                return job if job["status"] in ("done", "failed") else None

            job = wait_for(finished, 180, "the detection job")
            assert job["status"] == "done", (job, worker.output())
            assert job["attempts"] == 1
            video = httpx.get(f"{server.url}/v1/videos/{body['video_id']}", headers=viewer)
            assert video.json()["status"] == "done"
            assert client.scard("atcon:jobs:detect:done") == 1  # done once, no duplicate
            assert "queued again" in server.output()
        finally:
            client.close()
            if worker is not None:
                worker.stop()
            server.stop()
