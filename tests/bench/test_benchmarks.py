"""The benchmarks still run: each at a toy size, checking the figures they report are sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import inbox, scoring, video

pytestmark = pytest.mark.slow


def test_scoring_benchmark_reports_rates_ratios_and_deviations(tmp_path: Path) -> None:
    out = tmp_path / "scoring.json"
    argv = ["--input-size", "64", "--batch-size", "4", "--rounds", "2", "--json", str(out)]
    assert scoring.main([*argv, "--no-compile"]) == 0
    result = json.loads(out.read_text())
    assert set(result["images_per_s"]) == {"baseline", "folded"}
    assert result["over_baseline"]["baseline"] == 1.0
    assert all(rate > 0 for rate in result["images_per_s"].values())
    # folding and casting change the answers by rounding only
    assert all(d < 0.05 for d in result["max_probability_deviation_from_float32"].values())


def test_video_benchmark_interleaves_variants_and_reports_ratios(tmp_path: Path) -> None:
    out = tmp_path / "video.json"
    argv = ["--minutes", "0.1", "--input-size", "64", "--repeats", "2", "--torch-threads", "1"]
    argv += ["--emulate-avx2", "--variants", "decode,detect,gated"]
    assert video.main([*argv, "--cache", str(tmp_path / "cache"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["rounds"]) == 2
    assert set(result["variants"]) == {"detect", "gated"}
    for mode, entry in result["variants"].items():
        ratios = [r[mode]["wall_s"] / r["decode"]["wall_s"] for r in result["rounds"]]
        assert entry["round_ratios"] == pytest.approx(ratios)
        assert entry["samples"] == 12  # 6 s at 2 samples/s
        assert set(entry["timings_s"]) >= {"decode_busy", "preprocess", "model", "maps"}
        assert entry["precision"] == "float32"  # the emulated class has no bfloat16
    assert result["variants"]["detect"]["scored"] == 12
    assert 1 <= result["variants"]["gated"]["scored"] <= 12
    cpu = result["cpu"]
    assert cpu["model"] and cpu["emulation"] == video.AVX2_ENV
    assert result["load_average"]["before"] and result["torch_threads"] == 1


def test_adaptation_benchmark_writes_its_page_from_one_run(tmp_path: Path) -> None:
    from bench import adaptation

    out = tmp_path / "adaptation.json"
    page = tmp_path / "page" / "adaptation.md"
    argv = ["--quick", "--seeds", "2", "--work", str(tmp_path / "work"), "--threads", "1"]
    argv += ["--methods", "none,adabn,recalibrate,supervised", "--severities", "5"]
    assert adaptation.main([*argv, "--json", str(out), "--page", str(page)]) == 0
    result = json.loads(out.read_text())
    main = result["main"]
    assert set(main["by_k"]) == {"0", "3", "10"}
    zero = main["by_k"]["0"]["methods"]
    assert set(zero) == {"none", "adabn", "recalibrate"}  # K = 0: no label-hungry method
    assert set(main["by_k"]["3"]["methods"]) == {"supervised"}
    for entry in zero.values():
        assert len(entry["runs"]) == 2 and len(entry["lift_points"]) == 3
    assert zero["none"]["lift_points"][0] == 0.0  # the baseline against itself
    assert result["other_shifts"] and result["severity_sweep"]["runs"].keys() == {"5"}
    # the product's row: each seed keeps the default's candidate if the gate passed it,
    # else the source model
    (other,) = result["other_shifts"].values()
    at3 = other["by_k"]["3"]["methods"]
    product = at3[adaptation.PRODUCT]
    candidate = at3[product["method"]]
    assert product["method"] == "adabn+atcon+supervised" and len(product["runs"]) == 2
    assert product["promoted"] == sum(r["promoted"] for r in product["runs"])
    for kept, run in zip(product["runs"], candidate["runs"], strict=True):
        assert kept["gate_frames"] >= 1 and kept["gate_reason"]
        expected = run["f1"] if kept["promoted"] else other["before"]["f1"]
        assert kept["f1"] == expected
    text = page.read_text()
    assert text.startswith("# Deployment shifts") and "## Verdict" in text
    assert "**The product as it runs**" in text
    for figure in ("adaptation_shifts.png", "adaptation_severity.png"):
        assert (page.parent / figure).read_bytes()[:4] == b"\x89PNG"


def test_adaptation_across_source_models_summarises_each_and_the_spread(tmp_path: Path) -> None:
    from bench import adaptation

    out, page = tmp_path / "sources.json", tmp_path / "sources.md"
    argv = ["--quick", "--seeds", "2", "--work", str(tmp_path / "work"), "--threads", "1"]
    argv += ["--methods", "none,adabn,adabn+atcon,supervised", "--ks", "0,3", "--source-seeds", "2"]
    assert adaptation.main([*argv, "--json", str(out), "--page", str(page)]) == 0
    result = json.loads(out.read_text())
    assert len(result["per_source"]) == 2
    entry = result["across_sources"]["0"]["adabn"]
    means = [r["by_k"]["0"]["methods"]["adabn"]["lift_points"][0] for r in result["per_source"]]
    assert entry["per_source"] == means
    assert entry["across"][0] == pytest.approx(sum(means) / 2)
    assert set(result["across_sources"]["3"]) == {"supervised"}
    # what ATCON adds: adabn+atcon against adabn, seed by seed on each source model
    contrast = result["atcon_contrasts"]["0"]["adabn+atcon"]
    assert contrast["without"] == "adabn" and len(contrast["per_source"]) == 2
    for source, interval in zip(result["per_source"], contrast["per_source"], strict=True):
        runs = source["by_k"]["0"]["methods"]
        pairs = zip(runs["adabn+atcon"]["runs"], runs["adabn"]["runs"], strict=True)
        differences = [100 * (a["f1"] - b["f1"]) for a, b in pairs]
        assert interval[0] == pytest.approx(sum(differences) / len(differences))
    text = page.read_text()
    assert text.startswith("# Deployment shifts across source models") and "`adabn`" in text
    assert "## What ATCON adds" in text


def test_api_footprint_benchmark_measures_both_sides_and_writes_its_section(
    tmp_path: Path,
) -> None:
    """One round at toy size: both sides measured, ratios above 1, the page's section
    written once and replaced (not appended) by a second run."""
    from bench import api_footprint

    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmark figures\n\nother rows\n", encoding="utf-8")
    report = api_footprint.run(1)
    assert set(report["medians"]) == set(api_footprint.SIDES)
    after = report["medians"]["app alone (after)"]
    assert after["rss"] > 0 and after["serve_rss"] > 0
    assert report["ratios"]["import_rss"] > 1.0  # the ML stack costs memory
    api_footprint.write_page(report, page)
    api_footprint.write_page(report, page)
    text = page.read_text(encoding="utf-8")
    assert text.count(api_footprint.START) == 1 and "other rows" in text
    assert report["cpu"] in text


def test_inbox_benchmark_times_the_inbox_and_both_ways_of_cutting_a_clip(tmp_path: Path) -> None:
    out = tmp_path / "inbox.json"
    argv = ["--videos", "4", "--events", "12", "--requests", "3", "--clip-seconds", "30"]
    assert inbox.main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["videos"], result["events"]) == (5, 14)
    assert set(result["requests"]) == {
        "healthz (baseline)",
        "GET /v1/events",
        "GET /v1/events?label&camera",
        "thumbnail (cached)",
        "/events page",
    }
    assert all(r["p95_ms"] >= r["p50_ms"] > 0 for r in result["requests"].values())
    methods = {name: c.get("method") for name, c in result["clips"].items()}
    assert methods["first, stream copy"] == "copy" and methods["first, re-encoded"] == "reencode"


def test_storage_benchmark_compares_the_backends_on_one_video(tmp_path: Path) -> None:
    pytest.importorskip("moto", reason="moto[server] (the dev extra) runs the S3 server")
    from bench import storage

    out = tmp_path / "storage.json"
    argv = ["--minutes", "0.05", "--repeats", "1", "--input-size", "64"]
    assert storage.main([*argv, "--cache", str(tmp_path / "cache"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    local, stored = result["local"], result["object_store"]
    assert local["samples"] == stored["samples"] == 6  # 3 s at 2 samples/s, both backends
    assert local["total_s"] > 0 and stored["total_s"] > 0 and stored["publish_s"] > 0
    assert result["object_store_over_local"] == pytest.approx(stored["total_s"] / local["total_s"])
    # the decoder's ranged reads bring each byte of the video about once
    assert 0 < result["decoder_fetched_bytes"] <= 1.1 * result["video"]["bytes"]
