"""A JSON-lines log of training: one object per step, appended as training goes."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import IO, Any

from models.training import StepResult, Trainer

__all__ = ["JsonLinesLog"]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN; keep the fact visible
    return value


class JsonLinesLog:
    """A trainer callback writing ``{"event": ..., ...}`` lines to ``path``.

    Lines: ``start`` (phase, steps), ``step`` (the trainer's history record: losses,
    step kind, collapse statistics) and ``end``. Only the main process writes.
    :meth:`record` adds lines of one's own (evaluation figures, say).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] | None = None

    def _write(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        line = {"time": round(time.time(), 3), **{k: _clean(v) for k, v in record.items()}}
        self._handle.write(json.dumps(line) + "\n")
        self._handle.flush()

    def record(self, event: str, **fields: Any) -> None:
        self._write({"event": event, **fields})

    def on_train_start(self, trainer: Trainer, total_steps: int) -> None:
        if trainer.context.is_main:
            self._write({"event": "start", "phase": trainer.description, "steps": total_steps})

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        if trainer.context.is_main and trainer.history:
            self._write({"event": "step", **trainer.history[-1], **result.extras})

    def on_train_end(self, trainer: Trainer) -> None:
        if trainer.context.is_main:
            self._write({"event": "end", "phase": trainer.description})

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
