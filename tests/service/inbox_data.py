"""Videos with results written directly (no detection) for the inbox tests and bench:
a record, a tiny source file and an ``events.json`` with peak-frame PNGs."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from worker.storage import Storage, VideoRecord, new_id


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    pixels = np.full((48, 64, 3), value % 256, dtype=np.uint8)
    pixels[::8] = 255 - value % 256
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def add_video(
    storage: Storage,
    events: Sequence[tuple[str, float, float, float]],
    *,
    camera: str | None = None,
    created_at: float = 1_700_000_000.0,
    model_version: str = "v0001",
    source: Path | None = None,
    filename: str = "ward.mp4",
) -> str:
    """Store a video and its results; ``events`` are (label, start_s, end_s,
    consistency). ``source`` is copied as the upload (default: a few bytes, which is
    enough for everything but clips). Returns the video id."""
    video_id = new_id()
    received = storage.new_upload_file()
    received.write_bytes(source.read_bytes() if source is not None else b"not a real video")
    record = VideoRecord(
        video_id=video_id,
        job_id=new_id(),
        size_bytes=received.stat().st_size,
        created_at=created_at,
        filename=filename,
        container="mov,mp4,m4a,3gp,3g2,mj2",
        width=64,
        height=48,
        duration_s=max((e[2] for e in events), default=1.0) + 2.0,
        fps=10.0,
        camera=camera,
    )
    storage.save_video(record, received)
    staging = storage.staging_dir(video_id)
    (staging / "maps").mkdir()
    listed = []
    counters: dict[str, int] = {}
    for index, (label, start, end, consistency) in enumerate(events):
        k = counters[label] = counters.get(label, -1) + 1
        event_id = f"{label}-{k}"
        maps = {
            "frame": f"maps/{event_id}_frame.png",
            "gradcam_overlay": f"maps/{event_id}_gradcam.png",
        }
        (staging / maps["frame"]).write_bytes(_png(30 * index))
        (staging / maps["gradcam_overlay"]).write_bytes(_png(30 * index + 100))
        listed.append(
            {
                "id": event_id,
                "label": label,
                "start_s": start,
                "end_s": end,
                "peak_s": round((start + end) / 2, 3),
                "score": 0.9,
                "mean_score": 0.8,
                "attention_consistency": consistency,
                "maps": maps,
            }
        )
    content = {
        "schema_version": 1,
        "video_id": video_id,
        "created_at": "2026-01-01T00:00:00+00:00",
        "video": {"width": 64, "height": 48, "duration_s": record.duration_s, "fps": 10.0},
        "sampling": {"samples": 10},
        "model": {
            "version": model_version,
            "class_names": ["bed_exit", "seizure", "staff_present"],
            "input_size": 16,
        },
        "events": listed,
    }
    (staging / "events.json").write_text(json.dumps(content))
    storage.publish_results(video_id, staging)
    return video_id
