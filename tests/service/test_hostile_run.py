"""The hostile run's quick subset (``tests/service/hostile_run.py``) against a real
``atcon serve``, Redis and workers, so that the script keeps working: every bad input
is refused with a 4xx and a sentence, none gets a 5xx, and its reports are written."""

from __future__ import annotations

import json

import pytest

from tests.redis_helpers import DB_E2E, flushed_db

from .hostile_run import run

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_quick_hostile_run(tmp_path):
    with flushed_db(DB_E2E) as url:
        summary = run(tmp_path / "out", redis_url=url, quick=True)
    tally = summary["tally"]
    assert tally["tried"] >= 40
    assert tally["server_errors"] == 0, summary["not_refused_with_a_sentence"]
    # a 64 KiB header is served: not an attack by itself
    assert set(summary["by_category"]["headers"]) <= {"accepted", "refused"}
    by_job = "bad zips (import job)"  # accepted (202); their import jobs fail
    assert set(summary["by_category"][by_job]) == {"accepted"}
    assert {j["status"] for j in summary["import_jobs"]} == {"failed"}
    assert all("no entry of the zip archive" in j["error"] for j in summary["import_jobs"])
    skip = ("headers", "throttle", by_job)
    others = {k: v for k, v in summary["by_category"].items() if k not in skip}
    assert all(set(v) == {"refused"} for v in others.values()), others
    assert summary["throttle"].get(429), summary["throttle"]
    for row in summary["oversized"]:
        assert row["status"] in (401, 413), row
        # the frame cap (16 MiB) with a token, plus read and socket buffers
        assert row["bytes_taken"] < 40 << 20, row
    written = json.loads((tmp_path / "out" / "hostile-run.json").read_text())
    assert written["tally"] == tally
    assert "5xx: **0**" in (tmp_path / "out" / "hostile-run.md").read_text()
