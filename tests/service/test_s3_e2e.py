"""The service on an object store, end to end: a real ``atcon serve`` and two real
``atcon worker detect`` processes sharing nothing but a real Redis and a real
S3-compatible server (moto's, the session fixture ``s3``): each has its own data
directory (scratch and cache) and its own copy of the checkpoint.

Videos uploaded over HTTP are detected by either worker, which streams them from the
bucket (no worker copies a source); events and maps are served by the API from the
bucket; the pool frames the workers sampled reach the API's review queue, a label set
through the API and a map a worker draws reach the bucket; deleting a video removes
every object derived from it (its frames included), the API's copies, and (through the
workers' sweep) the workers' copies."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests import media
from tests.processes import Process, Server, wait_for
from tests.redis_helpers import DB_E2E, flushed_db
from tests.s3_helpers import own_process_env
from worker.settings import Role

pytestmark = [pytest.mark.slow, pytest.mark.redis]

VIDEOS = 4


def _paths_naming(root: Path, needle: str, *, skip: frozenset[str] = frozenset()) -> list[str]:
    """Files under ``root`` whose path or content holds ``needle``."""
    found = []
    for path in root.rglob("*"):
        relative = str(path.relative_to(root))
        if relative in skip:
            continue
        if needle in relative or (path.is_file() and needle.encode() in path.read_bytes()):
            found.append(relative)
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory, token_setting, s3):
    from .test_health import tiny_checkpoint

    base = tmp_path_factory.mktemp("s3e2e")
    checkpoint = tiny_checkpoint(base / "model.pt", arch="resnet18", thresholds=[0.01, 0.01])
    bucket = s3.bucket()
    with flushed_db(DB_E2E) as url:
        common = {
            **s3.env(),
            "ATCON_API_TOKENS": token_setting,
            "ATCON_REDIS_URL": url,
            "ATCON_STORAGE_URL": f"s3://{bucket}/ward-a",
            "ATCON_POOL_FRAMES_PER_MINUTE": "60",
            "ATCON_TMP_SWEEP_INTERVAL_S": "1",
        }

        def own(name: str) -> dict[str, str]:
            return own_process_env(base, name, checkpoint, common)

        server = Server(own("api"), base / "api.log").start()
        workers = [
            Process(
                ["service.cli", "worker", "detect", "--name", name], own(name), base / f"{name}.log"
            ).start()
            for name in ("w1", "w2")
        ]
        try:
            # both workers listening before the first upload, so that both take jobs
            import redis

            client = redis.Redis.from_url(url)
            try:
                wait_for(
                    lambda: (
                        {b"atcon:alive:detect:w1", b"atcon:alive:detect:w2"}
                        <= set(client.keys("atcon:alive:detect:*"))
                    ),
                    120,
                    "both detect workers to mark themselves alive",
                )
            finally:
                client.close()
            yield server, base, bucket, workers, own
        finally:
            for worker in workers:
                worker.stop()
            server.stop()


def _headers(tokens) -> dict[Role, dict[str, str]]:
    return {role: {"Authorization": f"Bearer {tokens[role]}"} for role in Role}


def test_two_workers_and_the_api_share_only_redis_and_the_bucket(stack, tokens, s3):
    server, base, bucket, workers, _ = stack
    headers = _headers(tokens)
    viewer = headers[Role.viewer]
    with httpx.Client(base_url=server.url, timeout=60) as http:
        accepted = []
        for i in range(VIDEOS):
            video = media.video_bytes(frames=36 + i, size=(64, 48), fps=6)
            answer = http.post(
                "/v1/videos",
                files={"file": (f"w{i}.mp4", video, "video/mp4")},
                headers=headers[Role.operator],
            )
            assert answer.status_code == 202, answer.text
            accepted.append(answer.json())
        ids = [a["video_id"] for a in accepted]

        def all_finished():
            jobs = [http.get(a["status_url"], headers=viewer).json() for a in accepted]
            return jobs if all(j["status"] in ("done", "failed") for j in jobs) else None

        jobs = wait_for(all_finished, 300, "the detection jobs")
        assert [j["status"] for j in jobs] == ["done"] * VIDEOS, [j["error"] for j in jobs]

        # every job was done by one of the two workers, and each worker did some
        done_by = {
            w.args[-1]: {j["job_id"] for j in jobs if f"job {j['job_id']} done" in w.output()}
            for w in workers
        }
        assert set().union(*done_by.values()) == {j["job_id"] for j in jobs}, done_by
        assert all(done_by.values()), f"one worker took every job: {done_by}"

        # the inbox, asked first: the API copies in the results the workers published
        inbox = http.get("/v1/events?limit=200", headers=viewer)
        assert inbox.status_code == 200, inbox.text
        assert {e["video_id"] for e in inbox.json()["events"]} == set(ids)

        for video_id in ids:
            events = http.get(f"/v1/videos/{video_id}/events", headers=viewer)
            assert events.status_code == 200, events.text
            listed = events.json()["events"]
            assert listed, "thresholds of 0.01 make every frame an event"
            event_id = listed[0]["id"]
            for kind in ("overlay", "gradcam", "guided_backprop", "mask", "frame"):
                image = http.get(
                    f"/v1/videos/{video_id}/events/{event_id}/maps/{kind}.png", headers=viewer
                )
                assert image.status_code == 200, (kind, image.text)
                assert image.content.startswith(b"\x89PNG")

        keys = s3.keys(bucket, "ward-a/")
        for video_id in ids:
            assert f"ward-a/uploads/{video_id}/source" in keys
            assert f"ward-a/uploads/{video_id}/video.json" in keys
            assert f"ward-a/results/{video_id}/CURRENT.json" in keys
        # the workers streamed the sources from the bucket: no copy on their disks
        for name in ("w1", "w2"):
            assert not list((base / name / "data").rglob("source")), name

        # the pool frames the workers sampled are in the bucket, and the API's review
        # queue lists them; a label from the API and a map drawn by a worker go there too
        gone, kept = ids[0], ids[1]
        queue = http.get("/v1/frames/review?limit=200", headers=viewer)
        assert queue.status_code == 200, queue.text
        frames = queue.json()["frames"]
        assert {f["video_id"] for f in frames} == set(ids)
        gone_frames = {f["frame_id"] for f in frames if f["video_id"] == gone}
        first = sorted(gone_frames)[0]
        labeled = http.put(
            f"/v1/frames/{first}/labels", json={"labels": ["staff"]}, headers=headers[Role.operator]
        )
        assert labeled.status_code == 200, labeled.text

        def drawn():  # a worker draws the map (202 until it has)
            answer = http.get(f"/v1/frames/{first}/maps/gradcam.png", headers=viewer)
            assert answer.status_code in (200, 202), answer.text
            return answer if answer.status_code == 200 else None

        assert wait_for(drawn, 120, "the frame's Grad-CAM map").content.startswith(b"\x89PNG")
        keys = s3.keys(bucket, "ward-a/frames/")
        assert f"ward-a/frames/{first}.png" in keys and f"ward-a/frames/{first}.json" in keys
        assert any(k.startswith(f"ward-a/frames/maps/{first}.") for k in keys)
        record = s3.client().get_object(Bucket=bucket, Key=f"ward-a/frames/{first}.json")
        assert b'"staff"' in record["Body"].read()

        deleted = http.delete(f"/v1/videos/{gone}", headers=headers[Role.admin])
        assert deleted.status_code == 204, deleted.text

        assert [k for k in s3.keys(bucket) if gone in k] == []
        assert [k for k in s3.keys(bucket) if any(f in k for f in gone_frames)] == []
        assert [k for k in s3.keys(bucket) if kept in k]
        for frame_id in gone_frames:
            assert http.get(f"/v1/frames/{frame_id}", headers=viewer).status_code == 404
        for needle in (gone, *gone_frames):
            assert _paths_naming(base / "api" / "data", needle, skip=frozenset({"audit.log"})) == []
        for url in (f"/v1/videos/{gone}", f"/v1/videos/{gone}/events"):
            assert http.get(url, headers=viewer).status_code == 404
        listed_ids = {
            v["video_id"] for v in http.get("/v1/videos", headers=viewer).json()["videos"]
        }
        assert listed_ids == set(ids) - {gone}

        # each worker's sweep drops its copies of what the deletion removed
        def swept() -> bool:
            return not any(
                _paths_naming(base / n / "data", needle)
                for n in ("w1", "w2")
                for needle in (gone, *gone_frames)
            )

        wait_for(swept, 60, "the workers' sweep of the deleted video's pool frames")
        assert http.get(f"/v1/videos/{kept}/events", headers=viewer).status_code == 200


def _png(value: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_zip_posted_to_the_api_is_imported_by_a_worker_elsewhere(stack, tokens, s3):
    import io
    import zipfile

    server, base, bucket, _, own = stack
    headers = _headers(tokens)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.png", _png(30))
        archive.writestr("b.png", _png(200))
    importer = Process(["service.cli", "worker", "import"], own("importer"), base / "imp.log")
    importer.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            accepted = http.post(
                "/v1/frames",
                files={"file": ("f.zip", buffer.getvalue(), "application/zip")},
                headers=headers[Role.operator],
            )
            assert accepted.status_code == 202, accepted.text
            assert s3.keys(bucket, "ward-a/staging/")  # staged in the bucket, not on disk

            def done():
                job = http.get(accepted.json()["status_url"], headers=headers[Role.viewer]).json()
                return job if job["status"] in ("done", "failed") else None

            job = wait_for(done, 180, "the import job")
            assert job["status"] == "done", job["error"]
            imported = set(job["result"]["frame_ids"])
            assert len(imported) == 2
            for frame_id in imported:  # the API reads them from the bucket
                record = http.get(f"/v1/frames/{frame_id}", headers=headers[Role.viewer])
                assert record.status_code == 200, record.text
                image = http.get(f"/v1/frames/{frame_id}/image.png", headers=headers[Role.viewer])
                assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        assert s3.keys(bucket, "ward-a/staging/") == []
    finally:
        importer.stop()


def test_a_review_on_one_api_replica_is_seen_on_another(stack, tokens, s3):
    """Two API replicas with their own data directories: a review made through one is
    in the other's events answer and inbox (the document is the store's), and an
    answer the other replica had cached is not served stale."""
    server, base, bucket, _, own = stack
    headers = _headers(tokens)
    viewer = headers[Role.viewer]
    other = Server(own("api-b"), base / "api-b.log").start()
    try:
        with (
            httpx.Client(base_url=server.url, timeout=60) as one,
            httpx.Client(base_url=other.url, timeout=60) as two,
        ):
            video = media.video_bytes(frames=30, size=(64, 48), fps=6)
            accepted = one.post(
                "/v1/videos",
                files={"file": ("r.mp4", video, "video/mp4")},
                headers=headers[Role.operator],
            ).json()

            def finished():
                job = two.get(accepted["status_url"], headers=viewer).json()
                return job if job["status"] in ("done", "failed") else None

            assert wait_for(finished, 300, "the detection job")["status"] == "done"
            video_id = accepted["video_id"]
            url = f"/v1/videos/{video_id}/events"
            events = two.get(url, headers=viewer).json()["events"]  # cached on two
            assert events and events[0]["review"] is None
            event_id = events[0]["id"]
            reviewed = one.put(
                f"{url}/{event_id}/review",
                json={"verdict": "false_positive"},
                headers=headers[Role.operator],
            )
            assert reviewed.status_code == 200, reviewed.text
            assert f"ward-a/uploads/{video_id}/reviews.json" in s3.keys(bucket, "ward-a/")
            seen = two.get(url, headers=viewer).json()["events"][0]["review"]
            assert seen is not None and seen["verdict"] == "false_positive"
            inbox = two.get(f"/v1/events?video_id={video_id}", headers=viewer).json()
            states = {e["event_id"]: e["review"]["state"] for e in inbox["events"]}
            assert states[event_id] == "false_positive", states
            deleted = two.delete(f"/v1/videos/{video_id}", headers=headers[Role.admin])
            assert deleted.status_code == 204, deleted.text
            assert s3.keys(bucket, f"ward-a/uploads/{video_id}/") == []
            assert one.get(url, headers=viewer).status_code == 404
    finally:
        other.stop()
