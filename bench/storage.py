"""Benchmark: the detect path on the object-store backend against the local backend.

The same ward video (:func:`bench.video.make_video`) and the same loaded detector, in
one process, rounds alternating between:

* local: :class:`worker.storage.Storage` on a data directory; the detector reads the
  file, the results folder is published by one rename;
* object store: :class:`worker.storage_s3.ObjectStorage` on an S3-compatible server;
  the detector decodes the video from the bucket with ranged GETs
  (``Storage.video_input``), the results are uploaded and published by pointer.

It reports wall time and real-time factor per backend (detection and publication
apart), the ratio object store / local, and the bytes the decoder fetched against the
video's size. Without ``--endpoint`` it starts moto's standalone server
(``moto[server]``, the dev extra) on a free port, so the store's figures include a
local HTTP round trip per range but no real network.

    python -m bench.storage --minutes 2 --json bench/out/storage.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.video import make_checkpoint, make_video

ROOT = Path(__file__).resolve().parent.parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="video length")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per backend")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--endpoint", help="an S3-compatible endpoint (default: start moto)")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "out" / "cache")
    parser.add_argument("--json", type=Path, help="write the result here too")
    return parser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _moto() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def _round(storage: Any, detector: Any, video_id: str) -> dict[str, float]:
    staging = storage.staging_dir(video_id)
    started = time.perf_counter()
    document = detector.detect(
        storage.video_input(video_id), staging / "results", video_id=video_id
    )
    detected = time.perf_counter()
    storage.publish_results(video_id, staging / "results")
    published = time.perf_counter()
    shutil.rmtree(staging, ignore_errors=True)
    return {
        "detect_s": detected - started,
        "publish_s": published - detected,
        "total_s": published - started,
        "samples": float(document["sampling"]["samples"]),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    video = make_video(args.cache, args.minutes)
    checkpoint = make_checkpoint(args.cache, args.arch, args.input_size)
    if args.endpoint:
        result = _measure(args, video, checkpoint, args.endpoint)
    else:
        with _moto() as endpoint:
            result = _measure(args, video, checkpoint, endpoint)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


def _measure(args: argparse.Namespace, video: Path, checkpoint: Path, endpoint: str) -> dict:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    import boto3

    from worker.detection.detector import DetectionConfig, Detector
    from worker.storage import Storage, VideoRecord, new_id
    from worker.storage_s3 import ObjectStorage
    from worker.video.probe import probe

    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    detector = Detector(checkpoint, config=DetectionConfig(sample_fps=2.0))
    info = probe(video)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        backends = {
            "local": Storage(Path(tmp) / "local"),
            "object_store": ObjectStorage(Path(tmp) / "scratch", f"s3://{bucket}/bench"),
        }
        ids = {}
        for name, storage in backends.items():
            storage.ensure_layout()
            received = storage.new_upload_file()
            received.write_bytes(video.read_bytes())
            ids[name] = new_id()
            record = VideoRecord(ids[name], new_id(), size_bytes=video.stat().st_size)
            storage.save_video(record, received)
            if name == "object_store":  # the workers never have the API's copy
                storage.source_path(ids[name]).unlink()
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in backends}
        _round(backends["local"], detector, ids["local"])  # warm-up: first-call costs
        for _ in range(args.repeats):
            for name, storage in backends.items():
                rounds[name].append(_round(storage, detector, ids[name]))
        fetched = _fetched_bytes(backends["object_store"], ids["object_store"])
    duration = float(info.duration_s or 0.0)
    summary: dict[str, Any] = {}
    for name, runs in rounds.items():
        total = statistics.median(r["total_s"] for r in runs)
        summary[name] = {
            "detect_s": statistics.median(r["detect_s"] for r in runs),
            "publish_s": statistics.median(r["publish_s"] for r in runs),
            "total_s": total,
            "real_time_factor": duration / total if total else None,
            "samples": runs[0]["samples"],
            "rounds": runs,
        }
    return {
        "video": {"minutes": args.minutes, "duration_s": duration, "bytes": video.stat().st_size},
        "model": {"arch": args.arch, "input_size": args.input_size},
        "endpoint": "moto (local process)" if not args.endpoint else "given",
        **summary,
        "object_store_over_local": summary["object_store"]["total_s"] / summary["local"]["total_s"],
        "decoder_fetched_bytes": fetched,
    }


def _fetched_bytes(storage: Any, video_id: str) -> int:
    """Bytes one decode of the video reads from the store (sampling at 2 frames/s)."""
    from worker.video.decode import FrameSampler

    stored = storage.video_input(video_id)
    readers: list[Any] = []

    class Counted:
        """The stored video, keeping the readers it opens to count their bytes."""

        name = stored.name
        size = stored.size

        def open(self) -> Any:
            handle = stored.open()
            readers.append(handle.raw)
            return handle

    for _ in FrameSampler(Counted(), fps=2.0, size=(64, 64)):
        pass
    return int(sum(r.bytes_read for r in readers))


if __name__ == "__main__":
    raise SystemExit(main())
