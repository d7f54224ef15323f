"""What every page handler gets (:class:`Page`), the page errors, and signing in and out.

A :class:`Page` is the request, the runtime and the browser session (anonymous until
someone signs in; see :mod:`service.core.sessions`). Handlers ask it for the role
they need (:meth:`Page.require`: not signed in -> the sign-in page; signed in with too
low a role -> a 403 page saying which role is needed) and for a submitted form
(:meth:`Page.form`, which refuses a form without the session's CSRF secret or from
another origin).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from .._exceptions import PageError, SignInRequired
from ..core.config import Role
from ..core.runtime import Runtime
from ..core.security import Principal, authenticate
from ..core.sessions import COOKIE_NAME, CSRF_FIELD, Session
from ..core.throttle import client_address
from .templating import SECURITY_HEADERS, render

__all__ = [
    "LIVE_REFRESH_HEADER",
    "Page",
    "PageDep",
    "PageError",
    "SignInRequired",
    "router",
    "safe_next",
]

#: sent by static/app.js when it re-reads a page's live parts (not audited again)
LIVE_REFRESH_HEADER = "X-Live-Refresh"

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


def safe_next(value: str | None) -> str:
    """A local path to go to after signing in; anything else (another site) -> /videos."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/videos"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/videos"
    return value


@dataclass
class Page:
    request: Request
    runtime: Runtime
    session: Session
    principal: Principal | None
    #: the session is new (or changed) and its cookie must go out with the answer
    fresh: bool = False

    @classmethod
    def of(cls, request: Request) -> Page:
        runtime: Runtime = request.app.state.runtime
        codec = runtime.sessions
        session = codec.decode(request.cookies.get(COOKIE_NAME))
        if session is None:
            return cls(request, runtime, codec.anonymous(), None, fresh=True)
        principal = codec.principal(session, runtime.settings)
        if session.signed_in and principal is None:  # token removed or replaced: sign out
            return cls(request, runtime, codec.anonymous(), None, fresh=True)
        return cls(request, runtime, session, principal)

    @property
    def live_refresh(self) -> bool:
        """The page's own script re-reading its live parts while a job runs
        (``X-Live-Refresh: 1``): the page was read (and audited) when it was opened."""
        return self.request.headers.get(LIVE_REFRESH_HEADER) == "1"

    def can(self, role: Role) -> bool:
        return self.principal is not None and self.principal.role.allows(role)

    def require(self, role: Role) -> Principal:
        if self.principal is None:
            url = self.request.url
            raise SignInRequired(url.path + (f"?{url.query}" if url.query else ""))
        if not self.principal.role.allows(role):
            raise PageError(
                403,
                "Not allowed",
                f"This needs the {role.value} role. You are signed in as "
                f"{self.principal.name}, who has the {self.principal.role.value} role; ask an "
                "admin for a token with more rights.",
            )
        return self.principal

    async def form(self) -> FormData:
        """The submitted form, after checking it came from this site's own page."""
        origin = self.request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != self.request.headers.get("host"):
            raise PageError(403, "Refused", "This form was sent from another site.")
        form = await self.request.form()
        presented = form.get(CSRF_FIELD)
        if not self.runtime.sessions.check_csrf(
            None if self.fresh else self.session, presented if isinstance(presented, str) else None
        ):
            raise PageError(
                403,
                "Form expired",
                "This form is out of date or did not come from this site (its security "
                "token does not match your session). Go back, reload the page and try again.",
            )
        return form

    def context(self, **values: Any) -> dict[str, Any]:
        settings = self.runtime.settings
        return {
            "open_dev": settings.dev and not settings.tokens,
            "user": self.principal,
            "csrf_token": self.session.csrf,
            "can_operate": self.can(Role.operator),
            "is_admin": self.can(Role.admin),
            "path": self.request.url.path,
            **values,
        }

    def _with_cookie(self, response: Response) -> Response:
        if self.fresh:
            response.set_cookie(
                COOKIE_NAME,
                self.runtime.sessions.encode(self.session),
                max_age=max(1, int(self.session.expires - time.time())),
                path="/",
                httponly=True,
                samesite="lax",
                secure=self.request.url.scheme == "https",
            )
        return response

    def render(self, template: str, status_code: int = 200, **values: Any) -> Response:
        response = render(self.request, template, self.context(**values), status_code=status_code)
        return self._with_cookie(response)

    def redirect(self, url: str) -> Response:
        response = RedirectResponse(url, status_code=303)
        response.headers.update(SECURITY_HEADERS)
        return self._with_cookie(response)

    def switch(self, session: Session) -> None:
        """Use ``session`` from now on (sent with the answer)."""
        self.session = session
        self.principal = self.runtime.sessions.principal(session, self.runtime.settings)
        self.fresh = True


async def get_page(request: Request) -> Page:
    return Page.of(request)


PageDep = Annotated[Page, Depends(get_page)]


@router.get("/", response_class=HTMLResponse)
async def home(page: PageDep) -> Response:
    return page.redirect("/videos" if page.principal else "/signin")


@router.get("/signin", response_class=HTMLResponse)
async def signin_form(page: PageDep, next: str | None = None) -> Response:
    return page.render("signin.html", next=safe_next(next), error=None)


@router.post("/signin", response_class=HTMLResponse)
async def signin(page: PageDep) -> Response:
    form = await page.form()
    token = form.get("token")
    next_url = safe_next(str(form.get("next") or ""))
    runtime = page.runtime
    address = client_address(page.request)
    throttled = runtime.throttle.check(address)
    if throttled is not None:
        sentence = throttled.sentence()
        response = page.render(
            "signin.html", status_code=429, next=next_url, error=sentence[:1].upper() + sentence[1:]
        )
        response.headers["Retry-After"] = str(throttled.retry_after_s)
        return response
    principal = authenticate(token if isinstance(token, str) else None, runtime.settings)
    if principal is None:
        reached = runtime.throttle.failed(address)
        runtime.audit.record(
            "sign_in",
            "-",
            outcome="rejected: wrong token" + ("; address throttled" if reached else ""),
            address=address,
        )
        return page.render(
            "signin.html",
            status_code=401,
            next=next_url,
            error="That token is not valid. Check it, or ask an admin for a current one.",
        )
    page.switch(runtime.sessions.signed_in(principal, runtime.settings))
    runtime.audit.record("sign_in", principal.name)
    logger.info("%s signed in to the pages", principal.name)
    return page.redirect(next_url)


@router.post("/signout", response_class=HTMLResponse)
async def signout(page: PageDep) -> Response:
    await page.form()
    if page.principal is not None:
        page.runtime.sessions.end(page.session)
        page.runtime.audit.record("sign_out", page.principal.name)
    page.switch(page.runtime.sessions.anonymous())
    return page.redirect("/signin?signed_out=1")


def signin_url(next_url: str) -> str:
    return "/signin?next=" + quote(safe_next(next_url), safe="/")
