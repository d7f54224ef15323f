"""The FastAPI application factory.

``create_app(settings)`` builds the app; its lifespan starts a :class:`Runtime`
(storage, queue, audit log, and in the embedded default the worker threads) and
stops it on shutdown. ``atcon serve`` runs it under uvicorn.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from worker.queue.interface import JobQueue

from .api.routes import (
    events,
    finetune,
    frames,
    health,
    jobs,
    models,
    reports,
    reviews,
    sessions,
    videos,
)
from .core.body_limits import MULTIPART_SLACK, BodyLimitMiddleware
from .core.config import Settings, get_settings
from .core.metrics import RequestMetrics
from .core.problems import PlainErrorsAsProblems, install_problem_handlers
from .core.runtime import Runtime
from .core.token_hygiene import RefuseQueryTokens
from .web import install_pages

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    queue: JobQueue | None = None,
    workers: int | None = None,
) -> FastAPI:
    """The API. ``queue`` replaces the one the settings name; ``workers`` the number of
    embedded detect worker threads (default: ``ATCON_EMBEDDED_WORKERS`` without Redis, 0
    with it)."""
    settings = settings or get_settings()
    settings.check_safe_to_serve()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await run_in_threadpool(
            lambda: Runtime.start(settings, queue=queue, workers=workers)
        )
        app.state.runtime = runtime
        mode = "embedded (no Redis)" if settings.embedded else "Redis"
        logger.info("ATCON API ready: queue %s, data in %s", mode, settings.data_dir)
        try:
            yield
        finally:
            await run_in_threadpool(runtime.stop)

    app = FastAPI(
        title="ATCON event detection",
        version="1",
        summary="Upload patient videos, get events with their attention maps.",
        lifespan=lifespan,
    )

    install_problem_handlers(app)
    app.add_middleware(PlainErrorsAsProblems)
    app.add_middleware(RefuseQueryTokens)
    # before any route reads a body, authenticated or not (see core.body_limits)
    app.add_middleware(
        BodyLimitMiddleware,
        default=(settings.max_body_bytes, "ATCON_MAX_BODY_BYTES"),
        routes={
            ("POST", "/v1/videos"): (
                settings.max_upload_bytes + MULTIPART_SLACK,
                "ATCON_MAX_UPLOAD_BYTES",
            ),
            ("POST", "/v1/frames"): (
                settings.max_frame_upload_bytes + MULTIPART_SLACK,
                "ATCON_MAX_FRAME_UPLOAD_BYTES",
            ),
        },
    )
    app.include_router(videos.router)
    app.include_router(reviews.router)
    app.include_router(events.router)
    app.include_router(reports.router)
    app.include_router(jobs.router)
    app.include_router(frames.router)
    app.include_router(models.router)
    app.include_router(finetune.router)
    app.include_router(sessions.router)
    app.include_router(health.router)
    install_pages(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = FastAPI.openapi(app)
            finetune.document_limits(document, settings)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(RequestMetrics)  # outermost: times what the client waits for
    return app
