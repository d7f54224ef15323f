"""Receiving an upload: the multipart body streamed to disk, never held whole in memory.

FastAPI's ``UploadFile`` would first spool the body into a temporary file of its own
(outside the data directory) and the route would copy it again; here the body is
parsed as it arrives (python-multipart's push parser) and the ``file`` field is
written straight into ``<data_dir>/tmp/``, in blocks of ``ATCON_UPLOAD_CHUNK_BYTES``
handed to a thread so the event loop keeps serving other requests. The size limit is
enforced while bytes arrive: the first byte over it stops the transfer.

The optional ``camera`` field (:mod:`worker.cameras`) is kept in memory (it is a few
bytes) and checked when its part ends: a bad camera stops the transfer there, with a
422 that says what a camera may be, and nothing is stored. Other fields are ignored.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio
from fastapi import Request
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from worker import InvalidCameraError, VideoDecodeError
from worker.cameras import CAMERA_MAX_LENGTH, CAMERA_PATTERN, validate_camera

from .._exceptions import UploadError, UploadTooLargeError

if TYPE_CHECKING:
    from worker.video.probe import VideoInfo

__all__ = [
    "CAMERA_FIELD",
    "FILE_FIELD",
    "ReceivedFile",
    "probe_upload",
    "receive_upload",
    "upload_openapi",
]

FILE_FIELD = "file"
CAMERA_FIELD = "camera"


def upload_openapi(camera_description: str, file_description: str | None = None) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of an upload route (``openapi_extra``): a multipart
    form with the file and the optional camera (the body is read by
    :func:`receive_upload`, not by FastAPI, so the schema is written here once)."""
    file: dict[str, Any] = {"type": "string", "format": "binary"}
    if file_description is not None:
        file["description"] = file_description
    camera = {
        "type": "string",
        "pattern": CAMERA_PATTERN,
        "maxLength": CAMERA_MAX_LENGTH,
        "description": f"optional: {camera_description}",
    }
    schema = {
        "type": "object",
        "required": [FILE_FIELD],
        "properties": {FILE_FIELD: file, CAMERA_FIELD: camera},
    }
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


#: bytes of a camera field read before it is refused as too long
_CAMERA_BYTES = 4 * CAMERA_MAX_LENGTH
#: room for the multipart framing and small extra fields in Content-Length
_FRAMING_SLACK = 64 * 1024


@dataclass
class ReceivedFile:
    path: Path
    size: int
    filename: str | None
    camera: str | None = None


class _FileFieldWriter:
    """python-multipart callbacks that route the ``file`` part's bytes to ``pending``.

    ``pending`` holds views into the request's own chunks (no copy); they go to disk
    in one ``writev`` per block.
    """

    def __init__(self, limit: int, setting: str) -> None:
        self.limit = limit
        self.setting = setting
        self.pending: list[memoryview] = []
        self.pending_bytes = 0
        self.size = 0
        self.found = False
        self.filename: str | None = None
        self.camera: str | None = None
        self._camera_seen = False
        self._camera: bytearray | None = None  # the camera part being read
        self._writing = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name == FILE_FIELD and not self.found:
            self.found = self._writing = True
            raw = params.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw is not None else None
        elif name == CAMERA_FIELD:
            if self._camera_seen:
                raise UploadError(
                    f"the request has two `{CAMERA_FIELD}` fields; send one camera per video"
                )
            self._camera_seen = True
            self._camera = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._camera is not None:
            self._camera += data[start:end]
            if len(self._camera) > _CAMERA_BYTES:
                raise UploadError(
                    f"the `{CAMERA_FIELD}` field is too long: a camera is at most "
                    f"{CAMERA_MAX_LENGTH} characters"
                )
            return
        if not self._writing:
            return
        self.size += end - start
        if self.size > self.limit:
            raise UploadTooLargeError(self.limit, self.setting)
        if end > start:
            self.pending.append(memoryview(data)[start:end])
            self.pending_bytes += end - start

    def take(self) -> list[memoryview]:
        views, self.pending, self.pending_bytes = self.pending, [], 0
        return views

    def _part_end(self) -> None:
        self._writing = False
        if self._camera is not None:
            raw, self._camera = bytes(self._camera), None
            self.camera = _camera_of(raw)


def _camera_of(raw: bytes) -> str | None:
    """The camera field's value, checked; an empty field (a blank form input) is none."""
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        value = raw.decode("utf-8", "replace")
    if value == "":
        return None
    try:
        return validate_camera(value, f"the `{CAMERA_FIELD}` field")
    except InvalidCameraError as exc:
        raise UploadError(f"{exc}; nothing was stored, send the video again") from exc


def _write_all(fd: int, views: list[memoryview]) -> None:
    """``writev`` every view, resuming after partial writes."""
    while views:
        written = os.writev(fd, views[:1024])  # IOV_MAX
        while written and views:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0] = views[0][written:]
                written = 0


def _check_headers(request: Request, limit: int, setting: str, what: str, example: str) -> bytes:
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise UploadError(
            f"send the {what} as multipart/form-data with the file in a field named "
            f"`{FILE_FIELD}` (e.g. curl -F {FILE_FIELD}=@{example})",
            status=415,
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError("the multipart/form-data Content-Type header has no boundary", 400)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + _FRAMING_SLACK:
        raise UploadTooLargeError(limit, setting)
    return boundary


async def receive_upload(
    request: Request,
    new_file: Callable[[], Path],
    *,
    limit: int,
    chunk: int,
    setting: str = "ATCON_MAX_UPLOAD_BYTES",
    what: str = "video",
    example: str = "video.mp4",
) -> ReceivedFile:
    """Stream the request's ``file`` field into a file from ``new_file()``.

    Raises ``UploadError`` for a request that is not an upload; the headers are checked
    before any file is created, and on any error the file is removed, so a rejected or
    interrupted upload leaves nothing behind. ``setting`` names the limit and ``what``
    the expected file in the errors' sentences.
    """
    boundary = _check_headers(request, limit, setting, what, example)
    dest = await anyio.to_thread.run_sync(new_file)
    writer = _FileFieldWriter(limit, setting)
    parser = MultipartParser(boundary, writer.callbacks())  # type: ignore[arg-type]
    try:
        fh: IO[bytes]
        with open(dest, "wb", buffering=0) as fh:
            fd = fh.fileno()
            async for data in request.stream():
                try:
                    parser.write(data)
                except MultipartParseError as exc:
                    raise UploadError(f"the multipart body is malformed: {exc}", 400) from exc
                if writer.pending_bytes >= chunk:
                    await anyio.to_thread.run_sync(_write_all, fd, writer.take())
            try:
                parser.finalize()
            except MultipartParseError as exc:
                raise UploadError(f"the multipart body is malformed: {exc}", 400) from exc
            await anyio.to_thread.run_sync(_write_all, fd, writer.take())
            # a 202 promises the bytes are on disk, not in the page cache
            await anyio.to_thread.run_sync(os.fsync, fd)
        if not writer.found:
            raise UploadError(
                f"the request has no `{FILE_FIELD}` field; send the {what} as "
                f"multipart/form-data in a field named `{FILE_FIELD}`"
            )
    except OSError as exc:  # disk full, quota, the data directory gone
        with contextlib.suppress(OSError):
            dest.unlink()
        raise UploadError(
            f"the server could not store the upload ({exc.strerror or exc}); try again "
            "later (an operator should check the data directory's free space)",
            status=507,
        ) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            dest.unlink()
        raise
    return ReceivedFile(dest, writer.size, writer.filename, writer.camera)


def probe_upload(path: Path) -> VideoInfo:
    """:func:`worker.video.probe.probe` on a received upload, its errors phrased for the client.

    The probe's messages name the file, here a server-chosen temporary name that means
    nothing to the client (and is not for it to see): it becomes "the file".
    PyAV is imported here, at the first upload, not when the API starts.
    """
    from worker.video.probe import probe

    try:
        return probe(path)
    except VideoDecodeError as exc:
        message = str(exc).replace(repr(path.name), "the file", 1)
        raise type(exc)(message[:1].upper() + message[1:]) from exc
