"""A hostile run against a real ``atcon serve``, a real Redis and real worker processes.

::

    python -m tests.service.hostile_run --out DIR [--quick] [--redis-url URL]

What a hospital IT tester would try, tallied:

1. bad inputs over HTTP (bad ids, traversal, bad JSON, wrong types, bad tokens and
   roles, bad zips, bad videos, Range abuse, odd methods and headers): each answer is
   *refused* (4xx with a problem+json sentence), *refused without a sentence*,
   *server error* (5xx; must be 0) or *accepted*;
2. 1 GiB bodies without a token to each kind of route (and over-limit bodies with a
   token): the bytes the server took before refusing, and the API's peak resident
   memory (psutil) against its memory before;
3. detect workers killed with ``kill -9`` twice and Redis flushed once while videos are
   processed: videos whose job is lost (no results in the end), jobs completed more
   than once, and pool frames added twice for one (video, time);
4. a burst of wrong tokens (the throttle's 429), last, since it locks the address.

Writes ``hostile-run.json`` and ``hostile-run.md`` into DIR. The Redis database of
``--redis-url`` (default: database 13 of ``ATCON_TEST_REDIS_PORT``, else 6379) is
flushed. ``--quick``: a few inputs of each kind, 64 MiB bodies, no kills (the pytest
``tests/service/test_hostile_run.py`` runs it so that it cannot rot).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from service.core.security import hash_token, new_token
from tests import media
from tests.processes import Process, Server, wait_for
from tests.redis_helpers import REDIS_PORT
from tests.service.hostile import GIB, multipart, send, zeros
from worker.pool.frames import FramePool
from worker.queue.redis_streams import RedisQueue
from worker.settings import Role, Settings

logger = logging.getLogger("hostile_run")

MIB = 1 << 20
ZERO_ID = "0" * 32
PROBLEM = "application/problem+json"


@dataclass
class Case:
    category: str
    method: str
    path: str
    role: str | None = None  # a role's token, "bad" (a wrong one) or None (no token)
    body: bytes | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Tally:
    tried: int = 0
    refused: int = 0  # 4xx with a sentence
    refused_without_sentence: int = 0
    server_errors: int = 0
    accepted: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, case: Case, status: int | None, detail: str | None) -> str:
        """Count one answer; return its kind."""
        self.tried += 1
        if status is None or status >= 500:
            self.server_errors += 1
            kind = "server_error"
        elif status >= 400 and detail and len(detail.split()) >= 3:
            self.refused += 1
            kind = "refused"
        elif status >= 400:
            self.refused_without_sentence += 1
            kind = "refused_without_sentence"
        else:
            self.accepted += 1
            kind = "accepted"
        if kind != "refused" and len(self.examples) < 40:
            self.examples.append(
                {
                    "case": f"{case.method} {case.path[:120]}",
                    "headers": {k: v[:60] for k, v in case.headers.items()},
                    "category": case.category,
                    "status": status,
                    "kind": kind,
                }
            )
        return kind


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _zip_declaring(size: int) -> bytes:
    """A one-entry zip whose directory declares ``size`` decompressed bytes (a bomb's
    claim; the server must refuse it from the directory alone)."""
    data = bytearray(_zip({"bomb.png": b"x"}))
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = size.to_bytes(4, "little")
    return bytes(data)


def _uploads(
    category: str, path: str, content_type: str, files: Iterable[tuple[str, bytes]]
) -> list[Case]:
    """One operator upload to ``path`` for each ``(file name, bytes)``."""
    return [
        Case(category, "POST", path, "operator", files={"file": (name, data, content_type)})
        for name, data in files
    ]


def bad_inputs(video_id: str, frame_id: str, quick: bool) -> list[Case]:
    """The bad requests, by category (with ``quick``, the first few of each)."""
    ids = ["abc", "0" * 31, "G" * 32, "0" * 33, "%00", "' OR '1'='1", "%E2%80%AE" * 4, "-1"]
    cases: list[Case] = []
    for bad in ids:
        for path in (
            f"/v1/videos/{bad}",
            f"/v1/videos/{bad}/events",
            f"/v1/jobs/{bad}",
            f"/v1/frames/{bad}/image.png",
            f"/v1/models/{bad}",
        ):
            cases.append(Case("bad ids", "GET", path, "viewer"))
        cases.append(Case("bad ids", "DELETE", f"/v1/videos/{bad}", "admin"))
    for unknown in (f"/v1/videos/{ZERO_ID}", f"/v1/jobs/{ZERO_ID}", f"/v1/frames/{ZERO_ID}"):
        cases.append(Case("unknown ids", "GET", unknown, "viewer"))
    cases.append(Case("unknown ids", "DELETE", f"/v1/videos/{ZERO_ID}", "admin"))
    for path in (
        "/v1/videos/..%2f..%2f..%2fetc%2fpasswd",
        "/v1/videos/../../etc/passwd",
        "/static/..%2f..%2fpyproject.toml",
        "/static/%2e%2e/%2e%2e/service/main.py",
        f"/v1/videos/{video_id}/events/..%2f..%2fevents.json/maps/gradcam.png",
        f"/v1/videos/{video_id}/events/e0/maps/..%2fsource.png",
        "/v1/models/v0001/..%2f..%2fsession.key",
        f"/v1/frames/{frame_id}/maps/..%2f..%2f..%2fsession.key",
        "/%2e%2e/%2e%2e/etc/passwd",
    ):
        cases.append(Case("traversal", "GET", path, "admin"))
    labels = f"/v1/frames/{frame_id}/labels"
    for body in (
        b"{",
        b"[]",
        b"null",
        b'{"labels": "staff"}',
        b'{"labels": [1, 2]}',
        b'{"labels": ["seizure"]}',
        b'{"labels": [], "extra": 1}',
        b'{"labels": ' + b"[" * 5000,
        '{"labels": ["\u202estaff"]}'.encode(),
        b"\xff\xfe\x00",
    ):
        cases.append(
            Case(
                "bad JSON",
                "PUT",
                labels,
                "operator",
                body=body,
                headers={"Content-Type": "application/json"},
            )
        )
    for body in (
        b'{"steps": -1}',
        b'{"steps": "many"}',
        b'{"steps": 1e12}',
        b'{"steps": 1000000}',
        b'{"steps": 5, "epochs": 2}',
        b'{"method": "magic"}',
        b'{"method": "tent+atcon"}',
        b'{"camera": "../ward"}',
        b'{"video_ids": ["x"]}',
        b'{"lr": 0}',
        b'{"since": "yesterday"}',
        b'{"batch_size": 100000}',
        b"not json",
    ):
        cases.append(
            Case(
                "bad JSON",
                "POST",
                "/v1/finetune",
                "admin",
                body=body,
                headers={"Content-Type": "application/json"},
            )
        )
    review = f"/v1/videos/{video_id}/events/e0/review"
    for body in (b'{"verdict": "maybe"}', b"{}", b'{"verdict": 1}'):
        cases.append(
            Case(
                "bad JSON",
                "PUT",
                review,
                "operator",
                body=body,
                headers={"Content-Type": "application/json"},
            )
        )
    for body in (b'{"cameras": "icu"}', b'{"cameras": ["../x"]}', b'{"reason": 5}'):
        cases.append(
            Case(
                "bad JSON",
                "POST",
                "/v1/models/v0099/activate",
                "admin",
                body=body,
                headers={"Content-Type": "application/json"},
            )
        )
    for query in ("limit=-1", "limit=abc", "limit=100000000000000000000", "offset=-5"):
        cases.append(Case("wrong types", "GET", f"/v1/videos?{query}", "viewer"))
    for query in ("limit=0", "limit=201", "camera=../x", "camera=" + "a" * 100):
        cases.append(Case("wrong types", "GET", f"/v1/frames/review?{query}", "viewer"))
    cases.append(Case("wrong types", "GET", "/v1/dead-letters?kind=nonsense", "admin"))
    cases.append(Case("wrong types", "DELETE", f"/v1/videos/{video_id}?withdraw=perhaps", "admin"))
    for path, method in (
        ("/v1/videos", "GET"),
        ("/v1/frames/review", "GET"),
        ("/v1/finetune", "POST"),
        (f"/v1/videos/{video_id}", "DELETE"),
        ("/metrics", "GET"),
        ("/v1/models", "GET"),
    ):
        cases.append(Case("no or bad token", method, path, None))
        cases.append(Case("no or bad token", method, path, "bad"))
    for header in ("Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer " + "x" * 5000, "bearer  a b"):
        cases.append(
            Case("no or bad token", "GET", "/v1/videos", None, headers={"Authorization": header})
        )
    cases.append(Case("no or bad token", "GET", "/v1/videos?token=atcon_abc", None))
    cases.append(Case("no or bad token", "GET", "/v1/videos?access_token=secret", "viewer"))
    for method, path, role in (
        ("DELETE", f"/v1/videos/{video_id}", "operator"),
        ("POST", "/v1/finetune", "operator"),
        ("GET", "/v1/dead-letters", "viewer"),
        ("GET", "/metrics", "viewer"),
        ("POST", "/v1/models/v0001/activate", "operator"),
    ):
        cases.append(
            Case(
                "wrong role",
                method,
                path,
                role,
                body=b"{}",
                headers={"Content-Type": "application/json"},
            )
        )
    zips = {
        "empty.zip": _zip({}),
        "garbage.zip": b"PK\x03\x04" + os.urandom(2000),
        "truncated.zip": _zip({"a.png": media.png_bytes()})[:-30],
        "bomb.zip": _zip_declaring(4000 * MIB),
        "many.zip": _zip({f"{i}.png": b"" for i in range(60)}),
        "dirs-only.zip": _zip({"a/": b"", "b/": b""}),
    }
    # directory fine: 202, then the import job fails with the reason
    cases += _uploads(
        "bad zips (import job)",
        "/v1/frames",
        "application/zip",
        {
            "no-image.zip": _zip({"notes.txt": b"x", "scan.pdf": media.pdf_bytes()}),
            "escape.zip": _zip({"../../etc/x.png": media.png_bytes(), "/abs.png": b"x"}),
            "fake.zip": _zip({"a.png": b"not an image", "b.jpg": b"\xff\xd8 no"}),
        }.items(),
    )
    cases += _uploads("bad zips", "/v1/frames", "application/zip", zips.items())
    cases += _uploads(
        "bad frames",
        "/v1/frames",
        "image/png",
        [
            ("notes.txt", media.text_bytes()),
            ("scan.pdf", media.pdf_bytes()),
            ("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 50),
            ("empty.png", b""),
        ],
    )
    cases += _uploads(
        "bad videos",
        "/v1/videos",
        "video/mp4",
        [
            ("notes.mp4", media.text_bytes()),
            ("scan.mp4", media.pdf_bytes()),
            ("photo.mp4", media.png_bytes()),
            ("cut.mp4", media.truncated_mp4_bytes()),
            ("sound.mp4", media.audio_only_bytes()),
            ("empty.mp4", b""),
            ("junk.mkv", os.urandom(4096)),
        ],
    )
    cases.append(
        Case(
            "bad videos",
            "POST",
            "/v1/videos",
            "operator",
            body=b"no multipart",
            headers={"Content-Type": "text/plain"},
        )
    )
    cases.append(
        Case(
            "bad videos",
            "POST",
            "/v1/videos",
            "operator",
            files={
                "camera": ("c", b"../../x", "text/plain"),
                "file": ("w.mp4", media.video_bytes(frames=6), "video/mp4"),
            },
        )
    )
    source = f"/v1/videos/{video_id}/source"
    for value in (
        "bytes=999999999-",
        "bytes=5-2",
        "bytes=abc",
        "bytes=-0",
        "items=0-1",
        "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 4000, 2)),
        "bytes=0-1,0-1,0-1,0-1" * 50,
    ):
        cases.append(Case("Range abuse", "GET", source, "viewer", headers={"Range": value}))
    for method, path in (
        ("PATCH", "/v1/videos"),
        ("TRACE", "/v1/videos"),
        ("PUT", "/v1/videos"),
        ("POST", f"/v1/videos/{video_id}/events"),
        ("DELETE", "/v1/frames/review"),
    ):
        cases.append(Case("methods", method, path, "admin"))
    cases.append(Case("headers", "GET", "/v1/videos", "viewer", headers={"X-Big": "x" * 65536}))
    if quick:
        seen: Counter[str] = Counter()
        kept = []
        for case in cases:
            seen[case.category] += 1
            if seen[case.category] <= 2:
                kept.append(case)
        return kept
    return cases


class PeakMemory:
    """The highest resident memory (psutil) of a process while the block runs."""

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class HostileRun:
    """The stack under attack and the tallies."""

    def __init__(self, work: Path, redis_url: str, quick: bool) -> None:
        from tests.service.test_health import tiny_checkpoint

        self.work = work
        self.quick = quick
        self.redis_url = redis_url
        self.tokens = {role.value: new_token(role.value, role)[0] for role in Role}
        entries = ",".join(f"{r}:{r}:{hash_token(t)}" for r, t in self.tokens.items())
        self.data = work / "data"
        self.env = {
            "ATCON_DATA_DIR": str(self.data),
            "ATCON_API_TOKENS": entries,
            "ATCON_REDIS_URL": redis_url,
            "ATCON_CHECKPOINT": str(
                tiny_checkpoint(work / "model.pt", arch="resnet18", thresholds=[0.01, 0.01])
            ),
            "ATCON_RECONCILE_INTERVAL_S": "1",
            "ATCON_VISIBILITY_TIMEOUT_S": "4",
            "ATCON_HEARTBEAT_INTERVAL_S": "0.5",
            "ATCON_RETRY_BACKOFF_S": "0.5",
            "ATCON_POOL_FRAMES_PER_MINUTE": "60",
            "ATCON_MAX_FRAME_UPLOAD_BYTES": str(16 * MIB),
            "ATCON_MAX_UPLOAD_BYTES": str(32 * MIB),
            "ATCON_ZIP_MAX_ENTRIES": "50",
            "ATCON_ZIP_MAX_TOTAL_BYTES": str(256 * MIB),
            "TMPDIR": str(work / "tmpdir"),
        }
        (work / "tmpdir").mkdir(parents=True, exist_ok=True)
        self.server = Server(self.env, work / "api.log")
        self.workers: dict[str, Process] = {}
        self.tally = Tally()
        self.by_category: dict[str, Counter[str]] = {}
        self.report: dict[str, Any] = {"quick": quick}

    def headers(self, role: str | None) -> dict[str, str]:
        if role is None:
            return {}
        token = "atcon_" + "w" * 43 if role == "bad" else self.tokens[role]
        return {"Authorization": f"Bearer {token}"}

    def start_worker(self, kind: str, name: str) -> Process:
        args = ["service.cli", "worker", kind, "--name", name]
        process = Process(args, self.env, self.work / f"{name}.log").start()
        self.workers[name] = process
        return process

    def __enter__(self) -> HostileRun:
        redis.Redis.from_url(self.redis_url).flushdb()
        self.server.start()
        self.start_worker("detect", "detect-1")
        self.start_worker("import", "import-1")
        if not self.quick:
            self.start_worker("detect", "detect-2")
        self.http = httpx.Client(base_url=self.server.url, timeout=120)
        settings = Settings(redis_url=self.redis_url, data_dir=self.data, dev=True)
        self.queue = RedisQueue(settings)
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.queue.close()
        for process in self.workers.values():
            process.stop()
        self.server.stop()

    # -- videos --------------------------------------------------------------------------

    def upload(self, frames: int = 24, fps: int = 6) -> dict[str, Any]:
        video = media.video_bytes(frames=frames, size=(160, 120), fps=fps)
        answer = self.http.post(
            "/v1/videos",
            files={"file": ("w.mp4", video, "video/mp4")},
            headers=self.headers("operator"),
        )
        answer.raise_for_status()
        return dict(answer.json())

    def job(self, job_id: str) -> dict[str, Any] | None:
        answer = self.http.get(f"/v1/jobs/{job_id}", headers=self.headers("viewer"))
        return answer.json() if answer.status_code == 200 else None

    def has_results(self, video_id: str) -> bool:
        return (self.data / "results" / video_id / "events.json").is_file()

    # -- 1. bad inputs -------------------------------------------------------------------

    def bad_inputs(self) -> None:
        accepted = self.upload()
        wait_for(
            lambda: (j := self.job(accepted["job_id"])) and j["status"] == "done",
            180,
            "the first video processed",
        )
        video_id = accepted["video_id"]
        frame_id = FramePool(self.data / "frames").records(video_ids=[video_id])[0].frame_id
        for case in bad_inputs(video_id, frame_id, self.quick):
            headers = {**self.headers(case.role), **case.headers}
            try:
                answer = self.http.request(
                    case.method, case.path, headers=headers, content=case.body, files=case.files
                )
            except httpx.HTTPError as exc:  # the server dropped the connection
                logger.warning("%s %s: %s", case.method, case.path[:80], exc)
                status, detail = None, None
            else:
                status = answer.status_code
                kind = answer.headers.get("content-type", "")
                detail = answer.json().get("detail") if kind.startswith(PROBLEM) else None
            outcome = self.tally.add(case, status, detail if isinstance(detail, str) else None)
            self.by_category.setdefault(case.category, Counter())[outcome] += 1

        def imported() -> list[Any] | None:
            jobs = self._jobs("import")
            return jobs if all(j.status in ("done", "failed") for j in jobs) else None

        imports = wait_for(imported, 120, "the import jobs")
        self.report["import_jobs"] = [
            {"status": str(j.status), "error": j.error, "result": j.result} for j in imports
        ]

    def _jobs(self, kind: str) -> list[Any]:
        return self.queue.jobs(kind, limit=1000)

    # -- 2. oversized bodies -------------------------------------------------------------

    def oversized(self) -> None:
        size = 64 * MIB if self.quick else GIB
        content_types = {
            "multipart": "multipart/form-data; boundary=hostileboundary",
            "json": "application/json",
            "form": "application/x-www-form-urlencoded",
        }
        routes = [
            ("POST", "/v1/frames", "multipart"),
            ("POST", "/v1/videos", "multipart"),
            ("POST", "/v1/finetune", "json"),
            ("PUT", f"/v1/frames/{ZERO_ID}/labels", "json"),
            ("POST", "/signin", "form"),
        ]
        # each route without a token, then the upload and fine-tune routes with the role
        # that may use them: the cap holds before and after authentication
        allowed = {"/v1/frames": "operator", "/v1/videos": "operator", "/v1/finetune": "admin"}
        cases = [(method, path, kind, None) for method, path, kind in routes] + [
            (method, path, kind, allowed[path]) for method, path, kind in routes if path in allowed
        ]
        rows = []
        pid = self.server.pid
        for method, path, kind, role in cases:
            headers = {"Content-Type": content_types[kind]}
            for chunked in (True, False):
                # a non-empty first piece: an empty chunk would end a chunked body
                prefix = b'{"labels": ["' if kind == "json" else b"token="
                body = multipart(size) if kind == "multipart" else zeros(size, prefix=prefix)
                with PeakMemory(pid) as memory:
                    answer = send(
                        self.server.port,
                        method,
                        path,
                        body,
                        headers={**headers, **self.headers(role)},
                        content_length=None if chunked else size,
                    )
                head = answer.head.decode(errors="replace")
                detail = re.search(r'"detail":"([^"]+)"', head)
                case = Case("oversized bodies", method, path, role)
                outcome = self.tally.add(case, answer.status, detail.group(1) if detail else None)
                self.by_category.setdefault(case.category, Counter())[outcome] += 1
                rows.append(
                    {
                        "route": f"{method} {path}",
                        "token": role or "none",
                        "framing": "chunked" if chunked else "Content-Length",
                        "status": answer.status,
                        "body_bytes": size,
                        "bytes_taken": answer.sent,
                        "rss_before_mib": round(memory.before / MIB, 1),
                        "rss_peak_mib": round(memory.peak / MIB, 1),
                    }
                )
        self.report["oversized"] = rows

    # -- 3. kill -9 and a Redis flush ----------------------------------------------------

    def crashes(self) -> None:
        uploads = [self.upload(frames=120, fps=4) for _ in range(6)]  # 30 s each
        video_ids = [u["video_id"] for u in uploads]
        events: list[str] = []

        def busy() -> tuple[dict[str, Any], str] | None:
            """A job part-way through and its worker, alive (not one killed before)."""
            for upload in uploads:
                job = self.job(upload["job_id"])
                if job and job["status"] == "running" and 0.05 <= job["progress"] <= 0.95:
                    name = self.queue.get(job["job_id"]).worker
                    if name in self.workers and self.workers[name].alive():
                        return job, name
            return None

        for round_ in (1, 2):
            _, victim = wait_for(busy, 300, "a detect job part-way through", poll_s=0.05)
            self.workers[victim].kill9()
            events.append(f"kill -9 {victim}")
            self.start_worker("detect", f"detect-{round_ + 2}")
        wait_for(
            lambda: busy() or all(self.has_results(v) for v in video_ids),
            300,
            "a job running before the flush",
        )
        redis.Redis.from_url(self.redis_url).flushdb()
        events.append("FLUSHDB")

        def finished(upload: dict[str, Any]) -> bool:
            """Results, and the job done (or its record gone with the flush after it had
            published: the reconciler requeues uploads without results only)."""
            if not self.has_results(upload["video_id"]):
                return False
            job = self.job(upload["job_id"])
            return job is None or job["status"] in ("done", "failed")

        wait_for(lambda: all(finished(u) for u in uploads), 600, "every job", poll_s=1.0)
        records_lost = sum(1 for u in uploads if self.job(u["job_id"]) is None)
        done = Counter()
        for process in self.workers.values():
            for job_id in re.findall(r"job ([0-9a-f]{32}) done in", process.output()):
                done[job_id] += 1
        job_ids = {u["job_id"] for u in uploads}
        pool = FramePool(self.data / "frames").records(video_ids=video_ids)
        moments = Counter((r.video_id, r.time_s) for r in pool)
        self.report["crashes"] = {
            "videos": len(uploads),
            "events": events,
            "videos_lost": sum(1 for v in video_ids if not self.has_results(v)),
            # the flush took these jobs' records after their results were published:
            # the video says done, /v1/jobs/{id} answers 404
            "job_records_lost_after_results": records_lost,
            "jobs_completed_more_than_once": sum(1 for j in job_ids if done[j] > 1),
            "job_completions": {j[:8]: done[j] for j in sorted(job_ids)},
            "results_folders": sum(1 for v in video_ids if (self.data / "results" / v).is_dir()),
            "pool_frames": len(pool),
            "pool_frame_duplicates": sum(n - 1 for n in moments.values() if n > 1),
        }

    # -- 4. the throttle -----------------------------------------------------------------

    def throttle(self) -> None:
        statuses = Counter()
        for _ in range(40):  # past ATCON_AUTH_FAILURE_LIMIT (30) with the earlier ones
            case = Case("throttle", "GET", "/v1/videos", "bad")
            answer = self.http.get(case.path, headers=self.headers("bad"))
            kind = answer.headers.get("content-type", "")
            detail = answer.json().get("detail") if kind.startswith(PROBLEM) else None
            outcome = self.tally.add(case, answer.status_code, detail)
            self.by_category.setdefault(case.category, Counter())[outcome] += 1
            statuses[answer.status_code] += 1
        self.report["throttle"] = {int(k): v for k, v in statuses.items()}

    def summary(self) -> dict[str, Any]:
        return {
            **self.report,
            "tally": {k: v for k, v in asdict(self.tally).items() if k != "examples"},
            "by_category": {k: dict(v) for k, v in self.by_category.items()},
            "not_refused_with_a_sentence": self.tally.examples,
        }


def markdown(summary: dict[str, Any]) -> str:
    tally = summary["tally"]
    lines = [
        "# Hostile run",
        "",
        f"Written by `{summary.get('command')}` on {summary.get('when')} against a real "
        "`atcon serve`, Redis and worker processes (tests/service/hostile_run.py).",
        "",
        f"Bad inputs tried: **{tally['tried']}**; refused with a 4xx and a sentence: "
        f"**{tally['refused']}**; refused without a sentence: {tally['refused_without_sentence']}; "
        f"5xx: **{tally['server_errors']}**; accepted: {tally['accepted']}.",
        "",
        "| Category | refused | without sentence | 5xx | accepted |",
        "| --- | --- | --- | --- | --- |",
    ]
    for category, counts in summary["by_category"].items():
        lines.append(
            f"| {category} | {counts.get('refused', 0)} | "
            f"{counts.get('refused_without_sentence', 0)} | {counts.get('server_error', 0)} | "
            f"{counts.get('accepted', 0)} |"
        )
    lines += [
        "",
        "## Oversized bodies",
        "",
        "| Route | token | framing | status | body | taken before refusal "
        "| API RSS before -> peak |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in summary.get("oversized", []):
        lines.append(
            f"| {row['route']} | {row['token']} | {row['framing']} | {row['status']} | "
            f"{row['body_bytes'] / MIB:.0f} MiB | {row['bytes_taken'] / MIB:.2f} MiB | "
            f"{row['rss_before_mib']} -> {row['rss_peak_mib']} MiB |"
        )
    crashes = summary.get("crashes")
    if crashes:
        lines += [
            "",
            "## kill -9 and a Redis flush",
            "",
            f"{crashes['videos']} videos; {', '.join(crashes['events'])}. Videos lost: "
            f"**{crashes['videos_lost']}**; jobs completed more than once: "
            f"**{crashes['jobs_completed_more_than_once']}** (a job run again after the "
            "flush publishes the same results once more); results folders: "
            f"{crashes['results_folders']}; pool frames: {crashes['pool_frames']}, "
            f"duplicated (video, time): **{crashes['pool_frame_duplicates']}**; job records "
            f"taken by the flush after their video's results were published (the video "
            f"says done, its job URL 404): {crashes['job_records_lost_after_results']}.",
        ]
    imports = Counter(j["status"] for j in summary.get("import_jobs", []))
    lines += [
        "",
        f"Import jobs of zips whose directory passed: {dict(imports)}.",
        f"Wrong-token burst: {summary.get('throttle')}.",
        "",
    ]
    return "\n".join(lines)


def run(out: Path, *, redis_url: str, quick: bool = False, command: str = "") -> dict[str, Any]:
    """The whole run (see the module docstring); returns the summary it wrote."""
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="hostile-") as work,
        HostileRun(Path(work), redis_url, quick) as hostile,
    ):
        hostile.bad_inputs()
        hostile.oversized()
        if not quick:
            hostile.crashes()
        hostile.throttle()
        summary = {
            "command": command or "tests.service.hostile_run.run()",
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            **hostile.summary(),
        }
        for name, process in {"api": hostile.server, **hostile.workers}.items():
            (out / f"{name}.log").write_text(process.output()[-200_000:])
    (out / "hostile-run.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "hostile-run.md").write_text(markdown(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and markdown")
    parser.add_argument("--quick", action="store_true", help="a small subset, no kills")
    parser.add_argument(
        "--redis-url",
        default=f"redis://127.0.0.1:{REDIS_PORT}/13",
        help="a Redis database to use (it is flushed)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    command = "python -m tests.service.hostile_run " + " ".join(argv or sys.argv[1:])
    summary = run(args.out, redis_url=args.redis_url, quick=args.quick, command=command)
    logger.info("%s", markdown(summary))
    return 1 if summary["tally"]["server_errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
