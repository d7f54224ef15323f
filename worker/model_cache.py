"""Which model a worker serves, loaded once and reloaded only when it changes.

The model to serve is the data directory's active version (:mod:`worker.versions`),
else ``ATCON_CHECKPOINT``. A worker asks :meth:`ModelCache.current` at the start of
every job, so activating a version is picked up between jobs, never during one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ._exceptions import JobError
from .settings import Settings
from .storage import ModelRef, Storage

__all__ = ["Detecting", "DetectorLoader", "ModelCache", "model_version"]

logger = logging.getLogger(__name__)


class Detecting(Protocol):
    """What the worker needs of ``worker.detect.Detector``."""

    def detect(
        self,
        video: str | Path,
        out_dir: str | Path,
        *,
        video_id: str | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> dict[str, Any]: ...


def _load_detector(ref: ModelRef, version: str, settings: Settings) -> Detecting:
    from .detect import DetectionConfig, Detector  # heavy: torch, the model

    config = DetectionConfig(
        sample_fps=settings.sample_fps,
        batch_size=settings.batch_size,
        device=settings.device,
        compile=settings.detect_compile,
    )
    detector: Detecting = Detector(ref.checkpoint, config=config, model_version=version)
    return detector


DetectorLoader = Callable[[ModelRef, str, Settings], Detecting]


class ModelCache:
    """The detector of this process, reloaded only when the model to serve changed.

    The key is the checkpoint's path, version name, size and modification time, so
    activating a new version (``models/ACTIVE``) or replacing ``ATCON_CHECKPOINT`` is
    noticed at the next :meth:`current` call, which workers make between jobs.
    """

    def __init__(
        self, storage: Storage, settings: Settings, loader: DetectorLoader = _load_detector
    ) -> None:
        self.storage = storage
        self.settings = settings
        self._loader = loader
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._detector: Detecting | None = None
        self._version: str | None = None

    def reference(self) -> ModelRef:
        ref = self.storage.model_to_serve(self.settings.checkpoint)
        if ref is None:
            raise JobError(
                "no model to serve: set ATCON_CHECKPOINT to a checkpoint file, or activate "
                "a model version"
            )
        return ref

    def current(self) -> tuple[Detecting, str]:
        """The detector to use now and its model version, loading it if it changed."""
        ref = self.reference()
        try:
            stat = ref.checkpoint.stat()
        except FileNotFoundError:
            raise JobError(f"the checkpoint to serve, {ref.checkpoint}, does not exist") from None
        key = (str(ref.checkpoint), ref.version, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key != self._key or self._detector is None:
                version = model_version(ref)
                logger.info("loading model %s from %s", version, ref.checkpoint)
                self._detector = self._loader(ref, version, self.settings)
                self._key, self._version = key, version
            assert self._version is not None
            return self._detector, self._version

    @property
    def version(self) -> str | None:
        return self._version


def model_version(ref: ModelRef) -> str:
    """The version name of a model to serve.

    An active version is named by the data directory; the ``ATCON_CHECKPOINT`` fallback
    by its file stem and the first 12 hex digits of its SHA-256.
    """
    if ref.version is not None:
        return ref.version
    from models.checkpoint import file_sha256

    return f"{ref.checkpoint.stem}-{file_sha256(ref.checkpoint)[:12]}"
