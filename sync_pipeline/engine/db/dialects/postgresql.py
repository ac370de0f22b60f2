"""PostgreSQL (psycopg 3): md5 hashing in SQL, advisory locks, ``COLLATE "C"`` for Python's key order."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import BIT, DOUBLE_PRECISION, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import URL
from sqlalchemy.sql.elements import ColumnElement

from sync_pipeline.engine.db.dialects.base import Adapter
from sync_pipeline.engine.db.dialects.postgresql_copy import copy_rows
from sync_pipeline.engine.db.float_bits import NAN_BITS

_LOCK_NOT_AVAILABLE = "55P03"


def _millis(seconds: float) -> int:
    """A lock_timeout in whole milliseconds, at least one: 0 would mean "wait for ever"."""
    return max(1, math.ceil(seconds * 1000))


class PostgresAdapter(Adapter):
    name: ClassVar[str] = "postgresql"

    def key_offset(self, key: ColumnElement[Any], lo: int) -> ColumnElement[Any]:
        # PostgreSQL subtracts two integers in their own width: INTEGER keys spread over more than
        # 2**31 (-2**31 .. 2**31 - 1) failed the bucket query with "integer out of range".
        if not isinstance(key.type, sa.BigInteger):
            key = sa.cast(key, sa.BigInteger)
        return key - sa.literal(lo, sa.BigInteger)

    def connect_args(self, url: URL, application_name: str) -> dict[str, Any]:
        args: dict[str, Any] = {"options": "-c timezone=UTC", "application_name": application_name}
        if "connect_timeout" not in url.query:
            args["connect_timeout"] = 10  # a host that drops packets fails in seconds, not minutes
        return args

    def bounded_connect_args(self, args: dict[str, Any], timeout_seconds: float) -> dict[str, Any]:
        # The session's default lock_timeout, in the startup packet: it bounds every lock the
        # session waits for (an ALTER behind another transaction, a read behind a pending ALTER, a
        # locked row), and RESET (acquire_lock's) returns to it. 55P03 then fails the statement.
        options = f"{args.get('options', '')} -c lock_timeout={_millis(timeout_seconds)}".strip()
        return {**args, "options": options}

    def epoch_micros(
        self, column: ColumnElement[Any], *, naive: bool, zone: str, divisor: int
    ) -> ColumnElement[int]:
        instant = sa.func.timezone(zone, column) if naive and zone != "UTC" else column
        # extract() returns numeric since PostgreSQL 14: exact to the microsecond.
        micros: ColumnElement[Any] = sa.extract("epoch", instant) * 1_000_000
        if divisor > 1:
            micros = sa.func.floor(micros / divisor)
        return sa.cast(micros, sa.BigInteger)

    def row_hash(self, parts: list[ColumnElement[Any]]) -> ColumnElement[int]:
        digest = sa.func.substr(sa.func.md5(sa.func.concat_ws("|", *parts)), 1, 15)
        return sa.cast(sa.cast(sa.func.concat("x", digest), BIT(60)), sa.BigInteger)

    has_native_row_hash: ClassVar[bool] = True

    def native_row_hash(
        self, key: ColumnElement[Any], ts: ColumnElement[Any], *, naive: bool
    ) -> ColumnElement[int]:
        # The hash functions behind hash partitioning and hash indexes, stable across versions. A
        # timestamptz at UTC is a timestamp holding the same stored microseconds. The key goes in as
        # the seed, which is mixed in whole: hashint8 folds its 64 bits to 32 (hi XOR lo), so keys 7
        # and 2**32 + 6, a missing row and an extra one, would cancel out. The timestamp's own hash
        # keeps that fold: a change of exactly 2**32 + 1 us (71.6 min) can go unseen here.
        stored = ts if naive else sa.func.timezone("UTC", ts)
        return sa.func.timestamp_hash_extended(stored, sa.cast(key, sa.BigInteger))

    # extract(epoch) is numeric arithmetic: computed once per row, not once per use in the mix hash.
    isolate_row_values: ClassVar[bool] = True

    def json_text(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # json keeps its input text; through jsonb, json and jsonb columns print alike.
        as_jsonb = sa.cast(column, JSONB)
        return sa.case((sa.func.jsonb_typeof(as_jsonb) == "null", None), else_=sa.cast(as_jsonb, sa.Text))

    def hex_text(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return sa.func.encode(column, "hex")

    def float_bits(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # float8send is the stored value's 8 bytes, big-endian. Adding +0 turns -0 into 0 (IEEE);
        # NaN = NaN holds in PostgreSQL, so every NaN (any sign or payload) prints as one.
        value = sa.cast(column, DOUBLE_PRECISION)
        bits = sa.func.encode(sa.func.float8send(value + sa.cast(0, DOUBLE_PRECISION)), "hex")
        return sa.case((value == sa.cast("NaN", DOUBLE_PRECISION), NAN_BITS), else_=bits)

    def ordered(self, column: ColumnElement[Any], *, is_string: bool) -> ColumnElement[Any]:
        return column.collate("C") if is_string else column

    temp_table_ddl: ClassVar[str] = "CREATE TEMPORARY TABLE {name} ON COMMIT DROP AS {select}"
    drop_temp_table_ddl: ClassVar[str] = "DROP TABLE IF EXISTS pg_temp.{name}"

    def copy_rows(self, conn: sa.Connection, stage: sa.Table, rows: list[tuple[Any, ...]]) -> None:
        """Binary COPY into the stage table: the fastest way into PostgreSQL, typed by the stage's OIDs."""
        copy_rows(conn, stage, iter([rows]))

    def merge_statement(
        self, target: sa.Table, stage: sa.FromClause, key_columns: list[str], ts_column: str
    ) -> sa.Executable:
        names = [column.name for column in stage.columns]
        stmt = pg_insert(target).from_select(names, sa.select(*stage.columns))
        ts = target.c[ts_column]
        return stmt.on_conflict_do_update(
            index_elements=[target.c[k] for k in key_columns],
            set_={name: stmt.excluded[name] for name in names if name not in key_columns},
            where=sa.or_(ts.is_(None), ts <= stmt.excluded[ts_column]),
        )

    def acquire_lock(self, conn: sa.Connection, name: str, timeout_seconds: float) -> bool:
        # A session-level advisory lock: released by the server when the connection ends, so a
        # killed sync never leaves it behind. lock_timeout bounds the wait; RESET returns to the
        # session's own bound (bounded_connect_args), if it has one.
        try:
            conn.exec_driver_sql(f"SET lock_timeout = {_millis(timeout_seconds)}")
            conn.execute(sa.select(sa.func.pg_advisory_lock(sa.func.hashtextextended(name, 0))))
        except sa.exc.DBAPIError as error:
            conn.rollback()
            if getattr(error.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                return False
            raise
        conn.exec_driver_sql("RESET lock_timeout")
        conn.commit()
        return True

    def release_lock(self, conn: sa.Connection, name: str) -> None:
        conn.execute(sa.select(sa.func.pg_advisory_unlock(sa.func.hashtextextended(name, 0))))
        conn.commit()
