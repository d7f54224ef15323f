"""Model versions: registration, the promotion gate, activation and roll-back."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from worker.serving.versions import (
    ModelRegistry,
    NoCameraVersionError,
    UnknownVersionError,
    VersionError,
    VersionStatus,
    promotion_gate,
)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights-1")
    return path


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_gate_promotes_within_tolerance() -> None:
    before = {"macro_f1": 0.80, "consistency": 0.50}
    decision = promotion_gate(before, {"macro_f1": 0.796, "consistency": 0.51})
    assert decision.promote and decision.status is VersionStatus.ACTIVE


def test_gate_rejects_an_f1_drop_beyond_tolerance() -> None:
    before = {"macro_f1": 0.80, "consistency": 0.50}
    decision = promotion_gate(before, {"macro_f1": 0.79, "consistency": 0.9})
    assert not decision.promote and decision.status is VersionStatus.REJECTED
    assert "1.00 points" in decision.reason


def test_gate_rejects_falling_consistency_without_a_detection_gain_and_nan() -> None:
    before = {"macro_f1": 0.8, "consistency": 0.5}
    flat = promotion_gate(before, {"macro_f1": 0.804, "consistency": 0.49})
    assert not flat.promote and flat.status is VersionStatus.REJECTED
    assert "consistency fell (0.5000 -> 0.4900)" in flat.reason
    assert "at most the 0.5 points" in flat.reason
    nan = promotion_gate(before, {"macro_f1": float("nan"), "consistency": 0.6})
    assert nan.status is VersionStatus.REJECTED and "NaN" in nan.reason


def test_gate_lets_a_detection_gain_through_a_consistency_fall_and_says_so() -> None:
    """Detection first: consistency breaks ties, it does not veto a real F1 gain."""
    before = {"macro_f1": 0.40, "consistency": 0.22}
    after = {"macro_f1": 0.75, "consistency": -0.34, "images": 12}
    decision = promotion_gate(before, after)
    assert decision.promote and decision.status is VersionStatus.ACTIVE
    assert "+35.00 points" in decision.reason and "a fall, recorded" in decision.reason
    strict = promotion_gate(before, after, strict_consistency=True)
    assert not strict.promote and "ATCON_GATE_STRICT_CONSISTENCY" in strict.reason


def test_gate_without_validation_keeps_a_candidate() -> None:
    decision = promotion_gate(None, None)
    assert decision.status is VersionStatus.CANDIDATE and "no labeled validation" in decision.reason
    with pytest.raises(ValueError, match="f1_tolerance_points"):
        promotion_gate(None, None, f1_tolerance_points=-1)


def test_register_activate_and_roll_back(registry: ModelRegistry, checkpoint: Path) -> None:
    first = registry.register(checkpoint, status=VersionStatus.ACTIVE, reason="initial model")
    assert first.version == "v0001" and first.status is VersionStatus.ACTIVE
    assert registry.active_version() == "v0001"
    checkpoint.write_bytes(b"weights-2")
    second = registry.register(
        checkpoint, status=VersionStatus.ACTIVE, reason="promoted", parent="v0001"
    )
    assert registry.active_version() == second.version == "v0002"
    assert registry.get("v0001").status is VersionStatus.RETIRED
    assert registry.checkpoint_path("v0001").read_bytes() == b"weights-1"

    registry.activate("v0001", reason="roll back")
    assert registry.active_version() == "v0001"
    assert registry.get("v0001").status is VersionStatus.ACTIVE
    assert registry.get("v0002").status is VersionStatus.RETIRED
    assert [h["status"] for h in registry.get("v0001").history] == [
        "candidate",
        "active",
        "retired",
        "active",
    ]
    card = json.loads((registry.root / "v0001" / "card.json").read_text())
    assert card["status"] == "active" and card["checkpoint_sha256"] == first.checkpoint_sha256


def test_rejected_and_unknown_versions_cannot_be_activated(
    registry: ModelRegistry, checkpoint: Path
) -> None:
    registry.register(checkpoint, status=VersionStatus.ACTIVE, reason="initial")
    bad = registry.register(checkpoint, status=VersionStatus.REJECTED, reason="F1 fell")
    with pytest.raises(VersionError, match="rejected"):
        registry.activate(bad.version)
    with pytest.raises(UnknownVersionError, match="does not exist"):
        registry.activate("v0099")
    with pytest.raises(UnknownVersionError, match="not a model version name"):
        registry.activate("../etc")
    assert registry.active_version() == "v0001"


def test_interrupted_registration_leaves_no_version(
    registry: ModelRegistry, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("worker.serving.versions.atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        registry.register(checkpoint, status=VersionStatus.CANDIDATE, reason="x")
    monkeypatch.undo()
    assert registry.versions() == []
    assert not list(registry.root.glob(".tmp-*"))
    (registry.root / ".tmp-left-by-a-kill").mkdir()
    assert registry.cleanup() == 1


def test_missing_checkpoint_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(VersionError, match="does not exist"):
        registry.register(tmp_path / "nope.pt", status=VersionStatus.CANDIDATE, reason="x")


def _four(registry: ModelRegistry, checkpoint: Path) -> list[str]:
    """v0001 active, then v0002 candidate, v0003 active (v0001 retired), v0004 candidate."""
    names = []
    for i, status in enumerate([VersionStatus.ACTIVE, VersionStatus.CANDIDATE] * 2):
        checkpoint.write_bytes(f"weights-{i}".encode())
        names.append(registry.register(checkpoint, status=status, reason=f"r{i}").version)
    return names


def test_activation_for_cameras_keeps_the_default(
    registry: ModelRegistry, checkpoint: Path
) -> None:
    _, night, default, other = _four(registry, checkpoint)
    assert registry.active_version() == default == "v0003"
    card = registry.activate(night, reason="night ward", cameras=["icu-3", "icu-4", "icu-3"])
    assert registry.camera_versions() == {"icu-3": night, "icu-4": night}
    assert registry.active_version() == default  # the default is untouched
    assert registry.active_version("icu-3") == night
    assert registry.active_version("icu-9") == default
    assert registry.active_checkpoint("icu-4") == (night, registry.checkpoint_path(night))
    assert card.status is VersionStatus.CANDIDATE  # the status speaks of the default only
    assert "active for camera(s) icu-3, icu-4: night ward" in card.history[-1]["reason"]
    assert registry.cameras_of(night) == ["icu-3", "icu-4"]

    registry.activate(other, cameras=["icu-4"])  # one camera moves on: one version each
    assert registry.camera_versions() == {"icu-3": night, "icu-4": other}
    assert "replaced for camera(s) icu-4 by v0004" in registry.get(night).history[-1]["reason"]
    pointer = json.loads((registry.root / "CAMERAS.json").read_text())
    assert pointer == {"cameras": {"icu-3": night, "icu-4": other}}

    assert registry.deactivate_cameras(["icu-4"]) == {"icu-4": other}
    assert registry.active_version("icu-4") == default
    with pytest.raises(NoCameraVersionError, match="default version already"):
        registry.deactivate_cameras(["icu-4"])
    registry.activate(other, cameras=["icu-4"])  # and again
    assert registry.active_version("icu-4") == other


def test_camera_activation_refuses_bad_input(registry: ModelRegistry, checkpoint: Path) -> None:
    registry.register(checkpoint, status=VersionStatus.ACTIVE, reason="initial")
    bad = registry.register(checkpoint, status=VersionStatus.REJECTED, reason="F1 fell")
    with pytest.raises(VersionError, match="rejected"):
        registry.activate(bad.version, cameras=["icu-3"])
    with pytest.raises(ValueError, match="camera"):
        registry.activate("v0001", cameras=["../icu"])
    with pytest.raises(ValueError, match="at least one camera"):
        registry.activate("v0001", cameras=[])
    with pytest.raises(TypeError, match="not one string"):
        registry.activate("v0001", cameras="icu-3")
    assert registry.camera_versions() == {}
    (registry.root / "CAMERAS.json").write_text('{"cameras": {"icu-3": "../../etc"}}')
    with pytest.raises(VersionError, match="not a version"):
        registry.active_version("icu-3")


def test_a_promoted_camera_version_serves_that_camera_only(
    registry: ModelRegistry, checkpoint: Path
) -> None:
    default = registry.register(checkpoint, status=VersionStatus.ACTIVE, reason="initial")
    night = registry.register(
        checkpoint, status=VersionStatus.ACTIVE, reason="promoted", cameras=["night-1"]
    )
    assert night.cameras == ["night-1"] and registry.get(night.version).cameras == ["night-1"]
    assert registry.active_version() == default.version
    assert registry.camera_versions() == {"night-1": night.version}
    assert registry.get(default.version).cameras is None


def test_concurrent_activations_lose_nothing(registry: ModelRegistry, checkpoint: Path) -> None:
    names = [
        registry.register(checkpoint, status=VersionStatus.CANDIDATE, reason=str(i)).version
        for i in range(8)
    ]
    start = threading.Barrier(len(names))

    def activate(i: int) -> None:
        start.wait()
        for _ in range(5):  # each its own camera, and all of them the shared one
            registry.activate(names[i], cameras=[f"own-{i}", "shared"])

    threads = [threading.Thread(target=activate, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    scopes = registry.camera_versions()
    assert {c: v for c, v in scopes.items() if c != "shared"} == {
        f"own-{i}": name for i, name in enumerate(names)
    }  # no activation overwrote another's camera
    assert scopes["shared"] in names
    # every card's history was appended under the lock: 5 activations each, none lost
    for name in names:
        notes = [h["reason"] for h in registry.get(name).history]
        assert sum("active for camera(s)" in n for n in notes) == 5
    assert not list(registry.root.glob(".CAMERAS.json.*"))  # no temporary file left


def test_attachments_travel_with_the_version(
    registry: ModelRegistry, checkpoint: Path, tmp_path: Path
) -> None:
    report = tmp_path / "comparison.json"
    report.write_text(json.dumps({"summary": {"frames": 1}}))
    overlay = tmp_path / "f1.candidate.png"
    overlay.write_bytes(b"png")
    card = registry.register(
        checkpoint,
        status=VersionStatus.CANDIDATE,
        reason="no labeled validation set",
        attachments={"comparison.json": report, "comparison/f1.candidate.png": overlay},
    )
    assert registry.comparison(card.version) == {"summary": {"frames": 1}}
    path = registry.attachment_path(card.version, "comparison/f1.candidate.png")
    assert path.read_bytes() == b"png"
    for bad in ("../card.json", "card.json", "comparison/../../x", "/etc/passwd", "missing.png"):
        with pytest.raises(UnknownVersionError):
            registry.attachment_path(card.version, bad)
    with pytest.raises(VersionError, match="cannot be a file"):
        registry.register(
            checkpoint,
            status=VersionStatus.CANDIDATE,
            reason="x",
            attachments={"../escape": report},
        )
    plain = registry.register(checkpoint, status=VersionStatus.CANDIDATE, reason="no files")
    assert registry.comparison(plain.version) is None


def test_concurrent_default_activations_leave_one_active_version(
    registry: ModelRegistry, checkpoint: Path
) -> None:
    names = [
        registry.register(checkpoint, status=VersionStatus.CANDIDATE, reason=str(i)).version
        for i in range(2)
    ]
    start = threading.Barrier(len(names))

    def activate(name: str) -> None:
        start.wait()
        for _ in range(10):
            registry.activate(name)

    threads = [threading.Thread(target=activate, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    statuses = {card.version: card.status for card in registry.versions()}
    active = [name for name, status in statuses.items() if status is VersionStatus.ACTIVE]
    assert active == [registry.active_version()]
    # and as stored on disk, not only as read: the last writer's history agrees
    stored = {
        name: json.loads((registry.root / name / "card.json").read_text())["status"]
        for name in names
    }
    assert sorted(stored.values()) == ["active", "retired"]


def test_a_crash_between_pointer_and_cards_leaves_one_active_version(
    registry: ModelRegistry, checkpoint: Path
) -> None:
    """An activation killed after writing ACTIVE but before rewriting the cards: the
    pointer is the truth, so readers still see exactly one active version."""
    first = registry.register(checkpoint, status=VersionStatus.ACTIVE, reason="first").version
    second = registry.register(checkpoint, status=VersionStatus.CANDIDATE, reason="next").version
    (registry.root / "ACTIVE").write_text(second + "\n")  # the step before the crash
    cards = {card.version: card for card in registry.versions()}
    assert cards[second].status is VersionStatus.ACTIVE
    assert cards[first].status is VersionStatus.RETIRED
    assert registry.get(first).status is VersionStatus.RETIRED
    # activating again repairs the stored cards
    registry.activate(first, reason="roll back")
    assert [c.version for c in registry.versions() if c.status is VersionStatus.ACTIVE] == [first]
    stored = json.loads((registry.root / second / "card.json").read_text())
    assert stored["status"] == "retired"


def _ensure_initial_in_a_process(root: str, checkpoint: str, start: float) -> None:
    import time

    time.sleep(max(0.0, start - time.time()))  # both processes race from the same moment
    ModelRegistry(root).ensure_initial(checkpoint)


def test_the_first_version_is_registered_once_even_by_two_processes(
    registry: ModelRegistry, checkpoint: Path
) -> None:
    import multiprocessing
    import time

    context = multiprocessing.get_context("spawn")
    start = time.time() + 2.0
    processes = [
        context.Process(
            target=_ensure_initial_in_a_process, args=(str(registry.root), str(checkpoint), start)
        )
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    cards = registry.versions()
    assert [(c.version, c.status, c.reason) for c in cards] == [
        ("v0001", VersionStatus.ACTIVE, ModelRegistry.INITIAL_REASON)
    ]
    assert registry.ensure_initial(checkpoint) is None  # idempotent
    assert len(registry.versions()) == 1


def test_the_first_version_is_not_registered_over_an_active_one(
    registry: ModelRegistry, checkpoint: Path, tmp_path: Path
) -> None:
    assert registry.ensure_initial(None) is None
    assert registry.ensure_initial(tmp_path / "missing.pt") is None
    assert registry.versions() == []
    first = registry.ensure_initial(checkpoint)
    assert first is not None and first.status is VersionStatus.ACTIVE
    other = tmp_path / "other.pt"
    other.write_bytes(b"weights-2")
    assert registry.ensure_initial(other) is None  # a version is active: nothing to do
    assert registry.active_version() == first.version


def test_an_interrupted_first_registration_is_activated_not_copied_again(
    registry: ModelRegistry, checkpoint: Path
) -> None:
    """Killed after the version's folder appeared but before ACTIVE was written: the next
    start activates that version rather than registering the same weights twice."""
    reason = ModelRegistry.INITIAL_REASON
    stranded = registry.register(checkpoint, status=VersionStatus.CANDIDATE, reason=reason)
    assert registry.active_version() is None
    card = registry.ensure_initial(checkpoint)
    assert card is not None and card.version == stranded.version
    assert registry.active_version() == stranded.version and len(registry.versions()) == 1


def test_a_fine_tunes_candidate_with_the_same_weights_is_not_activated(
    registry: ModelRegistry, checkpoint: Path
) -> None:
    candidate = registry.register(checkpoint, status=VersionStatus.CANDIDATE, reason="tuned")
    card = registry.ensure_initial(checkpoint)
    assert card is not None and card.version != candidate.version
    assert registry.get(candidate.version).status is VersionStatus.CANDIDATE
