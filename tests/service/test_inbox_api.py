"""``GET /v1/events`` (the inbox across videos) and event thumbnails."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from worker.settings import Role
from worker.storage import Storage

from .inbox_data import add_video

DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


@pytest.fixture
def ward(settings) -> dict[str, str]:
    storage = Storage(settings.data_dir)
    storage.ensure_layout()
    return {
        "icu-1 old": add_video(
            storage,
            [("bed_exit", 1, 2, 0.9), ("seizure", 3, 5, 0.2)],
            camera="icu-1",
            created_at=T0,
        ),
        "icu-2": add_video(
            storage,
            [("seizure", 1, 4, 0.8), ("bed_exit", 6, 7, 0.1), ("bed_exit", 9, 9.5, 0.7)],
            camera="icu-2",
            created_at=T0 + DAY,
            model_version="v0002",
        ),
        "icu-1 new": add_video(
            storage, [("seizure", 2, 3, 0.6)], camera="icu-1", created_at=T0 + 2 * DAY
        ),
    }


def test_every_event_newest_first_with_counts(client, auth, ward):
    answer = client.get("/v1/events", headers=auth(Role.viewer))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["total"] == 6 and body["next_cursor"] is None
    times = [e["occurred_at"] for e in body["events"]]
    assert times == sorted(times, reverse=True)
    assert body["events"][0]["video_id"] == ward["icu-1 new"]
    assert body["counts"]["label"] == {"bed_exit": 3, "seizure": 3}
    assert body["counts"]["camera"] == {"icu-1": 3, "icu-2": 3}
    assert body["counts"]["review"] == {"unreviewed": 6, "confirmed": 0, "false_positive": 0}
    assert body["counts"]["low_consistency"] == 2
    first = body["events"][0]
    assert first["urls"]["thumbnail"].endswith("/thumbnail.jpg")
    assert first["review"]["state"] == "unreviewed" and first["review_history"] == []


def test_filters_combine_and_counts_keep_the_other_filters(client, auth, ward):
    body = client.get(
        "/v1/events", params={"label": "bed_exit", "camera": "icu-2"}, headers=auth(Role.viewer)
    ).json()
    assert body["total"] == 2
    assert {(e["label"], e["camera"]) for e in body["events"]} == {("bed_exit", "icu-2")}
    # the class menu counts classes of icu-2; the camera menu counts bed exits per camera
    assert body["counts"]["label"] == {"bed_exit": 2, "seizure": 1}
    assert body["counts"]["camera"] == {"icu-1": 1, "icu-2": 2}

    low = client.get("/v1/events?low_consistency=true", headers=auth(Role.viewer)).json()
    assert {e["attention_consistency"] for e in low["events"]} == {0.2, 0.1}
    version = client.get("/v1/events?model_version=v0002", headers=auth(Role.viewer)).json()
    assert version["total"] == 3 and {e["video_id"] for e in version["events"]} == {ward["icu-2"]}
    day = client.get(
        "/v1/events",
        params={"since": "2026-01-02", "until": "2026-01-02"},
        headers=auth(Role.viewer),
    ).json()
    assert {e["video_id"] for e in day["events"]} == {ward["icu-2"]}


def test_review_state_filter_follows_verdicts(client, auth, ward):
    video_id = ward["icu-2"]
    url = f"/v1/videos/{video_id}/events/bed_exit-0/review"
    assert client.put(
        url, json={"verdict": "false_positive"}, headers=auth(Role.operator)
    ).is_success
    body = client.get("/v1/events?review=false_positive", headers=auth(Role.viewer)).json()
    assert [(e["video_id"], e["event_id"]) for e in body["events"]] == [(video_id, "bed_exit-0")]
    assert body["events"][0]["review"]["reviewer"] == "operator"
    history = body["events"][0]["review_history"]
    assert [(h["action"], h["verdict"], h["previous_verdict"]) for h in history] == [
        ("review", "false_positive", None)
    ]
    unreviewed = client.get("/v1/events?review=unreviewed", headers=auth(Role.viewer)).json()
    assert unreviewed["total"] == 5


def test_cursor_pages_cover_every_event_once(client, auth, ward):
    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        params = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        body = client.get("/v1/events", params=params, headers=auth(Role.viewer)).json()
        seen += [(e["video_id"], e["event_id"]) for e in body["events"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 6 == len(set(seen))
    bad = client.get("/v1/events?cursor=bm90LWEtY3Vyc29y", headers=auth(Role.viewer))
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"].lower()
    date = client.get("/v1/events?since=yesterday", headers=auth(Role.viewer))
    assert date.status_code == 422 and "since must be a date" in date.json()["detail"].lower()


def test_thumbnail_is_cached_with_the_video_and_deleted_with_it(client, auth, ward, settings):
    video_id = ward["icu-1 old"]
    url = f"/v1/videos/{video_id}/events/seizure-0/thumbnail.jpg"
    answer = client.get(url, headers=auth(Role.viewer))
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(answer.content)).size == (160, 120)
    cache = Storage(settings.data_dir).cache_dir(video_id)
    assert [p.suffix for p in cache.iterdir()] == [".jpg"]
    assert client.get(url, headers=auth(Role.viewer)).content == answer.content
    assert client.delete(f"/v1/videos/{video_id}", headers=auth(Role.admin)).status_code == 204
    assert not cache.exists()
    assert client.get(url, headers=auth(Role.viewer)).status_code == 404
    listed = client.get("/v1/events", headers=auth(Role.viewer)).json()
    assert video_id not in {e["video_id"] for e in listed["events"]}


def test_the_inbox_needs_a_token(client):
    assert client.get("/v1/events").status_code == 401


def test_the_page_lists_filtered_rows_and_keeps_filters_in_the_url(client, auth, tokens, ward):
    from .test_pages import sign_in

    sign_in(client, tokens[Role.viewer])
    page = client.get("/events", params={"label": "seizure", "camera": "icu-1"})
    assert page.status_code == 200, page.text
    html = page.text
    assert html.count('class="event-row') == 2
    assert 'data-label="bed_exit"' not in html and 'data-camera="icu-2"' not in html
    assert '<option value="seizure" selected>seizure (2)</option>' in html
    assert "2 events match the filters" in html
    assert 'data-can-operate="false"' in html and "<kbd>c</kbd>" not in html
    paged = client.get("/events", params={"cursor": "garbage"})
    assert paged.status_code == 422 and "out of date" in paged.text


def test_clip_endpoint_says_how_it_was_cut_and_is_audited(client, auth, settings, tmp_path):
    from tests import media

    storage = Storage(settings.data_dir)
    source = media.write_video(tmp_path / "v.mp4", frames=60, fps=10)
    video_id = add_video(storage, [("seizure", 2.0, 3.0, 0.7)], source=source)
    url = f"/v1/videos/{video_id}/events/seizure-0/clip.mp4"
    answer = client.get(url, headers=auth(Role.viewer))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "video/mp4"
    assert answer.headers["x-clip-method"] == "copy"  # the window starts at the keyframe at 0 s
    assert (answer.headers["x-clip-start"], answer.headers["x-clip-end"]) == ("0.000", "5.000")
    assert 'filename="event-seizure-0.mp4"' in answer.headers["content-disposition"]
    missing = client.get(url.replace("seizure-0", "seizure-7"), headers=auth(Role.viewer))
    assert missing.status_code == 404
    audit = Storage(settings.data_dir).audit_log.read_text()
    assert '"action":"read_clip"' in audit


def test_report_holds_every_event_its_verdict_and_both_images(client, auth, ward):
    video_id = ward["icu-2"]
    url = f"/v1/videos/{video_id}/events/seizure-0/review"
    assert client.put(url, json={"verdict": "confirmed"}, headers=auth(Role.operator)).is_success
    answer = client.get(f"/v1/videos/{video_id}/report", headers=auth(Role.viewer))
    assert answer.status_code == 200, answer.text
    html = answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in answer.headers
    for event_id in ("seizure-0", "bed_exit-0", "bed_exit-1"):
        assert f'id="row-{event_id}"' in html and f'id="event-{event_id}"' in html
    assert html.count('data-kind="frame" src="data:image/png;base64,') == 3
    assert html.count('data-kind="overlay" src="data:image/png;base64,') == 3
    assert "Confirmed by operator" in html and "v0002" in html
    assert "Attention consistency (from -1 to 1) compares two explanations" in html
    assert "<script" not in html
    missing = client.get(f"/v1/videos/{'0' * 32}/report", headers=auth(Role.viewer))
    assert missing.status_code == 404


def test_the_answer_matches_its_documented_schema(client, auth, ward):
    from service.api.schemas import InboxList

    client.put(
        f"/v1/videos/{ward['icu-2']}/events/seizure-0/review",
        json={"verdict": "confirmed"},
        headers=auth(Role.operator),
    )
    body = client.get("/v1/events", headers=auth(Role.viewer)).json()
    parsed = InboxList.model_validate(body)
    assert parsed.total == 6 and len(parsed.events) == 6
    assert any(e.review_history for e in parsed.events)
    schema = client.get("/openapi.json").json()["paths"]["/v1/events"]["get"]["responses"]
    assert schema["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/InboxList")
