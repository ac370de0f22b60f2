"""The ``sync-pipeline`` command: check a configuration, preview a partition, sync a partition.

Dagster runs the hourly syncs; this command exists for the moments around them: proving a new
configuration against the live databases before deploying it (``validate``), seeing what a sync of
one hour would change without writing anything (``diff``), and repairing one hour by hand (``sync``).

It is meant for operators at a terminal and for scripts, so:

* exit codes carry meaning: 0 success, 1 a failed check or sync (any
  :class:`~sync_pipeline.errors.SyncPipelineError`, a database error, or an unexpected one), 2 a
  usage or configuration mistake that no retry fixes;
* expected failures print one message on stderr, never a traceback;
* ``--json`` gives a stable, machine-readable document instead of the human layout;
* a password never reaches the terminal: URLs are shown redacted, and every message is scrubbed of
  the configured passwords as a last line of defence (a driver may quote its connection string);
* an error nobody expected (a bug) is one line too, with exit 1.

The commands live one concern to a module: :mod:`~sync_pipeline.cli.validate`,
:mod:`~sync_pipeline.cli.partition` (``diff`` and ``sync``), :mod:`~sync_pipeline.cli.dev`, with
their shared options, output and error handling in :mod:`~sync_pipeline.cli.options`,
:mod:`~sync_pipeline.cli.output` and :mod:`~sync_pipeline.cli.errors`. This module assembles them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click

from sync_pipeline.cli.errors import ReportingGroup
from sync_pipeline.cli.options import CONTEXT, config_option
from sync_pipeline.cli.partition import diff, sync
from sync_pipeline.cli.validate import validate
from sync_pipeline.config import CONFIG_ENV_VAR

__all__ = ["cli", "main"]


@click.group(name="sync-pipeline", cls=ReportingGroup, context_settings=CONTEXT)
@config_option
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


cli.add_command(validate)
cli.add_command(diff)
cli.add_command(sync)


@cli.command(
    context_settings=CONTEXT, short_help="Open the Dagster UI, daemon and schedules on this machine."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the UI listens on.")
@click.option("--port", default=3000, show_default=True, type=int, help="Port of the UI.")
@click.option(
    "--sync-last-hour/--no-sync-last-hour",
    default=None,
    help="Sync the last completed hour of every table before opening the UI "
    "(default: on for the embedded demo, off for a configuration file).",
)
@config_option
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


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``sync-pipeline`` console script (``argv`` for calling it from Python)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="sync-pipeline")


if __name__ == "__main__":
    main()
