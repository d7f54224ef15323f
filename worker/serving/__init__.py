"""Which model serves: the versions registry (ACTIVE, CAMERAS.json, the gate; in the
data directory or the object store) and the served model, loaded or described without
torch.

Each module's public names are re-exported here and imported on first use
(PEP 562), so importing one module of this package never imports the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .model_cache import (
        Detecting,
        DetectorLoader,
        ModelCache,
        ModelRef,
        ServedModel,
        ServedModels,
        checkpoint_name,
        ensure_first_version,
        model_name,
        model_reference,
    )
    from .versions import (
        COMPARISON_DIR,
        COMPARISON_JSON,
        GateDecision,
        ModelCard,
        ModelRegistry,
        NoCameraVersionError,
        UnknownVersionError,
        VersionError,
        VersionStatus,
        VersionsUnreadableError,
        promotion_gate,
    )
    from .versions_s3 import (
        StoredRegistry,
    )

__all__ = [
    "COMPARISON_DIR",
    "COMPARISON_JSON",
    "Detecting",
    "DetectorLoader",
    "GateDecision",
    "ModelCache",
    "ModelCard",
    "ModelRef",
    "ModelRegistry",
    "NoCameraVersionError",
    "ServedModel",
    "ServedModels",
    "StoredRegistry",
    "UnknownVersionError",
    "VersionError",
    "VersionStatus",
    "VersionsUnreadableError",
    "checkpoint_name",
    "ensure_first_version",
    "model_name",
    "model_reference",
    "promotion_gate",
]

#: public name -> the module that defines it
_MODULES = {
    "COMPARISON_DIR": "versions",
    "COMPARISON_JSON": "versions",
    "Detecting": "model_cache",
    "DetectorLoader": "model_cache",
    "GateDecision": "versions",
    "ModelCache": "model_cache",
    "ModelCard": "versions",
    "ModelRef": "model_cache",
    "ModelRegistry": "versions",
    "NoCameraVersionError": "versions",
    "ServedModel": "model_cache",
    "ServedModels": "model_cache",
    "StoredRegistry": "versions_s3",
    "UnknownVersionError": "versions",
    "VersionError": "versions",
    "VersionStatus": "versions",
    "VersionsUnreadableError": "versions",
    "checkpoint_name": "model_cache",
    "ensure_first_version": "model_cache",
    "model_name": "model_cache",
    "model_reference": "model_cache",
    "promotion_gate": "versions",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, __all__)
