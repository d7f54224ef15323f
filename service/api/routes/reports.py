"""``GET /v1/videos/{video_id}/report``: a printable HTML report of one video for the chart.

The page (:mod:`service.core.report`, ``templates/report.html``) stands alone: its
images are embedded, its style inline, no script. PDF is left to the browser's print
dialog (see the README on why the server does not make PDFs).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from ...core.problems import PROBLEM_RESPONSES, problem_responses
from ...core.report import video_report
from ...web.templating import render
from ..deps import RuntimeDep, VideoId, ViewerDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/videos", tags=["reports"], responses=PROBLEM_RESPONSES)


@router.get(
    "/{video_id}/report",
    response_class=HTMLResponse,
    summary="A printable HTML report of the video: facts, model, events, verdicts, maps",
    responses={**problem_responses(404, 409), 200: {"content": {"text/html": {}}}},
)
async def get_report(
    request: Request, video_id: VideoId, principal: ViewerDep, runtime: RuntimeDep
) -> HTMLResponse:
    """Every event with its times, confidence, attention consistency and verdict, and
    its peak frame beside its Grad-CAM overlay. 409 while the video has no results."""
    view = await run_in_threadpool(video_report, runtime.storage, video_id)
    runtime.audit.record("read_report", principal.name, video_id=video_id)
    return render(request, "report.html", {**view, "generated_by": principal.name})
