"""Synthetic ward videos: the script, the pictures, the files and the labeled frames."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from worker.synth import (
    CLASSES,
    SynthConfig,
    WardScene,
    load_ground_truth,
    make_script,
    synthesize,
)
from worker.video import probe


def test_script_is_seeded_and_consistent() -> None:
    events = make_script(120.0, np.random.default_rng(3))
    assert events == make_script(120.0, np.random.default_rng(3))
    assert events != make_script(120.0, np.random.default_rng(4))
    assert {e.label for e in events} == set(CLASSES)
    assert all(0 <= e.start_s < e.end_s <= 120.0 and e.end_s - e.start_s >= 1.0 for e in events)
    patient = sorted(
        (e for e in events if e.label in ("patient_sitting", "bed_exit")), key=lambda e: e.start_s
    )
    assert all(a.end_s <= b.start_s for a, b in itertools.pairwise(patient))


def _scene_without_noise(seconds: float = 120.0, seed: int = 3) -> WardScene:
    events = make_script(seconds, np.random.default_rng(seed))
    return WardScene(320, 240, events, seed=seed, noise=0.0)


def _scrubs_pixels(image: np.ndarray) -> int:
    r, g, b = (image[..., k].astype(int) for k in range(3))
    return int(((b > 140) & (r < 70) & (g < 120)).sum())


def _saturation(image: np.ndarray) -> float:
    return float((image.max(axis=2).astype(int) - image.min(axis=2)).mean())


def test_pictures_show_what_the_labels_say() -> None:
    scene = _scene_without_noise()
    for t in np.arange(0.25, 120.0, 0.5):
        labels = scene.labels(float(t))
        image = scene.render(float(t))
        assert image.shape == (240, 320, 3) and image.dtype == np.uint8
        if "lights_dimmed" in labels:
            assert _saturation(image) < 1.0, t
            continue
        assert _saturation(image) > 10.0, t
        assert (_scrubs_pixels(image) > 300) == ("staff_present" in labels), t


def test_patient_poses_differ() -> None:
    scene = _scene_without_noise()
    lying = scene.render(0.0)
    by_label = {}
    for t in np.arange(0.25, 120.0, 0.5):
        labels = scene.labels(float(t))
        if len(labels) == 1 and labels[0] in ("patient_sitting", "bed_exit"):
            by_label.setdefault(labels[0], scene.render(float(t)))
    assert set(by_label) == {"patient_sitting", "bed_exit"}
    for image in by_label.values():
        assert np.abs(image.astype(int) - lying).mean() > 1.0


def test_synthesize_writes_video_truth_and_labeled_frames(tmp_path: Path) -> None:
    config = SynthConfig(seconds=12.0, fps=10.0, width=160, height=120, seed=5, frames_fps=2.0)
    result = synthesize(tmp_path, config, name="clip")
    info = probe(result.video)
    assert (info.codec, info.width, info.height) == ("h264", 160, 120)
    assert info.fps == pytest.approx(10.0)
    assert info.duration_s == pytest.approx(12.0, abs=0.1)

    truth = json.loads(result.ground_truth.read_text())
    assert truth["schema_version"] == 1 and truth["classes"] == list(CLASSES)
    assert load_ground_truth(result.ground_truth) == result.events

    assert result.frames_dir is not None
    assert (result.frames_dir / "classes.txt").read_text().split() == list(CLASSES)
    with open(result.frames_dir / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == result.labeled_frames == 24
    for k, row in enumerate(rows):
        assert (result.frames_dir / row["path"]).is_file()
        t = k / 2.0  # 10 fps source sampled at 2 fps: frames at 0, 0.5, 1.0, ...
        expected = [c for c in CLASSES if any(e.label == c and e.active(t) for e in result.events)]
        assert row["labels"] == "|".join(expected)


def test_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="width and height"):
        SynthConfig(width=63)
    with pytest.raises(ValueError, match="seconds"):
        SynthConfig(seconds=0)
    with pytest.raises(ValueError, match="crf"):
        SynthConfig(crf=60)


def test_synth_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["synth", "--out", str(out), "--seconds", "4", "--fps", "5", "--size", "96x64"]
    assert main([*argv, "--videos", "2", "--frames-fps", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [Path(v["video"]).name for v in summary["videos"]] == ["ward-0.mp4", "ward-1.mp4"]
    assert summary["labeled_frames"] == 8
    with open(out / "frames" / "labels.csv", newline="") as fh:
        paths = [row["path"] for row in csv.DictReader(fh)]
    assert sum(p.startswith("images/ward-1-") for p in paths) == 4
