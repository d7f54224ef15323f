"""Resumable training: periodic checkpoints of a run, and continuing from the last one.

As in torchvision's reference scripts, a training checkpoint holds everything the
next step depends on, so a resumed run reaches the same weights as one that was never
interrupted (on the same device and thread count):

- the model's and the optimiser's ``state_dict``;
- the step to run next, and the history so far;
- every random number generator a step draws from: torch's (CPU and CUDA), Python's,
  NumPy's, and the run's own seeded ``torch.Generator`` objects;
- the step function's other state, by name (batch iterators, the collapse guard, the
  running gradient norms): each a :class:`Stateful` object, a ``torch.Generator``, or
  a ``dict`` / ``list`` restored in place;
- the run's ``fingerprint`` (its configuration, data sizes, starting weights): a
  checkpoint whose fingerprint differs from the run's is refused with
  :class:`~models.ResumeError` naming what differs.

:class:`Checkpointing` says where (one file per training phase and process under
``directory``, written atomically), how often, and whether to resume. The
:class:`~models.training.Trainer` does the saving and the loading.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ._exceptions import ResumeError
from .atomic import atomic_path

__all__ = [
    "RESUME_FORMAT",
    "Checkpointing",
    "Stateful",
    "load_training_state",
    "save_training_state",
]

logger = logging.getLogger(__name__)

#: the ``format`` of a training checkpoint
RESUME_FORMAT = "atcon-training-state/1"
_SUFFIX = ".state.pt"


@runtime_checkable
class Stateful(Protocol):
    """An object whose state a training checkpoint saves and restores."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Checkpointing:
    """Where and how often a run saves its training state, and whether it resumes.

    ``run`` is the caller's description of the run (configuration, data, starting
    weights); each training phase adds its own, and a checkpoint is resumed only when
    the whole fingerprint matches.
    """

    directory: Path
    every_steps: int = 50
    resume: bool = False
    run: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if self.every_steps < 1:
            raise ValueError(f"every_steps must be at least 1, got {self.every_steps}")

    def path(self, phase: str, rank: int = 0, world_size: int = 1) -> Path:
        """The checkpoint file of one training phase (and process, when several)."""
        name = phase or "train"
        if world_size > 1:
            name += f".rank{rank}"
        return self.directory / f"{name}{_SUFFIX}"

    def saved(self) -> list[Path]:
        """The training checkpoints in :attr:`directory`."""
        return sorted(self.directory.glob(f"*{_SUFFIX}")) if self.directory.is_dir() else []

    def check_resumable(self) -> None:
        """Raise :class:`ResumeError` when :attr:`resume` is set and nothing can be resumed."""
        if self.resume and not self.saved():
            raise ResumeError(
                f"nothing to resume: {self.directory} holds no training checkpoint "
                f"(*{_SUFFIX}); run without --resume to start"
            )


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    keys = sorted(set(saved) | set(current))
    found: list[str] = []
    for key in keys:
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key} (checkpoint {a!r:.60}, now {b!r:.60})")
    return found


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": _plain(random.getstate()),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _capture(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, Stateful):
        return obj.state_dict()
    if isinstance(obj, dict | list):  # plain numbers and strings (counts, running norms)
        return _plain(obj)
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def _restore(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif isinstance(obj, Stateful):
        obj.load_state_dict(state)
    elif isinstance(obj, dict):
        obj.clear()
        obj.update(state)
    elif isinstance(obj, list):
        obj[:] = state
    else:
        raise TypeError(f"cannot restore a {type(obj).__name__}")


def save_training_state(
    path: Path,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    history: list[dict[str, Any]],
) -> None:
    """Write the training state before ``step`` (the next step to run) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": RESUME_FORMAT,
        "fingerprint": _plain(fingerprint),
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "state": {name: _capture(obj) for name, obj in state.items()},
        "rng": _rng_state(),
        "history": _plain(history),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    logger.debug("training state before step %d saved to %s", step, path)


def load_training_state(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
) -> tuple[int, list[dict[str, Any]]]:
    """Restore a run from ``path``; return the next step to run and the history so far.

    Raises :class:`ResumeError` when the file is not a training checkpoint or was
    written by a run with other settings (``fingerprint``).
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ResumeError(f"{path} cannot be resumed: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != RESUME_FORMAT:
        raise ResumeError(f"{path} is not a training checkpoint ({RESUME_FORMAT})")
    differences = _differences(payload["fingerprint"], _plain(fingerprint))
    if differences:
        raise ResumeError(
            f"{path} was written by a run with other settings, so it cannot be resumed: "
            + "; ".join(differences[:5])
            + ". Run with the same options, or without --resume to start again"
        )
    names = set(payload["state"])
    if names != set(state):
        raise ResumeError(f"{path} holds the state of {sorted(names)}, not {sorted(state)}")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    for name, obj in state.items():
        _restore(obj, payload["state"][name])
    _set_rng_state(payload["rng"])
    logger.info("resuming %s at step %d", path.name, payload["step"])
    return int(payload["step"]), list(payload["history"])
