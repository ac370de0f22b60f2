"""The Celery app of the sync workers.

Run as ``celery -A sync_pipeline.orchestration.celery_worker worker -Q <queue>``.

A worker reads the same configuration file as the code location (``SYNC_PIPELINE_CONFIG``), so its
broker, backend, queue and acknowledgement settings are the executor's by construction, and the
broker's password never has to be written anywhere else (dagster-celery's own ``worker start``
would copy it into a Python file under ``DAGSTER_HOME``). The worker needs that file anyway: each
step it runs loads the code location from it.
"""

from __future__ import annotations

import os
from typing import Any

from sync_pipeline.config import CONFIG_ENV_VAR
from sync_pipeline.errors import ConfigError
from sync_pipeline.orchestration.executors import celery_worker_app
from sync_pipeline.orchestration.resources import active_config


def _app() -> Any:
    config_path = os.environ.get(CONFIG_ENV_VAR, "")
    config = active_config(config_path)
    if config.executor.kind != "celery":
        raise ConfigError(
            f"{config_path or 'the demo configuration'}: field 'executor.kind': is "
            f"{config.executor.kind!r}; a Celery worker needs kind 'celery'"
        )
    return celery_worker_app(config.executor, config_path)


app = _app()
