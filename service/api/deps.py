"""Dependencies of the routes, as ``Annotated`` aliases.

Routes declare what they need (``principal: OperatorDep``, ``runtime: RuntimeDep``)
and never look at headers or global state themselves. The settings are the ones the
app factory was given (``create_app(settings)``, by default ``get_settings()``), read
from the app's runtime; tests pass their own to the factory. (Not through
``app.dependency_overrides``: FastAPI re-analyses an overridden dependency's
signature on every request, which cost a third of the server's time per request.)
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from worker.detection.results import EVENT_ID_PATTERN
from worker.queue.interface import JobQueue
from worker.storage import ID_PATTERN, Storage

from ..core.config import Role, Settings
from ..core.runtime import Runtime
from ..core.security import Principal, authenticate
from ..core.sessions import COOKIE_NAME, CSRF_HEADER
from ..core.throttle import client_address

__all__ = [
    "AdminDep",
    "EventId",
    "JobId",
    "OperatorDep",
    "PrincipalDep",
    "QueueDep",
    "RuntimeDep",
    "SettingsDep",
    "StorageDep",
    "VideoId",
    "ViewerDep",
]

logger = logging.getLogger(__name__)


# Dependencies are ``async def`` although they never wait: FastAPI runs a plain ``def``
# dependency in the thread pool, one thread hop per dependency and request.


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_app_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_storage(runtime: RuntimeDep) -> Storage:
    return runtime.storage


async def get_queue(runtime: RuntimeDep) -> JobQueue:
    return runtime.queue


StorageDep = Annotated[Storage, Depends(get_storage)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]

_bearer = HTTPBearer(
    auto_error=False,
    description="A token from `atcon token new NAME ROLE`; roles: viewer, operator, admin.",
)


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_principal(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller: a bearer token, else the web pages' session cookie.

    A request authenticated by the cookie that changes something must carry the
    session's CSRF secret in ``X-CSRF-Token`` (see :mod:`service.core.sessions`).
    """
    settings = runtime.settings
    token = credentials.credentials if credentials is not None else None
    if token is None and COOKIE_NAME in request.cookies:
        session = runtime.sessions.decode(request.cookies[COOKIE_NAME])
        principal = runtime.sessions.principal(session, settings) if session else None
        if principal is not None:
            if request.method not in _SAFE_METHODS and not runtime.sessions.check_csrf(
                session, request.headers.get(CSRF_HEADER)
            ):
                raise HTTPException(
                    403,
                    f"this request came with a browser session but without its CSRF token "
                    f"(the {CSRF_HEADER} header); reload the page and try again",
                )
            return principal
    address = client_address(request)
    if token is not None:
        throttled = runtime.throttle.check(address)
        if throttled is not None:
            raise HTTPException(
                429, throttled.sentence(), headers={"Retry-After": str(throttled.retry_after_s)}
            )
    principal = authenticate(token, settings)
    if principal is None:
        if token is not None:
            reached = runtime.throttle.failed(address)
            runtime.audit.record(
                "authenticate",
                "-",
                outcome="rejected: wrong token" + ("; address throttled" if reached else ""),
                address=address,
            )
            if reached:
                logger.warning("failed authentications from %s reached the limit", address)
        detail = (
            "this endpoint needs a bearer token: send `Authorization: Bearer <token>` "
            "(an admin creates tokens with `atcon token new NAME ROLE`)"
            if token is None
            else "the bearer token is not valid; ask an admin for a current one"
        )
        raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


class RequireRole:
    """A dependency that lets a principal of ``role`` or higher through, else 403."""

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(self, principal: PrincipalDep) -> Principal:
        if not principal.role.allows(self.role):
            raise HTTPException(
                403,
                f"this action needs the {self.role.value} role; the token "
                f"{principal.name!r} has {principal.role.value}",
            )
        return principal


ViewerDep = Annotated[Principal, Depends(RequireRole(Role.viewer))]
OperatorDep = Annotated[Principal, Depends(RequireRole(Role.operator))]
AdminDep = Annotated[Principal, Depends(RequireRole(Role.admin))]

VideoId = Annotated[
    str, Path(pattern=ID_PATTERN, description="32 lowercase hex digits, from the upload")
]
JobId = Annotated[
    str, Path(pattern=ID_PATTERN, description="32 lowercase hex digits, from the upload")
]
EventId = Annotated[
    str, Path(pattern=EVENT_ID_PATTERN, description="an event id from the video's events")
]
