"""``sync-pipeline diff`` and ``sync-pipeline sync``: one partition of one table, previewed or synced.

Both run the engine's :func:`~sync_pipeline.engine.sync.sync_partition`, ``diff`` as a dry run that
writes nothing, ``sync`` exactly as the hourly schedule would; every expected failure becomes a
one-line message naming the table (and, for an unreachable database, both connections, redacted).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from sync_pipeline.cli.errors import (
    EXIT_FAILED,
    EXIT_USAGE,
    database_reason,
    fail,
    missing_driver,
    scrubber_for,
)
from sync_pipeline.cli.options import (
    CONTEXT,
    config_option,
    load,
    partition_option,
    table_named,
    urls_of,
    window_of,
)
from sync_pipeline.cli.output import DEFAULT_SAMPLE_LIMIT, Samples, echo_json, echo_stats, header, key_text
from sync_pipeline.config import SyncConfig, TableConfig
from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import sync_partition
from sync_pipeline.errors import ConfigError, DatabaseUnavailable, SyncPipelineError

__all__ = ["diff", "run_partition", "sync"]


@click.command(context_settings=CONTEXT, short_help="Show what a sync of one partition would change.")
@click.argument("table_name", metavar="TABLE")
@partition_option
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=DEFAULT_SAMPLE_LIMIT,
    show_default=True,
    help="Sample keys to show per kind of change (0 for none).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
@config_option
def diff(table_name: str, partition_key: str, limit: int, as_json: bool, config_path: Path | None) -> None:
    """Show what a sync of TABLE's partition would change, without writing anything.

    Runs the sync's comparison as a dry run: counts of the rows it would insert, update and delete
    and sample keys of each. Nothing is written to the target, not even a missing target table
    (then every source row of the hour counts as an insert and no sample keys are listed).
    """
    config = load(config_path)
    table = table_named(config, table_name)
    window = window_of(config, table, partition_key)
    samples = Samples(limit)
    stats = run_partition(config, table, window, dry_run=True, on_change=samples)
    if as_json:
        echo_json(
            {
                **header("diff", table, partition_key, window),
                "dry_run": True,
                "stats": stats.as_dict(),
                "samples": samples.as_json(),
                "sample_limit": limit,
            }
        )
        return
    verdict = "no changes" if stats.changed == 0 else f"{stats.changed} row(s) would change"
    click.echo(f"diff {table.name} partition {partition_key} {window}: {verdict} (dry run, nothing written)")
    echo_stats(stats)
    for kind in samples.kinds():
        keys = samples.keys.get(kind, [])
        total = samples.totals[kind]
        more = f" (first {len(keys)} of {total})" if total > len(keys) else ""
        shown = ", ".join(key_text(key) for key in keys) if keys else "-"
        click.echo(f"{kind}{more}: {shown}")


@click.command(context_settings=CONTEXT, short_help="Sync one partition of a table now.")
@click.argument("table_name", metavar="TABLE")
@partition_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
@config_option
def sync(table_name: str, partition_key: str, as_json: bool, config_path: Path | None) -> None:
    """Sync one partition of TABLE now, exactly as the hourly schedule would.

    The target table is created if missing; the hour's changes commit in one transaction, and a
    concurrent sync of the same table and hour (such as the scheduled one) is waited for, not
    interleaved. Safe to repeat: a second run changes nothing.
    """
    config = load(config_path)
    table = table_named(config, table_name)
    window = window_of(config, table, partition_key)
    stats = run_partition(config, table, window, dry_run=False, on_change=None)
    if as_json:
        echo_json({**header("sync", table, partition_key, window), "stats": stats.as_dict()})
        return
    click.echo(
        f"synced {table.name} partition {partition_key} {window}: "
        f"{stats.inserted} inserted, {stats.updated} updated, {stats.deleted} deleted"
    )
    echo_stats(stats)


def run_partition(
    config: SyncConfig,
    table: TableConfig,
    window: Window,
    *,
    dry_run: bool,
    on_change: Callable[[str, Any], None] | None,
) -> SyncStats:
    """Run the engine, turning every expected failure into a one-line message (exit 1, or 2 for config)."""
    source_url, target_url = urls_of(config, table)
    secrets = scrubber_for(config)
    try:
        return sync_partition(table, source_url, target_url, window, dry_run=dry_run, on_change=on_change)
    except DatabaseUnavailable as error:
        # The engine's message says what failed but not where: name both ends, passwords hidden.
        source, target = (config.connections[ref.connection] for ref in (table.source, table.target))
        fail(
            secrets(
                f"{table.name}: {error} (source {table.source.connection!r} {source.redacted_url}, "
                f"target {table.target.connection!r} {target.redacted_url})"
            ),
            EXIT_FAILED,
        )
    except SyncPipelineError as error:
        fail(
            secrets(f"{table.name}: {error}"),
            EXIT_USAGE if isinstance(error, ConfigError) else EXIT_FAILED,
        )
    except sa.exc.SQLAlchemyError as error:
        fail(secrets(f"{table.name}: database error: {database_reason(error)}"), EXIT_FAILED)
    except ImportError as error:
        fail(f"{table.name}: {missing_driver(error)}", EXIT_USAGE)
