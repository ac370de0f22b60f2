"""Canonical text of every column value, identical on both sides: what full-row comparison hashes.

The sync compares keys and ``updated_at`` only, which is what makes it cheap; drift detection and the
post-sync verification must also see a value changed without touching ``updated_at``. They hash the
canonical text of every synced column. Inside the databases where both engines can produce the same
text for a column (integers, text, instants as epoch microseconds, booleans, bytes as hex, dates, and
doubles as the hex of their IEEE bits, and any type both sides store identically), and in Python,
over streamed rows, where they cannot (JSON across engines, single-precision floats across engines):
the Python forms below are the reference the SQL forms agree with.

JSON has no common text across engines in SQL. PostgreSQL's jsonb orders keys by length, then
bytes, and prints numbers as written (``1.0``, ``1e2`` as ``100``); MariaDB's JSON is the text
it was given (JSON_NORMALIZE sorts keys but prints every number as a double, ``1.0E0``); SQLite's
``json()`` keeps keys in their order. A common form would rebuild every document with its keys in
one order, recursively, which none of their SQL functions does; the documents are printed here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from sync_pipeline.engine.db.dialects import Adapter
from sync_pipeline.engine.db.float_bits import float_bits
from sync_pipeline.engine.db.schema import Family, family_of
from sync_pipeline.engine.diff.window import in_zone

NULL_TEXT = "\\N"  # how NULL enters a row's text; concat_ws alone would skip NULLs and let columns shift

# Families whose canonical text every engine computes the same way in SQL.
_PORTABLE = {Family.INTEGER, Family.TEXT, Family.TIMESTAMP, Family.BOOLEAN, Family.BINARY, Family.DATE}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def key_value(column: sa.Column[Any], *, as_text: bool) -> ColumnElement[Any]:
    """A key column as both sides' key streams, lookups and fetches yield it.

    The merge compares keys of the two sides as Python values, so each key column must come back as
    one type on both: a PostgreSQL ``uuid`` key whose other side stores text (MariaDB ``CHAR(36)``,
    SQLite) is read as its text, ``'0a1b…-…'``, lowercase with hyphens, which is what the sync writes
    into such a target. Its order is unchanged: uuids sort by their bytes, and the lowercase hex text
    of 16 bytes (hyphens at fixed places) sorts the same in binary order, the order of text keys.
    """
    return sa.cast(column, sa.Text).label(column.name) if as_text else column


def in_database(
    source: sa.Column[Any], source_dialect: str, target: sa.Column[Any], target_dialect: str
) -> bool:
    """Whether both sides can compute the same canonical text of this column in SQL."""
    family = family_of(source.type)
    if family is not family_of(target.type):
        return False
    if family in _PORTABLE:
        return True
    if family is Family.DECIMAL and "sqlite" not in (source_dialect, target_dialect):
        # Fixed-scale decimals print with their scale on PostgreSQL and MySQL alike.
        scale = getattr(source.type, "scale", None)
        return scale is not None and scale == getattr(target.type, "scale", None)
    if family is Family.JSON:
        # Each engine normalises its own JSON (jsonb text, MySQL's JSON); two engines normalise
        # differently (key order, spacing), so only same-engine pairs compare in SQL. SQLite keeps
        # the text it was given, keys in their order: its documents are compared in Python.
        return source_dialect == target_dialect and source_dialect != "sqlite"
    doubles = is_double(source.type, source_dialect) and is_double(target.type, target_dialect)
    if family is Family.FLOAT and doubles:
        # Two doubles print their bits on every engine (float_bits). A single-precision float
        # (PostgreSQL real, MySQL FLOAT) is read by the drivers as its shortest decimal text, 0.1,
        # and copied as the double nearest that, not as the float's own value, 0.100000001490116:
        # across engines or types it is compared as read, in Python (the rule below).
        return True
    # Anything else compares as the engine's own text only between identical engines and types.
    return source_dialect == target_dialect and str(source.type) == str(target.type)


def is_double(type_: sa.types.TypeEngine[Any], dialect: str) -> bool:
    """Whether a float column holds IEEE doubles: SQLite's REAL always does, whatever it was declared."""
    return dialect == "sqlite" or isinstance(type_, sa.Double)


def sql_text(
    adapter: Adapter, column: sa.Column[Any], *, naive: bool, zone: str, divisor: int
) -> ColumnElement[Any]:
    """The canonical text of ``column`` computed in its database (see :func:`in_database`)."""
    family = family_of(column.type)
    expr: ColumnElement[Any]
    if family is Family.TIMESTAMP:
        expr = adapter.key_text(adapter.epoch_micros(column, naive=naive, zone=zone, divisor=divisor))
    elif family is Family.BOOLEAN:
        expr = sa.case((column.is_(None), None), (column == sa.true(), "1"), else_="0")
    elif family is Family.BINARY:
        # SQLite's hex(NULL) is '', not NULL: without the CASE, NULL and empty bytes would print alike.
        expr = sa.case((column.is_(None), None), else_=adapter.hex_text(column))
    elif family is Family.JSON:
        expr = adapter.json_text(column)
    elif family is Family.TEXT:
        expr = column
    elif family is Family.FLOAT and is_double(column.type, adapter.name):
        expr = adapter.float_bits(column)
    else:
        expr = adapter.key_text(column)
    return sa.func.coalesce(expr, NULL_TEXT)


def python_text(family: Family, *, zone: str, divisor: int) -> Callable[[Any], str]:
    """The canonical text of a value already read into Python (the fallback, and the reference)."""
    tz = ZoneInfo(zone)

    def text(value: Any) -> str:
        if value is None:
            return NULL_TEXT
        if family is Family.TIMESTAMP:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else value
            if moment.tzinfo is None:
                moment = in_zone(moment, tz)
            delta = moment - _EPOCH
            micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
            return str(micros // divisor)
        if family is Family.BOOLEAN:
            return "1" if value else "0"
        if family is Family.BINARY:
            return bytes(value).hex()
        if family is Family.DECIMAL:
            number = value if isinstance(value, Decimal) else Decimal(str(value))
            return format(number.normalize(), "f")
        if family is Family.FLOAT:
            return float_bits(value) or NULL_TEXT
        if family is Family.JSON:
            try:
                parsed = (
                    json.loads(value, parse_float=_json_number) if isinstance(value, str | bytes) else value
                )
            except ValueError:
                # Text that is no document (a text column compared with a JSON one): its own text,
                # which never equals a canonical document (those always parse).
                return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
            if parsed is None:
                # The JSON literal null: the sync writes it as SQL NULL (drivers read both as None).
                return NULL_TEXT
            return _CANONICAL_JSON.encode(parsed)
        if family is Family.UUID:
            return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
        if isinstance(value, datetime | date | time):
            return value.isoformat()
        return str(value)

    return text


# json.dumps with options builds an encoder per call: a twentieth of comparing JSON rows in Python.
# An encoder keeps no state between calls (each encode makes its own), so one serves every thread.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _json_number(text: str) -> int | float:
    """A JSON number with a fraction or exponent, as the value it denotes: ``1e2``, ``100.0`` and
    ``100`` are one number (PostgreSQL's jsonb prints ``1e2`` as ``100``; MariaDB keeps the text)."""
    number = Decimal(text)
    return int(number) if number.is_finite() and number == number.to_integral_value() else float(number)
