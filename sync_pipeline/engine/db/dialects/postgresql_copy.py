"""PostgreSQL COPY between sessions: the bulk path's way into a PostgreSQL target.

Three ways in, fastest first: a PostgreSQL source's binary COPY output piped unchanged when both
tables store the columns alike (:func:`stored_alike`, :func:`pipe_binary`); values printed by a
MySQL/MariaDB source into a text COPY (:func:`copy_text`); rows converted in Python into a binary COPY
typed by the target's OIDs (:func:`copy_rows`). Each runs on the DBAPI connection under a SQLAlchemy
connection, so its errors arrive raw from psycopg (:data:`INTEGRITY_ERRORS`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import sqlalchemy as sa

Rows = list[tuple[Any, ...]]
# Where streamed rows land: a table, or what creates the stage on the first row (a range that turns
# out to hold no row, such as the keys below the target's largest in a backfill oldest first, then
# costs no temporary table).
Into = sa.Table | Callable[[], sa.Table]

# A constraint violation while writing: wrapped by SQLAlchemy (statements), or raw from psycopg (COPY).
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sa.exc.IntegrityError, psycopg.IntegrityError)

# Binary COPY output arrives one row a block; the rows are passed on in blocks of about this size,
# so writing costs one call per block instead of one per row (both ends of the pipe take any split).
PIPE_BYTES = 64 * 1024


def stored_alike(
    source_conn: sa.Connection,
    source: sa.Table,
    target_conn: sa.Connection,
    target: sa.Table,
    columns: list[str],
) -> bool:
    """Whether two PostgreSQL tables store ``columns`` alike: same types, typmods included, so one's
    binary COPY output is the other's input unchanged."""
    return _column_types(source_conn, source, columns) == _column_types(target_conn, target, columns)


def table_of(into: Into) -> sa.Table:
    return into if isinstance(into, sa.Table) else into()


def _nonempty(chunks: Iterator[Rows]) -> Iterator[Rows] | None:
    """``chunks`` from their first row on, or ``None`` when there is none (nothing is created then)."""
    for rows in chunks:
        if rows:
            return itertools.chain([rows], chunks)
    return None


def driver_connection(conn: sa.Connection) -> psycopg.Connection[Any]:
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


# timestamp, timestamptz, time, timetz: with no precision declared they keep microseconds, as (6) does.
_MICROSECOND_TYPES = frozenset({1114, 1184, 1083, 1266})


def _column_types(conn: sa.Connection, table: sa.Table, columns: list[str]) -> list[tuple[Any, ...]]:
    """Each column's type OID and what its typmod says (length, precision, scale), as the server
    describes a query of them.

    A time type's undeclared precision is its (6): the stored values are the same microseconds, and
    a target created as ``timestamptz(6)`` from a plain ``timestamptz`` source must not cost every
    row a trip through Python.
    """
    select = sa.select(*(table.c[c] for c in columns)).limit(0)
    with driver_connection(conn).cursor() as cursor:
        cursor.execute(literal(select, conn))
        return [
            (
                d.type_code,
                d.display_size,
                6 if d.precision is None and d.type_code in _MICROSECOND_TYPES else d.precision,
                d.scale,
            )
            for d in cursor.description or ()
        ]


def literal(select: sa.Select[Any], conn: sa.Connection) -> str:
    """A statement as text with its values inlined: COPY takes no parameters."""
    return str(select.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))


def _copy_target(conn: sa.Connection, into: sa.Table, *, binary: bool = True) -> str:
    preparer = conn.dialect.identifier_preparer
    columns = ", ".join(preparer.quote(column.name) for column in into.columns)
    statement = f"COPY {preparer.format_table(into)} ({columns}) FROM STDIN"
    return f"{statement} (FORMAT BINARY)" if binary else statement


def pipe_binary(source_conn: sa.Connection, conn: sa.Connection, select: sa.Select[Any], into: Into) -> int:
    """PostgreSQL to PostgreSQL: the source's binary COPY output, in blocks of about ``PIPE_BYTES``,
    into the target's COPY. An output with no row (header and trailer only) writes nothing."""
    query = literal(select, source_conn)
    with (
        driver_connection(source_conn).cursor() as reader,
        reader.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)") as stream,
    ):
        blocks = iter(stream)
        head = bytearray()
        for block in blocks:
            head += block
            if len(head) >= PIPE_BYTES:
                break
        else:
            # The whole output is read: the source said how many rows it held.
            if reader.rowcount == 0:
                return 0
        target = table_of(into)
        with driver_connection(conn).cursor() as writer:
            with writer.copy(_copy_target(conn, target)) as sink:
                sink.write(head)
                buffer = bytearray()
                for block in blocks:
                    buffer += block
                    if len(buffer) >= PIPE_BYTES:
                        sink.write(buffer)
                        buffer = bytearray()
                if buffer:
                    sink.write(buffer)
            return max(0, writer.rowcount)


def copy_rows(conn: sa.Connection, to: Into, rows_of: Iterator[Rows]) -> int:
    """Rows into a PostgreSQL table by one binary COPY (plain INSERTs for a type with no binary form)."""
    chunks = _nonempty(rows_of)
    if chunks is None:
        return 0
    into = table_of(to)
    driver = driver_connection(conn)
    written = 0
    with driver.cursor() as cursor:
        cursor.execute(literal(sa.select(*into.columns).select_from(into).limit(0), conn))
        oids = [d.type_code for d in cursor.description or ()]
        if not all(driver.adapters.types.get(oid) for oid in oids):
            names = [column.name for column in into.columns]
            for rows in chunks:
                conn.execute(into.insert(), [dict(zip(names, row, strict=True)) for row in rows])
                written += len(rows)
            return written
        with cursor.copy(_copy_target(conn, into)) as copy:
            copy.set_types(oids)
            for rows in chunks:
                for row in rows:
                    copy.write_row(row)
                written += len(rows)
    return written


def copy_text(conn: sa.Connection, to: Into, rows_of: Iterator[Rows]) -> int:
    """Rows of values as text (``None`` for NULL) into a PostgreSQL table by one text COPY: the server
    parses each value into its column's type."""
    chunks = _nonempty(rows_of)
    if chunks is None:
        return 0
    into = table_of(to)
    written = 0
    statement = _copy_target(conn, into, binary=False)
    with driver_connection(conn).cursor() as cursor, cursor.copy(statement) as copy:
        for rows in chunks:
            for row in rows:
                copy.write_row(row)
            written += len(rows)
    return written
