"""Model versions through the object store (a real moto server, a real Redis for the
deployment-wide lock): a version registered on one machine is served on another, an
activation is seen everywhere, registrations on two machines never take one name, and
an activation that fails before its pointer is written changes nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from worker._exceptions import NoModelError, ObjectStoreError
from worker.object_store import ObjectStore
from worker.serving.model_cache import ModelRef, model_reference
from worker.serving.versions import VersionStatus
from worker.settings import Settings
from worker.storage_s3 import ObjectStorage

pytestmark = pytest.mark.redis


def served(storage: ObjectStorage, camera: str | None = None) -> ModelRef | None:
    """What ``storage``'s machine serves for ``camera`` (None: no version is active)."""
    try:
        return model_reference(storage, Settings(data_dir=storage.root), camera)
    except NoModelError:
        return None


def checkpoint(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"ck-{content.hex()[:8]}.pt"
    path.write_bytes(content)
    return path


def test_a_version_registered_on_one_machine_is_served_on_another(machines, tmp_path, s3):
    machine, bucket = machines
    trainer, worker = machine("trainer"), machine("worker")
    assert served(worker) is None
    card = trainer.registry().register(
        checkpoint(tmp_path, b"weights one"), status=VersionStatus.ACTIVE, reason="first"
    )
    assert card.version == "v0001"
    assert f"m/models/{card.version}/checkpoint.pt" in s3.keys(bucket)
    assert "m/models/ACTIVE" in s3.keys(bucket)

    ref = served(worker)
    assert ref is not None and ref.version == "v0001"
    assert ref.checkpoint.read_bytes() == b"weights one"
    assert ref.checkpoint.is_relative_to(worker.root)
    assert worker.registry().get("v0001").status is VersionStatus.ACTIVE


def test_an_activation_on_the_api_is_seen_by_the_workers(machines, tmp_path):
    machine, _ = machines
    trainer, api, worker = machine("trainer"), machine("api"), machine("worker")
    registry = trainer.registry()
    registry.register(checkpoint(tmp_path, b"one"), status=VersionStatus.ACTIVE, reason="r")
    registry.register(checkpoint(tmp_path, b"two"), status=VersionStatus.CANDIDATE, reason="r")
    assert served(worker).version == "v0001"
    # the worker fetched v0001's checkpoint only: v0002's comes when it is served
    assert not (worker.models / "v0002" / "checkpoint.pt").exists()

    api.registry().activate("v0002", reason="an admin")
    ref = served(worker)
    assert ref is not None
    assert ref.version == "v0002" and ref.checkpoint.read_bytes() == b"two"
    assert trainer.registry().get("v0001").status is VersionStatus.RETIRED

    api.registry().activate("v0001", reason="roll back", cameras=["bed-3"])
    assert served(worker, camera="bed-3").version == "v0001"
    assert served(worker, camera="bed-4").version == "v0002"


def test_two_machines_registering_at_once_take_distinct_names(machines, tmp_path, s3):
    machine, bucket = machines
    first, second = machine("a"), machine("b")
    errors: list[BaseException] = []

    def register(storage: ObjectStorage, tag: bytes) -> None:
        try:
            for i in range(3):
                storage.registry().register(
                    checkpoint(tmp_path, tag + bytes([i])),
                    status=VersionStatus.CANDIDATE,
                    reason="race",
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=register, args=(s, t)) for s, t in ((first, b"A"), (second, b"B"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    names = [c.version for c in machine("reader").registry().versions()]
    assert names == [f"v{i:04d}" for i in range(1, 7)]
    stored = {k.split("/")[2] for k in s3.keys(bucket, "m/models/v")}
    assert stored == set(names)


def test_an_activation_that_fails_before_its_pointer_changes_nothing(machines, tmp_path):
    machine, _ = machines
    trainer, api, worker = machine("trainer"), machine("api"), machine("worker")
    registry = trainer.registry()
    registry.register(checkpoint(tmp_path, b"one"), status=VersionStatus.ACTIVE, reason="r")
    registry.register(checkpoint(tmp_path, b"two"), status=VersionStatus.CANDIDATE, reason="r")

    class PointerRefused(ObjectStore):
        def put_file(self, name, path):
            if name == "models/ACTIVE":
                raise ObjectStoreError("injected: the pointer's PUT failed")
            super().put_file(name, path)

    api.store = PointerRefused(api.store.location, api.store.client)
    with pytest.raises(ObjectStoreError, match="injected"):
        api.registry().activate("v0002", reason="an admin")
    assert served(worker).version == "v0001"
    assert machine("fresh").registry().active_version() == "v0001"
