"""Fixtures of the API tests: tokens for each role, an app on a temporary data directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.core.security import new_token
from service.main import create_app
from worker.settings import Role, Settings

from .browser import CHROMIUM, CHROMIUM_ARGS
from .results import ResultsWriter


@pytest.fixture(scope="session")
def tokens() -> dict[Role, str]:
    return {role: new_token(role.value, role)[0] for role in Role}


@pytest.fixture(scope="session", autouse=True)
def no_token_in_any_log(tokens: dict[Role, str]) -> Iterator[None]:
    """After the session, no log of a real server or worker holds a configured token
    (or anything shaped like one): see :mod:`service.core.token_hygiene`."""
    import re

    from tests.processes import SESSION_LOGS

    yield
    shape = re.compile(r"atcon_[A-Za-z0-9_-]{32,}")
    leaks = []
    for log in dict.fromkeys(SESSION_LOGS):
        text = log.read_text(errors="replace") if log.exists() else ""
        if any(token in text for token in tokens.values()) or shape.search(text):
            leaks.append(str(log))
    assert not leaks, f"tokens written to the logs of: {', '.join(leaks)}"


@pytest.fixture(scope="session")
def token_setting(tokens: dict[Role, str]) -> str:
    from service.core.security import hash_token

    return ",".join(f"{r.value}:{r.value}:{hash_token(t)}" for r, t in tokens.items())


@pytest.fixture
def auth(tokens: dict[Role, str]) -> Callable[[Role], dict[str, str]]:
    def headers(role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[role]}"}

    return headers


@pytest.fixture
def make_settings(tmp_path: Path, token_setting: str) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "api_tokens": token_setting,
            "max_upload_bytes": 1 << 20,
            "upload_chunk_bytes": 64 << 10,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app with its in-memory queue and no worker threads: jobs stay queued."""
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


@pytest.fixture
def results(settings: Settings) -> ResultsWriter:
    return ResultsWriter(settings.data_dir)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium for the module (the ``browser`` marker's tests); skipped
    without Playwright or /usr/bin/chromium."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/ensure-services installs it with apt)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
