"""Fine-tuning end to end over HTTP: real uvicorn, real Redis, real worker processes.

Videos are processed by ``atcon worker detect`` (which feeds the frame pool), a
clinician labels frames through the API, ``POST /v1/finetune`` is consumed by
``atcon worker finetune``, and the new version is inspected, activated and rolled
back over HTTP. Twice: on the local backend (one data directory shared by the three
processes) and on the object store (a real S3-compatible server, the session fixture
``s3``; each process with its own data directory and checkpoint copy, sharing nothing
but Redis and the bucket).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
import torch

from models.backbones import build_backbone
from models.checkpoint import CheckpointInfo, save_checkpoint
from synthetic.synth import SynthConfig, synthesize
from tests.processes import Process, Server, wait_for
from tests.redis_helpers import DB_FINETUNE_E2E, flushed_db
from tests.s3_helpers import own_process_env
from worker.settings import Role

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def _checkpoint(path, classes):
    torch.manual_seed(0)
    model = build_backbone("resnet18_slim", len(classes), width=8)
    info = CheckpointInfo(
        arch="resnet18_slim",
        class_names=classes,
        input_size=48,
        arch_kwargs={"width": 8},
        thresholds=[0.3] * len(classes),
    )
    save_checkpoint(path, model, info)
    return path


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path):
    """``(env_of(name), read(relative path))``: each process's storage settings, and how
    the test reads a stored file (from the shared directory, or from the bucket)."""
    if request.param == "local":
        data = tmp_path / "data"

        def shared(name: str) -> dict[str, str]:
            return {"ATCON_DATA_DIR": str(data)}

        return shared, lambda relative: (data / relative).read_bytes()
    s3 = request.getfixturevalue("s3")
    bucket = s3.bucket()

    def own(name: str) -> dict[str, str]:  # nothing shared but Redis and the bucket
        return {**s3.env(), "ATCON_STORAGE_URL": f"s3://{bucket}/ward", "ATCON_DATA_DIR": ""}

    def read(relative: str) -> bytes:
        body = s3.client().get_object(Bucket=bucket, Key=f"ward/{relative}")["Body"]
        return bytes(body.read())

    return own, read


def test_process_label_finetune_activate_roll_back(tmp_path, token_setting, tokens, backend):
    storage_env: Callable[[str], dict[str, str]] = backend[0]
    read_stored: Callable[[str], bytes] = backend[1]
    synth = synthesize(tmp_path / "synth", SynthConfig(seconds=30, fps=6, width=128, height=96))
    classes = (synth.frames_dir / "classes.txt").read_text().split()
    checkpoint = _checkpoint(tmp_path / "model.pt", classes)
    headers = {role: {"Authorization": f"Bearer {tokens[role]}"} for role in Role}

    with flushed_db(DB_FINETUNE_E2E) as url:
        common = {
            "ATCON_API_TOKENS": token_setting,
            "ATCON_REDIS_URL": url,
            "ATCON_POOL_FRAMES_PER_MINUTE": "60",
            "ATCON_POOL_VAL_FRACTION": "0.5",
            "ATCON_FINETUNE_STEPS": "4",
            "ATCON_FINETUNE_BATCH_SIZE": "4",
        }

        def env(name: str) -> dict[str, str]:
            own = storage_env(name)
            if own["ATCON_DATA_DIR"]:
                return {**common, **own, "ATCON_CHECKPOINT": str(checkpoint)}
            return own_process_env(tmp_path, name, checkpoint, {**common, **own})

        server = Server(env("api"), tmp_path / "api.log").start()
        detect = Process(["service.cli", "worker", "detect"], env("d"), tmp_path / "d.log").start()
        finetune = Process(
            ["service.cli", "worker", "finetune"], env("f"), tmp_path / "f.log"
        ).start()
        base = server.url
        try:
            upload = httpx.post(
                f"{base}/v1/videos",
                files={"file": ("ward.mp4", synth.video.read_bytes(), "video/mp4")},
                headers=headers[Role.operator],
                timeout=30,
            )
            assert upload.status_code == 202, upload.text

            def finished(status_url):
                job = httpx.get(base + status_url, headers=headers[Role.viewer]).json()
                return job if job["status"] in ("done", "failed") else None

            job = wait_for(lambda: finished(upload.json()["status_url"]), 240, "detection")
            assert job["status"] == "done", (job, detect.output())

            review = httpx.get(
                f"{base}/v1/frames/review?limit=200", headers=headers[Role.viewer], timeout=60
            ).json()["frames"]
            assert len(review) >= 20, "the detection job adds about one frame a second"
            for frame in review[:12]:  # a clinician labels the least consistent frames
                answer = httpx.put(
                    f"{base}/v1/frames/{frame['frame_id']}/labels",
                    json={"labels": [classes[0]] if frame["time_s"] < 15 else []},
                    headers=headers[Role.operator],
                )
                assert answer.status_code == 200, answer.text

            started = httpx.post(
                f"{base}/v1/finetune",
                json={"steps": 4, "compare_videos": True},  # whatever the gate decides
                headers=headers[Role.admin],
            )
            assert started.status_code == 202, started.text
            job = wait_for(lambda: finished(started.json()["status_url"]), 300, "the fine-tune")
            assert job["status"] == "done", (job, finetune.output())
            assert job["detail"]["phase"] == "done"

            models = httpx.get(f"{base}/v1/models", headers=headers[Role.viewer]).json()
            cards = {card["version"]: card for card in models["versions"]}
            assert set(cards) == {"v0001", "v0002"}
            card = cards["v0002"]
            assert card["parent"] == "v0001"
            # the new version detected again on the recent video, beside the served events
            disagreements = json.loads(read_stored("models/v0002/disagreements.json"))
            (video,) = disagreements["videos"]
            assert video["video_id"] == upload.json()["video_id"] and "error" not in video, video
            assert disagreements["summary"]["videos"] == 1
            counts = card["data"]["counts"]
            assert counts["train"] + counts["val"] == 12  # the labels reached the fine-tune
            assert card["config"]["trigger"] == "api"

            admin = headers[Role.admin]
            if card["status"] == "rejected":
                assert models["active"] == "v0001"
            else:
                if models["active"] != "v0002":
                    activated = httpx.post(f"{base}/v1/models/v0002/activate", headers=admin)
                    assert activated.status_code == 200, activated.text
                back = httpx.post(
                    f"{base}/v1/models/v0001/activate", json={"reason": "roll back"}, headers=admin
                )
                assert back.status_code == 200, back.text
                after = httpx.get(f"{base}/v1/models", headers=headers[Role.viewer]).json()
                assert after["active"] == "v0001"
                assert {c["version"]: c["status"] for c in after["versions"]}["v0002"] == "retired"
        finally:
            for process in (finetune, detect):
                process.stop()
            assert server.stop_cleanly(), server.output()
