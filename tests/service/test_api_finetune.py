"""The fine-tuning API: frames, review queue, labels, models, fine-tune requests."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from worker.runtime.jobs import IMPORT, Worker
from worker.serving.versions import ModelRegistry, VersionStatus
from worker.settings import Role

from .test_health import tiny_checkpoint


def _png(value: int = 100) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), (value, 200 - value, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def app_client(make_settings, tmp_path) -> Iterator[TestClient]:
    checkpoint = tiny_checkpoint(tmp_path / "model.pt", arch="resnet18")
    settings = make_settings(checkpoint=checkpoint)
    with TestClient(create_app(settings, workers=0)) as client:
        yield client


def _drain(client: TestClient) -> int:
    """Run the app's queued detect and frames jobs to their end in a real worker."""
    from worker.runtime.jobs import DETECT, Worker

    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    worker = Worker(runtime.queue, runtime.storage, runtime.settings, DETECT, name="test")
    return worker.run(burst=True, poll_s=0.2)


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_frames_upload_review_and_labels(app_client: TestClient, auth) -> None:
    upload = app_client.post(
        "/v1/frames",
        files={
            "file": (
                "frames.zip",
                _zip(
                    {
                        "a.png": _png(10),
                        "sub/b.png": _png(90),
                        "c.png": _png(170),
                        "../evil.png": _png(5),
                        "notes.txt": b"hello",
                    }
                ),
                "application/zip",
            )
        },
        headers=auth(Role.operator),
    )
    assert upload.status_code == 202, upload.text  # a zip: extracted by an import job
    assert upload.json()["entries"] == 5
    runtime = app_client.app.state.runtime
    assert list(runtime.storage.frames.glob("*.json")) == []  # nothing added in the request
    worker = Worker(runtime.queue, runtime.storage, runtime.settings, IMPORT)
    assert worker.run(threading.Event(), burst=True) == 1
    job = app_client.get(upload.json()["status_url"], headers=auth(Role.viewer)).json()
    assert job["status"] == "done", job["error"]
    body = job["result"]
    assert body["accepted"] == 3 and len(body["frame_ids"]) == 3
    assert {r["name"]: r["reason"] for r in body["rejected"]} == {
        "../evil.png": "path leaves the archive",
        "notes.txt": "not an image file name",
    }
    single = app_client.post(
        "/v1/frames", files={"file": ("x.png", _png(40), "image/png")}, headers=auth(Role.operator)
    )
    assert single.status_code == 201 and len(single.json()["accepted"]) == 1

    # the API does not score: it asks a worker, and lists what is stored meanwhile
    pending = app_client.get("/v1/frames/review?limit=10", headers=auth(Role.viewer))
    assert pending.status_code == 200, pending.text
    assert pending.json()["scoring"] is True and pending.json()["scoring_job_id"]
    assert all(f["consistency"] is None for f in pending.json()["frames"])
    again = app_client.get("/v1/frames/review?limit=10", headers=auth(Role.viewer)).json()
    assert again["scoring_job_id"] == pending.json()["scoring_job_id"]  # one job, not two
    assert _drain(app_client) == 1
    review = app_client.get("/v1/frames/review?limit=10", headers=auth(Role.viewer))
    assert review.status_code == 200
    assert review.json()["scoring"] is False and review.json()["scoring_job_id"] is None
    frames = review.json()["frames"]
    assert len(frames) == 4
    scores = [f["consistency"] for f in frames]
    assert all(-1 <= s <= 1 for s in scores)
    # training frames come hardest first; validation frames are a random sample
    from worker.pool.frames import _bucket

    fraction = app_client.app.state.runtime.settings.pool_val_fraction
    learn = [f["consistency"] for f in frames if _bucket(f["frame_id"]) >= fraction]
    assert learn == sorted(learn)
    first = frames[0]
    for url in first["maps"].values():  # not drawn yet: a worker draws them
        drawing = app_client.get(url, headers=auth(Role.viewer))
        assert drawing.status_code == 202, drawing.text
        assert drawing.headers["Retry-After"] and drawing.json()["job_id"]
    assert _drain(app_client) == 1  # both kinds in one job
    for url in (first["image_url"], *first["maps"].values()):
        image = app_client.get(url, headers=auth(Role.viewer))
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")

    labelled = app_client.put(
        f"/v1/frames/{first['frame_id']}/labels",
        json={"labels": ["bed_exit"]},
        headers=auth(Role.operator),
    )
    assert labelled.status_code == 200
    assert labelled.json()["labels"] == ["bed_exit"] and labelled.json()["split"] in (
        "train",
        "val",
    )
    after = app_client.get("/v1/frames/review?limit=10", headers=auth(Role.viewer)).json()
    assert first["frame_id"] not in [f["frame_id"] for f in after["frames"]]


def test_frames_bad_input(app_client: TestClient, auth) -> None:
    operator = auth(Role.operator)
    assert (
        app_client.post(
            "/v1/frames",
            files={"file": ("x.pdf", b"%PDF-1.4", "application/pdf")},
            headers=operator,
        ).status_code
        == 415
    )
    assert (
        app_client.post(
            "/v1/frames", files={"file": ("x.png", b"", "image/png")}, headers=operator
        ).status_code
        == 400
    )
    assert (
        app_client.post(
            "/v1/frames", files={"file": ("x.png", _png(), "image/png")}, headers=auth(Role.viewer)
        ).status_code
        == 403
    )
    frame = app_client.post(
        "/v1/frames", files={"file": ("x.png", _png(), "image/png")}, headers=operator
    ).json()["accepted"][0]
    unknown_class = app_client.put(
        f"/v1/frames/{frame}/labels", json={"labels": ["dancing"]}, headers=operator
    )
    assert unknown_class.status_code == 422 and "not classes of the model" in unknown_class.text
    extra = app_client.put(
        f"/v1/frames/{frame}/labels", json={"labels": [], "note": "x"}, headers=operator
    )
    assert extra.status_code == 422
    assert (
        app_client.put(
            f"/v1/frames/{'0' * 32}/labels", json={"labels": []}, headers=operator
        ).status_code
        == 404
    )
    assert app_client.get("/v1/frames/not-an-id", headers=operator).status_code == 422


def test_finetune_requests(app_client: TestClient, auth) -> None:
    admin = auth(Role.admin)
    accepted = app_client.post("/v1/finetune", json={"steps": 5, "lr": 1e-4}, headers=admin)
    assert accepted.status_code == 202, accepted.text
    job = app_client.get(accepted.json()["status_url"], headers=auth(Role.viewer)).json()
    assert job["kind"] == "finetune" and job["status"] == "queued"
    assert app_client.post("/v1/finetune", headers=admin).status_code == 202  # body optional
    for body in (
        {"learning_rate": 1},
        {"lr": 0},
        {"epochs": -1},
        {"mode": "combined"},
        {"video_ids": ["../../etc"]},
        {"batch_size": 10_000},
    ):
        answer = app_client.post("/v1/finetune", json=body, headers=admin)
        assert answer.status_code == 422, body
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert app_client.post("/v1/finetune", json={}, headers=auth(Role.operator)).status_code == 403


def test_models_list_activate_and_roll_back(app_client: TestClient, auth, make_settings) -> None:
    registry = ModelRegistry(app_client.app.state.runtime.storage.models)
    checkpoint = app_client.app.state.runtime.settings.checkpoint
    # the app registered ATCON_CHECKPOINT as v0001 when it started
    assert registry.get("v0001").reason == ModelRegistry.INITIAL_REASON
    registry.register(checkpoint, status=VersionStatus.CANDIDATE, reason="no validation set")
    registry.register(checkpoint, status=VersionStatus.REJECTED, reason="F1 fell")
    listed = app_client.get("/v1/models", headers=auth(Role.viewer)).json()
    assert listed["active"] == "v0001"
    assert [v["version"] for v in listed["versions"]] == ["v0003", "v0002", "v0001"]

    admin = auth(Role.admin)
    assert (
        app_client.post("/v1/models/v0002/activate", headers=auth(Role.operator)).status_code == 403
    )
    activated = app_client.post("/v1/models/v0002/activate", headers=admin)
    assert activated.status_code == 200 and activated.json()["status"] == "active"
    assert app_client.get("/v1/models/v0001", headers=admin).json()["status"] == "retired"
    rolled_back = app_client.post(
        "/v1/models/v0001/activate", json={"reason": "roll back"}, headers=admin
    )
    assert rolled_back.status_code == 200 and registry.active_version() == "v0001"

    rejected = app_client.post("/v1/models/v0003/activate", headers=admin)
    assert rejected.status_code == 409 and "rejected" in rejected.json()["detail"]
    assert app_client.post("/v1/models/v0099/activate", headers=admin).status_code == 404
    assert app_client.post("/v1/models/latest/activate", headers=admin).status_code == 422
    assert registry.active_version() == "v0001"


def test_finetune_length_is_bounded_and_unambiguous(make_settings, tmp_path, auth) -> None:
    settings = make_settings(finetune_max_steps=300)
    with TestClient(create_app(settings, workers=0)) as client:
        admin = auth(Role.admin)
        too_long = client.post("/v1/finetune", json={"steps": 1_000_000}, headers=admin)
        assert too_long.status_code == 422
        assert "ATCON_FINETUNE_MAX_STEPS" in too_long.json()["detail"]
        both = client.post("/v1/finetune", json={"steps": 10, "epochs": 2}, headers=admin)
        assert both.status_code == 422
        assert "either epochs or steps" in both.json()["detail"]
        assert client.post("/v1/finetune", json={"steps": 300}, headers=admin).status_code == 202


def test_cancel_a_job(app_client: TestClient, auth) -> None:
    admin = auth(Role.admin)
    job_id = app_client.post("/v1/finetune", json={"steps": 5}, headers=admin).json()["job_id"]
    url = f"/v1/jobs/{job_id}/cancel"
    assert app_client.post(url, headers=auth(Role.operator)).status_code == 403
    cancelled = app_client.post(url, headers=admin)
    assert cancelled.status_code == 202, cancelled.text
    body = cancelled.json()
    assert body["status"] == "failed" and body["error"] == "cancelled by admin"
    again = app_client.post(url, headers=admin)
    assert again.status_code == 409 and "nothing to cancel" in again.json()["detail"]
    assert app_client.post(f"/v1/jobs/{'0' * 32}/cancel", headers=admin).status_code == 404


def test_frames_upload_takes_a_camera(app_client: TestClient, auth) -> None:
    operator = auth(Role.operator)
    added = app_client.post(
        "/v1/frames",
        files={"file": ("a.png", _png(), "image/png")},
        data={"camera": "icu-3"},
        headers=operator,
    )
    assert added.status_code == 201, added.text
    frame_id = added.json()["accepted"][0]
    frame = app_client.get(f"/v1/frames/{frame_id}", headers=auth(Role.viewer)).json()
    assert frame["camera"] == "icu-3"
    plain = app_client.post(
        "/v1/frames", files={"file": ("b.png", _png(), "image/png")}, headers=operator
    ).json()["accepted"][0]
    assert app_client.get(f"/v1/frames/{plain}", headers=operator).json()["camera"] is None

    bad = app_client.post(
        "/v1/frames",
        files={"file": ("c.png", _png(), "image/png")},
        data={"camera": "../icu"},
        headers=operator,
    )
    assert bad.status_code == 422
    assert "camera" in bad.json()["detail"] and "1 to 64 letters" in bad.json()["detail"]
    pool = app_client.app.state.runtime.storage.frames
    assert len(list(pool.glob("*.json"))) == 2  # the refused upload stored nothing


def test_finetune_request_takes_a_camera(app_client: TestClient, auth) -> None:
    admin = auth(Role.admin)
    accepted = app_client.post("/v1/finetune", json={"camera": "night-1"}, headers=admin)
    assert accepted.status_code == 202, accepted.text
    queue = app_client.app.state.runtime.queue
    job = queue.get(accepted.json()["job_id"])
    assert job.payload["request"] == {"camera": "night-1"}
    refused = app_client.post("/v1/finetune", json={"camera": "night 1"}, headers=admin)
    assert refused.status_code == 422 and "1 to 64 letters" in refused.json()["detail"]


def test_models_activated_for_cameras(app_client: TestClient, auth) -> None:
    registry = ModelRegistry(app_client.app.state.runtime.storage.models)
    checkpoint = app_client.app.state.runtime.settings.checkpoint
    assert registry.active_version() == "v0001"  # ATCON_CHECKPOINT, registered at start-up
    registry.register(
        checkpoint, status=VersionStatus.CANDIDATE, reason="night", cameras=["night-1"]
    )
    registry.register(checkpoint, status=VersionStatus.REJECTED, reason="F1 fell")
    admin, viewer = auth(Role.admin), auth(Role.viewer)
    body = {"cameras": ["night-1", "night-2"], "reason": "night ward"}
    forbidden = app_client.post("/v1/models/v0002/activate", json=body, headers=auth(Role.operator))
    assert forbidden.status_code == 403

    scoped = app_client.post("/v1/models/v0002/activate", json=body, headers=admin)
    assert scoped.status_code == 200, scoped.text
    card = scoped.json()
    assert card["active_for"] == ["night-1", "night-2"] and card["cameras"] == ["night-1"]
    assert card["status"] == "candidate"  # the default is still v0001
    listed = app_client.get("/v1/models", headers=viewer).json()
    assert listed["active"] == "v0001"
    assert listed["cameras"] == {"night-1": "v0002", "night-2": "v0002"}
    by_version = {v["version"]: v for v in listed["versions"]}
    assert by_version["v0001"]["active_for"] == [] and by_version["v0001"]["cameras"] is None
    assert app_client.get("/v1/models/cameras", headers=viewer).json() == {
        "cameras": {"night-1": "v0002", "night-2": "v0002"}
    }

    for bad in ({"cameras": []}, {"cameras": ["../x"]}, {"cameras": "night-1"}):
        answer = app_client.post("/v1/models/v0002/activate", json=bad, headers=admin)
        assert answer.status_code == 422, bad
        assert answer.json()["detail"].startswith("The request is invalid: cameras")
    bad_item = app_client.post(
        "/v1/models/v0002/activate", json={"cameras": ["ok", "no/slash"]}, headers=admin
    )
    assert "cameras[1]" in bad_item.json()["detail"]
    assert "1 to 64 letters" in bad_item.json()["detail"]
    rejected = app_client.post("/v1/models/v0003/activate", json=body, headers=admin)
    assert rejected.status_code == 409 and "rejected" in rejected.json()["detail"]

    assert app_client.delete("/v1/models/cameras/night-2", headers=viewer).status_code == 403
    assert app_client.delete("/v1/models/cameras/night-2", headers=admin).status_code == 204
    gone = app_client.delete("/v1/models/cameras/night-2", headers=admin)
    assert gone.status_code == 404 and "default version already" in gone.json()["detail"]
    bad_camera = app_client.delete("/v1/models/cameras/-rf", headers=admin)
    assert bad_camera.status_code == 422 and "1 to 64 letters" in bad_camera.json()["detail"]
    assert registry.camera_versions() == {"night-1": "v0002"}
    again = app_client.post("/v1/models/v0002/activate", json=body, headers=admin)
    assert again.status_code == 200 and registry.camera_versions()["night-2"] == "v0002"
    assert registry.active_version() == "v0001"


def test_unreadable_version_pointers_answer_503_with_a_sentence(app_client: TestClient, auth):
    """VersionsUnreadableError is translated once, at the HTTP boundary."""
    runtime = app_client.app.state.runtime  # type: ignore[attr-defined]
    (runtime.storage.models / "CAMERAS.json").write_text("{not json")
    for url in ("/v1/models", "/v1/models/cameras"):
        answer = app_client.get(url, headers=auth(Role.viewer))
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "CAMERAS.json is not valid JSON" in answer.json()["detail"]
        assert answer.headers["Retry-After"]


def test_a_job_past_its_retention_still_answers_from_the_archive(
    make_settings, tmp_path, auth
) -> None:
    settings = make_settings(job_retention_days=1e-12)
    with TestClient(create_app(settings, workers=0)) as client:
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        job = runtime.queue.enqueue("finetune", {})
        lease = runtime.queue.reserve("finetune", "w", timeout_s=1)
        runtime.queue.complete(lease, {"version": "v0002"})
        assert runtime.prune() == [job.job_id]
        assert runtime.queue.counts("finetune")["done"] == 0
        answer = client.get(f"/v1/jobs/{job.job_id}", headers=auth(Role.viewer))
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "done" and answer.json()["kind"] == "finetune"
        assert (runtime.storage.root / "jobs" / f"{job.job_id}.json").is_file()
