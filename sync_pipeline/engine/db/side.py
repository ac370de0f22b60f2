"""One side of a sync (the source or the target table) and every query the diff sends to it.

All SQL is built with SQLAlchemy Core, so identifiers are quoted by the dialect whatever their name.
Reads stream through server-side cursors in fixed-size chunks and close in ``finally``: nothing here
holds more than one chunk of a window.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from sync_pipeline.engine.db.canonical import key_value
from sync_pipeline.engine.db.dialects import Adapter
from sync_pipeline.engine.db.row_hash import python_fingerprints
from sync_pipeline.engine.db.schema import Family, TableName, family_of
from sync_pipeline.engine.diff.merge import Key
from sync_pipeline.engine.diff.segments import Checksum, KeyRange
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.settings import DEFAULT_CHUNK_BYTES
from sync_pipeline.engine.streams import batches_by_bytes
from sync_pipeline.errors import DataError


def _needs_processing(stmt: sa.Select[Any], dialect: sa.Dialect) -> bool:
    """Whether any selected column's values are converted by SQLAlchemy after the driver reads them."""
    for column in stmt.selected_columns:
        impl = column.type.dialect_impl(dialect)
        try:
            processor = impl.result_processor(dialect, None)
        except (sa.exc.InvalidRequestError, TypeError):
            # Decided by the driver's type code, not known here (psycopg's NUMERIC, a NUMERIC(20, 0)
            # key for a BIGINT UNSIGNED): assume a conversion, the safe way.
            return True
        if processor is not None:
            return True
    return False


# Key families whose values grow with their content: their key streams are bounded in bytes too.
_WIDE_KEYS = {Family.TEXT, Family.BINARY, Family.DECIMAL, Family.OTHER}

# SQLite allows 32766 bound parameters per statement; stay well inside every engine's limit.
MAX_BOUND_PARAMETERS = 30_000


@dataclass
class TableSide:
    """A live table plus how to read its keys and timestamps comparably with the other side."""

    name: TableName
    table: sa.Table
    adapter: Adapter
    key_columns: list[str]
    ts_column: str
    naive_zone: str
    micros_divisor: int
    live_filter: ColumnElement[bool] | None = None  # target: hide soft-deleted rows
    # Full-row comparison (drift checks, verification, repair): instead of updated_at, each row is
    # fingerprinted by the canonical text of these columns, in SQL (row_parts) or, where the two
    # engines cannot agree in SQL, in Python over streamed rows (row_texts, one per row_columns).
    row_parts: list[ColumnElement[Any]] | None = None
    row_columns: list[str] | None = None
    row_texts: list[Callable[[Any], str]] | None = None
    # Both sides on the same engine, with the same kind of updated_at at full precision: range
    # checksums use the engine's own hash of (key, updated_at) instead of the cross-engine mix
    # (see :meth:`~sync_pipeline.engine.db.dialects.base.Adapter.native_row_hash`). Set by the plan.
    native_hash: bool = False
    # Whole-row comparison between two tables of one engine: the engine's own hash of the stored row
    # (see :mod:`~sync_pipeline.engine.db.row_hash`), used instead of md5 of row_parts. Set by the plan.
    row_fingerprint: ColumnElement[int] | None = None
    # Key columns read as text because the other side stores them as text (a uuid key into CHAR(36));
    # see :func:`~sync_pipeline.engine.db.canonical.key_value`. Set by the plan.
    text_keys: frozenset[str] = frozenset()

    # -- derived expressions --------------------------------------------------------------------
    @property
    def keys(self) -> list[sa.Column[Any]]:
        return [self.table.c[name] for name in self.key_columns]

    @property
    def key_values(self) -> list[ColumnElement[Any]]:
        """The key columns as the merge compares them: one Python type per column on both sides."""
        return [key_value(column, as_text=column.name in self.text_keys) for column in self.keys]

    @property
    def ts(self) -> sa.Column[Any]:
        return self.table.c[self.ts_column]

    @property
    def naive(self) -> bool:
        return self.adapter.is_naive(self.ts.type)

    @property
    def ts_micros(self) -> ColumnElement[int]:
        return self.adapter.epoch_micros(
            self.ts, naive=self.naive, zone=self.naive_zone, divisor=self.micros_divisor
        )

    @property
    def single_integer_key(self) -> bool:
        return len(self.key_columns) == 1 and family_of(self.keys[0].type) is Family.INTEGER

    def key_families(self) -> list[Family]:
        return [family_of(column.type) for column in self.keys]

    def window_clause(self, window: Window) -> ColumnElement[bool]:
        clause = self.adapter.window_clause(self.ts, window, naive=self.naive, zone=self.naive_zone)
        if self.live_filter is not None:
            clause = sa.and_(clause, self.live_filter)
        return clause

    def _range_clause(self, window: Window, krange: KeyRange) -> ColumnElement[bool]:
        clause = self.window_clause(window)
        if krange.lo is not None:
            clause = sa.and_(clause, self.keys[0] >= krange.lo)
        if krange.hi is not None:
            # key <= hi - 1, not key < hi: one past the largest key (2**63, 2**64, 2**31) is no value
            # of the column's type, and PostgreSQL, SQLite and MySQL refuse or widen such a bound.
            clause = sa.and_(clause, self.keys[0] <= krange.hi - 1)
        return clause

    @property
    def compares_rows(self) -> bool:
        return self.row_parts is not None or self.row_texts is not None

    @property
    def fingerprint(self) -> ColumnElement[int]:
        """What the merge compares per key: ``updated_at`` micros, or a hash of the whole row."""
        if self.row_fingerprint is not None:
            return self.row_fingerprint
        if self.row_parts is not None:
            return self.adapter.row_hash(self.row_parts)
        return self.ts_micros

    def _row_hash(self) -> ColumnElement[int]:
        if self.row_fingerprint is not None:
            return self.row_fingerprint
        tail = self.row_parts if self.row_parts is not None else [self.ts_micros]
        return self.adapter.row_hash([self.adapter.key_text(k) for k in self.keys] + tail)

    def _key_in(self, keys: Sequence[Key]) -> ColumnElement[bool]:
        if len(self.key_columns) == 1:
            return self.keys[0].in_(list(keys))
        return sa.tuple_(*self.keys).in_(list(keys))

    def batch_size(self, chunk_size: int) -> int:
        """Keys per ``IN (...)`` lookup: the chunk size, capped by the bound-parameter limit."""
        return max(1, min(chunk_size, MAX_BOUND_PARAMETERS // len(self.key_columns)))

    def _key_of(self, row: Sequence[Any]) -> Key:
        n = len(self.key_columns)
        return row[0] if n == 1 else tuple(row[:n])

    # -- aggregates -----------------------------------------------------------------------------
    @property
    def compares_updated_at_by_integer_key(self) -> bool:
        return self.row_parts is None and self.row_texts is None and self.single_integer_key

    @property
    def mixes(self) -> bool:
        """Whether range checksums use the integer mix of ``(key, updated_at micros)`` (see
        :mod:`~sync_pipeline.engine.diff.mixhash`) rather than md5 of text: the ``updated_at`` comparison of
        a single integer key. Both sides of a plan decide alike (the plan requires equal key families)."""
        return self.compares_updated_at_by_integer_key and not self.native_hash

    @property
    def hashes_natively(self) -> bool:
        return self.compares_updated_at_by_integer_key and self.native_hash

    def _hashed(self, window: Window, krange: KeyRange) -> tuple[ColumnElement[Any], ColumnElement[int]]:
        """The integer key (or ``None``) and each row's hash, over a FROM clause holding the range's rows.

        The mix uses key and micros several times: they come from a subquery, kept apart from the
        aggregate where the engine would otherwise compute ``updated_at`` micros once per use.
        """
        if self.hashes_natively:
            return self.keys[0], self.adapter.native_row_hash(self.keys[0], self.ts, naive=self.naive)
        if not self.mixes:
            return self.keys[0], self._row_hash()
        inner = sa.select(
            self.keys[0].label("stored_key"),
            sa.cast(self.keys[0], sa.BigInteger).label("k"),
            self.ts_micros.label("m"),
        ).where(self._range_clause(window, krange))
        if self.adapter.isolate_row_values:
            inner = inner.offset(0)
        rows = inner.subquery("hashed_rows")
        # Ranges and buckets by the stored key: its cast to signed wraps a BIGINT UNSIGNED above 2**63.
        return rows.c.stored_key, self.adapter.mix_hash(rows.c.k, rows.c.m)

    def _aggregate(
        self, window: Window, krange: KeyRange, columns: Callable[[ColumnElement[Any]], list[Any]]
    ) -> sa.Select[Any]:
        key, hashed = self._hashed(window, krange)
        stmt = sa.select(sa.func.count(), self.adapter.hash_sum(hashed), *columns(key))
        return stmt if self.mixes else stmt.where(self._range_clause(window, krange))

    def checksum(self, conn: sa.Connection, window: Window) -> tuple[Checksum, int | None, int | None]:
        """Count and hash of the whole window, with its smallest and largest integer key."""
        integer = self.single_integer_key
        stmt = self._aggregate(
            window,
            KeyRange(),
            lambda key: [sa.func.min(key), sa.func.max(key), sa.func.count(key)] if integer else [],
        )
        row = conn.execute(stmt).one()
        if integer and row[4] != row[0]:
            # The key ranges of the descent hold no NULL: without this, such a row would be skipped
            # by every sync, silently. (Other keys are streamed whole, and the merge refuses NULLs.)
            raise DataError(
                f"{self.name} has {row[0] - row[4]} row(s) in the window {window} whose key "
                f"{self.key_columns[0]!r} is NULL; keys must be non-NULL"
            )
        lo = row[2] if integer else None
        hi = row[3] if integer else None
        return Checksum.of(row[0], row[1]), lo, hi

    def bucket_checksums(
        self, conn: sa.Connection, window: Window, krange: KeyRange, width: int
    ) -> dict[int, Checksum]:
        """Count and hash per bucket ``(key - lo) // width`` of an integer key range, in one query."""
        key, hashed = self._hashed(window, krange)
        assert krange.lo is not None
        bucket = (self.adapter.key_offset(key, krange.lo) // width).label("bucket")
        stmt = sa.select(bucket, sa.func.count(), self.adapter.hash_sum(hashed)).group_by(bucket)
        if not self.mixes:
            stmt = stmt.where(self._range_clause(window, krange))
        return {int(b): Checksum.of(c, h) for b, c, h in conn.execute(stmt)}

    def count_window(self, conn: sa.Connection, window: Window) -> int:
        stmt = sa.select(sa.func.count()).select_from(self.table).where(self.window_clause(window))
        return int(conn.execute(stmt).scalar_one())

    def count_null_ts(self, conn: sa.Connection) -> int:
        stmt = sa.select(sa.func.count()).select_from(self.table).where(self.ts.is_(None))
        return int(conn.execute(stmt).scalar_one())

    def count_unplaced_ts(self, conn: sa.Connection, window: Window) -> int:
        """Rows whose non-NULL ``updated_at`` no window holds (SQLite: numbers, text with an offset)."""
        unplaced = self.adapter.unplaced_clause(self.ts, window, zone=self.naive_zone)
        if unplaced is None:
            return 0
        stmt = sa.select(sa.func.count()).select_from(self.table).where(unplaced)
        return int(conn.execute(stmt).scalar_one())

    # -- streams and lookups --------------------------------------------------------------------
    def key_stream(
        self,
        conn: sa.Connection,
        window: Window,
        krange: KeyRange,
        chunk_size: int,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> Generator[list[tuple[Key, int]], None, None]:
        """``(key, fingerprint)`` of a key range of the window, in binary key order, a chunk at a time.

        Chunks of plain tuples, not one object per key: the merge compares whole chunks (see
        :func:`~sync_pipeline.engine.diff.merge.diff_chunks`). Where no selected column needs SQLAlchemy's
        result processing (integers, text on most drivers), the driver's own tuples are used as they
        come, without building a row object per key. Text and binary keys can be long: their chunks
        are bounded by ``chunk_bytes`` too.
        """
        order = [
            self.adapter.ordered(column, is_string=family_of(column.type) is Family.TEXT)
            for column in self.keys
        ]
        if self.row_texts is not None:
            yield from self._python_fingerprints(conn, window, krange, order, chunk_size, chunk_bytes)
            return
        stmt = (
            sa.select(*self.key_values, self.fingerprint)
            .where(self._range_clause(window, krange))
            .order_by(*order)
        )
        n = len(self.key_columns)
        raw = n == 1 and not _needs_processing(stmt, conn.dialect)
        if any(family in _WIDE_KEYS for family in self.key_families()):
            yield from self._wide_key_stream(conn, stmt, raw, chunk_size, chunk_bytes)
            return
        result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(stmt)
        try:
            if raw:
                # SQLAlchemy has read ahead into its own buffer: take the first chunk through it, then
                # the driver's cursor (a stream shorter than a chunk is done, and closed, by then).
                first = result.fetchmany(chunk_size)
                if first:
                    yield [(row[0], row[1]) for row in first]
                if len(first) < chunk_size:
                    return
                cursor = result.cursor
                while rows := cursor.fetchmany(chunk_size):
                    # The drivers return lists of 2-tuples (key, fingerprint): no copy needed.
                    yield (
                        cast(list[tuple[Key, int]], rows)
                        if type(rows[0]) is tuple
                        else [tuple(r) for r in rows]
                    )
            else:
                for partition in result.partitions():
                    if n == 1:
                        yield [(row[0], row[1]) for row in partition]
                    else:
                        yield [(tuple(row[:n]), row[n]) for row in partition]
        finally:
            result.close()

    def _wide_key_stream(
        self, conn: sa.Connection, stmt: sa.Select[Any], raw: bool, chunk_size: int, chunk_bytes: int
    ) -> Iterator[list[tuple[Key, int]]]:
        """:meth:`key_stream` for keys of variable width, in chunks bounded in rows and bytes."""
        n = len(self.key_columns)
        result = conn.execution_options(stream_results=True, max_row_buffer=1).execute(stmt)
        try:
            if raw:
                # The one row SQLAlchemy read ahead, then the driver's own tuples.
                first = result.fetchmany(1)
                if not first:
                    return
                yield [(first[0][0], first[0][1])]
                for rows in batches_by_bytes(result.cursor, chunk_size, chunk_bytes):
                    yield [(row[0], row[1]) for row in rows]
                return
            for rows in batches_by_bytes(result, chunk_size, chunk_bytes):
                if n == 1:
                    yield [(row[0], row[1]) for row in rows]
                else:
                    yield [(tuple(row[:n]), row[n]) for row in rows]
        finally:
            result.close()

    def _python_fingerprints(
        self,
        conn: sa.Connection,
        window: Window,
        krange: KeyRange,
        order: list[ColumnElement[Any]],
        chunk_size: int,
        chunk_bytes: int,
    ) -> Iterator[list[tuple[Key, int]]]:
        """Keys with a hash of the row's canonical text, partly computed here: rows travel, in batches."""
        assert self.row_columns is not None
        assert self.row_texts is not None
        yield from python_fingerprints(
            conn,
            self.key_values,
            self.row_parts or [],
            [_read_for_python(self.table.c[c]) for c in self.row_columns],
            self.row_texts,
            self._range_clause(window, krange),
            order,
            chunk_size,
            chunk_bytes,
        )

    def lookup(self, conn: sa.Connection, keys: Sequence[Key]) -> dict[Key, int | None]:
        """``updated_at`` micros (``None`` when NULL) of those keys that exist anywhere in the table."""
        found: dict[Key, int | None] = {}
        if not keys:
            return found
        stmt = sa.select(*self.key_values, self.ts_micros).where(self._key_in(keys))
        for row in conn.execute(stmt):
            found[self._key_of(row)] = row[-1]
        return found

    def fetch_rows(
        self,
        conn: sa.Connection,
        keys: Sequence[Key],
        columns: list[str],
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> Generator[list[tuple[Any, ...]], None, None]:
        """Full rows (in ``columns`` order) of those keys that still exist, in batches of about
        ``chunk_bytes`` read through a server-side (or unbuffered) cursor: 1 MB rows are never all
        held at once, however many keys are asked for."""
        if not keys:
            return
        values = {value.name: value for value in self.key_values if isinstance(value, sa.Label)}
        stmt = sa.select(*(values.get(name, self.table.c[name]) for name in columns)).where(
            self._key_in(keys)
        )
        result = conn.execution_options(stream_results=True, max_row_buffer=1).execute(stmt)
        try:
            for rows in batches_by_bytes(result, len(keys), chunk_bytes):
                yield [tuple(row) for row in rows]
        finally:
            result.close()


def _read_for_python(column: sa.Column[Any]) -> ColumnElement[Any]:
    """A column as the Python fallback reads it: a JSON value as its document's text.

    Drivers hand JSON back parsed, and a JSON string then arrives as a bare ``str`` (psycopg reads the
    document ``"123"`` as ``'123'``), indistinguishable from the text of the number 123 or from a text
    column's value. Read as text, every side's value is a document to parse.
    """
    if family_of(column.type) is Family.JSON:
        return sa.cast(column, sa.Text).label(column.name)
    return column
