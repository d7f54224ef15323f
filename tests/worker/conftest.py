"""Fixtures of the worker tests: the shared detection inputs, made once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic.synth import SynthResult
from tests.redis_helpers import DB_QUEUE, flushed_db
from tests.s3_helpers import S3Server
from tests.worker.detect_inputs import make_checkpoint, make_ward
from worker.settings import Settings
from worker.storage import open_storage
from worker.storage_s3 import ObjectStorage


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("checkpoint") / "model.pt")


@pytest.fixture(scope="module")
def ward(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return make_ward(tmp_path_factory.mktemp("ward"))


@pytest.fixture
def machines(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A factory of storages, each with its own data directory (one "machine"), on one
    bucket of the session's moto server (prefix ``m``) and one flushed Redis database;
    yields the factory and the bucket's name."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3.bucket()
    with flushed_db(DB_QUEUE) as url:

        def machine(name: str) -> ObjectStorage:
            settings = Settings(
                data_dir=tmp_path / name, storage_url=f"s3://{bucket}/m", redis_url=url
            )
            storage = open_storage(settings)
            assert isinstance(storage, ObjectStorage)
            storage.ensure_layout()
            return storage

        yield machine, bucket
