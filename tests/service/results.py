"""Results folders laid out as ``worker.detection.detector`` writes them (schema 1 of
``worker.detection.results``), for API tests that do not run detection; end-to-end tests check
the real detector's output through the same endpoints.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from worker.storage import Storage

#: event["maps"] keys holding PNGs, and the API kind each answers
PNG_KEYS = {
    "frame": "frame",
    "gradcam_overlay": "overlay",
    "guided_backprop": "guided_backprop",
    "masked_frame": "mask",
}
MAP_KINDS = ("overlay", "gradcam", "guided_backprop", "mask", "frame")


def png(value: int, size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


class ResultsWriter:
    def __init__(self, data_dir: Path | None = None, storage: Storage | None = None) -> None:
        if storage is None:
            assert data_dir is not None, "a data directory or a storage"
            storage = Storage(data_dir)
        self.storage = storage

    def write(
        self,
        video_id: str,
        events: int = 2,
        model_version: str = "v-test",
        consistency: float | None = 0.5,
    ) -> dict:
        staging = self.storage.staging_dir(video_id) / "results"
        (staging / "maps").mkdir(parents=True)
        listed = []
        for index in range(events):
            event_id = f"bed_exit-{index}"
            maps = {}
            for k, key in enumerate(PNG_KEYS):
                maps[key] = f"maps/{event_id}_{key}.png"
                (staging / maps[key]).write_bytes(png(40 * k + index))
            maps["gradcam_raw"] = f"maps/{event_id}_gradcam.npy"
            cam = np.arange(12, dtype=np.float32).reshape(3, 4) - 2 + index
            np.save(staging / maps["gradcam_raw"], cam)
            listed.append(
                {
                    "id": event_id,
                    "label": "bed_exit",
                    "start_s": 1.0 + index,
                    "end_s": 2.0 + index,
                    "peak_s": 1.5 + index,
                    "score": 0.9,
                    "mean_score": 0.8,
                    "attention_consistency": consistency,
                    "maps": maps,
                }
            )
        content = {
            "schema_version": 1,
            "video_id": video_id,
            "video": {"width": 8, "height": 6},
            "sampling": {"samples": 10},
            "model": {
                "version": model_version,
                "class_names": ["bed_exit", "staff"],
                "input_size": 16,
            },
            "events": listed,
        }
        (staging / "events.json").write_text(json.dumps(content))
        self.storage.publish_results(video_id, staging)
        return content
