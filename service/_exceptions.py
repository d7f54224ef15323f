"""Exceptions raised by the ``service`` package.

::

    AtconError (models._exceptions)
     +-- ServiceError
          +-- UploadError (ValueError)   a request body that is not an acceptable upload
          |    +-- UploadTooLargeError   more bytes than ATCON_MAX_UPLOAD_BYTES
          +-- PageError                  a web page answers with an HTML error page
          +-- SignInRequired             a web page needs a signed-in user: a redirect
          +-- InvalidCursorError (ValueError)  an events-inbox cursor this server did not
                                         hand out

    starlette.HTTPException
     +-- BodyTooLargeError               a body over its route's cap (413), raised
                                         before routing by service.core.body_limits

Errors of ``worker`` (``InvalidIdError``, ``VideoNotFoundError``, ``JobNotFoundError``,
``QueueUnavailableError``, ``VideoDecodeError`` ...) reach the API unchanged and are
turned into problem+json answers in :mod:`service.core.problems`.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException

from models._exceptions import AtconError

__all__ = [
    "AtconError",
    "BodyTooLargeError",
    "InvalidCursorError",
    "PageError",
    "ServiceError",
    "SignInRequired",
    "UploadError",
    "UploadTooLargeError",
]


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


class PageError(ServiceError):
    """Answer with an HTML error page: ``status``, a title and a sentence to act on."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class SignInRequired(ServiceError):
    """The page needs a signed-in user; the answer is a redirect to the sign-in page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class BodyTooLargeError(HTTPException):
    """The request body is larger than its route accepts (413).

    An ``HTTPException`` rather than a ``ServiceError``: it is raised while the body is
    read, before any route runs, and must answer 413 however the app is assembled."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(
            413,
            f"the request body is larger than this endpoint accepts ({limit} bytes, "
            f"{setting}); send a smaller body",
            headers={"Connection": "close"},
        )
        self.limit = limit


class InvalidCursorError(ServiceError, ValueError):
    """A cursor this server did not hand out (or from another sort)."""
