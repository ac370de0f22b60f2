"""MySQL and MariaDB (PyMySQL): md5 and CRC32 hashing in SQL, ``GET_LOCK``, UTF-8 bytes for key order."""

from __future__ import annotations

import hashlib
import math
import ssl
import threading
from datetime import datetime
from typing import Any, ClassVar

import pymysql
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL
from sqlalchemy.sql.elements import ColumnElement

from sync_pipeline.engine.db.dialects.base import Adapter
from sync_pipeline.engine.diff.window import Window

# The session's sql_mode: MariaDB's and MySQL 8's strict defaults, STRICT_ALL_TABLES so that
# non-transactional tables are strict too; nothing that changes how SQL is parsed (ANSI_QUOTES).
SQL_MODE = "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"


def bound_lock_waits(conn: sa.Connection, timeout_seconds: float) -> None:
    """Wait for no metadata or row lock longer than ``timeout_seconds`` in this session.

    The server defaults are a day (lock_wait_timeout, metadata locks: an ALTER behind another
    session's open transaction, and every reader queued behind that ALTER) and 50 s
    (innodb_lock_wait_timeout, rows). Whole seconds, at least one: 0 would mean "do not wait".
    """
    seconds = max(1, math.ceil(timeout_seconds))
    conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {seconds}, innodb_lock_wait_timeout = {seconds}")


def get_lock_name(name: str) -> str:
    """The ``GET_LOCK`` name for a lock name: limited to 64 characters, so a digest of any name."""
    return "sync_pipeline:" + hashlib.sha256(name.encode()).hexdigest()[:40]


_preferred_tls: ssl.SSLContext | None = None
_preferred_tls_lock = threading.Lock()


# TO_SECONDS of 1970-01-01 00:00:00.
_EPOCH_TO_SECONDS = 62_167_219_200


class _Connection(pymysql.connections.Connection):  # type: ignore[misc]
    """PyMySQL's connection, with the TLS context of its PREFERRED mode built once per process.

    Given no TLS option, PyMySQL builds a default context for every connection it opens, loading the
    system's CA store each time: 50-70 ms of every connection, several per sync. The context is the
    same every time (no CA, no verification), and one context serves any number of connections.
    """

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        global _preferred_tls
        if not (isinstance(sslp, dict) and not sslp):
            return super()._create_ssl_ctx(sslp)  # type: ignore[no-any-return]
        with _preferred_tls_lock:
            if _preferred_tls is None:
                _preferred_tls = super()._create_ssl_ctx(sslp)
            return _preferred_tls


class MySQLAdapter(Adapter):
    name: ClassVar[str] = "mysql"

    def install_hooks(self, engine: sa.Engine) -> None:
        if engine.dialect.driver != "pymysql":
            return

        @sa.event.listens_for(engine, "do_connect")
        def connect(_dialect: sa.Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
            return _Connection(*cargs, **cparams)

    def connect_args(self, url: URL, application_name: str) -> dict[str, Any]:
        # Strict whatever the server's default: a value too long or out of range is an error, never
        # truncated or clipped into another (maybe another row's) key. UTC for TIMESTAMP columns.
        args: dict[str, Any] = {"init_command": f"SET time_zone = '+00:00', sql_mode = '{SQL_MODE}'"}
        if "charset" not in url.query:
            args["charset"] = "utf8mb4"
        return args

    def window_bounds(self, window: Window, *, naive: bool, zone: str) -> tuple[datetime, datetime]:
        # TIMESTAMP columns are shown in the session's zone (UTC), and PyMySQL binds naive values.
        return window.bounds_in(zone if naive else "UTC", naive=True)

    def zone_problem(self, conn: sa.Connection, zone: str) -> str | None:
        if zone == "UTC":
            return None
        # CONVERT_TZ needs the server's time zone tables for a named zone; without them it is NULL.
        probe = sa.select(sa.func.convert_tz(sa.literal("2000-01-01 00:00:00"), zone, "+00:00"))
        if conn.execute(probe).scalar() is not None:
            return None
        return (
            "the server does not know that zone: load its time zone tables "
            "(mariadb-tzinfo-to-sql or mysql_tzinfo_to_sql), or use naive_timezone UTC"
        )

    def epoch_micros(
        self, column: ColumnElement[Any], *, naive: bool, zone: str, divisor: int
    ) -> ColumnElement[int]:
        # DATETIME is naive (read in `zone`); TIMESTAMP is stored in UTC and shown in the session's
        # zone, which is UTC here. CONVERT_TZ with a named zone needs the server's time zone tables.
        instant = sa.func.convert_tz(column, zone, "+00:00") if naive and zone != "UTC" else column
        # Whole seconds since year 0 (TO_SECONDS drops the fraction: a floor, every such count being
        # positive) and the microseconds: the same integer as TIMESTAMPDIFF(MICROSECOND, epoch, ...),
        # for about a fifth less of MariaDB's CPU in the range hash, which reads the micros six
        # times a row (1.17 against 1.40-1.50 CPU-s for 1M rows, BENCHMARKS.md).
        seconds = sa.func.to_seconds(instant, type_=sa.BigInteger) - _EPOCH_TO_SECONDS
        micros: ColumnElement[Any] = seconds * 1_000_000 + sa.func.microsecond(instant, type_=sa.BigInteger)
        if divisor > 1:
            micros = sa.func.floor(micros / divisor)
        return sa.cast(micros, mysql.BIGINT)

    has_native_row_hash: ClassVar[bool] = True

    def native_row_hash(
        self, key: ColumnElement[Any], ts: ColumnElement[Any], *, naive: bool
    ) -> ColumnElement[int]:
        # The exact micros arithmetic of the mix costs MariaDB about 1.3 s per million rows, its
        # CRC32 of a short text a fraction of that. Both sides keep updated_at at the same precision
        # and kind (the plan's rule), and the session shows TIMESTAMP in UTC, so equal rows print
        # alike. One CRC is affine over GF(2): in a sum of them, the same bit flipped in two rows can
        # cancel; the product of the CRCs of two arrangements of the text cannot be undone that way.
        first = sa.func.crc32(sa.func.concat(key, "|", ts))
        second = sa.func.crc32(sa.func.concat(ts, "|", key))
        return sa.type_coerce(first * second, sa.BigInteger)

    def row_hash(self, parts: list[ColumnElement[Any]]) -> ColumnElement[int]:
        digest = sa.func.substring(sa.func.md5(sa.func.concat_ws("|", *parts)), 1, 15)
        return sa.cast(sa.func.conv(digest, 16, 10), mysql.INTEGER(unsigned=True))

    def float_bits(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # MySQL can neither cast a DOUBLE to bytes nor print it in one fixed form, so the bits are
        # computed from the value: a power of two scales a double exactly, so for |x| in
        # [2**e, 2**(e+1)) the fraction (|x| / 2**e - 1) * 2**52 is the 52-bit integer stored.
        # log2 only guesses e (it rounds up just below a power of two, and to 1024 at the largest
        # double): the guess is clamped and corrected by one either way. Subnormals (below 2**-1022)
        # store |x| * 2**1074 with a zero exponent; 2**1074 is not a double, hence two factors. The
        # integer parts are summed as BIGINT: in DOUBLE the sum would round. -0 is stored as 0 and
        # there is no NaN or infinity in a DOUBLE column.
        a = sa.func.abs(column)

        def power(exponent: ColumnElement[Any] | int) -> ColumnElement[Any]:
            return sa.func.pow(sa.literal_column("2"), exponent)

        def flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
            return sa.type_coerce(condition, sa.Integer)

        guess = sa.func.least(sa.literal_column("1023"), sa.func.floor(sa.func.log2(a)))
        scaled = a / power(guess)
        exponent = sa.cast(guess + flag(scaled >= 2) - flag(scaled < 1), mysql.BIGINT)
        fraction = (a / power(exponent) - 1) * sa.literal_column("4503599627370496")  # 2**52
        normal = (exponent + 1023) * sa.literal_column("4503599627370496") + sa.cast(fraction, mysql.BIGINT)
        subnormal = sa.cast(a * power(1022) * power(52), mysql.BIGINT)
        magnitude = sa.case(
            (column == 0, sa.literal_column("0")),
            (a < sa.literal_column("2.2250738585072014e-308"), subnormal),  # the least normal double
            else_=normal,
        )
        sign = sa.cast(flag(column < 0), mysql.INTEGER(unsigned=True)).op("<<")(sa.literal_column("63"))
        return sa.func.lpad(sa.func.lower(sa.func.hex(sign.op("|")(magnitude))), 16, "0")

    def int_div(self, left: ColumnElement[Any], right: ColumnElement[Any]) -> ColumnElement[Any]:
        # `/` is decimal division in MySQL; DIV is the integer one, truncating like PostgreSQL's.
        return left.op("DIV", return_type=sa.BigInteger)(right)

    def ordered(self, column: ColumnElement[Any], *, is_string: bool) -> ColumnElement[Any]:
        if not is_string:
            return column
        # The UTF-8 bytes: their order is code point order. utf8mb4_bin would not do: it is a PAD SPACE
        # collation, which sorts "a\x01" before "a" and "" after "\n" (as if padded with spaces).
        return sa.cast(sa.cast(column, mysql.CHAR(charset="utf8mb4")), mysql.BINARY())

    def printed(self, column: ColumnElement[Any], *, is_timestamp: bool) -> ColumnElement[str]:
        """The column's value as the server prints it, which the bulk path writes by text COPY.

        PyMySQL would parse each value into a Python object (a Decimal, a datetime) only for it to be
        printed again: the text is the value (see ``values.exact_from_text``), and the server prints
        it faster than Python parses it. A timestamp is shown in the session's UTC (TIMESTAMP) or read
        as UTC (DATETIME with naive_timezone UTC): it is marked so, whatever the reader's zone.
        """
        if is_timestamp:
            return sa.func.concat(column, "+00")
        if isinstance(column.type, sa.String):
            return sa.type_coerce(column, sa.Text)
        return sa.cast(column, mysql.CHAR(charset="utf8mb4"))

    drop_temp_table_ddl: ClassVar[str] = "DROP TEMPORARY TABLE IF EXISTS {name}"
    index_after_load: ClassVar[bool] = False  # CREATE INDEX commits, even on a temporary table
    # The stage's index declared in the same statement: a CREATE INDEX later would commit the
    # window's transaction half-way (CREATE TEMPORARY TABLE does not).
    temp_table_ddl: ClassVar[str] = "CREATE TEMPORARY TABLE {name} {index}AS {select}"
    stage_index_ddl: ClassVar[str] = "(KEY ({columns})) "

    def merge_statement(
        self, target: sa.Table, stage: sa.FromClause, key_columns: list[str], ts_column: str
    ) -> sa.Executable:
        names = [column.name for column in stage.columns]
        stmt = mysql.insert(target).from_select(names, sa.select(*stage.columns))
        ts = target.c[ts_column]
        newer_or_same = sa.or_(ts.is_(None), ts <= stmt.inserted[ts_column])
        # MySQL applies assignments left to right and later ones see earlier results, so the guard
        # column is assigned last: every other column is decided against its old value.
        ordered = [n for n in names if n not in key_columns and n != ts_column] + [ts_column]
        return stmt.on_duplicate_key_update(
            [(n, sa.func.IF(newer_or_same, stmt.inserted[n], target.c[n])) for n in ordered]
        )

    def staged_keys_match(
        self, target: sa.Table, stage: sa.Table, key_columns: list[str]
    ) -> ColumnElement[bool]:
        # A join, rendered as a multi-table DELETE/UPDATE that reads the stage and looks each key up
        # in the target. A single-table DELETE runs `IN (SELECT ...)` as a dependent subquery that
        # scans the whole stage for every row of the window: minutes for a few thousand deletes.
        return sa.and_(*(target.c[k] == stage.c[k] for k in key_columns))

    def lock_scope(self, conn: sa.Connection) -> str | None:
        # GET_LOCK names are global to the server: syncs of tables of one name in two databases (one
        # per tenant, say) must not wait for each other, nor time out on the other's lock.
        return conn.dialect.default_schema_name  # DATABASE() when the connection was made

    def set_write_lock_wait(self, conn: sa.Connection, timeout_seconds: float) -> None:
        # The plan's session: it may CREATE the target or ALTER it (add_missing_columns).
        bound_lock_waits(conn, timeout_seconds)
        conn.commit()

    def acquire_lock(self, conn: sa.Connection, name: str, timeout_seconds: float) -> bool:
        # GET_LOCK is held by the session and released when it ends: a killed sync leaves nothing.
        # Whole seconds, rounded up: MySQL truncates a fraction, and 0.5 s must not become "don't wait".
        # The session then writes the window: its waits for row and metadata locks are bounded alike.
        bound_lock_waits(conn, timeout_seconds)
        got = conn.execute(
            sa.select(sa.func.get_lock(get_lock_name(name), max(0, math.ceil(timeout_seconds))))
        ).scalar()
        conn.commit()
        return got == 1

    def release_lock(self, conn: sa.Connection, name: str) -> None:
        conn.execute(sa.select(sa.func.release_lock(get_lock_name(name))))
        conn.commit()
