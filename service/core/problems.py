"""Errors as ``application/problem+json`` (RFC 9457), each with a sentence to act on.

Named exceptions of ``worker`` and ``service`` map to a status here, at the HTTP
boundary; routes raise them (or ``HTTPException``) and never build error bodies.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models._exceptions import CheckpointError
from worker import (
    EventNotFoundError,
    InvalidCameraError,
    InvalidFrameError,
    InvalidIdError,
    JobNotFoundError,
    NoCameraVersionError,
    NoModelError,
    NoResultsError,
    NothingToUndoError,
    QueueError,
    QueueUnavailableError,
    StorageError,
    UnknownFrameError,
    UnknownLabelsError,
    UnknownVersionError,
    VersionError,
    VersionsUnreadableError,
    VideoDecodeError,
    VideoNotFoundError,
    ZipTooLargeError,
)
from worker.cameras import CAMERA_RULE

from .._exceptions import UploadError

__all__ = [
    "PROBLEM_RESPONSES",
    "PlainErrorsAsProblems",
    "Problem",
    "install_problem_handlers",
    "problem_response",
    "problem_responses",
]

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
_NOWHERE = "there is nothing at this address; the API's paths are listed at /docs"


class Problem(BaseModel):
    """An error (RFC 9457): ``detail`` says what went wrong and what to do."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "model": Problem,
            "description": HTTPStatus(code).phrase,
            "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for code in codes
    }


#: the error answers every authenticated route may give, for the OpenAPI document
PROBLEM_RESPONSES = problem_responses(401, 403, 422, 503)


def problem_response(
    status: int,
    detail: str,
    request: Request | None = None,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail[:1].upper() + detail[1:],
        instance=request.url.path if request is not None else None,
    ).model_dump()
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_TYPE)


_ID_HINTS = {
    "video_id": "a video id is the 32 lowercase hex digits the upload answered with",
    "job_id": "a job id is the 32 lowercase hex digits the upload answered with",
    "event_id": "an event id is one listed in the video's events",
    "kind": "see the allowed values in the OpenAPI document (/openapi.json)",
    "camera": CAMERA_RULE,
    "cameras": "a list of cameras; " + CAMERA_RULE,
}


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        name = key = loc[-1] if loc else "request"
        if len(loc) > 1 and name.isdigit():  # an item of a list: cameras[0]
            key = loc[-2]
            name = f"{key}[{name}]"
        hint = _ID_HINTS.get(key)
        message = f"{name}: {error.get('msg', 'invalid')}"
        parts.append(f"{message} ({hint})" if hint else message)
    return "the request is invalid: " + "; ".join(parts) if parts else "the request is invalid"


def install_problem_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 404 and detail == HTTPStatus.NOT_FOUND.phrase:
            detail = _NOWHERE
            if ".." in request.url.path.split("/"):
                detail = "a path may not leave its folder (no '..'); " + detail
        if exc.status_code == 405:
            allowed = _allowed_methods(request)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            detail = f"{request.method} is not allowed here; this path accepts " + ", ".join(
                allowed
            )
        return problem_response(exc.status_code, detail, request, headers=headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        return problem_response(422, _validation_detail(exc), request, extra={"errors": errors})

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        status, headers = _status_of(exc)
        if status >= 500:
            logger.error("%s %s: %s", request.method, request.url.path, exc)
        return problem_response(status, _sentence(exc), request, headers=headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error in %s %s", request.method, request.url.path)
        return problem_response(
            500, "the server failed to answer this request; the error is in its log", request
        )

    async def client_gone(request: Request, exc: Exception) -> Response:
        # the client closed the connection mid-body: nobody reads an answer, nothing to fix
        logger.info(
            "%s %s: the client went away before its body arrived", request.method, request.url.path
        )
        return Response(status_code=400)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(RequestValidationError, validation_error)
    for kind in (
        UploadError,
        VideoDecodeError,
        InvalidCameraError,
        InvalidFrameError,
        UnknownLabelsError,
        StorageError,
        QueueError,
        NoModelError,
        CheckpointError,
        VersionError,
    ):
        app.add_exception_handler(kind, domain_error)
    app.add_exception_handler(Exception, unexpected)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document lists for this path.

    Starlette's 405 names only the methods of the first route that matched the path;
    the document knows them all. The path templates are compiled once per app.
    """
    app = request.app
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(
        app.state, "allowed_methods", None
    )
    if table is None:
        table = []
        for template, operations in app.openapi().get("paths", {}).items():
            regex = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
            table.append((re.compile(f"^{regex}$"), {m.upper() for m in operations}))
        app.state.allowed_methods = table
    methods: set[str] = set()
    for compiled, allowed in table:
        if compiled.match(request.url.path):
            methods |= allowed
    return sorted(methods)


def _sentence(exc: Exception) -> str:
    if isinstance(exc, QueueUnavailableError):
        return (
            "the job queue cannot be reached, so nothing was accepted or changed; try again "
            "in a minute (an operator should check Redis)"
        )
    if isinstance(exc, NoModelError | CheckpointError):
        return f"the frame pool and the model pages need a model to serve: {exc}"
    if isinstance(exc, InvalidFrameError) and not isinstance(exc, ZipTooLargeError):
        return f"{exc}; send a PNG or JPEG image, or a zip of them"
    return str(exc) or type(exc).__name__


def _status_of(exc: Exception) -> tuple[int, dict[str, str] | None]:
    if isinstance(exc, UploadError):
        return exc.status, None
    if isinstance(exc, VideoDecodeError | InvalidIdError | InvalidCameraError | UnknownLabelsError):
        return 422, None
    if isinstance(
        exc,
        VideoNotFoundError
        | JobNotFoundError
        | EventNotFoundError
        | UnknownFrameError
        | UnknownVersionError
        | NoCameraVersionError,
    ):
        return 404, None
    if isinstance(exc, VersionsUnreadableError):
        return 503, {"Retry-After": "30"}
    if isinstance(exc, VersionError):
        return 409, None
    if isinstance(exc, ZipTooLargeError):
        return 413, None
    if isinstance(exc, InvalidFrameError):
        return 415, None
    if isinstance(exc, NoModelError | CheckpointError):
        return 503, {"Retry-After": "30"}
    if isinstance(exc, NoResultsError | NothingToUndoError):
        return 409, None
    if isinstance(exc, QueueUnavailableError):
        return 503, {"Retry-After": "30"}
    if isinstance(exc, QueueError):
        return 409, None
    return 503, {"Retry-After": "30"}  # StorageError: the data directory is unusable now


class PlainErrorsAsProblems:
    """Rewrite the plain-text 4xx answers Starlette gives by itself (a malformed or
    unsatisfiable ``Range`` on a file) as problem+json with a sentence to act on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None

        async def rewrite(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                status = int(message["status"])
                kind = dict(message.get("headers", [])).get(b"content-type", b"")
                if 400 <= status < 500 and (kind.startswith(b"text/plain") or not kind):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                if message.get("more_body"):
                    return  # short error bodies only; the last part carries the text
                await _send_problem(held, message.get("body", b""), scope, send)
                return
            await send(message)

        await self.app(scope, receive, rewrite)


async def _send_problem(start: Message, body: bytes, scope: Scope, send: Send) -> None:
    status = int(start["status"])
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
    text = body.decode("utf-8", "replace").strip().rstrip(".") or HTTPStatus(status).phrase
    if status == 416:
        size = headers.get("content-range", "").rpartition("/")[2]
        detail = (
            f"the byte range asked for is not in the file, which has {size} bytes; ask for "
            "a range within it (Range: bytes=START-END, counting from 0)"
        )
    elif "range" in text.lower():
        detail = f"{text}: send a Range header such as bytes=0-1023, or none for the whole file"
    else:
        detail = text
    keep = {k: v for k, v in headers.items() if k not in ("content-type", "content-length")}
    await problem_response(status, detail, headers=keep)(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
