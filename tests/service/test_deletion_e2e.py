"""Deleting a video over HTTP removes everything derived from it (a real uvicorn, a real
Redis, a real ``atcon worker detect``): the upload, its results, its pool frames with
their labels and maps, staged results of a killed job, a fine-tune's exported links and
comparison images. A video a model version was trained on is refused with 409 unless
an admin withdraws it, which the version's card then records. Workers sweep orphaned
staging from ``tmp/`` while they run."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests import media
from tests.processes import Process, Server, wait_for
from tests.redis_helpers import DB_CRASH, DB_E2E, flushed_db
from worker.pool.frames import FramePool
from worker.serving.versions import ModelRegistry, VersionStatus
from worker.settings import Role

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def _every_path(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*")]


def _files_naming(root: Path, needles: set[str], *, skip: set[str]) -> list[str]:
    """Files under ``root`` whose path or content holds one of ``needles``."""
    found = []
    for path in root.rglob("*"):
        relative = str(path.relative_to(root))
        if any(n in relative for n in needles):
            found.append(relative)
        elif path.is_file() and relative not in skip:
            content = path.read_bytes()
            if any(n.encode() in content for n in needles):
                found.append(relative)
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory, token_setting):
    """``atcon serve`` and ``atcon worker detect`` on one Redis and data directory."""
    from .test_health import tiny_checkpoint

    base = tmp_path_factory.mktemp("deletion")
    checkpoint = tiny_checkpoint(base / "model.pt", arch="resnet18", thresholds=[0.01, 0.01])
    with flushed_db(DB_E2E) as url:
        env = {
            "ATCON_DATA_DIR": str(base / "data"),
            "ATCON_API_TOKENS": token_setting,
            "ATCON_REDIS_URL": url,
            "ATCON_CHECKPOINT": str(checkpoint),
            "ATCON_POOL_FRAMES_PER_MINUTE": "60",
        }
        server = Server(env, base / "api.log").start()
        worker = Process(["service.cli", "worker", "detect"], env, base / "worker.log").start()
        try:
            yield server, base / "data", checkpoint
        finally:
            worker.stop()
            server.stop()


def _processed_video(http: httpx.Client, headers: dict[Role, dict[str, str]]) -> str:
    video = media.video_bytes(frames=36, size=(64, 48), fps=6)
    accepted = http.post(
        "/v1/videos", files={"file": ("w.mp4", video, "video/mp4")}, headers=headers[Role.operator]
    )
    assert accepted.status_code == 202, accepted.text
    video_id = str(accepted.json()["video_id"])
    job_url = accepted.json()["status_url"]

    def finished():  # the job, not the video: its frames join the pool after the results
        job = http.get(job_url, headers=headers[Role.viewer]).json()
        return job if job["status"] in ("done", "failed") else None

    job = wait_for(finished, 180, "the detection job")
    assert job["status"] == "done", job["error"]
    return video_id


def _headers(tokens) -> dict[Role, dict[str, str]]:
    return {role: {"Authorization": f"Bearer {tokens[role]}"} for role in Role}


def test_delete_removes_everything_derived_from_the_video(stack, tokens):
    server, data, _ = stack
    headers = _headers(tokens)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        video_id = _processed_video(http, headers)
        kept_id = _processed_video(http, headers)  # another patient's video stays whole
        frames = FramePool(data / "frames").records(video_ids=[video_id])
        assert len(frames) >= 2
        frame_ids = {f.frame_id for f in frames}
        first = frames[0].frame_id
        labeled = http.put(
            f"/v1/frames/{first}/labels", json={"labels": ["staff"]}, headers=headers[Role.operator]
        )
        assert labeled.status_code == 200, labeled.text

        def drawn():  # a worker draws the map (202 until it has)
            answer = http.get(f"/v1/frames/{first}/maps/gradcam.png", headers=headers[Role.viewer])
            assert answer.status_code in (200, 202), answer.text
            return answer if answer.status_code == 200 else None

        wait_for(drawn, 120, "the frame's Grad-CAM map")
        assert any((data / "frames" / "maps").glob(f"{first}.*"))
        # what a worker killed mid-job leaves, and a running fine-tune's export
        staging = data / "tmp" / f"results-{video_id}-k1ll3d" / "results" / "maps"
        staging.mkdir(parents=True)
        (staging / "e0_masked.png").write_bytes(b"masked frame of the patient")
        export = data / "tmp" / "finetune-0123" / "data" / "unlabeled"
        export.mkdir(parents=True)
        os.link(data / "frames" / f"{first}.png", export / f"{first}.png")
        assert _files_naming(data, {video_id, *frame_ids}, skip={"audit.log"})

        deleted = http.delete(f"/v1/videos/{video_id}", headers=headers[Role.admin])
        assert deleted.status_code == 204, deleted.text

        assert _files_naming(data, {video_id, *frame_ids}, skip={"audit.log"}) == []
        assert not any(video_id in p for p in _every_path(data))
        viewer = headers[Role.viewer]
        for frame_id in frame_ids:
            for url in (
                f"/v1/frames/{frame_id}",
                f"/v1/frames/{frame_id}/image.png",
                f"/v1/frames/{frame_id}/maps/gradcam.png",
                f"/v1/frames/{frame_id}/maps/guided_backprop.png",
            ):
                answer = http.get(url, headers=viewer)
                assert answer.status_code == 404, (url, answer.status_code)
                assert answer.json()["detail"]
        for url in (f"/v1/videos/{video_id}", f"/v1/videos/{video_id}/events"):
            assert http.get(url, headers=viewer).status_code == 404
        queue = http.get("/v1/frames/review?limit=200", headers=viewer).json()["frames"]
        assert not frame_ids & {f["frame_id"] for f in queue}
        assert FramePool(data / "frames").records(video_ids=[kept_id])
        assert http.get(f"/v1/videos/{kept_id}/events", headers=viewer).status_code == 200


def test_a_video_a_model_was_trained_on_is_withdrawn_not_silently_deleted(stack, tokens):
    server, data, checkpoint = stack
    headers = _headers(tokens)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        video_id = _processed_video(http, headers)
        frames = FramePool(data / "frames").records(video_ids=[video_id])
        # a fine-tune trained on the video's frames, with a comparison on two of them
        overlays = data.parent / "overlays"
        overlays.mkdir(exist_ok=True)
        comparison_frames = []
        attachments: dict[str, str | Path] = {}
        for record in frames[:2]:
            for role in ("parent", "candidate"):
                name = f"{record.frame_id}.{role}.png"
                shutil.copyfile(data / "frames" / f"{record.frame_id}.png", overlays / name)
                attachments[f"comparison/{name}"] = overlays / name
            comparison_frames.append({"frame_id": record.frame_id, "video_id": video_id})
        (overlays / "comparison.json").write_text(json.dumps({"frames": comparison_frames}))
        attachments["comparison.json"] = overlays / "comparison.json"
        card = ModelRegistry(data / "models").register(
            checkpoint,
            status=VersionStatus.CANDIDATE,
            reason="no labeled validation set",
            data={"counts": {"unlabeled": len(frames)}, "video_ids": [video_id]},
            attachments=attachments,
        )

        refused = http.delete(f"/v1/videos/{video_id}", headers=headers[Role.admin])
        assert refused.status_code == 409
        assert card.version in refused.json()["detail"]
        assert "withdraw=true" in refused.json()["detail"]
        assert http.get(f"/v1/videos/{video_id}", headers=headers[Role.viewer]).status_code == 200
        assert FramePool(data / "frames").records(video_ids=[video_id])
        operator = http.delete(
            f"/v1/videos/{video_id}?withdraw=true", headers=headers[Role.operator]
        )
        assert operator.status_code == 403

        withdrawn = http.delete(f"/v1/videos/{video_id}?withdraw=true", headers=headers[Role.admin])
        assert withdrawn.status_code == 204, withdrawn.text
        assert http.get(f"/v1/videos/{video_id}", headers=headers[Role.viewer]).status_code == 404
        for record in frames:
            answer = http.get(
                f"/v1/frames/{record.frame_id}/image.png", headers=headers[Role.viewer]
            )
            assert answer.status_code == 404
        model = http.get(f"/v1/models/{card.version}", headers=headers[Role.admin]).json()
        assert len(model["withdrawn"]) == 1
        entry = model["withdrawn"][0]
        assert entry["video_id"] == video_id and entry["by"] == "admin"
        assert entry["frames"] == len(frames) and entry["at"]
        assert "withdrawn" in model["history"][-1]["reason"]
        assert model["status"] == "candidate"  # the weights and status are unchanged
        version_dir = data / "models" / card.version
        assert not any((version_dir / "comparison").glob("*.png"))
        comparison = json.loads((version_dir / "comparison.json").read_text())
        assert comparison["frames"] == [] and comparison["frames_withdrawn"] == 2
        names = {video_id, *(f.frame_id for f in frames)}
        assert (
            _files_naming(data, names, skip={"audit.log", f"models/{card.version}/card.json"}) == []
        )


def test_workers_sweep_orphaned_staging_while_they_run(tmp_path):
    """A worker killed mid-job leaves ``tmp/results-<video_id>-*``; a running worker
    removes such entries once nothing in them changed for ``ATCON_TMP_MAX_AGE_S``."""
    data = tmp_path / "data"
    tmp = data / "tmp"
    orphan = tmp / "results-0123456789abcdef0123456789abcdef-x1"
    (orphan / "results" / "maps").mkdir(parents=True)
    (orphan / "results" / "maps" / "e0_masked.png").write_bytes(b"patient")
    busy = tmp / "results-fedcba9876543210fedcba9876543210-x2"  # a job still writing
    busy.mkdir()
    (busy / "scores.npz").write_bytes(b"fresh")
    hour_ago = time.time() - 2 * 3600
    for path in (orphan, orphan / "results", orphan / "results" / "maps", busy):
        os.utime(path, (hour_ago, hour_ago))
    os.utime(orphan / "results" / "maps" / "e0_masked.png", (hour_ago, hour_ago))
    with flushed_db(DB_CRASH) as url:
        env = {
            "ATCON_DATA_DIR": str(data),
            "ATCON_REDIS_URL": url,
            "ATCON_TMP_SWEEP_INTERVAL_S": "0.5",
            "ATCON_TMP_MAX_AGE_S": "3600",
        }
        worker = Process(["service.cli", "worker", "detect"], env, tmp_path / "w.log").start()
        try:
            wait_for(lambda: not orphan.exists(), 60, "the orphaned staging swept")
            assert worker.alive(), worker.output()
            assert busy.is_dir()  # its file is young: a job in progress is left alone
            assert "swept 1 orphaned entry" in worker.output()
        finally:
            worker.stop()
