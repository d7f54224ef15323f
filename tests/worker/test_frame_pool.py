"""The frame pool: adding, zip import with hostile entries, labels, review order, export."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.pool.frames import NO_CAMERA, FramePool, InvalidFrameError, UnknownFrameError

CLASSES = ["bed_exit", "staff_present"]


def _png(size: tuple[int, int] = (40, 30), value: int = 120) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, 10, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def pool(tmp_path: Path) -> FramePool:
    return FramePool(tmp_path / "frames", image_size=32, val_fraction=0.5)


def test_add_frame_stores_at_model_size(pool: FramePool) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    record = pool.add_frame(rgb, video_id="a" * 32, time_s=12.5)
    with Image.open(pool.image_path(record.frame_id)) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    assert pool.get(record.frame_id).time_s == 12.5
    with pytest.raises(ValueError, match="rgb"):
        pool.add_frame(np.zeros((4, 4), dtype=np.uint8))


def test_zip_import_keeps_images_and_rejects_the_rest(pool: FramePool) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ward/a.png", _png())
        archive.writestr("b.jpg", _png())  # PNG bytes under a .jpg name still decode
        archive.writestr("../escape.png", _png())
        archive.writestr("/abs/path.png", _png())
        archive.writestr("notes.txt", b"patient said hello")
        archive.writestr("fake.png", b"not really a png")
        archive.writestr("folder/", b"")
    buffer.seek(0)
    result = pool.import_zip(buffer)
    assert len(result.accepted) == 2
    reasons = dict(result.rejected)
    assert reasons["../escape.png"] == "path leaves the archive"
    assert reasons["/abs/path.png"] == "path leaves the archive"
    assert reasons["notes.txt"] == "not an image file name"
    assert "not a readable" in reasons["fake.png"]
    assert not list(pool.root.parent.glob("escape*"))
    assert len(pool.records()) == 2


def test_not_a_zip_and_not_an_image(pool: FramePool) -> None:
    with pytest.raises(InvalidFrameError, match="zip"):
        pool.import_zip(io.BytesIO(b"PK but not really"))
    with pytest.raises(InvalidFrameError, match="empty"):
        pool.add_image_bytes(b"")
    with pytest.raises(InvalidFrameError, match="not a readable"):
        pool.add_image_bytes(b"%PDF-1.4 ...")
    assert pool.records() == []


def test_labels_split_review_and_export(pool: FramePool, tmp_path: Path) -> None:
    records = [pool.add_image_bytes(_png(value=v)) for v in range(0, 200, 20)]
    for i, record in enumerate(records):
        pool.set_consistency(record.frame_id, 1.0 - i / 10, "v0001")
    learn_only = FramePool(pool.root, val_fraction=0.0)  # every frame trains: hardest first
    review = learn_only.review_queue(limit=3)
    assert [r.frame_id for r in review] == [r.frame_id for r in records[::-1][:3]]

    for record in records[:6]:
        pool.set_labels(record.frame_id, ["bed_exit"], CLASSES)
    pool.set_labels(records[6].frame_id, [], CLASSES)  # explicitly "no event"
    with pytest.raises(ValueError, match="not classes of the model"):
        pool.set_labels(records[7].frame_id, ["dancing"], CLASSES)
    with pytest.raises(UnknownFrameError):
        pool.set_labels("0" * 32, ["bed_exit"], CLASSES)
    with pytest.raises(UnknownFrameError, match="not a frame id"):
        pool.get("../../etc/passwd")
    assert len(pool.review_queue(limit=10)) == 3  # labeled frames leave the queue

    exported = pool.export(tmp_path / "snapshot", class_names=CLASSES)
    assert exported.counts["unlabeled"] == 3
    assert exported.counts["train"] + exported.counts["val"] == 7
    assert exported.counts["train"] > 0 and exported.counts["val"] > 0
    for split_dir in (exported.train_dir, exported.val_dir):
        assert split_dir is not None
        with open(split_dir / "labels.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert all((split_dir / row["path"]).is_file() for row in rows)
        assert (split_dir / "classes.txt").read_text().split() == CLASSES
    again = pool.export(tmp_path / "snapshot2", class_names=CLASSES)
    assert again.digest == exported.digest


def test_records_filter_by_time_and_video(pool: FramePool) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    a = pool.add_frame(rgb, video_id="a" * 32, time_s=1.0)
    pool.add_frame(rgb, video_id="b" * 32, time_s=2.0)
    assert [r.frame_id for r in pool.records(video_ids=["a" * 32])] == [a.frame_id]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert pool.records(since=future) == []


def test_frames_carry_their_camera(pool: FramePool) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    sampled = pool.add_frame(rgb, video_id="a" * 32, time_s=1.0, camera="icu-3")
    uploaded = pool.add_image_bytes(_png(), camera="icu-4")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.png", _png())
    buffer.seek(0)
    zipped = pool.import_zip(buffer, camera="icu-4").accepted
    plain = pool.add_image_bytes(_png())
    assert pool.get(sampled.frame_id).camera == "icu-3"
    assert [pool.get(f).camera for f in [uploaded.frame_id, *zipped]] == ["icu-4", "icu-4"]
    assert pool.get(plain.frame_id).camera is None
    assert {r.frame_id for r in pool.records(camera="icu-4")} == {uploaded.frame_id, *zipped}
    assert len(pool.records()) == 4  # no camera asked: every frame


@pytest.mark.parametrize("bad", ["../x", "", "a b", "x" * 65])
def test_a_bad_camera_stores_nothing(pool: FramePool, bad: str) -> None:
    with pytest.raises(ValueError, match="camera"):
        pool.add_image_bytes(_png(), camera=bad)
    with pytest.raises(ValueError, match="camera"):
        pool.add_frame(np.zeros((8, 8, 3), dtype=np.uint8), camera=bad)
    with pytest.raises(ValueError, match="camera"):
        pool.import_zip(io.BytesIO(b"PK"), camera=bad)
    assert pool.records() == [] and list(pool.root.iterdir()) == []


def test_export_restricted_to_a_camera(pool: FramePool, tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    mine = [pool.add_frame(rgb, camera="night-1") for _ in range(4)]
    other = [pool.add_frame(rgb, camera="day-1") for _ in range(3)]
    loose = pool.add_frame(rgb)
    for record in (mine[0], mine[1], other[0], other[1]):  # labeled on both cameras
        pool.set_labels(record.frame_id, ["bed_exit"], CLASSES)

    exported = pool.export(tmp_path / "night", class_names=CLASSES, camera="night-1")
    files = {p.stem for p in (tmp_path / "night").rglob("*.png")}
    assert files == {r.frame_id for r in mine}
    assert exported.counts["unlabeled"] == 2
    assert exported.counts["train"] + exported.counts["val"] == 2
    assert exported.camera == "night-1"
    assert list(exported.counts_by_camera) == ["night-1"]
    assert exported.describe()["counts_by_camera"]["night-1"]["unlabeled"] == 2

    everything = pool.export(tmp_path / "all", class_names=CLASSES)
    assert everything.counts["unlabeled"] == 2 + 1 + 1
    per = everything.counts_by_camera
    assert set(per) == {"night-1", "day-1", NO_CAMERA}
    assert per["day-1"]["unlabeled"] == 1 and per[NO_CAMERA]["unlabeled"] == 1
    assert loose.camera is None
    with pytest.raises(ValueError, match="camera"):
        pool.export(tmp_path / "bad", camera="../night-1")


def test_frames_of_a_video_are_added_once_per_time_even_when_a_job_is_retried(
    pool: FramePool,
) -> None:
    rgb = np.full((24, 32, 3), 90, np.uint8)
    times = [float(t) for t in range(0, 120, 4)]
    # a first attempt killed after 5 frames, then the retry adds them all
    for t in times[:5]:
        pool.add_frame(rgb, video_id="a" * 32, time_s=t)
    first = pool.records()[0]
    pool.set_labels(first.frame_id, ["walk"], ["walk", "fall"])
    ids = [pool.add_frame(rgb, video_id="a" * 32, time_s=t).frame_id for t in times]
    assert len(pool.records()) == len(times) == len(set(ids))
    assert pool.get(first.frame_id).labels == ["walk"]  # the retry kept the label
    # another source (a review's peak frame) or another video is another frame
    review = pool.add_frame(rgb, source="review", video_id="a" * 32, time_s=times[0])
    other = pool.add_frame(rgb, video_id="b" * 32, time_s=times[0])
    assert len({review.frame_id, other.frame_id, *ids}) == len(times) + 2
    # frames without a video and time are always new
    assert pool.add_frame(rgb).frame_id != pool.add_frame(rgb).frame_id


def test_a_zip_over_its_caps_is_refused_whole_before_decompression(pool: FramePool) -> None:
    from worker.pool.frames import ZipTooLargeError

    def archive(entries: dict[str, bytes]) -> io.BytesIO:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in entries.items():
                z.writestr(name, data)
        buffer.seek(0)
        return buffer

    bomb = archive({f"{i}.png": b"\0" * (600 << 10) for i in range(4)})  # 2.4 MiB of zeros
    with pytest.raises(ZipTooLargeError, match="ATCON_ZIP_MAX_TOTAL_BYTES"):
        pool.import_zip(bomb, max_total_bytes=2 << 20)
    many = archive({f"{i}.png": _png() for i in range(6)})
    with pytest.raises(ZipTooLargeError, match="ATCON_ZIP_MAX_ENTRIES"):
        pool.import_zip(many, max_entries=5)
    assert pool.records() == []
    many.seek(0)
    assert len(pool.import_zip(many, max_entries=6).accepted) == 6


def test_the_review_queue_mixes_hard_frames_with_a_random_validation_sample(
    tmp_path: Path,
) -> None:
    from worker.pool.frames import _bucket

    pool = FramePool(tmp_path / "queue", val_fraction=0.3)
    records = [pool.add_image_bytes(_png(value=v % 250)) for v in range(0, 600, 6)]
    for i, record in enumerate(records[:80]):  # the last 20 are not scored yet
        pool.set_consistency(record.frame_id, (i * 37 % 80) / 80, "v0001")
    queue = pool.review_queue(limit=40)
    judge = [r for r in queue if _bucket(r.frame_id) < 0.3]
    learn = [r for r in queue if _bucket(r.frame_id) >= 0.3]
    assert len(judge) == 12 and len(learn) == 28  # 30% of the queue validates
    for n in range(1, 41):  # ... and about 30% of every prefix
        assert abs(sum(_bucket(r.frame_id) < 0.3 for r in queue[:n]) - 0.3 * n) <= 1
    assert [r.consistency for r in learn] == sorted(r.consistency for r in learn)
    assert [_bucket(r.frame_id) for r in judge] == sorted(_bucket(r.frame_id) for r in judge)
    # validation frames are a random sample: unscored frames and easy frames too
    every_judge = sorted(
        (r for r in pool.records() if _bucket(r.frame_id) < 0.3), key=lambda r: _bucket(r.frame_id)
    )
    assert [r.frame_id for r in judge] == [r.frame_id for r in every_judge[:12]]
    labeled = pool.set_labels(judge[0].frame_id, [], CLASSES)
    assert labeled.split == "val"
    assert pool.set_labels(learn[0].frame_id, [], CLASSES).split == "train"
    assert judge[0].frame_id not in {r.frame_id for r in pool.review_queue(limit=40)}
    other = pool.add_image_bytes(_png(value=3), camera="night-1")
    pool.set_consistency(other.frame_id, 0.0, "v0001")
    assert [r.frame_id for r in pool.review_queue(limit=40, camera="night-1")] == [other.frame_id]
    assert other.frame_id in {r.frame_id for r in pool.review_queue(limit=200)}


def test_a_label_and_a_score_written_at_once_both_survive(pool: FramePool) -> None:
    """A clinician labels a frame while a worker scores it: each update reads, changes
    and writes the record, and neither may overwrite the other's field."""
    import threading

    rounds, lost = 40, []
    for index in range(rounds):
        frame_id = pool.add_frame(np.full((32, 32, 3), index, dtype=np.uint8)).frame_id
        start = threading.Barrier(2)

        def label(frame_id: str = frame_id, start: threading.Barrier = start) -> None:
            start.wait()
            for _ in range(5):
                pool.set_labels(frame_id, ["bed_exit"], ["bed_exit", "staff"])

        def score(
            frame_id: str = frame_id, index: int = index, start: threading.Barrier = start
        ) -> None:
            start.wait()
            for _ in range(5):
                pool.set_consistency(frame_id, index / rounds, "v0001")

        threads = [threading.Thread(target=label), threading.Thread(target=score)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        record = pool.get(frame_id)
        if record.labels != ["bed_exit"] or record.consistency is None:
            lost.append(frame_id)
    assert lost == [], f"{len(lost)} of {rounds} frames lost a label or a score"
