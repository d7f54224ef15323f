"""Real Redis for tests: the machine's server on 127.0.0.1:6379, one database per suite.

The service's tests own databases 11-14 and the pages' tests 8-9, flushed before and
after each test; the machine's Redis itself is never stopped. A private server (for "Redis stopped"
tests) is started on a free port with :func:`private_redis`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

REDIS_HOST = "127.0.0.1"
#: the machine's server; ATCON_TEST_REDIS_PORT points a second checkout's tests at a
#: server of their own, so that two test runs at once do not flush each other's data
REDIS_PORT = int(os.environ.get("ATCON_TEST_REDIS_PORT", "6379"))
#: database of each suite: 7 fine-tune end to end, 8-9 pages, 10 scheduler, 11-14 the
#: service; never 0-6 nor above 14
DB_FINETUNE_E2E = 7
DB_PAGES = 8
DB_QUEUE = 11
DB_API = 12
DB_E2E = 13
DB_CRASH = 14


def redis_url(db: int, port: int = REDIS_PORT) -> str:
    if not 7 <= db <= 14:
        raise ValueError(f"db must be one of the test suites' databases 7-14, got {db}")
    return f"redis://{REDIS_HOST}:{port}/{db}"


@contextmanager
def flushed_db(db: int) -> Iterator[str]:
    """Yield the URL of database ``db``, flushed before and after; skip without a server."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(
            f"no Redis on 127.0.0.1:{REDIS_PORT} (`make test` starts one: scripts/ensure-services)"
        )
    client.flushdb()
    try:
        yield redis_url(db)
    finally:
        client.flushdb()
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own on a free port, with append-only persistence."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="atcon-private-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{REDIS_HOST}:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind", REDIS_HOST,
                "--port", str(self.port),
                "--dir", self.dir,
                "--appendonly", "yes",
                "--save", "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(host=REDIS_HOST, port=self.port, socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"private redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
