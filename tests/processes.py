"""Real processes for tests: a uvicorn API (``atcon serve``) and queue workers.

Each runs ``python -m MODULE ...`` (``service.cli`` for the CLI) from this checkout,
with an environment made of the given ``ATCON_*`` variables only (the caller's
``ATCON_*`` are dropped), logs to a file the failing test prints, and is stopped with
SIGTERM (SIGKILL after a grace).
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.redis_helpers import free_port

REPO = Path(__file__).resolve().parents[1]
#: every log file a process of this test session wrote (grepped for tokens at the end)
SESSION_LOGS: list[Path] = []


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATCON_")}
    # one intra-op thread, as in this process (tests/conftest.py), and no start-up
    # measurement of the decoder (worker.runtime.threads) in every process a test starts
    env.setdefault("ATCON_TORCH_THREADS", "1")
    env.update(extra)
    env["PYTHONPATH"] = str(REPO)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = clean_env(env)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        SESSION_LOGS.append(self.log)
        handle = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.args],
            env=self.env,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace_s: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def stop_cleanly(self) -> bool:
        """Stop; True when the process exited by itself (uvicorn re-raises SIGTERM after
        a graceful shutdown, so -SIGTERM counts when its log says it shut down)."""
        code = self.stop()
        if code == 0:
            return True
        return code == -signal.SIGTERM and "Application shutdown complete" in self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Server(Process):
    """``atcon serve`` on a free port; ``start`` returns once /healthz answers."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        port: int | None = None,
        *,
        args: list[str] | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.port = port or free_port()
        command = ["service.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        super().__init__(command + (args or []), env, log)
        self.scheme = "https" if "--ssl-certfile" in (args or []) else "http"
        self.verify = verify

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> Server:
        super().start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"atcon serve exited early:\n{self.output()}")
            try:
                answer = httpx.get(f"{self.url}/healthz", timeout=1, verify=self.verify)
                if answer.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"atcon serve did not answer in {timeout_s} s:\n{self.output()}")


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll ``condition()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
