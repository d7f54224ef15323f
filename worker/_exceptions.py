"""Exceptions raised by the ``worker`` package.

::

    AtconError (models._exceptions)
     +-- VideoDecodeError (ValueError)   a file that is not a video FFmpeg can decode
     +-- SettingsError (ValueError)      invalid or unsafe settings (no tokens outside dev mode)
     +-- StorageError                    the data directory cannot be used as asked
     |    +-- InvalidIdError (ValueError) an id that is not of the server's form
     |    +-- VideoNotFoundError (KeyError-like: an id that names nothing on disk)
     +-- QueueError                      the job queue refused an operation
     |    +-- QueueUnavailableError      the broker (Redis) cannot be reached
     |    +-- JobNotFoundError           no job with that id
     +-- JobError                        a job that cannot succeed; it is not retried

Low-level errors (``redis.RedisError``, ``OSError``, ``av.FFmpegError``) are translated
into these at the module boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from models._exceptions import AtconError

__all__ = [
    "AtconError",
    "InvalidIdError",
    "JobError",
    "JobNotFoundError",
    "QueueError",
    "QueueUnavailableError",
    "SettingsError",
    "StorageError",
    "VideoDecodeError",
    "VideoNotFoundError",
]


class VideoDecodeError(AtconError, ValueError):
    """The file is not a video FFmpeg can decode (text, image, audio only, truncated)."""


class SettingsError(AtconError, ValueError):
    """The settings are invalid or unsafe for the mode the service runs in."""


class StorageError(AtconError):
    """The data directory cannot be used as asked."""


class InvalidIdError(StorageError, ValueError):
    """An id that is not of the form the server hands out."""


class VideoNotFoundError(StorageError):
    """No video with that id is stored."""


class QueueError(AtconError):
    """The job queue refused an operation."""


class QueueUnavailableError(QueueError):
    """The broker cannot be reached (Redis stopped, network down)."""


class JobNotFoundError(QueueError):
    """No job with that id."""


class JobError(AtconError):
    """A job that cannot succeed whatever the number of attempts; it is failed at once."""
