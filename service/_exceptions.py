"""Exceptions raised by the ``service`` package.

::

    AtconError (models._exceptions)
     +-- ServiceError
          +-- UploadError (ValueError)   a request body that is not an acceptable upload
               +-- UploadTooLargeError   more bytes than ATCON_MAX_UPLOAD_BYTES

Errors of ``worker`` (``InvalidIdError``, ``VideoNotFoundError``, ``JobNotFoundError``,
``QueueUnavailableError``, ``VideoDecodeError`` ...) reach the API unchanged and are
turned into problem+json answers in :mod:`service.core.problems`.
"""

from __future__ import annotations

from models._exceptions import AtconError

__all__ = ["AtconError", "ServiceError", "UploadError", "UploadTooLargeError"]


class ServiceError(AtconError):
    """Base class of the errors the API raises on purpose."""


class UploadError(ServiceError, ValueError):
    """The request body is not an acceptable upload (not multipart, no ``file`` field)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class UploadTooLargeError(UploadError):
    """The upload is larger than the configured limit."""

    def __init__(self, limit: int, setting: str = "ATCON_MAX_UPLOAD_BYTES") -> None:
        super().__init__(
            f"the file is larger than this server accepts ({limit} bytes, "
            f"{setting}); split it or ask an admin to raise the limit",
            status=413,
        )
        self.limit = limit
