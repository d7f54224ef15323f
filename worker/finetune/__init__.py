"""Fine-tuning in the service: the request, the job, the nightly trigger, the comparison
with the served model on recent videos.

Each module's public names are re-exported here and imported on first use
(PEP 562), so importing one module of this package never imports the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .disagreements import (
        DISAGREEMENTS_JSON,
        compare_events,
        event_disagreements,
        recent_videos,
    )
    from .job import finetune_job
    from .nightly import (
        last_finetune,
        nightly_should_run,
        record_last,
        run_nightly_once,
        start_scheduler,
    )
    from .request import FinetuneRequest, queue_finetune

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
    "record_last",
    "run_nightly_once",
    "start_scheduler",
]

#: public name -> the module that defines it
_MODULES = {
    "DISAGREEMENTS_JSON": "disagreements",
    "FinetuneRequest": "request",
    "compare_events": "disagreements",
    "event_disagreements": "disagreements",
    "finetune_job": "job",
    "last_finetune": "nightly",
    "nightly_should_run": "nightly",
    "queue_finetune": "request",
    "recent_videos": "disagreements",
    "record_last": "nightly",
    "run_nightly_once": "nightly",
    "start_scheduler": "nightly",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, __all__)
