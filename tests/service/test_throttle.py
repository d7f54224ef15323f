"""Failed authentication is throttled per client address, across API replicas.

Two real uvicorn processes share one real Redis: wrong tokens sent to either count
together; past the limit every token attempt from the address answers 429 with
``Retry-After`` (a right token too, so a right guess does not stand out), the audit
log names the address and never the token, and ordinary use never comes near it.
"""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests.processes import Server
from tests.redis_helpers import DB_E2E, flushed_db
from worker.settings import Role

from .test_pages import CSRF_FIELD, CSRF_META

LIMIT = 5


def _csrf(html: str) -> str:
    found = CSRF_META.search(html) or CSRF_FIELD.search(html)
    assert found
    return found.group(1)


@pytest.mark.slow
@pytest.mark.redis
def test_wrong_tokens_are_throttled_across_replicas(tmp_path, token_setting, tokens):
    wrong = "atcon_" + "G" * 43
    with flushed_db(DB_E2E) as url:
        env = {
            "ATCON_DATA_DIR": str(tmp_path / "data"),
            "ATCON_API_TOKENS": token_setting,
            "ATCON_REDIS_URL": url,
            "ATCON_AUTH_FAILURE_LIMIT": str(LIMIT),
        }
        one = Server(env, tmp_path / "one.log").start()
        two = Server(env, tmp_path / "two.log").start()
        try:
            viewer = {"Authorization": f"Bearer {tokens[Role.viewer]}"}
            for _ in range(200):  # a busy ward's pages and scripts: never throttled
                assert httpx.get(f"{one.url}/v1/videos", headers=viewer).status_code == 200
            bad = {"Authorization": f"Bearer {wrong}"}
            codes = [
                httpx.get(f"{server.url}/v1/videos", headers=bad).status_code
                for server in (one, two, one, two, one)
            ]
            assert codes == [401] * LIMIT
            refused = httpx.get(f"{two.url}/v1/videos", headers=bad)
            assert refused.status_code == 429, refused.text
            assert 1 <= int(refused.headers["Retry-After"]) <= 300
            assert "wait" in refused.json()["detail"]
            right = httpx.get(f"{one.url}/v1/videos", headers=viewer)
            assert right.status_code == 429
            # asking without a token is not a guess: it still gets the 401 that says how
            assert httpx.get(f"{one.url}/v1/videos").status_code == 401
        finally:
            assert one.stop_cleanly(), one.output()
            assert two.stop_cleanly(), two.output()
    audit = (tmp_path / "data" / "audit.log").read_text()
    assert wrong not in audit and tokens[Role.viewer] not in audit
    failures = [json.loads(line) for line in audit.splitlines() if '"authenticate"' in line]
    assert len(failures) == LIMIT
    assert {f["address"] for f in failures} == {"127.0.0.1"}
    assert failures[-1]["outcome"].endswith("address throttled")


def test_wrong_sign_ins_are_throttled(make_settings, tokens):
    settings = make_settings(auth_failure_limit=LIMIT)
    with TestClient(create_app(settings, workers=0)) as client:
        csrf = _csrf(client.get("/signin").text)
        for _ in range(LIMIT):
            form = {"csrf_token": csrf, "token": "nope", "next": "/videos"}
            assert client.post("/signin", data=form).status_code == 401
        form = {"csrf_token": csrf, "token": tokens[Role.admin], "next": "/videos"}
        refused = client.post("/signin", data=form, follow_redirects=False)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert "Too many failed sign-ins" in refused.text
