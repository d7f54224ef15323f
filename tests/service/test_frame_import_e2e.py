"""Zip imports of pool frames are extracted by an ``atcon worker import`` job, not in the
request (a real uvicorn, a real Redis, a real worker process): the request checks the
archive's directory and answers 202; the job adds the frames and reports each refused
entry; an archive without a usable image fails its job with the reason."""

from __future__ import annotations

import io
import zipfile

import httpx
import pytest
from PIL import Image

from tests.processes import Process, Server, wait_for
from tests.redis_helpers import DB_E2E, flushed_db
from worker.settings import Role

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (value, 255 - value, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zip_imports_run_as_worker_jobs(tmp_path, token_setting, tokens):
    from .test_health import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "model.pt", arch="resnet18")
    headers = {role: {"Authorization": f"Bearer {tokens[role]}"} for role in Role}
    with flushed_db(DB_E2E) as url:
        env = {
            "ATCON_DATA_DIR": str(tmp_path / "data"),
            "ATCON_API_TOKENS": token_setting,
            "ATCON_REDIS_URL": url,
            "ATCON_CHECKPOINT": str(checkpoint),
        }
        server = Server(env, tmp_path / "api.log").start()
        worker: Process | None = None
        frames = tmp_path / "data" / "frames"
        try:
            with httpx.Client(base_url=server.url, timeout=60) as http:

                def post(name: str, data: bytes, kind: str = "application/zip") -> httpx.Response:
                    return http.post(
                        "/v1/frames",
                        files={"file": (name, data, kind)},
                        headers=headers[Role.operator],
                    )

                mixed = _zip(
                    {
                        "a.png": _png(10),
                        "b/c.png": _png(90),
                        "d.png": _png(170),
                        "broken.png": b"\x89PNG not really",
                        "../escape.png": _png(5),
                        "notes.txt": b"hello",
                    }
                )
                accepted = post("frames.zip", mixed)
                assert accepted.status_code == 202, accepted.text
                assert accepted.json()["entries"] == 6
                assert accepted.headers["location"] == accepted.json()["status_url"]
                useless = post("useless.zip", _zip({"x.txt": b"x", "y.png": b"not a png"}))
                assert useless.status_code == 202, useless.text
                # no worker yet: the request added nothing, its job waits
                assert list(frames.glob("*.json")) == []
                viewer = headers[Role.viewer]
                job = http.get(accepted.json()["status_url"], headers=viewer).json()
                assert job["kind"] == "import" and job["status"] == "queued"
                empty = post("empty.zip", _zip({}))
                assert empty.status_code == 415 and "holds no files" in empty.json()["detail"]
                single = post("one.png", _png(30), "image/png")  # one image: at once
                assert single.status_code == 201 and len(single.json()["accepted"]) == 1

                worker = Process(["service.cli", "worker", "import"], env, tmp_path / "w.log")
                worker.start()

                def ended(status_url: str):
                    def check():
                        job = http.get(status_url, headers=viewer).json()
                        return job if job["status"] in ("done", "failed") else None

                    return wait_for(check, 120, f"the import job {status_url}")

                done = ended(accepted.json()["status_url"])
                assert done["status"] == "done", done["error"]
                result = done["result"]
                assert result["accepted"] == 3 and len(result["frame_ids"]) == 3
                reasons = {r["name"]: r["reason"] for r in result["rejected"]}
                assert reasons["../escape.png"] == "path leaves the archive"
                assert reasons["notes.txt"] == "not an image file name"
                assert "not a readable" in reasons["broken.png"]
                for frame_id in result["frame_ids"]:
                    image = http.get(f"/v1/frames/{frame_id}/image.png", headers=viewer)
                    assert image.status_code == 200
                failed = ended(useless.json()["status_url"])
                assert failed["status"] == "failed"
                assert "no entry of the zip archive is a usable image" in failed["error"]
                assert "x.txt: not an image file name" in failed["error"]
                assert len(list(frames.glob("*.json"))) == 4
                assert not list((tmp_path / "data" / "tmp").glob("import-*"))  # not kept
        finally:
            if worker is not None:
                worker.stop()
            server.stop()
