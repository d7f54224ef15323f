"""Writing a file so that a reader sees the old version or the new one, never half.

The one helper behind every "temporary name, then rename" in the project
(checkpoints, JSON records, PNGs, videos, masks): the bytes go to a temporary file in
the same directory (created ``0600`` by :func:`tempfile.mkstemp`), are flushed to
disk, and the file is renamed over the target with :func:`os.replace`, which is
atomic on POSIX file systems. On any exception (``KeyboardInterrupt`` included) the
temporary file is removed and the target is left as it was.

Torch-free, so that every package can use it (it lives in ``models`` because that
is the package the other two depend on).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_file",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
]


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    For writers that want a file name (``av.open``, ``numpy.savez``); ``suffix``
    keeps the extension such writers look at.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(
    path: str | Path, mode: str = "wb", *, encoding: str | None = None, fsync: bool = True
) -> Iterator[IO[Any]]:
    """Yield an open file that becomes ``path`` when the block ends without error.

    ``fsync``: flush the bytes to disk before the rename (a crash then leaves the old
    file or the whole new one).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        newline = "" if "b" not in mode else None
        with open(tmp, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_file(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_json(path: str | Path, obj: Any, **dumps: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (``dumps``: :func:`json.dumps`
    options; default ``indent=2, sort_keys=True``)."""
    options: dict[str, Any] = {"indent": 2, "sort_keys": True, **dumps}
    atomic_write_text(path, json.dumps(obj, **options))
