"""Tokens never in URLs and never in logs: a real server session's log is grepped for
every configured token (and anything shaped like one) after hostile and ordinary use."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from service.core.token_hygiene import RedactTokens, redact
from tests.processes import Server
from worker.settings import Role

from .test_pages import CSRF_FIELD, CSRF_META

pytestmark = pytest.mark.slow

TOKEN_SHAPE = re.compile(r"atcon_[A-Za-z0-9_-]{32,}")


def _csrf(html: str) -> str:
    found = CSRF_META.search(html) or CSRF_FIELD.search(html)
    assert found
    return found.group(1)


def test_a_server_session_logs_no_token(tmp_path, token_setting, tokens):
    env = {"ATCON_DATA_DIR": str(tmp_path / "data"), "ATCON_API_TOKENS": token_setting}
    server = Server(env, tmp_path / "api.log").start()
    wrong = "atcon_" + "W" * 43
    try:
        base = server.url
        admin = tokens[Role.admin]
        for name in ("token", "access_token", "api_key"):
            response = httpx.get(f"{base}/v1/videos?{name}={admin}")
            assert response.status_code == 400, response.text
            assert "Authorization: Bearer" in response.json()["detail"]
        assert httpx.get(f"{base}/v1/videos?x={admin}").status_code == 400
        assert httpx.get(f"{base}/signin?token=hunter2").status_code == 400
        assert httpx.get(f"{base}/v1/videos/{admin}").status_code in (401, 404, 422)
        for token in tokens.values():
            ok = httpx.get(f"{base}/v1/videos", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
        bad = httpx.get(f"{base}/v1/videos", headers={"Authorization": f"Bearer {wrong}"})
        assert bad.status_code == 401
        with httpx.Client(base_url=base) as browser:
            csrf = _csrf(browser.get("/signin").text)
            for token in (wrong, admin):
                browser.post("/signin", data={"csrf_token": csrf, "token": token, "next": "/"})
            browser.get("/videos")
    finally:
        assert server.stop_cleanly(), server.output()
    log = server.output()
    assert "GET /v1/videos" in log, "the access log is on"
    for token in [*tokens.values(), wrong, "hunter2"]:
        assert token not in log
    assert not TOKEN_SHAPE.findall(log.replace("atcon_[redacted]", ""))


def test_the_filter_redacts_messages_arguments_and_tracebacks(caplog):
    token = "atcon_" + "x" * 43
    logger = logging.getLogger("tests.token_hygiene")
    handler = logging.Handler()
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(RedactTokens())
    logger.addHandler(handler)
    try:
        logger.warning("%s - %s", "GET /x?access_token=s3cret&y=1", f"Bearer {token}")
        try:
            raise ValueError(f"bad {token}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = " ".join(f"{r.getMessage()} {r.exc_text or ''}" for r in records)
    assert "s3cret" not in text and token not in text
    assert "access_token=[redacted]" in text and "Bearer [redacted]" in text
    assert redact("no secrets here") == "no secrets here"
