"""A real S3-compatible server for tests: moto's standalone server (``moto[server]``, in
the dev extra) in its own process on a free port, one per test session.

:func:`s3_server` is the session fixture's body (``tests/conftest.py``); a test takes a
fresh bucket from :meth:`S3Server.bucket` and the environment a process needs to reach
it from :meth:`S3Server.env` (the usual ``AWS_*`` variables, nothing else).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import SESSION_LOGS
from tests.redis_helpers import free_port

#: moto accepts any credentials; these make boto3 sign its requests without a profile
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.port = port
        self.proc = proc
        self.log = log

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server (``AWS_*`` only)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **CREDENTIALS}

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def bucket(self) -> str:
        """A fresh, empty bucket."""
        name = f"atcon-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(str(o["Key"]) for page in pages for o in page.get("Contents", []))


def s3_server(log_dir: Path) -> Iterator[S3Server]:
    """Start ``python -m moto.server`` on a free port; stop it at the end."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        pytest.skip("moto[server] is not installed (pip install -e '.[dev]' installs it)")
    port = free_port()
    log = log_dir / "moto.log"
    SESSION_LOGS.append(log)
    with open(log, "ab") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    server = S3Server(port, proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited early:\n{log.read_text(errors='replace')}")
            try:
                httpx.get(f"{server.endpoint}/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not answer in 60 s") from None
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def own_process_env(
    base: Path, name: str, checkpoint: Path, common: dict[str, str]
) -> dict[str, str]:
    """``common`` plus a process's own data directory and copy of the checkpoint under
    ``base/name``: on the object store, processes share nothing but Redis and the bucket."""
    import shutil

    folder = base / name
    folder.mkdir()
    model = shutil.copyfile(checkpoint, folder / "model.pt")
    return {**common, "ATCON_DATA_DIR": str(folder / "data"), "ATCON_CHECKPOINT": str(model)}
