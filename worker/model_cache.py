"""Which model a worker serves, loaded once and reloaded only when it changes.

The model to serve a video is the version activated for the video's camera, else the
data directory's active version (:mod:`worker.versions`), else ``ATCON_CHECKPOINT``.
A worker asks :meth:`ModelCache.current` at the start of every job, so activating a
version is picked up between jobs, never during one. Loaded detectors are kept by
model (up to ``ATCON_MODEL_CACHE_SIZE``, least recently used out first), so videos of
cameras served by different versions do not reload a model for each job.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
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
    """The detectors of this process, each loaded once and reloaded only when it changed.

    A detector's key is its checkpoint's path, version name, size and modification
    time, so activating a new version (``models/ACTIVE``, ``models/CAMERAS.json``) or
    replacing ``ATCON_CHECKPOINT`` is noticed at the next :meth:`current` call, which
    workers make between jobs. Up to ``capacity`` detectors stay loaded.
    """

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        loader: DetectorLoader = _load_detector,
        *,
        capacity: int | None = None,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self._loader = loader
        self.capacity = capacity if capacity is not None else settings.model_cache_size
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity}")
        self._lock = threading.Lock()
        self._loaded: OrderedDict[tuple[Any, ...], tuple[Detecting, str]] = OrderedDict()
        self._version: str | None = None

    def reference(self, camera: str | None = None) -> ModelRef:
        ref = self.storage.model_to_serve(self.settings.checkpoint, camera)
        if ref is None:
            raise JobError(
                "no model to serve: set ATCON_CHECKPOINT to a checkpoint file, or activate "
                "a model version"
            )
        return ref

    def current(self, camera: str | None = None) -> tuple[Detecting, str]:
        """The detector for a video of ``camera`` now and its model version, loading it if
        it is not loaded (``camera=None``: the default model)."""
        ref = self.reference(camera)
        try:
            stat = ref.checkpoint.stat()
        except FileNotFoundError:
            raise JobError(f"the checkpoint to serve, {ref.checkpoint}, does not exist") from None
        key = (str(ref.checkpoint), ref.version, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            entry = self._loaded.get(key)
            if entry is None:
                version = model_version(ref)
                logger.info("loading model %s from %s", version, ref.checkpoint)
                entry = (self._loader(ref, version, self.settings), version)
                self._loaded[key] = entry
                while len(self._loaded) > self.capacity:
                    _, (_, dropped) = self._loaded.popitem(last=False)
                    logger.info("model %s unloaded (least recently used)", dropped)
            self._loaded.move_to_end(key)
            self._version = entry[1]
            return entry

    @property
    def version(self) -> str | None:
        """The version of the detector :meth:`current` returned last."""
        return self._version

    @property
    def loaded(self) -> list[str]:
        """The versions loaded now, least recently used first."""
        with self._lock:
            return [version for _, version in self._loaded.values()]


def model_version(ref: ModelRef) -> str:
    """The version name of a model to serve.

    An active version is named by the data directory; the ``ATCON_CHECKPOINT`` fallback
    by its file stem and the first 12 hex digits of its SHA-256.
    """
    if ref.version is not None:
        return ref.version
    from models.checkpoint import file_sha256

    return f"{ref.checkpoint.stem}-{file_sha256(ref.checkpoint)[:12]}"
