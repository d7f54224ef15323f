"""Camera identifiers: which ward camera a video (and the frames sampled from it) came from.

A camera is an operator-chosen label such as ``icu-3`` or ``ward4.night``: 1 to 64
ASCII letters, digits, ``-``, ``_`` or ``.``, starting with a letter or a digit. It is
metadata only, compared as given (case matters); it never becomes part of a path.
"""

from __future__ import annotations

import re

from ._exceptions import InvalidCameraError

__all__ = ["CAMERA_MAX_LENGTH", "CAMERA_PATTERN", "CAMERA_RULE", "validate_camera"]

CAMERA_MAX_LENGTH = 64
#: the form of a camera identifier, also published in the OpenAPI document
CAMERA_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: the rule as a person reads it, for error messages and help texts
CAMERA_RULE = (
    "a camera is 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit "
    "(e.g. icu-3)"
)
_CAMERA = re.compile(CAMERA_PATTERN)


def validate_camera(value: object, what: str = "camera") -> str:
    """Return ``value`` if it is a camera identifier, else raise ``InvalidCameraError``."""
    if not isinstance(value, str) or not _CAMERA.fullmatch(value):
        shown = f"{value!r:.80}" if isinstance(value, str) else type(value).__name__
        raise InvalidCameraError(f"{what} {shown} is not accepted: {CAMERA_RULE}")
    return value
