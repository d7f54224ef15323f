"""``/metrics`` of a real ``atcon serve`` and a real ``atcon worker detect``, with Redis.

The worker shares ``PROMETHEUS_MULTIPROC_DIR`` with the API (the same-machine path)
and also serves its own registry on ``ATCON_METRICS_PORT`` (the other-machine path).
After one real detection both expositions parse with ``prometheus_client``'s parser
and hold the detect stages; the API's also holds the queue's figures. The Grafana
dashboard in ``deploy/grafana/atcon.json`` may only query names found here. The
detection runs on the local backend and on the object store (the session fixture
``s3``; API and worker with data directories of their own).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx
import pytest

from tests import media
from tests.metrics_helpers import parse_samples
from tests.processes import REPO, Process, Server, wait_for
from tests.redis_helpers import DB_E2E, flushed_db, free_port
from worker.runtime.metrics import DETECT_STAGES
from worker.settings import Role

from .test_server import bearer, post_video

pytestmark = [pytest.mark.slow, pytest.mark.redis]

DASHBOARD = REPO / "deploy" / "grafana" / "atcon.json"


@pytest.fixture
def server_env(tmp_path, token_setting):
    return {
        "ATCON_DATA_DIR": str(tmp_path / "data"),
        "ATCON_API_TOKENS": token_setting,
        "ATCON_MAX_UPLOAD_BYTES": str(2 << 20),
    }


def exported_names(text: str) -> set[str]:
    """Family and sample names of an exposition (a family may have no sample yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


@pytest.fixture(params=["local", "s3"])
def worker_storage(request, tmp_path) -> tuple[dict[str, str], dict[str, str]]:
    """Extra settings of the API and of the worker: none on the local backend (they
    share ``server_env``'s data directory), the bucket and a directory each on S3."""
    if request.param == "local":
        return {}, {}
    s3 = request.getfixturevalue("s3")
    store = {**s3.env(), "ATCON_STORAGE_URL": f"s3://{s3.bucket()}/ward"}
    return (
        {**store, "ATCON_DATA_DIR": str(tmp_path / "api-data")},
        {**store, "ATCON_DATA_DIR": str(tmp_path / "worker-data")},
    )


def test_metrics_of_a_real_detection(tmp_path, server_env, tokens, worker_storage):
    checkpoint_dir = tmp_path / "model"
    checkpoint_dir.mkdir()
    from .test_health import tiny_checkpoint

    checkpoint = tiny_checkpoint(checkpoint_dir / "m.pt", arch="resnet18", thresholds=[0.01, 0.01])
    shared = tmp_path / "prometheus"
    shared.mkdir()
    worker_port = free_port()
    with flushed_db(DB_E2E) as url:
        env = {
            **server_env,
            "ATCON_REDIS_URL": url,
            "ATCON_CHECKPOINT": str(checkpoint),
            "PROMETHEUS_MULTIPROC_DIR": str(shared),
        }
        api_storage, own_storage = worker_storage
        server = Server({**env, **api_storage}, tmp_path / "api.log").start(timeout_s=180)
        worker_env = {**env, **own_storage, "ATCON_METRICS_PORT": str(worker_port)}
        worker = Process(["service.cli", "worker", "detect"], worker_env, tmp_path / "w.log")
        worker.start()
        admin = bearer(tokens, Role.admin)
        try:
            assert httpx.get(f"{server.url}/metrics").status_code == 401
            assert (
                httpx.get(f"{server.url}/metrics", headers=bearer(tokens, Role.viewer)).status_code
                == 403
            )
            before = parse_samples(httpx.get(f"{server.url}/metrics", headers=admin).text)
            assert before["atcon_queue_up"] == 1
            assert 'atcon_detect_stage_seconds_count{stage="decode"}' not in before

            body = post_video(server.url, tokens, media.video_bytes(frames=24, fps=6)).json()

            def finished():
                job = httpx.get(server.url + body["status_url"], headers=admin).json()
                return job if job["status"] in ("done", "failed") else None

            job = wait_for(finished, 180, "the detection job")
            assert job["status"] == "done", (job, worker.output())

            api_text = httpx.get(f"{server.url}/metrics", headers=admin).text
            api = parse_samples(api_text)
            worker_text = httpx.get(f"http://127.0.0.1:{worker_port}/metrics").text
            own = parse_samples(worker_text)
            for stage in DETECT_STAGES:
                key = f'atcon_detect_stage_seconds_count{{stage="{stage}"}}'
                assert api[key] == 1, (stage, api_text)  # through the multiprocess directory
                assert own[key] == 1, (stage, worker_text)  # the worker's own endpoint
                assert api[f'atcon_detect_stage_seconds_sum{{stage="{stage}"}}'] >= 0
            assert api['atcon_detect_stage_seconds_sum{stage="score"}'] > 0
            assert api['atcon_jobs{queue="detect",status="done"}'] == 1
            assert api['atcon_queue_lag{queue="detect"}'] == 0
            assert api['atcon_queue_pending{queue="detect"}'] == 0
            assert api['atcon_queue_oldest_wait_seconds{queue="detect"}'] == 0
            assert api['atcon_frames_total{queue="detect"}'] > 0

            exported = exported_names(api_text) | exported_names(worker_text)
            queries = dashboard_queries()
            assert queries, "the dashboard has no queries"
            for expr in queries:
                names = set(re.findall(r"\batcon_[a-z_]+", expr))
                assert names, f"query names no ATCON metric: {expr}"
                assert names <= exported, f"{expr} queries {sorted(names - exported)}"
        finally:
            worker.stop()
            server.stop()


def test_several_api_processes_add_up_their_metrics(tmp_path, server_env, tokens):
    """``atcon serve --workers 2``: two API processes, their metrics in
    PROMETHEUS_MULTIPROC_DIR (a previous run's files removed first); every scrape,
    whichever process answers it, adds up every process writing there (here the two
    and one more that the test runs, so the sum cannot come from one process)."""
    shared = tmp_path / "prometheus"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"a previous run's file")
    with flushed_db(DB_E2E) as url:
        env = {**server_env, "ATCON_REDIS_URL": url, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
        server = Server(env, tmp_path / "api.log", args=["--workers", "2"])
        server.start(timeout_s=300)  # two processes importing torch on a busy machine
        admin = bearer(tokens, Role.admin)
        try:
            assert not (shared / "counter_1.db").exists()  # the stale file went
            wait_for(lambda: server.output().count("ATCON API ready") == 2, 60, "two processes")
            key = 'atcon_http_requests_total{method="GET",route="/healthz",status="200"}'
            text = httpx.get(f"{server.url}/metrics", headers=admin).text
            before = parse_samples(text)[key]  # Server.start's own /healthz polls
            requests = 20
            for _ in range(requests):  # a new connection each: either process may answer
                with httpx.Client() as client:
                    assert client.get(f"{server.url}/healthz").status_code == 200
            other = 1000
            subprocess.run(
                [sys.executable, "-c", _COUNT_ELSEWHERE, str(other)],
                env={
                    **os.environ,
                    "PROMETHEUS_MULTIPROC_DIR": str(shared),
                    "PYTHONPATH": str(REPO),
                },
                check=True,
                timeout=120,
            )
            for _ in range(6):
                with httpx.Client() as client:
                    text = client.get(f"{server.url}/metrics", headers=admin).text
                assert parse_samples(text)[key] == before + requests + other, text
            assert "/v1/videos/{video_id}" not in text  # templates only, for routes served
        finally:
            server.stop()


#: another process on the machine counting /healthz requests into the shared directory
_COUNT_ELSEWHERE = """
import sys
from service.core.metrics import HTTP_REQUESTS
HTTP_REQUESTS.labels("GET", "/healthz", "200").inc(int(sys.argv[1]))
"""
