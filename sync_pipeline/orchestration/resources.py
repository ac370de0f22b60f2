"""The Dagster resource through which assets reach the databases.

Its only configuration is the path of the YAML file (empty: the embedded demo), so the Dagster UI,
which shows resource configuration, never sees a URL or a password. The file is read again inside the
step process, where ``${VAR}`` is resolved from that process's environment, and engines are opened
there and disposed before the step ends: the code server, daemon and webserver never hold a
connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dagster import ConfigurableResource, DagsterLogManager
from pydantic import Field

from sync_pipeline.alerts import Alert, AlertDispatcher, SendResult
from sync_pipeline.config import SyncConfig, TableConfig
from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import Compare, sync_partition
from sync_pipeline.engine.verify import Verification, verify_partition
from sync_pipeline.errors import SyncPipelineError
from sync_pipeline.orchestration.hours import active_config as active_config  # where callers find it


class SyncResource(ConfigurableResource):  # type: ignore[type-arg]
    """Runs partition syncs for the tables of one configuration file."""

    config_path: str = Field(
        default="",
        description="Path of the sync_pipeline YAML file; empty runs the embedded SQLite demo.",
    )

    @property
    def is_demo(self) -> bool:
        return not self.config_path

    def load(self) -> SyncConfig:
        return active_config(self.config_path)

    def sync(
        self,
        table: str,
        window: Window,
        *,
        on_progress: Callable[[SyncStats], None] | None = None,
        compare: Compare = "updated_at",
    ) -> SyncStats:
        """Sync one window of one table, in this (step) process."""
        config = self.load()
        table_config = config.table(table)
        if self.is_demo:
            from sync_pipeline.demo.seed import ensure_seeded

            ensure_seeded(config)
        return sync_partition(
            table_config,
            _url(config, table_config, "source"),
            _url(config, table_config, "target"),
            window,
            on_progress=on_progress,
            compare=compare,
        )

    def verify(self, table: str, window: Window) -> Verification:
        """Compare every column of one window's rows in source and target, in this (step) process."""
        config = self.load()
        table_config = config.table(table)
        return verify_partition(
            table_config, _url(config, table_config, "source"), _url(config, table_config, "target"), window
        )

    def demo_source_url(self) -> str:
        """The demo's source database, which the demo's activity simulator keeps changing."""
        config = self.load()
        return _url(config, config.tables[0], "source")


def _url(config: SyncConfig, table: TableConfig, side: str) -> str:
    ref = table.source if side == "source" else table.target
    return config.connections[ref.connection].url.get_secret_value()


class AlertResource(ConfigurableResource):  # type: ignore[type-arg]
    """Sends alerts to the webhooks of the configuration's ``alerts:`` section, and to the Dagster log.

    Like :class:`SyncResource`, it holds only the configuration's path: webhook URLs carry tokens and
    are read from the file when an alert is sent, never shown in the UI.
    """

    config_path: str = Field(
        default="",
        description="Path of the sync_pipeline YAML file; empty runs the embedded SQLite demo.",
    )

    def send(self, alert: Alert, log: logging.Logger | DagsterLogManager) -> list[SendResult]:
        """Deliver ``alert`` everywhere; never raises (a dead webhook must not break a sensor)."""
        try:
            sinks = active_config(self.config_path).alerts
        except SyncPipelineError as error:
            log.error(f"alert not sent, the configuration cannot be read: {error}")
            return []
        return AlertDispatcher(sinks, log=log).send(alert)
