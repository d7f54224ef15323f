"""Model versions in the object store: :class:`StoredRegistry`.

The registry's folder layout (:mod:`worker.versions`) is kept object for object under
``models/`` in the bucket; each process's ``<data_dir>/models`` is a copy. Reading:
a registry is opened with :meth:`StoredRegistry.pull`, which copies in every object
that changed since this process last saw it (by ETag), except checkpoints, fetched
only when :meth:`StoredRegistry.checkpoint_path` asks for one. Writing (registering,
activating, rewriting a card) happens under the registry's lock, which here is a
deployment-wide lease (a Redis lock, :mod:`worker.locks`; a process lock without
Redis): take it, pull, change the local copy as the plain registry does, push what
changed (version files first, the pointers ``ACTIVE`` and ``CAMERAS.json`` last),
release. Two admins activating on two API replicas are serialised by the lock; a
process killed before the pointers' PUT leaves the old version active.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._exceptions import UnknownVersionError
from .locks import LocalLock, RedisLock, held
from .object_store import ObjectStore
from .versions import ModelCard, ModelRegistry

__all__ = ["StoredRegistry"]

logger = logging.getLogger(__name__)

PREFIX = "models/"
#: this process's record of what it copied: {name: [etag, size, mtime_ns]}
MANIFEST = ".synced.json"
#: per local folder: one pull or push at a time within the process
_FOLDER_LOCKS: dict[str, threading.RLock] = {}
_FOLDER_LOCKS_GUARD = threading.Lock()


def _folder_lock(root: Path) -> threading.RLock:
    with _FOLDER_LOCKS_GUARD:
        return _FOLDER_LOCKS.setdefault(str(root.resolve()), threading.RLock())


class StoredRegistry(ModelRegistry):
    """A :class:`~worker.versions.ModelRegistry` whose truth is the object store."""

    def __init__(
        self,
        root: str | Path,
        store: ObjectStore,
        lock: Callable[[], RedisLock | LocalLock],
    ) -> None:
        super().__init__(root)
        self.store = store
        self._new_lock = lock
        self._depth = threading.local()
        self._etags: dict[str, str] = {}
        self.pull()

    # -- copies -----------------------------------------------------------------------------

    def _manifest(self) -> dict[str, list[Any]]:
        try:
            data = json.loads((self.root / MANIFEST).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_manifest(self, manifest: dict[str, list[Any]]) -> None:
        from models.atomic import atomic_write_json

        atomic_write_json(self.root / MANIFEST, manifest)

    def _stat(self, name: str) -> list[Any] | None:
        try:
            st = (self.root / name).stat()
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def _listing(self) -> dict[str, str]:
        """``{name: etag}`` of every object under ``models/`` (names relative to it)."""
        paginator = self.store.client.get_paginator("list_objects_v2")
        listing = {}
        for page in paginator.paginate(Bucket=self.store.bucket, Prefix=self.store.key(PREFIX)):
            for entry in page.get("Contents", []):
                name = str(entry["Key"])[len(self.store.key(PREFIX)) :]
                listing[name] = str(entry.get("ETag", ""))
        return listing

    def _download(self, name: str) -> None:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=".part-", dir=target.parent)
        os.close(fd)
        try:
            if self.store.download(PREFIX + name, Path(partial)):
                os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)

    def pull(self) -> None:
        """Copy in what changed in the store since this process last looked (checkpoints
        only on demand); drop local pointers the store no longer has."""
        with _folder_lock(self.root):
            listing = self._listing()
            self._etags = listing
            manifest = self._manifest()
            for name, etag in listing.items():
                if name.endswith("/" + self.CHECKPOINT) or name.startswith("."):
                    continue
                seen = manifest.get(name)
                if seen is not None and seen[0] == etag and self._stat(name) == seen[1:]:
                    continue
                self._download(name)
                manifest[name] = [etag, *(self._stat(name) or [0, 0])]
            for pointer in (self.POINTER, self.CAMERAS):
                if pointer not in listing and pointer in manifest:
                    (self.root / pointer).unlink(missing_ok=True)
                    del manifest[pointer]
            self._save_manifest(manifest)

    def checkpoint_path(self, version: str) -> Path:
        path = super().checkpoint_path(version)  # UnknownVersionError without a card
        name = f"{version}/{self.CHECKPOINT}"
        with _folder_lock(self.root):
            manifest = self._manifest()
            seen = manifest.get(name)
            etag = self._etags.get(name)
            fresh = seen is not None and self._stat(name) == seen[1:]
            if etag is not None and not (fresh and seen is not None and seen[0] == etag):
                self._download(name)
                manifest[name] = [etag, *(self._stat(name) or [0, 0])]
                self._save_manifest(manifest)
            elif etag is None and not path.is_file():
                raise UnknownVersionError(f"model version {version} has no checkpoint stored")
        return path

    def _push(self) -> None:
        """Upload the local files that changed since the last pull or push: version
        files first, the pointers last."""
        with _folder_lock(self.root):
            manifest = self._manifest()
            changed = []
            for path in self.root.rglob("*"):
                name = path.relative_to(self.root).as_posix()
                if not path.is_file() or name.startswith(".") or "/." in name:
                    continue
                seen = manifest.get(name)
                if seen is None or self._stat(name) != seen[1:]:
                    changed.append(name)
            pointers = [n for n in changed if n in (self.POINTER, self.CAMERAS)]
            for name in [n for n in changed if n not in pointers] + pointers:
                self.store.put_file(PREFIX + name, self.root / name)
            if changed:
                listing = self._listing()
                self._etags = listing
                for name in changed:
                    manifest[name] = [listing.get(name, ""), *(self._stat(name) or [0, 0])]
                self._save_manifest(manifest)
                logger.info("model registry: %d file(s) written to the store", len(changed))

    # -- writing under the deployment-wide lock -----------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
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
                with super()._locked():
                    yield
                self._push()
            finally:
                self._depth.value = 0

    def register(self, checkpoint: str | Path, **kwargs: Any) -> ModelCard:
        """Register under the lock, so two machines never take the same version name."""
        with self._locked():
            return super().register(checkpoint, **kwargs)
