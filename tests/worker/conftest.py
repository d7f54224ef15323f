"""Fixtures of the worker tests: the shared detection inputs, made once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic.synth import SynthResult
from tests.worker.detect_inputs import make_checkpoint, make_ward


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("checkpoint") / "model.pt")


@pytest.fixture(scope="module")
def ward(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return make_ward(tmp_path_factory.mktemp("ward"))
