"""A local folder kept as a copy of the objects under one prefix of the store.

:class:`FolderCopy` is what the object store backend's frame pool
(:mod:`worker.pool.frames_s3`) works on: :meth:`FolderCopy.pull` copies in the objects
that changed since this process last saw them (by ETag) and drops local files whose
object is gone; :meth:`FolderCopy.push` uploads named files, in the order given (so a
caller uploads a frame's image before its record); :meth:`FolderCopy.delete` removes
objects and their copies. ``<root>/.synced`` records, per file, the ETag it was
copied from and the local size and mtime, so a file changed here is not mistaken for
one changed in the store. Names starting with a dot (locks, the record itself,
partial downloads) never travel.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from models.atomic import atomic_write_json

from .object_store import ObjectStore
from .storage import plain_name

__all__ = ["FolderCopy"]

logger = logging.getLogger(__name__)

#: not "*.json": the pool lists its records by that pattern
MANIFEST = ".synced"
_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock(root: Path) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(root.resolve()), threading.RLock())


class FolderCopy:
    """``root`` as a copy of the objects under ``prefix`` (``"frames/"``)."""

    def __init__(self, root: Path, store: ObjectStore, prefix: str) -> None:
        self.root = root
        self.store = store
        self.prefix = prefix
        self.lock = _lock(root)

    def _manifest(self) -> dict[str, list[Any]]:
        try:
            data = json.loads((self.root / MANIFEST).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _stat(self, name: str) -> list[int] | None:
        try:
            st = (self.root / name).stat()
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def listing(self) -> dict[str, str]:
        """``{name: etag}`` of the objects under the prefix (names relative to it)."""
        strip = len(self.prefix)
        return {name[strip:]: etag for name, etag in self.store.listing(self.prefix).items()}

    def _download(self, name: str) -> bool:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=".part-", dir=target.parent)
        os.close(fd)
        try:
            if not self.store.download(self.prefix + name, Path(partial)):
                return False
            os.replace(partial, target)
            return True
        finally:
            Path(partial).unlink(missing_ok=True)

    def pull(
        self, only: Iterable[str] | None = None, *, later: Callable[[str], bool] | None = None
    ) -> None:
        """Copy in what changed in the store (every object, or the names in ``only``),
        and drop local copies whose object is gone. Names ``later`` accepts (large files
        fetched on demand) are left for a pull naming them in ``only``."""
        with self.lock:
            wanted = set(only) if only is not None else None
            if wanted is None:
                listing = self.listing()
            else:  # a few names: one HEAD each, not a listing of the whole prefix
                heads = {n: self.store.etag(self.prefix + n) for n in wanted}
                listing = {n: e for n, e in heads.items() if e is not None}
            manifest = self._manifest()
            for name, etag in listing.items():
                if not plain_name(name) or (wanted is None and later is not None and later(name)):
                    continue
                seen = manifest.get(name)
                if seen is not None and seen[0] == etag and self._stat(name) == seen[1:]:
                    continue
                if self._download(name):
                    manifest[name] = [etag, *(self._stat(name) or [0, 0])]
            for name in [n for n in manifest if n not in listing]:
                if wanted is None or name in wanted:
                    (self.root / name).unlink(missing_ok=True)
                    del manifest[name]
            atomic_write_json(self.root / MANIFEST, manifest)

    def push(self, names: Iterable[str]) -> None:
        """Upload these local files, in this order."""
        with self.lock:
            manifest = self._manifest()
            for name in names:
                path = self.root / name
                if not path.is_file():
                    continue
                etag = self.store.put_file(self.prefix + name, path)
                manifest[name] = [etag, *(self._stat(name) or [0, 0])]
            atomic_write_json(self.root / MANIFEST, manifest)

    def changed(self) -> list[str]:
        """Local files that are new or changed since the last pull or push."""
        with self.lock:
            manifest = self._manifest()
            found = []
            for path in self.root.rglob("*"):
                name = path.relative_to(self.root).as_posix()
                if path.is_file() and plain_name(name):
                    seen = manifest.get(name)
                    if seen is None or self._stat(name) != seen[1:]:
                        found.append(name)
            return sorted(found)

    def delete(self, names: Iterable[str]) -> None:
        """Delete these objects (in this order) and their local copies."""
        with self.lock:
            manifest = self._manifest()
            for name in names:
                self.store.delete([self.prefix + name])
                (self.root / name).unlink(missing_ok=True)
                manifest.pop(name, None)
            atomic_write_json(self.root / MANIFEST, manifest)
