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
          +-- SettingsError (ValueError)       invalid or unsafe settings (no tokens outside dev)
          +-- InvalidCameraError (ValueError)  a camera identifier not of the allowed form
          +-- StorageError                     the data directory cannot be used as asked
          |    +-- InvalidIdError (ValueError) an id that is not of the server's form
          |    +-- VideoNotFoundError          no video with that id is stored
          |    +-- EventNotFoundError          the video's results hold no such event
          |    +-- NoResultsError              the video has no results yet (still queued,
          |    |                               running, or failed)
          |    +-- UnknownFrameError (LookupError)  no frame with that id is in the pool
          |    +-- NothingToUndoError          an event without a verdict to take back
          |    +-- TrainedOnVideoError         a version was trained on the video to delete
          |    +-- ResultsUnreadableError      events.json or scores.npz cannot be read
          |         +-- SchemaVersionError     events.json of another schema version
          +-- VersionError (ValueError)        a model version cannot be registered or
          |    |                               activated as asked (rejected, ...)
          |    +-- UnknownVersionError (LookupError)  no model version of that name
          |    +-- NoCameraVersionError (LookupError) no version activated for that camera
          |    +-- VersionsUnreadableError     ACTIVE or CAMERAS.json cannot be read
          +-- LeaseLostError                   a job's lease went to another worker; the job
          |                                    is abandoned to it (never reaches the API)
          +-- QueueError                       the job queue refused an operation
          |    +-- QueueUnavailableError       the broker (Redis) cannot be reached
          |    +-- JobNotFoundError            no job with that id
          +-- JobError                         a job that cannot succeed; it is not retried
          |    +-- JobCancelledError           an admin cancelled it
          |    +-- NoModelError (LookupError)  no model to serve: no active version and no
          |    |                               ATCON_CHECKPOINT
          |    +-- LockLostError               the job's lock (fine-tune) expired or was
          |                                    taken over; the job stops, registering nothing
          +-- UnknownLabelsError (ValueError)  labels that are not classes of the served model
          +-- InvalidFrameError (ValueError)   an uploaded frame that is not a usable image
          |    +-- ZipTooLargeError            a zip of frames over the entry or byte caps
          |    +-- EmptyZipError               a zip of frames without a single file
          +-- FrameDataError (ValueError)      a frame directory, labels.csv, classes.txt or
               |                               boxes.csv that cannot be used as it is
               +-- ClassMismatchError          labels or classes.txt that differ from the
                                               classes fixed for them (a checkpoint's)

Every message is a sentence a person can act on: what is wrong with which file and
what to do about it. Low-level errors (FFmpeg's, Redis', the file system's) are
chained with ``raise ... from``. Bad arguments raise plain ``ValueError``/``TypeError``
naming the argument.
"""

from __future__ import annotations

from models._exceptions import AtconError, CheckpointError

__all__ = [
    "AtconError",
    "CheckpointMismatchError",
    "ClassMismatchError",
    "EmptyVideoError",
    "EmptyZipError",
    "EventNotFoundError",
    "FrameDataError",
    "InvalidCameraError",
    "InvalidFrameError",
    "InvalidIdError",
    "JobCancelledError",
    "JobError",
    "JobNotFoundError",
    "LeaseLostError",
    "LockLostError",
    "NoCameraVersionError",
    "NoModelError",
    "NoResultsError",
    "NoVideoStreamError",
    "NotAVideoError",
    "NothingToUndoError",
    "ObjectStoreError",
    "QueueError",
    "QueueUnavailableError",
    "ResultsExistError",
    "ResultsUnreadableError",
    "SchemaVersionError",
    "SettingsError",
    "StorageError",
    "TrainedOnVideoError",
    "UnknownFrameError",
    "UnknownLabelsError",
    "UnknownVersionError",
    "VersionError",
    "VersionsUnreadableError",
    "VideoDecodeError",
    "VideoNotFoundError",
    "WorkerError",
    "ZipTooLargeError",
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


class SettingsError(WorkerError, ValueError):
    """The settings are invalid or unsafe for the mode the service runs in."""


class InvalidCameraError(WorkerError, ValueError):
    """A camera (ward) identifier that is not of the allowed form (:mod:`worker.cameras`)."""


class StorageError(WorkerError):
    """The data directory cannot be used as asked."""


class ObjectStoreError(StorageError):
    """The object store (``ATCON_STORAGE_URL``) cannot be reached or refused a request."""


class InvalidIdError(StorageError, ValueError):
    """An id that is not of the form the server hands out."""


class VideoNotFoundError(StorageError):
    """No video with that id is stored."""


class EventNotFoundError(StorageError):
    """The video's results hold no event with that id."""


class NoResultsError(StorageError):
    """The video has no results yet: its job is queued, running, or failed."""


class UnknownFrameError(StorageError, LookupError):
    """No frame with that id is in the pool."""


class UnknownLabelsError(WorkerError, ValueError):
    """Labels for a pool frame that are not classes of the served model."""


class InvalidFrameError(WorkerError, ValueError):
    """An uploaded frame is not an image this service can use."""


class ZipTooLargeError(InvalidFrameError):
    """A zip archive with more entries or more decompressed bytes than allowed."""


class EmptyZipError(InvalidFrameError):
    """A zip archive without a single file in it."""


class ResultsUnreadableError(StorageError):
    """A video's ``events.json`` or ``scores.npz`` cannot be read or is not what it
    should be."""


class SchemaVersionError(ResultsUnreadableError):
    """An ``events.json`` of a schema version this code does not read."""


class VersionError(WorkerError, ValueError):
    """A model version cannot be registered or activated as asked."""


class UnknownVersionError(VersionError, LookupError):
    """No model version of that name exists."""


class NoCameraVersionError(VersionError, LookupError):
    """No model version is activated for that camera (it is served the default)."""


class VersionsUnreadableError(VersionError):
    """The versions' pointers (``ACTIVE``, ``CAMERAS.json``) cannot be read."""


class LeaseLostError(WorkerError):
    """Raised inside a job when its lease went to another worker; the job is abandoned."""


class NothingToUndoError(StorageError):
    """An undo asked of an event whose verdicts are all taken back already."""


class QueueError(WorkerError):
    """The job queue refused an operation."""


class QueueUnavailableError(QueueError):
    """The broker cannot be reached (Redis stopped, network down)."""


class JobNotFoundError(QueueError):
    """No job with that id."""


class JobError(WorkerError):
    """A job that cannot succeed whatever the number of attempts; it is failed at once."""


class NoModelError(JobError, LookupError):
    """No model to serve: no version is active and ``ATCON_CHECKPOINT`` is not set."""


class LockLostError(JobError):
    """The lock a job holds was lost (its lease expired and another process took it,
    or it could not be renewed); the job stops without writing its result."""


class JobCancelledError(JobError):
    """An admin cancelled the job; raised at its next progress report, it fails the job
    at once with the cancellation as its error."""


class FrameDataError(WorkerError, ValueError):
    """Frame data that cannot be used: bad labels.csv, unknown classes, no usable frames."""


class ClassMismatchError(FrameDataError):
    """The data names classes other than the ones fixed for it (a checkpoint's)."""


class TrainedOnVideoError(StorageError):
    """A model version was trained on frames of the video; deleting it needs a withdrawal."""

    def __init__(self, video_id: str, versions: list[str]) -> None:
        self.video_id = video_id
        self.versions = versions
        names = ", ".join(versions)
        super().__init__(
            f"model version(s) {names} were trained on frames of video {video_id}; "
            "deleting it would leave models that learned from data that is gone. An admin "
            "may delete it anyway with ?withdraw=true, which records the withdrawal on "
            f"the card of {names}"
        )
