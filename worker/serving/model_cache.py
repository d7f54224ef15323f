"""Which model a worker serves, loaded once and reloaded only when it changes.

The model to serve a video is the version activated for the video's camera, else the
data directory's active version (:mod:`worker.serving.versions`). ``ATCON_CHECKPOINT`` is
registered as the first version when the API or a worker starts
(:func:`ensure_first_version`), so every served model has a version and a card.
A worker asks :meth:`ModelCache.current` at the start of every job, so activating a
version is picked up between jobs, never during one. Loaded detectors are kept by
model (up to ``ATCON_MODEL_CACHE_SIZE``, least recently used out first), so videos of
cameras served by different versions do not reload a model for each job.

:class:`ServedModels` is the torch-free half, for the API: the served model's name
(:func:`model_name`, the one scheme used in ``events.json``, the frame pool and the
API) and its checkpoint's description, read without loading a weight
(:func:`models.checkpoint_info.read_checkpoint_info`), cached per checkpoint file
version.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from models.checkpoint_info import CheckpointInfo, file_sha256, read_checkpoint_info

from .._exceptions import JobError, NoModelError, StorageError, VersionError
from ..settings import Settings
from ..storage import Storage
from .versions import ModelCard

if TYPE_CHECKING:
    import numpy as np

    from ..video.probe import VideoInput

__all__ = [
    "Detecting",
    "DetectorLoader",
    "ModelCache",
    "ModelRef",
    "ServedModel",
    "ServedModels",
    "checkpoint_name",
    "ensure_first_version",
    "model_name",
    "model_reference",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """A model to serve: a version of the data directory and its checkpoint."""

    checkpoint: Path
    #: the version's name (``v0003``)
    version: str


class Detecting(Protocol):
    """What the worker needs of ``worker.detection.detector.Detector``."""

    info: CheckpointInfo

    def frame_consistency(self, frames: np.ndarray) -> np.ndarray: ...

    def frame_maps(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def detect(
        self,
        video: VideoInput,
        out_dir: str | Path,
        *,
        video_id: str | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> dict[str, Any]: ...


def _load_detector(ref: ModelRef, version: str, settings: Settings) -> Detecting:
    from ..detection.detector import DetectionConfig, Detector  # heavy: torch, the model
    from ..detection.motion import GateConfig
    from ..runtime.threads import configure_torch_threads

    configure_torch_threads(settings.torch_threads)  # once per process; embedded workers
    config = DetectionConfig(
        sample_fps=settings.sample_fps,
        batch_size=settings.batch_size,
        device=settings.device,
        compile=settings.detect_compile,
        gating=(
            GateConfig(max_interval_s=settings.gate_max_interval_s) if settings.gating else None
        ),
    )
    detector: Detecting = Detector(ref.checkpoint, config=config, model_version=version)
    return detector


DetectorLoader = Callable[[ModelRef, str, Settings], Detecting]


class ModelCache:
    """The detectors of this process, each loaded once and reloaded only when it changed.

    A detector's key is its checkpoint's path, version name, size and modification
    time, so activating a new version (``models/ACTIVE``, ``models/CAMERAS.json``) is
    noticed at the next :meth:`current` call, which workers make between jobs. Up to
    ``capacity`` detectors stay loaded.
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
        return model_reference(self.storage, self.settings, camera)

    def current(self, camera: str | None = None) -> tuple[Detecting, str]:
        """The detector for a video of ``camera`` now and its model version, loading it if
        it is not loaded (``camera=None``: the default model)."""
        ref = self.reference(camera)
        try:
            key = _file_key(ref)
        except OSError:
            raise JobError(f"the checkpoint to serve, {ref.checkpoint}, does not exist") from None
        with self._lock:
            entry = self._loaded.get(key)
            if entry is None:
                version = model_name(ref)
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


def _file_key(ref: ModelRef) -> tuple[Any, ...]:
    """What identifies one version of a served checkpoint file (changes when replaced)."""
    stat = ref.checkpoint.stat()
    return (str(ref.checkpoint), ref.version, stat.st_size, stat.st_mtime_ns)


def ensure_first_version(storage: Storage, settings: Settings) -> ModelCard | None:
    """Register ``ATCON_CHECKPOINT`` as the first active version if none is active yet
    (:meth:`worker.serving.versions.ModelRegistry.ensure_initial`); run when the API and each
    worker start. Returns the card it registered or activated, else ``None``."""
    card = storage.registry().ensure_initial(settings.checkpoint)
    if card is not None:
        logger.info(
            "ATCON_CHECKPOINT %s serves as model version %s", settings.checkpoint, card.version
        )
    return card


def model_reference(storage: Storage, settings: Settings, camera: str | None = None) -> ModelRef:
    """The model serving ``camera``: the version activated for that camera, else the
    active version (``camera=None``: the default alone).

    Raises :class:`~worker.NoModelError` when no version is active and
    :class:`~worker.StorageError` when the pointers cannot be read.
    """
    try:
        active = storage.registry().active_checkpoint(camera)
    except (VersionError, OSError) as exc:
        raise StorageError(f"the active model version cannot be read: {exc}") from exc
    if active is None:
        hint = (
            f"ATCON_CHECKPOINT ({settings.checkpoint}) does not exist"
            if settings.checkpoint is not None
            else "set ATCON_CHECKPOINT to a checkpoint file (it becomes the first version)"
        )
        raise NoModelError(
            f"no model to serve: no model version is active; {hint}, or activate a version"
        )
    version, checkpoint = active
    return ModelRef(checkpoint, version)


def model_name(ref: ModelRef) -> str:
    """The display name of a model to serve, the one scheme everywhere (``events.json``,
    the frame pool, the API): its version's name (``v0003``)."""
    return ref.version


_NAMES: dict[tuple[Any, ...], str] = {}
_NAMES_LOCK = threading.Lock()


def checkpoint_name(path: Path, sha256: str | None = None) -> str:
    """``<stem>-<sha12>`` of a checkpoint file outside the data directory (``atcon
    detect --checkpoint``; ``sha256``: its hash, if known)."""
    if sha256 is not None:
        return f"{path.stem}-{sha256[:12]}"
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _NAMES_LOCK:
        name = _NAMES.get(key)
    if name is None:
        name = f"{path.stem}-{file_sha256(path)[:12]}"
        with _NAMES_LOCK:
            _NAMES[key] = name
    return name


@dataclass(frozen=True)
class ServedModel:
    """A model to serve as the API sees it: where, its name, its description."""

    ref: ModelRef
    name: str
    info: CheckpointInfo


class ServedModels:
    """The served models' descriptions, read without torch and cached per file version.

    The API's view of :class:`ModelCache`: it names the model and knows its classes
    and input size, and never loads weights.
    """

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings
        self._lock = threading.Lock()
        self._cache: dict[tuple[Any, ...], ServedModel] = {}

    def current(self, camera: str | None = None) -> ServedModel:
        """The model serving ``camera`` now (``None``: the default).

        Raises :class:`~worker.NoModelError` when no version is active and
        :class:`~models.CheckpointError` when its checkpoint is missing or unreadable.
        """
        from models._exceptions import CheckpointError

        ref = model_reference(self.storage, self.settings, camera)
        try:
            key = _file_key(ref)
        except OSError:
            raise CheckpointError(f"checkpoint {ref.checkpoint} does not exist") from None
        with self._lock:
            served = self._cache.get(key)
        if served is None:
            info = read_checkpoint_info(ref.checkpoint)
            served = ServedModel(ref, model_name(ref), info)
            with self._lock:
                if len(self._cache) > 16:
                    self._cache.clear()
                self._cache[key] = served
        return served
