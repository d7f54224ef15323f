"""Exceptions raised by the ``worker`` package.

::

    models.AtconError
     +-- WorkerError
          +-- VideoDecodeError (ValueError)    the file cannot be decoded as a video
          |    +-- NotAVideoError              an image, a document, text: no video container
          |    +-- NoVideoStreamError          a container without a video stream (audio only)
          |    +-- EmptyVideoError             nothing to decode: an empty file, zero frames
          +-- CheckpointMismatchError          the checkpoint's classes or input size do not
          |    (models.CheckpointError)        fit the job
          +-- ResultsExistError (FileExistsError)  the results folder is already there

Every message is a sentence a person can act on: what is wrong with which file and
what to do about it. Low-level errors (FFmpeg's) are chained with ``raise ... from``.
Bad arguments raise plain ``ValueError``/``TypeError`` naming the argument.
"""

from __future__ import annotations

from models._exceptions import AtconError, CheckpointError

__all__ = [
    "CheckpointMismatchError",
    "EmptyVideoError",
    "NoVideoStreamError",
    "NotAVideoError",
    "ResultsExistError",
    "VideoDecodeError",
    "WorkerError",
]


class WorkerError(AtconError):
    """Base class of every error the ``worker`` package raises on purpose."""


class VideoDecodeError(WorkerError, ValueError):
    """The file cannot be decoded as a video (damaged, truncated, or not a video)."""


class NotAVideoError(VideoDecodeError):
    """The file is an image, a document or text, not a video container."""


class NoVideoStreamError(VideoDecodeError):
    """The container holds no video stream (an audio-only recording, say)."""


class EmptyVideoError(VideoDecodeError):
    """There is nothing to decode: the file is empty or its video stream has no frames."""


class CheckpointMismatchError(WorkerError, CheckpointError):
    """The checkpoint's classes or input size do not fit what the job needs."""


class ResultsExistError(WorkerError, FileExistsError):
    """The results folder exists already and overwriting was not asked for."""
