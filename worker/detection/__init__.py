"""Detection: the detector, motion gating, the results folder (one writer, one reader),
the one map renderer, the compiled and int8 scorers.

Each module's public names are re-exported here and imported on first use
(PEP 562), so importing one module of this package never imports the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .compiled import (
        compile_scorer,
        outputs_agree,
    )
    from .detector import (
        PRECISIONS,
        DetectionConfig,
        Detector,
        cpu_has_native_bfloat16,
    )
    from .int8 import (
        MAX_PROBABILITY_CHANGE,
        build_int8,
        int8_check,
        int8_path,
        load_int8_scorer,
        max_probability_change,
    )
    from .job import detect_video
    from .motion import (
        REASONS,
        GateConfig,
        GatedBatch,
        GatedScores,
        MotionGate,
        change_score,
        gate_batches,
        thumbnail,
    )
    from .render import (
        GUIDED_PERCENTILE,
        gradcam_heat,
        guided_magnitude,
        guided_picture,
        heat_overlay,
        map_to_rgb,
        resize_map,
        save_png_atomic,
        unit_scale,
    )
    from .results import (
        EVENT_ID_PATTERN,
        EVENTS_FILE,
        SCHEMA_VERSION,
        SCORES_FILE,
        read_events,
        read_scores,
        safe_stem,
        staged_directory,
        write_event_maps,
        write_json,
    )

__all__ = [
    "EVENTS_FILE",
    "EVENT_ID_PATTERN",
    "GUIDED_PERCENTILE",
    "MAX_PROBABILITY_CHANGE",
    "PRECISIONS",
    "REASONS",
    "SCHEMA_VERSION",
    "SCORES_FILE",
    "DetectionConfig",
    "Detector",
    "GateConfig",
    "GatedBatch",
    "GatedScores",
    "MotionGate",
    "build_int8",
    "change_score",
    "compile_scorer",
    "cpu_has_native_bfloat16",
    "detect_video",
    "gate_batches",
    "gradcam_heat",
    "guided_magnitude",
    "guided_picture",
    "heat_overlay",
    "int8_check",
    "int8_path",
    "load_int8_scorer",
    "map_to_rgb",
    "max_probability_change",
    "outputs_agree",
    "read_events",
    "read_scores",
    "resize_map",
    "safe_stem",
    "save_png_atomic",
    "staged_directory",
    "thumbnail",
    "unit_scale",
    "write_event_maps",
    "write_json",
]

#: public name -> the module that defines it
_MODULES = {
    "detect_video": "job",
    "DetectionConfig": "detector",
    "Detector": "detector",
    "EVENTS_FILE": "results",
    "EVENT_ID_PATTERN": "results",
    "GUIDED_PERCENTILE": "render",
    "GateConfig": "motion",
    "GatedBatch": "motion",
    "GatedScores": "motion",
    "MAX_PROBABILITY_CHANGE": "int8",
    "MotionGate": "motion",
    "PRECISIONS": "detector",
    "REASONS": "motion",
    "SCHEMA_VERSION": "results",
    "SCORES_FILE": "results",
    "build_int8": "int8",
    "change_score": "motion",
    "compile_scorer": "compiled",
    "cpu_has_native_bfloat16": "detector",
    "gate_batches": "motion",
    "gradcam_heat": "render",
    "guided_magnitude": "render",
    "guided_picture": "render",
    "heat_overlay": "render",
    "int8_check": "int8",
    "int8_path": "int8",
    "load_int8_scorer": "int8",
    "map_to_rgb": "render",
    "max_probability_change": "int8",
    "outputs_agree": "compiled",
    "read_events": "results",
    "read_scores": "results",
    "resize_map": "render",
    "safe_stem": "results",
    "save_png_atomic": "render",
    "staged_directory": "results",
    "thumbnail": "motion",
    "unit_scale": "render",
    "write_event_maps": "results",
    "write_json": "results",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, __all__)
