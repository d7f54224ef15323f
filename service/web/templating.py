"""Jinja2 templates of the pages, their formatting filters, and the response headers.

Templates live in ``service/templates`` (autoescaped: a client's file name is shown
as text, never as markup); the little JavaScript and CSS in ``service/static``.
Every page answer carries a Content-Security-Policy that allows scripts only from
this origin (no inline script runs; data for scripts travels in
``<script type="application/json">`` blocks), forbids framing, and says
``Cache-Control: no-store`` since pages show patient recordings.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

__all__ = ["SECURITY_HEADERS", "STATIC_DIR", "render", "templates"]

_PACKAGE = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = _PACKAGE / "templates"
STATIC_DIR = _PACKAGE / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; media-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def format_seconds(value: Any) -> str:
    """12.5 -> "0:12.5"; 3725 -> "1:02:05.0"; None -> "–"."""
    if not isinstance(value, int | float):
        return "–"
    total = max(0.0, float(value))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{int(hours)}:{int(minutes):02d}:{seconds:04.1f}"
    return f"{int(minutes)}:{seconds:04.1f}"


def format_time(value: Any) -> str:
    """An epoch, ISO string or datetime as "2024-05-01 14:03 UTC"."""
    if value is None or value == "":
        return "–"
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    elif isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def format_number(value: Any, digits: int = 2) -> str:
    if not isinstance(value, int | float):
        return "–"
    return f"{value:.{digits}f}"


def format_bytes(value: Any) -> str:
    if not isinstance(value, int | float):
        return "–"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.filters.update(
    seconds=format_seconds, when=format_time, num=format_number, size=format_bytes
)


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response
