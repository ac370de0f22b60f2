"""A dg component: a Dagster project adds synced tables with a ``defs.yaml``, no Python.

Modelled on Dagster's own collection components (``SlingReplicationCollectionComponent``,
``DltLoadCollectionComponent``): the YAML declares the work, the component turns it into assets.
Its attributes are the sections of the configuration file that describe tables (``connections``,
``defaults``, ``tables``, ``partition_timezone``, and the ``schedule``, ``retry`` and ``backfill``
settings of their assets), read by the same loader and pydantic models as the file, so a mistake
fails while the definitions load with the same message naming the table and field::

    type: sync_pipeline.orchestration.component.SyncedTablesComponent
    attributes:
      connections:
        app: {url: "postgresql+psycopg://sync:${APP_DB_PASSWORD}@db:5432/app"}
        warehouse: {url: "postgresql+psycopg://${WAREHOUSE_DB_AUTH}@warehouse:5432/dwh"}
      tables:
        - name: orders
          source: {connection: app, table: orders}
          target: {connection: warehouse, table: orders}
          primary_key: [id]
          updated_at: updated_at
          start: "2026-11-01T00:00:00"

Connection URLs are not resolved when the definitions load: the ``${VAR}`` in them are read from
the environment of the step process, when a sync runs, as the code location's ``SyncResource``
reads its file there. So the code server needs none of the databases' secrets, and no URL can reach
the UI: the resource shows no configuration, the assets only connection names. Loading still needs
each URL's scheme (written out, as above) for the engine kinds shown on the assets; the rest of the
URL is checked in the step.

It builds the source tables' external assets, one hourly-partitioned ``sync/<name>`` asset per table
(with its ``in_sync`` check) and the hourly job and schedule. Freshness and drift checks, their
sensors, alerts and the executor settings belong to a code location: ``sync_pipeline.definitions``
builds them from a configuration file.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import yaml
from dagster import (
    Component,
    ComponentLoadContext,
    Definitions,
    InitResourceContext,
    Model,
    Resolvable,
    ResourceDefinition,
    Scaffolder,
    ScaffoldRequest,
    scaffold_component,
    scaffold_with,
)
from pydantic import Field, PrivateAttr

from sync_pipeline.config import SyncConfig, parse_config
from sync_pipeline.errors import ConfigError
from sync_pipeline.orchestration.assets import build_sync_assets
from sync_pipeline.orchestration.resources import SyncResource
from sync_pipeline.orchestration.schedules import build_jobs, build_schedules
from sync_pipeline.orchestration.sources import build_source_specs, with_sources_and_owners

__all__ = ["SyncedTablesComponent"]

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_SECTION = "the same as in the sync_pipeline configuration file (README: Configuration)"


class _ExampleScaffolder(Scaffolder):
    """``dg scaffold defs ...SyncedTablesComponent <name>``: a defs.yaml that loads as it is (its URLs
    wait for their variables until a step runs) and shows every section to edit.
    """

    def scaffold(self, request: ScaffoldRequest) -> None:
        yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT00:00:00")
        scaffold_component(
            request,
            {
                "connections": {
                    "app": {
                        "url": "postgresql+psycopg://${APP_DB_USER}:${APP_DB_PASSWORD}@${APP_DB_HOST}/app"
                    },
                    "warehouse": {"url": "postgresql+psycopg://${DWH_USER}:${DWH_PASSWORD}@${DWH_HOST}/dwh"},
                },
                "defaults": {
                    "target": {"connection": "warehouse"},
                    "primary_key": ["id"],
                    "updated_at": "updated_at",
                },
                "tables": [
                    {
                        "name": "orders",
                        "source": {"connection": "app", "table": "orders"},
                        "target": {"table": "orders"},
                        "start": yesterday,
                    }
                ],
            },
        )


@scaffold_with(_ExampleScaffolder)
class SyncedTablesComponent(Component, Model, Resolvable):
    """Hourly synced tables, declared as in a sync_pipeline configuration file.

    Each table becomes an hourly-partitioned asset ``sync/<name>`` downstream of its source table
    (``source/<connection>/<table>``); connection URLs are resolved only when a sync step runs.
    """

    connections: dict[str, Any] = Field(description=f"Databases by name: {{url: ...}}; {_SECTION}.")
    tables: list[dict[str, Any]] = Field(description=f"The synced tables; {_SECTION}.")
    defaults: dict[str, Any] | None = Field(default=None, description=f"Merged into every table; {_SECTION}.")
    partition_timezone: str | None = Field(default=None, description="Zone of the hourly partitions (UTC).")
    schedule: dict[str, Any] | None = Field(default=None, description=f"The hourly schedule; {_SECTION}.")
    retry: dict[str, Any] | None = Field(default=None, description=f"Retries of a sync step; {_SECTION}.")
    backfill: dict[str, Any] | None = Field(default=None, description=f"Backfill runs; {_SECTION}.")

    def document(self) -> dict[str, Any]:
        """The attributes as a configuration document (unset sections left out, ``${VAR}`` unresolved)."""
        return self.model_dump(exclude_none=True)

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        source = _describe(context.path)
        document = self.document()
        config = parse_config(yaml.safe_dump(_without_urls(document, source)), source=source)
        jobs = build_jobs(config)
        return Definitions(
            assets=[
                *build_source_specs(config),
                *with_sources_and_owners(config, build_sync_assets(config)),
            ],
            jobs=[job for job, _ in jobs],
            schedules=build_schedules(jobs, config),
            resources={"sync": _sync_resource(yaml.safe_dump(document), source)},
        )


class _AttributesSyncResource(SyncResource):
    """The code location's sync resource, reading the component's attributes instead of a file."""

    _document: str = PrivateAttr(default="")

    def load(self) -> SyncConfig:
        # Here, in the step process, ${VAR} in the URLs is read from the environment.
        return parse_config(self._document, source=self.config_path)


def _sync_resource(document: str, source: str) -> ResourceDefinition:
    """The ``sync`` resource of the component's assets: built in the step, configured by nothing.

    A resource function rather than a configurable resource, so that the UI, which shows resource
    configuration, has none to show: the attributes stay inside the code location's processes.
    """

    def build(_: InitResourceContext) -> SyncResource:
        resource = _AttributesSyncResource(config_path=source)
        resource._document = document
        return resource

    return ResourceDefinition(
        resource_fn=build,
        description=f"Syncs the tables of {source}; connection URLs are resolved in each step.",
    )


def _without_urls(document: dict[str, Any], source: str) -> dict[str, Any]:
    """The document with every connection URL cut to its scheme: what loading needs, and no secret.

    The scheme names the engine (the assets' kinds); the loader's own checks of the rest of each URL
    run in the step process, when ``${VAR}`` can be resolved.
    """
    shape = copy.deepcopy(document)
    connections = shape.get("connections")
    if not isinstance(connections, dict):
        return shape  # the loader reports it
    for name, connection in connections.items():
        url = connection.get("url") if isinstance(connection, dict) else None
        if not isinstance(url, str):
            continue  # the loader reports it
        scheme = _SCHEME.match(url)
        if scheme is None:
            raise ConfigError(
                f"{source}: connections.{name}.url: write the URL's scheme out, e.g. "
                "postgresql+psycopg://${DB_USER}:${DB_PASSWORD}@host:5432/db or sqlite:///${DB_FILE}: "
                "the component resolves ${VAR} only in the step, and needs the engine when it loads"
            )
        connection["url"] = scheme.group(0)
    return shape


def _describe(path: Path) -> str:
    """How messages name the component: its defs.yaml (``path`` is the file or its folder)."""
    return f"{path / 'defs.yaml' if path.is_dir() else path} (attributes)"
