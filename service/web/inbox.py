"""The events inbox page: every video's events in one list, to review at speed.

``GET /events`` shows :meth:`service.core.inbox.EventIndex.query` as a table (the
peak frame's thumbnail, label, time, confidence, attention consistency, review
state, source video), newest first. The filters are a plain ``GET`` form, so the
filter state lives in the URL and a link can be shared; each choice shows how many
events it would list. Pages are cut by the API's cursor.

Operators review from the keyboard (``static/inbox.js``): ``j``/``k`` move, ``c``
confirms, ``f`` marks a false positive, ``u`` undoes, ``o`` opens the event in its
video, ``?`` lists the keys. Verdicts go to the API (``PUT``/``DELETE
/v1/videos/{id}/events/{event_id}/review``) at once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ..api.routes.events import inbox_filters
from ..core.config import Role
from ..core.inbox import LOW_CONSISTENCY, InvalidCursorError, ReviewState
from .session import PageDep, PageError

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_PAGE_SIZE = 50
#: the query parameters the filter form sets (and the next page keeps)
_FILTER_KEYS = ("label", "camera", "since", "until", "review", "low", "model_version", "video")


def _filter_params(request: Request) -> dict[str, str]:
    """The filters in the URL, empty values dropped, one value per key."""
    query = request.query_params
    return {k: query[k] for k in _FILTER_KEYS if query.get(k)}


@router.get("/events", response_class=HTMLResponse)
def inbox_page(request: Request, page: PageDep) -> Response:
    principal = page.require(Role.viewer)
    params = _filter_params(request)
    review = params.get("review")
    if review is not None and review not in {s.value for s in ReviewState}:
        raise PageError(
            422, "Unknown review state", "Choose unreviewed, confirmed or false positive."
        )
    try:
        filters = inbox_filters(
            [params["label"]] if "label" in params else None,
            [params["camera"]] if "camera" in params else None,
            params.get("since"),
            params.get("until"),
            ReviewState(review) if review else None,
            params.get("low") == "1",
            params.get("model_version"),
            params.get("video"),
        )
        result = page.runtime.inbox.query(
            filters, limit=_PAGE_SIZE, cursor=request.query_params.get("cursor") or None
        )
    except InvalidCursorError:
        raise PageError(
            422, "Page not found", "This page link is out of date; go back to the first page."
        ) from None
    except ValueError as exc:
        raise PageError(422, "Invalid filter", f"{exc}.") from None
    page.runtime.audit.record("list_events", principal.name)
    rows = [_row_view(r.public()) for r in result.rows]
    next_url = (
        "/events?" + urlencode({**params, "cursor": result.next_cursor})
        if result.next_cursor
        else None
    )
    return page.render(
        "events.html",
        rows=rows,
        total=result.total,
        counts=result.counts,
        params=params,
        next_url=next_url,
        first_url="/events?" + urlencode(params) if "cursor" in request.query_params else None,
        low_consistency=LOW_CONSISTENCY,
        review_states=[s.value for s in ReviewState],
    )


def _row_view(public: dict[str, Any]) -> dict[str, Any]:
    public["when"] = dt.datetime.fromisoformat(public["occurred_at"])
    return public
