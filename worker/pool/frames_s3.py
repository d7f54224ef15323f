"""The frame pool in the object store: :class:`StoredFramePool`.

The pool's layout (:mod:`worker.pool.frames`) is kept object for object under
``frames/`` in the bucket; each process's ``<data_dir>/frames`` is a copy
(:class:`worker.store_sync.FolderCopy`), brought up to date when a pool is opened
(:meth:`worker.storage.Storage.frame_pool`). Writes go to the store as they happen:

* a new frame: its image, then its record (a frame without a record is not listed);
* a record's read-modify-write (labels, consistency) under a deployment-wide lease per
  frame (the Redis lock ``<prefix>:frames:lock:<id>``; a process lock without Redis),
  the record copied in fresh first, so a clinician's labels and a worker's score
  written at once on two machines both survive;
* a removal: the record first, then the image and the maps;
* maps drawn by a frames job: :meth:`StoredFramePool.sync` after the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from ..queue.locks import LocalLock, RedisLock, held
from ..store_sync import FolderCopy
from .frames import FramePool, FrameRecord

__all__ = ["StoredFramePool"]

logger = logging.getLogger(__name__)

PREFIX = "frames/"


class StoredFramePool(FramePool):
    """A :class:`~worker.pool.frames.FramePool` whose truth is the object store."""

    def __init__(
        self,
        root: str | Path,
        copy: FolderCopy,
        lock: Callable[[str], RedisLock | LocalLock],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, *args, **kwargs)
        self.copy = copy
        self._frame_lock = lock

    def _store(self, image: Image.Image, record: FrameRecord) -> FrameRecord:
        stored = super()._store(image, record)
        self.copy.push([f"{record.frame_id}.png", f"{record.frame_id}.json"])
        return stored

    @contextmanager
    def _updating(self, frame_id: str) -> Iterator[FrameRecord]:
        self._record_path(frame_id)  # validates the id before it names a lock or a key
        name = f"{frame_id}.json"
        with held(self._frame_lock(frame_id), lambda: None, poll_s=0.05):
            self.copy.pull(only=[name])  # the latest record, or its removal
            with super()._updating(frame_id) as record:
                yield record
            self.copy.push([name])

    def remove(self, frame_id: str) -> bool:
        self._record_path(frame_id)
        store = self.copy.store
        maps = sorted(n[len(PREFIX) :] for n in store.names(f"{PREFIX}maps/{frame_id}."))
        existed = store.exists(f"{PREFIX}{frame_id}.json")
        # the record first: the frame is no longer listed nor served anywhere
        self.copy.delete([f"{frame_id}.json", f"{frame_id}.png", *maps])
        return super().remove(frame_id) or existed

    def sync(self) -> None:
        """Upload what was written locally outside the pool's methods (drawn maps)."""
        changed = self.copy.changed()
        if changed:
            self.copy.push(changed)
