"""Body limits before authentication, against a real uvicorn (``atcon serve``).

A caller without a token sends 1 GiB bodies (from a generator, over a raw socket that
stops at the server's answer) to every kind of route; each is refused after the
server took at most a few MiB, and the API's memory, the bytes it wrote and its
temporary directories do not grow. A caller with a token is cut off at the frame
upload's limit while the bytes arrive.
"""

from __future__ import annotations

import pytest

from tests.processes import Server
from worker.settings import Role

from .hostile import GIB, PeakRss, multipart, send, tree_bytes, written_bytes, zeros

pytestmark = pytest.mark.slow

MIB = 1 << 20
#: what the server may take before it answers: its read buffer plus the kernel's
#: socket buffers on both sides
MOST_SENT = 16 * MIB
#: growth of the API's resident memory allowed during one oversized body
MOST_RSS_GROWTH = 48 * MIB
MULTIPART = {"Content-Type": "multipart/form-data; boundary=hostileboundary"}
JSON = {"Content-Type": "application/json"}
FRAME_ID = "0" * 32


@pytest.fixture(scope="module")
def server(tmp_path_factory, token_setting):
    root = tmp_path_factory.mktemp("body-limits")
    (root / "tmp").mkdir()
    env = {
        "ATCON_DATA_DIR": str(root / "data"),
        "ATCON_API_TOKENS": token_setting,
        "ATCON_EMBEDDED_WORKERS": "0",
        "ATCON_MAX_FRAME_UPLOAD_BYTES": str(2 * MIB),
        "TMPDIR": str(root / "tmp"),
    }
    server = Server(env, root / "api.log").start()
    server.root = root  # type: ignore[attr-defined]
    yield server
    assert server.stop_cleanly(), server.output()


CASES = [
    ("POST", "/v1/frames", MULTIPART, "multipart"),
    ("POST", "/v1/videos", MULTIPART, "multipart"),
    ("POST", "/v1/finetune", JSON, "json"),
    ("PUT", f"/v1/frames/{FRAME_ID}/labels", JSON, "json"),
    ("PUT", f"/v1/videos/{FRAME_ID}/events/e1/review", JSON, "json"),
    ("POST", "/signin", {"Content-Type": "application/x-www-form-urlencoded"}, "form"),
    ("POST", "/v1/frames", {"Content-Type": "application/x-www-form-urlencoded"}, "form"),
]


def _body(kind: str):
    if kind == "multipart":
        return multipart(GIB)
    if kind == "json":
        return zeros(GIB, prefix=b'{"labels": ["')
    return zeros(GIB, prefix=b"token=")


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
@pytest.mark.parametrize(("method", "path", "headers", "kind"), CASES)
def test_an_unauthenticated_gib_is_refused_early(server, method, path, headers, kind, declared):
    pid, root = server.pid, server.root
    temp_before = tree_bytes(root / "tmp") + tree_bytes(root / "data" / "tmp")
    written_before = written_bytes(pid)
    with PeakRss(pid) as rss:
        baseline = rss.peak
        answer = send(
            server.port,
            method,
            path,
            _body(kind),
            headers=headers,
            content_length=GIB if declared else None,
        )
    assert answer.status in (401, 413), answer.head
    assert b"application/problem+json" in answer.head, answer.head
    assert answer.sent <= MOST_SENT, f"{answer.sent / MIB:.1f} MiB taken before the answer"
    assert rss.peak - baseline <= MOST_RSS_GROWTH, f"RSS grew {(rss.peak - baseline) / MIB} MiB"
    assert written_bytes(pid) - written_before <= 4 * MIB
    temp_after = tree_bytes(root / "tmp") + tree_bytes(root / "data" / "tmp")
    assert temp_after - temp_before <= 4 * MIB


def test_an_operator_frame_upload_stops_at_its_limit(server, tokens):
    answer = send(
        server.port,
        "POST",
        "/v1/frames",
        multipart(GIB),
        headers={**MULTIPART, "Authorization": f"Bearer {tokens[Role.operator]}"},
    )
    assert answer.status == 413, answer.head
    assert b"ATCON_MAX_FRAME_UPLOAD_BYTES" in answer.head
    assert answer.sent <= 2 * MIB + MOST_SENT
    assert tree_bytes(server.root / "data" / "tmp") == 0


def test_a_small_json_body_still_reaches_authentication(server):
    answer = send(server.port, "POST", "/v1/finetune", [b"{}"], headers=JSON)
    assert answer.status == 401, answer.head


@pytest.mark.parametrize("path", ["/v1/videos", "/v1/frames"])
def test_an_aborted_upload_is_one_info_line(server, tokens, path):
    import socket

    from tests.processes import wait_for

    before = len(server.output())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {tokens[Role.operator]}\r\n"
        "Content-Type: multipart/form-data; boundary=hostileboundary\r\n"
        f"Content-Length: {MIB}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + b"".join(multipart(256 << 10)))

    def aborted() -> str | None:
        text = server.output()[before:]
        return text if "went away" in text else None

    log = wait_for(aborted, 10, "the aborted upload in the log")
    assert "ERROR" not in log and "Traceback" not in log, log
    assert tree_bytes(server.root / "data" / "tmp") == 0
