"""Browser sessions end on the server: signing out, an admin's revocation of a token's
sessions, and a token removed from the settings all take effect on the next request,
on every API process (two real uvicorn processes): processes sharing the data
directory, and replicas sharing nothing but Redis and the object store (each with its
own data directory: the secret is the store's, the records Redis's, and the audit
lines of both reach the store)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.processes import Server
from worker.settings import Role

from .test_pages import CSRF_FIELD, CSRF_META

pytestmark = pytest.mark.slow


def _csrf(html: str) -> str:
    found = CSRF_META.search(html) or CSRF_FIELD.search(html)
    assert found
    return found.group(1)


def sign_in(base: str, token: str) -> tuple[str, str]:
    """Sign in through the form; (the session cookie, its CSRF token)."""
    with httpx.Client(base_url=base) as browser:
        csrf = _csrf(browser.get("/signin").text)
        answer = browser.post("/signin", data={"csrf_token": csrf, "token": token, "next": "/"})
        assert answer.status_code == 303, answer.text
        cookie = browser.cookies["atcon_session"]
        return cookie, _csrf(browser.get("/videos").text)


def works(base: str, cookie: str) -> bool:
    answer = httpx.get(f"{base}/v1/videos", cookies={"atcon_session": cookie})
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


@pytest.fixture(params=["shared volume", "object store"])
def replicas(request, tmp_path, token_setting) -> Iterator[tuple[dict, dict, Callable[[], str]]]:
    """Two API processes' environments, and what reads the deployment's audit log."""
    base = {"ATCON_API_TOKENS": token_setting, "ATCON_EMBEDDED_WORKERS": "0"}
    if request.param == "shared volume":
        env = {**base, "ATCON_DATA_DIR": str(tmp_path / "data")}
        yield env, env, lambda: (tmp_path / "data" / "audit.log").read_text()
        return
    from tests.redis_helpers import DB_API, flushed_db

    s3 = request.getfixturevalue("s3")
    bucket = s3.bucket()
    with flushed_db(DB_API) as url:
        shared = {**base, **s3.env(), "ATCON_REDIS_URL": url}
        shared["ATCON_STORAGE_URL"] = f"s3://{bucket}/ward"

        def audit() -> str:
            client = s3.client()
            return "".join(
                client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
                for key in s3.keys(bucket, "ward/audit/")
            )

        yield (
            {**shared, "ATCON_DATA_DIR": str(tmp_path / "one")},
            {**shared, "ATCON_DATA_DIR": str(tmp_path / "two")},
            audit,
        )


def test_sessions_end_on_the_server(tmp_path, replicas, token_setting, tokens):
    env_one, env, audit_log = replicas
    one = Server(env_one, tmp_path / "one.log").start()
    two = Server(env, tmp_path / "two.log").start()
    try:
        # signing out ends the session everywhere, not only in the browser that did it
        cookie, csrf = sign_in(one.url, tokens[Role.operator])
        assert works(one.url, cookie) and works(two.url, cookie)
        out = httpx.post(
            f"{one.url}/signout", data={"csrf_token": csrf}, cookies={"atcon_session": cookie}
        )
        assert out.status_code == 303
        assert not works(one.url, cookie) and not works(two.url, cookie)
        page = httpx.get(f"{two.url}/videos", cookies={"atcon_session": cookie})
        assert page.status_code == 303 and page.headers["location"].startswith("/signin")

        # an admin ends every session of one token; others' sessions go on
        viewer_a, _ = sign_in(one.url, tokens[Role.viewer])
        viewer_b, _ = sign_in(two.url, tokens[Role.viewer])
        admin, _ = sign_in(one.url, tokens[Role.admin])
        bearer = {"Authorization": f"Bearer {tokens[Role.admin]}"}
        ended = httpx.delete(f"{two.url}/v1/tokens/viewer/sessions", headers=bearer)
        assert ended.status_code == 200, ended.text
        assert ended.json() == {"token_name": "viewer", "ended": 2}
        assert not works(one.url, viewer_a) and not works(two.url, viewer_b)
        assert works(one.url, admin) and works(two.url, admin)
        forbidden = httpx.delete(
            f"{one.url}/v1/tokens/admin/sessions",
            headers={"Authorization": f"Bearer {tokens[Role.viewer]}"},
        )
        assert forbidden.status_code == 403
        # the token itself still works for the API
        viewer = {"Authorization": f"Bearer {tokens[Role.viewer]}"}
        assert httpx.get(f"{one.url}/v1/videos", headers=viewer).status_code == 200

        # a token removed from the settings: its sessions end at the next request
        operator, _ = sign_in(one.url, tokens[Role.operator])
        assert two.stop_cleanly(), two.output()
        without = ",".join(e for e in token_setting.split(",") if not e.startswith("operator:"))
        two = Server({**env, "ATCON_API_TOKENS": without}, tmp_path / "two-b.log").start()
        assert not works(two.url, operator)
        assert works(two.url, admin)
    finally:
        assert one.stop_cleanly(), one.output()
        assert two.stop_cleanly(), two.output()
    audit = audit_log()
    assert '"end_sessions"' in audit and '"sign_out"' in audit
