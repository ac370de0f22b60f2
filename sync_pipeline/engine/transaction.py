"""The window's lock and transaction: what makes a partition's changes atomic and never interleaved.

A lock on the target (PostgreSQL advisory lock, MySQL/MariaDB ``GET_LOCK``, SQLite's write lock)
keeps two syncs of the same table and window apart; it belongs to the session, so a killed run leaves
none behind. Everything the sync writes happens inside one transaction on that session, committed
once at the end: a crash, a kill or a lost connection before the commit leaves the target as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from sync_pipeline.engine.db.dialects.sqlite import BEGIN_OPTION
from sync_pipeline.engine.db.engine import redact_url
from sync_pipeline.engine.db.side import TableSide
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.errors import LockTimeout

log = logging.getLogger(__name__)


def window_lock_name(schema: str | None, table: str, window: Window) -> str:
    """The name a sync locks ``table``'s ``window`` under on its target.

    Public so that an operator (or a test) can see who holds it: ``pg_locks`` shows the advisory key
    ``hashtextextended(name, 0)``; MariaDB's ``IS_USED_LOCK`` takes the adapter's digest of it. On
    MariaDB and MySQL, whose lock names are global to the server, ``schema`` of a table named without
    one is the connection's database (``Adapter.lock_scope``).
    """
    return f"{schema or ''}.{table}@{window.start.isoformat()}"


@contextmanager
def locked_window(
    engine: sa.Engine, target: TableSide, window: Window, *, what: str, timeout: float
) -> Iterator[sa.Connection]:
    """A connection to the target holding the window's lock, inside the transaction that commits on exit.

    ``what`` names the sync in a :class:`~sync_pipeline.errors.LockTimeout` (no secret: the URL is
    redacted). Leaving the block by an error rolls the transaction back; the lock is released either
    way (and dies with the session if the process is killed).
    """
    with engine.connect() as conn:
        schema = target.name.schema or target.adapter.lock_scope(conn)
        lock_name = window_lock_name(schema, target.name.table, window)
        if not target.adapter.acquire_lock(conn, lock_name, timeout):
            raise LockTimeout(
                f"another sync of {what} held the lock for more than {timeout:g}s "
                f"(target {redact_url(engine.url)})"
            )
        try:
            conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
            try:
                transaction = conn.begin()
            except sa.exc.OperationalError as error:
                if "locked" in str(error.orig):
                    raise LockTimeout(
                        f"another sync holds the write lock of {target.name} for more than {timeout:g}s"
                    ) from error
                raise
            with transaction:
                yield conn
        finally:
            quietly(lambda: target.adapter.release_lock(conn, lock_name))


def quietly(action: Callable[[], object]) -> None:
    """Run a cleanup whose failure must not hide the real error (a dead connection drops its lock)."""
    try:
        action()
    except sa.exc.SQLAlchemyError as error:
        log.debug("cleanup failed: %s", error)
