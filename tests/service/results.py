"""Results folders as the detector leaves them, for API tests that do not run detection.

The layout follows ``worker.detect``'s contract (``events.json`` with, per event, an
``id`` and ``maps`` naming PNG files under ``maps/``); end-to-end tests check the
real detector's output through the same endpoints.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from worker.storage import Storage

MAP_KINDS = ("overlay", "gradcam", "guided_backprop", "mask")


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class ResultsWriter:
    def __init__(self, data_dir: Path) -> None:
        self.storage = Storage(data_dir)

    def write(self, video_id: str, events: int = 2, model_version: str = "v-test") -> dict:
        staging = self.storage.staging_dir(video_id) / "results"
        (staging / "maps").mkdir(parents=True)
        listed = []
        for index in range(events):
            event_id = f"e{index}"
            maps = {}
            for k, kind in enumerate(MAP_KINDS):
                name = f"maps/{event_id}_{kind}.png"
                (staging / name).write_bytes(png(40 * k + index))
                maps[kind] = name
            listed.append(
                {
                    "id": event_id,
                    "label": "bed_exit",
                    "start_s": 1.0 + index,
                    "end_s": 2.0 + index,
                    "peak_s": 1.5 + index,
                    "score": 0.9,
                    "mean_score": 0.8,
                    "maps": maps,
                }
            )
        content = {"video_id": video_id, "model": {"version": model_version}, "events": listed}
        (staging / "events.json").write_text(json.dumps(content))
        self.storage.publish_results(video_id, staging)
        return content
