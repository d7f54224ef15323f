"""``atcon train --resume`` and ``atcon finetune --resume``: a run killed after a
training checkpoint continues from it and ends with the weights of a run never
interrupted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

import models.training
from models.checkpoint import load_checkpoint
from service.cli import main

from .test_train_cli import _train_args, data, trained  # noqa: F401 - fixtures

SAVE_EVERY = ["--save-every", "2", "--atcon-steps", "5"]


class Killed(BaseException):
    """Stands for the process being killed (nothing catches it but the test)."""


def _kill_after(monkeypatch: pytest.MonkeyPatch, phase: str, step: int) -> None:
    """Make the run stop right after it saved ``phase``'s state before ``step``."""
    real = models.training.save_training_state

    def save_then_die(path: Path, **kwargs: object) -> None:
        real(path, **kwargs)  # type: ignore[arg-type]
        if path.name.startswith(phase) and kwargs["step"] == step:
            raise Killed(f"{phase} at step {step}")

    monkeypatch.setattr(models.training, "save_training_state", save_then_die)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model, _info = load_checkpoint(path)
    return model.state_dict()


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = _weights(a), _weights(b)
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert different == []


@pytest.mark.slow
@pytest.mark.parametrize("phase,step", [("supervised", 2), ("atcon-alternating", 4)])
def test_a_resumed_train_run_ends_with_the_uninterrupted_weights(
    data,  # noqa: F811
    tmp_path,
    monkeypatch,
    caplog,
    phase,
    step,
):
    labeled, unlabeled = data
    caplog.set_level(logging.INFO, logger="models.resume")
    whole = tmp_path / "whole.pt"
    assert main([*_train_args(labeled, unlabeled, whole), *SAVE_EVERY]) == 0
    assert not (tmp_path / "whole.pt.work").exists()  # removed once the run ended

    resumed = tmp_path / "resumed.pt"
    args = [*_train_args(labeled, unlabeled, resumed), *SAVE_EVERY]
    with monkeypatch.context() as patch:
        _kill_after(patch, phase, step)
        with pytest.raises(Killed):
            main(args)
    assert not resumed.exists() and any((tmp_path / "resumed.pt.work").iterdir())
    assert main([*args, "--resume"]) == 0
    assert f"resuming {phase}.state.pt at step {step}" in caplog.text
    _assert_same_weights(whole, resumed)


@pytest.mark.slow
def test_a_resumed_finetune_ends_with_the_uninterrupted_weights(
    data,  # noqa: F811
    trained,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    labeled, unlabeled = data

    def args(out: Path) -> list[str]:
        return [
            "finetune",
            "--checkpoint",
            str(trained),
            "--unlabeled",
            str(unlabeled),
            "--labeled",
            str(labeled),
            "--steps",
            "5",
            "--batch-size",
            "4",
            "--unlabeled-batch-size",
            "4",
            "--save-every",
            "2",
            "--force",
            "--out",
            str(out),
            "--no-progress",
        ]

    whole, resumed = tmp_path / "whole.pt", tmp_path / "resumed.pt"
    assert main(args(whole)) == 0
    with monkeypatch.context() as patch:
        _kill_after(patch, "atcon-alternating", 4)
        with pytest.raises(Killed):
            main(args(resumed))
    assert main([*args(resumed), "--resume"]) == 0
    _assert_same_weights(whole, resumed)


def test_resume_needs_a_checkpoint_of_the_same_run(
    data,  # noqa: F811
    tmp_path,
    monkeypatch,
    caplog,
):
    labeled, unlabeled = data
    out = tmp_path / "model.pt"
    args = [*_train_args(labeled, unlabeled, out), *SAVE_EVERY]
    caplog.set_level(logging.ERROR)
    assert main([*args, "--resume"]) == 1
    assert "nothing to resume" in caplog.text and not out.exists()

    with monkeypatch.context() as patch:
        _kill_after(patch, "supervised", 2)
        with pytest.raises(Killed):
            main(args)
    caplog.clear()
    assert main([*args, "--lr", "5e-3", "--resume"]) == 1  # another learning rate
    assert "other settings" in caplog.text and "lr" in caplog.text and not out.exists()
