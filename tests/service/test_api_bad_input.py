"""Every bad input of the issue, each in its own test; the service stays healthy after each.

After each rejection: the answer is problem+json with a sentence, nothing of the
upload is left in the data directory, and a good upload is still accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import media
from worker.settings import Role
from worker.storage import Storage

VALID_ID = "0123456789abcdef0123456789abcdef"


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "audit.log")


@pytest.fixture
def healthy(client, auth, settings):
    """Yields, then checks the service still answers and still accepts a good upload."""
    yield
    assert client.get("/healthz").json() == {"status": "ok"}
    storage = Storage(settings.data_dir)
    assert list(storage.tmp.iterdir()) == [], "a rejected upload left a partial file"
    ok = client.post(
        "/v1/videos",
        files={"file": ("ok.mp4", media.video_bytes(), "video/mp4")},
        headers=auth(Role.operator),
    )
    assert ok.status_code == 202, ok.text


def reject(client, auth, status: int, **request) -> str:
    request.setdefault("headers", auth(Role.operator))
    response = client.post("/v1/videos", **request)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and len(body["detail"]) > 20
    assert ".part" not in body["detail"] and "upload-" not in body["detail"]  # no server names
    return body["detail"]


def upload_file(client, auth, data: bytes, status: int, name: str = "x.mp4") -> str:
    return reject(client, auth, status, files={"file": (name, data, "application/octet-stream")})


def assert_nothing_stored(settings):
    storage = Storage(settings.data_dir)
    assert list(storage.uploads.iterdir()) == []
    assert list(storage.tmp.iterdir()) == []


def test_not_multipart(client, auth, settings, healthy):
    detail = reject(
        client,
        auth,
        415,
        content=media.video_bytes(),
        headers={**auth(Role.operator), "Content-Type": "video/mp4"},
    )
    assert "multipart/form-data" in detail
    assert_nothing_stored(settings)


def test_no_file_field(client, auth, settings, healthy):
    detail = reject(client, auth, 422, files={"video": ("x.mp4", media.video_bytes())})
    assert "no `file` field" in detail
    assert_nothing_stored(settings)


def test_empty_file(client, auth, settings, healthy):
    assert "empty" in upload_file(client, auth, b"", 422)
    assert_nothing_stored(settings)


def test_text(client, auth, settings, healthy):
    assert "not a video" in upload_file(client, auth, media.text_bytes(), 422, "notes.txt")
    assert_nothing_stored(settings)


def test_png(client, auth, settings, healthy):
    assert "not a video" in upload_file(client, auth, media.png_bytes(), 422, "frame.png")
    assert_nothing_stored(settings)


def test_pdf(client, auth, settings, healthy):
    assert "PDF" in upload_file(client, auth, media.pdf_bytes(), 422, "report.pdf")
    assert_nothing_stored(settings)


def test_truncated_mp4(client, auth, settings, healthy):
    assert "damaged" in upload_file(client, auth, media.truncated_mp4_bytes(), 422)
    assert_nothing_stored(settings)


def test_audio_only(client, auth, settings, healthy):
    assert "audio" in upload_file(client, auth, media.audio_only_bytes(), 422, "a.m4a")
    assert_nothing_stored(settings)


def test_over_the_size_limit_declared_length(client, auth, settings, healthy):
    big = b"\0" * (settings.max_upload_bytes + 200_000)
    assert "larger than" in upload_file(client, auth, big, 413)
    assert_nothing_stored(settings)


def test_over_the_size_limit_streamed(client, auth, settings, healthy):
    """No Content-Length (chunked): the limit stops the transfer and removes the part."""
    boundary = "atconboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    chunk = b"\1" * 65536

    def body():
        yield head
        for _ in range(settings.max_upload_bytes // len(chunk) + 4):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {**auth(Role.operator), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert "larger than" in reject(client, auth, 413, content=body(), headers=headers)
    assert_nothing_stored(settings)


@pytest.mark.parametrize(
    "name", ["../../../etc/passwd.mp4", "/etc/cron.d/evil.mp4", "..\\..\\win.mp4", "a\x00b\n.mp4"]
)
def test_hostile_file_names_are_metadata_only(client, auth, settings, tmp_path, healthy, name):
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    response = client.post(
        "/v1/videos",
        files={"file": (name, media.video_bytes(), "video/mp4")},
        headers=auth(Role.operator),
    )
    assert response.status_code == 202, response.text
    video_id = response.json()["video_id"]
    storage = Storage(settings.data_dir)
    after = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    new = [p for p in after if p not in before]
    assert (
        sorted(p.name for p in new)
        == ["audit.log", "source", "video.json"][(storage.audit_log in before) :]
    )
    assert all(p.is_relative_to(settings.data_dir) for p in new)
    assert not Path("/etc/cron.d/evil.mp4").exists()
    shown = client.get(f"/v1/videos/{video_id}", headers=auth(Role.viewer)).json()["filename"]
    assert not any(ord(c) < 32 for c in shown)
    if name.isprintable():
        assert shown == name  # kept verbatim as metadata; pages escape it


@pytest.mark.parametrize(
    "path",
    [
        "/v1/videos/{bad}",
        "/v1/videos/{bad}/events",
        "/v1/videos/{bad}/source",
        "/v1/videos/{good}/events/{evil}/maps/overlay.png",
        "/v1/jobs/{bad}",
    ],
)
@pytest.mark.parametrize("bad", ["..", "ABC", VALID_ID.upper(), "1" * 33, "%2e%2e"])
def test_malformed_id(client, auth, healthy, path, bad):
    url = path.format(bad=bad, good=VALID_ID, evil=bad if bad != ".." else "a.b")
    response = client.get(url, headers=auth(Role.admin))
    if bad == ".." and path == "/v1/videos/{bad}/events":
        # the client resolves it to /v1/events, the inbox across videos: no video is named
        assert response.status_code == 200 and "next_cursor" in response.json()
        return
    assert response.status_code in (404, 422), response.text
    if "{bad}" in path and bad != "..":  # '..' is resolved by the client into another path
        assert response.status_code == 422
        assert "32 lowercase hex digits" in response.json()["detail"]


def test_malformed_id_on_delete(client, auth, healthy):
    response = client.delete("/v1/videos/not-an-id", headers=auth(Role.admin))
    assert response.status_code == 422


@pytest.mark.parametrize(
    "path",
    ["/v1/videos/{id}", "/v1/videos/{id}/events", "/v1/videos/{id}/source", "/v1/jobs/{id}"],
)
def test_unknown_id(client, auth, healthy, path):
    response = client.get(path.format(id=VALID_ID), headers=auth(Role.viewer))
    assert response.status_code == 404
    assert VALID_ID in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/videos"),
        ("POST", "/v1/videos"),
        ("GET", f"/v1/videos/{VALID_ID}"),
        ("GET", f"/v1/videos/{VALID_ID}/events"),
        ("GET", f"/v1/videos/{VALID_ID}/events/e0/maps/overlay.png"),
        ("GET", f"/v1/videos/{VALID_ID}/source"),
        ("DELETE", f"/v1/videos/{VALID_ID}"),
        ("GET", f"/v1/jobs/{VALID_ID}"),
        ("POST", f"/v1/jobs/{VALID_ID}/requeue"),
        ("GET", "/v1/dead-letters"),
        ("GET", "/metrics"),
    ],
)
def test_no_token(client, healthy, method, path):
    response = client.request(method, path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in response.json()["detail"]


@pytest.mark.parametrize(
    "header", ["Bearer wrong", "Bearer ", "Basic dXNlcjpwYXNz", "bearer atcon_nope", "Token x"]
)
def test_wrong_token(client, healthy, header):
    response = client.get("/v1/videos", headers={"Authorization": header})
    assert response.status_code == 401


def test_token_hash_is_not_a_token(client, token_setting, healthy):
    """The stored hash itself must not work as a token."""
    digest = token_setting.split(",")[0].split(":")[2]
    response = client.get("/v1/videos", headers={"Authorization": f"Bearer {digest}"})
    assert response.status_code == 401


def test_viewer_uploading(client, auth, settings, healthy):
    response = client.post(
        "/v1/videos", files={"file": ("x.mp4", media.video_bytes())}, headers=auth(Role.viewer)
    )
    assert response.status_code == 403
    assert "operator role" in response.json()["detail"]
    assert_nothing_stored(settings)


def test_a_full_disk_is_a_507_and_leaves_nothing(client, auth, settings, monkeypatch, healthy):
    """The data directory's disk fills up mid-upload: the OS answers ENOSPC."""
    import errno
    import os

    def disk_full(fd, buffers):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", disk_full)
    try:
        detail = upload_file(client, auth, media.video_bytes(), 507)
    finally:
        monkeypatch.undo()
    assert "No space left" in detail and "free space" in detail
    assert_nothing_stored(settings)
