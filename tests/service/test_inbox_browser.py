"""The events inbox, keyboard review, clips and reports in a real Chromium against a
real ``atcon serve``, on a data directory filled directly (no detection needed).

Screenshots go to ``test-artifacts/`` (the ones in docs/img are copies of them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from tests import media
from tests.processes import Server
from worker.pool.frames import FramePool
from worker.serving.versions import ModelRegistry, VersionStatus
from worker.settings import Role
from worker.storage import Storage

from .axe import serious_violations
from .browser import ARTIFACTS, DESKTOP, MAPS_LOADED, shot
from .browser import sign_in as _sign_in
from .inbox_data import add_video
from .test_health import tiny_checkpoint

pytestmark = [pytest.mark.browser, pytest.mark.slow]

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
CLASSES = ("bed_exit", "seizure", "staff_present")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """12 videos on two cameras with 3 events each, and one with a real source."""
    root = tmp_path_factory.mktemp("inbox")
    storage = Storage(root / "data")
    storage.ensure_layout()
    ids: dict[str, str] = {}
    for v in range(12):
        camera = "icu-1" if v % 2 == 0 else "icu-2"
        events = [
            (CLASSES[(v + k) % 3], 1.0 + 3 * k, 2.5 + 3 * k, 0.3 if (v + k) % 4 == 0 else 0.8)
            for k in range(3)
        ]
        ids[f"v{v}"] = add_video(
            storage, events, camera=camera, created_at=T0 + 3600 * v, filename=f"night-{v}.mp4"
        )
    source = media.write_video(root / "real.mp4", frames=120, fps=10, size=(64, 48))
    ids["real"] = add_video(
        storage,
        [("seizure", 3.0, 5.0, 0.7), ("bed_exit", 6.0, 7.5, 0.2)],
        camera="icu-3",
        created_at=T0 - 3600,
        source=source,
        filename="real.mp4",
    )
    pool = FramePool(root / "data" / "frames", image_size=64)
    for index in range(14):
        record = pool.add_frame(
            np.full((64, 64, 3), 18 * index, dtype=np.uint8),
            camera="icu-1" if index % 2 else "icu-2",
            video_id=ids[f"v{index % 12}"],
            time_s=float(index),
        )
        pool.set_consistency(record.frame_id, index / 14, "v0001")
    tiny_checkpoint(root / "model.pt")  # classes bed_exit, staff: the queue's labels
    registry = ModelRegistry(root / "data" / "models")
    registry.register(root / "model.pt", status=VersionStatus.RETIRED, reason="first")
    parent = {"macro_f1": 0.61, "map": 0.7, "consistency": 0.52}
    for n, (f1, m, c) in enumerate(((0.66, 0.74, 0.58), (0.71, 0.77, 0.63)), start=1):
        registry.register(
            root / "model.pt",
            status=VersionStatus.ACTIVE if n == 2 else VersionStatus.RETIRED,
            reason="passed the gate",
            parent=f"v000{n}",
            metrics_before={**parent, "per_class_f1": {"bed_exit": 0.6, "staff": 0.62}},
            metrics_after={
                "macro_f1": f1,
                "map": m,
                "consistency": c,
                "per_class_f1": {"bed_exit": f1 + 0.05, "staff": f1 - 0.05},
            },
        )
        parent = {"macro_f1": f1, "map": m, "consistency": c}
    return root, ids


@pytest.fixture(scope="module")
def server(seeded, token_setting: str) -> Iterator[Server]:
    root, _ = seeded
    env = {
        "ATCON_CHECKPOINT": str(root / "model.pt"),
        "ATCON_DATA_DIR": str(root / "data"),
        "ATCON_API_TOKENS": token_setting,
        # one worker thread: pool frames' maps are drawn by a worker ("frames" jobs)
        "ATCON_EMBEDDED_WORKERS": "1",
        "ATCON_CLIP_MARGIN_S": "1.0",
    }
    server = Server(env, root / "server.log").start()
    try:
        yield server
    finally:
        server.stop()


def sign_in(browser, server, token):  # type: ignore[no-untyped-def]
    return _sign_in(browser, server, token, viewport=DESKTOP)


def rows(page) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    return page.evaluate(
        """() => [...document.querySelectorAll('tr.event-row')].map(r => ({...r.dataset}))"""
    )


def test_filter_to_one_class_and_one_camera(browser, server, tokens, seeded):
    context, page = sign_in(browser, server, tokens[Role.viewer])
    try:
        page.get_by_role("link", name="Events").click()
        page.wait_for_url("**/events")
        assert len(rows(page)) == 38
        assert serious_violations(page) == []
        shot(page, "events")
        page.get_by_label("Class").select_option("seizure")
        page.get_by_label("Camera").select_option("icu-1")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**/events?*")
        assert "label=seizure" in page.url and "camera=icu-1" in page.url
        listed = rows(page)
        assert len(listed) == 6
        assert all(r["label"] == "seizure" and r["camera"] == "icu-1" for r in listed)
        assert "6 events match the filters" in page.locator("#inbox caption").inner_text()
        # the link is the state: a fresh page on the same URL lists the same rows
        again = context.new_page()
        again.goto(page.url)
        assert rows(again) == listed
        again.close()
        page.wait_for_function(
            "() => [...document.querySelectorAll('td.thumb img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        shot(page, "events-filtered")
        assert page.problems == []
    finally:
        context.close()


def test_ten_verdicts_by_keyboard_with_one_undo_persist(browser, server, tokens, seeded):
    context, page = sign_in(browser, server, tokens[Role.operator])
    try:
        page.goto(server.url + "/events?camera=icu-2")
        before = rows(page)
        assert len(before) >= 10 and all(r["state"] == "unreviewed" for r in before)
        keys = ["j", *"cfcfcfcfc", "f", "u", "c"]
        for key in keys:
            page.keyboard.press(key)
        # the last key's verdict is the last answer to come back
        page.wait_for_function(
            "() => document.querySelectorAll('tr.event-row')[9].dataset.state === 'confirmed'"
        )
        expected = ["confirmed", "false_positive"] * 4 + ["confirmed", "confirmed"]
        page.reload()
        after = rows(page)
        assert [r["state"] for r in after[:10]] == expected
        assert all(r["state"] == "unreviewed" for r in after[10:])
        headers = {"Authorization": f"Bearer {tokens[Role.viewer]}"}
        tenth = after[9]
        listed = httpx.get(
            f"{server.url}/v1/events",
            params={"video_id": tenth["videoId"], "camera": "icu-2"},
            headers=headers,
        ).json()["events"]
        history = next(e for e in listed if e["event_id"] == tenth["eventId"])["review_history"]
        assert [(h["action"], h["verdict"]) for h in history] == [
            ("review", "false_positive"),
            ("undo", None),
            ("review", "confirmed"),
        ]
        audit = (seeded[0] / "data" / "audit.log").read_text().splitlines()
        actions = [json.loads(line)["action"] for line in audit]
        assert actions.count("review_undo") == 1 and actions.count("review") >= 11

        # ? lists the keys; o opens the selected event in its video, with its history
        page.keyboard.press("?")
        assert page.get_by_role("dialog").is_visible()
        assert serious_violations(page) == []
        shot(page, "events-shortcuts")
        page.keyboard.press("Escape")
        for _ in range(10):
            page.keyboard.press("j")
        page.keyboard.press("o")
        page.wait_for_url(f"**/videos/{tenth['videoId']}?event={tenth['eventId']}")
        box = page.locator("details.history-box")
        box.locator("summary").click()
        items = box.locator("li").all_inner_texts()
        assert len(items) == 3 and "undid false positive" in items[1]
        assert page.problems == []
    finally:
        context.close()


def test_a_viewer_sees_no_review_controls_and_is_refused(browser, server, tokens, seeded):
    _, ids = seeded
    context, page = sign_in(browser, server, tokens[Role.viewer])
    try:
        page.goto(server.url + "/events?camera=icu-1")
        first = rows(page)[0]
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.method) if "/review" in r.url else None)
        page.keyboard.press("j")
        page.keyboard.press("c")
        page.keyboard.press("f")
        page.keyboard.press("u")
        page.keyboard.press("?")
        dialog = page.get_by_role("dialog")
        assert dialog.is_visible() and "confirm" not in dialog.inner_text()
        page.keyboard.press("Escape")
        assert sent == []
        assert page.get_by_role("button", name="Confirm").count() == 0
        page.reload()
        assert rows(page)[0]["state"] == first["state"] == "unreviewed"

        page.goto(f"{server.url}/videos/{ids['real']}")
        assert page.locator("form.verdict").count() == 0
        refused = page.evaluate(
            """async (url) => {
              const csrf = document.querySelector('meta[name="csrf-token"]').content;
              const headers = {'X-CSRF-Token': csrf, 'Content-Type': 'application/json'};
              const put = await fetch(url, {method: 'PUT', headers,
                                            body: JSON.stringify({verdict: 'confirmed'})});
              const del = await fetch(url, {method: 'DELETE', headers});
              return [put.status, del.status];
            }""",
            first["reviewUrl"],
        )
        assert refused == [403, 403]
        assert page.problems == []
    finally:
        context.close()


def test_download_a_clip_of_the_event_plus_margins(browser, server, tokens, seeded, tmp_path):
    _, ids = seeded
    margin = 1.0  # ATCON_CLIP_MARGIN_S of the server
    context, page = sign_in(browser, server, tokens[Role.viewer])
    try:
        page.goto(f"{server.url}/videos/{ids['real']}?event=seizure-0")
        page.wait_for_function(MAPS_LOADED)
        assert page.locator("dialog#shortcuts").is_hidden(), "the key list waits for ?"
        assert page.get_by_role("heading", name="real.mp4").is_visible()
        button = page.get_by_role("link", name="Download clip")
        assert button.get_attribute("href").endswith("/events/seizure-0/clip.mp4")
        with page.expect_download() as info:
            button.click()
        saved = tmp_path / "clip.mp4"
        info.value.save_as(saved)
        assert info.value.suggested_filename == "event-seizure-0.mp4"
        with av.open(str(saved)) as container:
            stream = container.streams.video[0]
            interval = float(1 / stream.average_rate)
            duration = float(stream.duration * stream.time_base)
        assert duration == pytest.approx((5.0 - 3.0) + 2 * margin, abs=interval)
        assert serious_violations(page) == []
        shot(page, "video-event-panel")

        # the method says how it was cut; the cache lives with the video
        headers = {"Authorization": f"Bearer {tokens[Role.viewer]}"}
        answer = httpx.get(
            f"{server.url}/v1/videos/{ids['real']}/events/bed_exit-0/clip.mp4", headers=headers
        )
        assert answer.status_code == 200 and answer.headers["x-clip-method"] in {"copy", "reencode"}
        cache = Storage(seeded[0] / "data").cache_dir(ids["real"])
        assert len(list(cache.glob("clip-*.mp4"))) == 2
        assert page.problems == []
    finally:
        context.close()


def test_a_report_shows_every_event_and_every_map_image(browser, server, tokens, seeded):
    _, ids = seeded
    context, page = sign_in(browser, server, tokens[Role.viewer])
    try:
        page.goto(f"{server.url}/videos/{ids['v3']}")
        page.get_by_role("link", name="Report for the chart").click()
        page.wait_for_url(f"**/v1/videos/{ids['v3']}/report")
        page.wait_for_function(
            "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
        headers = {"Authorization": f"Bearer {tokens[Role.viewer]}"}
        events = httpx.get(f"{server.url}/v1/videos/{ids['v3']}/events", headers=headers).json()
        expected = {e["id"] for e in events["events"]}
        assert len(expected) == 3
        shown = set(page.eval_on_selector_all("section.event", "s => s.map(x => x.id.slice(6))"))
        assert shown == expected
        for event_id in expected:
            section = page.locator(f'section[id="event-{event_id}"]')
            assert section.locator("img.map").count() == 2
            assert page.locator(f'tr[id="row-{event_id}"]').count() == 1
        broken = page.evaluate("() => [...document.images].filter(i => !i.naturalWidth).length")
        assert broken == 0 and page.locator("img.map").count() == 6
        assert "Attention consistency (from -1 to 1)" in page.locator(".note").inner_text()
        assert serious_violations(page) == []
        shot(page, "report")
        page.emulate_media(media="print")
        assert page.locator(".print").is_hidden()
        assert page.problems == []
    finally:
        context.close()


def test_review_queue_labels_by_keyboard_and_keeps_its_filters(browser, server, tokens, seeded):
    pool = FramePool(seeded[0] / "data" / "frames", image_size=64)
    context, page = sign_in(browser, server, tokens[Role.operator])
    try:
        page.get_by_role("link", name="Review queue").click()
        page.wait_for_url("**/review")
        assert serious_violations(page) == []
        page.get_by_label("Camera").select_option("icu-1")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**/review?camera=icu-1*")
        assert "7 frames waiting" in page.locator(".queue-summary").inner_text()

        def first_frame() -> str:
            return str(page.locator("li.frame").first.get_attribute("data-frame-id"))

        labeled: dict[str, list[str]] = {}
        for keys, labels in ((["1"], ["bed_exit"]), (["n"], []), (["2", "1", "1"], ["staff"])):
            frame_id = first_frame()
            assert page.evaluate("() => document.activeElement.dataset.frameId") == frame_id
            for key in keys:
                page.keyboard.press(key)
            page.keyboard.press("s")
            page.wait_for_url("**/review?camera=icu-1&labeled=1")
            page.get_by_text("Labels saved.").wait_for()
            labeled[frame_id] = labels
        assert {i: pool.get(i).labels for i in labeled} == labeled
        assert all(pool.get(i).camera == "icu-1" for i in labeled)
        assert "4 frames waiting" in page.locator(".queue-summary").inner_text()
        page.wait_for_function(
            "() => [...document.querySelectorAll('ol.frames img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        assert serious_violations(page) == []
        shot(page, "review-queue")
        assert page.problems == []
    finally:
        context.close()


def test_the_models_page_draws_the_history_of_versions(browser, server, tokens, seeded):
    context, page = sign_in(browser, server, tokens[Role.admin])
    try:
        page.get_by_role("link", name="Models").click()
        page.wait_for_url("**/models")
        chart = page.get_by_role("img", name="Validation macro-F1, mAP and attention consistency")
        assert chart.is_visible()
        assert page.locator("svg circle.dot").count() == 6  # 2 versions x 3 metrics
        assert page.locator("svg polyline.line").count() == 3
        deltas = page.locator("table.deltas tbody tr")
        assert deltas.count() == 4 and "+0.160" in deltas.first.inner_text()  # 0.60 -> 0.76
        assert serious_violations(page) == []
        page.locator("#history-h").scroll_into_view_if_needed()
        page.locator("section.history-chart").screenshot(path=str(ARTIFACTS / "models-history.png"))
        assert page.problems == []
    finally:
        context.close()
