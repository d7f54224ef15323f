"""Behind a TLS proxy and serving TLS directly (real uvicorn): forwarded headers are
believed only from the configured proxies, and the session cookie is ``Secure``
whenever the original scheme is https."""

from __future__ import annotations

import ssl
import subprocess

import httpx
import pytest

from tests.processes import Server
from worker.settings import Role, Settings

from .test_pages import CSRF_FIELD, CSRF_META

pytestmark = pytest.mark.slow


def _csrf(html: str) -> str:
    found = CSRF_META.search(html) or CSRF_FIELD.search(html)
    assert found
    return found.group(1)


def session_cookie(base: str, token: str, headers: dict[str, str], verify=True) -> str:
    """The Set-Cookie header of a sign-in through the form.

    The cookie is carried by hand: a client talking plain HTTP to the server behind a
    TLS proxy would (rightly) not send back a ``Secure`` cookie on its own."""
    with httpx.Client(base_url=base, headers=headers, verify=verify) as browser:
        form = browser.get("/signin")
        anonymous = form.headers["set-cookie"].split(";")[0]
        answer = browser.post(
            "/signin",
            data={"csrf_token": _csrf(form.text), "token": token, "next": "/"},
            headers={"Cookie": anonymous},
        )
        assert answer.status_code == 303, answer.text
        return next(v for v in answer.headers.get_list("set-cookie") if "atcon_session" in v)


def wrong_tokens(base: str, headers: dict[str, str], count: int) -> list[int]:
    bad = {**headers, "Authorization": "Bearer " + "atcon_" + "B" * 43}
    return [httpx.get(f"{base}/v1/videos", headers=bad).status_code for _ in range(count)]


@pytest.fixture
def env(tmp_path, token_setting):
    return {
        "ATCON_DATA_DIR": str(tmp_path / "data"),
        "ATCON_API_TOKENS": token_setting,
        "ATCON_EMBEDDED_WORKERS": "0",
        "ATCON_AUTH_FAILURE_LIMIT": "3",
    }


def test_forwarded_headers_are_believed_from_the_configured_proxy_only(tmp_path, env, tokens):
    https = {"X-Forwarded-Proto": "https"}
    trusted = Server({**env, "ATCON_FORWARDED_ALLOW_IPS": "127.0.0.1"}, tmp_path / "p.log")
    trusted.start()
    try:
        cookie = session_cookie(trusted.url, tokens[Role.viewer], https)
        assert "secure" in cookie.lower() and "httponly" in cookie.lower()
        plain = session_cookie(trusted.url, tokens[Role.viewer], {})
        assert "secure" not in plain.lower()
        # the proxy names the client: each client address has its own count
        assert wrong_tokens(trusted.url, {"X-Forwarded-For": "10.0.0.1"}, 4)[-1] == 429
        assert wrong_tokens(trusted.url, {"X-Forwarded-For": "10.0.0.2"}, 1) == [401]
    finally:
        assert trusted.stop_cleanly(), trusted.output()

    untrusted = Server(env, tmp_path / "u.log").start()
    try:
        cookie = session_cookie(untrusted.url, tokens[Role.viewer], https)
        assert "secure" not in cookie.lower()
        # a client that claims other addresses is still counted as itself
        codes = [
            wrong_tokens(untrusted.url, {"X-Forwarded-For": f"10.0.0.{n}"}, 1)[0] for n in range(4)
        ]
        assert codes[-1] == 429
    finally:
        assert untrusted.stop_cleanly(), untrusted.output()


def test_serve_tls_directly(tmp_path, env, tokens):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    args = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    trust = ssl.create_default_context(cafile=str(cert))
    server = Server(env, tmp_path / "tls.log", args=args, verify=trust).start()
    try:
        assert server.url.startswith("https://")
        cookie = session_cookie(server.url, tokens[Role.viewer], {}, verify=trust)
        assert "secure" in cookie.lower()
    finally:
        assert server.stop_cleanly(), server.output()


def test_settings_refuse_a_wildcard_proxy_and_half_a_tls_pair(tmp_path):
    with pytest.raises(ValueError, match="believe forwarded headers from anyone"):
        Settings(forwarded_allow_ips="*")
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(forwarded_allow_ips="proxy.local")
    with pytest.raises(ValueError, match="both ssl_certfile and ssl_keyfile"):
        Settings(ssl_certfile=tmp_path / "cert.pem")
    assert Settings(forwarded_allow_ips=" 10.0.0.5, 10.1.0.0/16").forwarded_allow_ips == (
        "10.0.0.5,10.1.0.0/16"
    )
