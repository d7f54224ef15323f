"""The int8 scoring copy (worker/detection/int8.py): built once beside the checkpoint, checked
against float32, chosen by ``precision="auto"`` on a CPU without native bfloat16."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from synthetic.synth import SynthResult
from worker._exceptions import CheckpointMismatchError
from worker.detection.detector import DetectionConfig, Detector
from worker.detection.int8 import MAX_PROBABILITY_CHANGE, int8_check, int8_path
from worker.video.decode import FrameSampler

pytest.importorskip("torchao")
pytestmark = pytest.mark.slow


def _frames(video: Path, size: int) -> np.ndarray:
    return np.concatenate([b.frames for b in FrameSampler(video, fps=2.0, size=(size, size))])


def test_int8_copy_is_built_checked_and_chosen(
    checkpoint: Path, ward: SynthResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model.pt"
    shutil.copy(checkpoint, model)
    config = DetectionConfig(precision="float32", batch_size=8, maps=False)
    detector = Detector(model, config=config)
    with pytest.raises(CheckpointMismatchError, match="int8 copy"):
        Detector(model, config=DetectionConfig(precision="int8", batch_size=8))
    frames = _frames(ward.video, detector.info.input_size)
    check = detector.build_int8(frames[::2], frames[1::2])
    assert int8_path(model).is_file() and int8_check(model) == check
    assert check["max_probability_change"] <= MAX_PROBABILITY_CHANGE and check["usable"]
    # the CPU class without bfloat16, as the benchmark emulates it
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    auto = Detector(model, config=DetectionConfig(batch_size=8, maps=False))
    assert auto.precision == "int8" and auto.compiled
    a = detector.detect(ward.video, tmp_path / "float32")
    b = auto.detect(ward.video, tmp_path / "int8")
    assert b["model"]["precision"] == "int8"
    sa = np.load(tmp_path / "float32" / "scores.npz")["scores"]
    sb = np.load(tmp_path / "int8" / "scores.npz")["scores"]
    assert np.abs(sa - sb).max() <= MAX_PROBABILITY_CHANGE
    assert [e["label"] for e in a["events"]] == [e["label"] for e in b["events"]]
