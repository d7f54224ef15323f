"""/healthz, /readyz (queue, storage, model) and /metrics."""

from __future__ import annotations

import re

import pytest
import torch
from fastapi.testclient import TestClient

from models.checkpoint import CheckpointInfo, save_checkpoint
from service.main import create_app
from tests.metrics_helpers import parse_samples
from tests.redis_helpers import free_port
from worker.settings import Role
from worker.storage import Storage

from .test_api_videos import upload


def tiny_checkpoint(path, arch="mobilenet_v2", thresholds=None):
    """A seeded 2-class checkpoint at 64 px; low ``thresholds`` make every frame an event."""
    from models.backbones import build_backbone

    torch.manual_seed(0)
    model = build_backbone(arch, 2)
    info = CheckpointInfo(
        arch=arch,
        class_names=["bed_exit", "staff"],
        input_size=64,
        thresholds=thresholds or [],
    )
    save_checkpoint(path, model, info)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


def test_healthz_needs_no_token(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_not_ready_without_a_model(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["queue"]["ok"] and checks["storage"]["ok"]
    assert not checks["model"]["ok"] and "ATCON_CHECKPOINT" in checks["model"]["detail"]


def test_ready_with_a_loadable_checkpoint(make_settings, checkpoint):
    with TestClient(create_app(make_settings(checkpoint=checkpoint), workers=0)) as client:
        response = client.get("/readyz")
        assert response.status_code == 200, response.text
        model = response.json()["checks"]["model"]
        assert model["ok"] and model["version"] == "v0001"
        # ATCON_CHECKPOINT was registered at start-up: the served model has a card
        card = client.app.state.runtime.served.current().ref
        assert card.checkpoint.parent.name == "v0001"


def test_not_ready_with_a_broken_checkpoint(make_settings, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with TestClient(create_app(make_settings(checkpoint=broken), workers=0)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "could not be read" in response.json()["checks"]["model"]["detail"]


def test_an_active_version_is_kept_over_atcon_checkpoint(make_settings, checkpoint, tmp_path):
    settings = make_settings(checkpoint=checkpoint)
    from worker.serving.versions import ModelRegistry, VersionStatus

    storage = Storage(settings.data_dir)
    storage.ensure_layout()
    other = tiny_checkpoint(tmp_path / "other.pt")
    card = ModelRegistry(storage.models).register(other, status=VersionStatus.ACTIVE, reason="t")
    with TestClient(create_app(settings, workers=0)) as client:
        model = client.get("/readyz").json()["checks"]["model"]
        assert model["ok"] and model["version"] == card.version
    assert [c.version for c in ModelRegistry(storage.models).versions()] == [card.version]


@pytest.mark.redis
def test_not_ready_when_redis_is_unreachable(make_settings):
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/12")
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "cannot be reached" in response.json()["checks"]["queue"]["detail"]
        assert client.get("/healthz").status_code == 200


def test_metrics(client, auth, make_settings):
    upload(client, auth)
    upload(client, auth)
    queue = client.app.state.runtime.queue
    lease = queue.reserve("detect", "w", timeout_s=1)
    assert queue.complete(lease, frames=50)
    response = client.get("/metrics", headers=auth(Role.admin))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = parse_samples(response.text)
    assert samples["atcon_queue_up"] == 1
    assert samples['atcon_queue_depth{queue="detect"}'] == 1
    assert samples['atcon_jobs{queue="detect",status="done"}'] == 1
    assert samples['atcon_jobs{queue="detect",status="queued"}'] == 1
    assert samples['atcon_job_duration_seconds_count{queue="detect"}'] == 1
    assert samples['atcon_job_duration_seconds_bucket{le="+Inf",queue="detect"}'] == 1
    assert samples['atcon_frames_total{queue="detect"}'] == 50
    assert 'atcon_frames_per_second{queue="detect"}' in samples
    # the backlog: one job waits, none is held (the in-memory queue counts its jobs)
    assert samples['atcon_queue_lag{queue="detect"}'] == 1
    assert samples['atcon_queue_pending{queue="detect"}'] == 0


def test_metrics_name_the_active_model(make_settings, checkpoint, auth):
    with TestClient(create_app(make_settings(checkpoint=checkpoint), workers=0)) as client:
        text = client.get("/metrics", headers=auth(Role.admin)).text
    assert re.search(r'atcon_active_model_info\{version="v0001"\} 1\.0', text)


def test_metrics_show_a_running_finetune_s_progress(client, auth):
    queue = client.app.state.runtime.queue
    job = queue.enqueue("finetune", {})
    lease = queue.reserve("finetune", "w", timeout_s=1)
    assert lease is not None and queue.set_progress(lease, 0.4, {"phase": "training"})
    samples = parse_samples(client.get("/metrics", headers=auth(Role.admin)).text)
    assert samples[f'atcon_finetune_progress{{job_id="{job.job_id}",phase="training"}}'] == 0.4
    assert queue.complete(lease)
    samples = parse_samples(client.get("/metrics", headers=auth(Role.admin)).text)
    assert not any(name.startswith("atcon_finetune_progress") for name in samples)
