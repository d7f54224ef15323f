"""Run an iterator in a background thread and hand its items over a bounded queue.

Used to overlap video decoding with inference: FFmpeg releases the GIL while it
decodes and PyTorch while it computes, so the two share the cores. The queue's bound
keeps memory flat whatever the video's length.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["Prefetcher"]

T = TypeVar("T")

_POLL_S = 0.1


class _Done:
    pass


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Generic[T]):
    """Iterate ``source`` in a daemon thread, at most ``maxsize`` items ahead of the consumer.

    An exception raised by ``source`` is re-raised in the consuming thread at the point
    where its item would have arrived. Leaving the ``with`` block early (or calling
    :meth:`close`) stops the producer and closes ``source`` in the producer's thread, so
    its ``finally`` blocks (closing a container) run. ``wait_s`` is the time the consumer
    spent blocked waiting for items: how much the producer held the pipeline back.
    """

    def __init__(self, source: Iterable[T], *, maxsize: int = 4, name: str = "prefetch") -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._source = source
        self._queue: queue.Queue[T | _Done | _Failed] = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self._started = False
        self._finished = False
        self.wait_s = 0.0

    def _put(self, item: T | _Done | _Failed) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        iterator = iter(self._source)
        try:
            for item in iterator:
                if not self._put(item):
                    break
            else:
                self._put(_Done())
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(_Failed(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        if not self._started:
            self._started = True
            self._thread.start()
        while not self._finished:
            start = time.perf_counter()
            item = self._queue.get()
            self.wait_s += time.perf_counter() - start
            if isinstance(item, _Done):
                self._finished = True
                return
            if isinstance(item, _Failed):
                self._finished = True
                raise item.error
            yield item

    def close(self) -> None:
        """Stop the producer and wait for it to finish closing its source."""
        self._stop.set()
        if self._started:
            self._thread.join()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
