"""``deploy/kubernetes/``: schema-valid, and wired to what the product really has.

Every core resource validates against the Kubernetes 1.30 OpenAPI schema shipped in
``kubernetes-validate`` (offline, strict: unknown fields are errors). The KEDA
``ScaledObject`` is a custom resource without a bundled schema, so its fields are
checked here, against the queue's real stream and consumer-group names. Then the
product's side: commands parse with the real ``atcon`` parser, every ``ATCON_*``
variable is a setting, HTTP probes hit real routes, exec probes run the worker
healthcheck, workers request one GPU each, pods share nothing but Redis and the
object store (``ATCON_DATA_DIR`` an emptyDir of each pod), secrets referenced exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.cli import build_parser
from worker.queue.redis_streams import GROUP
from worker.settings import Settings

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
WORKLOADS = ("Deployment", "StatefulSet", "CronJob")


def load_documents() -> list[dict[str, Any]]:
    """Every resource of the kustomization, in its order."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    documents = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((MANIFESTS / name).read_text()):
            if doc:
                documents.append(doc)
    return documents


DOCS = load_documents()


def find(kind: str, name: str) -> dict[str, Any]:
    for doc in DOCS:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in deploy/kubernetes")


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def atcon_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container that runs the product's image."""
    found = []
    for doc in DOCS:
        if doc["kind"] in WORKLOADS:
            for container in pod_spec(doc)["containers"]:
                if container["image"].split(":")[0] == "atcon":
                    found.append((doc, container))
    return found


def config_values() -> dict[str, str]:
    return dict(find("ConfigMap", "atcon-config")["data"])


@pytest.mark.parametrize(
    "doc",
    [d for d in DOCS if not d["apiVersion"].startswith("keda.sh")],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_core_resources_validate_against_the_kubernetes_schema(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_an_unknown_field():
    """The validation above can fail: a misspelt field is caught."""
    broken = yaml.safe_load(yaml.safe_dump(find("Deployment", "atcon-api")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_product_command_parses_with_the_real_cli():
    parser = build_parser()
    commands = [container["command"] for _, container in atcon_containers()]
    for _doc, container in atcon_containers():
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if "exec" in container.get(probe, {}):
                commands.append(container[probe]["exec"]["command"])
    assert len(commands) >= 5
    for command in commands:
        assert command[0] == "atcon", command
        parser.parse_args(command[1:])  # exits (fails the test) on an unknown option


def test_the_workloads_run_what_the_product_needs():
    def command(kind: str, name: str) -> list[str]:
        return pod_spec(find(kind, name))["containers"][0]["command"]

    api = find("Deployment", "atcon-api")
    assert api["spec"]["replicas"] >= 2 and command("Deployment", "atcon-api")[1] == "serve"
    assert command("Deployment", "atcon-detect-worker")[1:3] == ["worker", "detect"]
    assert command("Deployment", "atcon-finetune-worker")[1:3] == ["worker", "finetune"]
    nightly = find("CronJob", "atcon-nightly-finetune")
    assert command("CronJob", "atcon-nightly-finetune") == ["atcon", "finetune", "--nightly"]
    Settings(finetune_schedule=nightly["spec"]["schedule"])  # a schedule the product accepts
    # the worker's own scheduler would queue the nightly run a second time
    assert "--no-scheduler" in command("Deployment", "atcon-finetune-worker")


def test_atcon_variables_are_settings_and_secrets_exist():
    fields = {f"ATCON_{name.upper()}" for name in Settings.model_fields}
    secrets = {
        doc["metadata"]["name"]: set(doc["stringData"]) for doc in DOCS if doc["kind"] == "Secret"
    }
    values = config_values()
    assert {k for k in values if k.startswith("ATCON_")} <= fields
    Settings(**{k[6:].lower(): v for k, v in values.items() if k.startswith("ATCON_")})
    for doc, container in atcon_containers():
        for ref in container.get("envFrom", []):
            assert ref["configMapRef"]["name"] == "atcon-config"
        for variable in container.get("env", []):
            assert variable["name"] in fields or not variable["name"].startswith("ATCON"), variable
            secret = variable.get("valueFrom", {}).get("secretKeyRef")
            if secret:
                assert secret["key"] in secrets[secret["name"]], (doc["metadata"]["name"], secret)
        names = {v["name"] for v in container.get("env", [])}
        if doc["kind"] != "StatefulSet":
            assert "ATCON_REDIS_URL" in names, f"{doc['metadata']['name']} has no broker"


def test_http_probes_hit_real_routes(tmp_path):
    from service.main import create_app

    app = create_app(Settings(data_dir=tmp_path, dev=True))
    routes = {path for path, methods in app.openapi()["paths"].items() if "get" in methods}
    api = pod_spec(find("Deployment", "atcon-api"))["containers"][0]
    paths = {api[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
    assert paths == {"/healthz", "/readyz"} and paths <= routes
    assert api["startupProbe"]["httpGet"]["path"] in routes


def test_worker_probes_run_the_healthcheck():
    for name, kind in (("atcon-detect-worker", "detect"), ("atcon-finetune-worker", "finetune")):
        container = pod_spec(find("Deployment", name))["containers"][0]
        probe = container["livenessProbe"]["exec"]["command"]
        assert probe == ["atcon", "worker", kind, "--healthcheck"]


def test_workers_get_one_gpu_each_and_the_api_none():
    for name in ("atcon-detect-worker", "atcon-finetune-worker"):
        resources = pod_spec(find("Deployment", name))["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == 1, name
    api = pod_spec(find("Deployment", "atcon-api"))["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in {**api.get("limits", {}), **api.get("requests", {})}


def test_pods_share_nothing_but_redis_and_the_object_store():
    """The store is the truth; each pod's data directory is its own emptyDir (scratch
    and cache), never a shared volume; every ATCON pod reaches the store."""
    from worker.object_store import parse_storage_url

    values = config_values()
    parse_storage_url(values["ATCON_STORAGE_URL"])  # a URL the product accepts
    assert not [d for d in DOCS if d["kind"] == "PersistentVolumeClaim"]
    data_dir = values["ATCON_DATA_DIR"]
    for doc, container in atcon_containers():
        name = doc["metadata"]["name"]
        volumes = {v["name"]: v for v in pod_spec(doc)["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert data_dir in mounts, name
        assert "emptyDir" in volumes[mounts[data_dir]], name
        assert not any("persistentVolumeClaim" in v for v in volumes.values()), name
        env = {v["name"] for v in container.get("env", [])}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env, name
    assert not values["ATCON_CHECKPOINT"].startswith(data_dir + "/"), (
        "the first checkpoint must not live in a pod's scratch directory"
    )


def test_keda_scales_detect_workers_on_the_real_stream():
    scaled = find("ScaledObject", "atcon-detect-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]["name"]
    assert find("Deployment", target)["spec"]["template"]["spec"]["containers"][0]["command"][
        1:3
    ] == ["worker", "detect"]
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    meta = trigger["metadata"]
    prefix = config_values().get("ATCON_QUEUE_PREFIX", Settings().queue_prefix)
    assert meta["stream"] == f"{prefix}:stream:detect"  # RedisQueue._key("stream", "detect")
    assert meta["consumerGroup"] == GROUP
    assert int(meta["streamLength"]) >= 1
    # KEDA reads the address from the scale target's environment
    assert meta["addressFromEnv"] in config_values()
    redis_url = find("Secret", "atcon-secrets")["stringData"]["ATCON_REDIS_URL"]
    assert config_values()[meta["addressFromEnv"]] in redis_url
    assert redis_url.rstrip("/").endswith("/" + meta["databaseIndex"])
