"""The ``sync-pipeline`` command: check a configuration, preview a partition, sync a partition.

Dagster runs the hourly syncs; this command exists for the moments around them: proving a new
configuration against the live databases before deploying it (``validate``), seeing what a sync of
one hour would change without writing anything (``diff``), and repairing one hour by hand (``sync``).

It is meant for operators at a terminal and for scripts, so:

* exit codes carry meaning: 0 success, 1 a failed check or sync (any
  :class:`~sync_pipeline.errors.SyncPipelineError`, or a database error), 2 a usage or configuration
  mistake that no retry fixes;
* expected failures print one message on stderr, never a traceback;
* ``--json`` gives a stable, machine-readable document instead of the human layout;
* a password never reaches the terminal: URLs are shown redacted, and every message is scrubbed of
  the configured passwords as a last line of defence (a driver may quote its connection string).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
import sqlalchemy as sa

from sync_pipeline.config import CONFIG_ENV_VAR, SyncConfig, TableConfig, load_config
from sync_pipeline.engine.db.engine import open_engine
from sync_pipeline.engine.diff.stats import HEADLINE_COUNTS, SyncStats
from sync_pipeline.engine.diff.window import PARTITION_KEY_FORMAT, Window
from sync_pipeline.engine.plan import plan_sync
from sync_pipeline.engine.sync import sync_partition
from sync_pipeline.errors import ConfigError, DatabaseUnavailable, SyncPipelineError
from sync_pipeline.redaction import Scrubber

__all__ = ["cli", "main"]

P = ParamSpec("P")
R = TypeVar("R")

EXIT_FAILED = 1
"""A check or a sync failed (schema, data, lock, database): the config may be right, the world is not."""

EXIT_USAGE = 2
"""The command line or the configuration file is wrong: retrying the same command cannot help."""

DEFAULT_SAMPLE_LIMIT = 20

# The counts an operator reads first, in this order; the JSON output carries every field of SyncStats.
STAT_FIELDS = (*HEADLINE_COUNTS, "null_updated_at", "skipped_newer", "kept_deleted")

# Kinds reported through ``on_change``; "moved_in"/"moved_out" are updates of rows changing window.
CHANGE_KINDS = ("inserted", "updated", "moved_in", "moved_out", "deleted")

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# --------------------------------------------------------------------------------------------------
# Errors and secrets


class CommandFailed(click.ClickException):
    """An expected failure: click prints ``Error: <message>`` on stderr and exits with 1.

    Going through ClickException (rather than printing and calling sys.exit) keeps ``CliRunner``
    and the real process behaving the same, and guarantees no traceback.
    """

    exit_code = EXIT_FAILED


class ConfigurationFailed(CommandFailed):
    """The configuration (or the way the command names it) is wrong: exit 2, like a usage error."""

    exit_code = EXIT_USAGE


class _Group(click.Group):
    """The command group, turning an error no command expected into one line and exit 1.

    Expected failures (configuration, schema, data, database) are caught where they happen and say
    what to fix; anything else is a bug or an edge the engine does not handle yet. A traceback
    would bury its one useful line among a hundred and, from a driver's frames, may quote a
    connection string, so the operator gets the exception's type and first line, scrubbed.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own ways out: usage errors, --help, --version, ^C
        except Exception as error:  # noqa: BLE001 - the one place an unexpected error is reported
            scrubber = ctx.obj.get("scrubber") if isinstance(ctx.obj, dict) else None
            reason = f"{type(error).__name__}: {_first_line(str(error))}".removesuffix(": ")
            message = f"{ctx.invoked_subcommand or 'command'} failed with an unexpected error: {reason}"
            raise CommandFailed((scrubber or Scrubber())(message)) from None


def _failure(message: str, exit_code: int) -> CommandFailed:
    return ConfigurationFailed(message) if exit_code == EXIT_USAGE else CommandFailed(message)


def _scrubber(config: SyncConfig) -> Scrubber:
    """Hides the secrets of every configured URL, in any form, from text the command prints.

    Messages are built from redacted URLs already; this catches text the command does not control,
    such as a driver error that quotes its DSN or a host name holding half a password.
    """
    return Scrubber(connection.url.get_secret_value() for connection in config.connections.values())


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _database_reason(error: sa.exc.SQLAlchemyError) -> str:
    """The driver's own one-line reason, without SQLAlchemy's statement echo and documentation link."""
    if isinstance(error, sa.exc.DBAPIError) and error.orig is not None:
        reason = _first_line(str(error.orig)) or type(error.orig).__name__
        return f"{type(error.orig).__name__}: {reason}"
    return _first_line(str(error)) or type(error).__name__


def _missing_driver(error: ImportError) -> str:
    """A URL naming a driver this project does not install (``postgresql+psycopg2``): say what to use."""
    module = error.name or str(error)
    return (
        f"database driver {module!r} is not installed; use the drivers sync_pipeline ships: "
        "postgresql+psycopg://, mysql+pymysql:// (or mariadb+pymysql://), sqlite:///"
    )


# --------------------------------------------------------------------------------------------------
# Shared options and loading


_partition_option = click.option(
    "--partition",
    "-p",
    "partition_key",
    required=True,
    metavar="KEY",
    help="Hourly partition key in partition_timezone, e.g. 2026-11-30-08:00.",
)


def _config_option(command: Callable[P, R]) -> Callable[P, R]:
    """``--config`` on the group and on every command, so it may be written before or after the verb."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        metavar="PATH",
        help=f"YAML configuration file. Default: the file named by ${CONFIG_ENV_VAR}.",
    )(command)


def _load(config_path: Path | None) -> SyncConfig:
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
        root.obj["scrubber"] = _scrubber(config)  # for errors the command did not expect
    return config


def _table(config: SyncConfig, name: str) -> TableConfig:
    """Look the table up; the message lists the known tables because the name was typed by hand."""
    try:
        return config.table(name)
    except ConfigError as error:  # UnknownTableError
        raise ConfigurationFailed(str(error)) from None


def _window(config: SyncConfig, table: TableConfig, key: str) -> Window:
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


def _urls(config: SyncConfig, table: TableConfig) -> tuple[str, str]:
    """Source and target URLs with their passwords: only ever handed to the engine, never printed."""
    return (
        config.connections[table.source.connection].url.get_secret_value(),
        config.connections[table.target.connection].url.get_secret_value(),
    )


def _arrow() -> str:
    """A pretty arrow where the terminal can show it, ASCII where it cannot (a C-locale cron job)."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "→".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "->"
    return "→"


# --------------------------------------------------------------------------------------------------
# Output


def _jsonable(value: Any) -> Any:
    """Keys are ints and strings mostly, but may be UUIDs, decimals or dates: JSON gets their text."""
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _key_text(key: Any) -> str:
    """A key as an operator would type it in a WHERE clause: ``42``, ``'abc'``, ``(1, 'x')``."""
    if isinstance(key, tuple):
        return "(" + ", ".join(_key_text(part) for part in key) + ")"
    if isinstance(key, str):
        return repr(key)
    return str(_jsonable(key))


@dataclass
class _Samples:
    """Up to ``limit`` keys per kind of change, and how many changes of each kind were reported."""

    limit: int
    keys: dict[str, list[Any]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def __call__(self, kind: str, key: Any) -> None:
        self.totals[kind] = self.totals.get(kind, 0) + 1
        kept = self.keys.setdefault(kind, [])
        if len(kept) < self.limit:
            kept.append(key)

    def kinds(self) -> Iterator[str]:
        yield from (kind for kind in CHANGE_KINDS if kind in self.totals)
        yield from (kind for kind in sorted(self.totals) if kind not in CHANGE_KINDS)

    def as_json(self) -> dict[str, list[Any]]:
        return {kind: [_jsonable(key) for key in self.keys.get(kind, [])] for kind in self.kinds()}


def _header(verb: str, table: TableConfig, key: str, window: Window) -> dict[str, Any]:
    return {
        "command": verb,
        "table": table.name,
        "partition": key,
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
    }


def _echo_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


def _echo_stats(stats: SyncStats) -> None:
    width = max(len(name) for name in STAT_FIELDS) + 2
    for name in STAT_FIELDS:
        value = getattr(stats, name)
        detail = ""
        if name == "updated" and (stats.moved_in or stats.moved_out):
            detail = f"  (moved in: {stats.moved_in}, moved out: {stats.moved_out})"
        click.echo(f"  {name:<{width}}{value:>10}{detail}")
    if stats.vanished_during_sync:
        click.echo(f"  {'vanished_during_sync':<{width}}{stats.vanished_during_sync:>10}")
    if "total" in stats.timings:
        click.echo(f"  {'seconds':<{width}}{stats.timings['total']:>10.3f}")


# --------------------------------------------------------------------------------------------------
# Commands


@click.group(name="sync-pipeline", cls=_Group, context_settings=_CONTEXT)
@_config_option
@click.version_option(package_name="sync_pipeline", prog_name="sync-pipeline")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Hourly sync of SQL tables between databases: check, preview and run one partition.

    Dagster runs the hourly schedule; use these commands to validate a configuration against the
    live databases, see what a sync of one hour would change (nothing is written), or sync one hour
    now. Partition keys are Dagster's hourly keys in the configured partition_timezone, e.g.
    2026-11-30-08:00.

    Exit status: 0 success, 1 a check or sync failed, 2 a usage or configuration error.
    """
    ctx.obj = {"config_path": config_path}


@cli.command(context_settings=_CONTEXT, short_help="Check the config and tables against the live databases.")
@click.argument("tables", nargs=-1, metavar="[TABLE]...")
@_config_option
def validate(tables: tuple[str, ...], config_path: Path | None) -> None:
    """Check the configuration and every table (or the named TABLEs) against the live databases.

    For each table both databases are connected to and the source and target tables are inspected:
    the source table and its primary_key, updated_at and synced columns must exist, updated_at must
    be a timestamp, and an existing target must have every synced column with a compatible type and
    a primary key or unique index on the key columns. A missing target is fine: the first sync
    creates it. Nothing is written.

    Prints one line per table and exits 1 if any table failed.
    """
    config = _load(config_path)
    secrets = _scrubber(config)
    selected = [_table(config, name) for name in dict.fromkeys(tables)] if tables else list(config.tables)
    width = max(len(table.name) for table in selected)
    arrow = _arrow()
    failed = 0
    for table in selected:
        problem, created = _validate_table(config, table)
        if problem is None:
            state = "target will be created" if created else "target exists"
            click.echo(
                f"ok   {table.name:<{width}}  source {table.source.connection} {arrow} "
                f"target {table.target.connection} ({state})"
            )
        else:
            failed += 1
            click.echo(f"FAIL {table.name}: {secrets(problem)}")
    if failed:
        raise CommandFailed(f"{failed} of {len(selected)} table(s) failed validation")


def _validate_table(config: SyncConfig, table: TableConfig) -> tuple[str | None, bool]:
    """``(problem, target_missing)`` for one table; a problem is a one-line message, never a traceback.

    Each side is connected to on its own first, so a connection failure names the connection (with
    its redacted URL) rather than leaving the operator to guess which of two databases is down.
    """
    sides = (("source", table.source.connection), ("target", table.target.connection))
    with ExitStack() as stack:
        engines: list[sa.Engine] = []
        for side, name in sides:
            connection = config.connections[name]
            try:
                engine = stack.enter_context(open_engine(connection.url.get_secret_value()))
                with engine.connect():
                    pass
            except ImportError as error:
                return f"{side} connection {name!r}: {_missing_driver(error)}", False
            except sa.exc.SQLAlchemyError as error:
                return (
                    f"cannot connect to {side} connection {name!r} ({connection.redacted_url}): "
                    f"{_database_reason(error)}",
                    False,
                )
            engines.append(engine)
        try:
            plan = plan_sync(table, engines[0], engines[1], create_target=False)
        except SyncPipelineError as error:
            return str(error), False
        except sa.exc.SQLAlchemyError as error:
            return f"database error while inspecting the tables: {_database_reason(error)}", False
    return None, plan.target is None


@cli.command(context_settings=_CONTEXT, short_help="Show what a sync of one partition would change.")
@click.argument("table_name", metavar="TABLE")
@_partition_option
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=DEFAULT_SAMPLE_LIMIT,
    show_default=True,
    help="Sample keys to show per kind of change (0 for none).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
@_config_option
def diff(table_name: str, partition_key: str, limit: int, as_json: bool, config_path: Path | None) -> None:
    """Show what a sync of TABLE's partition would change, without writing anything.

    Runs the sync's comparison as a dry run: counts of the rows it would insert, update and delete
    and sample keys of each. Nothing is written to the target, not even a missing target table
    (then every source row of the hour counts as an insert and no sample keys are listed).
    """
    config = _load(config_path)
    table = _table(config, table_name)
    window = _window(config, table, partition_key)
    samples = _Samples(limit)
    stats = _run(config, table, window, dry_run=True, on_change=samples)
    if as_json:
        _echo_json(
            {
                **_header("diff", table, partition_key, window),
                "dry_run": True,
                "stats": stats.as_dict(),
                "samples": samples.as_json(),
                "sample_limit": limit,
            }
        )
        return
    verdict = "no changes" if stats.changed == 0 else f"{stats.changed} row(s) would change"
    click.echo(f"diff {table.name} partition {partition_key} {window}: {verdict} (dry run, nothing written)")
    _echo_stats(stats)
    for kind in samples.kinds():
        keys = samples.keys.get(kind, [])
        total = samples.totals[kind]
        more = f" (first {len(keys)} of {total})" if total > len(keys) else ""
        shown = ", ".join(_key_text(key) for key in keys) if keys else "-"
        click.echo(f"{kind}{more}: {shown}")


@cli.command(context_settings=_CONTEXT, short_help="Sync one partition of a table now.")
@click.argument("table_name", metavar="TABLE")
@_partition_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
@_config_option
def sync(table_name: str, partition_key: str, as_json: bool, config_path: Path | None) -> None:
    """Sync one partition of TABLE now, exactly as the hourly schedule would.

    The target table is created if missing; the hour's changes commit in one transaction, and a
    concurrent sync of the same table and hour (such as the scheduled one) is waited for, not
    interleaved. Safe to repeat: a second run changes nothing.
    """
    config = _load(config_path)
    table = _table(config, table_name)
    window = _window(config, table, partition_key)
    stats = _run(config, table, window, dry_run=False, on_change=None)
    if as_json:
        _echo_json({**_header("sync", table, partition_key, window), "stats": stats.as_dict()})
        return
    click.echo(
        f"synced {table.name} partition {partition_key} {window}: "
        f"{stats.inserted} inserted, {stats.updated} updated, {stats.deleted} deleted"
    )
    _echo_stats(stats)


def _run(
    config: SyncConfig,
    table: TableConfig,
    window: Window,
    *,
    dry_run: bool,
    on_change: Callable[[str, Any], None] | None,
) -> SyncStats:
    """Run the engine, turning every expected failure into a one-line message (exit 1, or 2 for config)."""
    source_url, target_url = _urls(config, table)
    secrets = _scrubber(config)
    try:
        return sync_partition(table, source_url, target_url, window, dry_run=dry_run, on_change=on_change)
    except DatabaseUnavailable as error:
        # The engine's message says what failed but not where: name both ends, passwords hidden.
        source, target = (config.connections[ref.connection] for ref in (table.source, table.target))
        _fail(
            secrets(
                f"{table.name}: {error} (source {table.source.connection!r} {source.redacted_url}, "
                f"target {table.target.connection!r} {target.redacted_url})"
            ),
            EXIT_FAILED,
        )
    except SyncPipelineError as error:
        _fail(
            secrets(f"{table.name}: {error}"),
            EXIT_USAGE if isinstance(error, ConfigError) else EXIT_FAILED,
        )
    except sa.exc.SQLAlchemyError as error:
        _fail(secrets(f"{table.name}: database error: {_database_reason(error)}"), EXIT_FAILED)
    except ImportError as error:
        _fail(f"{table.name}: {_missing_driver(error)}", EXIT_USAGE)


@cli.command(
    context_settings=_CONTEXT, short_help="Open the Dagster UI, daemon and schedules on this machine."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the UI listens on.")
@click.option("--port", default=3000, show_default=True, type=int, help="Port of the UI.")
@click.option(
    "--sync-last-hour/--no-sync-last-hour",
    default=None,
    help="Sync the last completed hour of every table before opening the UI "
    "(default: on for the embedded demo, off for a configuration file).",
)
@_config_option
def dev(host: str, port: int, sync_last_hour: bool | None, config_path: Path | None) -> None:
    """Run `dagster dev` on this project's code location with a persistent DAGSTER_HOME.

    DAGSTER_HOME defaults to ./.dagster_home and gets this project's instance settings (run queue,
    one step per table at a time) on first start. Without a configuration file (no --config, no
    SYNC_PIPELINE_CONFIG) the code location serves the embedded SQLite demo, whose data lives in
    ./data (SYNC_PIPELINE_DATA_DIR).
    """
    from sync_pipeline.cli.dev import run_dev

    chosen = config_path or click.get_current_context().obj.get("config_path")
    if chosen is not None:
        os.environ[CONFIG_ENV_VAR] = str(Path(chosen).resolve())
    demo = not os.environ.get(CONFIG_ENV_VAR)
    run_dev(host, port, sync_first=demo if sync_last_hour is None else sync_last_hour)


def _fail(message: str, exit_code: int) -> NoReturn:
    # ``from None``: the CLI prints no traceback, and the chain of a database error may hold secrets.
    raise _failure(message, exit_code) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``sync-pipeline`` console script (``argv`` for calling it from Python)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="sync-pipeline")


if __name__ == "__main__":
    main()
