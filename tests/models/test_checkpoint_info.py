"""``models.checkpoint_info``: a checkpoint's description read without torch."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from models import CheckpointError
from models.backbones import build_backbone
from models.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from models.checkpoint_info import file_sha256, read_checkpoint_info


def _saved(path: Path) -> CheckpointInfo:
    info = CheckpointInfo(
        arch="resnet18_slim",
        class_names=["bed_exit", "staff"],
        input_size=64,
        thresholds=[0.4, 0.6],
        arch_kwargs={"width": 8},
        metrics={"macro_f1": 0.5},
    )
    model = build_backbone(info.arch, info.num_classes, **info.arch_kwargs)
    save_checkpoint(path, model, info)
    return info


def test_the_description_matches_what_load_checkpoint_reads(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    _saved(path)
    _, loaded = load_checkpoint(path)
    read = read_checkpoint_info(path)
    assert read == loaded and read.sha256 == file_sha256(path)
    assert read_checkpoint_info(path, sha256=False).sha256 is None


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "info": {}, "state_dict": {}}, path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = next(name for name in members if name.endswith("data.pkl"))
    members[data] = pickle.dumps({"format": 1, "info": print}, protocol=2)
    with zipfile.ZipFile(path, "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    with pytest.raises(CheckpointError, match="print is not allowed"):
        read_checkpoint_info(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"not a zip", "could not be read")],
)
def test_missing_and_foreign_files_raise_checkpoint_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint_info(path)


def test_a_file_of_another_format_is_named(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not an ATCON checkpoint"):
        read_checkpoint_info(path)
