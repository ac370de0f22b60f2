"""How the command fails: exit codes, one-line messages, never a traceback, never a password.

Exit codes carry meaning for scripts: 0 success, 1 a failed check or sync (any
:class:`~sync_pipeline.errors.SyncPipelineError`, a database error, or an error nobody expected),
2 a usage or configuration mistake that no retry fixes. Every message is scrubbed of the configured
URLs' secrets (:mod:`sync_pipeline.redaction`) before it is printed, as a last line of defence: a
driver may quote its connection string or a host name holding half a password.
"""

from __future__ import annotations

from typing import Any, NoReturn

import click
import sqlalchemy as sa

from sync_pipeline.config import SyncConfig
from sync_pipeline.redaction import Scrubber

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "CommandFailed",
    "ConfigurationFailed",
    "ReportingGroup",
    "database_reason",
    "fail",
    "first_line",
    "missing_driver",
    "scrubber_for",
]

EXIT_FAILED = 1
"""A check or a sync failed (schema, data, lock, database): the config may be right, the world is not."""

EXIT_USAGE = 2
"""The command line or the configuration file is wrong: retrying the same command cannot help."""


class CommandFailed(click.ClickException):
    """An expected failure: click prints ``Error: <message>`` on stderr and exits with 1.

    Going through ClickException (rather than printing and calling sys.exit) keeps ``CliRunner``
    and the real process behaving the same, and guarantees no traceback.
    """

    exit_code = EXIT_FAILED


class ConfigurationFailed(CommandFailed):
    """The configuration (or the way the command names it) is wrong: exit 2, like a usage error."""

    exit_code = EXIT_USAGE


class ReportingGroup(click.Group):
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
            reason = f"{type(error).__name__}: {first_line(str(error))}".removesuffix(": ")
            message = f"{ctx.invoked_subcommand or 'command'} failed with an unexpected error: {reason}"
            raise CommandFailed((scrubber or Scrubber())(message)) from None


def failure(message: str, exit_code: int) -> CommandFailed:
    return ConfigurationFailed(message) if exit_code == EXIT_USAGE else CommandFailed(message)


def scrubber_for(config: SyncConfig) -> Scrubber:
    """Hides the secrets of every configured URL, in any form, from text the command prints.

    Messages are built from redacted URLs already; this catches text the command does not control,
    such as a driver error that quotes its DSN or a host name holding half a password.
    """
    return Scrubber(connection.url.get_secret_value() for connection in config.connections.values())


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def database_reason(error: sa.exc.SQLAlchemyError) -> str:
    """The driver's own one-line reason, without SQLAlchemy's statement echo and documentation link."""
    if isinstance(error, sa.exc.DBAPIError) and error.orig is not None:
        reason = first_line(str(error.orig)) or type(error.orig).__name__
        return f"{type(error.orig).__name__}: {reason}"
    return first_line(str(error)) or type(error).__name__


def missing_driver(error: ImportError) -> str:
    """A URL naming a driver this project does not install (``postgresql+psycopg2``): say what to use."""
    module = error.name or str(error)
    return (
        f"database driver {module!r} is not installed; use the drivers sync_pipeline ships: "
        "postgresql+psycopg://, mysql+pymysql:// (or mariadb+pymysql://), sqlite:///"
    )


def fail(message: str, exit_code: int) -> NoReturn:
    # ``from None``: the CLI prints no traceback, and the chain of a database error may hold secrets.
    raise failure(message, exit_code) from None
