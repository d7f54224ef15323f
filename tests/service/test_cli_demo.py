"""``atcon demo`` runs end to end through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image


def test_demo_writes_maps_and_reports_the_loss(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "demo", "--out", str(out), "--image-size", "96"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    summary = json.loads(result.stdout)
    assert -1.0 <= summary["atcon_loss"] <= 1.0
    assert summary["attention_consistency"] == -summary["atcon_loss"]
    for name in ("frame.png", "gradcam_overlay.png", "guided_backprop.png"):
        with Image.open(out / name) as image:
            assert image.size == (96, 96)
    assert not list(out.glob("*.tmp"))


def test_unknown_command_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
