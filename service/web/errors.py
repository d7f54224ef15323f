"""Errors as pages for people, problem+json for programs.

Page handlers raise :class:`~service.web.session.PageError` (an HTML page with the
status) and :class:`~service.web.session.SignInRequired` (a redirect to the sign-in
page). An ``HTTPException`` outside ``/v1`` (an unknown path, a wrong method) asked
for by a browser (``Accept: text/html``) becomes a page too; everything else keeps
the API's problem+json answer.
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .session import Page, PageError, SignInRequired, signin_url

__all__ = ["install_page_errors"]

_MESSAGES = {
    404: "There is nothing at this address. Check the link, or go back to the list of videos.",
    405: "This address does not accept that kind of request.",
}


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    page = Page.of(request)
    return page.render("error.html", status_code=status, title=title, message=message)


def install_page_errors(app: FastAPI) -> None:
    api_handler = app.exception_handlers.get(StarletteHTTPException)

    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return _error_page(request, exc.status, exc.title, exc.message)

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return Page.of(request).redirect(signin_url(exc.next_url))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        wants_html = "text/html" in request.headers.get("accept", "")
        if wants_html and not request.url.path.startswith("/v1/"):
            title = HTTPStatus(exc.status_code).phrase
            message = _MESSAGES.get(exc.status_code, str(exc.detail))
            return _error_page(request, exc.status_code, title, message)
        assert api_handler is not None
        response: Response = await api_handler(request, exc)  # type: ignore[misc]
        return response

    app.add_exception_handler(PageError, page_error)
    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(StarletteHTTPException, http_error)
