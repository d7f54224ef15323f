"""The API process does not import the ML stack: torch, torchvision and PyAV stay out.

Checked in a fresh interpreter, since this test process imports torch for others.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "av", "matplotlib")

_PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _heavy_after_import(module: str) -> list[str]:
    code = _PROBE.format(module=module, heavy=HEAVY)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "module",
    [
        "service.main",
        "service.cli",
        "worker.settings",
        "worker.queue.interface",
        "worker.serving.versions",
        "worker.pool.scoring",
        "models",
        "models.checkpoint_info",
    ],
)
def test_the_api_side_imports_no_ml_stack(module: str) -> None:
    assert _heavy_after_import(module) == [], f"importing {module} loads the ML stack"


def test_the_app_serves_without_the_ml_stack(tmp_path: Path) -> None:
    """Not only the import: the app starts, answers ``/readyz`` from a real checkpoint
    (read without torch) and lists the review queue, all without the ML stack."""
    from .test_health import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "model.pt")
    code = f"""
import json, sys
from fastapi.testclient import TestClient
from service.main import create_app
from worker.settings import Settings
settings = Settings(data_dir={str(tmp_path / "data")!r}, dev=True, checkpoint={str(checkpoint)!r})
with TestClient(create_app(settings, workers=0)) as client:
    ready = client.get("/readyz")
    review = client.get("/v1/frames/review")
    pages = client.get("/review")
print(json.dumps([ready.status_code, review.status_code, pages.status_code,
                  sorted(m for m in {HEAVY!r} if m in sys.modules)]))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    ready, review, pages, loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert (ready, review, pages) == (200, 200, 200)
    assert loaded == [], "serving requests loads the ML stack"
