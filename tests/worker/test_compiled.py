"""The compiled scoring model: same scores as the eager one, never a reason to fail."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._inductor import config as inductor_config

from synthetic.synth import SynthResult
from worker.detection.compiled import outputs_agree
from worker.detection.detector import DetectionConfig, Detector


def _config(**overrides: object) -> DetectionConfig:
    """Batches of 8 over the ward's 20 samples: 8, 8 and 4 (the last one padded)."""
    values: dict = {"precision": "float32", "batch_size": 8, "maps": False}
    values.update(overrides)
    return DetectionConfig(**values)


def _scores(detector: Detector, ward: SynthResult, out: Path) -> np.ndarray:
    detector.detect(ward.video, out)
    scores: np.ndarray = np.load(out / "scores.npz")["scores"]
    return scores


@pytest.mark.slow
def test_compiled_scoring_gives_the_eager_scores(
    checkpoint: Path, ward: SynthResult, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    eager = Detector(checkpoint, config=_config())
    assert not eager.compiled
    with caplog.at_level(logging.INFO, logger="worker.detection.compiled"):
        compiled = Detector(checkpoint, config=_config(compile=True))
    assert compiled.compiled
    assert "compiled in" in caplog.text
    np.testing.assert_allclose(
        _scores(compiled, ward, tmp_path / "compiled"),
        _scores(eager, ward, tmp_path / "eager"),
        atol=1e-5,
    )


@pytest.mark.slow
def test_without_a_cpp_compiler_the_eager_model_scores(
    checkpoint: Path, ward: SynthResult, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = {"cpp.cxx": (str(tmp_path / "no-such-g++"),), "fx_graph_cache": False}
    with (
        inductor_config.patch(missing),
        caplog.at_level(logging.WARNING, logger="worker.detection.compiled"),
    ):
        detector = Detector(checkpoint, config=_config(compile=True))
    assert not detector.compiled
    assert "could not compile the scoring model" in caplog.text
    eager = Detector(checkpoint, config=_config())
    np.testing.assert_allclose(
        _scores(detector, ward, tmp_path / "a"), _scores(eager, ward, tmp_path / "b"), atol=1e-6
    )


def test_outputs_agree_within_the_rounding_of_the_dtype() -> None:
    expected = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    assert outputs_agree(expected + 1e-4, expected, torch.float32)
    assert not outputs_agree(expected + 0.1, expected, torch.float32)
    assert outputs_agree(expected + 0.05, expected, torch.bfloat16)
    assert not outputs_agree(-expected, expected, torch.bfloat16)
    assert not outputs_agree(expected[:1], expected, torch.float32)
    broken = expected.clone()
    broken[0, 0] = float("nan")
    assert not outputs_agree(broken, expected, torch.bfloat16)
