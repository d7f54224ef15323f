"""bench/gpu_check.py cannot rot: its CPU dry run runs every check at tiny sizes, and
without a device and without ``--allow-cpu`` it refuses with status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ("maps", "detect", "atcon_step", "finetune", "distributed")

pytestmark = pytest.mark.slow


def run_check(*args: str, cuda: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run even where a device is present
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_without_a_device_it_refuses_and_says_how_to_dry_run():
    done = run_check()
    assert done.returncode == 2, done.stderr
    assert "no CUDA device" in done.stderr and "--allow-cpu" in done.stderr
    assert done.stdout == ""


def test_the_cpu_dry_run_prints_every_figure(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = run_check(
        "--allow-cpu", "--tiny", "--cache", str(tmp_path / "cache"), "--json", str(out)
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)  # stdout is the JSON table and nothing else
    assert report == json.loads(out.read_text())
    assert report["failed"] is None and report["meta"]["device_type"] == "cpu"
    figures = {(row["check"], row["figure"]): row["value"] for row in report["rows"]}
    assert {check for check, _ in figures} == set(CHECKS)
    assert figures["maps", "gradcam_max_dev"] <= figures["maps", "tolerance"]
    assert figures["detect", "detect_over_decode"] > 0
    assert figures["detect", "realtime_factor"] > 0
    assert figures["atcon_step", "batched_speedup"] > 0
    assert figures["finetune", "frames_per_s"] > 0
    assert figures["distributed", "backend"] == "gloo"  # NCCL needs CUDA
    assert figures["distributed", "replica_max_abs_diff"] == 0.0
    assert figures["distributed", "world_size"] == 2


def test_a_failing_check_stops_the_run_and_names_itself(tmp_path):
    """A map tolerance no device can meet (negative) fails the first check, clearly."""
    done = run_check("--allow-cpu", "--tiny", "--map-tolerance", "-1")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["failed"]["check"] == "maps" and report["rows"] == []
    assert "gpu check maps failed" in done.stderr
