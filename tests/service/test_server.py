"""The API as a real uvicorn process (``atcon serve``), with real Redis where it says so.

* end to end with Redis (db 13): upload over HTTP, the job in Redis, range reads,
  the size limit on a streamed body, delete; and a real ``atcon worker detect``
  process turning an upload into events and maps read back over HTTP;
* Redis stopped while the API runs (a private redis-server): uploads answer 503 with
  a clear message, nothing accepted is lost, and work proceeds once Redis is back;
* the embedded default (no Redis): after a restart, uploads without results are
  queued again under their old job ids.
"""

from __future__ import annotations

import httpx
import pytest

from tests import media
from tests.metrics_helpers import parse_samples
from tests.processes import Process, Server, wait_for
from tests.redis_helpers import DB_E2E, flushed_db, private_redis
from worker.settings import Role
from worker.storage import Storage

pytestmark = pytest.mark.slow


def bearer(tokens, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


def post_video(base: str, tokens, data: bytes, name: str = "ward.mp4") -> httpx.Response:
    return httpx.post(
        f"{base}/v1/videos",
        files={"file": (name, data, "video/mp4")},
        headers=bearer(tokens, Role.operator),
        timeout=30,
    )


@pytest.fixture
def server_env(tmp_path, token_setting):
    return {
        "ATCON_DATA_DIR": str(tmp_path / "data"),
        "ATCON_API_TOKENS": token_setting,
        "ATCON_MAX_UPLOAD_BYTES": str(2 << 20),
    }


@pytest.mark.redis
def test_end_to_end_with_redis(tmp_path, server_env, tokens):
    with flushed_db(DB_E2E) as url:
        server = Server({**server_env, "ATCON_REDIS_URL": url}, tmp_path / "api.log").start()
        try:
            base = server.url
            data = media.video_bytes(frames=30)
            response = post_video(base, tokens, data)
            assert response.status_code == 202, response.text
            body = response.json()
            job = httpx.get(base + body["status_url"], headers=bearer(tokens, Role.viewer)).json()
            assert job["status"] == "queued"

            import redis

            client = redis.Redis.from_url(url, decode_responses=True)
            assert client.hget(f"atcon:job:{body['job_id']}", "status") == "queued"
            client.close()

            source = f"{base}/v1/videos/{body['video_id']}/source"
            part = httpx.get(source, headers={**bearer(tokens, Role.viewer), "Range": "bytes=0-99"})
            assert part.status_code == 206 and part.content == data[:100]

            too_big = b"\0" * (3 << 20)

            def stream():
                boundary = b"e2eboundary"
                yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
                yield b'filename="big.mp4"\r\n\r\n'
                for start in range(0, len(too_big), 1 << 16):
                    yield too_big[start : start + (1 << 16)]
                yield b"\r\n--" + boundary + b"--\r\n"

            headers = {
                **bearer(tokens, Role.operator),
                "Content-Type": "multipart/form-data; boundary=e2eboundary",
            }
            try:
                rejected = httpx.post(f"{base}/v1/videos", content=stream(), headers=headers)
                assert rejected.status_code == 413
            except httpx.HTTPError:
                pass  # the server may close the connection mid-body after answering 413
            storage = Storage(tmp_path / "data")
            wait_for(lambda: list(storage.tmp.iterdir()) == [], 10, "the partial upload removed")
            assert [r.video_id for r in storage.list_videos()] == [body["video_id"]]

            deleted = httpx.delete(
                f"{base}/v1/videos/{body['video_id']}", headers=bearer(tokens, Role.admin)
            )
            assert deleted.status_code == 204
            assert httpx.get(source, headers=bearer(tokens, Role.viewer)).status_code == 404
        finally:
            assert server.stop_cleanly(), server.output()


@pytest.mark.redis
def test_end_to_end_detection_with_a_worker_process(tmp_path, server_env, tokens):
    from .test_health import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "model.pt", arch="resnet18", thresholds=[0.01, 0.01])
    with flushed_db(DB_E2E) as url:
        env = {**server_env, "ATCON_REDIS_URL": url, "ATCON_CHECKPOINT": str(checkpoint)}
        server = Server(env, tmp_path / "api.log").start()
        worker = Process(["service.cli", "worker", "detect"], env, tmp_path / "w.log").start()
        try:
            body = post_video(server.url, tokens, media.video_bytes(frames=24, fps=6)).json()
            viewer = bearer(tokens, Role.viewer)

            def finished():
                job = httpx.get(server.url + body["status_url"], headers=viewer).json()
                return job if job["status"] in ("done", "failed") else None

            job = wait_for(finished, 180, "the detection job")
            assert job["status"] == "done", (job, worker.output())
            events = httpx.get(f"{server.url}/v1/videos/{body['video_id']}/events", headers=viewer)
            assert events.status_code == 200
            listed = events.json()["events"]
            assert listed, "thresholds near 0 make every class an event"
            for event in listed:
                assert set(event["map_urls"]) == {
                    "overlay",
                    "gradcam",
                    "guided_backprop",
                    "mask",
                    "frame",
                }
                for url in event["map_urls"].values():
                    png = httpx.get(server.url + url, headers=viewer)
                    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
            video = httpx.get(f"{server.url}/v1/videos/{body['video_id']}", headers=viewer).json()
            assert video["status"] == "done" and video["model_version"]
            assert video["event_count"] == len(listed)
            metrics = httpx.get(f"{server.url}/metrics", headers=bearer(tokens, Role.admin)).text
            samples = parse_samples(metrics)
            assert samples['atcon_jobs{queue="detect",status="done"}'] == 1
            assert samples['atcon_frames_total{queue="detect"}'] > 0
        finally:
            worker.stop()
            server.stop()


@pytest.mark.redis
def test_redis_stopped_while_the_api_runs(tmp_path, server_env, tokens):
    with private_redis() as redis_server:
        env = {**server_env, "ATCON_REDIS_URL": redis_server.url}
        server = Server(env, tmp_path / "api.log").start()
        storage = Storage(tmp_path / "data")
        viewer = bearer(tokens, Role.viewer)
        try:
            first = post_video(server.url, tokens, media.video_bytes()).json()

            redis_server.stop()
            refused = post_video(server.url, tokens, media.video_bytes())
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert "job queue cannot be reached" in refused.json()["detail"]
            assert refused.headers["retry-after"]
            assert [r.video_id for r in storage.list_videos()] == [first["video_id"]]
            assert list(storage.tmp.iterdir()) == []
            assert httpx.get(f"{server.url}/healthz").status_code == 200
            assert httpx.get(f"{server.url}/readyz").status_code == 503
            assert httpx.get(server.url + first["status_url"], headers=viewer).status_code == 503
            listing = httpx.get(f"{server.url}/v1/videos", headers=viewer)
            assert listing.status_code == 200
            assert listing.json()["videos"][0]["status"] is None

            redis_server.start()  # same port, same append-only file
            job = httpx.get(server.url + first["status_url"], headers=viewer)
            assert job.status_code == 200 and job.json()["status"] == "queued"
            second = post_video(server.url, tokens, media.video_bytes())
            assert second.status_code == 202

            worker = Process(
                ["tests.worker.standin_worker", "w", "0.01"], env, tmp_path / "w.log"
            ).start()
            try:
                for body in (first, second.json()):
                    wait_for(
                        lambda b=body: (
                            httpx.get(server.url + b["status_url"], headers=viewer).json()["status"]
                            == "done"
                        ),
                        60,
                        "queued work to proceed after Redis returned",
                    )
            finally:
                worker.stop()
        finally:
            server.stop()


def test_embedded_restart_requeues_uploads_without_results(tmp_path, server_env, tokens):
    env = {**server_env, "ATCON_EMBEDDED_WORKERS": "1"}  # no model: the worker waits
    server = Server(env, tmp_path / "api1.log").start()
    try:
        body = post_video(server.url, tokens, media.video_bytes()).json()
    finally:
        assert server.stop_cleanly(), server.output()
    server = Server(env, tmp_path / "api2.log", port=server.port).start()
    try:
        job = httpx.get(server.url + body["status_url"], headers=bearer(tokens, Role.viewer))
        assert job.status_code == 200 and job.json()["status"] == "queued"
        ready = httpx.get(f"{server.url}/readyz").json()
        assert not ready["checks"]["model"]["ok"]
    finally:
        assert server.stop_cleanly(), server.output()


def test_embedded_default_detects(tmp_path, server_env, tokens):
    from .test_health import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "model.pt", arch="resnet18")
    server = Server({**server_env, "ATCON_CHECKPOINT": str(checkpoint)}, tmp_path / "a.log")
    server.start()
    try:
        body = post_video(server.url, tokens, media.video_bytes(frames=24, fps=6)).json()
        viewer = bearer(tokens, Role.viewer)
        job = wait_for(
            lambda: (
                j
                if (j := httpx.get(server.url + body["status_url"], headers=viewer).json())[
                    "status"
                ]
                in ("done", "failed")
                else None
            ),
            180,
            "the embedded worker",
        )
        assert job["status"] == "done", (job, server.output())
    finally:
        server.stop()
