"""Session cookies: signed, expiring, never holding the token, ended with the token."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time

import pytest

from service.core.security import DEV_PRINCIPAL, Principal, authenticate, hash_token
from service.core.sessions import SessionCodec, load_secret
from worker._exceptions import StorageError
from worker.settings import Role, Settings


@pytest.fixture
def codec() -> SessionCodec:
    return SessionCodec(b"s" * 32)


def payload(cookie: str) -> dict:
    body = cookie.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_a_signed_in_session_names_the_token_but_never_holds_it(codec, settings, tokens):
    principal = authenticate(tokens[Role.operator], settings)
    assert principal is not None
    session = codec.signed_in(principal, settings)
    cookie = codec.encode(session)
    assert tokens[Role.operator] not in cookie
    data = payload(cookie)
    assert set(data) <= {"c", "e", "n", "r", "k", "i"}
    assert data["n"] == "operator" and data["r"] == "operator"
    assert hash_token(tokens[Role.operator]) not in json.dumps(data)
    decoded = codec.decode(cookie)
    assert decoded == session.__class__(**{**session.__dict__, "expires": int(session.expires)})
    assert codec.principal(decoded, settings) == Principal("operator", Role.operator)


def test_forged_malformed_and_expired_cookies_are_refused(codec, settings):
    session = codec.signed_in(Principal("viewer", Role.viewer), settings)
    cookie = codec.encode(session)
    body, mac = cookie.split(".")
    forged_body = base64.urlsafe_b64encode(
        json.dumps({**payload(cookie), "r": "admin"}).encode()
    ).decode()
    for bad in (
        None,
        "",
        "garbage",
        f"{forged_body.rstrip('=')}.{mac}",
        f"{body}.{mac[:-2]}AA",
        SessionCodec(b"t" * 32).encode(session),
        "a.b.c",
        "x" * 5000,
    ):
        assert codec.decode(bad) is None, bad
    assert codec.decode(cookie, now=session.expires + 1) is None


def test_a_session_ends_when_its_token_is_removed_replaced_or_changes_role(
    codec, make_settings, tokens, token_setting
):
    settings = make_settings()
    session = codec.signed_in(Principal("operator", Role.operator), settings)
    assert codec.principal(session, settings) is not None
    entries = token_setting.split(",")
    removed = make_settings(api_tokens=",".join(e for e in entries if "operator" not in e))
    assert codec.principal(session, removed) is None
    replaced = make_settings(
        api_tokens=",".join(
            f"operator:operator:{hash_token('atcon_new')}" if e.startswith("operator:") else e
            for e in entries
        )
    )
    assert codec.principal(session, replaced) is None
    demoted = make_settings(
        api_tokens=",".join(e.replace("operator:operator:", "operator:viewer:") for e in entries)
    )
    assert codec.principal(session, demoted) is None


def test_an_anonymous_session_speaks_for_nobody(codec, settings):
    session = codec.anonymous()
    assert not session.signed_in and codec.principal(session, settings) is None
    assert codec.decode(codec.encode(session)).csrf == session.csrf


def test_dev_sessions_only_in_dev_mode_without_tokens(codec, tmp_path):
    dev = Settings(data_dir=tmp_path, dev=True)
    session = codec.signed_in(DEV_PRINCIPAL, dev)
    assert codec.principal(session, dev) == DEV_PRINCIPAL
    assert codec.principal(session, Settings(data_dir=tmp_path)) is None


def test_csrf_compare(codec):
    session = codec.anonymous()
    assert codec.check_csrf(session, session.csrf)
    assert not codec.check_csrf(session, session.csrf + "x")
    assert not codec.check_csrf(session, None)
    assert not codec.check_csrf(None, session.csrf)


def test_the_secret_is_made_once_private_and_shared(tmp_path):
    path = tmp_path / "data" / "session.key"
    secrets: list[bytes] = []
    threads = [threading.Thread(target=lambda: secrets.append(load_secret(path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(secrets)) == 1 and len(secrets[0]) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["session.key"]
    path.write_bytes(b"short")
    with pytest.raises(StorageError, match="shorter than 16 bytes"):
        load_secret(path)


def test_codec_arguments():
    with pytest.raises(ValueError, match="secret"):
        SessionCodec(b"short")
    with pytest.raises(ValueError, match="lifetime_s"):
        SessionCodec(b"s" * 32, lifetime_s=0)
    codec = SessionCodec(b"s" * 32, lifetime_s=10)
    session = codec.signed_in(Principal("x", Role.viewer), Settings(dev=True))
    assert session.expires <= time.time() + 10


def test_the_session_store_ends_sessions_and_sweeps_expired_records(tmp_path, settings):
    from service.core.session_store import SessionStore

    store = SessionStore(tmp_path / "sessions")
    codec = SessionCodec(b"s" * 32, store=store)
    session = codec.signed_in(Principal("viewer", Role.viewer), settings)
    assert codec.principal(codec.decode(codec.encode(session)), settings) is not None
    codec.end(session)
    assert codec.principal(session, settings) is None
    old = store.create("viewer", time.time() - 1)
    kept = store.create("admin", time.time() + 60)
    assert store.end_all("nobody") == 0
    assert not store.active(old) and store.active(kept)
    for bad in (None, "", "../session", "a" * 100, "../../session.key"):
        assert not store.active(bad) and not store.end(bad)


def test_redis_session_records_are_shared_ended_and_expire_with_the_session(settings):
    """What API replicas sharing no disk use: two stores on one Redis are one store."""
    import redis

    from service.core.session_store import RedisSessionStore
    from tests.redis_helpers import DB_API, flushed_db

    with flushed_db(DB_API) as url:
        client = redis.Redis.from_url(url)
        one, other = RedisSessionStore(client, "t"), RedisSessionStore(client, "t")
        codec = SessionCodec(b"s" * 32, store=one)
        session = codec.signed_in(Principal("viewer", Role.viewer), settings)
        assert SessionCodec(b"s" * 32, store=other).principal(session, settings) is not None
        assert (
            0
            < client.pttl(f"t:session:{session.sid}")
            <= 1000 * (session.expires - time.time() + 1)
        )
        first, second = one.create("admin", time.time() + 60), one.create("admin", time.time() + 60)
        assert other.active(first) and other.active(second)
        assert other.end(first) and not one.active(first) and not other.end(first)
        assert other.end_all("admin") == 1 and not one.active(second)
        assert other.end_all("admin") == 0
        for bad in (None, "", "../session", "a" * 100, "t:session:*"):
            assert not one.active(bad) and not one.end(bad)


def test_an_unreachable_redis_lets_no_session_through():
    import redis

    from service.core.session_store import RedisSessionStore
    from tests.redis_helpers import free_port

    store = RedisSessionStore(redis.Redis(port=free_port(), socket_timeout=0.5), "t")
    assert store.active("a" * 32) is False
    with pytest.raises(StorageError, match="Redis"):
        store.create("viewer", time.time() + 60)
