"""What the browser tests share: Chromium, its options, screenshots and signing in.

The ``browser`` fixture itself is in ``tests/service/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

from tests.processes import REPO, Server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"
#: JavaScript: the player finished seeking and shows a frame (no spinner in screenshots)
PLAYER_SETTLED = """() => {
  const v = document.getElementById('player');
  return !v.seeking && v.readyState >= 3;
}"""
DESKTOP = {"width": 1280, "height": 800}
TABLET = {"width": 820, "height": 1180}
#: JavaScript predicates are functions: an expression string would be eval'd in the
#: page, which its Content-Security-Policy forbids
#: every shown map image of the event panel has loaded
MAPS_LOADED = """() => {
  const imgs = [...document.querySelectorAll('#event-detail img:not([hidden])')];
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(browser, server: Server, token: str, viewport=DESKTOP, shot_as=None):  # type: ignore[no-untyped-def]
    """A fresh browser context signed in with ``token`` (typed, then Enter).

    ``page.problems`` collects script errors and Content-Security-Policy violations;
    ``page.source_statuses`` the status of every answer of the video source endpoint.
    """
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.problems = []
    page.source_statuses = []
    page.on("pageerror", lambda exc: page.problems.append(f"script error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            page.problems.append(msg.text) if "Content Security Policy" in msg.text else None
        ),
    )
    page.on(
        "response",
        lambda r: page.source_statuses.append(r.status) if r.url.endswith("/source") else None,
    )
    page.goto(server.url + "/videos")
    assert page.url.startswith(server.url + "/signin"), "signed out: the sign-in page"
    if shot_as:
        shot(page, shot_as)
    page.get_by_label("API token").fill(token)
    page.keyboard.press("Enter")  # keyboard only
    page.wait_for_url(server.url + "/videos")
    return context, page
