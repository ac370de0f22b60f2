"""SQLite, the embedded default: hashing through Python functions registered on each connection.

SQLite has no md5 and stores timestamps as text, so the adapter registers three small functions that
compute exactly what PostgreSQL and MySQL compute in SQL. They run inside the SQLite library, in the
step's process, so nothing crosses a connection either way. Mutual exclusion is the database's own
write lock: the writer opens ``BEGIN IMMEDIATE`` and holds it for the sync.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, time
from functools import lru_cache
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.sql.elements import ColumnElement

from sync_pipeline.engine.db.dialects.base import Adapter
from sync_pipeline.engine.db.float_bits import float_bits
from sync_pipeline.engine.diff.mixhash import mix62
from sync_pipeline.engine.diff.segments import HASH_MODULUS
from sync_pipeline.engine.diff.window import Window, in_zone

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BEGIN_OPTION = "sync_pipeline_sqlite_begin"


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def epoch_micros(value: object, zone: str, divisor: int) -> int | None:
    """Integer microseconds since the epoch of a SQLite timestamp (text as SQLAlchemy writes it)."""
    if value is None:
        return None
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
    elif isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        raise TypeError(f"not a timestamp: {type(value).__name__}")
    if moment.tzinfo is None:
        moment = in_zone(moment, _zone(zone))
    delta = moment - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros // divisor


def hash60(*parts: object) -> int:
    """First 15 hex digits of md5 of the parts joined by ``|``: PostgreSQL's and MySQL's formula."""
    return hash60_text("|".join(map(as_text, parts)))


def as_text(part: object) -> str:
    """A part of a row's text as hashed: NULL is empty, bytes are UTF-8."""
    return "" if part is None else part.decode() if isinstance(part, bytes) else str(part)


def hash60_text(text: str) -> int:
    """:func:`hash60` of an already joined text: md5's first 60 bits, read from its bytes (the first
    15 hex digits are the first 8 bytes less their last 4 bits), with no hex text built."""
    digest = hashlib.md5(text.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") >> 4


def _mix62_or_null(key: int | None, micros: int | None) -> int | None:
    return None if key is None or micros is None else mix62(key, micros)


class _HashSum:
    """Sum of row hashes wrapped at 2**63, since SQLite's sum() raises on integer overflow."""

    def __init__(self) -> None:
        self.total = 0

    def step(self, value: int | None) -> None:
        if value is not None:
            self.total = (self.total + value) % HASH_MODULUS

    def finalize(self) -> int:
        return self.total


def _register(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.create_function("sp_epoch_us", 3, epoch_micros, deterministic=True)
    dbapi_connection.create_function("sp_hash60", -1, hash60, deterministic=True)
    dbapi_connection.create_function("sp_mix62", 2, _mix62_or_null, deterministic=True)
    dbapi_connection.create_function("sp_float_bits", 1, float_bits, deterministic=True)
    dbapi_connection.create_aggregate("sp_hashsum", 1, _HashSum)
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (SQLAlchemy's
    # documented recipe), so the writer can take the write lock up front with BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None


def _begin(conn: sa.Connection) -> None:
    mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


_SEPARATORS = (" ", "T")  # between date and time: SQLAlchemy's and SQLite's, and isoformat()'s


def _text_bound(moment: datetime, separator: str) -> sa.BindParameter[str]:
    """A window bound as the text its wall time starts with: '2026-11-30 08:00' sorts before every
    form of 08:00 (':00', ':00.000000', 'Z') and after every form of 07:59."""
    timespec = "minutes" if (moment.second, moment.microsecond) == (0, 0) else "microseconds"
    return sa.literal(moment.isoformat(sep=separator, timespec=timespec), sa.String())


_SQLALCHEMY_FORM = "????-??-?? ??:??:??.[0-9][0-9][0-9][0-9][0-9][0-9]"  # 2026-11-30 08:05:00.000000


@dataclass(frozen=True)
class _Forms:
    plain: ColumnElement[bool]  # a wall time: digits, ':' and '.' after the minutes
    utc: ColumnElement[bool]  # a wall time followed by 'Z', '+00:00' or '-00:00'


def _forms(column: ColumnElement[Any]) -> _Forms:
    # What is left of the text after the minutes once digits, ':' and '.' are trimmed from both ends:
    # '' for a wall time, 'Z' for UTC, '+' or '-' for an offset (whose digits were trimmed too).
    tail = sa.func.trim(sa.func.substr(column, 17), "0123456789:.")
    zero_offset = sa.and_(tail.in_(("+", "-")), sa.func.substr(column, -5) == "00:00")
    # SQLAlchemy's own form first: one C pattern match settles most rows of most tables.
    ours = column.op("GLOB")(_SQLALCHEMY_FORM)
    return _Forms(plain=sa.or_(ours, tail == ""), utc=sa.or_(tail.in_(("Z", "z")), zero_offset))


def _text_range(
    column: ColumnElement[Any], lo: datetime, hi: datetime, separator: str
) -> ColumnElement[bool]:
    """The texts of wall times in ``[lo, hi)`` written with ``separator`` between date and time.

    Within one day the range holds only texts that start with that day and separator. A range
    across midnight ('2026-11-29 23:00' .. '2026-11-30 00:00') also holds, as text, every
    'T'-separated time of the first day (' ' < 'T'), every ' '-separated time of the second day in
    the 'T' range, and the date alone ('2026-11-30'): the separator is checked there.
    """
    in_range = sa.and_(column >= _text_bound(lo, separator), column < _text_bound(hi, separator))
    if lo.date() == hi.date():
        return in_range
    return sa.and_(in_range, sa.func.substr(column, 11, 1) == separator)


def _midnights(lo: datetime, hi: datetime) -> list[str]:
    """The dates whose midnight (wall time) is in ``[lo, hi)``, as the text of a date alone."""
    days = {lo.date(), hi.date()}
    return sorted(d.isoformat() for d in days if lo <= datetime.combine(d, time()) < hi)


class SQLiteAdapter(Adapter):
    name: ClassVar[str] = "sqlite"

    def connect_args(self, url: URL, application_name: str) -> dict[str, Any]:
        return {"timeout": 30.0}

    def install_hooks(self, engine: sa.Engine) -> None:
        event.listen(engine, "connect", _register)
        event.listen(engine, "begin", _begin)

    def is_naive(self, type_: sa.types.TypeEngine[Any]) -> bool:
        return True  # SQLite has no time zone type: every stored timestamp is a wall time

    def window_clause(
        self, column: ColumnElement[Any], window: Window, *, naive: bool, zone: str
    ) -> ColumnElement[bool]:
        # SQLite keeps whatever text the application wrote, compared as text. The form SQLAlchemy
        # writes ('2026-11-30 08:05:00.000000') and the other ISO forms of a wall time ('T' for the
        # space, no seconds or fraction) are ranges of text; a trailing 'Z' or '+00:00' says UTC, so
        # such a row is in the range of the window's UTC wall times. Each range is an index range
        # scan, with a check of the text's tail (a C function, no Python) that leaves out rows whose
        # tail is not of their range's kind. Rows with another offset, or numbers: see unplaced_clause.
        forms = _forms(column)
        local = window.bounds_in(zone, naive=True)
        if zone == "UTC":
            kinds = [(local, sa.or_(forms.plain, forms.utc))]
        else:
            kinds = [(local, forms.plain), (window.bounds_in("UTC", naive=True), forms.utc)]
        ranges = [
            sa.and_(_text_range(column, lo, hi, sep), kind) for (lo, hi), kind in kinds for sep in _SEPARATORS
        ]
        # A date alone is its midnight in the table's naive zone (what sp_epoch_us and Python read):
        # in the window that holds that midnight, an equality the index serves.
        dates = [column == sa.literal(day, sa.String()) for day in _midnights(*local)]
        return sa.or_(*ranges, *dates)

    def unplaced_clause(
        self, column: ColumnElement[Any], window: Window, *, zone: str
    ) -> ColumnElement[bool]:
        # Numbers (epoch seconds?) sort before all text: an index range, whatever the table's size.
        # Text with an offset other than zero is counted in the window its wall time would be in by
        # text, so each such row is counted in one window; it is synced in none (its true hour is
        # anywhere within a day of its text, which no index range of one hour can find).
        forms = _forms(column)
        lo, hi = window.bounds_in(zone, naive=True)
        offset = sa.not_(sa.or_(forms.plain, forms.utc))
        in_text = [sa.and_(_text_range(column, lo, hi, sep), offset) for sep in _SEPARATORS]
        return sa.or_(column < sa.literal("", sa.String()), *in_text)

    def ordered(self, column: ColumnElement[Any], *, is_string: bool) -> ColumnElement[Any]:
        # A key column declared COLLATE NOCASE or RTRIM would sort by it: "B" before "a". BINARY is
        # code point order (UTF-8 bytes), and still the order of the column's default index.
        return column.collate("BINARY") if is_string else column

    def epoch_micros(
        self, column: ColumnElement[Any], *, naive: bool, zone: str, divisor: int
    ) -> ColumnElement[int]:
        return sa.func.sp_epoch_us(column, zone, divisor, type_=sa.BigInteger)

    def row_hash(self, parts: list[ColumnElement[Any]]) -> ColumnElement[int]:
        return sa.func.sp_hash60(*parts, type_=sa.BigInteger)

    def json_text(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # Minified, whatever spacing the writer used; the JSON literal null reads as NULL (see base).
        return sa.case((sa.func.json_type(column) == "null", None), else_=sa.func.json(column))

    def float_bits(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # SQLite cannot read a REAL's bits in SQL (its own text has 15 digits): a function of the
        # connection, run inside the library as the hashes are, so no row leaves the query.
        return sa.func.sp_float_bits(column, type_=sa.Text)

    def mix_hash(self, key: ColumnElement[Any], micros: ColumnElement[Any]) -> ColumnElement[int]:
        # The same integers as the SQL of the other engines, in one call: SQLite would evaluate the
        # micros (a Python function here) once per use in the expression.
        return sa.func.sp_mix62(key, micros, type_=sa.BigInteger)

    def hash_sum(self, hashed: ColumnElement[int]) -> ColumnElement[Any]:
        return sa.func.sp_hashsum(hashed, type_=sa.BigInteger)

    def merge_statement(
        self, target: sa.Table, stage: sa.FromClause, key_columns: list[str], ts_column: str
    ) -> sa.Executable:
        names = [column.name for column in stage.columns]
        # "WHERE true" keeps SQLite from reading ON CONFLICT as a join constraint of the SELECT.
        stmt = sqlite_insert(target).from_select(names, sa.select(*stage.columns).where(sa.true()))
        ts = target.c[ts_column]
        return stmt.on_conflict_do_update(
            index_elements=[target.c[k] for k in key_columns],
            set_={name: stmt.excluded[name] for name in names if name not in key_columns},
            where=sa.or_(ts.is_(None), ts <= stmt.excluded[ts_column]),
        )

    def acquire_lock(self, conn: sa.Connection, name: str, timeout_seconds: float) -> bool:
        # The lock is the database's write lock, taken by BEGIN IMMEDIATE when the writer's
        # transaction begins; here we only set how long that may wait.
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {max(1, int(timeout_seconds * 1000))}")
        conn.commit()
        return True

    def set_write_lock_wait(self, conn: sa.Connection, timeout_seconds: float) -> None:
        # On the driver's connection: through SQLAlchemy, the PRAGMA would begin the transaction.
        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        driver.execute(f"PRAGMA busy_timeout = {max(1, int(timeout_seconds * 1000))}")

    def release_lock(self, conn: sa.Connection, name: str) -> None:
        """Nothing to do: the write lock ends with the transaction."""
