"""The configuration of sync_pipeline, as one import: models of the file and the loader that reads it.

Split by who uses what: :mod:`sync_pipeline.engine.settings` holds what a partition sync needs (a
table, its two sides, their connections), :mod:`sync_pipeline.config.models` what the Dagster layer
adds (schedule, retries, executor, alerts, drift, freshness) and the whole-file model, and
:mod:`sync_pipeline.config.loader` turns a YAML file into those models. Every public name is
re-exported here so that ``from sync_pipeline.config import X`` reads the same wherever X lives.
"""

from sync_pipeline.config.loader import (
    CONFIG_ENV_VAR,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    load_config,
    parse_config,
)
from sync_pipeline.config.models import (
    AlertFormat,
    AlertSinkConfig,
    CatchUpConfig,
    DriftConfig,
    ExecutorConfig,
    ExecutorKind,
    FreshnessConfig,
    RetryConfig,
    ScheduleConfig,
    SyncConfig,
    UnknownTableError,
)
from sync_pipeline.engine.db.dialects import SUPPORTED_BACKENDS
from sync_pipeline.engine.settings import (
    ConnectionConfig,
    DeleteMode,
    TableConfig,
    TableRef,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "SUPPORTED_BACKENDS",
    "AlertFormat",
    "AlertSinkConfig",
    "CatchUpConfig",
    "ConnectionConfig",
    "DeleteMode",
    "DriftConfig",
    "ExecutorConfig",
    "ExecutorKind",
    "FreshnessConfig",
    "RetryConfig",
    "ScheduleConfig",
    "SyncConfig",
    "TableConfig",
    "TableRef",
    "UnknownTableError",
    "load_config",
    "parse_config",
]
