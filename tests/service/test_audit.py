"""The audit log: uploads, reads and deletions as JSON lines, with no patient data."""

from __future__ import annotations

import json

from worker.settings import Role
from worker.storage import Storage

from .test_api_videos import upload


def test_audit_lines(client, auth, settings, results):
    video_id = upload(client, auth, name="Jane_Doe_room12.mp4").json()["video_id"]
    results.write(video_id)
    client.get(f"/v1/videos/{video_id}/events", headers=auth(Role.viewer))
    client.get(f"/v1/videos/{video_id}/source", headers=auth(Role.viewer))
    client.delete(f"/v1/videos/{video_id}", headers=auth(Role.admin))

    text = Storage(settings.data_dir).audit_log.read_text()
    assert "Jane" not in text and "room12" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    actions = [(e["action"], e["token"], e["video_id"]) for e in lines]
    assert actions == [
        ("upload", "operator", video_id),
        ("read_events", "viewer", video_id),
        ("read_source", "viewer", video_id),
        ("delete", "admin", video_id),
    ]
    assert all(e["time"].endswith("+00:00") for e in lines)
    assert all(e["outcome"] == "ok" for e in lines)


def test_rejected_upload_is_audited_without_its_name(client, auth, settings):
    client.post(
        "/v1/videos",
        files={"file": ("John_Smith.txt", b"hello there, not a video at all")},
        headers=auth(Role.operator),
    )
    lines = Storage(settings.data_dir).audit_log.read_text().splitlines()
    entry = json.loads(lines[-1])
    assert entry["action"] == "upload" and entry["outcome"].startswith("rejected")
    assert "John" not in lines[-1]
