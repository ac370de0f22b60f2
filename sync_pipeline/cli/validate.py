"""``sync-pipeline validate``: prove a configuration against the live databases before deploying it.

Each table's two databases are connected to and its source and target tables inspected with the
same planning code a sync runs, with ``create_target=False`` so that nothing is ever written.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import click
import sqlalchemy as sa

from sync_pipeline.cli.errors import CommandFailed, database_reason, missing_driver, scrubber_for
from sync_pipeline.cli.options import CONTEXT, config_option, load, table_named
from sync_pipeline.cli.output import arrow
from sync_pipeline.config import SyncConfig, TableConfig
from sync_pipeline.engine.db.engine import open_engine
from sync_pipeline.engine.plan import plan_sync
from sync_pipeline.errors import SyncPipelineError

__all__ = ["validate", "validate_table"]


@click.command(context_settings=CONTEXT, short_help="Check the config and tables against the live databases.")
@click.argument("tables", nargs=-1, metavar="[TABLE]...")
@config_option
def validate(tables: tuple[str, ...], config_path: Path | None) -> None:
    """Check the configuration and every table (or the named TABLEs) against the live databases.

    For each table both databases are connected to and the source and target tables are inspected:
    the source table and its primary_key, updated_at and synced columns must exist, updated_at must
    be a timestamp, and an existing target must have every synced column with a compatible type and
    a primary key or unique index on the key columns. A missing target is fine: the first sync
    creates it. Nothing is written.

    Prints one line per table and exits 1 if any table failed.
    """
    config = load(config_path)
    secrets = scrubber_for(config)
    selected = (
        [table_named(config, name) for name in dict.fromkeys(tables)] if tables else list(config.tables)
    )
    width = max(len(table.name) for table in selected)
    to = arrow()
    failed = 0
    for table in selected:
        problem, created = validate_table(config, table)
        if problem is None:
            state = "target will be created" if created else "target exists"
            click.echo(
                f"ok   {table.name:<{width}}  source {table.source.connection} {to} "
                f"target {table.target.connection} ({state})"
            )
        else:
            failed += 1
            click.echo(f"FAIL {table.name}: {secrets(problem)}")
    if failed:
        raise CommandFailed(f"{failed} of {len(selected)} table(s) failed validation")


def validate_table(config: SyncConfig, table: TableConfig) -> tuple[str | None, bool]:
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
                return f"{side} connection {name!r}: {missing_driver(error)}", False
            except sa.exc.SQLAlchemyError as error:
                return (
                    f"cannot connect to {side} connection {name!r} ({connection.redacted_url}): "
                    f"{database_reason(error)}",
                    False,
                )
            engines.append(engine)
        try:
            plan = plan_sync(table, engines[0], engines[1], create_target=False)
        except SyncPipelineError as error:
            return str(error), False
        except sa.exc.SQLAlchemyError as error:
            return f"database error while inspecting the tables: {database_reason(error)}", False
    return None, plan.target is None
