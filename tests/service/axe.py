"""axe-core in a Playwright page: its serious and critical accessibility violations.

axe.min.js comes from ``ATCON_TEST_AXE_JS`` or ``node_modules/axe-core`` in this
checkout (``scripts/ensure-services`` installs it with npm when npm is there); tests
skip their axe check, saying so, when it is missing. It is evaluated over the
DevTools protocol, which the pages' Content-Security-Policy does not govern.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.processes import REPO

__all__ = ["axe_path", "serious_violations"]


def axe_path() -> Path | None:
    configured = os.environ.get("ATCON_TEST_AXE_JS")
    for candidate in (configured, REPO / "node_modules" / "axe-core" / "axe.min.js"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def serious_violations(page: Any) -> list[str]:
    """Run axe on the page; its serious and critical violations, one line each."""
    path = axe_path()
    if path is None:
        pytest.skip("axe-core is missing (npm install axe-core, or set ATCON_TEST_AXE_JS)")
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(path.read_text(encoding="utf-8"))
    results = page.evaluate("async () => await window.axe.run(document)")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]
