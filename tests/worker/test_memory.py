"""Free heap pages go back to the operating system when detection asks."""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import pytest

from synthetic.synth import SynthResult
from worker.detection import detector as detect
from worker.video import memory as _memory
from worker.video.memory import release_free_memory

glibc = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's; this C library lacks it"
)


def _resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


@glibc
def test_freed_blocks_between_live_ones_are_returned() -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 * 1024  # below every mmap threshold: these come from a heap
    blocks = []
    for _ in range(600):
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        blocks.append(block)
    holes, live = blocks[::2], blocks[1::2]
    try:
        for block in holes:  # ~19 MB freed between live blocks: free() cannot return it
            libc.free(block)
        held = _resident_mb()
        assert release_free_memory()
        assert _resident_mb() < held - 10
    finally:
        for block in live:
            libc.free(block)


def test_without_malloc_trim_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    _memory._malloc_trim.cache_clear()
    try:
        assert release_free_memory() is False
    finally:
        monkeypatch.undo()
        _memory._malloc_trim.cache_clear()


def test_detection_trims_while_scoring_and_after(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, checkpoint: Path, ward: SynthResult
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(detect, "release_free_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(detect, "_TRIM_EVERY_BATCHES", 2)
    config = detect.DetectionConfig(batch_size=4, maps=False)  # 20 samples: 5 batches
    detect.Detector(checkpoint, config=config).detect(ward.video, tmp_path / "out")
    assert len(calls) == 2 + 1  # after batches 2 and 4, and once at the end
