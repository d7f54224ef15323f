"""API benchmark against a real uvicorn process (``atcon serve``), embedded default.

Three figures, each with a baseline from the same run:

1. ``GET /v1/videos/{id}/events`` latency p50/p99 at ``--concurrency`` clients
   (baseline: ``GET /healthz`` at the same concurrency, the framework's floor).
   Target: p99 under 50 ms on the 2-core CPU.
2. Upload throughput of a ``--upload-mb`` file against copying the same bytes to a
   file on the same disk (1 MiB blocks, fsync at the end, as the server does).
   Target: ratio at least 0.7.
3. The server's resident memory while that upload streams in: peak minus idle.
   Target: flat, under 100 MB above idle (run with ``--upload-mb 2048`` for the
   issue's 2 GB figure).

The upload is a valid small MP4 followed by an MP4 ``free`` box of padding, so the
server's probe accepts it. The client runs on the same machine and competes for CPU.

    python bench/api.py                                 # full: 2000 GETs, 2 GB upload
    python bench/api.py --requests 300 --upload-mb 64   # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.core.security import new_token  # noqa: E402
from worker.settings import Role  # noqa: E402
from worker.storage import Storage, VideoRecord, new_id  # noqa: E402

CHUNK = 1 << 20


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def small_mp4(path: Path) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            frame = np.full((48, 64, 3), i * 10, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def padded_video(path: Path, size: int) -> None:
    """A valid MP4 of exactly ``size`` bytes: a small video, then a ``free`` box."""
    small_mp4(path)
    head = path.stat().st_size
    pad = size - head
    if pad < 16:
        raise ValueError(f"size must exceed {head + 16} bytes")
    with open(path, "ab") as fh:
        fh.write(struct.pack(">I4sQ", 1, b"free", pad))  # 64-bit box size
        remaining = pad - 16
        block = os.urandom(CHUNK)
        while remaining > 0:
            fh.write(block[: min(CHUNK, remaining)])
            remaining -= min(CHUNK, remaining)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            self._done.wait(0.02)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


async def _one_connection(
    port: int, request: bytes, count: int, times: list[float], statuses: list[int]
) -> None:
    """Keep-alive HTTP/1.1 requests on one connection: a client as light as possible,
    so that on a shared 2-core machine the figure is the server's, not the client's."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            start = time.perf_counter()
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            times.append(time.perf_counter() - start)
            statuses.append(status)
    finally:
        writer.close()


async def latencies(
    port: int, path: str, headers: dict[str, str], total: int, concurrency: int
) -> list[float]:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    await _one_connection(port, request, 5, [], [])  # warm up (and fill the cache)
    times: list[float] = []
    statuses: list[int] = []
    per_client = [total // concurrency + (i < total % concurrency) for i in range(concurrency)]
    await asyncio.gather(*(_one_connection(port, request, n, times, statuses) for n in per_client))
    if set(statuses) != {200}:
        raise RuntimeError(f"{path} answered {sorted(set(statuses))}")
    return times


def multipart_stream(path: Path, boundary: str) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="bench.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            yield block
    yield f"\r\n--{boundary}--\r\n".encode()


def copy_to_disk(source: Path, target: Path) -> float:
    start = time.perf_counter()
    with open(source, "rb") as src, open(target, "wb") as dst:
        while block := src.read(CHUNK):
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())
    return time.perf_counter() - start


def seed_results(storage: Storage, events: int) -> str:
    received = storage.new_upload_file()
    small_mp4(received)
    record = VideoRecord(video_id=new_id(), job_id=new_id(), size_bytes=received.stat().st_size)
    storage.save_video(record, received)
    staging = storage.staging_dir(record.video_id) / "results"
    staging.mkdir()
    listed = [
        {
            "id": f"e{i}",
            "label": "bed_exit",
            "start_s": 10.0 * i,
            "end_s": 10.0 * i + 4,
            "peak_s": 10.0 * i + 2,
            "score": 0.9,
            "mean_score": 0.8,
            "attention_consistency": 0.7,
            "maps": {k: f"maps/e{i}_{k}.png" for k in ("overlay", "gradcam", "mask")},
        }
        for i in range(events)
    ]
    content = {
        "schema_version": 1,
        "video_id": record.video_id,
        "model": {"version": "bench"},
        "events": listed,
    }
    (staging / "events.json").write_text(json.dumps(content))
    storage.publish_results(record.video_id, staging)
    return record.video_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--events", type=int, default=50, help="events in the events.json")
    parser.add_argument("--upload-mb", type=int, default=2048)
    parser.add_argument("--work-dir", type=Path, default=REPO / "bench" / "out" / "api-work")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "api.json")
    args = parser.parse_args(argv)

    work = args.work_dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data_dir = work / "data"
    storage = Storage(data_dir)
    storage.ensure_layout()
    token, entry = new_token("bench", Role.admin)
    video_id = seed_results(storage, args.events)
    upload_file = work / "upload.mp4"
    padded_video(upload_file, args.upload_mb << 20)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATCON_")}
    env.update(
        ATCON_DATA_DIR=str(data_dir),
        ATCON_API_TOKENS=str(entry),
        ATCON_EMBEDDED_WORKERS="0",
        ATCON_MAX_UPLOAD_BYTES=str((args.upload_mb + 1) << 20),
        PYTHONPATH=str(REPO),
    )
    log = open(work / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    results: dict[str, Any] = {}
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not start; see " + str(work / "server.log"))

        events_path = f"/v1/videos/{video_id}/events"
        for name, path in (("healthz (baseline)", "/healthz"), ("events", events_path)):
            times = asyncio.run(latencies(port, path, headers, args.requests, args.concurrency))
            results[name] = {
                "p50_ms": round(1000 * statistics.median(times), 2),
                "p99_ms": round(1000 * percentile(times, 99), 2),
                "requests": len(times),
                "concurrency": args.concurrency,
            }

        idle = rss_kb(server.pid)
        sampler = Sampler(server.pid)
        sampler.start()
        boundary = "atconbenchboundary"
        start = time.perf_counter()
        response = httpx.post(
            f"{base}/v1/videos",
            content=multipart_stream(upload_file, boundary),
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=3600,
        )
        upload_s = time.perf_counter() - start
        peak = sampler.stop()
        if response.status_code != 202:
            raise RuntimeError(f"upload answered {response.status_code}: {response.text}")
        size = upload_file.stat().st_size
        copy_s = copy_to_disk(upload_file, work / "copy.bin")
        upload_rate, copy_rate = size / upload_s / 1e6, size / copy_s / 1e6
        results["upload"] = {
            "bytes": size,
            "upload_MBps": round(upload_rate, 1),
            "disk_copy_MBps (baseline)": round(copy_rate, 1),
            "ratio": round(upload_rate / copy_rate, 3),
        }
        results["server_memory"] = {
            "idle_MB": round(idle / 1024, 1),
            "peak_during_upload_MB": round(peak / 1024, 1),
            "above_idle_MB": round((peak - idle) / 1024, 1),
        }
    finally:
        server.terminate()
        server.wait(30)
        log.close()
        for leftover in ("upload.mp4", "copy.bin"):
            (work / leftover).unlink(missing_ok=True)

    print(f"{'measure':<28}{'value':>14}  target")
    for name in ("healthz (baseline)", "events"):
        row = results[name]
        target = "p99 < 50 ms" if name == "events" else ""
        print(f"{name + ' p50 ms':<28}{row['p50_ms']:>14}")
        print(f"{name + ' p99 ms':<28}{row['p99_ms']:>14}  {target}")
    up = results["upload"]
    print(f"{'upload MB/s':<28}{up['upload_MBps']:>14}")
    print(f"{'disk copy MB/s (baseline)':<28}{up['disk_copy_MBps (baseline)']:>14}")
    print(f"{'upload / disk copy':<28}{up['ratio']:>14}  >= 0.7")
    mem = results["server_memory"]
    print(f"{'server RSS idle MB':<28}{mem['idle_MB']:>14}")
    print(f"{'server RSS above idle MB':<28}{mem['above_idle_MB']:>14}  < 100 MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                    "results": results}, indent=2))  # fmt: skip
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
