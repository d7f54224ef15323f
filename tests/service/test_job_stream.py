"""Server-sent events of jobs (service/core/job_stream.py, GET /v1/jobs/stream), and live
page refreshes kept out of the audit log."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from service.core.job_stream import job_events
from worker.queue.interface import Job
from worker.queue.memory import MemoryQueue
from worker.settings import Role, Settings


def public(job: Job) -> dict[str, Any]:
    return {"job_id": job.job_id, "status": job.status.value, "progress": job.progress}


def messages(chunks: list[str]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for chunk in chunks:
        fields = dict(line.split(": ", 1) for line in chunk.strip().splitlines())
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_a_change_is_sent_once_and_the_stream_ends_when_nothing_runs():
    queue = MemoryQueue(Settings(dev=True))
    job = queue.enqueue("detect", {"video_id": "a" * 32})

    async def run() -> list[str]:
        chunks: list[str] = []

        async def connected() -> bool:
            return False

        stream = job_events(queue, [job.job_id], connected, public, interval_s=0.01)
        async for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 2:  # the retry hint, then queued: now the work happens
                lease = queue.reserve("detect", "w", 1.0)
                assert lease is not None
                queue.set_progress(lease, 0.5)
                await asyncio.sleep(0.05)
                queue.complete(lease)
        return chunks

    chunks = asyncio.run(run())
    assert chunks[0] == "retry: 3000\n\n"
    sent = messages(chunks)
    assert sent[0] == ("job", {"job_id": job.job_id, "status": "queued", "progress": 0.0})
    assert sent[-1] == ("end", {})
    states = [m["status"] for e, m in sent if e == "job"]
    assert states[-1] == "done" and len(states) == len({json.dumps(m) for _, m in sent[:-1]})


def test_a_stream_of_unknown_jobs_ends_at_once_and_a_gone_client_stops_it():
    queue = MemoryQueue(Settings(dev=True))

    async def collect(ids: list[str], gone: bool) -> list[str]:
        async def disconnected() -> bool:
            return gone

        return [c async for c in job_events(queue, ids, disconnected, public)]

    assert messages(asyncio.run(collect(["b" * 32], False))) == [("end", {})]
    job = queue.enqueue("detect", {"video_id": "a" * 32})
    assert asyncio.run(collect([job.job_id], True)) == ["retry: 3000\n\n"]
    with pytest.raises(ValueError, match="interval_s"):
        asyncio.run(anext(job_events(queue, [], collect, public, interval_s=0)))  # type: ignore[arg-type]


def test_the_endpoint_streams_for_viewers_and_needs_a_job(client, auth):
    from .test_reviews_api import upload

    video_id = upload(client, auth)
    job_id = client.get(f"/v1/videos/{video_id}", headers=auth(Role.viewer)).json()["job_id"]
    client.app.state.runtime.queue.delete(job_id)  # gone: the stream ends at once
    answer = client.get(f"/v1/jobs/stream?job={job_id}", headers=auth(Role.viewer))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert "event: end" in answer.text
    assert client.get("/v1/jobs/stream", headers=auth(Role.viewer)).status_code == 422
    assert client.get(f"/v1/jobs/stream?job={job_id}").status_code == 401


def test_live_refreshes_of_a_page_are_not_audited(client, auth, tokens, settings):
    from .test_pages import sign_in

    def listed() -> int:
        lines = (settings.data_dir / "audit.log").read_text().splitlines()
        return sum(json.loads(x)["action"] == "list_videos" for x in lines)

    sign_in(client, tokens[Role.viewer])
    before = listed()
    client.get("/videos")
    client.get("/videos", headers={"X-Live-Refresh": "1"})
    client.get("/videos", headers={"X-Live-Refresh": "1"})
    assert listed() == before + 1
