"""What every command shares: the ``--config`` and ``--partition`` options and how they are read.

The command refuses to guess: the configuration comes from ``--config`` (on the command or the
group) or ``$SYNC_PIPELINE_CONFIG``, and a partition key must be the start of an hour Dagster would
have for the table. Mistakes here are usage errors (exit 2) naming what to type instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from sync_pipeline.cli.errors import ConfigurationFailed, scrubber_for
from sync_pipeline.config import CONFIG_ENV_VAR, SyncConfig, TableConfig, load_config
from sync_pipeline.engine.diff.window import PARTITION_KEY_FORMAT, Window
from sync_pipeline.errors import ConfigError

__all__ = ["CONTEXT", "config_option", "load", "partition_option", "table_named", "urls_of", "window_of"]

P = ParamSpec("P")
R = TypeVar("R")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


partition_option = click.option(
    "--partition",
    "-p",
    "partition_key",
    required=True,
    metavar="KEY",
    help="Hourly partition key in partition_timezone, e.g. 2026-11-30-08:00.",
)


def config_option(command: Callable[P, R]) -> Callable[P, R]:
    """``--config`` on the group and on every command, so it may be written before or after the verb."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        metavar="PATH",
        help=f"YAML configuration file. Default: the file named by ${CONFIG_ENV_VAR}.",
    )(command)


def load(config_path: Path | None) -> SyncConfig:
    """The configuration from ``--config`` (command, then group) or the environment; exit 2 if wrong.

    The command refuses to guess a file: an operator repairing production must never act on the
    embedded demo configuration by accident.
    """
    ctx = click.get_current_context()
    if config_path is None and ctx.parent is not None and isinstance(ctx.parent.obj, dict):
        config_path = ctx.parent.obj.get("config_path")
    if config_path is None:
        from_env = os.environ.get(CONFIG_ENV_VAR)
        if not from_env:
            raise ConfigurationFailed(f"no configuration file: pass --config PATH or set {CONFIG_ENV_VAR}")
        config_path = Path(from_env)
    try:
        config = load_config(config_path)
    except ConfigError as error:
        raise ConfigurationFailed(str(error)) from None
    root = ctx.find_root()
    if isinstance(root.obj, dict):
        root.obj["scrubber"] = scrubber_for(config)  # for errors the command did not expect
    return config


def table_named(config: SyncConfig, name: str) -> TableConfig:
    """Look the table up; the message lists the known tables because the name was typed by hand."""
    try:
        return config.table(name)
    except ConfigError as error:  # UnknownTableError
        raise ConfigurationFailed(str(error)) from None


def window_of(config: SyncConfig, table: TableConfig, key: str) -> Window:
    """The hour a partition key names, refusing keys Dagster would not have for this table."""
    zone = config.partition_timezone
    try:
        window = Window.from_partition_key(key, zone)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--partition'") from None
    if not key.endswith(":00") or window.partition_key(zone) != key:
        # A minute other than :00, or a wall time skipped by a daylight-saving change.
        raise click.BadParameter(
            f"partition key {key!r} is not the start of an hour in partition_timezone {zone!r} "
            "(hourly partitions look like 2026-11-30-08:00)",
            param_hint="'--partition'",
        )
    first = table.start_in(zone)
    if window.start < first:
        raise click.BadParameter(
            f"partition {key} is before the first partition of table {table.name!r} "
            f"({first.strftime(PARTITION_KEY_FORMAT)}, its configured start)",
            param_hint="'--partition'",
        )
    return window


def urls_of(config: SyncConfig, table: TableConfig) -> tuple[str, str]:
    """Source and target URLs with their passwords: only ever handed to the engine, never printed."""
    return (
        config.connections[table.source.connection].url.get_secret_value(),
        config.connections[table.target.connection].url.get_secret_value(),
    )
