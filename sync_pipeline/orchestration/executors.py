"""The Dagster executor the code location's jobs run on, chosen by the ``executor:`` section.

``multiprocess`` (the default) keeps every step on the machine of the run; ``celery`` and ``k8s``
hand each step to Dagster's own distributed executors (dagster-celery, dagster-k8s), so the same
code location scales past one machine without a scheduler or worker pool of its own (SPEC 7).

The distributed executors are optional installs: they are imported only when chosen, and a
missing one is a :class:`~sync_pipeline.errors.ConfigError` naming the file, the field and the
pip extra, raised when the code location loads rather than when the first run starts.

Celery workers and the run process must agree on the broker, the queue and how a task is
acknowledged, so both sides build their Celery settings from the same function,
:func:`celery_app_args`, fed by the same configuration file (:mod:`sync_pipeline.orchestration.celery_worker`
is the workers' side).
"""

from __future__ import annotations

import importlib
from typing import Any, Final

from dagster import ExecutorDefinition, multiprocess_executor

from sync_pipeline.config import ExecutorConfig
from sync_pipeline.errors import ConfigError

__all__ = [
    "CELERY_EXECUTOR_NAME",
    "K8S_EXECUTOR_NAME",
    "MULTIPROCESS_EXECUTOR_NAME",
    "PRELOAD_MODULES",
    "build_executor",
    "celery_app_args",
    "celery_worker_app",
]

# Modules the forkserver imports once, so each step process starts as a cheap fork of a warm
# interpreter instead of a fresh one that imports Dagster, SQLAlchemy and the drivers again.
# Beyond the code location: what a step imports to load the Dagster instance (its run, event-log and
# schedule storages, alembic, the instance factory), 370 modules and about 0.4 s per step when left
# to each step (BENCHMARKS.md, "Step process start"). Only imports: no storage is opened before the
# fork. The forkserver skips a module that is not installed (dagster_postgres without the extra).
PRELOAD_MODULES = [
    "sync_pipeline.definitions",
    "dagster._core.instance.factory",
    "dagster._core.remote_representation",
    "dagster._core.scheduler",
    "dagster._core.secrets.env_file",
    "dagster._core.storage.root",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.runs.sqlite",
    "dagster._core.storage.schedules.sqlite",
    "dagster_postgres",
]

MULTIPROCESS_EXECUTOR_NAME: Final = "sync_multiprocess_executor"
CELERY_EXECUTOR_NAME: Final = "sync_celery_executor"
K8S_EXECUTOR_NAME: Final = "sync_k8s_executor"

# dagster-celery's own transport defaults (fast reconnects); the whole mapping is replaced when
# one key is set, so they are repeated next to the visibility timeout.
_DAGSTER_CELERY_TRANSPORT_OPTIONS: Final = {
    "max_retries": 3,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}


def build_executor(settings: ExecutorConfig, config_file: str = "the configuration") -> ExecutorDefinition:
    """The executor for ``settings``; ``config_file`` names the file in a missing-package error."""
    if settings.kind == "celery":
        return _celery_executor(settings, config_file)
    if settings.kind == "k8s":
        return _k8s_executor(settings, config_file)
    start_method: dict[str, object] = (
        {"forkserver": {"preload_modules": PRELOAD_MODULES}}
        if settings.start_method == "forkserver"
        else {"spawn": {}}
    )
    return multiprocess_executor.configured(
        {"max_concurrent": settings.max_concurrent, "start_method": start_method},
        name=MULTIPROCESS_EXECUTOR_NAME,
    )


def celery_app_args(settings: ExecutorConfig) -> dict[str, Any]:
    """The Celery settings shared by the run process (sender) and the workers (consumers).

    Late acknowledgement is what makes a dead worker harmless: a step's message is acknowledged
    only when the step has finished, so a worker killed mid-step (or whose pool process dies,
    with ``task_reject_on_worker_lost``) leaves the message to be redelivered to another worker,
    and the run process, which waits on the step's result, never notices. The sync is idempotent
    per partition (its lock and single transaction), so running a step twice is safe.
    """
    if settings.broker is None:  # the model refuses kind celery without one
        raise ConfigError("executor.broker: required when kind is 'celery'")
    transport_options: dict[str, Any] = dict(_DAGSTER_CELERY_TRANSPORT_OPTIONS)
    if settings.visibility_timeout_seconds is not None:
        transport_options["visibility_timeout"] = settings.visibility_timeout_seconds
    config_source: dict[str, Any] = {
        "task_default_queue": settings.queue,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One step reserved per worker process: a second prefetched step would wait behind a long
        # sync, and would be redelivered too if the worker died.
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
    }
    args: dict[str, Any] = {
        "broker": settings.broker.get_secret_value(),
        "config_source": config_source,
    }
    if settings.backend is not None:
        args["backend"] = settings.backend.get_secret_value()
    return args


def celery_worker_app(settings: ExecutorConfig, config_file: str = "the configuration") -> Any:
    """The Celery app a worker runs: dagster-celery's app and step task, on :func:`celery_app_args`."""
    _require("dagster_celery", "celery", config_file)
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    args = celery_app_args(settings)
    executor = CeleryExecutor.for_cli(  # type: ignore[no-untyped-call]
        broker=args["broker"], backend=args.get("backend"), config_source=args["config_source"]
    )
    app = make_app(executor.app_args())  # type: ignore[no-untyped-call]
    # dagster-celery declares only its default queue; a worker started with -Q <queue> consumes
    # this one, and the sender routes steps to it by name.
    create_task(app)  # type: ignore[no-untyped-call]
    return app


def _celery_executor(settings: ExecutorConfig, config_file: str) -> ExecutorDefinition:
    _require("dagster_celery", "celery", config_file)
    from dagster_celery import celery_executor

    args = celery_app_args(settings)
    # The URLs live only in this definition's closure: the UI shows an executor's config schema
    # and the run's own config, never the values a ``configured`` definition fills in.
    return celery_executor.configured(args, name=CELERY_EXECUTOR_NAME)


def _k8s_executor(settings: ExecutorConfig, config_file: str) -> ExecutorDefinition:
    _require("dagster_k8s", "k8s", config_file)
    from dagster_k8s import k8s_job_executor

    config: dict[str, Any] = {}
    # Only what the file sets: everything else (image, namespace, pull policy) falls back to the
    # K8sRunLauncher's settings from the Helm chart, as dagster-k8s documents.
    if "max_concurrent" in settings.model_fields_set:
        config["max_concurrent"] = settings.max_concurrent
    if settings.job_namespace is not None:
        config["job_namespace"] = settings.job_namespace
    if settings.image_pull_policy is not None:
        config["image_pull_policy"] = settings.image_pull_policy
    if settings.env_secrets is not None:
        config["env_secrets"] = list(settings.env_secrets)
    return k8s_job_executor.configured(config, name=K8S_EXECUTOR_NAME)


def _require(module: str, extra: str, config_file: str) -> None:
    """Fail with the fix when an executor's package is not installed."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(
            f"{config_file}: field 'executor.kind': {extra!r} needs the {module.replace('_', '-')} "
            f"package, which is not installed (No module named {error.name!r}); "
            f"install it with: pip install 'sync_pipeline[{extra}]'"
        ) from None
