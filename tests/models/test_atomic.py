"""``models.atomic``: a reader sees the old file or the whole new one, never half."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from models.atomic import atomic_file, atomic_path, atomic_write_json, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_file(target) as fh:
        fh.write(b'{"v": 2, "half')
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_writes_replace_whole_files_private_to_the_owner(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "note.txt"
    atomic_write_text(target, "one\r\n")
    atomic_write_text(target, "two\n")
    assert target.read_bytes() == b"two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_atomic_path_keeps_the_suffix_and_renames_on_success(tmp_path: Path) -> None:
    target = tmp_path / "masks.npz"
    with atomic_path(target, suffix=".npz") as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path and not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data" and not tmp.exists()


def test_a_bad_mode_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"), atomic_file(tmp_path / "x", "a"):
        pass
