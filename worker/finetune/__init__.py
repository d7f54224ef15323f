"""Fine-tuning in the service: the request, the job, the nightly trigger, the comparison
with the served model on recent videos.

Each module's public names are re-exported here and imported on first use
(PEP 562), so importing one module of this package never imports the others.
This file is written by the split script (split_worker.py): regenerate it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .disagreements import (
        DISAGREEMENTS_JSON,
        compare_events,
        event_disagreements,
        recent_videos,
    )
    from .job import (
        FinetuneRequest,
        finetune_job,
        last_finetune,
        nightly_should_run,
        queue_finetune,
        run_nightly_once,
        start_scheduler,
    )

__all__ = [
    "DISAGREEMENTS_JSON",
    "FinetuneRequest",
    "compare_events",
    "event_disagreements",
    "finetune_job",
    "last_finetune",
    "nightly_should_run",
    "queue_finetune",
    "recent_videos",
    "run_nightly_once",
    "start_scheduler",
]

#: public name -> the module that defines it
_MODULES = {
    "DISAGREEMENTS_JSON": "disagreements",
    "FinetuneRequest": "job",
    "compare_events": "disagreements",
    "event_disagreements": "disagreements",
    "finetune_job": "job",
    "last_finetune": "job",
    "nightly_should_run": "job",
    "queue_finetune": "job",
    "recent_videos": "disagreements",
    "run_nightly_once": "job",
    "start_scheduler": "job",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
