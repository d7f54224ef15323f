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


def test_audit_lines_reach_the_object_store_in_batches_and_none_is_lost(s3, tmp_path, monkeypatch):
    """API replicas share no disk: each sends its lines to the store. A batch the store
    refuses is kept and sent with the next; closing sends what is left."""
    from service.core.audit import AuditLog, AuditShipper
    from worker.object_store import ObjectStore

    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3.bucket()
    store = ObjectStore(f"s3://{bucket}/ward")
    shipper = AuditShipper(store, interval_s=3600)  # flushed by hand below
    log = AuditLog(tmp_path / "audit.log", shipper)
    log.record("read_events", "viewer", video_id="a" * 32)
    log.record("delete", "admin", video_id="b" * 32)
    assert shipper.flush()
    (first,) = s3.keys(bucket, "ward/audit/")
    assert first.endswith("-1.jsonl") and "/audit/20" in first

    missing = ObjectStore(f"s3://{bucket}-missing/ward")  # the store refuses this batch
    shipper.store = missing
    log.record("read_source", "viewer", video_id="c" * 32)
    assert not shipper.flush()
    shipper.store = store
    log.record("upload", "operator", video_id="d" * 32)
    log.close()

    client = s3.client()
    lines = [
        json.loads(line)
        for key in s3.keys(bucket, "ward/audit/")
        for line in client.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
    ]
    assert [e["action"] for e in lines] == ["read_events", "delete", "read_source", "upload"]
    # the replica's own file has every line too
    assert len((tmp_path / "audit.log").read_text().splitlines()) == 4


def test_lines_the_store_refuses_are_held_in_bounded_memory(s3, tmp_path, monkeypatch):
    """A store away for long cannot grow the API's memory: beyond ``max_pending`` the
    oldest held lines are dropped from memory (the replica's file keeps every line)."""
    from service.core.audit import AuditLog, AuditShipper
    from worker.object_store import ObjectStore

    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    missing = ObjectStore(f"s3://{s3.bucket()}-missing/ward")
    shipper = AuditShipper(missing, interval_s=3600, max_pending=3)
    log = AuditLog(tmp_path / "audit.log", shipper)
    for index in range(5):
        log.record("read_events", "viewer", video_id=f"{index:032x}")
    assert not shipper.flush()
    assert len(shipper._pending) == 3 and shipper.dropped == 2
    assert len((tmp_path / "audit.log").read_text().splitlines()) == 5
    shipper._stop.set()
