"""The API process's footprint: the app alone against the app with the full ML stack.

Side by side, in fresh interpreters, alternating rounds:

* **import**: seconds to import the app with what it pulls in (measured inside the
  child, as ``python -X importtime`` would sum it), the child's whole wall time
  (interpreter start included), and the resident set size (RSS) right after;
* **idle server**: the RSS of a real ``atcon serve`` (uvicorn, API only:
  ``ATCON_EMBEDDED_WORKERS=0``, the deployment with Redis) once ``/healthz`` answers
  and it has sat idle for a second.

The baseline ("full stack") imports what the API imported before issue 13 made it
torch-free: torch, torchvision, PyAV, the model code and the detector, then the
app. The candidate imports the app alone. The figures and the CPU's name go to a
section of ``docs/results/benchmarks.md`` (rewritten by each run) and to JSON.

    python -m bench.api_footprint                      # 5 rounds, writes the page
    python -m bench.api_footprint --rounds 1 --no-page --json bench/out/footprint.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "results" / "benchmarks.md"
START = "<!-- api_footprint:start -->"
END = "<!-- api_footprint:end -->"

logger = logging.getLogger("bench.api_footprint")

#: what the API process imported before it was made torch-free
FULL_STACK = (
    "import torch, torchvision, av, models.atcon, models.checkpoint, worker.detection.detector"
)
SIDES = {"full stack (before)": FULL_STACK, "app alone (after)": ""}

_IMPORT_CHILD = """
import json, sys, time
t0 = time.perf_counter()
{preload}
import service.main
took = time.perf_counter() - t0
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
print(json.dumps({{"seconds": took, "rss": rss}}))
"""

_SERVE_CHILD = """
import sys
{preload}
from service.cli import main
sys.exit(main(["serve", "--port", sys.argv[1]]))
"""


def cpu_name() -> str:
    """The CPU's model name and core count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _preload(side: str) -> str:
    return SIDES[side]


def measure_import(side: str) -> dict[str, float]:
    """Import time (seconds, inside the child) and RSS after import (bytes)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_CHILD.format(preload=_preload(side))],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    figures["process_seconds"] = time.perf_counter() - started
    return figures


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


def measure_serve(side: str, idle_s: float = 1.0, timeout_s: float = 120.0) -> int:
    """RSS (bytes) of an idle ``atcon serve`` (API only) after ``/healthz`` answers."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="atcon-footprint-") as data:
        env = _env()
        env.update(ATCON_DATA_DIR=data, ATCON_DEV="1", ATCON_EMBEDDED_WORKERS="0")
        env.pop("ATCON_REDIS_URL", None)
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVE_CHILD.format(preload=_preload(side)), str(port)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"atcon serve exited with {process.returncode}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).is_success:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("atcon serve did not answer /healthz in time")
                time.sleep(0.2)
            time.sleep(idle_s)
            return _rss(process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run(rounds: int) -> dict[str, Any]:
    """Alternate the two sides ``rounds`` times; return medians and every round."""
    load_before = os.getloadavg()[0]
    samples: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    for index in range(rounds):
        order = list(SIDES) if index % 2 == 0 else list(reversed(SIDES))
        for side in order:
            figures = measure_import(side)
            figures["serve_rss"] = measure_serve(side)
            samples[side].append(figures)
            logger.info("round %d %s: %s", index + 1, side, figures)
    medians = {
        side: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for side, rows in samples.items()
    }
    before, after = (medians[side] for side in SIDES)
    return {
        "cpu": cpu_name(),
        "python": platform.python_version(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rounds": rounds,
        "load_average": [load_before, os.getloadavg()[0]],
        "medians": medians,
        "ratios": {
            "import_seconds": before["seconds"] / after["seconds"],
            "import_rss": before["rss"] / after["rss"],
            "serve_rss": before["serve_rss"] / after["serve_rss"],
        },
        "samples": samples,
    }


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    mb = 1 << 20
    rows = [
        "| side | import service.main | process wall | RSS after import | idle `atcon serve` RSS |",
        "|---|---|---|---|---|",
    ]
    for side, m in report["medians"].items():
        rows.append(
            f"| {side} | {m['seconds']:.2f} s | {m['process_seconds']:.2f} s | "
            f"{m['rss'] / mb:.0f} MB | {m['serve_rss'] / mb:.0f} MB |"
        )
    r = report["ratios"]
    rows.append(
        f"| **before / after** | **{r['import_seconds']:.1f}x** | | "
        f"**{r['import_rss']:.1f}x** | **{r['serve_rss']:.1f}x** |"
    )
    return "\n".join(rows)


def write_page(report: dict[str, Any], page: Path = PAGE) -> None:
    """Replace this benchmark's section of ``benchmarks.md`` (appended the first time)."""
    busiest = max(report["load_average"])
    loaded = busiest >= (os.cpu_count() or 1) / 2
    section = "\n".join(
        [
            START,
            "## API footprint: torch-free API process (issue 13)",
            "",
            f"Written by `python -m bench.api_footprint --rounds {report['rounds']}` on "
            f"{report['measured_at'][:10]}, CPU: {report['cpu']}, Python {report['python']}; "
            "medians of alternating rounds in fresh interpreters. *Before* imports what the "
            "API imported until issue 13 (torch, torchvision, PyAV, the model code and the "
            "detector) ahead of the app; *after* imports the app alone. The server is "
            "`atcon serve` with `ATCON_EMBEDDED_WORKERS=0` (the API process of a deployment "
            "with Redis), idle, after `/healthz` answered. The 1-minute load average was "
            f"{report['load_average'][0]:.1f} at the start and {report['load_average'][1]:.1f} "
            + (
                "at the end (other processes shared the CPU): read the ratios."
                if loaded
                else "at the end (an idle machine)."
            ),
            "",
            table(report),
            "",
            "Targets: import under 1.5 s, idle server under 150 MB.",
            END,
        ]
    )
    text = page.read_text(encoding="utf-8") if page.is_file() else "# Benchmark figures\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    page.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per side")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "footprint.json")
    parser.add_argument("--page", type=Path, default=PAGE, help="the page to update")
    parser.add_argument("--no-page", action="store_true", help="do not update the page")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    report = run(args.rounds)
    sys.stdout.write(table(report) + "\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    if not args.no_page:
        write_page(report, args.page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
