"""``/v1/tokens/{name}/sessions``: end every browser session of a token (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from ...core.problems import PROBLEM_RESPONSES
from ..deps import AdminDep, RuntimeDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/tokens", tags=["sessions"], responses=PROBLEM_RESPONSES)

TokenName = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="the token's name, as in ATCON_API_TOKENS (never the token)",
    ),
]


class SessionsEnded(BaseModel):
    token_name: str
    ended: int = Field(description="signed-in browser sessions of the token that were ended")


@router.delete(
    "/{name}/sessions",
    response_model=SessionsEnded,
    summary="Sign out every browser session of a token, on every API process, at once",
)
async def end_sessions(name: TokenName, principal: AdminDep, runtime: RuntimeDep) -> SessionsEnded:
    """The token itself keeps working for the API; to stop it too, remove or replace its
    entry in ``ATCON_API_TOKENS`` (which also ends its sessions)."""
    store = runtime.sessions.store
    ended = await run_in_threadpool(store.end_all, name) if store is not None else 0
    runtime.audit.record("end_sessions", principal.name, outcome=f"{ended} of {name!r} ended")
    return SessionsEnded(token_name=name, ended=ended)
