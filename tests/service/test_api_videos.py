"""The video endpoints on the in-memory queue: upload, list, read, maps, source, delete."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests import media
from worker.cameras import CAMERA_PATTERN
from worker.queue.interface import JobState
from worker.settings import Role
from worker.storage import Storage

from .results import MAP_KINDS, PNG_KEYS, png


def upload(client, auth, data: bytes | None = None, name: str = "ward.mp4"):
    data = media.video_bytes() if data is None else data
    return client.post(
        "/v1/videos", files={"file": (name, data, "video/mp4")}, headers=auth(Role.operator)
    )


def test_upload_stores_probes_and_queues(client, auth, settings):
    data = media.video_bytes(frames=12, size=(64, 48), fps=6)
    response = upload(client, auth, data)
    assert response.status_code == 202, response.text
    body = response.json()
    video_id, job_id = body["video_id"], body["job_id"]
    assert body["status_url"] == f"/v1/jobs/{job_id}"
    assert response.headers["location"] == f"/v1/videos/{video_id}"

    storage = Storage(settings.data_dir)
    assert storage.source_path(video_id).read_bytes() == data
    assert list(storage.tmp.iterdir()) == []

    job = client.get(body["status_url"], headers=auth(Role.viewer)).json()
    assert job["job_id"] == job_id and job["kind"] == "detect"
    assert job["status"] == "queued" and job["progress"] == 0 and job["attempts"] == 0
    assert job["error"] is None and job["started_at"] is None and job["created_at"]

    video = client.get(f"/v1/videos/{video_id}", headers=auth(Role.viewer)).json()
    assert video["status"] == "queued" and video["filename"] == "ward.mp4"
    assert video["size_bytes"] == len(data)
    assert (video["width"], video["height"], video["fps"]) == (64, 48, 6.0)
    assert video["duration_s"] == pytest.approx(2.0)
    assert video["event_count"] is None and video["model_version"] is None


def test_list_is_newest_first_and_paged(client, auth):
    ids = [upload(client, auth).json()["video_id"] for _ in range(3)]
    listing = client.get("/v1/videos", headers=auth(Role.viewer)).json()
    assert listing["total"] == 3
    assert [v["video_id"] for v in listing["videos"]] == ids[::-1]
    page = client.get("/v1/videos?limit=1&offset=1", headers=auth(Role.viewer)).json()
    assert [v["video_id"] for v in page["videos"]] == [ids[1]]


def test_events_before_results_say_why(client, auth):
    video_id = upload(client, auth).json()["video_id"]
    response = client.get(f"/v1/videos/{video_id}/events", headers=auth(Role.viewer))
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert "no results yet" in response.json()["detail"]
    assert "queued" in response.json()["detail"]


def test_events_and_maps_once_results_exist(client, auth, results):
    video_id = upload(client, auth).json()["video_id"]
    written = results.write(video_id, events=2, model_version="v0007")

    events = client.get(f"/v1/videos/{video_id}/events", headers=auth(Role.viewer)).json()
    assert [e["id"] for e in events["events"]] == ["bed_exit-0", "bed_exit-1"]
    assert events["events"][0]["label"] == written["events"][0]["label"]
    urls = events["events"][1]["map_urls"]
    assert set(urls) == set(MAP_KINDS)
    for key, kind in PNG_KEYS.items():
        response = client.get(urls[kind], headers=auth(Role.viewer))
        assert response.status_code == 200, kind
        assert response.headers["content-type"] == "image/png"
        assert response.content == png(40 * list(PNG_KEYS).index(key) + 1)

    video = client.get(f"/v1/videos/{video_id}", headers=auth(Role.viewer)).json()
    assert video["status"] == "done" and video["progress"] == 1
    assert video["event_count"] == 2 and video["model_version"] == "v0007"


def test_gradcam_alone_is_rendered_from_the_raw_map(client, auth, results):
    video_id = upload(client, auth).json()["video_id"]
    results.write(video_id, events=1)
    response = client.get(
        f"/v1/videos/{video_id}/events/bed_exit-0/maps/gradcam.png", headers=auth(Role.viewer)
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(response.content)))
    assert image.shape == (6, 8, 3)  # the video's display size from events.json
    # the raw map rises left to right, top to bottom: its jet colour goes blue -> red
    assert image[0, 0, 2] > image[0, 0, 0] and image[-1, -1, 0] > image[-1, -1, 2]


def test_events_answer_follows_a_republished_result(client, auth, results):
    video_id = upload(client, auth).json()["video_id"]
    results.write(video_id, events=1, model_version="v0001")
    url = f"/v1/videos/{video_id}/events"
    assert client.get(url, headers=auth(Role.viewer)).json()["model"]["version"] == "v0001"
    results.write(video_id, events=3, model_version="v0002")
    again = client.get(url, headers=auth(Role.viewer)).json()
    assert again["model"]["version"] == "v0002" and len(again["events"]) == 3


def test_map_names_leaving_the_results_folder_are_refused(client, auth, results, settings):
    video_id = upload(client, auth).json()["video_id"]
    results.write(video_id, events=1)
    path = Storage(settings.data_dir).results_dir(video_id) / "events.json"
    content = json.loads(path.read_text())
    content["events"][0]["maps"]["gradcam_overlay"] = f"../../uploads/{video_id}/source.png"
    path.write_text(json.dumps(content))
    response = client.get(
        f"/v1/videos/{video_id}/events/bed_exit-0/maps/overlay.png", headers=auth(Role.viewer)
    )
    assert response.status_code == 404


def test_source_serves_byte_ranges(client, auth):
    data = media.video_bytes()
    video_id = upload(client, auth, data).json()["video_id"]
    url = f"/v1/videos/{video_id}/source"
    full = client.get(url, headers=auth(Role.viewer))
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "video/mp4"
    assert full.headers["accept-ranges"] == "bytes"

    part = client.get(url, headers={**auth(Role.viewer), "Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(url, headers={**auth(Role.viewer), "Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    beyond = client.get(url, headers={**auth(Role.viewer), "Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416


def test_admin_deletes_upload_results_and_job(client, auth, results, settings):
    body = upload(client, auth).json()
    video_id = body["video_id"]
    results.write(video_id)
    storage = Storage(settings.data_dir)

    response = client.delete(f"/v1/videos/{video_id}", headers=auth(Role.admin))
    assert response.status_code == 204
    assert not storage.upload_dir(video_id).exists()
    assert not storage.results_dir(video_id).exists()
    assert client.get(f"/v1/videos/{video_id}", headers=auth(Role.viewer)).status_code == 404
    assert client.get(body["status_url"], headers=auth(Role.viewer)).status_code == 404
    again = client.delete(f"/v1/videos/{video_id}", headers=auth(Role.admin))
    assert again.status_code == 404


@pytest.mark.parametrize("role", [Role.viewer, Role.operator])
def test_only_an_admin_deletes(client, auth, role):
    video_id = upload(client, auth).json()["video_id"]
    response = client.delete(f"/v1/videos/{video_id}", headers=auth(role))
    assert response.status_code == 403
    assert "admin role" in response.json()["detail"]
    assert client.get(f"/v1/videos/{video_id}", headers=auth(Role.viewer)).status_code == 200


def test_dead_letters_and_requeue(client, auth):
    job_id = upload(client, auth).json()["job_id"]
    queue = client.app.state.runtime.queue
    lease = queue.reserve("detect", "test", timeout_s=1)
    assert lease is not None and queue.fail(lease, "broken file", retry=False)

    viewer = client.get("/v1/dead-letters", headers=auth(Role.operator))
    assert viewer.status_code == 403
    dead = client.get("/v1/dead-letters?kind=detect", headers=auth(Role.admin)).json()
    assert [j["job_id"] for j in dead["jobs"]] == [job_id]
    assert dead["jobs"][0]["error"] == "broken file"

    requeued = client.post(f"/v1/jobs/{job_id}/requeue", headers=auth(Role.admin))
    assert requeued.status_code == 202 and requeued.json()["status"] == JobState.queued
    again = client.post(f"/v1/jobs/{job_id}/requeue", headers=auth(Role.admin))
    assert again.status_code == 409 and "only a failed job" in again.json()["detail"]


def test_a_wrong_method_names_every_allowed_one(client, auth):
    response = client.put("/v1/videos", headers=auth(Role.admin))
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    one = client.patch(f"/v1/videos/{'a' * 32}", headers=auth(Role.admin))
    assert one.headers["allow"] == "DELETE, GET"


def _upload_with(client, auth, fields: list[tuple[str, str]], *, camera_first: bool = True):
    """A multipart upload with extra text fields before (or after) the file."""
    files: list[tuple[str, tuple]] = [(name, (None, value)) for name, value in fields]
    video = ("file", ("ward.mp4", media.video_bytes(), "video/mp4"))
    parts = [*files, video] if camera_first else [video, *files]
    return client.post("/v1/videos", files=parts, headers=auth(Role.operator))


def test_upload_with_a_camera_keeps_it(client, auth, settings):
    for camera_first in (True, False):
        response = _upload_with(client, auth, [("camera", "icu-3")], camera_first=camera_first)
        assert response.status_code == 202, response.text
        video_id = response.json()["video_id"]
        assert Storage(settings.data_dir).get_video(video_id).camera == "icu-3"
        video = client.get(f"/v1/videos/{video_id}", headers=auth(Role.viewer)).json()
        assert video["camera"] == "icu-3"
    listed = client.get("/v1/videos", headers=auth(Role.viewer)).json()["videos"]
    assert [v["camera"] for v in listed] == ["icu-3", "icu-3"]
    plain = upload(client, auth).json()["video_id"]  # no camera: none
    assert client.get(f"/v1/videos/{plain}", headers=auth(Role.viewer)).json()["camera"] is None
    blank = _upload_with(client, auth, [("camera", "")]).json()["video_id"]  # a blank input
    assert Storage(settings.data_dir).get_video(blank).camera is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([("camera", "../../etc/passwd")], "1 to 64 letters, digits"),
        ([("camera", "icu 3")], "1 to 64 letters, digits"),
        ([("camera", "x" * 65)], "1 to 64 letters, digits"),
        ([("camera", "x" * 5000)], "at most 64 characters"),
        ([("camera", "ward\u00e9")], "1 to 64 letters, digits"),
        ([("camera", "a"), ("camera", "b")], "two `camera` fields"),
    ],
)
@pytest.mark.parametrize("camera_first", [True, False])
def test_a_bad_camera_is_refused_and_nothing_stored(
    client, auth, settings, fields, expected, camera_first
):
    response = _upload_with(client, auth, fields, camera_first=camera_first)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    assert expected in detail and detail[0].isupper()
    storage = Storage(settings.data_dir)
    assert list(storage.video_ids()) == []
    assert list(storage.tmp.iterdir()) == []
    assert client.app.state.runtime.queue.depth("detect") == 0


def test_the_openapi_document_describes_cameras(client):
    document = client.get("/openapi.json").json()
    upload_schema = document["paths"]["/v1/videos"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["schema"]
    camera = upload_schema["properties"]["camera"]
    assert camera["pattern"] == CAMERA_PATTERN and camera["maxLength"] == 64
    assert upload_schema["required"] == ["file"]
    schemas = document["components"]["schemas"]
    assert "camera" in schemas["VideoPublic"]["properties"]
    assert "camera" in schemas["FramePublic"]["properties"]
    assert "camera" in schemas["FinetuneRequest"]["properties"]
    assert {"cameras", "active_for"} <= set(schemas["ModelPublic"]["properties"])
    assert "cameras" in schemas["ModelList"]["properties"]
    assert "cameras" in schemas["ActivateRequest"]["properties"]
    frames_body = document["paths"]["/v1/frames"]["post"]["requestBody"]["content"]
    frames_schema = frames_body["multipart/form-data"]["schema"]  # streamed: described inline
    assert frames_schema["properties"]["camera"]["pattern"] == CAMERA_PATTERN
    assert "delete" in document["paths"]["/v1/models/cameras/{camera}"]
    assert "get" in document["paths"]["/v1/models/cameras"]
