"""The Dockerfile and docker-compose.yml, checked without a Docker engine.

Every command a container runs (its command and its healthcheck) must be one the
``atcon`` parser accepts, and every variable set for the product must be a known
setting; the compose file must keep Redis append-only, reserve a GPU for the
workers, order the start on health, and require the secrets with ``${VAR:?}``.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from service.cli import build_parser
from worker.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def accepts(argv: list[str]) -> None:
    """Fail unless ``atcon <argv>`` parses."""
    assert argv[0] == "atcon", argv
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"`{shlex.join(argv)}` is not a valid atcon command (exit {exc.code})")


def known_setting(variable: str) -> bool:
    return variable.startswith("ATCON_") and variable[6:].lower() in Settings.model_fields


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def atcon_services(compose) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items() if s.get("image", "").startswith("atcon")}


def test_dockerfile():
    instructions = parse_dockerfile(REPO / "Dockerfile")
    first = instructions[0]
    assert first[0] == "FROM" and re.match(r"nvidia/cuda:\S+-runtime-", first[1])
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(keyword == "HEALTHCHECK" and "/healthz" in rest for keyword, rest in instructions)
    cmd = next(rest for keyword, rest in instructions if keyword == "CMD")
    accepts(json.loads(cmd))
    for keyword, rest in instructions:
        if keyword == "ENV":
            for name in re.findall(r"(ATCON_\w+)=", rest):
                assert known_setting(name), name


def test_every_container_command_is_an_atcon_command(atcon_services):
    assert set(atcon_services) == {"api", "detect-worker", "finetune-worker", "import-worker"}
    for name, service in atcon_services.items():
        accepts(service["command"])
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD"
        if test[1] == "atcon":
            accepts(test[1:])
        else:
            assert "/healthz" in test[-1] or "/readyz" in test[-1], name


def test_every_variable_is_a_known_setting(compose, atcon_services):
    text = (REPO / "docker-compose.yml").read_text()
    for service in atcon_services.values():
        for variable in service["environment"]:
            assert known_setting(variable), variable
    referenced = set(re.findall(r"\$\{(\w+)", text))
    assert referenced - {"ATCON_PORT"} <= {v for v in referenced if known_setting(v)}
    for secret in ("ATCON_API_TOKENS", "ATCON_CHECKPOINT"):
        assert re.search(r"\$\{" + secret + r":\?[^}]+\}", text), f"{secret} must be required"


def test_redis_persists_and_services_start_on_health(compose, atcon_services):
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert redis["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    for service in atcon_services.values():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "atcon-data:/data" in service["volumes"]
        assert service["environment"]["ATCON_REDIS_URL"].startswith("redis://redis:")


def test_workers_reserve_a_gpu(atcon_services):
    for name in ("detect-worker", "finetune-worker"):
        devices = atcon_services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == 1


@pytest.mark.parametrize(
    "argv", [["atcon", "worker", "nonsense"], ["atcon", "serve", "--bind", "x"], ["atcon"]]
)
def test_a_wrong_command_is_caught(argv):
    with pytest.raises(pytest.fail.Exception):
        accepts(argv)
