"""PyTorch's threads for a worker process (worker/runtime/threads.py): chosen once, at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from synthetic.synth import SynthResult
from worker.runtime import threads


@pytest.mark.parametrize(
    ("cores", "decoder", "expected"),
    [(2, 0.7, 1), (2, 1.5, 1), (2, 0.0, 2), (4, 0.7, 3), (8, 1.4, 6), (1, 1.0, 1), (4, -1, 3)],
)
def test_threads_are_the_cores_the_decoder_leaves(cores: float, decoder: float, expected: int):
    assert threads.choose_torch_threads(cores, decoder) == expected


def test_available_cores_is_positive() -> None:
    assert threads.available_cores() >= 1


def test_decoder_load_is_measured(ward: SynthResult) -> None:
    assert 0 < threads.measure_decoder_cores(video=ward.video) < 64


def test_configure_sets_torch_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "_configured", None)
    previous = torch.get_num_threads()
    try:
        assert threads.configure_torch_threads(2) == 2
        assert torch.get_num_threads() == 2
        assert threads.configure_torch_threads(1) == 2  # once per process
    finally:
        torch.set_num_threads(previous)


def test_detection_leaves_the_process_threads_alone(
    checkpoint: Path, ward: SynthResult, tmp_path: Path
) -> None:
    """The worker chose the count at start-up; a detection neither changes it while it
    runs nor after."""
    from worker.detection.detector import DetectionConfig, Detector

    seen: list[int] = []
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        detector = Detector(checkpoint, config=DetectionConfig(maps=False))
        detector.detect(
            ward.video, tmp_path / "o", progress=lambda _: seen.append(torch.get_num_threads())
        )
        assert set(seen) == {2} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
