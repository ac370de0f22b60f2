"""What differs between database engines, behind one small interface.

The diff engine compares two databases that may be of different kinds (MariaDB into PostgreSQL,
PostgreSQL into SQLite). Everything it computes inside a database must therefore come out the same on
every engine: the text of a row's identity, a timestamp as integer microseconds since the epoch, a
60-bit hash of both, and the order of keys. Each adapter builds those expressions in its own SQL; the
rest of the engine only ever sees SQLAlchemy expressions and Python integers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.sql.elements import ColumnElement

from sync_pipeline.engine.db.schema import is_timezone_aware
from sync_pipeline.engine.diff.mixhash import mix62_sql
from sync_pipeline.engine.diff.window import Window


def micros_divisor(precision: int) -> int:
    """Divisor that truncates integer microseconds to ``precision`` fractional digits."""
    return int(10 ** (6 - max(0, min(6, precision))))


class Adapter(ABC):
    """The per-engine pieces of a sync: session setup, in-database hashing, locking and ordering."""

    name: ClassVar[str]

    # -- connections -------------------------------------------------------------------------
    def connect_args(self, url: URL, application_name: str) -> dict[str, Any]:
        """Driver arguments that make every session use UTC."""
        return {}

    def bounded_connect_args(self, args: dict[str, Any], timeout_seconds: float) -> dict[str, Any]:
        """``args`` with every lock wait of the session bounded by ``timeout_seconds``, where the
        driver can say so when it connects (MariaDB/MySQL and SQLite bound theirs by statements)."""
        return args

    def install_hooks(self, engine: sa.Engine) -> None:  # noqa: B027 - optional hook, empty by default
        """Attach engine events (SQLite registers its functions here)."""

    # -- timestamps ----------------------------------------------------------------------------
    def is_naive(self, type_: sa.types.TypeEngine[Any]) -> bool:
        """Whether a timestamp column holds wall-clock times (read in the table's naive zone)."""
        return not is_timezone_aware(type_)

    def zone_problem(self, conn: sa.Connection, zone: str) -> str | None:
        """Why this database cannot read wall times of ``zone`` as instants, or ``None`` if it can."""
        return None

    def window_bounds(self, window: Window, *, naive: bool, zone: str) -> tuple[datetime, datetime]:
        """The window's bounds as values to compare the ``updated_at`` column with."""
        return window.bounds_in(zone, naive=naive)

    def window_clause(
        self, column: ColumnElement[Any], window: Window, *, naive: bool, zone: str
    ) -> ColumnElement[bool]:
        """The rows of ``column`` (``updated_at``) in ``window``: a range the column's index serves."""
        lo, hi = self.window_bounds(window, naive=naive, zone=zone)
        return sa.and_(column >= lo, column < hi)

    def unplaced_clause(
        self, column: ColumnElement[Any], window: Window, *, zone: str
    ) -> ColumnElement[bool] | None:
        """Rows whose ``updated_at`` no window holds although it is not NULL, to count and report them.

        ``None`` where the column's type makes every value an instant or a wall time (the servers).
        """
        return None

    # -- expressions ---------------------------------------------------------------------------
    @abstractmethod
    def epoch_micros(
        self, column: ColumnElement[Any], *, naive: bool, zone: str, divisor: int
    ) -> ColumnElement[int]:
        """``column`` as integer microseconds since 1970-01-01 UTC, floored to a multiple of ``divisor``.

        Comparing integers rather than timestamps makes MySQL DATETIME, PostgreSQL timestamptz and
        SQLite text agree, and flooring at the coarser side's precision means sub-second precision
        differences between engines are not reported as changes.
        """

    @abstractmethod
    def row_hash(self, parts: list[ColumnElement[Any]]) -> ColumnElement[int]:
        """A 60-bit integer: the first 15 hex digits of md5 of the parts' text joined by ``|``."""

    # Whether the checksum queries compute each row's key and micros once, in a subquery the planner
    # may not flatten, before hashing them (the integer mix uses each several times).
    isolate_row_values: ClassVar[bool] = False

    def int_div(self, left: ColumnElement[Any], right: ColumnElement[Any]) -> ColumnElement[Any]:
        """Integer division truncating toward zero (``/`` of two integers on most engines)."""
        return left.op("/", return_type=sa.BigInteger)(right)

    def key_offset(self, key: ColumnElement[Any], lo: int) -> ColumnElement[Any]:
        """``key - lo`` of an integer key, in 64 bits (SQLite and MySQL compute integers so)."""
        return key - lo

    # Whether native_row_hash is available: a 64-bit hash of the stored key and updated_at by the
    # engine's own functions, a fraction of the cost of the exact micros arithmetic of the mix.
    has_native_row_hash: ClassVar[bool] = False

    def native_row_hash(
        self, key: ColumnElement[Any], ts: ColumnElement[Any], *, naive: bool
    ) -> ColumnElement[int]:
        """A hash of an integer key and ``updated_at`` only ever compared with the same engine's (a
        PostgreSQL source and target, or two MariaDB/MySQL tables): it hashes the stored timestamp as
        it is."""
        raise NotImplementedError(f"{self.name} has no native row hash")

    def mix_hash(self, key: ColumnElement[Any], micros: ColumnElement[Any]) -> ColumnElement[int]:
        """:func:`~sync_pipeline.engine.diff.mixhash.mix62` of an integer key and ``updated_at`` micros."""
        return mix62_sql(key, micros, self.int_div)

    def hash_sum(self, hashed: ColumnElement[int]) -> ColumnElement[Any]:
        """The aggregate of row hashes over a range; compared modulo :data:`HASH_MODULUS`."""
        return sa.func.sum(hashed)

    def key_text(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """The key as text, identical across engines for integer and string keys."""
        return sa.cast(column, sa.Text)

    def hex_text(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """Bytes as lowercase hex."""
        return sa.func.lower(sa.func.hex(column))

    def json_text(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """A JSON value as the engine's own normalised text (compared only between identical engines).

        The JSON literal ``null`` reads as NULL: drivers return both as ``None``, so the sync writes
        it as SQL NULL, and the comparison must not call that a difference.
        """
        return sa.case((sa.func.json_type(column) == "NULL", None), else_=sa.cast(column, sa.Text))

    def float_bits(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """A double as the lowercase hex of its IEEE 754 bits, -0 as 0 and every NaN as one
        (:mod:`~sync_pipeline.engine.db.float_bits`): the text every engine prints alike."""
        raise NotImplementedError(f"{self.name} cannot print a double's bits")

    def ordered(self, column: ColumnElement[Any], *, is_string: bool) -> ColumnElement[Any]:
        """``column`` for ORDER BY so that every engine sorts like Python (binary, code point order)."""
        return column

    # -- staging and merging --------------------------------------------------------------------
    temp_table_ddl: ClassVar[str] = "CREATE TEMPORARY TABLE {name} AS {select}"
    drop_temp_table_ddl: ClassVar[str] = "DROP TABLE IF EXISTS temp.{name}"

    # Whether a stage's index can be built after its rows are in, inside the window's transaction.
    # MySQL and MariaDB commit the open transaction at any CREATE INDEX, a temporary table's too.
    index_after_load: ClassVar[bool] = True
    # Where it cannot (see above): the index's clause in ``temp_table_ddl``'s ``{index}``.
    stage_index_ddl: ClassVar[str] = ""

    def create_stage(
        self, conn: sa.Connection, name: str, like: sa.Select[Any], *, key: list[str] | None = None
    ) -> None:
        """Create an empty session-private table with the columns (and exact types) of ``like``.

        ``key`` asks for an index on those columns from the start: only where the index cannot be
        built after loading (:attr:`index_after_load`), and ignored elsewhere.
        """
        self.drop_stage(conn, name)
        select = like.where(sa.false()).compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        quote = conn.dialect.identifier_preparer.quote
        index = ""
        if key and not self.index_after_load:
            index = self.stage_index_ddl.format(columns=", ".join(quote(column) for column in key))
        conn.exec_driver_sql(self.temp_table_ddl.format(name=quote(name), select=select, index=index))

    def drop_stage(self, conn: sa.Connection, name: str) -> None:
        """Drop a stage table if this session has one; never touches a permanent table."""
        conn.exec_driver_sql(
            self.drop_temp_table_ddl.format(name=conn.dialect.identifier_preparer.quote(name))
        )

    def copy_rows(self, conn: sa.Connection, stage: sa.Table, rows: list[tuple[Any, ...]]) -> None:
        """Append rows to a stage table (batched multi-row INSERTs; PostgreSQL overrides with COPY)."""
        if rows:
            names = [column.name for column in stage.columns]
            conn.execute(stage.insert(), [dict(zip(names, row, strict=True)) for row in rows])

    def staged_keys_match(
        self, target: sa.Table, stage: sa.Table, key_columns: list[str]
    ) -> ColumnElement[bool]:
        """The target rows whose key is in the stage table, for the apply's one DELETE (or UPDATE)."""
        keys = [target.c[k] for k in key_columns]
        staged = sa.select(*(stage.c[k] for k in key_columns))
        return sa.tuple_(*keys).in_(staged) if len(keys) > 1 else keys[0].in_(staged)

    @abstractmethod
    def merge_statement(
        self, target: sa.Table, stage: sa.FromClause, key_columns: list[str], ts_column: str
    ) -> sa.Executable:
        """One set-based upsert of every staged row into the target.

        Never overwrites a target row whose ``updated_at`` is newer than the staged one (SPEC 4.9).
        """

    # -- locking -------------------------------------------------------------------------------
    def lock_scope(self, conn: sa.Connection) -> str | None:
        """What the lock name of a table named without a schema is qualified with.

        ``None`` where locks already live in one database: PostgreSQL's advisory locks, SQLite's
        write lock on its file.
        """
        return None

    @abstractmethod
    def acquire_lock(self, conn: sa.Connection, name: str, timeout_seconds: float) -> bool:
        """Take the session-level lock ``name`` on ``conn``, waiting up to the timeout.

        Returns whether it was taken. The lock must be released when the session ends, so a killed
        process never leaves it behind.
        """

    def set_write_lock_wait(self, conn: sa.Connection, timeout_seconds: float) -> None:  # noqa: B027 - no-op default
        """How long a write lock the database takes by itself (SQLite's) may be waited for on ``conn``.

        Call it before ``conn`` begins a transaction. Servers lock rows and use :meth:`acquire_lock`.
        """

    @abstractmethod
    def release_lock(self, conn: sa.Connection, name: str) -> None:
        """Release a lock taken by :meth:`acquire_lock` on the same connection."""
