"""The pages in a real Chromium (Playwright) against a real ``atcon serve`` process.

The embedded default (no Redis) with a synthetic ward video and a small checkpoint
that finds its events (tests/service/ward.py). Screenshots of every page go to
``test-artifacts/`` (gitignored). ``scripts/ensure-services`` installs Chromium
with apt when it is missing; without it these tests are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests import media
from tests.processes import Server, wait_for
from worker.pool.frames import FramePool
from worker.serving.versions import ModelRegistry, VersionStatus
from worker.settings import Role
from worker.storage import Storage, VideoRecord, new_id

from .browser import ARTIFACTS, DESKTOP, MAPS_LOADED, PLAYER_SETTLED, TABLET, shot, sign_in
from .results import ResultsWriter
from .ward import INPUT_SIZE, Ward, make_ward

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def ward(tmp_path_factory: pytest.TempPathFactory) -> Ward:
    return make_ward(tmp_path_factory.mktemp("ward"))


def _seed_data_dir(data: Path, ward: Ward) -> str:
    """A candidate model version with a card, pool frames waiting for review, and a
    processed video whose events have low attention consistency; returns its id."""
    registry = ModelRegistry(data / "models")
    registry.register(
        ward.checkpoint,
        status=VersionStatus.CANDIDATE,
        reason="no labeled validation set: not promoted automatically; an admin may activate it",
        config={"mode": "alternating", "epochs": 2, "alpha": 0.5},
        data={"counts": {"unlabeled": 64, "train": 0, "val": 0}},
    )
    pool = FramePool(data / "frames", image_size=INPUT_SIZE)
    for index, path in enumerate(sorted((ward.frames_dir / "images").iterdir())[:12:3]):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        record = pool.add_frame(rgb, video_id=None, time_s=float(index))
        pool.set_consistency(record.frame_id, 0.2 + 0.15 * index, "v0001")
    storage = Storage(data)
    storage.ensure_layout()
    video_id = new_id()
    received = media.write_video(storage.new_upload_file(), frames=12, fps=6)
    record = VideoRecord(
        video_id=video_id,
        job_id=new_id(),
        size_bytes=received.stat().st_size,
        filename="low-consistency.mp4",
        container="mov,mp4,m4a,3gp,3g2,mj2",
        width=64,
        height=48,
        duration_s=2.0,
    )
    storage.save_video(record, received)
    ResultsWriter(data).write(video_id, events=1, consistency=0.12)
    return video_id


@pytest.fixture(scope="module")
def data_dir(ward: Ward, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pages") / "data"


@pytest.fixture(scope="module")
def low_video(ward: Ward, data_dir: Path) -> str:
    return _seed_data_dir(data_dir, ward)


@pytest.fixture(scope="module")
def server(ward: Ward, token_setting: str, data_dir: Path, low_video: str) -> Iterator[Server]:
    root = data_dir.parent
    env = {
        "ATCON_DATA_DIR": str(root / "data"),
        "ATCON_API_TOKENS": token_setting,
        "ATCON_CHECKPOINT": str(ward.checkpoint),
        "ATCON_EMBEDDED_WORKERS": "1",
    }
    server = Server(env, root / "server.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", autouse=True)
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def processed_video(server: Server, tokens: dict[Role, str], ward: Ward) -> str:
    """A video uploaded over the API (bearer token) and processed by the embedded worker."""
    headers = {"Authorization": f"Bearer {tokens[Role.operator]}"}
    with open(ward.video, "rb") as fh:
        body = httpx.post(
            server.url + "/v1/videos", headers=headers, files={"file": ("api.mp4", fh)}
        ).json()

    def done() -> bool:
        job = httpx.get(server.url + body["status_url"], headers=headers).json()
        assert job["status"] != "failed", job
        return job["status"] == "done"

    wait_for(done, 120, "the detection job")
    return str(body["video_id"])


def test_operator_uploads_reviews_and_signs_out(browser, server, tokens, ward):
    context, page = sign_in(browser, server, tokens[Role.operator], shot_as="signin")
    try:
        # upload from the page, with progress, then the table follows the job to "done"
        # through one event stream, re-reading the table only when the job changes state
        streams: list[str] = []
        refreshes: list[str] = []
        page.on(
            "request",
            lambda r: (
                streams.append(r.url)
                if "/v1/jobs/stream" in r.url
                else refreshes.append(r.url)
                if r.headers.get("x-live-refresh") == "1"
                else None
            ),
        )
        page.get_by_label("Video file").set_input_files(str(ward.video))
        page.get_by_role("button", name="Upload").click()
        page.get_by_text("uploaded; detection is queued").wait_for()
        assert page.locator("#upload-progress").get_attribute("value") == "100"
        row = page.locator("#videos-table tbody tr", has_text="ward.mp4")
        row.locator('xpath=self::tr[@data-status="done"]').wait_for(timeout=120_000)
        assert int(row.locator("td.events").inner_text()) >= 1
        assert streams, "the page follows the job over server-sent events"
        assert len(refreshes) <= 4, f"one re-read per change of state, not a poll: {refreshes}"
        shot(page, "videos")

        row.get_by_role("link", name="ward.mp4").click()
        page.wait_for_url("**/videos/*")
        page.wait_for_function("() => document.getElementById('player').readyState >= 1")
        data = json.loads(page.locator("#video-data").text_content())
        events = data["events"]
        assert len(page.locator("#lanes .lane").all()) == 2, "one lane per class"
        later = [e for e in events if e["start_s"] > 1.0]
        assert later, f"the ward model finds events after the start: {events}"

        # click an event: the player seeks to its start and every map loads
        target = later[-1]
        page.locator(f'a.event[data-event-id="{target["id"]}"]').click()
        current = page.evaluate("document.getElementById('player').currentTime")
        assert current == pytest.approx(target["start_s"], abs=0.05)
        page.wait_for_function(MAPS_LOADED)
        assert page.locator("#event-detail img:not([hidden])").count() == 5
        assert page.locator('[data-field="label"]').inner_text() == target["label"]

        # arrow keys move to the previous event and seek too
        index = events.index(target)
        page.keyboard.press("ArrowLeft")
        previous = events[index - 1]
        current = page.evaluate("document.getElementById('player').currentTime")
        assert current == pytest.approx(previous["start_s"], abs=0.05)
        assert page.evaluate("document.activeElement.dataset.eventId") == previous["id"]
        page.wait_for_function(MAPS_LOADED)
        page.keyboard.press("ArrowRight")
        assert page.evaluate("document.activeElement.dataset.eventId") == target["id"]

        # the overlay opacity slider, by keyboard
        heat = page.locator('img[data-map="gradcam"]')
        before = float(heat.evaluate("i => getComputedStyle(i).opacity"))
        page.get_by_label("Overlay opacity").focus()
        for _ in range(4):
            page.keyboard.press("ArrowLeft")
        assert float(heat.evaluate("i => getComputedStyle(i).opacity")) < before
        page.wait_for_function(MAPS_LOADED)
        page.wait_for_function(PLAYER_SETTLED)
        shot(page, "video")
        page.set_viewport_size(TABLET)
        shot(page, "video-tablet")
        page.set_viewport_size(DESKTOP)

        # mark it a false positive; it persists across a reload
        page.get_by_role("button", name="False positive").click()
        page.get_by_text("Saved: false positive.").wait_for()
        page.reload()
        page.wait_for_function(MAPS_LOADED)
        assert page.locator('[data-field="label"]').inner_text() == target["label"]
        assert (
            page.locator('[data-field="review"]')
            .inner_text()
            .startswith("False positive by operator")
        )
        link = page.locator(f'a.event[data-event-id="{target["id"]}"]')
        assert "false_positive" in (link.get_attribute("class") or "")
        video_id = data["video_id"]
        headers = {"Authorization": f"Bearer {tokens[Role.viewer]}"}
        answer = httpx.get(f"{server.url}/v1/videos/{video_id}/events", headers=headers).json()
        review = next(e for e in answer["events"] if e["id"] == target["id"])["review"]
        assert review["verdict"] == "false_positive" and review["frame_labels"] == []

        # the review queue: label a frame
        page.get_by_role("link", name="Review queue").click()
        page.wait_for_url("**/review")
        frames = page.locator("ol.frames > li")
        waiting = frames.count()
        assert waiting >= 1
        page.wait_for_function(
            "() => [...document.querySelectorAll('ol.frames > li:first-child img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        shot(page, "review")
        first = frames.first
        first.get_by_label("staff_present").check()
        first.get_by_role("button", name="Save labels").click()
        page.get_by_text("Labels saved.").wait_for()
        assert page.locator("ol.frames > li").count() == waiting - 1

        # sign out: the pages ask for a token again
        page.get_by_role("button", name="Sign out").click()
        page.get_by_text("You are signed out.").wait_for()
        page.goto(server.url + "/videos")
        assert page.url.startswith(server.url + "/signin")
        assert 206 in page.source_statuses, "the player fetched the video by byte ranges"
        assert page.problems == []
    finally:
        context.close()


def test_viewer_sees_no_controls_and_the_server_refuses(browser, server, tokens, ward, low_video):
    video_id = processed_video(server, tokens, ward)
    context, page = sign_in(browser, server, tokens[Role.viewer])
    try:
        # low attention consistency stands out, with a sentence saying what it means
        page.goto(f"{server.url}/videos/{low_video}")
        page.locator("a.event.low").first.click()
        warning = page.locator('[data-field="warning"]')
        assert warning.is_visible()
        assert "Low attention consistency (0.12, below 0.50)" in warning.inner_text()
        assert "explanation is unstable" in warning.inner_text()
        page.wait_for_function(MAPS_LOADED)
        shot(page, "video-low-consistency")

        assert page.locator("#upload-form").count() == 0
        assert page.get_by_role("link", name="Models").count() == 0
        page.goto(f"{server.url}/videos/{video_id}")
        page.wait_for_function(MAPS_LOADED)
        assert page.locator("form.verdict").count() == 0
        assert page.get_by_role("button", name="False positive").count() == 0
        event_id = json.loads(page.locator("#video-data").text_content())["events"][0]["id"]

        # the server refuses too: the API with the session's own CSRF token, and the pages
        refused = page.evaluate(
            """async ([videoId, eventId]) => {
              const csrf = document.querySelector('meta[name="csrf-token"]').content;
              const headers = {'X-CSRF-Token': csrf, 'Content-Type': 'application/json'};
              const review = await fetch(`/v1/videos/${videoId}/events/${eventId}/review`,
                {method: 'PUT', headers, body: JSON.stringify({verdict: 'confirmed'})});
              const form = new FormData();
              form.append('file', new Blob(['not a video']), 'x.mp4');
              const upload = await fetch('/v1/videos',
                {method: 'POST', headers: {'X-CSRF-Token': csrf}, body: form});
              return [review.status, upload.status];
            }""",
            [video_id, event_id],
        )
        assert refused == [403, 403]
        page.goto(server.url + "/models")
        assert page.get_by_role("heading", name="Not allowed").is_visible()
        assert "needs the admin role" in page.locator("main").inner_text()
        shot(page, "forbidden")

        page.goto(server.url + "/videos/not-a-video-id")
        assert page.get_by_role("heading", name="Video not found").is_visible()
        shot(page, "not-found")
        assert page.problems == []
    finally:
        context.close()

    context, page = sign_in(browser, server, tokens[Role.admin])
    try:
        page.get_by_role("link", name="Models").click()
        page.wait_for_url("**/models")
        assert page.get_by_role("button", name="Activate v0001").is_visible()
        shot(page, "models")
    finally:
        context.close()
