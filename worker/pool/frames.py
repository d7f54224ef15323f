"""The frame pool: unlabeled frames collected for fine-tuning, and the labels clinicians add.

Layout under ``<data_dir>/frames``: for each frame ``<frame_id>.png`` (RGB at the
model's input size) and ``<frame_id>.json`` (its record). One record file per frame,
written by rename, means any number of workers on a shared volume can add frames
without a shared index to corrupt. Frame ids are chosen here (uuid4 hex).

For a fine-tune, :meth:`FramePool.export` hard-links a snapshot of the chosen frames
into the training formats that :mod:`worker.training.datasets` reads: an unlabeled folder, and
labeled ``train``/``val`` folders with ``labels.csv`` when labels exist.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import re
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from .._exceptions import (
    EmptyZipError,
    InvalidFrameError,
    UnknownFrameError,
    UnknownLabelsError,
    ZipTooLargeError,
)
from ..cameras import validate_camera
from ..storage import ID_PATTERN, atomic_write_bytes

__all__ = [
    "NO_CAMERA",
    "EmptyZipError",
    "ExportedFrames",
    "FramePool",
    "FrameRecord",
    "InvalidFrameError",
    "UnknownFrameError",
    "ZipImportResult",
    "ZipTooLargeError",
    "check_zip",
]

if TYPE_CHECKING:  # PyAV stays out of the API process
    from ..video.probe import VideoInput

logger = logging.getLogger(__name__)

_FRAME_ID_RE = re.compile(ID_PATTERN)
_MAX_ZIP_ENTRY_BYTES = 64 * 2**20
#: default caps of one zip import: entries, and decompressed bytes of its image entries
ZIP_MAX_ENTRIES = 5000
ZIP_MAX_TOTAL_BYTES = 512 * 2**20
#: names the frames sampled from a video, so that a retried job adds each frame once
_FRAME_NAMESPACE = uuid.UUID("6f1c7c52-4c0e-4d8e-9a57-1d2f3c9e8b10")
_MAX_PIXELS = 80_000_000
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
#: the key of frames without a camera in per-camera counts (not a valid camera name)
NO_CAMERA = "(no camera)"


@dataclass
class FrameRecord:
    frame_id: str
    source: str  # "detection" or "upload"
    added_at: str
    video_id: str | None = None
    time_s: float | None = None
    labels: list[str] | None = None
    split: str | None = None  # "train" or "val" once labeled
    labeled_at: str | None = None
    consistency: float | None = None
    consistency_model: str | None = None
    #: the ward camera that recorded it (:mod:`worker.cameras`); None: not known
    camera: str | None = None

    @property
    def added(self) -> datetime:
        return datetime.fromisoformat(self.added_at)


@dataclass
class ZipImportResult:
    accepted: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ExportedFrames:
    """A snapshot of the pool in the training formats, plus what went into it."""

    unlabeled_dir: Path
    train_dir: Path | None
    val_dir: Path | None
    counts: dict[str, int]
    digest: str
    #: the camera the export was restricted to (None: every frame)
    camera: str | None = None
    #: ``{camera: {"unlabeled": n, "train": n, "val": n}}``; frames without a camera
    #: under :data:`NO_CAMERA`
    counts_by_camera: dict[str, dict[str, int]] = field(default_factory=dict)
    #: the videos the exported frames were sampled from, sorted (frames uploaded as
    #: images have none): what a model trained on them learned from
    video_ids: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "sha256": self.digest,
            "camera": self.camera,
            "counts_by_camera": self.counts_by_camera,
            "video_ids": self.video_ids,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class FramePool:
    """Frames at ``image_size`` x ``image_size`` stored under ``root``."""

    def __init__(self, root: str | Path, image_size: int = 224, val_fraction: float = 0.3) -> None:
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {image_size}")
        if not 0.0 <= val_fraction <= 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1], got {val_fraction}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.image_size = image_size
        self.val_fraction = val_fraction

    def sync(self) -> None:
        """Publish what was written into the folder outside these methods (maps drawn
        by a frames job). Nothing to do here; the object store's pool uploads them."""

    # ------------------------------------------------------------------ adding

    def _store(self, image: Image.Image, record: FrameRecord) -> FrameRecord:
        image = image.convert("RGB").resize(
            (self.image_size, self.image_size), Image.Resampling.BILINEAR
        )
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        atomic_write_bytes(self.root / f"{record.frame_id}.png", buffer.getvalue())
        self._save_record(record)  # the record last: a frame without one is not listed
        return record

    def add_frame(
        self,
        rgb: np.ndarray,
        *,
        source: str = "detection",
        video_id: str | None = None,
        time_s: float | None = None,
        camera: str | None = None,
    ) -> FrameRecord:
        """Add a uint8 RGB frame (H, W, 3), e.g. sampled by a detection job.

        A frame of a video at a time is added once per ``source``: adding it again
        returns the frame already there, unchanged (idempotent under job retries)."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb must be a uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
        camera = validate_camera(camera) if camera is not None else None
        if video_id is not None and time_s is not None:
            # one id per (source, video, time): a job retried after a crash finds the
            # frames its first attempt added and keeps them (and any labels) as they are
            key = f"{source}/{video_id}/{time_s:.6f}"
            frame_id = uuid.uuid5(_FRAME_NAMESPACE, key).hex
            try:
                return self.get(frame_id)
            except UnknownFrameError:
                pass
        else:
            frame_id = uuid.uuid4().hex
        record = FrameRecord(
            frame_id, source, _now(), video_id=video_id, time_s=time_s, camera=camera
        )
        return self._store(Image.fromarray(rgb), record)

    def add_image_bytes(
        self, data: bytes, *, camera: str | None = None, key: str | None = None
    ) -> FrameRecord:
        """Add an uploaded image file; raise :class:`InvalidFrameError` if it is not one.

        ``key`` names the image within its upload (an import job's id and the zip
        entry): adding it again returns the frame already there, so a retried import
        adds each entry once."""
        camera = validate_camera(camera) if camera is not None else None
        frame_id = uuid.uuid4().hex
        if key is not None:
            frame_id = uuid.uuid5(_FRAME_NAMESPACE, f"upload/{key}").hex
            try:
                return self.get(frame_id)
            except UnknownFrameError:
                pass
        if not data:
            raise InvalidFrameError("the file is empty")
        try:
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width * height > _MAX_PIXELS:
                    raise InvalidFrameError(f"the image is too large ({width}x{height} pixels)")
                probe.verify()
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                record = FrameRecord(frame_id, "upload", _now(), camera=camera)
                return self._store(image, record)
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InvalidFrameError(
                "the file is not a readable PNG, JPEG, BMP or WebP image"
            ) from exc

    def import_zip(
        self,
        stream: BinaryIO,
        *,
        camera: str | None = None,
        max_entries: int = ZIP_MAX_ENTRIES,
        max_total_bytes: int = ZIP_MAX_TOTAL_BYTES,
        key: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ZipImportResult:
        """Add every image of a zip archive; entries that are unsafe or not images are rejected.

        The archive is checked first with :func:`check_zip` (refused whole, before
        anything is decompressed, when over ``max_entries`` or ``max_total_bytes``).
        ``key`` (an import's id) makes the import idempotent: each entry's frame id is
        derived from it and the entry's name. ``progress(done, total)`` after each entry.
        """
        camera = validate_camera(camera) if camera is not None else None
        result = ZipImportResult()
        archive = _open_zip(stream)
        with archive:
            infos = _checked_infos(archive, max_entries, max_total_bytes)
            files = [i for i in infos if not i.is_dir()]
            for done, info in enumerate(files, 1):
                name = info.filename
                path = PurePosixPath(name.replace("\\", "/"))
                if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", name):
                    result.rejected.append((name, "path leaves the archive"))
                elif path.suffix.lower() not in _IMAGE_SUFFIXES:
                    result.rejected.append((name, "not an image file name"))
                elif info.file_size > _MAX_ZIP_ENTRY_BYTES:
                    result.rejected.append((name, "larger than 64 MiB"))
                else:
                    entry_key = f"{key}/{done}/{name}" if key is not None else None
                    try:
                        record = self.add_image_bytes(
                            archive.read(info), camera=camera, key=entry_key
                        )
                    except InvalidFrameError as exc:
                        result.rejected.append((name, str(exc)))
                    except (zipfile.BadZipFile, OSError, EOFError):
                        result.rejected.append((name, "the entry is corrupt"))
                    else:
                        result.accepted.append(record.frame_id)
                if progress is not None:
                    progress(done, len(files))
        logger.info(
            "zip import: %d frames accepted, %d entries rejected",
            len(result.accepted),
            len(result.rejected),
        )
        return result

    # ------------------------------------------------------------------ reading

    def _record_path(self, frame_id: str) -> Path:
        if not _FRAME_ID_RE.match(frame_id):
            raise UnknownFrameError(f"{frame_id!r} is not a frame id")
        return self.root / f"{frame_id}.json"

    def _save_record(self, record: FrameRecord) -> None:
        data = json.dumps(asdict(record), sort_keys=True).encode()
        atomic_write_bytes(self._record_path(record.frame_id), data)

    @contextmanager
    def _updating(self, frame_id: str) -> Iterator[FrameRecord]:
        """Read, change and write one frame's record under its own lock (an ``flock``,
        so also across processes): a clinician's labels and a worker's score written
        at the same moment both survive."""
        self._record_path(frame_id)  # validates the id before it becomes a path
        locks = self.root / ".locks"
        locks.mkdir(exist_ok=True)
        fd = os.open(locks / frame_id, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            record = self.get(frame_id)
            yield record
            self._save_record(record)
        finally:
            os.close(fd)  # closing releases the lock

    def get(self, frame_id: str) -> FrameRecord:
        path = self._record_path(frame_id)
        try:
            return FrameRecord(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise UnknownFrameError(f"frame {frame_id} is not in the pool") from None

    def image_path(self, frame_id: str) -> Path:
        self.get(frame_id)
        return self.root / f"{frame_id}.png"

    def records(
        self,
        *,
        since: datetime | None = None,
        video_ids: Iterable[str] | None = None,
        labeled: bool | None = None,
        camera: str | None = None,
    ) -> list[FrameRecord]:
        """Frames oldest first, filtered by time added, source video, labeled state and
        camera (``camera=None``: every frame, with a camera or not)."""
        wanted = set(video_ids) if video_ids is not None else None
        out = []
        for path in self.root.glob("*.json"):
            try:
                record = FrameRecord(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                logger.warning("skipping an unreadable frame record %s", path.name)
                continue
            if since is not None and record.added < since:
                continue
            if wanted is not None and record.video_id not in wanted:
                continue
            if labeled is not None and (record.labels is not None) != labeled:
                continue
            if camera is not None and record.camera != camera:
                continue
            out.append(record)
        return sorted(out, key=lambda r: r.added_at)

    def review_queue(
        self, limit: int, *, camera: str | None = None, video_id: str | None = None
    ) -> list[FrameRecord]:
        """The frames to label next: hard ones to learn from, random ones to judge by.

        A frame's split is fixed before it is labeled (a stable hash of its id, below
        ``val_fraction``: validation). Training frames come least consistent first
        (the maps disagree most: the frames a model learns most from); validation
        frames come in the hash's order, a uniformly random sample of the pool, since
        a gate that judges on the hardest frames alone judges a model by its worst
        moments. The two are interleaved so that about ``val_fraction`` of any prefix
        of the queue is validation. ``camera``, ``video_id``: that camera's, that
        video's frames only.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        videos = [video_id] if video_id is not None else None
        unlabeled = self.records(labeled=False, camera=camera, video_ids=videos)
        judge = sorted(
            (r for r in unlabeled if _bucket(r.frame_id) < self.val_fraction),
            key=lambda r: _bucket(r.frame_id),
        )
        learn = sorted(
            (
                r
                for r in unlabeled
                if r.consistency is not None and _bucket(r.frame_id) >= self.val_fraction
            ),
            key=lambda r: r.consistency or 0.0,
        )
        queue: list[FrameRecord] = []
        taken = 0
        while len(queue) < limit and (judge or learn):
            wants_judge = math.floor((len(queue) + 1) * self.val_fraction) > taken
            if judge and (wants_judge or not learn):
                queue.append(judge.pop(0))
                taken += 1
            else:
                queue.append(learn.pop(0))
        return queue

    # ------------------------------------------------------------------ updating

    def set_labels(self, frame_id: str, labels: list[str], known_classes: list[str]) -> FrameRecord:
        """Store a clinician's labels (an empty list: no event); assign train or val."""
        unknown = sorted(set(labels) - set(known_classes))
        if unknown:
            raise UnknownLabelsError(
                f"labels {unknown} are not classes of the model; known: {known_classes}"
            )
        with self._updating(frame_id) as record:
            record.labels = sorted(set(labels))
            record.labeled_at = _now()
            if record.split is None:  # stable: a relabeled frame keeps its split
                record.split = "val" if _bucket(frame_id) < self.val_fraction else "train"
        return record

    def remove(self, frame_id: str) -> bool:
        """Remove a frame: its record first (it is no longer listed nor served), then its
        image and the maps rendered for it. False when it was not in the pool."""
        path = self._record_path(frame_id)
        existed = path.exists()
        path.unlink(missing_ok=True)
        (self.root / f"{frame_id}.png").unlink(missing_ok=True)
        maps = self.root / "maps"
        for rendered in maps.glob(f"{frame_id}.*") if maps.is_dir() else []:
            rendered.unlink(missing_ok=True)
        # its record lock (named by the frame id): an update racing the removal finds
        # no record and fails as an unknown frame
        (self.root / ".locks" / frame_id).unlink(missing_ok=True)
        return existed

    def video_ids_of(self, frame_ids: Iterable[str]) -> list[str]:
        """The videos the given frames were sampled from, sorted (unknown frames skipped)."""
        found = set()
        for frame_id in frame_ids:
            try:
                video_id = self.get(frame_id).video_id
            except UnknownFrameError:
                continue
            if video_id is not None:
                found.add(video_id)
        return sorted(found)

    def clear_labels(self, frame_id: str) -> FrameRecord:
        """Take a frame's labels back: it is unlabeled again (its split, a hash of its
        id, stays as it was)."""
        with self._updating(frame_id) as record:
            record.labels = None
            record.labeled_at = None
        return record

    def set_consistency(self, frame_id: str, value: float, model_version: str) -> FrameRecord:
        with self._updating(frame_id) as record:
            record.consistency = float(value)
            record.consistency_model = model_version
        return record

    # ------------------------------------------------------------------ exporting

    def export(
        self,
        dest: str | Path,
        *,
        since: datetime | None = None,
        video_ids: Iterable[str] | None = None,
        class_names: list[str] | None = None,
        camera: str | None = None,
    ) -> ExportedFrames:
        """Hard-link a snapshot into ``dest`` in the training formats (see module doc).

        Unlabeled frames are filtered by ``since``/``video_ids``; every labeled frame is
        exported, since labels are scarce and the validation set must stay whole.
        ``camera`` restricts both, unlabeled and labeled, to that camera's frames.
        ``class_names`` fixes the class order in each labeled folder's ``classes.txt``.
        """
        camera = validate_camera(camera) if camera is not None else None
        dest = Path(dest)
        unlabeled = self.records(since=since, video_ids=video_ids, labeled=False, camera=camera)
        labeled = self.records(labeled=True, camera=camera)
        digest = hashlib.sha256()
        counts = {"unlabeled": 0, "train": 0, "val": 0}
        videos = {r.video_id for r in (*unlabeled, *labeled) if r.video_id is not None}
        by_camera: dict[str, dict[str, int]] = {}

        def count(record: FrameRecord, split: str) -> None:
            counts[split] += 1
            per = by_camera.setdefault(
                record.camera or NO_CAMERA, {"unlabeled": 0, "train": 0, "val": 0}
            )
            per[split] += 1

        (dest / "unlabeled").mkdir(parents=True, exist_ok=True)
        for record in unlabeled:
            self._link(record.frame_id, dest / "unlabeled")
            digest.update(f"u:{record.frame_id}".encode())
            count(record, "unlabeled")
        rows: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
        for record in labeled:
            split = record.split or "train"
            self._link(record.frame_id, dest / split)
            rows[split].append((f"{record.frame_id}.png", "|".join(record.labels or [])))
            digest.update(f"{split}:{record.frame_id}:{rows[split][-1][1]}".encode())
            count(record, split)
        for split, split_rows in rows.items():
            if split_rows:
                with open(dest / split / "labels.csv", "w", newline="", encoding="utf-8") as fh:
                    writer = csv.writer(fh)
                    writer.writerow(["path", "labels"])
                    writer.writerows(split_rows)
                if class_names:
                    (dest / split / "classes.txt").write_text("\n".join(class_names) + "\n")
        return ExportedFrames(
            unlabeled_dir=dest / "unlabeled",
            train_dir=dest / "train" if rows["train"] else None,
            val_dir=dest / "val" if rows["val"] else None,
            counts=counts,
            digest=digest.hexdigest(),
            camera=camera,
            counts_by_camera=dict(sorted(by_camera.items())),
            video_ids=sorted(videos),
        )

    def export_in_domain(
        self, dest: str | Path, *, exclude_camera: str, limit: int = 2048, seed: int = 0
    ) -> int:
        """Hard-link up to ``limit`` unlabeled frames of every *other* named camera.

        These are the frames of the cameras a model already serves, the in-domain
        reference of a fine-tune restricted to ``exclude_camera`` (the ``anchor`` and
        ``recalibrate`` adaptation components). Frames without a camera are left out:
        they may come from the very camera being adapted. A seeded sample when there
        are more than ``limit``. Returns how many were exported.
        """
        exclude_camera = validate_camera(exclude_camera)
        records = [
            r
            for r in self.records(labeled=False)
            if r.camera is not None and r.camera != exclude_camera
        ]
        if len(records) > limit:
            import random

            records = sorted(random.Random(seed).sample(records, limit), key=lambda r: r.added_at)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for record in records:
            self._link(record.frame_id, dest)
        return len(records)

    def _link(self, frame_id: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        source = self.root / f"{frame_id}.png"
        target = folder / source.name
        try:
            os.link(source, target)
        except OSError:  # another file system: copy instead
            target.write_bytes(source.read_bytes())


def _open_zip(stream: BinaryIO) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise InvalidFrameError("the file is not a valid zip archive") from exc


def _checked_infos(
    archive: zipfile.ZipFile, max_entries: int, max_total_bytes: int
) -> list[zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > max_entries:
        raise ZipTooLargeError(
            f"the zip archive holds {len(infos)} entries, more than the {max_entries} "
            "one import may hold (ATCON_ZIP_MAX_ENTRIES); split it"
        )
    total = sum(
        i.file_size
        for i in infos
        if not i.is_dir() and PurePosixPath(i.filename).suffix.lower() in _IMAGE_SUFFIXES
    )
    if total > max_total_bytes:
        raise ZipTooLargeError(
            f"the zip archive's images decompress to {total} bytes, more than the "
            f"{max_total_bytes} one import may hold (ATCON_ZIP_MAX_TOTAL_BYTES); split it"
        )
    if not any(not i.is_dir() for i in infos):
        raise EmptyZipError(
            "the zip archive holds no files; put PNG or JPEG images in it, or send one image"
        )
    return infos


def check_zip(
    stream: BinaryIO,
    *,
    max_entries: int = ZIP_MAX_ENTRIES,
    max_total_bytes: int = ZIP_MAX_TOTAL_BYTES,
) -> int:
    """Check a zip archive from its central directory alone (nothing is decompressed).

    Returns how many file entries it holds; raises :class:`InvalidFrameError` when it
    is not a zip archive, :class:`EmptyZipError` when it holds no file, and
    :class:`ZipTooLargeError` when it holds more than ``max_entries`` entries or its
    image entries declare more than ``max_total_bytes`` decompressed.
    """
    with _open_zip(stream) as archive:
        return sum(
            1 for i in _checked_infos(archive, max_entries, max_total_bytes) if not i.is_dir()
        )


def _bucket(frame_id: str) -> float:
    """A frame's place in [0, 1], stable and uniform: below ``val_fraction`` it validates."""
    return int(hashlib.sha256(frame_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def collect_from_detection(
    pool: FramePool,
    detector: Any,
    source: VideoInput,
    scores_npz: Path,
    *,
    video_id: str,
    frames_per_minute: float,
    model_version: str,
    camera: str | None = None,
) -> list[str]:
    """Add an even sample of a processed video's frames to the pool, scored for review.

    ``detector`` is the :class:`worker.detection.detector.Detector` that processed ``source``;
    ``scores_npz`` its per-frame scores (``times``, ``pts``). About
    ``frames_per_minute`` frames per minute of video are taken, at least one; each
    carries the video's ``camera``.
    """
    from ..detection.results import read_scores
    from ..video.decode import extract_frames

    if frames_per_minute <= 0:
        return []
    scores = read_scores(scores_npz)
    times, pts = scores["times"], scores["pts"]
    if len(times) == 0:
        return []
    duration_min = max(float(times[-1]) - float(times[0]), 1e-9) / 60.0
    count = max(1, min(len(times), round(duration_min * frames_per_minute)))
    picks = np.unique(np.linspace(0, len(times) - 1, count).round().astype(int))
    size = pool.image_size
    arrays = extract_frames(source, [int(pts[i]) for i in picks], sizes=[(size, size)])
    frames = np.stack([a[0] for a in arrays])
    consistency = detector.frame_consistency(frames)
    added = []
    for i, frame, score in zip(picks, frames, consistency, strict=True):
        record = pool.add_frame(frame, video_id=video_id, time_s=float(times[i]), camera=camera)
        pool.set_consistency(record.frame_id, float(score), model_version)
        added.append(record.frame_id)
    return added
