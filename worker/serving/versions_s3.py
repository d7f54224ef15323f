"""Model versions in the object store: :class:`StoredRegistry`.

The registry's folder layout (:mod:`worker.serving.versions`) is kept object for object under
``models/`` in the bucket; each process's ``<data_dir>/models`` is a copy
(:class:`worker.store_sync.FolderCopy`). Reading: a registry is opened with
:meth:`StoredRegistry.pull`, which copies in every object that changed since this
process last saw it (by ETag), except checkpoints, fetched only when
:meth:`StoredRegistry.checkpoint_path` asks for one. Writing (registering, activating,
rewriting a card) happens under the registry's lock, which here is a deployment-wide
lease (a Redis lock, :mod:`worker.queue.locks`; a process lock without Redis): take it, pull,
change the local copy as the plain registry does, push what changed (version files
first, the pointers ``ACTIVE`` and ``CAMERAS.json`` last), release. Two admins
activating on two API replicas are serialised by the lock; a process killed before the
pointers' PUT leaves the old version active.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._exceptions import UnknownVersionError
from ..object_store import ObjectStore
from ..queue.locks import LocalLock, RedisLock, held
from ..store_sync import FolderCopy
from .versions import ModelCard, ModelRegistry

__all__ = ["StoredRegistry"]

logger = logging.getLogger(__name__)

PREFIX = "models/"


class StoredRegistry(ModelRegistry):
    """A :class:`~worker.serving.versions.ModelRegistry` whose truth is the object store."""

    def __init__(
        self,
        root: str | Path,
        store: ObjectStore,
        lock: Callable[[], RedisLock | LocalLock],
    ) -> None:
        super().__init__(root)
        self.copy = FolderCopy(self.root, store, PREFIX)
        self._new_lock = lock
        self._depth = threading.local()
        self.pull()

    def _is_checkpoint(self, name: str) -> bool:
        return name.endswith("/" + self.CHECKPOINT)

    def pull(self) -> None:
        """Copy in what changed in the store (checkpoints only on demand)."""
        self.copy.pull(later=self._is_checkpoint)

    def checkpoint_path(self, version: str) -> Path:
        path = super().checkpoint_path(version)  # UnknownVersionError without a card
        self.copy.pull(only=[f"{version}/{self.CHECKPOINT}"])
        if not path.is_file():
            raise UnknownVersionError(f"model version {version} has no checkpoint stored")
        return path

    def _push(self) -> None:
        """Upload what changed here: version files first, the pointers last."""
        changed = self.copy.changed()
        pointers = [n for n in changed if n in (self.POINTER, self.CAMERAS)]
        self.copy.push([n for n in changed if n not in pointers] + pointers)
        if changed:
            logger.info("model registry: %d file(s) written to the store", len(changed))

    # -- writing under the deployment-wide lock -----------------------------------------------

    @contextmanager
    def _locked(self, name: str = ModelRegistry.LOCK) -> Iterator[None]:
        """The deployment-wide lease, whichever of the registry's locks ``name`` is
        (activation's, or the first version's): one machine writes at a time."""
        depth = getattr(self._depth, "value", 0)
        if depth:  # register() holds it and activates: one lock, one push at the end
            self._depth.value = depth + 1
            try:
                yield
            finally:
                self._depth.value = depth
            return
        with held(self._new_lock(), lambda: logger.info("waiting for the model registry lock")):
            self._depth.value = 1
            try:
                self.pull()
                with super()._locked(name):
                    yield
                self._push()
            finally:
                self._depth.value = 0

    def _remove_file(self, path: Path) -> None:
        """The local copy and the object (called under the registry's lease)."""
        self.copy.delete([path.relative_to(self.root).as_posix()])

    def register(self, checkpoint: str | Path, **kwargs: Any) -> ModelCard:
        """Register under the lock, so two machines never take the same version name."""
        with self._locked():
            return super().register(checkpoint, **kwargs)
