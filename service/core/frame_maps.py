"""Attention maps and consistency scores for frames of the pool, computed on demand.

Frames that came from a detection job are scored by the worker that processed the
video; frames uploaded through the API are scored here the first time the review
queue lists them. Map PNGs are rendered once per frame and model version and kept
next to the frame.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from models.checkpoint import CheckpointInfo
from worker.frame_pool import FramePool, FrameRecord
from worker.settings import Settings
from worker.storage import Storage

__all__ = ["FRAME_MAP_KINDS", "FrameMaps"]

FRAME_MAP_KINDS = ("gradcam", "guided_backprop")


class FrameMaps:
    """Holds the served model (reloaded when the active version changes) for pool frames."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings
        self._lock = threading.Lock()
        self._loaded: tuple[Any, nn.Module, CheckpointInfo, str] | None = None

    def _model(self) -> tuple[nn.Module, CheckpointInfo, str]:
        from models.checkpoint import load_checkpoint

        ref = self.storage.model_to_serve(self.settings.checkpoint)
        if ref is None:
            raise LookupError("no model to serve: set ATCON_CHECKPOINT or activate a version")
        stat = Path(ref.checkpoint).stat()
        key = (str(ref.checkpoint), ref.version, stat.st_mtime_ns)
        if self._loaded is None or self._loaded[0] != key:
            model, info = load_checkpoint(ref.checkpoint)
            version = ref.version or f"sha256:{(info.sha256 or '')[:12]}"
            self._loaded = (key, model, info, version)
        _, model, info, version = self._loaded
        return model, info, version

    def pool(self) -> FramePool:
        with self._lock:
            _, info, _ = self._model()
        return FramePool(self.storage.frames, info.input_size, self.settings.pool_val_fraction)

    def class_names(self) -> list[str]:
        with self._lock:
            return list(self._model()[1].class_names)

    def _tensor(self, paths: list[Path], info: CheckpointInfo) -> torch.Tensor:
        arrays = []
        for path in paths:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((info.input_size, info.input_size))
                arrays.append(np.asarray(rgb, dtype=np.float32) / 255.0)
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        mean = torch.tensor(info.mean).view(1, 3, 1, 1)
        std = torch.tensor(info.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def score_unscored(self, pool: FramePool, records: list[FrameRecord], limit: int) -> int:
        """Give up to ``limit`` unscored frames their consistency; return how many."""
        from models.atcon import attention_consistency

        todo = [r for r in records if r.consistency is None][:limit]
        if not todo:
            return 0
        with self._lock:
            model, info, version = self._model()
            for start in range(0, len(todo), 16):
                chunk = todo[start : start + 16]
                x = self._tensor([pool.root / f"{r.frame_id}.png" for r in chunk], info)
                scores = attention_consistency(model, x)
                for record, score in zip(chunk, scores.tolist(), strict=True):
                    pool.set_consistency(record.frame_id, float(score), version)
        return len(todo)

    def render(self, pool: FramePool, frame_id: str, kind: str) -> Path:
        """The PNG of ``kind`` (gradcam overlay or guided backprop) for a pool frame."""
        from models.attention import gradcam_and_guided_backprop
        from models.maps import normalize_maps, saliency_magnitude, upsample_maps
        from worker.render import heat_overlay, save_png_atomic

        if kind not in FRAME_MAP_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FRAME_MAP_KINDS)}")
        image_path = pool.image_path(frame_id)
        with self._lock:
            model, info, version = self._model()
            safe_version = "".join(c if c.isalnum() else "_" for c in version)
            target = pool.root / "maps" / f"{frame_id}.{safe_version}.{kind}.png"
            if target.is_file():
                return target
            x = self._tensor([image_path], info)
            cam, guided, _ = gradcam_and_guided_backprop(model, x)
        size = (info.input_size, info.input_size)
        with Image.open(image_path) as image:
            frame = np.asarray(image.convert("RGB").resize(size))
        heat = normalize_maps(upsample_maps(cam, size))[0].numpy()
        gb = normalize_maps(saliency_magnitude(guided))[0].numpy()
        picture = (
            heat_overlay(frame, heat) if kind == "gradcam" else (gb * 255).round().astype(np.uint8)
        )
        return save_png_atomic(picture, target)
