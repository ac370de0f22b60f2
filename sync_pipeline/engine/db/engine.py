"""Opening database engines: the right driver, every session in UTC, credentials kept out of messages.

Engines are created inside a sync (never while Dagster definitions load) and disposed when it ends,
so a long-lived process holds no connection between runs; a database server's engine object is kept
for the next sync of the same URL (:func:`open_engine`), without its connections.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from sync_pipeline.engine.db.dialects import adapter_for
from sync_pipeline.errors import DatabaseUnavailable, LockTimeout, SyncPipelineError
from sync_pipeline.redaction import redact_url as redact_url  # the one redaction, re-exported

# The drivers this project installs; a bare "postgresql://" or "mysql://" would otherwise pick
# psycopg2 or mysqlclient, which are not dependencies.
_DEFAULT_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql", "sqlite": "pysqlite"}


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and pin the driver this project ships for its backend."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if "+" not in parsed.drivername and backend in _DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=f"{backend}+{_DEFAULT_DRIVERS[backend]}")
    return parsed


def create_engine(
    url: str | URL, *, application_name: str = "sync_pipeline", lock_timeout_seconds: float | None = None
) -> sa.Engine:
    """Create an engine whose sessions all run in UTC, with the dialect adapter's connection hooks.

    With ``lock_timeout_seconds`` no MariaDB/MySQL or PostgreSQL session of the engine waits longer
    than that for a lock the database takes by itself (a read queued behind another session's ALTER,
    a locked row): the statement fails instead, as a :class:`LockTimeout`, and the run is retried.
    """
    parsed = normalize_url(url)
    adapter = adapter_for(parsed.get_backend_name())
    connect_args = adapter.connect_args(parsed, application_name)
    if lock_timeout_seconds is not None:
        connect_args = adapter.bounded_connect_args(connect_args, lock_timeout_seconds)
    engine = sa.create_engine(
        parsed,
        connect_args=connect_args,
        pool_pre_ping=True,
        hide_parameters=True,  # row values can be personal data: keep them out of exception text
    )
    adapter.install_hooks(engine)
    # MariaDB/MySQL: every session's metadata and row lock waits (a read queues behind a pending
    # ALTER for the server's lock_wait_timeout, a day). SQLite's sessions wait their busy timeout,
    # which the writer sets to the same bound; PostgreSQL's lock_timeout is set when each connects.
    if lock_timeout_seconds is not None and adapter.name == "mysql":
        seconds = lock_timeout_seconds

        def bound_lock_waits(conn: sa.Connection) -> None:
            adapter.set_write_lock_wait(conn, seconds)

        sa.event.listen(engine, "engine_connect", bound_lock_waits)
    return engine


@dataclass
class _Kept:
    """An engine kept between units of work, and how many of them are using it now."""

    engine: sa.Engine
    users: int = 0


# Engines of database servers outlive the unit of work that opened them; their connections do not.
# A fresh engine initialises its dialect on its first connect and compiles every statement again,
# reflection's included: about half of planning a sync (0.05-0.1 s of each verification, measured
# in BENCHMARKS.md). SQLite's engines are not kept: an in-memory database lives as long as its engine.
_KEPT_BACKENDS = frozenset({"postgresql", "mysql", "mariadb"})
_KEPT_MAX = 16  # distinct (URL, lock bound) pairs; the least recently used idle one goes first
_kept: OrderedDict[tuple[str, float | None], _Kept] = OrderedDict()
_kept_lock = threading.Lock()


def _forget_kept_in_child() -> None:
    """In a forked child, forget the parent's kept engines without closing their connections.

    SQLAlchemy's advice for ``os.fork()``: a pool's connections belong to the process that opened
    them, and the child disposes the pool with ``close=False`` so that it opens its own. A fork made
    while a unit of work held a kept engine (or while another thread held the lock) must not hand
    the child the parent's sockets or a lock nobody will release.
    """
    global _kept_lock
    for kept in _kept.values():
        kept.engine.dispose(close=False)
    _kept.clear()
    _kept_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_kept_in_child)


@contextmanager
def open_engine(url: str | URL, *, lock_timeout_seconds: float | None = None) -> Iterator[sa.Engine]:
    """An engine whose pooled connections are all closed when the unit of work ends.

    For a database server the engine itself is kept for the next unit of work with the same URL and
    lock bound (its dialect initialised, its compiled statements cached), and disposed, which closes
    its idle connections, once no unit of work uses it: no connection outlives the unit of work.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() not in _KEPT_BACKENDS:
        engine = create_engine(parsed, lock_timeout_seconds=lock_timeout_seconds)
        try:
            yield engine
        finally:
            engine.dispose()
        return
    key = (parsed.render_as_string(hide_password=False), lock_timeout_seconds)
    with _kept_lock:
        kept = _kept.pop(key, None)
        if kept is None:
            kept = _Kept(create_engine(parsed, lock_timeout_seconds=lock_timeout_seconds))
        _kept[key] = kept  # the most recently used last
        kept.users += 1
        idle = [k for k, other in _kept.items() if other.users == 0]
        for old in idle[: max(0, len(_kept) - _KEPT_MAX)]:
            del _kept[old]  # disposed when its last user left: no connection to close
    try:
        yield kept.engine
    finally:
        with _kept_lock:
            kept.users -= 1
            if kept.users == 0:
                kept.engine.dispose()


# SQLSTATEs (PostgreSQL) and error numbers (MySQL/MariaDB) after which a retry can succeed.
_TRANSIENT_SQLSTATES = ("08", "40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300")
_TRANSIENT_MYSQL_CODES = {1040, 1053, 1205, 1213, 2002, 2003, 2006, 2013, 2055}


_DRIVER_MODULES = frozenset({"psycopg", "psycopg2", "pymysql", "MySQLdb", "sqlite3", "pg8000"})


def is_driver_error(error: BaseException) -> bool:
    """Whether ``error`` was raised by a database driver itself, not wrapped by SQLAlchemy."""
    return type(error).__module__.partition(".")[0] in _DRIVER_MODULES


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (a DBAPI error, raw or wrapped by SQLAlchemy) may go away on a retry."""
    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig if error.orig is not None else error
    # MySQL's error number first: PyMySQL also sets a SQLSTATE, and a lock wait timeout's (1205) is
    # the generic HY000, which would not mark it transient.
    args = getattr(error, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _TRANSIENT_MYSQL_CODES
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate.startswith(_TRANSIENT_SQLSTATES)
    message = str(error).lower()
    if "database is locked" in message:
        return True
    # psycopg raises OperationalError without SQLSTATE when it cannot connect at all.
    return type(error).__name__ == "OperationalError" and (
        "connection" in message or "server closed" in message or "refused" in message
    )


# A lock waited for longer than the session allows: PostgreSQL's lock_not_available (lock_timeout),
# MySQL/MariaDB's ER_LOCK_WAIT_TIMEOUT (innodb_lock_wait_timeout and lock_wait_timeout alike).
_LOCK_WAIT_SQLSTATE = "55P03"
_LOCK_WAIT_MYSQL_CODE = 1205


def is_lock_wait(error: BaseException) -> bool:
    """Whether ``error`` (raw or wrapped by SQLAlchemy) is a lock wait that reached the session's bound."""
    if isinstance(error, sa.exc.DBAPIError) and error.orig is not None:
        error = error.orig
    args = getattr(error, "args", ())
    if args and isinstance(args[0], int):
        return args[0] == _LOCK_WAIT_MYSQL_CODE
    return getattr(error, "sqlstate", None) == _LOCK_WAIT_SQLSTATE


def translate_error(error: BaseException, *, where: str) -> SyncPipelineError | None:
    """A transient database error as :class:`DatabaseUnavailable` (a lock wait that reached
    ``lock_timeout_seconds`` as :class:`LockTimeout`), so retries can tell it apart.

    Returns ``None`` for errors that are not transient: those propagate unchanged. SQLAlchemy's
    messages never include the password (it renders URLs redacted), and ``hide_parameters`` keeps
    row values out of them.
    """
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    if is_lock_wait(error):
        return LockTimeout(f"{where}: waited longer than lock_timeout_seconds for a lock: {reason}")
    if is_transient(error):
        return DatabaseUnavailable(f"{where}: {reason}")
    return None


@contextmanager
def translated_errors(where: str) -> Iterator[None]:
    """Database errors raised inside as the engine's own (:func:`translate_error`), others untouched.

    Wrapped by SQLAlchemy, or raw from the driver (psycopg's COPY runs on the DBAPI connection).
    """
    try:
        yield
    except Exception as error:
        if not (isinstance(error, sa.exc.DBAPIError) or is_driver_error(error)):
            raise
        translated = translate_error(error, where=where)
        if translated is not None:
            raise translated from error
        raise
