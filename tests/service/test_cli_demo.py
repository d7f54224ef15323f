"""``atcon demo`` runs the main job end to end through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _demo(out: Path, *extra: str) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "demo",
            "--out",
            str(out),
            "--no-progress",
            "--seconds",
            "20",
            "--train-steps",
            "15",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(result.stdout)


def test_demo_synthesises_trains_detects_and_scores(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    summary = _demo(out)
    assert summary["model"]["cached"] is False
    assert Path(summary["model"]["checkpoint"]).is_file()
    assert summary["ground_truth_events"] > 0
    assert set(summary["event_f1"]) == {"0.3", "0.5", "0.7"}
    assert all(0.0 <= v <= 1.0 for v in summary["event_f1"].values())
    events = json.loads((out / "results" / "events.json").read_text())
    assert len(events["events"]) == len(summary["events"])
    for event in events["events"]:
        for name in event["maps"].values():
            assert (out / "results" / name).is_file()
    again = _demo(out)  # the second run reuses the model trained by the first
    assert again["model"]["cached"] is True
    assert again["event_f1"] == summary["event_f1"]


def test_unknown_command_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
