"""Whole-row fingerprints: the engine's own hash between two tables of one engine, canonical text elsewhere.

Verification and drift checks compare every synced column of every row of a window. The canonical
text of a row (:mod:`~sync_pipeline.engine.db.canonical`) is what two different engines can agree
on, but printing every value as text and hashing it with md5 costs PostgreSQL about 2.4 µs a row.
Two tables on one engine need no common text: the engine's own hash of its stored values is equal
exactly when the values are, at a quarter of that cost or less. PostgreSQL hashes a row constructor with
``hash_record_extended`` (each field by its type's hash opclass, as hash partitioning does);
MariaDB/MySQL multiplies the CRC32s of the row's text in two arrangements (the columns in order
and reversed: each CRC alone is affine over GF(2), so in a sum of rows the same bit flipped in two
rows could cancel; their product cannot be undone so), as its range hash of ``(key, updated_at)``.

A column is hashed as stored only where both sides hold the same type (so the same value is stored
alike); where the two types differ it is hashed through its canonical text, and where even that
cannot be computed in SQL (floats or JSON across engines) the rows travel and are hashed here, a
batch at a time, batches bounded in bytes as well as rows (:func:`python_fingerprints`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import reduce
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from sync_pipeline.engine.db.canonical import NULL_TEXT
from sync_pipeline.engine.db.dialects.sqlite import hash60
from sync_pipeline.engine.db.schema import Family, family_of
from sync_pipeline.engine.diff.merge import Key
from sync_pipeline.engine.settings import DEFAULT_CHUNK_BYTES

# What the rows of one batch of the Python fallback may weigh (their canonical text), whatever the
# row width: a window of 1 MB JSON documents must not be read 10,000 rows at a time. Syncs pass the
# table's ``chunk_bytes``; this is its default.
FALLBACK_BATCH_BYTES = DEFAULT_CHUNK_BYTES
_ROW_OVERHEAD = 64  # bytes a fetched row costs beyond its values' text (tuple, objects)

# Families PostgreSQL hashes as stored (by the type's hash opclass), after the casts below.
_PG_NATIVE = {
    Family.INTEGER,
    Family.DECIMAL,
    Family.FLOAT,
    Family.TEXT,
    Family.BOOLEAN,
    Family.BINARY,
    Family.DATE,
    Family.TIMESTAMP,
    Family.UUID,
    Family.JSON,
}
# Families whose MariaDB/MySQL text is the stored value itself (the type fixes scale and precision).
_MYSQL_NATIVE = {
    Family.INTEGER,
    Family.DECIMAL,
    Family.FLOAT,
    Family.TEXT,
    Family.BOOLEAN,
    Family.BINARY,
    Family.DATE,
    Family.TIME,
    Family.TIMESTAMP,
}


def has_native_row_hash(dialect: str) -> bool:
    """Whether two tables of this engine can be compared by :func:`native_part` and :func:`native_hash`."""
    return dialect in ("postgresql", "mysql")


def native_part(dialect: str, source: sa.Column[Any], target: sa.Column[Any]) -> bool:
    """Whether a column of two tables of one engine can be hashed as stored, rather than as text.

    Only between equal types (an ``int`` and a ``bigint`` hash alike on PostgreSQL, but a
    ``timestamp(3)`` holds other values than a ``timestamp(6)``): PostgreSQL's integers, decimals,
    texts and JSON are cast to one type first, so their declared width does not matter.
    """
    family = family_of(source.type)
    if family is not family_of(target.type):
        return False
    if dialect == "postgresql":
        if family in (Family.INTEGER, Family.DECIMAL, Family.TEXT, Family.JSON, Family.FLOAT):
            return True
        return family in _PG_NATIVE and str(source.type) == str(target.type)
    if dialect == "mysql":
        return family in _MYSQL_NATIVE and str(source.type) == str(target.type)
    return False


def stored_value(dialect: str, column: sa.Column[Any]) -> ColumnElement[Any]:
    """A column as it is hashed natively (see :func:`native_part`)."""
    family = family_of(column.type)
    if dialect == "postgresql":
        if family is Family.INTEGER:
            return sa.cast(column, sa.BigInteger)
        if family is Family.DECIMAL:
            return sa.cast(column, sa.Numeric)  # numeric's hash: 1.0 and 1.00 alike, as the text form
        if family is Family.TEXT:
            # "C": text hashes by its bytes. Under a nondeterministic collation (ICU, case-insensitive)
            # PostgreSQL hashes a text's sort key, which another collation's equal text does not share.
            return sa.cast(column, sa.Text).collate("C")
        if family is Family.FLOAT:
            # The IEEE bits (float8's own hash of 0 is 0, which hash_record also gives NULL), of x + 0
            # so that -0 is 0, as in the canonical text (MariaDB cannot store -0).
            return sa.func.float8send(sa.cast(column, postgresql.DOUBLE_PRECISION) + 0.0)
        if family is Family.JSON:
            # The JSON literal null reads as None and is written as SQL NULL: they compare equal.
            # Hashed here with seed 1: jsonb's hash of an empty array or object is 0, which is also
            # what hash_record gives a NULL field.
            as_jsonb = sa.cast(column, postgresql.JSONB)
            value = sa.func.nullif(as_jsonb, sa.cast(sa.literal("null"), postgresql.JSONB))
            return sa.func.jsonb_hash_extended(value, 1)
    return column


def native_hash(dialect: str, parts: Sequence[ColumnElement[Any]]) -> ColumnElement[int]:
    """One row's hash of ``parts`` (stored values, or canonical texts) by the engine's own functions."""
    if dialect == "postgresql":
        return sa.type_coerce(sa.func.hash_record_extended(sa.func.row(*parts), 0), sa.BigInteger)
    if dialect == "mysql":
        # concat_ws skips NULLs: each part carries the NULL marker of the canonical text instead.
        # Two arrangements of the row's text, each through CRC32 (MySQL has no CRC32C).
        marked = [sa.func.coalesce(part, NULL_TEXT) for part in parts]
        first = sa.func.crc32(sa.func.concat_ws("|", *marked))
        second = sa.func.crc32(sa.func.concat_ws("|", *reversed(marked)))
        return sa.type_coerce(first * second, sa.BigInteger)
    raise NotImplementedError(f"{dialect} has no native whole-row hash")


def joined_text(parts: Sequence[ColumnElement[Any]]) -> ColumnElement[str]:
    """Canonical texts (never NULL) joined by ``|`` in SQL: ``||`` or CONCAT, whichever the engine has."""
    pieces = [sa.type_coerce(part, sa.Text) for part in parts]
    return reduce(lambda left, right: left + "|" + right, pieces)


def python_fingerprints(
    conn: sa.Connection,
    keys: Sequence[ColumnElement[Any]],
    sql_parts: Sequence[ColumnElement[Any]],
    columns: Sequence[ColumnElement[Any]],
    texts: Sequence[Callable[[Any], str]],
    where: ColumnElement[bool],
    order: Sequence[ColumnElement[Any]],
    chunk_size: int,
    batch_bytes: int | None = None,
) -> Iterator[list[tuple[Key, int]]]:
    """``(key, hash)`` chunks of rows whose canonical text is partly computed here.

    The database joins the canonical text of every column it can print (``sql_parts``); only the
    other columns (floats, JSON across engines) travel as values and are printed by ``texts``. Rows
    are fetched in batches of at most ``chunk_size`` rows and about ``batch_bytes`` of text, sized
    from the rows already seen, so wide rows never pile up in memory (default
    :data:`FALLBACK_BATCH_BYTES`).
    """
    budget = FALLBACK_BATCH_BYTES if batch_bytes is None else batch_bytes
    n = len(keys)
    selected: list[ColumnElement[Any]] = list(keys)
    if sql_parts:
        selected.append(joined_text(sql_parts))
    first = len(selected)
    selected.extend(columns)
    stmt = sa.select(*selected).where(where).order_by(*order)
    # A small driver buffer: the batch size below, not SQLAlchemy's read-ahead, bounds what is held.
    result = conn.execution_options(stream_results=True, max_row_buffer=1).execute(stmt)
    head = slice(n, first)
    size = min(chunk_size, 16)  # a first look at the rows' width
    try:
        while rows := result.fetchmany(size):
            chunk: list[tuple[Key, int]] = []
            weight = 0
            for row in rows:
                printed = [*row[head], *(text(v) for text, v in zip(texts, row[first:], strict=True))]
                weight += sum(map(len, printed)) + _ROW_OVERHEAD
                chunk.append((row[0] if n == 1 else tuple(row[:n]), hash60(*printed)))
            yield chunk
            per_row = max(1, weight // len(rows))
            size = max(1, min(chunk_size, budget // per_row))
    finally:
        result.close()
