"""The object-store backend against a real S3-compatible server (moto's, started by the
session fixture ``s3``): videos and results shared between processes that share no
directory, decoding with ranged reads, publication by pointer (an interrupted or
killed publication leaves nothing half-published), deletion of every object."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from tests import media
from tests.s3_helpers import S3Server
from worker._exceptions import (
    ObjectStoreError,
    SettingsError,
    StorageError,
    VideoNotFoundError,
)
from worker.object_store import ObjectStore, RangeReader, parse_storage_url
from worker.settings import Settings
from worker.storage import Storage, VideoRecord, new_id, open_storage
from worker.storage_s3 import POINTER_NAME, ObjectStorage, StoredVideo
from worker.video.decode import FrameSampler, extract_frames
from worker.video.probe import probe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3.bucket()


def backend(root: Path, bucket: str, prefix: str = "ward") -> ObjectStorage:
    storage = ObjectStorage(root, f"s3://{bucket}/{prefix}")
    storage.ensure_layout()
    return storage


def upload(storage: Storage, data: bytes) -> VideoRecord:
    received = storage.new_upload_file()
    received.write_bytes(data)
    record = VideoRecord(video_id=new_id(), job_id=new_id(), size_bytes=len(data), camera="c1")
    storage.save_video(record, received)
    return record


def results_folder(folder: Path, marker: str, maps: int = 3) -> Path:
    (folder / "maps").mkdir(parents=True)
    (folder / "events.json").write_text(
        json.dumps({"schema_version": 1, "marker": marker, "events": []})
    )
    for i in range(maps):
        (folder / "maps" / f"e{i}_gradcam.png").write_bytes(f"{marker}-{i}".encode())
    return folder


# -- settings and the store ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://bucket/x", "s3://", "s3:///prefix", "s3://b/a/../c", "s3://b/x?y=1"]
)
def test_a_storage_url_of_another_form_is_refused_by_name(url):
    with pytest.raises(SettingsError, match="ATCON_STORAGE_URL"):
        parse_storage_url(url)
    with pytest.raises(ValueError, match="ATCON_STORAGE_URL"):
        Settings(storage_url=url)


def test_the_url_gives_bucket_and_prefix():
    assert parse_storage_url("s3://b").prefix == ""
    assert parse_storage_url("s3://b/a/b/").prefix == "a/b/"
    assert parse_storage_url("s3://b/a").bucket == "b"


def test_settings_pick_the_backend(tmp_path, bucket):
    assert type(open_storage(Settings(data_dir=tmp_path))) is Storage
    assert type(open_storage(Settings(data_dir=tmp_path, storage_url=""))) is Storage
    chosen = open_storage(Settings(data_dir=tmp_path, storage_url=f"s3://{bucket}/p"))
    assert isinstance(chosen, ObjectStorage)
    assert chosen.location == f"s3://{bucket}/p/"


def test_a_missing_bucket_is_named_at_the_start(tmp_path, bucket):
    storage = ObjectStorage(tmp_path, f"s3://{bucket}-missing/p")
    with pytest.raises(ObjectStoreError, match=f"{bucket}-missing.*bucket exists"):
        storage.check_writable()


def test_an_unreachable_store_is_a_named_error(tmp_path, monkeypatch):
    from tests.redis_helpers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = ObjectStore("s3://nowhere/p")
    store.client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(ObjectStoreError, match="s3://nowhere/p/"):
        store.get_bytes("uploads/x")


def test_conditional_write_creates_once(bucket):
    store = ObjectStore(f"s3://{bucket}/p")
    assert store.put_bytes("lock", b"first", if_absent=True)
    assert not store.put_bytes("lock", b"second", if_absent=True)
    assert store.get_bytes("lock") == b"first"


def test_range_reader_reads_what_a_file_reads(bucket):
    store = ObjectStore(f"s3://{bucket}")
    data = bytes(range(256)) * 40
    store.put_bytes("blob", data)
    with store.open("blob", block_bytes=1000) as fh:
        assert fh.read(10) == data[:10]
        fh.seek(5000)
        assert fh.read(3000) == data[5000:8000]
        fh.seek(-7, os.SEEK_END)
        assert fh.read() == data[-7:]
        assert fh.read() == b""
    with pytest.raises(FileNotFoundError):
        store.open("nothing")


# -- videos ------------------------------------------------------------------------------------


def test_a_video_saved_by_one_process_is_read_by_another(tmp_path, bucket):
    api = backend(tmp_path / "api", bucket)
    worker = backend(tmp_path / "worker", bucket)
    data = media.video_bytes(frames=12)
    record = upload(api, data)
    assert worker.video_exists(record.video_id)
    assert worker.get_video(record.video_id) == record
    assert list(worker.video_ids()) == [record.video_id]
    assert [r.video_id for r in worker.list_videos()] == [record.video_id]
    assert not (tmp_path / "worker" / "uploads" / record.video_id / "source").exists()
    # the source is fetched to a local file only when asked for one (clips, download)
    assert worker.source_path(record.video_id).read_bytes() == data
    with pytest.raises(VideoNotFoundError):
        worker.get_video(new_id())
    assert not worker.video_exists(new_id())


def test_a_failed_upload_leaves_no_object(tmp_path, bucket, s3):
    storage = backend(tmp_path / "api", bucket, "half")

    class RecordRefused(ObjectStore):
        def put_bytes(self, name, data, *, if_absent=False):
            raise ObjectStoreError("injected: the record's PUT failed")

    storage.store = RecordRefused(storage.store.location, storage.store.client)
    with pytest.raises(ObjectStoreError, match="injected"):
        upload(storage, b"x" * 100)
    assert s3.keys(bucket, "half/") == []
    assert list(storage.video_ids()) == []


@dataclass(frozen=True)
class CountedVideo:
    """A StoredVideo that keeps the readers it opened, to count their ranged GETs."""

    video: StoredVideo
    readers: list[RangeReader]

    @property
    def name(self) -> str:
        return self.video.name

    @property
    def size(self) -> int:
        return self.video.size

    def open(self) -> BinaryIO:
        handle = self.video.open()
        self.readers.append(handle.raw)  # type: ignore[attr-defined]
        return handle


def test_workers_decode_from_the_store_with_range_reads(tmp_path, bucket):
    api = backend(tmp_path / "api", bucket)
    local = media.write_video(tmp_path / "v.mp4", frames=720, size=(160, 120), fps=12, gop=12)
    record = upload(api, local.read_bytes())
    worker = backend(tmp_path / "worker", bucket)
    stored = worker.video_input(record.video_id)
    assert stored.size == local.stat().st_size

    remote = probe(stored)
    assert remote.to_dict() | {"file_name": "v.mp4"} == probe(local).to_dict()
    sampled = [b for b in FrameSampler(stored, fps=2)]
    expected = [b for b in FrameSampler(local, fps=2)]
    assert [b.pts.tolist() for b in sampled] == [b.pts.tolist() for b in expected]
    assert all((a.frames == b.frames).all() for a, b in zip(sampled, expected, strict=True))

    # one late frame: a few small ranges, not the whole file
    readers: list[RangeReader] = []
    small = CountedVideo(
        StoredVideo(stored.store, stored.key, stored.size, block_bytes=4096), readers
    )
    last = expected[-1].pts[-1]
    (frame,) = extract_frames(small, [int(last)])
    (reference,) = extract_frames(local, [int(last)])
    assert (frame[0] == reference[0]).all()
    fetched = sum(r.bytes_read for r in readers)
    assert 0 < fetched < stored.size / 2, (fetched, stored.size)
    assert not (tmp_path / "worker" / "uploads" / record.video_id / "source").exists()


# -- results -----------------------------------------------------------------------------------


def test_results_are_published_by_pointer_and_read_elsewhere(tmp_path, bucket, s3):
    worker = backend(tmp_path / "worker", bucket, "pub")
    api = backend(tmp_path / "api", bucket, "pub")
    record = upload(api, b"bytes")
    video_id = record.video_id
    assert not api.has_results(video_id)
    assert api.read_events(video_id) is None

    worker.publish_results(video_id, results_folder(tmp_path / "one", "first"))
    assert api.read_events(video_id)["marker"] == "first"
    assert api.result_file(video_id, "maps/e1_gradcam.png").read_bytes() == b"first-1"
    first_keys = s3.keys(bucket, f"pub/results/{video_id}/")

    worker.publish_results(video_id, results_folder(tmp_path / "two", "second", maps=1))
    assert api.read_events(video_id)["marker"] == "second"
    assert not api.result_file(video_id, "maps/e1_gradcam.png").exists()
    keys = s3.keys(bucket, f"pub/results/{video_id}/")
    assert f"pub/results/{video_id}/{POINTER_NAME}" in keys
    assert len(keys) == 1 + 2  # the pointer and the new generation; the old one is gone
    assert not set(keys) - {f"pub/results/{video_id}/{POINTER_NAME}"} & set(first_keys)


def test_an_interrupted_publication_is_never_seen(tmp_path, bucket, s3):
    worker = backend(tmp_path / "worker", bucket, "cut")
    api = backend(tmp_path / "api", bucket, "cut")
    video_id = upload(api, b"bytes").video_id
    worker.publish_results(video_id, results_folder(tmp_path / "one", "first"))
    assert api.read_events(video_id)["marker"] == "first"

    class FailsMidUpload(ObjectStore):
        def put_file(self, name, path):
            if name.endswith("maps/e3_gradcam.png"):
                raise ObjectStoreError("injected: the connection dropped mid-upload")
            return super().put_file(name, path)

    worker.store = FailsMidUpload(worker.store.location, worker.store.client)
    with pytest.raises(ObjectStoreError, match="injected"):
        worker.publish_results(video_id, results_folder(tmp_path / "two", "second", maps=5))
    fresh = backend(tmp_path / "fresh", bucket, "cut")
    assert fresh.read_events(video_id)["marker"] == "first"
    assert fresh.result_file(video_id, "maps/e2_gradcam.png").read_bytes() == b"first-2"
    assert not fresh.result_file(video_id, "maps/e4_gradcam.png").exists()
    assert api.read_events(video_id)["marker"] == "first"


_KILLED_PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from worker.object_store import ObjectStore
    from worker.storage_s3 import ObjectStorage

    root, url, video_id, staging, flag = sys.argv[1:]

    class Stalls(ObjectStore):
        def put_file(self, name, path):
            etag = super().put_file(name, path)
            if name.endswith("maps/e2_gradcam.png"):  # some files are up: say so, hang
                Path(flag).write_text("uploading")
                time.sleep(600)
            return etag

    storage = ObjectStorage(root, url)
    storage.store = Stalls(storage.store.location, storage.store.client)
    storage.publish_results(video_id, Path(staging))
    """
)


def test_a_worker_killed_mid_upload_leaves_no_half_published_result(tmp_path, bucket, s3):
    api = backend(tmp_path / "api", bucket, "kill")
    video_id = upload(api, b"bytes").video_id
    flag = tmp_path / "uploading"
    staging = results_folder(tmp_path / "staged", "never", maps=5)
    env = {**os.environ, "PYTHONPATH": str(REPO), **s3.env()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _KILLED_PUBLISHER,
            str(tmp_path / "worker"),
            f"s3://{bucket}/kill",
            video_id,
            str(staging),
            str(flag),
        ],
        env=env,
    )
    try:
        from tests.processes import wait_for

        wait_for(lambda: flag.exists() or proc.poll() is not None, 60, "the publisher to stall")
        assert proc.poll() is None, "the publisher exited before it was killed"
        uploaded = s3.keys(bucket, f"kill/results/{video_id}/")
        assert len(uploaded) >= 1  # objects of the generation are in the bucket, but
        assert f"kill/results/{video_id}/{POINTER_NAME}" not in uploaded  # no pointer
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert not api.has_results(video_id)
    assert api.read_events(video_id) is None
    assert not (tmp_path / "api" / "results" / video_id).exists()
    # the orphaned generation goes with the video
    api.delete_video(video_id)
    assert s3.keys(bucket, "kill/") == []


def test_delete_removes_every_object_of_the_video(tmp_path, bucket, s3):
    api = backend(tmp_path / "api", bucket, "del")
    worker = backend(tmp_path / "worker", bucket, "del")
    gone = upload(api, b"patient one")
    kept = upload(api, b"patient two")
    for record in (gone, kept):
        worker.publish_results(record.video_id, results_folder(tmp_path / record.video_id, "r"))
    api.read_events(gone.video_id)  # a local copy in the API's cache too
    api.delete_video(gone.video_id)
    assert [k for k in s3.keys(bucket) if gone.video_id in k] == []
    assert [k for k in s3.keys(bucket) if kept.video_id in k]
    assert not worker.video_exists(gone.video_id)
    assert worker.read_events(gone.video_id) is None
    assert not any(gone.video_id in str(p) for p in (tmp_path / "api").rglob("*"))
    with pytest.raises(VideoNotFoundError):
        api.delete_video(gone.video_id)
    assert worker.read_events(kept.video_id)["marker"] == "r"


def test_a_pointer_naming_a_path_outside_the_folder_is_refused(tmp_path, bucket):
    api = backend(tmp_path / "api", bucket, "evil")
    video_id = upload(api, b"bytes").video_id
    pointer = {"generation": new_id(), "files": ["../../uploads/x/source"]}
    api.store.put_bytes(f"results/{video_id}/{POINTER_NAME}", json.dumps(pointer).encode())
    with pytest.raises(StorageError, match="outside its folder"):
        api.read_events(video_id)


def test_a_zip_staged_by_the_api_is_read_by_a_worker_elsewhere(tmp_path, bucket, s3):
    from worker.pool.importer import discard_archive, stage_archive, staged_archive

    api = backend(tmp_path / "api", bucket, "stage")
    worker = backend(tmp_path / "worker", bucket, "stage")
    upload_id = new_id()
    received = tmp_path / "received.zip"
    received.write_bytes(b"PK zip bytes")
    stage_archive(api, received, upload_id)
    assert not received.exists()
    assert staged_archive(worker, upload_id).read_bytes() == b"PK zip bytes"
    discard_archive(worker, upload_id)
    assert s3.keys(bucket, "stage/") == []
    assert not staged_archive(worker, upload_id).exists()
    assert not staged_archive(api, upload_id).exists()


def test_a_staged_zip_no_job_took_is_swept_once_it_is_as_old_as_tmp_debris(tmp_path, bucket, s3):
    from worker.pool.importer import stage_archive

    api = backend(tmp_path / "api", bucket, "stale")
    worker = backend(tmp_path / "worker", bucket, "stale")
    received = tmp_path / "received.zip"
    received.write_bytes(b"PK zip bytes")
    stage_archive(api, received, new_id())
    assert worker.clean_tmp(older_than_s=3600.0) == 0  # young: its job may still run
    assert len(s3.keys(bucket, "stale/staging/")) == 1
    assert worker.clean_tmp(older_than_s=0.0) == 1
    assert s3.keys(bucket, "stale/staging/") == []
