"""The deployment files: KEDA ScaledObjects valid against the CRD and aimed at the right stream,
Deployments that run the workers as the CLI expects, kustomizations whose files exist, and a
compose file that runs one image against one persistent Redis."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
CRD = ROOT.parent / "shared" / "schemas" / "keda" / "keda.sh_scaledobjects.yaml"
WORKERS = {"gate-evaluator", "pr-writer", "canary-watcher", "preview-reaper", "notifier"}
# The workers KEDA scales, and the stream whose consumer-group lag it scales them on.
SCALED_ON = {"gate-evaluator": "ci", "pr-writer": "promotions"}

_yaml = YAML(typ="safe")


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in _yaml.load_all(text) if doc]


def objects(kind: str, root: Path = BASE) -> list[dict[str, Any]]:
    docs = [doc for path in sorted(root.rglob("*.yaml")) for doc in load_all(path.read_text())]
    return [doc for doc in docs if doc.get("kind") == kind]


def by_name(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs}


def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    return by_name([d for d in docs if d["kind"] == "ConfigMap"])["ferry"]["data"]


def trigger(scaled_object: dict[str, Any]) -> dict[str, str]:
    (only,) = scaled_object["spec"]["triggers"]
    assert only["type"] == "redis-streams"
    return only["metadata"]


# --- a minimal validator for the OpenAPI v3 subset a CRD schema uses ----------------------------

_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def _is(value: Any, type_name: str) -> bool:
    if isinstance(value, bool):  # bool is an int in Python, not in OpenAPI
        return type_name == "boolean"
    return isinstance(value, _TYPES[type_name])


def schema_errors(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    where = path or "/"
    if schema.get("x-kubernetes-int-or-string"):
        return [] if _is(value, "integer") or _is(value, "string") else [f"{where}: int or string"]
    if "type" in schema and not _is(value, schema["type"]):
        return [f"{where}: expected {schema['type']}, got {value!r}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where}: {value} is below {schema['minimum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        errors += [
            f"{where}: missing {key!r}" for key in schema.get("required", []) if key not in value
        ]
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(item, properties[key], f"{path}/{key}")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, f"{path}/{key}")
            elif properties or extra is False:
                # The API server would prune it silently: a misspelt field must fail here.
                errors.append(f"{path}/{key}: unknown field")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{path}/{i}")
    return errors


@pytest.fixture(scope="module")
def crd_version() -> tuple[str, dict[str, Any]]:
    """(apiVersion, openAPIV3Schema) of the ScaledObject version the CRD stores."""
    if not CRD.exists():
        pytest.skip(f"KEDA CRD not found at {CRD} (CI keeps it beside the clone)")
    (crd,) = load_all(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    return f"{crd['spec']['group']}/{version['name']}", version["schema"]["openAPIV3Schema"]


def assert_valid(scaled_object: dict[str, Any], crd_version: tuple[str, dict[str, Any]]) -> None:
    api_version, schema = crd_version
    name = scaled_object["metadata"]["name"]
    assert scaled_object["apiVersion"] == api_version, name
    assert schema_errors(scaled_object, schema) == [], name
    # The CRD's one CEL rule, which the validator above does not evaluate.
    spec = scaled_object["spec"]
    assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100), name


# --- (a) ScaledObjects against the CRD ----------------------------------------------------------


def test_scaled_objects_validate_against_the_keda_crd(crd_version) -> None:
    scaled_objects = objects("ScaledObject", DEPLOY)
    assert scaled_objects, "no ScaledObject under deploy/"
    for scaled_object in scaled_objects:
        assert_valid(scaled_object, crd_version)


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (("triggers", 0, "metadata", "lagCount"), 5, "expected string"),
        (("minReplicaCount",), -1, "below 0"),
        (("scaleTargetRef",), {"kind": "Deployment"}, "missing 'name'"),
        (("maxReplicas",), 3, "unknown field"),
        (("triggers",), {"type": "redis-streams"}, "expected array"),
    ],
)
def test_the_validator_rejects_broken_scaled_objects(crd_version, path, value, error) -> None:
    broken = by_name(objects("ScaledObject"))["pr-writer"]
    target = broken["spec"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    errors = schema_errors(broken, crd_version[1])
    assert any(error in e for e in errors), errors


# --- (b) what each ScaledObject scales, and on what ---------------------------------------------


def test_scaled_objects_target_base_deployments_on_their_own_stream_and_group() -> None:
    deployments = by_name(objects("Deployment"))
    settings = config(objects("ConfigMap"))
    scaled = {}
    for scaled_object in objects("ScaledObject", DEPLOY):
        ref = scaled_object["spec"]["scaleTargetRef"]
        name = ref["name"]
        assert ref.get("kind", "Deployment") == "Deployment", name
        assert name in deployments, f"ScaledObject targets {name!r}, not a Deployment in base"
        scaled[name] = scaled_object
    assert set(scaled) == set(SCALED_ON)
    for name, scaled_object in scaled.items():
        metadata = trigger(scaled_object)
        assert metadata["stream"] == settings["FERRY_STREAM_PREFIX"] + SCALED_ON[name]
        assert metadata["consumerGroup"] == name
        assert int(metadata["lagCount"]) > 0
        assert metadata["address"] == settings["FERRY_REDIS_ADDRESS"], name
        assert scaled_object["spec"]["triggers"][0]["authenticationRef"] == {"name": "ferry-keda"}
        # Never scaled to 0: a live replica is what reclaims a dead one's pending entries.
        assert scaled_object["spec"]["minReplicaCount"] >= 1
        # The HPA owns the replica count: a fixed one would be reset by every apply.
        assert "replicas" not in deployments[name]["spec"], name


# --- (c) Deployments ----------------------------------------------------------------------------


def workers_only(deployments: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: d for name, d in deployments.items() if name != "board"}


def test_one_deployment_per_worker_running_it_as_a_unique_consumer() -> None:
    deployments = workers_only(by_name(objects("Deployment")))
    home = config(objects("ConfigMap"))["FERRY_HOME"]
    assert set(deployments) == WORKERS | {"ingress"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == (["ingress"] if name == "ingress" else ["worker", name])
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["FERRY_CONSUMER"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        # With a read-only root, FERRY_HOME must be a mounted emptyDir or nothing can be cloned.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts[home]], name
        assert {"requests", "limits"} <= set(container["resources"]), name


# --- (d) kustomizations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kustomization",
    sorted(DEPLOY.rglob("kustomization.yaml")),
    ids=lambda p: str(p.parent.relative_to(DEPLOY)),
)
def test_every_file_a_kustomization_names_exists(kustomization: Path) -> None:
    spec = _yaml.load(kustomization.read_text())
    paths = spec.get("resources", []) + [p["path"] for p in spec.get("patches", []) if "path" in p]
    for relative in paths:
        target = kustomization.parent / relative
        assert target.is_file() or (target / "kustomization.yaml").is_file(), relative


def test_base_lists_every_manifest_it_holds() -> None:
    listed = set(_yaml.load((BASE / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
@pytest.mark.parametrize("overlay", ["base", "overlays/prod"])
def test_kustomize_renders_valid_consistent_objects(overlay: str, crd_version) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / overlay)], capture_output=True, text=True, check=True
    ).stdout
    docs = load_all(rendered)
    address = config(docs)["FERRY_REDIS_ADDRESS"]
    scaled_objects = [d for d in docs if d["kind"] == "ScaledObject"]
    assert {so["metadata"]["name"] for so in scaled_objects} == set(SCALED_ON)
    for scaled_object in scaled_objects:
        assert_valid(scaled_object, crd_version)
        assert trigger(scaled_object)["address"] == address


# --- (e) docker-compose.yml ---------------------------------------------------------------------


def test_compose_runs_every_worker_from_one_image_against_persistent_redis() -> None:
    services = _yaml.load((ROOT / "docker-compose.yml").read_text())["services"]
    workers = {name: s for name, s in services.items() if s.get("command", [None])[0] == "worker"}
    assert {s["command"][1] for s in workers.values()} == WORKERS
    assert len({(s.get("image"), str(s.get("build"))) for s in workers.values()}) == 1
    assert all(s.get("build") for s in workers.values()), "the workers' image is built here"
    envs = [
        dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
        for env in (s.get("environment", {}) for s in workers.values())
    ]
    urls = [urlsplit(env["FERRY_REDIS_URL"]) for env in envs]
    (host,) = {url.hostname for url in urls}
    assert host in services, host
    # Each worker logs in as its own user (see test_every_process_logs_in_as_its_own_user).
    assert sorted(url.username or "" for url in urls) == sorted(f"ferry-{w}" for w in WORKERS)
    # A fixed consumer name would make the replicas of a scaled service one consumer.
    assert not any("FERRY_CONSUMER" in env for env in envs)
    assert workers["pr-writer"]["deploy"]["replicas"] >= 2

    redis = services[host]
    command = redis["command"]
    command = command.split() if isinstance(command, str) else command
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", [])), "AOF must persist"


def test_probes_reach_the_workers_health_endpoints_on_the_configured_port() -> None:
    settings = config(objects("ConfigMap"))
    assert settings["FERRY_HTTP_HOST"] == "0.0.0.0"
    for name, deployment in workers_only(by_name(objects("Deployment"))).items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        [port] = container["ports"]
        assert str(port["containerPort"]) == settings["FERRY_HTTP_PORT"], name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}


def test_the_board_is_served_on_its_port_behind_a_service_and_in_compose() -> None:
    board = by_name(objects("Deployment"))["board"]
    [container] = board["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["board"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    [port] = container["ports"]
    assert env["FERRY_BOARD_HOST"] == "0.0.0.0"
    assert str(port["containerPort"]) == env["FERRY_BOARD_PORT"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    [service] = [s for s in objects("Service") if s["metadata"]["name"] == "board"]
    assert service["spec"]["selector"] == board["spec"]["selector"]["matchLabels"]
    compose = _yaml.load((ROOT / "docker-compose.yml").read_text())["services"]["board"]
    assert compose["command"][0] == "board" and "8090:8090" in compose["ports"]


def test_the_ingress_is_served_behind_a_service_an_ingress_example_and_in_compose() -> None:
    ingress = by_name(objects("Deployment"))["ingress"]
    [container] = ingress["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["ingress"]
    env = {e["name"]: e for e in container["env"]}
    [port] = container["ports"]
    assert env["FERRY_INGRESS_HOST"]["value"] == "0.0.0.0"
    assert str(port["containerPort"]) == env["FERRY_INGRESS_PORT"]["value"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    # the secrets come from a Secret, never from a value in the manifest
    for name in ("FERRY_WEBHOOK_SECRET", "FERRY_WEBHOOK_SECRET_ARGOCD"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["key"] == name
    [service] = [s for s in objects("Service") if s["metadata"]["name"] == "ingress"]
    assert service["spec"]["selector"] == ingress["spec"]["selector"]["matchLabels"]
    [svc_port] = service["spec"]["ports"]
    assert svc_port["targetPort"] == port["name"]
    # the example Ingress exposes /webhooks (not /metrics) through that Service
    [example] = objects("Ingress")
    [rule] = example["spec"]["rules"]
    [path] = rule["http"]["paths"]
    assert path["path"] == "/webhooks" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": "ingress", "port": {"name": svc_port["name"]}}
    compose = _yaml.load((ROOT / "docker-compose.yml").read_text())["services"]["ingress"]
    port_env = compose["environment"]["FERRY_INGRESS_PORT"]
    assert compose["command"] == ["ingress"] and f"{port_env}:{port_env}" in compose["ports"]
    assert compose["environment"]["FERRY_INGRESS_HOST"] == "0.0.0.0"


# --- (f) Redis users ----------------------------------------------------------------------------

ACL = BASE / "redis" / "users.acl"


def acl_users() -> set[str]:
    return {line.split()[1] for line in ACL.read_text().splitlines() if line.startswith("user ")}


def test_every_process_logs_in_as_its_own_user() -> None:
    """In the manifests and in compose, each process's FERRY_REDIS_URL names a user of
    users.acl made for it, with its own password (never written here)."""
    users = acl_users()
    for name, deployment in by_name(objects("Deployment")).items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        url = urlsplit(env["FERRY_REDIS_URL"]["value"])
        assert url.username == f"ferry-{name}" and url.username in users, name
        assert url.password == "$(FERRY_REDIS_PASSWORD)", name
        assert env["FERRY_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "ferry-redis",
            "key": name,
        }
        # The password is defined before the URL that uses it (Kubernetes expands in order).
        names = [e["name"] for e in container["env"]]
        assert names.index("FERRY_REDIS_PASSWORD") < names.index("FERRY_REDIS_URL"), name
        assert url.netloc.endswith("@$(FERRY_REDIS_ADDRESS)"), name
    (auth,) = objects("TriggerAuthentication")
    assert auth["metadata"]["name"] == "ferry-keda" and "ferry-keda" in users
    services = _yaml.load((ROOT / "docker-compose.yml").read_text())["services"]
    redis = services["redis"]
    given = {k.removeprefix("REDIS_PASSWORD_") for k in redis["environment"]}
    for name, service in services.items():
        url = service.get("environment", {}).get("FERRY_REDIS_URL")
        if url is None:
            continue
        user = urlsplit(url).username or ""
        assert user == f"ferry-{name}" and user in users, name
        assert name.upper().replace("-", "_") in given, name
    assert redis["entrypoint"][-1] == "/etc/ferry-redis/start.sh"
    assert "./deploy/base/redis:/etc/ferry-redis:ro" in redis["volumes"]
