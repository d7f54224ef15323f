"""Synthetic ward videos with ground truth and their deployment shifts: test, demo and
benchmark data, outside the serving path.

Each module's public names are re-exported here and imported on first use
(PEP 562), so importing one module of this package never imports the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker._lazy import lazy_exports

if TYPE_CHECKING:
    from .shifts import (
        SHIFTS,
        CameraWarp,
        Shift,
        apply_photometric,
        compression_crf,
        compression_scale,
        night_noise,
        parse_shift,
        parse_shifts,
        room_palette,
        shift_severity,
    )
    from .synth import (
        CLASSES,
        GROUND_TRUTH_SCHEMA,
        GroundTruthEvent,
        SynthConfig,
        SynthResult,
        WardScene,
        degrade,
        ground_truth_document,
        load_ground_truth,
        load_masks,
        make_script,
        synthesize,
        write_labeled_frames,
        write_masks,
    )

__all__ = [
    "CLASSES",
    "GROUND_TRUTH_SCHEMA",
    "SHIFTS",
    "CameraWarp",
    "GroundTruthEvent",
    "Shift",
    "SynthConfig",
    "SynthResult",
    "WardScene",
    "apply_photometric",
    "compression_crf",
    "compression_scale",
    "degrade",
    "ground_truth_document",
    "load_ground_truth",
    "load_masks",
    "make_script",
    "night_noise",
    "parse_shift",
    "parse_shifts",
    "room_palette",
    "shift_severity",
    "synthesize",
    "write_labeled_frames",
    "write_masks",
]

#: public name -> the module that defines it
_MODULES = {
    "CLASSES": "synth",
    "CameraWarp": "shifts",
    "GROUND_TRUTH_SCHEMA": "synth",
    "GroundTruthEvent": "synth",
    "SHIFTS": "shifts",
    "Shift": "shifts",
    "SynthConfig": "synth",
    "SynthResult": "synth",
    "WardScene": "synth",
    "apply_photometric": "shifts",
    "compression_crf": "shifts",
    "compression_scale": "shifts",
    "degrade": "synth",
    "ground_truth_document": "synth",
    "load_ground_truth": "synth",
    "load_masks": "synth",
    "make_script": "synth",
    "night_noise": "shifts",
    "parse_shift": "shifts",
    "parse_shifts": "shifts",
    "room_palette": "shifts",
    "shift_severity": "shifts",
    "synthesize": "synth",
    "write_labeled_frames": "synth",
    "write_masks": "synth",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, __all__)
