"""A hostile client for the real-server tests: bodies sent from a generator over a raw
socket, stopping as soon as the server answers, and what the server process spent.

httpx sends a whole request before it reads the answer, so it cannot say how much of
a body the server took before refusing it; this client interleaves sending with
watching for the answer.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

GIB = 1 << 30
BLOCK = 1 << 16


@dataclass
class Answer:
    status: int | None  # None: the server closed without an answer
    sent: int  # body bytes the server's socket accepted before the answer
    head: bytes


def zeros(total: int, *, prefix: bytes = b"") -> Iterator[bytes]:
    """``prefix`` then zero bytes up to ``total`` bytes in all, a block at a time."""
    yield prefix
    block = b"0" * BLOCK
    left = total - len(prefix)
    while left > 0:
        yield block[: min(BLOCK, left)]
        left -= BLOCK


def multipart(total: int, boundary: str = "hostileboundary") -> Iterator[bytes]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="big.zip"\r\nContent-Type: application/zip\r\n\r\n'
    ).encode()
    return zeros(total, prefix=head)


def send(
    port: int,
    method: str,
    path: str,
    body: Iterable[bytes],
    *,
    headers: dict[str, str] | None = None,
    content_length: int | None = None,
    timeout_s: float = 120.0,
) -> Answer:
    """Send a request whose body comes from ``body`` (chunked unless ``content_length``)
    until the server answers, closes, or the body ends; then read the status line."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    chunked = content_length is None
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {content_length}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.setblocking(False)
        chunks = iter(body)
        pending = memoryview(b"")
        sent = 0
        answer = b""
        finished = False
        closed = False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            want_write = [sock] if not finished and not closed else []
            readable, writable, _ = select.select([sock], want_write, [], 1.0)
            if readable:
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    break
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer:
                    answer += _rest(sock)
                    break
            if writable:
                if not pending:
                    piece = next(chunks, None)
                    if piece is None:
                        pending = memoryview(b"0\r\n\r\n" if chunked else b"")
                        finished = True
                    else:
                        framed = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
                        pending = memoryview(framed if chunked else piece)
                        sent += len(piece)
                try:
                    written = sock.send(pending)
                except (BlockingIOError, InterruptedError):
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    continue
                pending = pending[written:]
            if finished and not pending and not readable:
                sock.settimeout(timeout_s)
                with contextlib.suppress(OSError):
                    answer += sock.recv(65536)
                break
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
        return Answer(status, sent - len(pending), answer[:2048])
    finally:
        sock.close()


def _rest(sock: socket.socket) -> bytes:
    """What else of a small answer arrives within a second (its body)."""
    sock.settimeout(1.0)
    more = b""
    try:
        while len(more) < 65536:
            data = sock.recv(65536)
            if not data:
                break
            more += data
    except OSError:
        pass
    return more


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError("no VmRSS")


def written_bytes(pid: int) -> int:
    """Bytes the process wrote with write(2) and friends (files, not sockets)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise LookupError("no wchar")


class PeakRss:
    """Samples a process's resident memory in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, LookupError):
                return
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0
