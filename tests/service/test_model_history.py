"""The models page's history chart and per-class F1 changes (service/web/model_history.py)."""

from __future__ import annotations

import re

from service.web.model_history import history_view
from worker.serving.versions import ModelCard, ModelRegistry, VersionStatus
from worker.settings import Role

from .test_pages import app_client, checkpoint, sign_in  # noqa: F401 - fixtures


def card(version: str, after: dict | None, before: dict | None = None) -> ModelCard:
    return ModelCard(
        version=version,
        status=VersionStatus.RETIRED,
        reason="",
        created_at="2026-01-01T00:00:00+00:00",
        checkpoint_sha256="0" * 64,
        parent=None,
        metrics_before=before,
        metrics_after=after,
    )


def test_points_sit_on_the_scale_and_a_missing_metric_breaks_the_line():
    cards = [
        card("v0003", {"macro_f1": 0.8, "map": 0.9, "consistency": 0.6}),
        card("v0001", None),
        card("v0002", {"macro_f1": 0.5, "map": 0.7}),
    ]
    view = history_view(cards)
    assert [v["version"] for v in view["versions"]] == ["v0001", "v0002", "v0003"]
    f1 = next(s for s in view["series"] if s["key"] == "macro_f1")
    assert [p["version"] for p in f1["points"]] == ["v0002", "v0003"]
    top, bottom = view["top"], view["bottom"]
    for p in f1["points"]:  # y grows downwards: value 1 at the top, 0 at the bottom
        assert p["y"] == round(top + (1 - p["value"]) * (bottom - top), 1)
    consistency = next(s for s in view["series"] if s["key"] == "consistency")
    assert [len(line.split()) for line in consistency["lines"]] == [1]
    assert view["points"] == 5 and view["deltas"] == []


def test_per_class_deltas_compare_a_version_with_its_parent():
    before = {"macro_f1": 0.5, "per_class_f1": {"bed_exit": 0.4, "staff": 0.6}}
    after = {"macro_f1": 0.55, "per_class_f1": {"bed_exit": 0.7, "staff": 0.5}}
    view = history_view([card("v0002", after, before)])
    (delta,) = view["deltas"]
    changes = {c["name"]: round(c["delta"], 3) for c in delta["classes"]}
    assert changes == {"bed_exit": 0.3, "staff": -0.1}


def test_the_models_page_draws_the_chart(app_client, tokens, checkpoint):  # noqa: F811
    registry = ModelRegistry(app_client.app.state.runtime.storage.models)
    assert registry.active_version() == "v0001"  # ATCON_CHECKPOINT, registered at start-up
    registry.register(
        checkpoint,
        status=VersionStatus.CANDIDATE,
        reason="better",
        parent="v0001",
        metrics_before={"macro_f1": 0.6, "map": 0.7, "per_class_f1": {"bed_exit": 0.5}},
        metrics_after={
            "macro_f1": 0.7,
            "map": 0.75,
            "consistency": 0.62,
            "per_class_f1": {"bed_exit": 0.65},
        },
    )
    sign_in(app_client, tokens[Role.admin])
    html = app_client.get("/models").text
    assert '<svg role="img" aria-labelledby="history-title history-desc"' in html
    assert len(re.findall(r'<circle class="dot s-', html)) == 3
    assert "F1 per class" in html and "+0.150" in html


def test_the_models_page_lists_the_events_a_version_disagrees_on(
    app_client,  # noqa: F811
    tokens,
    checkpoint,  # noqa: F811
    tmp_path,
):
    import json

    report = {
        "tiou": 0.5,
        "videos": [
            {
                "video_id": "c" * 32,
                "camera": "icu-1",
                "served_version": "v0001",
                "agreed": 2,
                "only_served": [
                    {"id": "seizure-0", "label": "seizure", "start_s": 3.0, "end_s": 5.0}
                ],
                "only_candidate": [],
            },
            {"video_id": "d" * 32, "error": "video dddddddd has no results any more"},
        ],
        "summary": {"videos": 2, "agreed": 2, "only_served": 1, "only_candidate": 0},
    }
    path = tmp_path / "disagreements.json"
    path.write_text(json.dumps(report))
    registry = ModelRegistry(app_client.app.state.runtime.storage.models)
    card = registry.register(
        checkpoint,
        status=VersionStatus.CANDIDATE,
        reason="no labels",
        attachments={"disagreements.json": path},
    )
    sign_in(app_client, tokens[Role.admin])
    html = app_client.get("/models").text
    assert f"Events {card.version} and the served model disagree on, on 2 recent videos" in html
    assert f'href="/videos/{"c" * 32}?event=seizure-0">seizure 0:03.0–0:05.0</a>' in html
    assert "has no results any more" in html
