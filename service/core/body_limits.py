"""Request-body caps applied before any route, dependency or authentication runs.

FastAPI reads (and parses, or spools to a temporary file) a route's declared body
before it runs the route's dependencies, authentication included; a caller without
a token could make the API hold or spool a body of any size before it answered 401.
:class:`BodyLimitMiddleware` sits outside the routes and counts the bytes of every
request body as they arrive:

* a declared ``Content-Length`` over the route's cap is refused with 413 before a
  byte of the body is read;
* a body without one (chunked) is cut off with 413 at the first byte over the cap.

Every route gets the small ``ATCON_MAX_BODY_BYTES`` (JSON and forms), except the two
upload routes, which stream their ``file`` field to disk after authenticating the
caller (their handlers read the body themselves, so the dependencies run first) and
get their own larger caps.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._exceptions import BodyTooLargeError
from .problems import problem_response

__all__ = ["BodyLimitMiddleware", "BodyTooLargeError"]

#: room for the multipart framing and small extra fields around an upload's file
MULTIPART_SLACK = 64 * 1024


class BodyLimitMiddleware:
    """Cap each request's body: ``routes[(method, path)]`` for the named routes (a cap
    and the setting that sets it), ``default`` for every other route."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: tuple[int, str],
        routes: Mapping[tuple[str, str], tuple[int, str]] | None = None,
    ) -> None:
        self.app = app
        self.default = default
        self.routes = dict(routes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/") or "/"
        limit, setting = self.routes.get((scope["method"], path), self.default)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(BodyTooLargeError(limit, setting), scope, receive, send)
            return

        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit, setting)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except BodyTooLargeError as exc:  # raised where no exception handler answered it
            if started:
                raise
            await _refuse(exc, scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(exc: BodyTooLargeError, scope: Scope, receive: Receive, send: Send) -> None:
    response = problem_response(exc.status_code, exc.detail, headers=dict(exc.headers or {}))
    await response(scope, receive, send)
