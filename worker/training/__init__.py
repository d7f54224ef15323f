"""Training adapters: frame folders as datasets, train/fine-tune/evaluate on folders,
comparisons of two models, the training log.

Each module's public names are re-exported here and imported on first use
(PEP 562), so importing one module of this package never imports the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .adapters import (
        MIN_VAL_PER_CLASS,
        DataOptions,
        GateCheck,
        RunReport,
        adapt_checkpoint,
        evaluate_checkpoint,
        evaluate_model,
        finetune_checkpoint,
        gate_against_parent,
        train_model,
    )
    from .comparison import (
        COMPARISON_DIR,
        COMPARISON_JSON,
        ROLES,
        compare_models,
        sample_frames,
    )
    from .datasets import (
        IMAGE_SUFFIXES,
        Box,
        BoxDataset,
        FrameTransform,
        LabeledFrame,
        LabeledFrameDataset,
        LabeledFrames,
        UnlabeledFrameDataset,
        UnlabeledFrames,
        find_unlabeled_frames,
        normalization,
        read_boxes,
        read_class_names,
        read_labeled_frames,
        split_indices,
    )
    from .log import (
        JsonLinesLog,
    )

__all__ = [
    "COMPARISON_DIR",
    "COMPARISON_JSON",
    "IMAGE_SUFFIXES",
    "MIN_VAL_PER_CLASS",
    "ROLES",
    "Box",
    "BoxDataset",
    "DataOptions",
    "FrameTransform",
    "GateCheck",
    "JsonLinesLog",
    "LabeledFrame",
    "LabeledFrameDataset",
    "LabeledFrames",
    "RunReport",
    "UnlabeledFrameDataset",
    "UnlabeledFrames",
    "adapt_checkpoint",
    "compare_models",
    "evaluate_checkpoint",
    "evaluate_model",
    "find_unlabeled_frames",
    "finetune_checkpoint",
    "gate_against_parent",
    "normalization",
    "read_boxes",
    "read_class_names",
    "read_labeled_frames",
    "sample_frames",
    "split_indices",
    "train_model",
]

#: public name -> the module that defines it
_MODULES = {
    "Box": "datasets",
    "BoxDataset": "datasets",
    "COMPARISON_DIR": "comparison",
    "COMPARISON_JSON": "comparison",
    "DataOptions": "adapters",
    "FrameTransform": "datasets",
    "GateCheck": "adapters",
    "IMAGE_SUFFIXES": "datasets",
    "JsonLinesLog": "log",
    "LabeledFrame": "datasets",
    "LabeledFrameDataset": "datasets",
    "LabeledFrames": "datasets",
    "MIN_VAL_PER_CLASS": "adapters",
    "ROLES": "comparison",
    "RunReport": "adapters",
    "UnlabeledFrameDataset": "datasets",
    "UnlabeledFrames": "datasets",
    "adapt_checkpoint": "adapters",
    "compare_models": "comparison",
    "evaluate_checkpoint": "adapters",
    "evaluate_model": "adapters",
    "find_unlabeled_frames": "datasets",
    "finetune_checkpoint": "adapters",
    "gate_against_parent": "adapters",
    "normalization": "datasets",
    "read_boxes": "datasets",
    "read_class_names": "datasets",
    "read_labeled_frames": "datasets",
    "sample_frames": "comparison",
    "split_indices": "datasets",
    "train_model": "adapters",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, __all__)
