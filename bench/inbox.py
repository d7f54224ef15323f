"""The events inbox and clip export against a real ``atcon serve`` on a ward's worth of data.

A data directory is filled directly (records and results written as the detector
would, no detection): ``--videos`` videos on eight cameras holding ``--events``
events in all, a tenth of them reviewed, and one real H.264 video (keyframes every
second) whose events are cut into clips. Then, one client at a time:

1. ``GET /v1/events`` (first page, 50 rows), the same with a class and a camera
   filter, one row's thumbnail (cached after the first), and the ``/events`` page
   (signed in): p50/p95 over ``--requests`` requests each; baseline ``GET /healthz``
   (the framework's floor) in the same run.
2. Exporting one clip: the first request of an event whose window starts at a
   keyframe (stream copy), of one whose window does not (re-encoded), and of a clip
   already cut (cached); baseline: reading the whole source video over HTTP.

    python bench/inbox.py                        # 200 videos, 2000 events
    python bench/inbox.py --videos 20 --events 200 --requests 30   # quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.core.security import hash_token, new_token  # noqa: E402
from tests import media  # noqa: E402
from tests.service.inbox_data import add_video  # noqa: E402
from worker.pool.reviews import Verdict, frame_pool, review_event  # noqa: E402
from worker.settings import Role, Settings  # noqa: E402
from worker.storage import Storage  # noqa: E402

logger = logging.getLogger("bench.inbox")

CLASSES = ("bed_exit", "seizure", "staff_present")
CAMERAS = tuple(f"icu-{k}" for k in range(1, 9))
FPS = 10
MARGIN_S = 2.0


def real_video(path: Path, seconds: float) -> Path:
    """A 320x240 H.264 MP4 at FPS with a keyframe every second and no B-frames."""
    return media.write_video(
        path, frames=int(seconds * FPS), size=(320, 240), fps=FPS, keyint=FPS, preset="veryfast"
    )


def fill(data: Path, videos: int, events: int, seconds: float) -> dict[str, Any]:
    """The data directory: ``videos`` videos with ``events`` events, a tenth reviewed."""
    storage = Storage(data)
    storage.ensure_layout()
    per_video, extra = divmod(events, videos)
    t0 = time.time() - 7 * 86_400
    ids = []
    for v in range(videos):
        n = per_video + (1 if v < extra else 0)
        listed = [
            (CLASSES[(v + k) % 3], 5.0 * k + 1.0, 5.0 * k + 3.0, ((v * 7 + k * 13) % 100) / 100)
            for k in range(n)
        ]
        ids.append(
            add_video(
                storage,
                listed,
                camera=CAMERAS[v % len(CAMERAS)],
                created_at=t0 + v * 3000.0,
                model_version="v0001" if v % 4 else "v0002",
                filename=f"night-{v:03d}.mp4",
            )
        )
    settings = Settings(data_dir=data)
    reviewed = 0
    for v, video_id in enumerate(ids[: max(1, videos // 10)]):
        events_doc = storage.read_events(video_id) or {}
        pool = frame_pool(storage, settings, events_doc)
        for event in events_doc.get("events", []):
            verdict = Verdict.confirmed if (v + reviewed) % 2 else Verdict.false_positive
            review_event(storage, pool, video_id, event["id"], verdict, "bench")
            reviewed += 1
    source = real_video(data.parent / "real.mp4", seconds)
    clip_video = add_video(
        storage,
        [("seizure", 10.0, 14.0, 0.8), ("bed_exit", 20.3, 24.1, 0.4)],
        camera="icu-1",
        created_at=t0 - 86_400,
        source=source,
        filename="real.mp4",
    )
    return {"video_ids": ids, "reviewed": reviewed, "clip_video": clip_video}


def timed(get: Callable[[], httpx.Response], n: int) -> list[float]:
    """Milliseconds of ``n`` requests, one at a time, after two warm-ups."""
    for _ in range(2):
        get().raise_for_status()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        answer = get()
        out.append((time.perf_counter() - start) * 1000)
        answer.raise_for_status()
    return out


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": statistics.median(ordered), "p95_ms": p95, "n": len(ordered)}


@contextmanager
def serve(env: dict[str, str], log: Path) -> Iterator[str]:
    """``atcon serve`` on a free port with ``env`` (no other ATCON_*); yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ATCON_")}
    clean.update(env, PYTHONPATH=str(REPO))
    command = ["service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *command], env=clean, cwd=REPO, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"atcon serve did not start:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def sign_in(client: httpx.Client, token: str) -> None:
    form = client.get("/signin")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None, "the sign-in page has no CSRF field"
    client.post("/signin", data={"csrf_token": csrf[1], "token": token, "next": "/events"})


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-inbox-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        filled = fill(root / "data", args.videos, args.events, args.clip_seconds)
        fill_s = time.perf_counter() - started
        viewer, _ = new_token("bench", Role.viewer)
        env = {
            "ATCON_DATA_DIR": str(root / "data"),
            "ATCON_API_TOKENS": f"bench:viewer:{hash_token(viewer)}",
            "ATCON_EMBEDDED_WORKERS": "0",
            "ATCON_CLIP_MARGIN_S": str(MARGIN_S),
        }
        with serve(env, root / "server.log") as url:
            headers = {"Authorization": f"Bearer {viewer}"}
            with httpx.Client(base_url=url, headers=headers, timeout=120) as api:
                total = api.get("/v1/events", params={"limit": 1}).json()["total"]
                n = args.requests
                figures = {
                    "healthz (baseline)": timed(lambda: api.get("/healthz"), n),
                    "GET /v1/events": timed(lambda: api.get("/v1/events"), n),
                    "GET /v1/events?label&camera": timed(
                        lambda: api.get(
                            "/v1/events", params={"label": "seizure", "camera": "icu-3"}
                        ),
                        n,
                    ),
                }
                first_row = api.get("/v1/events", params={"limit": 1}).json()["events"][0]
                figures["thumbnail (cached)"] = timed(
                    lambda: api.get(first_row["urls"]["thumbnail"]), n
                )
                clip_base = f"/v1/videos/{filled['clip_video']}/events"
                clips: dict[str, Any] = {}
                for name, event_id in (
                    ("first, stream copy", "seizure-0"),
                    ("first, re-encoded", "bed_exit-0"),
                ):
                    start = time.perf_counter()
                    answer = api.get(f"{clip_base}/{event_id}/clip.mp4")
                    answer.raise_for_status()
                    clips[name] = {
                        "ms": (time.perf_counter() - start) * 1000,
                        "method": answer.headers["x-clip-method"],
                        "bytes": len(answer.content),
                    }
                cached = timed(lambda: api.get(f"{clip_base}/seizure-0/clip.mp4"), 10)
                clips["cached"] = summary(cached)
                source = timed(lambda: api.get(f"/v1/videos/{filled['clip_video']}/source"), 10)
                clips["whole source (baseline)"] = summary(source)
            with httpx.Client(base_url=url, timeout=120) as browser:
                sign_in(browser, viewer)
                figures["/events page"] = timed(lambda: browser.get("/events"), n)
    result = {
        "videos": args.videos + 1,
        "events": total,
        "reviewed": filled["reviewed"],
        "fill_s": fill_s,
        "requests": {name: summary(ms) for name, ms in figures.items()},
        "clips": clips,
        "clip_margin_s": MARGIN_S,
    }
    floor = result["requests"]["healthz (baseline)"]["p95_ms"]
    for stats in result["requests"].values():
        stats["p95_over_healthz"] = stats["p95_ms"] / floor if floor else float("nan")
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['videos']} videos, {result['events']} events ({result['reviewed']} reviewed); "
        f"filled in {result['fill_s']:.1f} s",
        "",
        f"{'request':32} {'p50 ms':>8} {'p95 ms':>8} {'p95/healthz':>12}",
    ]
    for name, s in result["requests"].items():
        lines.append(
            f"{name:32} {s['p50_ms']:8.1f} {s['p95_ms']:8.1f} {s['p95_over_healthz']:12.1f}"
        )
    lines += ["", f"clip export (margin {result['clip_margin_s']} s)"]
    for name, c in result["clips"].items():
        if "ms" in c:
            lines.append(f"  {name:30} {c['ms']:8.1f} ms  ({c['method']}, {c['bytes']} bytes)")
        else:
            lines.append(f"  {name:30} {c['p50_ms']:8.1f} ms p50, {c['p95_ms']:.1f} ms p95")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per figure")
    parser.add_argument("--clip-seconds", type=float, default=60.0, help="the real video's length")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "inbox.json")
    args = parser.parse_args(argv)
    if args.videos < 1 or args.events < args.videos:
        parser.error("--videos must be at least 1 and --events at least --videos")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("%s\n\nwritten to %s", table(result), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
