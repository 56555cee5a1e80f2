"""The deployment files in infra/ are checked without a container engine: parsed, validated against
the real schemas where one exists offline (Dagster's instance schema, botocore's ECS API model, the
Dagster Helm chart's value keys), loaded against a real PostgreSQL / S3-compatible server, and
scanned for exposed ports and secrets. Also: no hard-coded credentials anywhere in the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
_THIS = "tests/integration/test_infra_files.py"
INFRA = REPO / "infra"
COMPOSE = INFRA / "compose.yaml"
ENV_EXAMPLE = INFRA / ".env.example"
IAM_POLICY = INFRA / "iam" / "fluxforge-bucket-policy.json"
HELM_VALUES = INFRA / "k8s" / "dagster-values.yaml"
K8S_DAEMON = INFRA / "k8s" / "ingestion-daemon.yaml"
ECS_TASK_DEFS = [
    INFRA / "ecs" / "task-definition.json",
    INFRA / "ecs" / "ingest-task-definition.json",
]
DAGSTER_YAMLS = [INFRA / "dagster.yaml", INFRA / "ecs" / "dagster.yaml"]
BUCKET = "fluxforge-lake"
LAKE_PREFIXES = ("raw", "processed", "state", "cold")
CLAIMS_PREFIX = ".fluxforge-claims"  # S3 claim markers (fluxforge/storage/s3.py)
_REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE|ACCESS_KEY", re.IGNORECASE)

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME?err}; "$$" escapes compose.
_INTERP = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _infra_files(*suffixes: str) -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.is_file() and p.name.endswith(suffixes))


def _load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Resolve compose-style ${VAR...} the way `docker compose config` does (for defaults)."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            if not value if op == ":?" else value is None:
                raise KeyError(f"{name}: {arg}")
            return value or ""
        return value or ""

    return _INTERP.sub(sub, text).replace("$$", "$")


def _env_example_names() -> set[str]:
    names: set[str] = set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [(path, node)]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _walk(v, f"{path}[{i}]")
    return out


# --------------------------------------------------------------------------------------------
# Every file parses


@pytest.mark.parametrize(
    "path", _infra_files(".yaml", ".yml", ".json"), ids=lambda p: str(p.relative_to(INFRA))
)
def test_infra_file_when_parsed_is_valid_yaml_or_json(path: Path) -> None:
    if path.suffix == ".json":
        assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    else:
        docs = _load_yaml_docs(path)
        assert docs and all(isinstance(d, dict) for d in docs)


def test_infra_directory_when_listed_has_every_deliverable() -> None:
    expected = [
        "compose.yaml",
        "Dockerfile",
        "dagster.yaml",
        ".env.example",
        "README.md",
        "k8s/dagster-values.yaml",
        "k8s/ingestion-daemon.yaml",
        "ecs/task-definition.json",
        "ecs/dagster.yaml",
        "iam/fluxforge-bucket-policy.json",
    ]
    missing = [name for name in expected if not (INFRA / name).is_file()]
    assert missing == []


# --------------------------------------------------------------------------------------------
# compose


def test_compose_when_defaults_used_publishes_every_port_on_loopback_only() -> None:
    compose = _compose()
    published = []
    for name, svc in compose["services"].items():
        assert svc.get("network_mode") != "host", f"service {name} uses the host network"
        for port in svc.get("ports", []):
            assert isinstance(port, str), f"{name}: use the short 'HOST_IP:HOST:CONTAINER' form"
            resolved = _interpolate(port, {})
            host_ip = resolved.rsplit(":", 2)[0]
            published.append((name, host_ip))
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} -> {resolved!r}"
    assert {n for n, _ in published} >= {"postgres", "s3", "dagster-webserver"}


def test_compose_when_bind_address_set_exposes_ports_there() -> None:
    compose = _compose()
    port = compose["services"]["dagster-webserver"]["ports"][0]
    assert _interpolate(port, {"FLUXFORGE_BIND_ADDRESS": "10.0.0.5"}).startswith("10.0.0.5:3000:")


def test_compose_secret_values_when_read_come_only_from_required_env_vars() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    compose = yaml.safe_load(text)
    checked = 0
    for path, value in _walk(compose):
        key = path.rsplit(".", 1)[-1]
        if not SECRET_NAME.search(key) or isinstance(value, dict | list):
            continue
        checked += 1
        m = _INTERP.fullmatch(str(value))
        assert m, f"{path} = {value!r}: secrets must be ${{VAR:?...}} references"
        assert m.group(2) in (":?", "?", None), f"{path} has a default value: {value!r}"
    assert checked >= 5
    # No credentials inside URLs either (user:password@host), once the defaults are filled in.
    rendered = _interpolate(text, {n: "x" for n in _REQUIRED_SECRETS})
    assert "://fluxforge@postgres:5432/" in rendered
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", rendered)


def test_compose_when_env_file_missing_refuses_to_start_without_secrets() -> None:
    pg_env = _compose()["services"]["postgres"]["environment"]
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        _interpolate(pg_env["POSTGRES_PASSWORD"], {})
    assert _interpolate(pg_env["POSTGRES_PASSWORD"], {"POSTGRES_PASSWORD": "x"}) == "x"


def test_compose_services_when_read_form_the_whole_stack_in_dependency_order() -> None:
    services = _compose()["services"]
    assert set(services) >= {
        "postgres",
        "s3",
        "create-bucket",
        "ingest",
        "dagster-webserver",
        "dagster-daemon",
    }
    s3 = services["s3"]
    assert s3["image"].split(":-", 1)[-1].startswith("chrislusf/seaweedfs")
    script = " ".join(s3["command"])
    assert "weed server" in script and "-s3" in script
    assert services["create-bucket"]["restart"] == "no"
    for name in ("ingest", "dagster-webserver", "dagster-daemon"):
        deps = services[name]["depends_on"]
        assert deps["create-bucket"]["condition"] == "service_completed_successfully"
    for name in ("dagster-webserver", "dagster-daemon"):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        env = services[name]["environment"]
        assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"} <= set(env)
        mounts = services[name]["volumes"]
        assert "./dagster.yaml:/opt/dagster/dagster_home/dagster.yaml:ro" in mounts
    assert services["ingest"]["shm_size"]  # Docker's 64 MB /dev/shm default is too small


def test_compose_seaweedfs_identity_when_rendered_is_valid_json_from_env() -> None:
    script = _compose()["services"]["s3"]["command"][0]
    body = re.search(r"<<JSON\n(.*?)\nJSON", script, re.S)
    assert body, "the identities heredoc is missing"
    # "$$" is compose's escape: the container's shell expands these from its environment.
    shell_text = body.group(1).replace("$$", "$")
    rendered = shell_text.replace("${AWS_ACCESS_KEY_ID}", "k").replace(
        "${AWS_SECRET_ACCESS_KEY}", "s"
    )
    identity = json.loads(rendered)["identities"][0]
    assert identity["credentials"] == [{"accessKey": "k", "secretKey": "s"}]


# --------------------------------------------------------------------------------------------
# .env.example documents every variable


def _referenced_variables() -> dict[str, str]:
    refs: dict[str, str] = {}
    text = COMPOSE.read_text(encoding="utf-8")
    for m in _INTERP.finditer(text):
        refs.setdefault(m.group(1), "compose.yaml")
    for _, svc in _compose()["services"].items():
        env = svc.get("environment") or {}
        for name in env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]:
            refs.setdefault(name, "compose.yaml environment")
    for path in DAGSTER_YAMLS:
        for p, value in _walk(yaml.safe_load(path.read_text(encoding="utf-8"))):
            if p.endswith(".env") and isinstance(value, str):
                refs.setdefault(value, str(path.relative_to(INFRA)))
    for path in ECS_TASK_DEFS:
        text = path.read_text(encoding="utf-8")
        for m in _INTERP.finditer(text):
            refs.setdefault(m.group(1), str(path.relative_to(INFRA)))
        for container in json.loads(text)["containerDefinitions"]:
            for item in container.get("environment", []) + container.get("secrets", []):
                refs.setdefault(item["name"], str(path.relative_to(INFRA)))
    for doc in _load_yaml_docs(K8S_DAEMON) + _load_yaml_docs(HELM_VALUES):
        for p, value in _walk(doc):
            if re.search(r"\benv\[\d+\]$", p) and isinstance(value, dict):
                refs.setdefault(value["name"], "k8s")
    entrypoint = (INFRA / "docker-entrypoint.sh").read_text(encoding="utf-8")
    for m in re.finditer(r"\$\{([A-Z][A-Z0-9_]*):-", entrypoint):
        refs.setdefault(m.group(1), "docker-entrypoint.sh")
    for m in re.finditer(r"^ARG ([A-Z][A-Z0-9_]*)", (INFRA / "Dockerfile").read_text(), re.M):
        refs.setdefault(m.group(1), "Dockerfile")
    for m in re.finditer(
        r"environ\.get\(\"([A-Z][A-Z0-9_]*)\"", (INFRA / "create_bucket.py").read_text()
    ):
        refs.setdefault(m.group(1), "create_bucket.py")
    return refs


def test_env_example_when_compared_documents_every_variable_used_in_infra() -> None:
    refs = _referenced_variables()
    documented = _env_example_names()
    missing = {name: where for name, where in refs.items() if name not in documented}
    assert missing == {}
    # Sanity: the collector really saw the files (so an empty diff means something).
    assert {"POSTGRES_PASSWORD", "DAGSTER_PG_HOST", "AWS_ACCOUNT_ID", "UV_VERSION"} <= set(refs)


def test_env_example_when_read_holds_no_secret_values() -> None:
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m and SECRET_NAME.search(m.group(1)):
            assert m.group(2).strip() == "", f"{m.group(1)} has a value in .env.example"


def test_env_example_fluxforge_overrides_when_applied_name_real_config_keys() -> None:
    from fluxforge.config import load_config

    overrides = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^#?\s*(FLUXFORGE_[A-Z0-9_]+__[A-Z0-9_]+)=(\S*)", line)
        if m:
            overrides[m.group(1)] = m.group(2) or "s3-prefix"
    assert len(overrides) >= 10
    # Every documented override must land on an existing key: the models forbid unknown keys.
    cfg = load_config(INFRA / "config" / "fluxforge.yaml", environ=overrides)
    assert cfg.lifecycle.hot_days == int(overrides["FLUXFORGE_LIFECYCLE__HOT_DAYS"])


# --------------------------------------------------------------------------------------------
# The deployment configuration


def test_infra_config_when_loaded_puts_every_layer_on_the_bucket() -> None:
    from fluxforge.config import load_config

    cfg = load_config(INFRA / "config" / "fluxforge.yaml", environ={})
    layers = [cfg.storage.ingestion, cfg.storage.etl_input, cfg.storage.etl_output]
    assert {(layer.backend, layer.bucket) for layer in layers} == {("s3", BUCKET)}
    assert cfg.hot_store.embedded is False
    assert cfg.hot_store.dsn and "@" in cfg.hot_store.dsn
    assert ":" not in cfg.hot_store.dsn.split("://", 1)[1].split("@", 1)[0]  # no password

    moved = load_config(
        INFRA / "config" / "fluxforge.yaml",
        environ={"FLUXFORGE_STORAGE__BASE_DIR": "other-bucket"},
    )
    assert {layer.bucket for layer in [moved.storage.ingestion, moved.storage.etl_output]} == {
        "other-bucket"
    }


# --------------------------------------------------------------------------------------------
# IAM


def _policy() -> dict[str, Any]:
    return json.loads(IAM_POLICY.read_text(encoding="utf-8"))


def test_iam_policy_when_read_grants_only_the_needed_actions_without_wildcards() -> None:
    actions: set[str] = set()
    for stmt in _policy()["Statement"]:
        assert stmt["Effect"] == "Allow"
        assert "NotAction" not in stmt and "NotResource" not in stmt and "Principal" not in stmt
        stmt_actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
        for action in stmt_actions:
            assert "*" not in action, f"wildcard action {action}"
        actions |= set(stmt_actions)
    assert actions == {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
    }


def test_iam_policy_when_read_touches_only_the_bucket_and_its_five_prefixes() -> None:
    object_arns = {f"arn:aws:s3:::{BUCKET}/{p}/*" for p in (*LAKE_PREFIXES, CLAIMS_PREFIX)}
    for stmt in _policy()["Statement"]:
        resources = stmt["Resource"] if isinstance(stmt["Resource"], list) else [stmt["Resource"]]
        actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
        if actions == ["s3:ListBucket"]:
            assert resources == [f"arn:aws:s3:::{BUCKET}"]
            prefixes = stmt["Condition"]["StringLike"]["s3:prefix"]
            assert sorted(prefixes) == sorted(f"{p}/*" for p in (*LAKE_PREFIXES, CLAIMS_PREFIX))
        else:
            assert set(resources) <= object_arns, resources
            assert all(a != "s3:ListBucket" for a in actions)


def test_iam_policy_prefixes_when_compared_match_the_deployment_config_paths() -> None:
    from fluxforge.config import load_config

    paths = load_config(INFRA / "config" / "fluxforge.yaml", environ={}).storage.etl_output.paths
    used = {paths.raw_dir, paths.processed_dir, paths.state_dir, paths.cold_dir}
    assert used == set(LAKE_PREFIXES)


# --------------------------------------------------------------------------------------------
# ECS


@pytest.mark.parametrize("path", ECS_TASK_DEFS, ids=lambda p: p.name)
def test_ecs_task_definition_when_validated_matches_the_ecs_api(path: Path) -> None:
    import boto3
    from botocore.validate import validate_parameters

    ecs = boto3.client("ecs", region_name="us-east-1")
    shape = ecs.meta.service_model.operation_model("RegisterTaskDefinition").input_shape
    task = json.loads(path.read_text(encoding="utf-8"))
    validate_parameters(task, shape)  # raises ParamValidationError on unknown/mistyped keys
    for container in task["containerDefinitions"]:
        for item in container.get("environment", []):
            assert not SECRET_NAME.search(item["name"]), f"{item['name']} must be a secret"
        for item in container.get("secrets", []):
            assert item["valueFrom"].startswith("${") or item["valueFrom"].startswith("arn:aws:")


def test_ecs_ingest_task_when_read_has_shm_and_spill_volume() -> None:
    task = json.loads(ECS_TASK_DEFS[1].read_text(encoding="utf-8"))
    (container,) = task["containerDefinitions"]
    assert container["command"] == ["ingest"]
    assert container["linuxParameters"]["sharedMemorySize"] >= 512
    assert {m["containerPath"] for m in container["mountPoints"]} == {"/var/lib/fluxforge/spill"}


# --------------------------------------------------------------------------------------------
# Kubernetes

# Keys of the Dagster Helm chart's values schema (helm/dagster/schema in the dagster repo) for the
# sections used here; the chart rejects unknown keys in these models (extra = forbid).
_CHART_TOP = {
    "dagsterWebserver", "dagster-user-deployments", "postgresql",
    "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
    "flower", "ingress", "imagePullSecrets",
    "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox",
    "migrate", "telemetry", "serviceAccount", "global", "retention", "additionalInstanceConfig",
    "concurrency",
}  # fmt: skip
_CHART_K8S_LAUNCHER = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
    "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
    "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig",
}  # fmt: skip
_CHART_RUN_K8S_CONFIG = {
    "containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata",
}  # fmt: skip
_CHART_QUEUED = {
    "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers",
    "dequeueUseThreads", "blockOpConcurrencyLimitedRuns",
}  # fmt: skip
_CHART_POSTGRES = {
    "image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
    "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service",
}  # fmt: skip
_CHART_USER_DEPLOYMENT = {
    "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "port",
    "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
    "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
    "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName",
}  # fmt: skip


def test_helm_values_when_checked_use_only_chart_keys() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text(encoding="utf-8"))
    assert set(values) <= _CHART_TOP
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert set(launcher["config"]) == {"k8sRunLauncher"}
    assert set(launcher["config"]["k8sRunLauncher"]) <= _CHART_K8S_LAUNCHER
    assert set(launcher["config"]["k8sRunLauncher"]["runK8sConfig"]) <= _CHART_RUN_K8S_CONFIG
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    assert set(coordinator["config"]["queuedRunCoordinator"]) <= _CHART_QUEUED
    assert set(values["postgresql"]) <= _CHART_POSTGRES
    for deployment in values["dagster-user-deployments"]["deployments"]:
        assert set(deployment) <= _CHART_USER_DEPLOYMENT
    assert set(values["dagsterDaemon"]["runMonitoring"]) <= {
        "enabled", "startTimeoutSeconds", "cancelTimeoutSeconds", "maxResumeRunAttempts",
        "pollIntervalSeconds", "freeSlotsAfterRunEndSeconds",
    }  # fmt: skip


def test_helm_values_when_read_limit_one_run_per_source_and_keep_secrets_out() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text(encoding="utf-8"))
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"][
        "tagConcurrencyLimits"
    ]
    per_source = [lim for lim in limits if lim["key"] == "fluxforge/source"]
    assert per_source == [
        {"key": "fluxforge/source", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["postgresql"]["postgresqlPassword"] == ""
    assert values["postgresql"]["enabled"] is False
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"


def test_k8s_ingestion_deployment_when_read_has_memory_shm_and_spill_pvc() -> None:
    docs = _load_yaml_docs(K8S_DAEMON)
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Deployment", "PersistentVolumeClaim"}
    pvc = kinds["PersistentVolumeClaim"]
    deployment = kinds["Deployment"]
    assert deployment["apiVersion"] == "apps/v1" and pvc["apiVersion"] == "v1"
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    spill = volumes[mounts["/var/lib/fluxforge/spill"]]
    assert spill["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert container["args"][0] == "ingest"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FLUXFORGE_STORAGE__SPILL_DIR"] == "/var/lib/fluxforge/spill"


# --------------------------------------------------------------------------------------------
# The image


def test_dockerfile_when_read_builds_from_the_lock_as_non_root() -> None:
    text = (INFRA / "Dockerfile").read_text(encoding="utf-8")
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["python:3.11-slim", "python:3.11-slim"]
    assert re.search(r'pip install --no-cache-dir "uv==\$\{UV_VERSION\}"', text)
    assert "uv sync --frozen --no-dev" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["docker-entrypoint.sh"]' in text


def test_dockerfile_copy_sources_when_checked_exist_in_the_repository() -> None:
    text = (INFRA / "Dockerfile").read_text(encoding="utf-8")
    sources: list[str] = []
    for line in text.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            sources += parts[:-1]
    assert len(sources) >= 8
    missing = [s for s in sources if not (REPO / s).exists()]
    assert missing == []


def test_docker_entrypoint_when_parsed_by_sh_is_valid_and_dispatches_every_role() -> None:
    script = INFRA / "docker-entrypoint.sh"
    proc = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    text = script.read_text(encoding="utf-8")
    for role in ("ingest)", "webserver)", "daemon)", "code-server)", "fluxforge)"):
        assert role in text
    assert "exec fluxforge ingest" in text and "dagster-daemon run" in text


def test_dockerfile_compiles_the_kernels_into_the_image_after_every_copy() -> None:
    text = (INFRA / "Dockerfile").read_text(encoding="utf-8")
    lines = text.split("\nFROM ")[-1].splitlines()  # the final stage
    compile_at = lines.index("RUN NUMBA_CACHE_DIR=/app/.numba-cache fluxforge compile")
    last_copy = max(i for i, line in enumerate(lines) if line.startswith("COPY"))
    assert compile_at > last_copy  # no source file changes after its kernels are cached
    assert any("NUMBA_CACHE_DIR=/tmp/numba-cache" in line for line in lines[:compile_at])


def test_docker_entrypoint_seeds_numba_cache_once_from_the_image(tmp_path: Path) -> None:
    seed, cache = tmp_path / "seed", tmp_path / "cache"
    (seed / "0123abcd").mkdir(parents=True)
    (seed / "0123abcd" / "kernel.nbi").write_bytes(b"index")
    env = {**os.environ, "FLUXFORGE_NUMBA_SEED": str(seed), "NUMBA_CACHE_DIR": str(cache)}

    def start() -> subprocess.CompletedProcess:
        script = str(INFRA / "docker-entrypoint.sh")
        return subprocess.run(["sh", script, "true"], env=env, capture_output=True, check=False)

    assert start().returncode == 0
    assert (cache / "0123abcd" / "kernel.nbi").read_bytes() == b"index"
    (cache / "0123abcd" / "kernel.nbi").write_bytes(b"newer")  # what numba wrote since
    assert start().returncode == 0
    assert (cache / "0123abcd" / "kernel.nbi").read_bytes() == b"newer"  # seeded once only


def test_docker_entrypoint_when_given_a_command_executes_it() -> None:
    proc = subprocess.run(
        ["sh", str(INFRA / "docker-entrypoint.sh"), "echo", "run-worker"],
        capture_output=True,
        text=True,
        check=False,
    )
    # EcsRunLauncher / K8sRunLauncher start run workers with `dagster api execute_run ...`.
    assert proc.returncode == 0 and proc.stdout.strip() == "run-worker"


# --------------------------------------------------------------------------------------------
# Against real servers


def _dagster_home(
    tmp_path: Path, source: Path, dsn: str, monkeypatch: pytest.MonkeyPatch, password: str
) -> Path:
    from urllib.parse import urlparse

    url = urlparse(dsn)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(source, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_HOST", url.hostname or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port))
    monkeypatch.setenv("DAGSTER_PG_USER", url.username or "postgres")
    # the test server's generated password (scram-sha-256), from its 0600 password file
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", password)
    monkeypatch.setenv("DAGSTER_PG_DB", url.path.lstrip("/"))
    monkeypatch.delenv("PGSSLMODE", raising=False)
    return home


@pytest.mark.services
@pytest.mark.slow
def test_dagster_yaml_when_loaded_on_real_postgres_stores_runs_that_survive_restart(
    pg_server, pg_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg
    from dagster import DagsterInstance
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    home = _dagster_home(tmp_path, INFRA / "dagster.yaml", pg_db, monkeypatch, pg_server.password())

    @dg.asset
    def infra_probe() -> int:
        return 1

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:  # what dagster-webserver / dagster-daemon do
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {
            "key": "fluxforge/source",
            "value": {"applyLimitPerUniqueValue": True},
            "limit": 1,
        } in limits
        instance.upgrade()  # schema migrations run against the real server
        result = dg.materialize([infra_probe], instance=instance, tags={"fluxforge/source": "s1"})
        assert result.success
        run_id = result.run_id

    # A new instance (a restarted webserver / daemon) sees the same run and materialization.
    with DagsterInstance.from_config(str(home)) as again:
        run = again.get_run_by_id(run_id)
        assert run is not None and run.is_success
        assert run.tags["fluxforge/source"] == "s1"
        event = again.get_latest_materialization_event(dg.AssetKey("infra_probe"))
        assert event is not None and event.run_id == run_id


@pytest.mark.services
@pytest.mark.slow
def test_ecs_dagster_yaml_when_loaded_on_real_postgres_uses_the_ecs_run_launcher(
    pg_server, pg_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import DagsterInstance
    from dagster_aws.ecs import EcsRunLauncher

    home = _dagster_home(
        tmp_path, INFRA / "ecs" / "dagster.yaml", pg_db, monkeypatch, pg_server.password()
    )
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # boto3 clients need a region only
    with DagsterInstance.from_config(str(home)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, EcsRunLauncher)
        assert launcher.use_current_ecs_task_config is True
        assert launcher.run_resources["memory"] == "8192"
        assert instance.get_run_records(limit=1) == []  # storage reachable, tables created


@pytest.mark.services
@pytest.mark.slow
def test_create_bucket_script_when_run_against_real_s3_creates_bucket_idempotently(
    s3_env, tmp_path: Path
) -> None:
    bucket = f"infra-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "FLUXFORGE_CONFIG": str(INFRA / "config" / "fluxforge.yaml"),
        "FLUXFORGE_STORAGE__BASE_DIR": bucket,
        "FLUXFORGE_STORAGE__S3__ENDPOINT_URL": s3_env.endpoint_url,
        "FLUXFORGE_BUCKET_WAIT_S": "30",
    }
    for attempt in (1, 2):  # the second run finds the bucket and still exits 0
        proc = subprocess.run(
            [sys.executable, str(INFRA / "create_bucket.py")],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"attempt {attempt}: {proc.stderr[-2000:]}"
        assert s3_env.secret_key not in proc.stdout + proc.stderr
    names = {b["Name"] for b in s3_env.client().list_buckets()["Buckets"]}
    assert bucket in names


def test_create_bucket_script_when_store_unreachable_fails_with_reason(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "FLUXFORGE_CONFIG": str(INFRA / "config" / "fluxforge.yaml"),
        "FLUXFORGE_STORAGE__S3__ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "FLUXFORGE_STORAGE__S3__MAX_ATTEMPTS": "1",
        "FLUXFORGE_BUCKET_WAIT_S": "1",
        # test-only dummy credentials: nothing listens, they are never checked.
        "AWS_ACCESS_KEY_ID": "test-only-dummy",
        "AWS_SECRET_ACCESS_KEY": "test-only-dummy-secret",
    }
    proc = subprocess.run(
        [sys.executable, str(INFRA / "create_bucket.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert f"bucket {BUCKET} (ingestion_storage) not reachable" in proc.stderr
    assert "test-only-dummy-secret" not in proc.stderr + proc.stdout


# --------------------------------------------------------------------------------------------
# No credentials in the repository

_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_AWS_SECRET_ASSIGN = re.compile(
    r"aws_secret_access_key\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{30,})[\"']?", re.IGNORECASE
)
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
_TEST_MARKER = re.compile(r"test-only|dummy", re.IGNORECASE)


def _real_looking(secret: str) -> bool:
    return bool(re.search(r"[a-z]", secret) and re.search(r"[A-Z]", secret)) and bool(
        re.search(r"[0-9/+]", secret)
    )


def find_credentials(rel_path: str, text: str) -> list[str]:
    """Lines that look like real credentials; tests/ may hold marked test-only dummies."""
    hits: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        found = bool(_AWS_KEY_ID.search(line) or _PRIVATE_KEY.search(line))
        m = _AWS_SECRET_ASSIGN.search(line)
        found = found or bool(m and _real_looking(m.group(1)))
        if not found:
            continue
        context = " ".join(lines[max(0, i - 1) : i + 1])
        if rel_path.startswith("tests/") and _TEST_MARKER.search(context):
            continue
        hits.append(f"{rel_path}:{i + 1}")
    return hits


def test_credential_scanner_when_given_real_looking_keys_flags_them() -> None:
    # Built at run time so this file itself never contains a matching literal.
    key_id = "AKIA" + "Q" * 8 + "7" * 8
    secret = "aB3" * 14
    pem = "-----BEGIN " + "RSA PRIVATE KEY-----"
    assert find_credentials("app.py", f"id = '{key_id}'") == ["app.py:1"]
    assert find_credentials("app.cfg", f"aws_secret_access_key = {secret}") == ["app.cfg:1"]
    assert find_credentials("k.pem", pem) == ["k.pem:1"]
    assert find_credentials("tests/x.py", f"# test-only dummy\nk = '{key_id}'") == []
    assert find_credentials("app.py", "aws_secret_access_key=self.secret_key,") == []


def test_repository_tracked_files_when_scanned_hold_no_hard_coded_credentials() -> None:
    files = _tracked_text_files()
    hits = [hit for rel, text in files for hit in find_credentials(rel, text)]
    assert len(files) > 10
    assert hits == []


# --------------------------------------------------------------------------------------------
# Servers bind to 127.0.0.1 unless configured otherwise

# Inside a container a server must listen on all interfaces for a published port to work; the
# host-side exposure is then decided by the compose port binding (checked above) or a Service.
_WILDCARD_OK = {
    "infra/docker-entrypoint.sh",
    "infra/compose.yaml",
    "infra/.env.example",
    "infra/README.md",
    # asserts that an explicit host override is honoured (and that nothing else is wildcard)
    "tests/reliability/test_bind_loopback.py",
}


def _tracked_text_files() -> list[tuple[str, str]]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing tracked to scan")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    out = []
    for raw in listed:
        rel = raw.decode("utf-8", "replace")
        path = REPO / rel
        if not rel or not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        data = path.read_bytes()
        if b"\0" not in data[:8192]:
            out.append((rel, data.decode("utf-8", "replace")))
    return out


def test_repository_servers_when_scanned_never_bind_all_interfaces_outside_containers() -> None:
    offenders = [
        f"{rel}:{i + 1}"
        for rel, text in _tracked_text_files()
        if rel not in _WILDCARD_OK and not rel.startswith("docs/") and rel != _THIS
        for i, line in enumerate(text.splitlines())
        if "0.0.0.0" in line
    ]
    assert offenders == []


def test_fluxforge_up_when_run_without_host_binds_the_ui_to_loopback() -> None:
    from fluxforge.cli import main

    up = main.commands.get("up")
    if up is None:
        pytest.skip("`fluxforge up` is not in this checkout")
    host = next(p for p in up.params if p.name == "host")
    assert host.default == "127.0.0.1"


@pytest.mark.services
def test_local_postgres_when_running_listens_on_loopback_only(pg_server) -> None:
    import psycopg

    with psycopg.connect(pg_server.dsn) as conn:
        row = conn.execute("SHOW listen_addresses").fetchone()
    assert row is not None and row[0] == "127.0.0.1"


# --------------------------------------------------------------------------------------------
# docs/ stays true to the code

DOCS = REPO / "docs"


@pytest.mark.parametrize("name", ["operator-guide.md", "data-guide.md"])
def test_docs_guide_when_read_has_the_flow_picture_as_mermaid_and_ascii(name: str) -> None:
    text = (DOCS / name).read_text(encoding="utf-8")
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, re.S)
    assert any(lang == "mermaid" and "flowchart" in body for lang, body in blocks)
    assert any(lang == "" and "─►" in body for lang, body in blocks)  # the ASCII version


def test_data_guide_when_compared_documents_every_table_and_column() -> None:
    from fluxforge.tables import PARTITION_COLUMNS, SCHEMAS

    text = (DOCS / "data-guide.md").read_text(encoding="utf-8")
    missing = [
        f"{table}.{column}"
        for table, schema in SCHEMAS.items()
        for column in [table, *schema.names, *PARTITION_COLUMNS]
        if f"`{column}`" not in text
    ]
    assert missing == []


def test_docs_cli_commands_when_checked_exist_or_are_marked_as_being_built() -> None:
    from fluxforge.cli import main

    text = "\n".join(
        (DOCS / n).read_text(encoding="utf-8")
        for n in sorted(os.listdir(DOCS))
        if n.endswith(".md")
    )
    mentioned = set(re.findall(r"\bfluxforge ([a-z][a-z-]*)\b", text))
    pending_rows = [
        line for line in text.splitlines() if line.startswith("|") and "being built" in line
    ]
    unknown = {
        cmd
        for cmd in mentioned
        if cmd not in main.commands and not any(f"fluxforge {cmd}" in r for r in pending_rows)
    }
    assert unknown == set()
    assert {"ingest", "process", "query"} <= mentioned
