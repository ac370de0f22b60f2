"""Whole-row fingerprints: the engine's own hash between two tables of one engine, canonical text elsewhere.

Verification and drift checks compare every synced column of every row of a window. The canonical
text of a row (:mod:`~sync_pipeline.engine.db.canonical`) is what two different engines can agree
on, but printing every value as text and hashing it with md5 costs PostgreSQL about 2.4 µs a row.
Two tables on one engine need no common text: the engine's own hash of its stored values is equal
exactly when the values are, at a quarter of that cost or less. PostgreSQL hashes each column by
its type's own extended hash function (the hash opclass's, as hash partitioning does) with a seed
for its position, XORs them and mixes the result once more (:func:`native_hash`): a third cheaper
than ``hash_record_extended`` of a row constructor, which forms and takes apart a record per row.
MariaDB/MySQL multiplies the CRC32s of the row's text in two arrangements (the columns in order
and reversed: each CRC alone is affine over GF(2), so in a sum of rows the same bit flipped in two
rows could cancel; their product cannot be undone so), as its range hash of ``(key, updated_at)``.

A column is hashed as stored only where both sides hold the same type (so the same value is stored
alike); where the two types differ it is hashed through its canonical text, and where even that
cannot be computed in SQL (JSON across engines) the rows travel and are hashed here, a
batch at a time, batches bounded in bytes as well as rows (:func:`python_fingerprints`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import reduce
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, Cast, ColumnElement

from sync_pipeline.engine.db.canonical import NULL_TEXT
from sync_pipeline.engine.db.dialects.sqlite import as_text, hash60_text
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

    Only between equal types: PostgreSQL's integers, decimals, texts and JSON are cast to one type
    first, so their declared width does not matter (an ``int`` and a ``bigint`` hash alike), and its
    other values are hashed as stored. MariaDB/MySQL values are hashed as printed, so their types
    must be declared alike to the fractional second (see :func:`_declared`).
    """
    family = family_of(source.type)
    if family is not family_of(target.type):
        return False
    if dialect == "postgresql":
        if family in (Family.INTEGER, Family.DECIMAL, Family.TEXT, Family.JSON, Family.FLOAT):
            return True
        # The stored value is hashed, whatever precision the type declares.
        return family in _PG_NATIVE and str(source.type) == str(target.type)
    if dialect == "mysql":
        return family in _MYSQL_NATIVE and _declared(source) == _declared(target)
    return False


_MYSQL = mysql.dialect()


def _declared(column: sa.Column[Any]) -> str:
    """A MariaDB/MySQL column's type as the engine declares it: its values are hashed as printed,
    and DATETIME prints "08:00:01" where DATETIME(6) prints "08:00:01.000000". ``str(type)``, the
    generic form, drops the fractional seconds: both are "DATETIME" there."""
    return str(column.type.compile(dialect=_MYSQL))


def stored_value(dialect: str, column: sa.Column[Any]) -> ColumnElement[Any]:
    """A column as it is hashed natively (see :func:`native_part`), typed for :func:`native_hash`."""
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
            # float8's hash takes -0 for 0 (as the canonical text does: MariaDB cannot store -0) and
            # every NaN for one.
            return sa.cast(column, postgresql.DOUBLE_PRECISION)
        if family is Family.JSON:
            # The JSON literal null reads as None and is written as SQL NULL: they compare equal.
            return sa.func.coalesce(
                sa.cast(column, postgresql.JSONB), sa.cast(sa.literal("null"), postgresql.JSONB)
            )
    return column


# PostgreSQL's extended hash function of each type native_hash hashes directly (the function its
# hash opclass uses); any other part is hashed as a one-field record, whatever its type.
_PG_HASHES: list[tuple[type[sa.types.TypeEngine[Any]], str]] = [
    (sa.Float, "hashfloat8extended"),  # before Numeric: Float subclasses it
    (sa.Numeric, "hash_numeric_extended"),
    (sa.BigInteger, "hashint8extended"),
    (sa.String, "hashtextextended"),
    (sa.Uuid, "uuid_hash_extended"),
]
_MASK64 = (1 << 64) - 1
# A literal, parsed once with the statement (a bound '0' cast to interval would be cast per row:
# interval input is only stable).
_ZERO_OFFSET = sa.literal_column("INTERVAL '0'", sa.Interval)


def _signed64(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _pg_null_hash(seed: int) -> int:
    """What a NULL in position ``seed`` hashes to: a constant of that position, unlike any value's."""
    return _signed64(0x9E3779B97F4A7C15 * seed + 0x632BE59BD9B4E019)


def _pg_part_hash(part: ColumnElement[Any], seed: int) -> ColumnElement[int]:
    """One part's 64-bit hash, seeded by its position, never NULL (a NULL has its own constant)."""
    seed_value = sa.literal(seed, sa.BigInteger)
    type_ = part.type
    if isinstance(type_, postgresql.JSONB):
        # jsonb's hash is the seed itself for every empty container, {} and [] alike: the value's
        # type tells those two apart. (stored_value gives no NULL here: SQL NULL is JSON null.)
        hashed = sa.func.jsonb_hash_extended(part, seed_value)
        kind = sa.func.hashtextextended(sa.func.jsonb_typeof(part), seed_value)
        return hashed.op("#", return_type=sa.BigInteger)(kind)
    value_hash: ColumnElement[int]
    if isinstance(type_, sa.DateTime):
        # timestamptz is hashed by timestamp's function: the same stored microseconds, at UTC. By
        # an offset of zero, not the zone 'UTC': timezone(text, ...) looks the zone's name up again
        # for every row (a quarter of the column's cost); timezone(interval, ...) only subtracts.
        stored = sa.func.timezone(_ZERO_OFFSET, part) if type_.timezone else part
        value_hash = sa.func.timestamp_hash_extended(stored, seed_value)
    else:
        name = next((fn for klass, fn in _PG_HASHES if isinstance(type_, klass)), None)
        if name is None:
            record = sa.func.hash_record_extended(sa.func.row(part), seed_value)
            return sa.type_coerce(record, sa.BigInteger)  # a NULL field hashes as 0 in a record
        if name == "hashint8extended":
            # bigint's hash folds the value to 32 bits first (hi ^ lo, so that it equals int4's):
            # 0 and 4294967297 hash alike. The seed is taken whole, so the value goes there.
            value_hash = sa.func.hashint8extended(seed_value, part)
        else:
            value_hash = getattr(sa.func, name)(part, seed_value)
    if not _may_be_null(part):
        return value_hash  # a NOT NULL column: no coalesce to evaluate for each of its rows
    return sa.func.coalesce(value_hash, sa.literal(_pg_null_hash(seed), sa.BigInteger))


def _may_be_null(part: ColumnElement[Any]) -> bool:
    """Whether a part can be NULL: anything but a column declared NOT NULL (as reflected), cast or
    collated. Decided for each side by its own column: the hash of a value is the same either way,
    only a side that cannot hold NULL skips the test for it."""
    element: Any = part
    while True:
        if isinstance(element, sa.Column):
            return bool(element.nullable)
        if isinstance(element, Cast):
            element = element.clause
        elif isinstance(element, BinaryExpression) and element.operator is operators.collate:
            element = element.left
        else:
            return True


def native_hash(dialect: str, parts: Sequence[ColumnElement[Any]]) -> ColumnElement[int]:
    """One row's hash of ``parts`` (stored values, or canonical texts) by the engine's own functions.

    PostgreSQL: each part by its type's extended hash function seeded with its position (a NULL as
    a constant of that position), the parts XORed, and that mixed once more by ``hashint8extended``
    so that a change of one part moves the row's hash as a whole, not bit by bit: in a sum of rows,
    the same XOR applied to two rows could otherwise cancel. Known limits, the engine's own: a
    timestamp's hash folds its 64-bit microseconds to 32 bits first (a change that flips the same
    bits in both halves, 71.6 minutes and a microsecond apart, goes unseen), and jsonb's hash
    combines a document's scalars and container marks by XOR and rotation, so some documents
    differing only in nested empty containers (``[[], []]`` and ``[[[]]]``) hash alike.
    """
    if dialect == "postgresql":
        hashes = [_pg_part_hash(part, seed) for seed, part in enumerate(parts, start=1)]
        combined = reduce(lambda left, right: left.op("#", return_type=sa.BigInteger)(right), hashes)
        # As the seed: all 64 bits of it are mixed (see the bigint parts above).
        return sa.func.hashint8extended(sa.literal(0, sa.BigInteger), combined, type_=sa.BigInteger)
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
    other columns (JSON across engines) travel as values and are printed by ``texts``. Rows
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
                # Joined once: its length sizes the batches, its md5 is the row's hash (hash60's text).
                joined = "|".join(
                    [*map(as_text, row[head]), *(text(v) for text, v in zip(texts, row[first:], strict=True))]
                )
                weight += len(joined) + _ROW_OVERHEAD
                chunk.append((row[0] if n == 1 else tuple(row[:n]), hash60_text(joined)))
            yield chunk
            per_row = max(1, weight // len(rows))
            size = max(1, min(chunk_size, budget // per_row))
    finally:
        result.close()
