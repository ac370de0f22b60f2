"""The ``executor:`` section: which Dagster executor the jobs get, and what the file may say about it.

The end-to-end behaviour of the celery executor (steps in workers, a killed worker) is in
test_celery.py; these tests pin the configuration: validation errors that name the field, the
executor each kind builds, the settings Celery workers and run processes share, and that broker
passwords reach neither the UI's snapshot nor an error message.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dagster import ExecutorDefinition, multiprocess_executor
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from dagster_celery import celery_executor
from dagster_k8s import k8s_job_executor

from sync_pipeline.config import CONFIG_ENV_VAR, ExecutorConfig, load_config
from sync_pipeline.errors import ConfigError
from sync_pipeline.orchestration.executors import (
    CELERY_EXECUTOR_NAME,
    K8S_EXECUTOR_NAME,
    MULTIPROCESS_EXECUTOR_NAME,
    build_executor,
    celery_app_args,
    celery_worker_app,
)
from sync_pipeline_tests.dagster_helpers import load_definitions, table_entry, write_config

SECRET = "broker-pw-not-in-ui"  # noqa: S105 - the marker the test looks for, not a credential
BROKER = f"redis://:{SECRET}@127.0.0.1:6379/5"
BACKEND = f"redis://:{SECRET}-backend@127.0.0.1:6379/6"


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file in the environment; the broker URL only in a variable, as a deployment keeps it."""
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    monkeypatch.setenv("SYNC_TEST_BROKER_URL", BROKER)
    monkeypatch.setenv("SYNC_TEST_BACKEND_URL", BACKEND)


def config_file(tmp_path: Path, executor: dict[str, Any]) -> Path:
    return write_config(
        tmp_path / "sync.yaml",
        {"app": f"sqlite:///{tmp_path / 'app.db'}", "warehouse": f"sqlite:///{tmp_path / 'wh.db'}"},
        [table_entry("orders", "app", "warehouse")],
        executor=executor,
    )


def executor_of(path: Path) -> tuple[ExecutorDefinition, dict[str, Any]]:
    """The hourly job's executor and the config it resolves to (what the run process will use)."""
    executor = load_definitions(str(path)).resolve_job_def("sync_hourly").executor_def
    resolved = executor.config_schema.resolve_config({})  # type: ignore[attr-defined]
    assert resolved.success, resolved.errors
    config: dict[str, Any] = resolved.value["config"]
    return executor, config


@pytest.mark.parametrize(
    ("executor", "field", "reason"),
    [
        ({"kind": "celery"}, "executor.broker", "required when kind is 'celery'"),
        ({"kind": "celery", "broker": "http://h:1/"}, "executor.broker", "must be a Redis or RabbitMQ URL"),
        ({"kind": "celery", "broker": "redis://h", "backend": "h"}, "executor.backend", "result backend URL"),
        ({"kind": "celery", "broker": "redis://h", "queue": "a queue"}, "executor.queue", "letters, digits"),
        (
            {"kind": "celery", "broker": "redis://h", "max_concurrent": 4},
            "executor.max_concurrent",
            "not used by kind 'celery' (it is a setting of kind 'multiprocess' or 'k8s')",
        ),
        ({"kind": "k8s", "start_method": "spawn"}, "executor.start_method", "not used by kind 'k8s'"),
        ({"broker": "redis://h"}, "executor.broker", "not used by kind 'multiprocess'"),
        ({"kind": "k8s", "job_namespace": "Bad_NS"}, "executor.job_namespace", "Kubernetes namespace"),
        ({"kind": "k8s", "image_pull_policy": "Sometimes"}, "executor.image_pull_policy", "'Always'"),
        ({"kind": "dask"}, "executor.kind", "'multiprocess', 'celery' or 'k8s'"),
        (
            {"kind": "celery", "broker": "redis://h", "visibility_timeout_seconds": True},
            "executor.visibility_timeout_seconds",
            "not a boolean",
        ),
        ({"kind": "multiprocess", "colour": "blue"}, "executor.colour", "unknown key"),
    ],
)
def test_validation_errors_name_the_file_and_field(
    tmp_path: Path, executor: dict[str, Any], field: str, reason: str
) -> None:
    path = config_file(tmp_path, executor)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: field '{field}':"), message
    assert reason in message


def test_an_old_executor_section_still_means_multiprocess(tmp_path: Path) -> None:
    """Files written before ``kind`` existed keep their meaning."""
    executor, config = executor_of(config_file(tmp_path, {"max_concurrent": 3, "start_method": "spawn"}))
    assert executor.name == MULTIPROCESS_EXECUTOR_NAME
    assert executor.executor_creation_fn is multiprocess_executor.executor_creation_fn
    assert (config["max_concurrent"], config["start_method"]) == (3, {"spawn": {}})


def test_celery_kind_builds_dagster_celerys_executor(tmp_path: Path) -> None:
    """Broker and backend from ``${VAR}``s, the queue, and late acknowledgement for dead workers."""
    path = config_file(
        tmp_path,
        {
            "kind": "celery",
            "broker": "${SYNC_TEST_BROKER_URL}",
            "backend": "${SYNC_TEST_BACKEND_URL}",
            "queue": "sync.steps",
            "visibility_timeout_seconds": 900,
        },
    )
    executor, config = executor_of(path)

    assert executor.name == CELERY_EXECUTOR_NAME
    assert executor.executor_creation_fn is celery_executor.executor_creation_fn
    assert (config["broker"], config["backend"]) == (BROKER, BACKEND)
    source = config["config_source"]
    assert source["task_default_queue"] == "sync.steps"
    assert source["task_acks_late"] is True
    assert source["task_reject_on_worker_lost"] is True
    assert source["broker_transport_options"]["visibility_timeout"] == 900
    assert config["retries"] == {"enabled": {}}  # the assets' RetryPolicy still applies in workers


def test_celery_workers_share_the_run_process_settings(tmp_path: Path) -> None:
    """The workers' app consumes what the executor sends: same broker, queue and acknowledgement."""
    settings = load_config(
        config_file(tmp_path, {"kind": "celery", "broker": "${SYNC_TEST_BROKER_URL}", "queue": "sync"})
    ).executor

    app = celery_worker_app(settings)

    assert app.conf.broker_url == BROKER
    assert app.conf.result_backend == "rpc://"  # dagster-celery's default when no backend is given
    assert app.conf.task_default_queue == "sync"
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert "execute_plan" in app.tasks  # dagster-celery's step task
    assert celery_app_args(settings)["config_source"]["task_default_queue"] == "sync"


def test_a_worker_refuses_a_configuration_without_celery(tmp_path: Path) -> None:
    """A worker started on the wrong file says so instead of consuming from a default broker."""
    path = config_file(tmp_path, {"max_concurrent": 2})
    done = subprocess.run(
        [sys.executable, "-c", "import sync_pipeline.orchestration.celery_worker"],
        env={CONFIG_ENV_VAR: str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert (
        f"{path}: field 'executor.kind': is 'multiprocess'; a Celery worker needs kind 'celery'"
        in done.stderr
    )


def test_k8s_kind_builds_dagster_k8s_job_executor(tmp_path: Path) -> None:
    """Only what the file sets; the rest falls back to the K8sRunLauncher's settings from the chart."""
    executor, config = executor_of(
        config_file(
            tmp_path,
            {
                "kind": "k8s",
                "job_namespace": "sync",
                "image_pull_policy": "IfNotPresent",
                "env_secrets": ["sync-pipeline-urls"],
                "max_concurrent": 4,
            },
        )
    )
    assert executor.name == K8S_EXECUTOR_NAME
    assert executor.executor_creation_fn is k8s_job_executor.executor_creation_fn
    assert config["job_namespace"] == "sync"
    assert config["image_pull_policy"] == "IfNotPresent"
    assert config["env_secrets"] == ["sync-pipeline-urls"]
    assert config["max_concurrent"] == 4

    _, defaults = executor_of(config_file(tmp_path, {"kind": "k8s"}))
    assert "max_concurrent" not in defaults
    assert "job_namespace" not in defaults


@pytest.mark.parametrize(
    ("kind", "module", "extra"), [("celery", "dagster_celery", "celery"), ("k8s", "dagster_k8s", "k8s")]
)
def test_a_missing_executor_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, module: str, extra: str
) -> None:
    """Without the package the code location fails to load with the fix, not with an ImportError."""
    executor = {"kind": kind, **({"broker": "redis://127.0.0.1:6379/0"} if kind == "celery" else {})}
    path = config_file(tmp_path, executor)
    settings = load_config(path).executor
    # A None entry is how Python itself marks a module as unimportable.
    monkeypatch.setitem(sys.modules, module, None)

    with pytest.raises(ConfigError) as caught:
        build_executor(settings, str(path))

    message = str(caught.value)
    assert message.startswith(f"{path}: field 'executor.kind': '{kind}' needs the {module.replace('_', '-')}")
    assert f"pip install 'sync_pipeline[{extra}]'" in message


def test_broker_passwords_never_reach_the_ui_or_messages(tmp_path: Path) -> None:
    """The UI gets the repository snapshot; printing the config, or a bad one's error, shows no password."""
    path = config_file(
        tmp_path,
        {"kind": "celery", "broker": "${SYNC_TEST_BROKER_URL}", "backend": "${SYNC_TEST_BACKEND_URL}"},
    )
    defs = load_definitions(str(path))
    settings = load_config(path).executor

    assert SECRET not in serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())

    bad = config_file(
        tmp_path, {"kind": "celery", "broker": f"http://user:{SECRET}@h/", "backend": f"nope{SECRET}"}
    )
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert "executor.broker" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_default_section_is_multiprocess() -> None:
    assert ExecutorConfig().kind == "multiprocess"
