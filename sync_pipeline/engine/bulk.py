"""Rows that travel by range: the bulk path of a sync, where comparing key by key cannot pay.

The first sync of every hour finds the target's window empty; a descent may find key ranges whose
rows are only in the source. Merging keys there would look every key up in the target and fetch every
row back from the source by key lists, for nothing: every row of the range must be written anyway.
Here the source's rows of such a range stream once straight to the target's session
(PostgreSQL: binary COPY, byte for byte from a PostgreSQL source whose columns have the target's
types; from MySQL/MariaDB, when every column's text is its exact value, the values as the source
prints them into a text COPY; otherwise rows converted in Python, read through server-side or
unbuffered cursors in batches bounded by rows and bytes).

Where they land depends on what they could meet in the target:

* keys above every key the target holds (any hour, any row: the usual case for the new hour of an
  auto-increment or time-ordered id) conflict with nothing: they go **directly into the target**, in
  a savepoint of the window's transaction. A row another session committed meanwhile with such a key
  fails the savepoint with a unique violation; it is rolled back and the range goes the other way.
  They are read in the source's own order, not sorted by key: sorting a window stored out of key
  order cost a PostgreSQL source three times the read, and bought the target nothing, since one of
  its two indexes (key, ``updated_at``) takes its entries out of order either way (docs/capacity.md).
* every other key may exist in another hour of the target (moved in), possibly newer: those rows go
  to a stage, and the apply counts (inserted, moved in, newer in the target) and upserts them
  set-based, under the upsert's never-overwrite-newer guard (:class:`~sync_pipeline.engine.writer.
  PartitionWriter`). They are read in key order, so that the apply reads the stage back page after
  page.

Everything stays inside the window's one transaction, so the promises of a partition sync hold,
under a kill too; memory holds one batch of rows, bounded in rows and bytes (or one COPY buffer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.db.dialects.mysql import MySQLAdapter
from sync_pipeline.engine.db.dialects.postgresql_copy import (
    INTEGRITY_ERRORS,
    Into,
    Rows,
    copy_rows,
    copy_text,
    pipe_binary,
    stored_alike,
    table_of,
)
from sync_pipeline.engine.db.schema import Family, family_of
from sync_pipeline.engine.db.side import TableSide
from sync_pipeline.engine.db.values import Guarded, RowConverter, exact_from_text
from sync_pipeline.engine.diff.segments import BucketChecksums, Checksum, KeyRange
from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.plan import SyncPlan
from sync_pipeline.engine.streams import batches_by_bytes
from sync_pipeline.engine.writer import PartitionWriter, bind_type
from sync_pipeline.errors import DataError

log = logging.getLogger(__name__)


class TargetGaps:
    """Which key ranges the descent saw holding source rows but no target row of the window.

    It listens to both sides' bucket queries (wrap them with :meth:`source` and :meth:`target`); a
    range the descent hands over is a gap when buckets empty on the target's side cover it whole.
    """

    def __init__(self) -> None:
        self._source: dict[tuple[KeyRange, int], dict[int, Checksum]] = {}
        self._target: dict[tuple[KeyRange, int], dict[int, Checksum]] = {}

    def source(self, buckets: BucketChecksums) -> BucketChecksums:
        return self._recording(buckets, self._source)

    def target(self, buckets: BucketChecksums) -> BucketChecksums:
        return self._recording(buckets, self._target)

    @staticmethod
    def _recording(
        buckets: BucketChecksums, into: dict[tuple[KeyRange, int], dict[int, Checksum]]
    ) -> BucketChecksums:
        def recorded(krange: KeyRange, width: int) -> dict[int, Checksum]:
            result = buckets(krange, width)
            into[(krange, width)] = result
            return result

        return recorded

    def covers(self, krange: KeyRange) -> bool:
        """Whether the target holds no row of the window in ``krange`` (as far as the descent saw)."""
        if not krange.bounded:
            return False
        assert krange.lo is not None
        assert krange.hi is not None
        empty: list[tuple[int, int]] = []
        for (parent, width), source in self._source.items():
            target = self._target.get((parent, width))
            if target is None or parent.lo is None or parent.hi is None:
                continue
            for i in source:
                if target.get(i, Checksum(0, 0)).count == 0:
                    lo = parent.lo + i * width
                    empty.append((lo, min(lo + width, parent.hi)))
        reach = krange.lo
        for lo, hi in sorted(empty):
            if lo > reach:
                break
            reach = max(reach, hi)
            if reach >= krange.hi:
                return True
        return False


def window_is_empty(side: TableSide, conn: sa.Connection, window: Window) -> bool:
    """Whether ``side`` holds no row of the window: one probe of its ``updated_at`` index."""
    probe = sa.select(sa.literal(1)).select_from(side.table).where(side.window_clause(window)).limit(1)
    return conn.execute(probe).first() is None


def range_clause(side: TableSide, window: Window, krange: KeyRange) -> sa.ColumnElement[bool]:
    clause = side.window_clause(window)
    if krange.lo is not None:
        clause = sa.and_(clause, side.keys[0] >= krange.lo)
    if krange.hi is not None:
        # <= hi - 1: one past the type's largest key (2**31, 2**63) is no value of the column's type.
        clause = sa.and_(clause, side.keys[0] <= krange.hi - 1)
    return clause


def rows_select(
    side: TableSide,
    window: Window,
    krange: KeyRange,
    columns: list[str],
    selected: list[sa.ColumnElement[Any]] | None = None,
    *,
    ordered: bool = True,
) -> sa.Select[Any]:
    """The window's rows of a key range, ``columns`` in order (or the expressions ``selected`` of
    them), in key order unless not ``ordered`` (then in whatever order the source reads them)."""
    values = selected if selected is not None else [side.table.c[name] for name in columns]
    select = sa.select(*values).where(range_clause(side, window, krange))
    if not ordered:
        return select
    text = Family.TEXT
    return select.order_by(*(side.adapter.ordered(k, is_string=family_of(k.type) is text) for k in side.keys))


class RangeLoader:
    """Streams source rows of whole key ranges into the window's transaction (see the module doc)."""

    def __init__(
        self,
        plan: SyncPlan,
        writer: PartitionWriter,
        window: Window,
        chunk_size: int,
        stats: SyncStats,
        timed: Callable[[str], Any],
    ) -> None:
        self.plan = plan
        self.source = plan.source
        self.writer = writer
        self.target = writer.target
        self.conn = writer.conn
        self.window = window
        self.chunk_size = chunk_size
        self.chunk_bytes = plan.config.chunk_bytes
        self.stats = stats
        self.timed = timed
        # Only an integer key has a "largest key" both engines agree on. Not into SQLite: writing its
        # file while this sync's own read transactions (the descent, the key streams) hold its shared
        # lock would wait for them; its stage lives in the session's temporary database instead.
        self.direct = (
            self.source.single_integer_key
            and self.target.single_integer_key
            and self.target.adapter.name != "sqlite"
        )
        self.into_target = sa.Table(
            self.target.name.table,
            sa.MetaData(),
            *(sa.Column(c, bind_type(self.target.table.c[c].type)) for c in writer.columns),
            schema=self.target.name.schema,
        )
        self._passthrough: bool | None = None
        self._printed = _printed_columns(plan)

    # -- what goes where ---------------------------------------------------------------------------
    def load(self, source_conn: sa.Connection, krange: KeyRange) -> None:
        """Write the source's rows of ``krange`` (a range with no target row in the window)."""
        self.stats.ranges_streamed += 1
        for part, direct in self._parts(krange):
            if direct and self._load_direct(source_conn, part):
                continue
            with self.timed("stream"):
                written = self._copy(source_conn, part, self.writer.range_stage)
            self.writer.staged_ranges += written
            self.stats.rows_streamed += written
            self.stats.rows_fetched += written

    def _parts(self, krange: KeyRange) -> Iterator[tuple[KeyRange, bool]]:
        """``krange`` split at the target's largest key: below may conflict, above cannot."""
        if not self.direct:
            yield krange, False
            return
        top = _max_key(self.target, self.conn)
        if top is None:
            yield krange, True
            return
        above = int(top) + 1
        if krange.lo is None or krange.lo < above:
            yield KeyRange(krange.lo, above if krange.hi is None else min(krange.hi, above)), False
        if krange.hi is None or krange.hi > above:
            yield KeyRange(above if krange.lo is None else max(krange.lo, above), krange.hi), True

    def _load_direct(self, source_conn: sa.Connection, krange: KeyRange) -> bool:
        """Rows whose keys no target row holds, straight into the target, in a savepoint."""
        try:
            with self.timed("stream_direct"), self.conn.begin_nested():
                written = self._copy(source_conn, krange, self.into_target, ordered=False)
        except INTEGRITY_ERRORS as error:
            # Another session committed one of these keys since we looked (or the source repeats a
            # key): the savepoint is rolled back, and the range is staged and upserted instead.
            log.info("direct load of %s %s conflicted, staging it: %s", self.target.name, krange, error)
            _reset_after_copy(source_conn)
            return False
        self.stats.inserted += written
        self.stats.rows_streamed += written
        self.stats.rows_fetched += written
        self.stats.rows_direct += written
        return True

    def stage_range(self, source_conn: sa.Connection, krange: KeyRange, into: sa.Table) -> int:
        """Stream the window's rows of ``krange`` into ``into``, a stage of the writer's session, with
        this path's machinery (the dense-change path's entry, :mod:`~sync_pipeline.engine.dense`)."""
        return self._copy(source_conn, krange, into)

    # -- moving rows -------------------------------------------------------------------------------
    def _copy(self, source_conn: sa.Connection, krange: KeyRange, into: Into, *, ordered: bool = True) -> int:
        """Stream the window's rows of ``krange`` from the source into ``into``; how many.

        ``into`` given as a callable is called only once the first row has been read. A stage is
        loaded in key order (``ordered``): the apply reads it back in that order, page after page,
        to merge it with the target's primary key.
        """
        select = rows_select(self.source, self.window, krange, self.plan.columns, ordered=ordered)
        if self.target.adapter.name == "postgresql":
            if self._can_pass_through(source_conn):
                return pipe_binary(source_conn, self.conn, select, into)
            if self._printed is not None:
                # Every value as the source prints it, checked, into a text COPY: no Python object
                # is built for a value, none is converted (see values.exact_from_text).
                selected, checks = self._printed
                columns = self.plan.columns
                printed = rows_select(self.source, self.window, krange, columns, selected, ordered=ordered)
                return copy_text(self.conn, into, self._batches(source_conn, printed, checks))
            return copy_rows(self.conn, into, self._converted(source_conn, select))
        written = 0
        table: sa.Table | None = None
        for rows in self._converted(source_conn, select):
            if not rows:
                continue
            table = table if table is not None else table_of(into)
            names = [column.name for column in table.columns]
            self.conn.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in rows])
            written += len(rows)
        return written

    def _converted(self, source_conn: sa.Connection, select: sa.Select[Any]) -> Iterator[Rows]:
        """The source's rows in the target's types (see :meth:`_batches`)."""
        return self._batches(source_conn, select, self.plan.convert)

    def _batches(
        self, source_conn: sa.Connection, select: sa.Select[Any], convert: Callable[[tuple[Any, ...]], Any]
    ) -> Iterator[Rows]:
        """The rows of ``select`` through ``convert``, a batch at a time through a server-side (or
        unbuffered) cursor, with ``False`` for a soft-delete column. Batches are bounded in rows and
        bytes (:func:`~sync_pipeline.engine.streams.batches_by_bytes`)."""
        result = source_conn.execution_options(stream_results=True, max_row_buffer=1).execute(select)
        try:
            for rows in batches_by_bytes(result, self.chunk_size, self.chunk_bytes):
                yield self.writer.with_soft_delete([convert(tuple(row)) for row in rows])
        finally:
            result.close()

    def _can_pass_through(self, source_conn: sa.Connection) -> bool:
        """Whether a PostgreSQL source's binary COPY output can be written to the target unchanged.

        When every column has the very same type on both sides, typmod included (precision of a
        timestamp, scale of a numeric, length of a varchar), and no soft-delete column is added: the
        stored values already fit the target, so the bytes are what converting each row in Python and
        dumping it again would have produced, and no row is ever built in Python.
        """
        if self._passthrough is None:
            self._passthrough = (
                self.source.adapter.name == "postgresql"
                and self.writer.soft_delete_column is None
                and stored_alike(
                    source_conn, self.source.table, self.conn, self.target.table, self.plan.columns
                )
            )
        return self._passthrough


def refuse_bad_keys(writer: PartitionWriter, source: TableSide, window: Window) -> None:
    """A NULL or repeated key among the rows staged by range fails the sync, naming the source table
    and its key columns, before anything is applied."""
    if writer.ranges is not None and writer.staged_ranges:
        _refuse_bad_keys(writer, writer.ranges, source, window)
    if writer.dense is not None and writer.staged_dense:
        _refuse_bad_keys(writer, writer.dense, source, window, repeats=not writer.dense_keys_unique)


def _refuse_bad_keys(
    writer: PartitionWriter, stage: sa.Table, source: TableSide, window: Window, *, repeats: bool = True
) -> None:
    """NULL keys, and (``repeats``, unless a unique index already holds) repeated keys."""
    conn = writer.conn
    keys = [stage.c[k] for k in writer.target.key_columns]
    names = ", ".join(map(repr, source.key_columns))
    nulls = conn.execute(
        sa.select(sa.func.count()).select_from(stage).where(sa.or_(*(k.is_(None) for k in keys)))
    ).scalar_one()
    if nulls:
        raise DataError(
            f"{source.name} has {nulls} row(s) in the window {window} with a NULL in key column(s) "
            f"{names}; keys must be non-NULL"
        )
    if not repeats:
        return
    repeated = conn.execute(sa.select(*keys).group_by(*keys).having(sa.func.count() > 1).limit(5)).all()
    if repeated:
        shown = ", ".join(repr(row[0] if len(row) == 1 else tuple(row)) for row in repeated)
        raise DataError(
            f"{source.name} has duplicate key {shown} in the window {window} (columns {names}); "
            "the primary_key columns must be unique in the source"
        )


def _printed_columns(plan: SyncPlan) -> tuple[list[sa.ColumnElement[Any]], RowConverter] | None:
    """From a MySQL/MariaDB source into PostgreSQL, when every column's value can travel as the source
    prints it: what to select for each column, and the checks that still apply to the text.

    ``None`` when a column needs a conversion its text cannot carry (a naive timestamp in another
    zone, a float, a boolean, bytes, ...): the rows are then read as Python values and converted.
    """
    target = plan.target
    convert = plan.convert
    if (
        target is None
        or target.adapter.name != "postgresql"
        or not isinstance(plan.source.adapter, MySQLAdapter)
        or not isinstance(convert, RowConverter)
    ):
        return None
    selected: list[sa.ColumnElement[Any]] = []
    checks: list[Guarded | None] = []
    for name, column_convert in zip(plan.columns, convert.converters, strict=True):
        column = plan.source.table.c[name]
        source, target_family = family_of(column.type), family_of(target.table.c[name].type)
        if not exact_from_text(source, target_family, column_convert):
            return None
        printed = plan.source.adapter.printed(column, is_timestamp=source is Family.TIMESTAMP)
        selected.append(printed.label(name))
        checks.append(column_convert.checking_only() if isinstance(column_convert, Guarded) else None)
    return selected, RowConverter(checks)


def _max_key(side: TableSide, conn: sa.Connection) -> Any:
    """The largest key of the whole table (any hour, soft-deleted rows included), or ``None``."""
    return conn.execute(sa.select(sa.func.max(side.keys[0]))).scalar()


def _reset_after_copy(source_conn: sa.Connection) -> None:
    """End the source's transaction after an interrupted COPY out, so the range can be read again."""
    try:
        source_conn.rollback()
    except sa.exc.SQLAlchemyError as error:
        log.debug("source rollback failed: %s", error)
