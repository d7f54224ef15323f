"""``/healthz`` (process up), ``/readyz`` (queue, storage, model) and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from worker import QueueError, StorageError

from ...core.metrics import metrics_registry, render_metrics
from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ..deps import AdminDep, RuntimeDep
from ..schemas import Readiness

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up (no auth)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Queue and storage reachable, model loadable (no auth)",
    responses={503: {"model": Readiness, "description": "Not ready; `checks` says why"}},
)
def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, dict[str, object]] = {}
    try:
        runtime.queue.ping()
        checks["queue"] = {"ok": True, "detail": "reachable"}
    except QueueError as exc:
        checks["queue"] = {"ok": False, "detail": str(exc)}
    try:
        runtime.storage.check_writable()
        checks["storage"] = {"ok": True, "detail": "writable"}
    except StorageError as exc:
        checks["storage"] = {"ok": False, "detail": str(exc)}
    model = runtime.model_check.check()
    checks["model"] = {"ok": model.ok, "detail": model.detail, "version": model.version}
    ready = all(bool(c["ok"]) for c in checks.values())
    body = Readiness(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics (admin token)",
    responses={**PROBLEM_RESPONSES, **problem_responses(401, 403)},
)
def metrics(principal: AdminDep, runtime: RuntimeDep, request: Request) -> Response:
    registry = metrics_registry(
        runtime.queue, runtime.kinds, lambda: runtime.model_check.check().version
    )
    body, content_type = render_metrics(registry, request.headers.get("accept"))
    return Response(body, media_type=content_type)
