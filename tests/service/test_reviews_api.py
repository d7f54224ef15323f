"""``PUT /v1/videos/{video_id}/events/{event_id}/review`` and reviews in the events answer."""

from __future__ import annotations

import json

import pytest

from tests import media
from worker.pool.frames import FramePool
from worker.settings import Role


def upload(client, auth) -> str:
    response = client.post(
        "/v1/videos",
        headers=auth(Role.operator),
        files={"file": ("ward.mp4", media.video_bytes(), "video/mp4")},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["video_id"])


@pytest.fixture
def video_id(client, auth, results) -> str:
    video_id = upload(client, auth)
    results.write(video_id, events=2)
    return video_id


def review_url(video_id: str, event_id: str = "bed_exit-1") -> str:
    return f"/v1/videos/{video_id}/events/{event_id}/review"


def test_a_verdict_is_stored_and_shown_with_the_events(client, auth, video_id, settings):
    events_url = f"/v1/videos/{video_id}/events"
    before = client.get(events_url, headers=auth(Role.viewer)).json()  # now cached
    assert [e["review"] for e in before["events"]] == [None, None]

    response = client.put(
        review_url(video_id), json={"verdict": "confirmed"}, headers=auth(Role.operator)
    )
    assert response.status_code == 200, response.text
    review = response.json()
    assert review["verdict"] == "confirmed" and review["reviewer"] == "operator"
    assert review["label"] == "bed_exit" and review["frame_labels"] == ["bed_exit"]
    assert review["start_s"] == 2.0 and review["model_version"] == "v-test"

    after = client.get(events_url, headers=auth(Role.viewer)).json()
    assert after["events"][0]["review"] is None
    assert after["events"][1]["review"]["verdict"] == "confirmed"

    again = client.put(
        review_url(video_id), json={"verdict": "false_positive"}, headers=auth(Role.admin)
    ).json()
    assert again["frame_id"] == review["frame_id"] and again["frame_labels"] == []
    latest = client.get(events_url, headers=auth(Role.viewer)).json()["events"][1]["review"]
    assert latest["verdict"] == "false_positive" and latest["reviewer"] == "admin"
    pool = FramePool(settings.data_dir / "frames", image_size=16)
    assert [(r.frame_id, r.labels) for r in pool.records()] == [(review["frame_id"], [])]


@pytest.mark.parametrize(
    ("role", "status"), [(None, 401), (Role.viewer, 403), (Role.operator, 200)]
)
def test_reviewing_needs_the_operator_role(client, auth, video_id, role, status):
    headers = auth(role) if role is not None else {}
    response = client.put(review_url(video_id), json={"verdict": "confirmed"}, headers=headers)
    assert response.status_code == status, response.text
    if status != 200:
        assert response.headers["content-type"] == "application/problem+json"
        events = client.get(f"/v1/videos/{video_id}/events", headers=auth(Role.viewer)).json()
        assert all(e["review"] is None for e in events["events"])


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/videos/{video_id}/events/bed_exit-9/review", {"verdict": "confirmed"}, 404,
         "no event bed_exit-9"),
        ("/v1/videos/" + "0" * 32 + "/events/bed_exit-1/review", {"verdict": "confirmed"}, 404,
         "no video"),
        ("/v1/videos/nope/events/bed_exit-1/review", {"verdict": "confirmed"}, 422, "video_id"),
        ("/v1/videos/{video_id}/events/a..b/review", {"verdict": "confirmed"}, 422, "event_id"),
        ("/v1/videos/{video_id}/events/bed_exit-1/review", {"verdict": "maybe"}, 422, "verdict"),
        ("/v1/videos/{video_id}/events/bed_exit-1/review", {}, 422, "verdict"),
        ("/v1/videos/{video_id}/events/bed_exit-1/review",
         {"verdict": "confirmed", "labels": ["x"]}, 422, "labels"),
    ],
)  # fmt: skip
def test_bad_reviews(client, auth, video_id, path, body, status, words):
    response = client.put(path.format(video_id=video_id), json=body, headers=auth(Role.operator))
    assert response.status_code == status, response.text
    assert words.lower() in response.json()["detail"].lower()


def test_a_video_without_results_cannot_be_reviewed_yet(client, auth):
    video_id = upload(client, auth)
    response = client.put(
        review_url(video_id), json={"verdict": "confirmed"}, headers=auth(Role.operator)
    )
    assert response.status_code == 409
    assert "no results yet" in response.json()["detail"]


def test_undo_restores_the_previous_verdict_and_history_says_who_and_when(
    client, auth, video_id, settings
):
    url = review_url(video_id)
    first = client.put(url, json={"verdict": "confirmed"}, headers=auth(Role.operator)).json()
    client.put(url, json={"verdict": "false_positive"}, headers=auth(Role.admin))

    undone = client.delete(url, headers=auth(Role.operator))
    assert undone.status_code == 200, undone.text
    restored = undone.json()["review"]
    assert restored["verdict"] == "confirmed" and restored["reviewer"] == "operator"
    pool = FramePool(settings.data_dir / "frames", image_size=16)
    assert pool.get(first["frame_id"]).labels == ["bed_exit"]

    event = client.get(f"/v1/videos/{video_id}/events", headers=auth(Role.viewer)).json()
    event = event["events"][1]
    assert event["review"]["verdict"] == "confirmed"
    assert [
        (h["action"], h["reviewer"], h["previous_verdict"], h["verdict"])
        for h in event["review_history"]
    ] == [
        ("review", "operator", None, "confirmed"),
        ("review", "admin", "confirmed", "false_positive"),
        ("undo", "operator", "false_positive", "confirmed"),
    ]
    assert all(h["at"] for h in event["review_history"])

    # the first verdict undone too: unreviewed, the pool frame unlabeled again
    assert client.delete(url, headers=auth(Role.operator)).json()["review"] is None
    assert pool.get(first["frame_id"]).labels is None
    nothing = client.delete(url, headers=auth(Role.operator))
    assert nothing.status_code == 409 and "no verdict to undo" in nothing.json()["detail"]

    lines = [json.loads(x) for x in (settings.data_dir / "audit.log").read_text().splitlines()]
    changes = [(x["action"], x["outcome"]) for x in lines if x["action"].startswith("review")]
    assert changes == [
        ("review", "confirmed bed_exit-1"),
        ("review", "false_positive bed_exit-1"),
        ("review_undo", "confirmed bed_exit-1"),
        ("review_undo", "unreviewed bed_exit-1"),
    ]


def test_a_viewer_cannot_undo(client, auth, video_id):
    url = review_url(video_id)
    client.put(url, json={"verdict": "confirmed"}, headers=auth(Role.operator))
    assert client.delete(url, headers=auth(Role.viewer)).status_code == 403
    after = client.get(f"/v1/videos/{video_id}/events", headers=auth(Role.viewer)).json()
    assert after["events"][1]["review"]["verdict"] == "confirmed"
