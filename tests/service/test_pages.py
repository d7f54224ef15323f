"""The pages through the app (no browser): sessions, CSRF, roles, states, bad input.

The browser tests (test_pages_browser.py) drive the same pages in Chromium; these
check what a browser cannot show cheaply: cookie flags, refused forms, every job
state, and that the server itself refuses what a page hides.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.web.session import safe_next
from tests import media
from worker.pool.frames import FramePool
from worker.runtime.jobs import FINETUNE
from worker.serving.versions import ModelRegistry, VersionStatus
from worker.settings import Role

from .test_health import tiny_checkpoint

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'name="csrf-token" content="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF_META.search(html) or CSRF_FIELD.search(html)
    assert found, "the page carries its CSRF token"
    return found.group(1)


def sign_in(client: TestClient, token: str) -> str:
    """Sign in through the form; return the session's CSRF token."""
    client.cookies.clear()
    form = client.get("/signin")
    response = client.post(
        "/signin",
        data={"csrf_token": csrf_of(form.text), "token": token, "next": "/videos"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/videos").text)


def upload(client: TestClient, auth, name: str = "ward.mp4") -> str:
    response = client.post(
        "/v1/videos",
        headers=auth(Role.operator),
        files={"file": (name, media.video_bytes(), "video/mp4")},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["video_id"])


def job_of(client: TestClient, video_id: str) -> str:
    return str(client.app.state.runtime.storage.get_video(video_id).job_id)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture
def app_client(make_settings, checkpoint) -> Iterator[TestClient]:
    """The app with a loadable checkpoint (the review queue needs its classes)."""
    with TestClient(create_app(make_settings(checkpoint=checkpoint), workers=0)) as client:
        yield client


# -- signing in and out ---------------------------------------------------------------------


def test_pages_ask_to_sign_in_first(client):
    response = client.get("/videos/" + "a" * 32, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=/videos/" + "a" * 32
    assert client.get("/", follow_redirects=False).headers["location"] == "/signin"
    page = client.get("/signin?next=/videos")
    assert page.status_code == 200
    assert '<label for="token">API token</label>' in page.text
    assert 'type="password"' in page.text


def test_signing_in_gives_an_httponly_samesite_cookie_without_the_token(make_settings, tokens):
    with TestClient(create_app(make_settings(), workers=0), base_url="https://testserver") as c:
        form = c.get("/signin")
        response = c.post(
            "/signin",
            data={"csrf_token": csrf_of(form.text), "token": tokens[Role.viewer], "next": "/x"},
            follow_redirects=False,
        )
        assert response.status_code == 303 and response.headers["location"] == "/x"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("atcon_session=")
        for flag in ("HttpOnly", "SameSite=lax", "Path=/", "Secure", "Max-Age="):
            assert flag in cookie
        assert tokens[Role.viewer] not in cookie
        assert csrf_of(c.get("/videos").text) != csrf_of(form.text), "a new CSRF secret"


def test_a_wrong_token_is_refused(client):
    form = client.get("/signin")
    response = client.post("/signin", data={"csrf_token": csrf_of(form.text), "token": "nope"})
    assert response.status_code == 401
    assert "That token is not valid" in response.text
    assert client.get("/videos", follow_redirects=False).status_code == 303


def test_sign_in_is_protected_against_cross_site_requests(client, tokens):
    client.get("/signin")
    for data, headers in (
        ({"token": tokens[Role.admin]}, {}),
        ({"token": tokens[Role.admin], "csrf_token": "forged"}, {}),
        (
            {"token": tokens[Role.admin], "csrf_token": csrf_of(client.get("/signin").text)},
            {"Origin": "https://evil.example"},
        ),
    ):
        response = client.post("/signin", data=data, headers=headers, follow_redirects=False)
        assert response.status_code == 403, response.text
        assert "text/html" in response.headers["content-type"]
    assert client.get("/videos", follow_redirects=False).status_code == 303
    client.cookies.clear()  # no cookie at all: the form cannot be checked
    response = client.post("/signin", data={"token": tokens[Role.admin], "csrf_token": "x"})
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/videos/abc?event=x", "/videos/abc?event=x"),
        ("https://evil.example/", "/videos"),
        ("//evil.example/x", "/videos"),
        ("/\\evil.example", "/videos"),
        ("javascript:alert(1)", "/videos"),
        (None, "/videos"),
    ],
)
def test_after_sign_in_only_local_pages(value, expected):
    assert safe_next(value) == expected


def test_sign_out_needs_the_csrf_token_and_ends_the_session(client, tokens):
    csrf = sign_in(client, tokens[Role.viewer])
    assert client.post("/signout", data={}, follow_redirects=False).status_code == 403
    assert client.get("/videos", follow_redirects=False).status_code == 200
    response = client.post("/signout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.headers["location"] == "/signin?signed_out=1"
    assert "You are signed out" in client.get("/signin?signed_out=1").text
    assert client.get("/videos", follow_redirects=False).status_code == 303


def test_pages_carry_security_headers(client, tokens):
    sign_in(client, tokens[Role.viewer])
    response = client.get("/videos")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


# -- the API with the session cookie ------------------------------------------------------


def test_the_api_takes_the_session_cookie_and_wants_its_csrf_header(client, tokens, results):
    csrf = sign_in(client, tokens[Role.operator])
    assert client.get("/v1/videos").status_code == 200
    files = {"file": ("a.mp4", media.video_bytes(), "video/mp4")}
    refused = client.post("/v1/videos", files=files)
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    accepted = client.post("/v1/videos", files=files, headers={"X-CSRF-Token": csrf})
    assert accepted.status_code == 202
    video_id = accepted.json()["video_id"]
    results.write(video_id)
    url = f"/v1/videos/{video_id}/events/bed_exit-0/review"
    assert client.put(url, json={"verdict": "confirmed"}).status_code == 403
    wrong = client.put(url, json={"verdict": "confirmed"}, headers={"X-CSRF-Token": "x" + csrf})
    assert wrong.status_code == 403
    assert client.put(url, json={"verdict": "confirmed"}, headers={"X-CSRF-Token": csrf}).is_success
    client.cookies.clear()
    client.get("/signin")  # an anonymous session is no credential
    assert client.get("/v1/videos").status_code == 401


# -- the videos list and the video page ----------------------------------------------------


def test_the_videos_table_shows_every_state_newest_first(client, auth, tokens, results):
    queue = client.app.state.runtime.queue
    done, running, failed, queued = (upload(client, auth, f"{n}.mp4") for n in range(4))
    results.write(done, events=2, model_version="v0007")
    for _ in range(3):  # FIFO: the first three jobs go to this "worker"
        lease = queue.reserve("detect", "w", timeout_s=1)
        if lease.job_id == job_of(client, running):
            queue.set_progress(lease, 0.4)
        elif lease.job_id == job_of(client, failed):
            queue.fail(lease, "the file is damaged at 0:42", retry=False)
    sign_in(client, tokens[Role.viewer])
    html = client.get("/videos").text
    order = re.findall(r'<tr data-video-id="([0-9a-f]{32})" data-status="(\w*)"', html)
    assert order == [(queued, "queued"), (failed, "failed"), (running, "running"), (done, "done")]
    row = {vid: html[html.index(f'data-video-id="{vid}"') :][:1500] for vid, _ in order}
    assert 'value="0.4"' in row[running] and "40%" in row[running]
    assert "the file is damaged at 0:42" in row[failed]
    assert '<td class="events">2</td>' in row[done] and "v0007" in row[done]
    assert 'id="upload-form"' not in html, "viewers get no upload form"
    sign_in(client, tokens[Role.operator])
    assert 'id="upload-form"' in client.get("/videos").text


def test_a_processing_video_shows_progress_not_a_timeline(client, auth, tokens):
    video_id = upload(client, auth)
    lease = client.app.state.runtime.queue.reserve("detect", "w", timeout_s=1)
    client.app.state.runtime.queue.set_progress(lease, 0.25)
    sign_in(client, tokens[Role.viewer])
    html = client.get(f"/videos/{video_id}").text
    assert '<h2 id="processing-h">Processing</h2>' in html
    assert 'value="0.25"' in html and "25%" in html
    assert 'id="lanes"' not in html and 'id="event-detail"' not in html
    assert f'src="/v1/videos/{video_id}/source"' in html


def test_a_failed_job_shows_its_error(client, auth, tokens):
    video_id = upload(client, auth)
    queue = client.app.state.runtime.queue
    queue.fail(queue.reserve("detect", "w", timeout_s=1), "no decodable frames", retry=False)
    sign_in(client, tokens[Role.viewer])
    html = client.get(f"/videos/{video_id}").text
    assert "Processing failed" in html and "no decodable frames" in html
    assert 'id="lanes"' not in html


def test_the_timeline_has_a_lane_per_class_drawn_to_scale(client, auth, tokens, results):
    video_id = upload(client, auth)  # 12 frames at 6 fps: 2 s
    results.write(video_id, events=1, consistency=0.9)
    sign_in(client, tokens[Role.viewer])
    html = client.get(f"/videos/{video_id}").text
    assert re.findall(r'<span class="lane-label" id="lane-\d">(\w+)</span>', html) == [
        "bed_exit",
        "staff",
    ]
    assert 'style="left: 50.0%; width: 50.0%"' in html  # 1.0 s to 2.0 s of 2.0 s
    for kind in ("frame", "gradcam", "guided_backprop", "mask"):
        assert f"/events/bed_exit-0/maps/{kind}.png" in html
    assert re.search(r'<p class="warning" data-field="warning" role="note" hidden>', html)
    assert 'form class="verdict"' not in html, "viewers get no review buttons"


def test_a_video_without_events_says_so_and_requests_no_empty_image(client, auth, tokens, results):
    video_id = upload(client, auth)
    results.write(video_id, events=0)
    sign_in(client, tokens[Role.viewer])
    html = client.get(f"/videos/{video_id}").text
    assert "No events were detected in this video." in html
    assert 'src=""' not in html, "an empty src would fetch the page itself"


def test_development_mode_without_tokens_signs_anyone_in_as_dev(tmp_path):
    from worker.settings import Settings

    with TestClient(create_app(Settings(data_dir=tmp_path, dev=True), workers=0)) as c:
        form = c.get("/signin")
        assert "Development mode without tokens" in form.text
        c.post("/signin", data={"csrf_token": csrf_of(form.text), "token": "anything"})
        page = c.get("/models")
        assert page.status_code == 200 and "Signed in as <strong>dev</strong>" in page.text


def test_low_consistency_stands_out_with_a_sentence(client, auth, tokens, results):
    video_id = upload(client, auth)
    results.write(video_id, events=1, consistency=0.12)
    sign_in(client, tokens[Role.viewer])
    html = client.get(f"/videos/{video_id}").text
    assert 'class="event low' in html and "low attention consistency" in html
    warning = re.search(
        r'<p class="warning" data-field="warning" role="note">(.*?)</p>', html, re.S
    )
    assert warning, "the warning is shown"
    assert "Low attention consistency (0.12, below 0.50)" in warning.group(1)
    assert "explanation is unstable" in warning.group(1)


@pytest.mark.parametrize(
    ("video_id", "title"),
    [
        ("nope", "Video not found"),
        ("A" * 32, "Video not found"),
        ("0" * 32, "Video not found"),
        ("..%2F..%2Fetc%2Fpasswd", "Not Found"),  # not one path segment: no page route
    ],
)
def test_unknown_or_malformed_video_ids_get_a_not_found_page(client, tokens, video_id, title):
    sign_in(client, tokens[Role.viewer])
    response = client.get(f"/videos/{video_id}", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert "text/html" in response.headers["content-type"]
    assert f'<h1 id="error-h">{title}</h1>' in response.text


def test_file_names_are_shown_as_text(client, auth, tokens):
    upload(client, auth, name="<img src=x onerror=alert(1)>.mp4")
    sign_in(client, tokens[Role.viewer])
    html = client.get("/videos").text
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.mp4" in html


def test_unknown_page_paths_are_pages_for_browsers_and_problems_for_programs(client):
    page = client.get("/no-such-page", headers={"Accept": "text/html"})
    assert page.status_code == 404 and '<h1 id="error-h">Not Found</h1>' in page.text
    api = client.get("/v1/no-such-thing", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.headers["content-type"] == "application/problem+json"


# -- reviews from the page --------------------------------------------------------------


def test_the_review_form_persists_and_a_viewer_is_refused(client, auth, tokens, results):
    video_id = upload(client, auth)
    results.write(video_id, events=2)
    form_url = f"/videos/{video_id}/events/bed_exit-1/review"
    viewer_csrf = sign_in(client, tokens[Role.viewer])
    refused = client.post(form_url, data={"csrf_token": viewer_csrf, "verdict": "confirmed"})
    assert refused.status_code == 403 and "needs the operator role" in refused.text

    csrf = sign_in(client, tokens[Role.operator])
    assert client.post(form_url, data={"verdict": "confirmed"}).status_code == 403
    bad = client.post(form_url, data={"csrf_token": csrf, "verdict": "maybe"})
    assert bad.status_code == 422
    gone = client.post(
        f"/videos/{video_id}/events/bed_exit-7/review",
        data={"csrf_token": csrf, "verdict": "confirmed"},
    )
    assert gone.status_code == 404
    response = client.post(
        form_url, data={"csrf_token": csrf, "verdict": "false_positive"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/videos/{video_id}?event=bed_exit-1#event-detail"
    page = client.get(response.headers["location"]).text
    assert "False positive by operator" in page
    assert 'class="event reviewed false_positive selected"' in page
    events = client.get(f"/v1/videos/{video_id}/events", headers=auth(Role.viewer)).json()
    assert [e["review"] and e["review"]["verdict"] for e in events["events"]] == [
        None,
        "false_positive",
    ]


# -- the review queue --------------------------------------------------------------------


def test_the_review_queue_lists_least_consistent_first_and_labels(app_client, tokens):
    pool = FramePool(app_client.app.state.runtime.storage.root / "frames", image_size=16)
    ids = {}
    for value in (0.7, 0.2, 0.5):
        record = pool.add_frame(np.full((16, 16, 3), int(value * 200), dtype=np.uint8))
        pool.set_consistency(record.frame_id, value, "v0001")
        ids[value] = record.frame_id
    sign_in(app_client, tokens[Role.viewer])
    html = app_client.get("/review").text
    listed = re.findall(r'src="/v1/frames/([0-9a-f]{32})/image\.png"', html)
    assert sorted(listed) == sorted(ids.values())
    from worker.pool.frames import _bucket  # training frames hardest first, validation at random

    fraction = app_client.app.state.runtime.settings.pool_val_fraction
    by_id = {v: k for k, v in ids.items()}
    learn = [by_id[i] for i in listed if _bucket(i) >= fraction]
    assert learn == sorted(learn)
    assert "0.20 (low)" in html and "Save labels" not in html
    urls = re.findall(r'<img src="(/v1/frames/[^"]+)"', html)
    for url in urls:  # with the session cookie; maps are drawn by a worker, the page retries
        image = app_client.get(url)
        if "/maps/" in url:
            assert image.status_code == 202 and 'data-drawn-map="' + url + '"' in html, url
        else:
            assert image.status_code == 200 and image.content[:4] == b"\x89PNG", url
    from worker.runtime.jobs import DETECT, Worker

    runtime = app_client.app.state.runtime
    Worker(runtime.queue, runtime.storage, runtime.settings, DETECT).run(burst=True, poll_s=0.2)
    for url in urls:
        image = app_client.get(url)
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG", url
    assert len(re.findall(r'<img src="(/v1/frames/[^"]+)"', html)) == 9

    csrf = sign_in(app_client, tokens[Role.operator])
    html = app_client.get("/review").text
    assert html.count("Save labels") == 3 and 'value="bed_exit"' in html
    url = f"/review/frames/{ids[0.2]}/labels"
    unknown = app_client.post(url, data={"csrf_token": csrf, "labels": ["seizure"]})
    assert unknown.status_code == 422 and pool.get(ids[0.2]).labels is None
    saved = app_client.post(url, data={"csrf_token": csrf, "labels": ["staff", "bed_exit"]})
    assert saved.status_code == 200 and "Labels saved." in saved.text
    assert pool.get(ids[0.2]).labels == ["bed_exit", "staff"]
    none = app_client.post(f"/review/frames/{ids[0.5]}/labels", data={"csrf_token": csrf})
    assert none.status_code == 200 and pool.get(ids[0.5]).labels == []
    left = re.findall(r'src="/v1/frames/([0-9a-f]{32})/image\.png"', saved.text)
    assert sorted(left) in (sorted([ids[0.5], ids[0.7]]), [ids[0.7]])


# -- the models page ---------------------------------------------------------------------


def test_the_models_page_is_for_admins(client, tokens):
    for role in (Role.viewer, Role.operator):
        csrf = sign_in(client, tokens[role])
        page = client.get("/models")
        assert page.status_code == 403 and "needs the admin role" in page.text
        assert 'href="/models"' not in client.get("/videos").text
        action = client.post("/models/finetune", data={"csrf_token": csrf})
        assert action.status_code == 403
    assert client.app.state.runtime.queue.jobs(FINETUNE) == []


def test_models_page_shows_withdrawn_training_data(app_client, tokens, checkpoint):
    registry = ModelRegistry(app_client.app.state.runtime.storage.models)
    card = registry.get("v0001")  # ATCON_CHECKPOINT, registered at start-up
    registry.record_withdrawal(
        card.version,
        {"what": "video 0123abcd deleted with its 6 pool frame(s)", "video_id": "0123abcd"},
        by="dr-lee",
    )
    sign_in(app_client, tokens[Role.admin])
    html = app_client.get("/models").text
    assert f'data-withdrawn="{card.version}"' in html and "Training data withdrawn" in html
    assert "video 0123abcd deleted with its 6 pool frame(s), by dr-lee" in html


def test_models_page_activates_rolls_back_and_queues_fine_tunes(app_client, tokens, checkpoint):
    registry = ModelRegistry(app_client.app.state.runtime.storage.models)
    metrics = {"macro_f1": 0.81, "consistency": 0.62}
    assert registry.active_version() == "v0001"  # ATCON_CHECKPOINT, registered at start-up
    registry.register(
        checkpoint,
        status=VersionStatus.CANDIDATE,
        reason="no labeled validation set",
        parent="v0001",
        metrics_before=metrics,
        metrics_after={"macro_f1": 0.84, "consistency": 0.66},
    )
    registry.register(checkpoint, status=VersionStatus.REJECTED, reason="F1 fell by 9 points")
    csrf = sign_in(app_client, tokens[Role.admin])
    html = app_client.get("/models").text
    assert "Activate v0002" in html and "v0003" in html and "Activate v0003" not in html
    assert "0.8100" in html and "0.8400" in html and "F1 fell by 9 points" in html

    assert app_client.post("/models/v0002/activate", data={}).status_code == 403
    assert registry.active_version() == "v0001"
    response = app_client.post("/models/v0002/activate", data={"csrf_token": csrf})
    assert response.status_code == 200 and "v0002 is now active" in response.text
    assert registry.active_version() == "v0002"
    assert "Roll back to v0001" in response.text
    back = app_client.post("/models/v0001/activate", data={"csrf_token": csrf})
    assert back.status_code == 200 and registry.active_version() == "v0001"
    rejected = app_client.post("/models/v0003/activate", data={"csrf_token": csrf})
    assert rejected.status_code == 409 and "rejected" in rejected.text
    unknown = app_client.post("/models/v0099/activate", data={"csrf_token": csrf})
    assert unknown.status_code == 404

    queue = app_client.app.state.runtime.queue
    assert app_client.post("/models/finetune", data={}).status_code == 403
    assert queue.jobs(FINETUNE) == []
    queued = app_client.post("/models/finetune", data={"csrf_token": csrf})
    assert queued.status_code == 200 and "Fine-tune job queued." in queued.text
    [job] = queue.jobs(FINETUNE)
    assert job.payload == {"request": {}, "trigger": "page"}
    assert f"<code>{job.job_id[:8]}</code>" in queued.text
    assert f'data-job-id="{job.job_id}" data-status="queued"' in queued.text
    assert f"Cancel fine-tune {job.job_id[:8]}" in queued.text
    cancel = f"/models/jobs/{job.job_id}/cancel"
    assert app_client.post(cancel, data={}).status_code == 403
    cancelled = app_client.post(cancel, data={"csrf_token": csrf})
    assert cancelled.status_code == 200 and "Fine-tune job cancelled" in cancelled.text
    assert queue.get(job.job_id).error == "cancelled by admin"
    assert app_client.post(cancel, data={"csrf_token": csrf}).status_code == 409
    unknown_job = app_client.post(f"/models/jobs/{'0' * 32}/cancel", data={"csrf_token": csrf})
    assert unknown_job.status_code == 404


def test_video_pages_show_the_camera(app_client, auth, tokens):
    response = app_client.post(
        "/v1/videos",
        headers=auth(Role.operator),
        files=[
            ("camera", (None, "icu-3")),
            ("file", ("ward.mp4", media.video_bytes(), "video/mp4")),
        ],
    )
    video_id = response.json()["video_id"]
    sign_in(app_client, tokens[Role.operator])
    listing = app_client.get("/videos").text
    assert '<td class="camera">icu-3</td>' in listing
    assert 'id="upload-camera" name="camera"' in listing  # operators may give one
    assert "camera icu-3" in app_client.get(f"/videos/{video_id}").text


def test_models_page_shows_and_sets_each_versions_scope(app_client, tokens, checkpoint):
    registry = ModelRegistry(app_client.app.state.runtime.storage.models)
    assert registry.active_version() == "v0001"  # ATCON_CHECKPOINT, registered at start-up
    registry.register(
        checkpoint,
        status=VersionStatus.CANDIDATE,
        reason="night",
        cameras=["night-1"],
        data={"counts_by_camera": {"night-1": {"unlabeled": 40, "train": 3, "val": 2}}},
    )
    csrf = sign_in(app_client, tokens[Role.admin])
    html = app_client.get("/models").text
    assert "Adapted on: cameras <strong>night-1</strong>" in html
    assert "Adapted on: every camera" in html
    assert '<th scope="row">night-1</th><td>40</td><td>3</td><td>2</td>' in html

    scoped = app_client.post(
        "/models/v0002/activate", data={"csrf_token": csrf, "cameras": "night-1, night-2"}
    )
    assert scoped.status_code == 200 and "active for cameras night-1,night-2" in scoped.text
    assert registry.active_version() == "v0001"
    assert registry.camera_versions() == {"night-1": "v0002", "night-2": "v0002"}
    assert "cameras <strong>night-1, night-2</strong>" in scoped.text  # v0002 serves them
    assert "camera <strong>night-2</strong>" in scoped.text  # the per-camera summary
    bad = app_client.post("/models/v0002/activate", data={"csrf_token": csrf, "cameras": "a/b"})
    assert bad.status_code == 422 and "1 to 64 letters" in bad.text
    empty = app_client.post("/models/v0002/activate", data={"csrf_token": csrf, "cameras": " "})
    assert empty.status_code == 422 and registry.active_version() == "v0001"

    back = app_client.post("/models/cameras/night-2/default", data={"csrf_token": csrf})
    assert back.status_code == 200 and "night-2 is served the default" in back.text
    assert registry.camera_versions() == {"night-1": "v0002"}
    again = app_client.post("/models/cameras/night-2/default", data={"csrf_token": csrf})
    assert again.status_code == 404
    assert app_client.post("/models/cameras/night-1/default", data={}).status_code == 403


def test_a_candidate_without_labels_shows_beside_its_parent(
    app_client, tokens, checkpoint, tmp_path
):
    from worker.training.comparison import compare_models

    storage = app_client.app.state.runtime.storage
    pool = FramePool(tmp_path / "pool", image_size=64)
    rng = np.random.default_rng(0)
    records = [
        pool.add_frame(
            rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), video_id="ab" * 16, time_s=t
        )
        for t in (1.5, 3.0)
    ]
    overlays = tmp_path / "comparison"
    report = compare_models(checkpoint, checkpoint, pool, records, overlays, parent_version="v0001")
    (tmp_path / "comparison.json").write_text(json.dumps(report))
    files = {"comparison.json": tmp_path / "comparison.json"}
    files.update({f"comparison/{p.name}": p for p in overlays.iterdir()})
    registry = ModelRegistry(storage.models)
    assert registry.active_version() == "v0001"  # ATCON_CHECKPOINT, registered at start-up
    registry.register(
        checkpoint,
        status=VersionStatus.CANDIDATE,
        reason="no labeled validation set: not promoted automatically",
        parent="v0001",
        attachments=files,
    )
    sign_in(app_client, tokens[Role.admin])
    html = app_client.get("/models").text
    assert "v0002 beside v0001 on 2 unlabeled pool frames" in html
    assert "100% of frames" in html  # the same weights agree everywhere
    assert "Mean prediction entropy" in html and "Mean attention consistency" in html
    frame = report["frames"][0]
    src = f"/models/v0002/comparison/{frame['candidate']['overlay']}"
    assert f'src="{src}"' in html and "the models disagree" not in html
    image = app_client.get(src)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content[:4] == b"\x89PNG"
    assert app_client.get("/models/v0002/comparison/card.json").status_code == 404
    assert app_client.get("/models/v0002/comparison/..%2Fcheckpoint.pt").status_code == 404
    assert app_client.get("/models/v0009/comparison/x.png").status_code == 404
    sign_in(app_client, tokens[Role.viewer])
    assert app_client.get(src).status_code == 403


def test_the_review_queue_says_scoring_for_frames_a_worker_has_not_scored(app_client, tokens):
    pool = FramePool(app_client.app.state.runtime.storage.root / "frames", image_size=16)
    for _ in range(6):  # some land in the validation share, listed before they are scored
        pool.add_frame(np.full((16, 16, 3), 90, dtype=np.uint8))
    sign_in(app_client, tokens[Role.viewer])
    html = app_client.get("/review").text
    assert "Scoring… a worker is scoring frames" in html
    listed = re.findall(r'src="/v1/frames/([0-9a-f]{32})/image\.png"', html)
    assert html.count('class="scoring">Scoring…') == len(listed)
