"""Running workers: the worker loop and its jobs, the scheduler, the tmp/ sweeper, the
workers' metrics, the choice of torch threads.

Each module's public names are re-exported here and imported on first use
(PEP 562), so importing one module of this package never imports the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .jobs import (
        DETECT,
        FINETUNE,
        FRAMES,
        IMPORT,
        JOB_KINDS,
        JobContext,
        JobKind,
        JobOutcome,
        LeaseLostError,
        Worker,
        worker_name,
    )
    from .metrics import (
        DETECT_STAGES,
        STAGE_SECONDS,
        observe_detect_stages,
        serve_worker_metrics,
    )
    from .reconcile import reconcile
    from .scheduler import (
        Claim,
        LocalClaim,
        NightlyScheduler,
        RedisClaim,
        validate_cron,
    )
    from .threads import (
        available_cores,
        choose_torch_threads,
        configure_torch_threads,
        measure_decoder_cores,
    )
    from .tmp_sweep import (
        start_tmp_sweeper,
        sweep_tmp,
    )

__all__ = [
    "DETECT",
    "DETECT_STAGES",
    "FINETUNE",
    "FRAMES",
    "IMPORT",
    "JOB_KINDS",
    "STAGE_SECONDS",
    "Claim",
    "JobContext",
    "JobKind",
    "JobOutcome",
    "LeaseLostError",
    "LocalClaim",
    "NightlyScheduler",
    "RedisClaim",
    "Worker",
    "available_cores",
    "choose_torch_threads",
    "configure_torch_threads",
    "measure_decoder_cores",
    "observe_detect_stages",
    "reconcile",
    "serve_worker_metrics",
    "start_tmp_sweeper",
    "sweep_tmp",
    "validate_cron",
    "worker_name",
]

#: public name -> the module that defines it
_MODULES = {
    "Claim": "scheduler",
    "DETECT": "jobs",
    "DETECT_STAGES": "metrics",
    "FINETUNE": "jobs",
    "FRAMES": "jobs",
    "IMPORT": "jobs",
    "JOB_KINDS": "jobs",
    "JobContext": "jobs",
    "JobKind": "jobs",
    "JobOutcome": "jobs",
    "LeaseLostError": "jobs",
    "LocalClaim": "scheduler",
    "NightlyScheduler": "scheduler",
    "RedisClaim": "scheduler",
    "STAGE_SECONDS": "metrics",
    "Worker": "jobs",
    "available_cores": "threads",
    "choose_torch_threads": "threads",
    "configure_torch_threads": "threads",
    "measure_decoder_cores": "threads",
    "observe_detect_stages": "metrics",
    "reconcile": "reconcile",
    "serve_worker_metrics": "metrics",
    "start_tmp_sweeper": "tmp_sweep",
    "sweep_tmp": "tmp_sweep",
    "validate_cron": "scheduler",
    "worker_name": "jobs",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, __all__)
