"""The web pages clinicians use: sign-in, videos, a video's events and maps, the review
queue, and (admin) model versions and fine-tunes.

Server-rendered Jinja2 templates (``service/templates``) with a little plain
JavaScript (``service/static``); no front-end build. Pages authenticate with a
signed session cookie (:mod:`service.core.sessions`) and read the same data the API
serves; scripts on the pages call the API with that cookie and its CSRF header.

Page routes::

    GET  /                      -> /videos (or /signin)
    GET  /signin, POST /signin  sign in with an API token
    POST /signout
    GET  /videos                videos table, upload (operator)
    GET  /videos/{video_id}     player, timeline, maps, review buttons (operator)
    POST /videos/{video_id}/events/{event_id}/review    verdict form (operator)
    GET  /events                events inbox across videos: filters, keyboard review
    GET  /review                review queue (images from /v1/frames)
    POST /review/frames/{frame_id}/labels                label form (operator)
    GET  /models                versions and fine-tunes (admin)
    POST /models/{version}/activate, POST /models/finetune   (admin)
    GET  /static/...            CSS and JavaScript
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from . import admin, inbox, review, session, videos
from .errors import install_page_errors
from .templating import STATIC_DIR

__all__ = ["install_pages"]


def install_pages(app: FastAPI) -> None:
    """Add the pages, their static files and their error pages to ``app``.

    Call after the API's problem handlers are installed: HTML error pages wrap them.
    """
    app.include_router(session.router)
    app.include_router(videos.router)
    app.include_router(inbox.router)
    app.include_router(review.router)
    app.include_router(admin.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_page_errors(app)
