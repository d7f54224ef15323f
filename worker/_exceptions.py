"""Exceptions raised by the ``worker`` package.

::

    WorkerError
     +-- FrameDataError (ValueError)   a frame directory, labels.csv, classes.txt or
          |                            boxes.csv that cannot be used as it is
          +-- ClassMismatchError       labels or classes.txt that differ from the classes
                                       fixed by a checkpoint (or classes.txt)

Errors of the models underneath (``models.AtconError`` and its subclasses) pass
through unchanged.
"""

from __future__ import annotations

__all__ = ["ClassMismatchError", "FrameDataError", "WorkerError"]


class WorkerError(Exception):
    """Base class of every error this package raises on purpose."""


class FrameDataError(WorkerError, ValueError):
    """Frame data that cannot be used: bad labels.csv, unknown classes, no usable frames."""


class ClassMismatchError(FrameDataError):
    """The data names classes other than the ones fixed for it (a checkpoint's)."""
