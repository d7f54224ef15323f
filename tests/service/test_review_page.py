"""The review queue page: pages, camera and video filters kept across a save, and the
counts of labeled frames against what the next fine-tune needs."""

from __future__ import annotations

import re

import numpy as np

from worker.pool.frames import FramePool
from worker.settings import Role

from .test_pages import app_client, checkpoint, sign_in  # noqa: F401 - fixtures

FRAME = re.compile(r'data-frame-id="([0-9a-f]{32})"')


def _pool(app_client) -> tuple[FramePool, dict[str, list[str]]]:  # noqa: F811
    pool = FramePool(app_client.app.state.runtime.storage.root / "frames", image_size=16)
    by_camera: dict[str, list[str]] = {"icu-1": [], "icu-2": []}
    for index in range(30):
        camera = "icu-1" if index % 3 else "icu-2"
        video = "a" * 32 if index % 2 else "b" * 32
        record = pool.add_frame(
            np.full((16, 16, 3), index * 8, dtype=np.uint8), camera=camera, video_id=video
        )
        pool.set_consistency(record.frame_id, index / 30, "v0001")
        by_camera[camera].append(record.frame_id)
    return pool, by_camera


def test_pages_cover_the_queue_once(app_client, tokens):  # noqa: F811
    pool, _ = _pool(app_client)
    sign_in(app_client, tokens[Role.viewer])
    first = app_client.get("/review?limit=12").text
    assert "30 frames waiting; showing 1–12 (page 1 of 3)" in first
    seen = FRAME.findall(first)
    for number in (2, 3):
        html = app_client.get(f"/review?limit=12&page={number}").text
        seen += FRAME.findall(html)
    assert len(seen) == 30 == len(set(seen))
    assert seen == [r.frame_id for r in pool.review_queue(30)]
    assert 'rel="next"' in first and 'rel="prev"' not in first


def test_filters_by_camera_and_video_survive_saving_a_label(app_client, tokens):  # noqa: F811
    pool, by_camera = _pool(app_client)
    sign_in(app_client, tokens[Role.viewer])
    html = app_client.get("/review?camera=icu-2").text
    assert set(FRAME.findall(html)) == set(by_camera["icu-2"])
    html = app_client.get(f"/review?camera=icu-1&video={'a' * 32}").text
    listed = FRAME.findall(html)
    assert listed and all(
        pool.get(i).camera == "icu-1" and pool.get(i).video_id == "a" * 32 for i in listed
    )

    csrf = sign_in(app_client, tokens[Role.operator])
    back = f"camera=icu-1&video={'a' * 32}&page=1"
    saved = app_client.post(
        f"/review/frames/{listed[0]}/labels",
        data={"csrf_token": csrf, "labels": ["bed_exit"], "back": back},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/review?camera=icu-1&video={'a' * 32}&labeled=1"
    foreign = app_client.post(
        f"/review/frames/{listed[1]}/labels",
        data={"csrf_token": csrf, "labels": [], "back": "next=https://evil.example/&camera=x/y"},
        follow_redirects=False,
    )
    assert foreign.headers["location"] == "/review?labeled=1"


def test_counts_of_labeled_frames_and_what_the_next_fine_tune_needs(app_client, tokens):  # noqa: F811
    pool, by_camera = _pool(app_client)
    classes = ["bed_exit", "staff"]
    for frame_id in by_camera["icu-1"][:8]:
        pool.set_labels(frame_id, ["bed_exit"], classes)
    for frame_id in by_camera["icu-1"][8:10]:
        pool.set_labels(frame_id, [], classes)
    records = pool.records(labeled=True)
    val = sum(1 for r in records if r.split == "val" and r.labels == ["bed_exit"])
    train = sum(1 for r in records if r.split == "train" and r.labels == ["bed_exit"])
    sign_in(app_client, tokens[Role.viewer])
    html = app_client.get("/review").text
    row = re.search(r"<th scope=\"row\">bed_exit</th><td>(\d+)</td><td>(\d+)</td>", html)
    assert row is not None and (int(row[1]), int(row[2])) == (train, val)
    need = app_client.app.state.runtime.settings.finetune_min_val_per_class
    missing = re.search(
        r"<th scope=\"row\">bed_exit</th>.*?<td>(?:<strong>(\d+)</strong>|none)", html, re.S
    )
    assert missing is not None and (int(missing[1]) if missing[1] else 0) == max(0, need - val)
    assert re.search(r"<th scope=\"row\">no event</th><td>\d+</td><td>\d+</td>", html)
    assert "The nightly fine-tune runs once 200 new frames" in html and "20 so far" in html
