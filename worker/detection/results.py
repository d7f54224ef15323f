"""The results folder of one detection: layout, ``events.json`` schema, atomic writing.

Layout::

    <out_dir>/
        events.json                 the document below
        scores.npz                  times (T,) s, pts (T,) int64, scores (T, C) float32,
                                    class_names (C,) str: every sampled frame's scores;
                                    scored (T,) bool: the model scored the sample (false:
                                    it inherited the last scored sample's scores, motion
                                    gating); gate_reason (T,) uint8: why, an index into
                                    worker.detection.motion.REASONS; with gating, change (T,)
                                    float32: the sample's change score (NaN: the first)
        maps/<stem>_frame.png       the event's peak frame (display size)
        maps/<stem>_gradcam.png     the frame with its Grad-CAM heat overlay
        maps/<stem>_guided_backprop.png   Guided Backprop magnitude, grey
        maps/<stem>_masked.png      the frame times the ATCON soft mask
        maps/<stem>_gradcam.npy     raw Grad-CAM (h, w) float32 at the layer's resolution
        maps/<stem>_guided_backprop.npy   raw Guided Backprop (3, S, S) float32
        maps/<stem>_mask.npy        soft mask (S, S) float32, S the model input size

``<stem>`` is the event id made safe for file names. Everything is written into a
hidden temporary folder next to ``out_dir`` and renamed into place at the end, so a
reader sees either no folder or a complete one.

``events.json``, schema version 1 (:data:`SCHEMA_VERSION`; a reader must check it)::

    schema_version  1
    video_id        the caller's id (default: the file's stem)
    created_at      ISO 8601 UTC
    video           file_name, size_bytes, container, codec, width, height (display,
                    after rotation), coded_width, coded_height, rotation (degrees
                    counter-clockwise), fps, duration_s, frame_count, time_base
    sampling        fps (requested rate), samples, decoded_frames, failed_packets,
                    corrupt_frames, out_of_order_frames, covered_s, expected_s,
                    coverage (fraction of the duration decoded, 0..1), demux_error
    model           version, checkpoint_sha256, arch, class_names, input_size,
                    multi_label, thresholds {on: {class: p}, off: {class: p}},
                    device, precision
    segmentation    offset_ratio, min_duration_s, merge_gap_s, padding_s
    maps            layer, mask_intensity, gb_normalization (null when maps are off)
    scores_file     "scores.npz"
    events          list, sorted by start_s then class order, each:
                      id ("<label>-<k>", stable within the video), label, start_s,
                      end_s, peak_s, score (peak probability), mean_score,
                      attention_consistency (Pearson of the two Grad-CAM maps of the
                      peak frame, -1..1; null without maps),
                      maps {frame, gradcam_overlay, guided_backprop, masked_frame,
                            gradcam_raw, guided_backprop_raw, mask_raw}: paths
                            relative to the results folder (absent without maps)
    gating          enabled, and with it the gate's settings (max_interval_s,
                    threshold, min_area, dense_after, grid); scored_samples,
                    inherited_samples, reasons {reason: samples}
                    (worker.detection.motion.REASONS), inherited_spans_s [[first, last], ...]:
                    the times of the first and last sample of each run of samples
                    that inherited their scores. Optional: documents written before
                    gating have none, and every sample of theirs was scored.
    timings_s       seconds per stage: decode_busy (decoder thread), decode_wait
                    (inference waiting for frames), gate (change scores, in the
                    decoder thread), preprocess, model, segment, maps, write, total
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from models.atomic import atomic_write_text

from .._exceptions import ResultsExistError, ResultsUnreadableError, SchemaVersionError
from .render import gradcam_heat, guided_picture, heat_overlay, resize_map, save_png_atomic

__all__ = [
    "EVENTS_FILE",
    "EVENT_ID_PATTERN",
    "SCHEMA_VERSION",
    "SCORES_FILE",
    "read_events",
    "read_scores",
    "safe_stem",
    "staged_directory",
    "write_event_maps",
    "write_json",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: the form of an event id in ``events.json`` (``<label>-<k>``), checked before use
EVENT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
EVENTS_FILE = "events.json"
SCORES_FILE = "scores.npz"
MAPS_DIR = "maps"


def safe_stem(name: str) -> str:
    """``name`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "_"


@contextmanager
def staged_directory(out_dir: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``out_dir``; on success rename it to ``out_dir``.

    On any exception (``KeyboardInterrupt`` included) the temporary folder is removed
    and ``out_dir`` is left as it was. An existing non-empty ``out_dir`` raises
    :class:`ResultsExistError` unless ``overwrite``; then the old folder is moved
    aside, the new one renamed in, and the old one deleted.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ResultsExistError(f"results path {out} exists and is not a folder; choose another")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ResultsExistError(
            f"results folder {out} already exists; pass overwrite (--overwrite) to replace it "
            "or choose another output folder"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
        old: Path | None = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "previous")
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as strict JSON (no NaN) via a temporary name and a rename."""
    atomic_write_text(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


def read_events(path: str | Path) -> dict[str, Any]:
    """Read ``events.json`` (or the results folder holding it), checking its schema version.

    The one reader of the file. Raises ``FileNotFoundError`` when it is not there,
    :class:`~worker.ResultsUnreadableError` when it is not a JSON object, and
    :class:`~worker.SchemaVersionError` when it is of another schema version.
    """
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ResultsUnreadableError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(document, dict):
        raise ResultsUnreadableError(f"{path} is not a JSON object")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} has events schema version {version!r}; this code reads {SCHEMA_VERSION} "
            "(results written by another release: run the video again to rewrite them)"
        )
    return document


def read_scores(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``scores.npz`` (or the results folder holding it): times, pts, scores,
    class_names, scored (all true in files written before motion gating), and what
    else the file holds; :class:`~worker.ResultsUnreadableError` when it cannot be used."""
    path = Path(path)
    if path.is_dir():
        path = path / SCORES_FILE
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ResultsUnreadableError(f"{path} is unreadable: {exc}") from exc
    if "scored" not in arrays and "times" in arrays:
        arrays["scored"] = np.ones(arrays["times"].shape[0], dtype=bool)
    return arrays


def write_event_maps(
    maps_dir: Path,
    stem: str,
    frame: np.ndarray,
    cam: np.ndarray,
    guided: np.ndarray,
    mask: np.ndarray,
) -> dict[str, str]:
    """Render and save one event's maps; return file names relative to the results folder.

    ``frame`` is the display-size RGB peak frame (H, W, 3) uint8, ``cam`` the raw
    Grad-CAM (h, w), ``guided`` the raw Guided Backprop (3, S, S), ``mask`` the soft
    mask (S, S). PNGs are at the frame's size; raw maps are saved unchanged.
    """
    maps_dir.mkdir(parents=True, exist_ok=True)
    size = frame.shape[:2]
    heat = gradcam_heat(cam, size)
    soft = np.clip(resize_map(mask, size), 0.0, 1.0)
    names = {
        "frame": f"{stem}_frame.png",
        "gradcam_overlay": f"{stem}_gradcam.png",
        "guided_backprop": f"{stem}_guided_backprop.png",
        "masked_frame": f"{stem}_masked.png",
        "gradcam_raw": f"{stem}_gradcam.npy",
        "guided_backprop_raw": f"{stem}_guided_backprop.npy",
        "mask_raw": f"{stem}_mask.npy",
    }
    grey = guided_picture(guided, size)
    masked = (frame.astype(np.float32) * soft[..., None]).round().astype(np.uint8)
    for key, image in (
        ("frame", frame),
        ("gradcam_overlay", heat_overlay(frame, heat)),
        ("guided_backprop", grey),
        ("masked_frame", masked),
    ):
        save_png_atomic(image, maps_dir / names[key], compress_level=1)
    np.save(maps_dir / names["gradcam_raw"], cam.astype(np.float32))
    np.save(maps_dir / names["guided_backprop_raw"], guided.astype(np.float32))
    np.save(maps_dir / names["mask_raw"], mask.astype(np.float32))
    return {key: f"{MAPS_DIR}/{name}" for key, name in names.items()}
