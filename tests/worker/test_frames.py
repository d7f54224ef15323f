from __future__ import annotations

import logging

import pytest
import torch

from tests.frame_data import write_boxes, write_labeled_dir, write_unlabeled_dir
from worker._exceptions import FrameDataError
from worker.training.datasets import (
    BoxDataset,
    FrameTransform,
    LabeledFrameDataset,
    UnlabeledFrameDataset,
    find_unlabeled_frames,
    read_boxes,
    read_labeled_frames,
    split_indices,
)

NAMES = ("bed_exit", "staff")


def _rewrite_labels(root, lines):
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def test_labeled_directory_reads_multi_hot_targets_in_classes_txt_order(tmp_path):
    root = write_labeled_dir(tmp_path, [[0], [1], [0, 1], []], NAMES[::-1])
    frames = read_labeled_frames(root)
    assert frames.class_names == ["staff", "bed_exit"]
    assert frames.targets().tolist() == [[1, 0], [0, 1], [1, 1], [0, 0]]
    assert not frames.single_label
    assert frames.skipped == []


def test_without_classes_txt_the_classes_are_the_sorted_names_used(tmp_path):
    root = write_labeled_dir(tmp_path, [[1], [0]], ("zebra", "apple"), classes_file=False)
    frames = read_labeled_frames(root)
    assert frames.class_names == ["apple", "zebra"]
    assert frames.single_label


def test_unreadable_and_missing_frames_are_skipped_and_counted(tmp_path, caplog):
    root = write_labeled_dir(tmp_path, [[0], [1], [0]], NAMES)
    (root / "img" / "f001.png").write_bytes(b"not an image at all")
    data = (root / "labels.csv").read_text() + "img/missing.png,staff\n"
    (root / "labels.csv").write_text(data)
    with caplog.at_level(logging.WARNING, logger="worker.training.datasets"):
        frames = read_labeled_frames(root)
    assert len(frames) == 2
    assert sorted(p.name for p in frames.skipped) == ["f001.png", "missing.png"]
    assert "skipped 2" in caplog.text and "f001.png" in caplog.text


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["path,label", "img/f000.png,staff"], "line 1: missing column(s) labels"),
        (
            ["path,labels", "img/f000.png,staff", "img/f001.png,nurse"],
            "line 3: unknown class 'nurse'",
        ),
        (["path,labels", "../outside.png,staff"], "line 2: path '../outside.png' lies outside"),
        (["path,labels", "/etc/passwd,staff"], "line 2: path '/etc/passwd' lies outside"),
        (["path,labels", "img/../../x.png,staff"], "lies outside"),
        (
            ["path,labels", "img/f000.png,staff", "img/f000.png,"],
            "line 3: f000.png is listed twice",
        ),
    ],
)
def test_bad_labels_csv_is_refused_with_its_line_number(tmp_path, lines, message):
    root = write_labeled_dir(tmp_path, [[0], [1]], NAMES)
    _rewrite_labels(root, lines)
    with pytest.raises(FrameDataError) as info:
        read_labeled_frames(root)
    assert message in str(info.value)


def test_empty_labeled_set_is_refused(tmp_path):
    root = write_labeled_dir(tmp_path, [[0]], NAMES)
    (root / "img" / "f000.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(FrameDataError, match="no usable frame"):
        read_labeled_frames(root)
    _rewrite_labels(root, ["path,labels"])
    with pytest.raises(FrameDataError, match="no usable frame"):
        read_labeled_frames(root)


def test_checkpoint_classes_must_match_classes_txt_and_labels(tmp_path):
    root = write_labeled_dir(tmp_path, [[0], [1]], NAMES)
    with pytest.raises(FrameDataError, match="differ from"):
        read_labeled_frames(root, class_names=["staff", "bed_exit"], class_source="model.pt")
    (root / "classes.txt").unlink()
    with pytest.raises(FrameDataError, match=r"line 3: unknown class 'staff'.*model.pt"):
        read_labeled_frames(root, class_names=["bed_exit"], class_source="model.pt")
    frames = read_labeled_frames(root, class_names=[*NAMES, "seizure"])
    assert frames.targets().shape == (2, 3)


def test_unlabeled_directory_is_searched_recursively_and_skips_junk(tmp_path, caplog):
    root = write_unlabeled_dir(tmp_path, 5)
    (root / "notes.txt").write_text("hello")
    (root / "a" / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    with caplog.at_level(logging.WARNING, logger="worker.training.datasets"):
        frames = find_unlabeled_frames(root)
    assert len(frames) == 5
    assert {p.suffix for p in frames.paths} == {".png", ".jpg"}
    assert sorted(p.name for p in frames.skipped) == ["bad.jpg", "notes.txt"]
    assert "skipped 2" in caplog.text
    with pytest.raises(FrameDataError, match="does not exist"):
        find_unlabeled_frames(tmp_path / "nowhere")


def test_datasets_give_normalised_tensors_at_the_input_size(tmp_path):
    root = write_labeled_dir(tmp_path / "l", [[0], [1], [0, 1]], NAMES, size=20)
    frames = read_labeled_frames(root)
    transform = FrameTransform(12, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    image, target = LabeledFrameDataset(frames, transform, indices=[2])[0]
    assert image.shape == (3, 12, 12) and image.dtype == torch.float32
    assert target.tolist() == [1.0, 1.0]
    assert image.min() >= -2.0 - 1e-6 and image.max() <= 2.0 + 1e-6
    assert image.max() > 1.0  # the bright squares survive normalisation
    unlabeled = find_unlabeled_frames(write_unlabeled_dir(tmp_path / "u", 3, size=20))
    assert UnlabeledFrameDataset(unlabeled.paths, transform)[1].shape == (3, 12, 12)


def test_augmentation_is_seeded_by_torch(tmp_path):
    root = write_labeled_dir(tmp_path, [[0]], NAMES, size=20)
    frames = read_labeled_frames(root)
    dataset = LabeledFrameDataset(frames, FrameTransform(16, (0, 0, 0), (1, 1, 1), augment=True))
    torch.manual_seed(3)
    first = torch.stack([dataset[0][0] for _ in range(4)])
    torch.manual_seed(3)
    second = torch.stack([dataset[0][0] for _ in range(4)])
    assert torch.equal(first, second)
    assert not torch.equal(first[0], first[1]) or not torch.equal(first[1], first[2])


def test_boxes_are_read_and_scaled_to_the_input_size(tmp_path):
    labels = [[0], [1]]
    root = write_labeled_dir(tmp_path, labels, NAMES, size=16)
    boxes = read_boxes(write_boxes(root, labels, NAMES), root=root, class_names=NAMES)
    assert [(b.label, b.x0, b.x1) for b in boxes] == [("bed_exit", 0, 8), ("staff", 8, 16)]
    image, label, box = BoxDataset(boxes, NAMES, FrameTransform(32, (0,) * 3, (1,) * 3))[1]
    assert image.shape == (3, 32, 32) and label == 1
    assert box.tolist() == [16.0, 16.0, 32.0, 32.0]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("img/f000.png,nurse,0,0,4,4", "line 2: unknown class 'nurse'"),
        ("img/f000.png,staff,0,0,a,4", "line 2: x0, y0, x1, y1 must be numbers"),
        ("img/f000.png,staff,5,0,4,4", "line 2: the box needs"),
        ("../f000.png,staff,0,0,4,4", "line 2: path '../f000.png' lies outside"),
    ],
)
def test_bad_boxes_csv_is_refused_with_its_line_number(tmp_path, row, message):
    root = write_labeled_dir(tmp_path, [[0]], NAMES)
    (root / "boxes.csv").write_text(f"path,label,x0,y0,x1,y1\n{row}\n")
    with pytest.raises(FrameDataError) as info:
        read_boxes(root / "boxes.csv", root=root, class_names=NAMES)
    assert message in str(info.value)


def test_split_indices_is_seeded_and_keeps_a_training_item():
    train, val = split_indices(10, 0.3, seed=1)
    assert len(val) == 3 and sorted(train + val) == list(range(10))
    assert split_indices(10, 0.3, seed=1) == (train, val)
    assert split_indices(10, 0.3, seed=2) != (train, val)
    assert split_indices(1, 0.5, seed=0) == ([0], [])
    assert split_indices(4, 0.0, seed=0) == ([0, 1, 2, 3], [])
    with pytest.raises(ValueError, match="fraction"):
        split_indices(4, 1.0, seed=0)
