"""The events answer of each video, serialised once per version of its ``events.json``.

``GET /v1/videos/{id}/events`` is what pages and clients poll; re-reading and
re-serialising the JSON each time would cost more than the rest of the request. The
cache key is the file's inode, size and modification time (with those of the video's
``reviews.json``, which the answer includes), so a re-published result or a new
review (each a new rename) is seen at once.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["EventsCache", "Version"]

#: what identifies one version of the files an answer is built from
Version = tuple[Any, ...]


class EventsCache:
    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Version, bytes]] = OrderedDict()

    @staticmethod
    def version(path: Path) -> tuple[int, int, int] | None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def get(self, key: str, version: Version) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != version:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def build(
        self,
        key: str,
        version: Version,
        content: dict[str, Any],
        decorate: Callable[[dict[str, Any]], None],
    ) -> bytes:
        decorate(content)
        body = json.dumps(content, separators=(",", ":")).encode()
        with self._lock:
            self._entries[key] = (version, body)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return body

    def forget(self, key: str) -> None:
        """Drop the answer kept for ``key`` (a deleted video's)."""
        with self._lock:
            self._entries.pop(key, None)
