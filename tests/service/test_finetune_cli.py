"""``atcon finetune --nightly``: what the scheduler does, once, for an outside cron."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import redis

from tests.redis_helpers import DB_FINETUNE_E2E, flushed_db
from worker.pool.frames import FramePool
from worker.storage import Storage

pytestmark = pytest.mark.redis


def _nightly(env: dict[str, str], *extra: str) -> tuple[int, dict, str]:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "finetune", "--nightly", *extra],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    return result.returncode, json.loads(result.stdout or "{}"), result.stderr


def test_nightly_queues_only_when_enough_new_frames(tmp_path) -> None:
    with flushed_db(DB_FINETUNE_E2E) as url:
        env = {
            "ATCON_DATA_DIR": str(tmp_path / "data"),
            "ATCON_REDIS_URL": url,
            "ATCON_FINETUNE_MIN_NEW_FRAMES": "3",
        }
        code, answer, _ = _nightly(env)
        assert code == 0 and answer["queued"] is False
        assert "only 0 new frames" in answer["reason"]

        pool = FramePool(Storage(tmp_path / "data").frames, 32)
        for _ in range(3):
            pool.add_frame(np.zeros((32, 32, 3), dtype=np.uint8))
        code, answer, _ = _nightly(env)
        assert code == 0 and answer["queued"] is True
        client = redis.Redis.from_url(url, decode_responses=True)
        assert client.hget(f"atcon:job:{answer['job_id']}", "kind") == "finetune"

        code, answer, _ = _nightly(env)  # one is queued already: not a second
        assert answer["queued"] is False and "already queued" in answer["reason"]


def test_nightly_for_one_camera(tmp_path) -> None:
    with flushed_db(DB_FINETUNE_E2E) as url:
        env = {
            "ATCON_DATA_DIR": str(tmp_path / "data"),
            "ATCON_REDIS_URL": url,
            "ATCON_FINETUNE_MIN_NEW_FRAMES": "3",
        }
        pool = FramePool(Storage(tmp_path / "data").frames, 32)
        for camera in ["night-1"] * 3 + ["day-1"]:
            pool.add_frame(np.zeros((32, 32, 3), dtype=np.uint8), camera=camera)
        code, answer, _ = _nightly(env, "--camera", "day-1")
        assert code == 0 and answer["queued"] is False and answer["camera"] == "day-1"
        assert "only 1 new frames for camera day-1" in answer["reason"]
        code, answer, _ = _nightly(env, "--camera", "night-1")
        assert code == 0 and answer["queued"] is True, answer
        client = redis.Redis.from_url(url, decode_responses=True)
        payload = json.loads(client.hget(f"atcon:job:{answer['job_id']}", "payload") or "{}")
        assert payload["request"] == {"camera": "night-1"}

        code, _, stderr = _nightly(env, "--camera", "../night-1")
        assert code == 2 and "1 to 64 letters" in stderr


def test_nightly_needs_redis(tmp_path) -> None:
    env = {"ATCON_DATA_DIR": str(tmp_path / "data"), "ATCON_REDIS_URL": ""}
    code, _, stderr = _nightly(env)
    assert code == 2 and "ATCON_REDIS_URL" in stderr


def test_finetune_without_nightly_names_missing_flags(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "finetune", "--checkpoint", "m.pt"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "--unlabeled, --out" in result.stderr
