"""Cameras end to end over HTTP: a real uvicorn (embedded default), real detection.

A version activated for one camera scores that camera's videos while another
camera's videos get the default version; giving the camera back to the default and
activating it again both take effect from the next job. The frames each video adds to
the pool carry its camera. Twice: on the local backend, and on the object store (a real
S3-compatible server, the session fixture ``s3``), where the versions, their camera
pointer and the pool live in the bucket and the server's data directory is its cache.
"""

from __future__ import annotations

import httpx
import pytest
import torch

from models.backbones import build_backbone
from models.checkpoint import CheckpointInfo, save_checkpoint
from tests import media
from tests.processes import Server, wait_for
from worker.serving.versions import VersionStatus
from worker.settings import Role, Settings
from worker.storage import open_storage

pytestmark = pytest.mark.slow


def _checkpoint(path, seed: int):
    torch.manual_seed(seed)
    model = build_backbone("resnet18_slim", 2, width=8)
    info = CheckpointInfo(
        arch="resnet18_slim",
        class_names=["bed_exit", "staff"],
        input_size=48,
        arch_kwargs={"width": 8},
    )
    save_checkpoint(path, model, info)
    return path


@pytest.fixture(params=["local", "s3"])
def storage_env(request, monkeypatch) -> dict[str, str]:
    """The storage settings of the server, and of this test's own view of the store."""
    if request.param == "local":
        return {}
    s3 = request.getfixturevalue("s3")
    env = {**s3.env(), "ATCON_STORAGE_URL": f"s3://{s3.bucket()}/ward"}
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)  # what open_storage's client reads here
    return env


def test_a_camera_version_scores_that_cameras_videos_only(
    tmp_path, token_setting, tokens, storage_env
):
    data = tmp_path / "data"
    mine = Settings(
        data_dir=tmp_path / "test-view" if storage_env else data,
        storage_url=storage_env.get("ATCON_STORAGE_URL"),
    )
    registry = open_storage(mine).registry()
    day = registry.register(
        _checkpoint(tmp_path / "day.pt", 0), status=VersionStatus.ACTIVE, reason="day"
    )
    night = registry.register(
        _checkpoint(tmp_path / "night.pt", 1), status=VersionStatus.CANDIDATE, reason="night"
    )
    env = {
        **storage_env,
        "ATCON_DATA_DIR": str(data),
        "ATCON_API_TOKENS": token_setting,
        "ATCON_CHECKPOINT": str(tmp_path / "day.pt"),
        "ATCON_EMBEDDED_WORKERS": "1",
        "ATCON_POOL_FRAMES_PER_MINUTE": "60",
    }
    admin = {"Authorization": f"Bearer {tokens[Role.admin]}"}
    operator = {"Authorization": f"Bearer {tokens[Role.operator]}"}
    video = media.video_bytes(frames=12, size=(64, 48), fps=6)
    server = Server(env, tmp_path / "api.log").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:

            def scored_by(camera: str) -> str:
                files = [("camera", (None, camera)), ("file", ("w.mp4", video, "video/mp4"))]
                accepted = http.post("/v1/videos", files=files, headers=operator)
                assert accepted.status_code == 202, accepted.text
                video_id = accepted.json()["video_id"]
                record = wait_for(
                    lambda: (
                        (r := http.get(f"/v1/videos/{video_id}", headers=admin).json())["status"]
                        in ("done", "failed")
                        and r
                    ),
                    120,
                    f"the detection of a {camera} video",
                )
                assert record["status"] == "done", record["error"]
                assert record["camera"] == camera
                events = http.get(f"/v1/videos/{video_id}/events", headers=admin).json()
                assert events["model"]["version"] == record["model_version"]
                # the worker adds the video's frames to the pool after publishing results
                frames = wait_for(
                    lambda: open_storage(mine).frame_pool(48).records(video_ids=[video_id]),
                    60,
                    "the video's frames in the pool",
                )
                assert {f.camera for f in frames} == {camera}
                return str(record["model_version"])

            body = {"cameras": ["night-1"], "reason": "night camera"}
            activated = http.post(f"/v1/models/{night.version}/activate", json=body, headers=admin)
            assert activated.status_code == 200, activated.text
            assert activated.json()["active_for"] == ["night-1"]
            assert scored_by("night-1") == night.version
            assert scored_by("day-1") == day.version

            gone = http.delete("/v1/models/cameras/night-1", headers=admin)
            assert gone.status_code == 204
            assert scored_by("night-1") == day.version
            again = http.post(f"/v1/models/{night.version}/activate", json=body, headers=admin)
            assert again.status_code == 200
            assert scored_by("night-1") == night.version
            listed = http.get("/v1/models", headers=admin).json()
            assert listed["active"] == day.version
            assert listed["cameras"] == {"night-1": night.version}
    finally:
        assert server.stop_cleanly(), server.output()
