"""Compiled scoring packages: built once, loaded after, rebuilt when damaged, never fatal."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.worker.test_detect import make_checkpoint
from worker.compiled import package_key
from worker.detect import DetectionConfig, Detector
from worker.synth import SynthConfig, SynthResult, synthesize

pytestmark = pytest.mark.slow  # each build runs g++ for about half a minute


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("checkpoint") / "model.pt")


@pytest.fixture(scope="module")
def ward(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    # 10 s at 2 samples/s: 20 frames, batches of 8, 8 and 4 (the last one padded)
    config = SynthConfig(seconds=10.0, fps=10.0, width=160, height=120, seed=1)
    return synthesize(tmp_path_factory.mktemp("ward"), config, frames=False)


def _config(cache: Path, **overrides: object) -> DetectionConfig:
    values: dict = {"precision": "float32", "batch_size": 8, "maps": False}
    values.update(overrides)
    return DetectionConfig(compile_cache_dir=cache, **values)


def _scores(detector: Detector, ward: SynthResult, out: Path) -> np.ndarray:
    detector.detect(ward.video, out)
    scores: np.ndarray = np.load(out / "scores.npz")["scores"]
    return scores


def test_a_package_is_built_once_then_loaded_and_scores_like_the_eager_model(
    checkpoint: Path, ward: SynthResult, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    eager = _scores(Detector(checkpoint, config=_config(cache)), ward, tmp_path / "eager")
    assert not cache.exists()  # nothing compiled unless asked

    with caplog.at_level(logging.INFO, logger="worker.compiled"):
        built = Detector(checkpoint, config=_config(cache, compile=True))
    assert built.compiled
    assert "compiled in" in caplog.text
    (package,) = cache.iterdir()
    assert package.suffix == ".pt2" and not package.name.startswith(".")
    np.testing.assert_allclose(_scores(built, ward, tmp_path / "built"), eager, atol=1e-5)

    caplog.clear()
    stamp = package.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="worker.compiled"):
        loaded = Detector(checkpoint, config=_config(cache, compile=True))
    assert loaded.compiled
    assert "loaded the compiled scoring model" in caplog.text
    assert "compiling" not in caplog.text
    assert [p.name for p in cache.iterdir()] == [package.name]
    assert package.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(_scores(loaded, ward, tmp_path / "loaded"), eager, atol=1e-5)

    # a damaged package is noticed on load, deleted and built again
    package.write_bytes(b"not a package" * 100)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="worker.compiled"):
        rebuilt = Detector(checkpoint, config=_config(cache, compile=True))
    assert rebuilt.compiled
    assert "is unusable" in caplog.text and "compiled in" in caplog.text
    assert [p.name for p in cache.iterdir()] == [package.name]
    np.testing.assert_allclose(_scores(rebuilt, ward, tmp_path / "rebuilt"), eager, atol=1e-5)


def test_when_nothing_can_be_built_the_eager_model_scores(
    checkpoint: Path, ward: SynthResult, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be\n")
    with caplog.at_level(logging.WARNING, logger="worker.compiled"):
        detector = Detector(checkpoint, config=_config(blocker, compile=True))
    assert not detector.compiled
    assert "could not compile the scoring model" in caplog.text
    eager = Detector(checkpoint, config=_config(tmp_path / "unused"))
    np.testing.assert_allclose(
        _scores(detector, ward, tmp_path / "a"), _scores(eager, ward, tmp_path / "b"), atol=1e-6
    )
    assert blocker.read_text() == "a file where the cache folder should be\n"


def test_the_cache_key_names_everything_a_package_depends_on() -> None:
    x = torch.zeros(8, 3, 64, 64)
    base = package_key(x, {"checkpoint_sha256": "a"})
    assert package_key(x, {"checkpoint_sha256": "a"}) == base
    assert package_key(x, {"checkpoint_sha256": "b"}) != base
    assert package_key(torch.zeros(4, 3, 64, 64), {"checkpoint_sha256": "a"}) != base
    assert package_key(x.bfloat16(), {"checkpoint_sha256": "a"}) != base
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert package_key(channels_last, {"checkpoint_sha256": "a"}) != base
    previous = torch.get_num_threads()
    torch.set_num_threads(previous + 1)
    try:
        assert package_key(x, {"checkpoint_sha256": "a"}) != base
    finally:
        torch.set_num_threads(previous)
