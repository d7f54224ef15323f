"""The service's commands: token, serve's refusal, worker's checks."""

from __future__ import annotations

import json

import pytest

from service.cli import main
from service.core.security import hash_token
from tests.redis_helpers import DB_API, flushed_db
from worker.settings import get_settings, parse_tokens


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("ATCON_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_token_new_prints_a_token_and_its_entry(capsys):
    assert main(["token", "new", "ward-7", "operator"]) == 0
    out = json.loads(capsys.readouterr().out)
    (entry,) = parse_tokens(out["entry"])
    assert entry.name == "ward-7" and entry.role == "operator"
    assert entry.sha256 == hash_token(out["token"])


def test_token_name_must_fit_an_entry():
    assert main(["token", "new", "a:b", "viewer"]) == 2


def test_serve_refuses_to_start_without_tokens(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("ATCON_DATA_DIR", str(tmp_path))
    assert main(["serve", "--port", "1"]) == 2
    assert "ATCON_API_TOKENS" in caplog.text


def test_worker_needs_redis(caplog):
    assert main(["worker", "detect"]) == 2
    assert "ATCON_REDIS_URL" in caplog.text


@pytest.mark.redis
def test_worker_healthcheck(monkeypatch, tmp_path, capsys):
    """Healthy: Redis answers, a worker process of the kind on this host renews its
    liveness mark, and (detect) there is a model. A stopped worker's mark expires."""
    import threading
    import time

    from worker.queue.factory import open_queue
    from worker.runtime.jobs import JobOutcome, Worker
    from worker.serving.model_cache import ensure_first_version
    from worker.storage import Storage

    with flushed_db(DB_API) as url:
        monkeypatch.setenv("ATCON_REDIS_URL", url)
        monkeypatch.setenv("ATCON_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("ATCON_HEARTBEAT_INTERVAL_S", "0.2")
        get_settings.cache_clear()
        assert main(["worker", "detect", "--healthcheck"]) == 1
        assert "no detect worker on host" in capsys.readouterr().out

        settings = get_settings()
        queue = open_queue(settings)
        worker = Worker(
            queue, Storage(tmp_path), settings, "detect", function=lambda ctx: JobOutcome()
        )
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"poll_s": 0.1})
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while worker.name not in queue.alive("detect") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert main(["worker", "detect", "--healthcheck"]) == 1
            assert "no model to serve" in capsys.readouterr().out
            checkpoint = tmp_path / "m.pt"
            checkpoint.write_bytes(b"x")
            monkeypatch.setenv("ATCON_CHECKPOINT", str(checkpoint))
            get_settings.cache_clear()
            # what a worker starting with ATCON_CHECKPOINT does: it becomes v0001
            assert ensure_first_version(Storage(tmp_path), get_settings()) is not None
            assert main(["worker", "detect", "--healthcheck"]) == 0
            assert json.loads(capsys.readouterr().out) == {
                "queue": "ok",
                "worker": worker.name,
                "model": "ok",
            }
            assert main(["worker", "detect", "--healthcheck", "--name", worker.name]) == 0
            assert main(["worker", "finetune", "--healthcheck"]) == 1  # none of that kind
        finally:
            stop.set()
            thread.join(30)
        capsys.readouterr()
        deadline = time.monotonic() + 30  # the stopped worker's mark expires
        while worker.name in queue.alive("detect") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert main(["worker", "detect", "--healthcheck"]) == 1
        assert "marked itself alive" in capsys.readouterr().out
        queue.close()
    get_settings.cache_clear()


def test_dev_mode_without_tokens_stays_on_loopback(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("ATCON_DATA_DIR", str(tmp_path))
    assert main(["serve", "--dev", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "only binds to 127.0.0.1" in caplog.text


def test_several_api_processes_need_redis(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("ATCON_DATA_DIR", str(tmp_path))
    assert main(["serve", "--dev", "--workers", "2", "--port", "1"]) == 2
    assert "--workers 2 needs ATCON_REDIS_URL" in caplog.text
