"""Smaller points of issue 14: every refusal is problem+json with a sentence to act on
(ranges, unknown and traversal paths, empty zips), and file names cannot display in
another order than they are."""

from __future__ import annotations

import io
import zipfile

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from worker.settings import Role

from .test_api_videos import upload
from .test_health import tiny_checkpoint

PROBLEM = "application/problem+json"


def test_range_errors_are_problems(client, auth):
    video_id = upload(client, auth).json()["video_id"]
    source = f"/v1/videos/{video_id}/source"
    viewer = auth(Role.viewer)
    size = len(client.get(source, headers=viewer).content)
    outside = client.get(source, headers={**viewer, "Range": f"bytes={size + 10}-"})
    assert outside.status_code == 416
    assert outside.headers["content-type"] == PROBLEM
    assert f"which has {size} bytes" in outside.json()["detail"]
    assert outside.headers["content-range"] == f"bytes */{size}"
    malformed = client.get(source, headers={**viewer, "Range": "bytes=abc"})
    assert malformed.status_code == 400
    assert malformed.headers["content-type"] == PROBLEM
    assert "bytes=0-1023" in malformed.json()["detail"]
    assert client.get(source, headers={**viewer, "Range": "bytes=0-9"}).status_code == 206


@pytest.mark.parametrize(
    "path",
    ["/static/..%2f..%2fetc%2fpasswd", "/v1/frames/..%2F..%2Fsession.key/image.png", "/v1/nope"],
)
def test_unknown_and_traversal_paths_say_so(client, path):
    answer = client.get(path)
    assert answer.status_code == 404
    detail = answer.json()["detail"]
    assert "/docs" in detail
    if ".." in path or "%2f" in path.lower():
        assert "may not leave its folder" in detail


def test_an_empty_zip_is_called_empty(make_settings, tmp_path, auth):
    settings = make_settings(checkpoint=tiny_checkpoint(tmp_path / "m.pt", arch="resnet18"))
    buffer = io.BytesIO()
    zipfile.ZipFile(buffer, "w").close()
    with TestClient(create_app(settings, workers=0)) as client:
        answer = client.post(
            "/v1/frames",
            files={"file": ("empty.zip", buffer.getvalue(), "application/zip")},
            headers=auth(Role.operator),
        )
    assert answer.status_code == 415
    assert "holds no files" in answer.json()["detail"]
    assert "PNG" not in answer.json()["detail"].split(";")[0]


def test_bidirectional_controls_are_stripped_from_file_names(client, auth):
    body = upload(client, auth, name="ward\u202egnp.mp4").json()
    listed = client.get(f"/v1/videos/{body['video_id']}", headers=auth(Role.viewer)).json()
    assert listed["filename"] == "wardgnp.mp4"


def test_a_zip_over_its_caps_answers_413(make_settings, tmp_path, auth):
    settings = make_settings(
        checkpoint=tiny_checkpoint(tmp_path / "m.pt", arch="resnet18"), zip_max_entries=3
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(4):
            archive.writestr(f"{i}.png", b"x")
    with TestClient(create_app(settings, workers=0)) as client:
        answer = client.post(
            "/v1/frames",
            files={"file": ("many.zip", buffer.getvalue(), "application/zip")},
            headers=auth(Role.operator),
        )
        assert answer.status_code == 413
        assert "ATCON_ZIP_MAX_ENTRIES" in answer.json()["detail"]
        assert list(client.app.state.runtime.storage.frames.glob("*.json")) == []
