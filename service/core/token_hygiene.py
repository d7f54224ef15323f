"""Tokens stay out of URLs and logs.

A token in a URL ends up in access logs, proxy logs and browser history. The API
takes tokens only in the ``Authorization`` header (or signs a browser in with one in
a form body); :class:`RefuseQueryTokens` answers a request whose query string carries
one with 400 and a sentence saying where the token goes, before any route runs.

Whatever a client sends, :class:`RedactTokens`, a logging filter installed on every
handler of the root logger by :func:`install_log_redaction`, rewrites each record's
message and traceback: tokens of the ``atcon token new`` form, ``Bearer`` credentials
and the values of token-like query or form parameters become ``[redacted]``.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from .security import TOKEN_PREFIX

if TYPE_CHECKING:  # every command installs the log filter; only the API needs starlette
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "QUERY_TOKEN_NAMES",
    "RedactTokens",
    "RefuseQueryTokens",
    "install_log_redaction",
    "redact",
]

REDACTED = "[redacted]"
#: query parameters that would carry a credential
QUERY_TOKEN_NAMES = frozenset(
    {"token", "access_token", "api_token", "api_key", "apikey", "auth", "bearer", "jwt"}
)
_NAMES = "|".join(sorted(QUERY_TOKEN_NAMES, key=len, reverse=True))
_PATTERNS = [
    # a token as `atcon token new` makes them, anywhere (paths, bodies, messages)
    (re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_\-]{32,}"), TOKEN_PREFIX + REDACTED),
    # Authorization header values
    (re.compile(r"(?i)\b(bearer|basic)(\s+|%20|\+)[^\s,;\"'&]+"), r"\1\2" + REDACTED),
    # token-like parameters in a query string or form: token=..., access_token=...
    (re.compile(rf"(?i)(\b(?:{_NAMES})(?:=|%3D))[^\s&;\"']*"), r"\1" + REDACTED),
]


def redact(text: str) -> str:
    """``text`` with every token-looking value replaced by ``[redacted]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactTokens(logging.Filter):
    """Rewrites a record's message (and its traceback) with tokens redacted."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: leave it to the handler
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add :class:`RedactTokens` to every handler of ``logger`` (default: the root)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(RedactTokens())


class RefuseQueryTokens:
    """400 for a request whose query string carries a credential, before any route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _carries_token(scope.get("query_string", b"")):
            from .problems import problem_response

            response = problem_response(
                400,
                "tokens are never accepted in the URL (they would be written to logs and "
                "browser history); send it in the header `Authorization: Bearer <token>` "
                "and consider this token exposed: ask an admin to replace it",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _carries_token(query: bytes) -> bool:
    if not query:
        return False
    text = query.decode("latin-1")
    if TOKEN_PREFIX in text:
        return True
    return any(name.lower() in QUERY_TOKEN_NAMES for name, _ in parse_qsl(text, True))
