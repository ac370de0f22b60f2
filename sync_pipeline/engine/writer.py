"""Writing one partition's changes: stage in session-private tables, apply set-based, commit once.

While the diff streams, changed rows are appended to a temporary stage table (binary COPY on
PostgreSQL, multi-row INSERTs elsewhere) and keys to delete to a second one, a chunk at a time. Rows
that travel by range (:mod:`~sync_pipeline.engine.bulk`) and may meet a target row of another hour go
to a third, whose counts (inserted, moved in, newer in the target) are taken by one set-based query
when it is applied. When the diff is done, upserts and one delete move the stages into the target
inside the same transaction. A crash anywhere before the commit leaves the target untouched; stage
tables vanish with the session. Reads of the target use other connections, which never see the
uncommitted stage.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.db.dialects import Adapter
from sync_pipeline.engine.db.side import TableSide
from sync_pipeline.engine.diff.merge import Key
from sync_pipeline.engine.diff.window import Window

STAGE_ROWS = "sync_pipeline_stage_rows"
STAGE_KEYS = "sync_pipeline_stage_keys"
STAGE_FORCED = "sync_pipeline_stage_forced"  # keys whose newer target row a whole-row repair overwrites
STAGE_RANGES = "sync_pipeline_stage_ranges"  # rows that travelled by range, counted set-based
STAGE_DENSE = "sync_pipeline_stage_dense"  # every source row of densely changed ranges (engine/dense.py)


@dataclass(frozen=True)
class RangeCounts:
    """What applying the rows staged by range did, counted in the database before the upsert."""

    staged: int = 0
    existing: int = 0  # the target held the key (in another hour): moved in, or newer and kept
    newer: int = 0  # of those, target rows newer than the source's: never overwritten (unless forced)

    @property
    def inserted(self) -> int:
        return self.staged - self.existing


@dataclass(frozen=True)
class DenseCounts:
    """What applying the rows of densely changed ranges did, counted in the database before the upsert.

    Every source row of such a range was staged, changed or not: the counts sort them the way the
    key merge and :func:`~sync_pipeline.engine.classify.classify` would have.
    """

    staged: int = 0
    existing: int = 0  # the target held the key, anywhere
    unchanged: int = 0  # in the target's window with the same updated_at: not written
    newer: int = 0  # the target's updated_at is later: never overwritten
    updated: int = 0  # in the target's window with an earlier updated_at

    @property
    def inserted(self) -> int:
        return self.staged - self.existing

    @property
    def moved_in(self) -> int:
        """Held in another hour (or with a NULL updated_at), not newer: brought into the window."""
        return self.existing - self.unchanged - self.newer - self.updated


class PartitionWriter:
    """Stages upserts and deletes for one window of one target table, then applies them at once."""

    def __init__(
        self,
        conn: sa.Connection,
        target: TableSide,
        columns: list[str],
        window: Window,
        soft_delete_column: str | None,
        *,
        force_ranges: bool = False,
        timed: Callable[[str], AbstractContextManager[None]] | None = None,
    ) -> None:
        self.conn = conn
        # The apply's statements are timed one by one (phases of the sync's stats): what a window's
        # apply costs is where a sync's profile is read.
        self.timed = timed or (lambda _phase: nullcontext())
        self.target = target
        self.adapter: Adapter = target.adapter
        self.window = window
        self.soft_delete_column = soft_delete_column
        self.force_ranges = force_ranges  # compare="row": the source is the truth for staged ranges too
        self.columns = columns + ([soft_delete_column] if soft_delete_column else [])
        # Every stage is created on first use: the first sync of an hour (rows straight into the
        # target) and an unchanged window write none, and each CREATE and DROP of a temporary table
        # is a catalog write, a few milliseconds an hour of a backfill.
        self._rows: sa.Table | None = None
        self._keys: sa.Table | None = None
        self.forced: sa.Table | None = None
        self.ranges: sa.Table | None = None
        self.staged_rows = 0
        self.staged_keys = 0
        self.staged_forced = 0
        self.staged_ranges = 0
        self.range_counts = RangeCounts()
        self.dense: sa.Table | None = None
        self.staged_dense = 0
        self._dense_indexed = False
        self.dense_keys_unique = False  # a unique index on the dense stage's key holds: no key repeats
        self.dense_counts = DenseCounts()

    def _stage_table(self, name: str, columns: list[str], *, key: bool = False) -> sa.Table:
        like = sa.select(*(self.target.table.c[c] for c in columns))
        self.adapter.create_stage(self.conn, name, like, key=self.target.key_columns if key else None)
        return sa.Table(
            name, sa.MetaData(), *(sa.Column(c, bind_type(self.target.table.c[c].type)) for c in columns)
        )

    @property
    def rows(self) -> sa.Table:
        """The stage of full rows to upsert (created on first use), in :attr:`columns` order."""
        if self._rows is None:
            self._rows = self._stage_table(STAGE_ROWS, self.columns)
        return self._rows

    @property
    def keys(self) -> sa.Table:
        """The stage of keys to delete (created on first use)."""
        if self._keys is None:
            self._keys = self._stage_table(STAGE_KEYS, self.target.key_columns)
        return self._keys

    def with_soft_delete(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Rows in the synced columns' order, plus ``False`` for the soft-delete column if there is one."""
        return [(*row, False) for row in rows] if self.soft_delete_column else rows

    def stage_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Stage full rows (in the synced columns' order) to upsert."""
        if not rows:
            return
        rows = self.with_soft_delete(rows)
        self.adapter.copy_rows(self.conn, self.rows, rows)
        self.staged_rows += len(rows)

    def stage_deletes(self, keys: list[Key]) -> None:
        """Stage keys whose rows left the source: deleted, or marked deleted in soft mode."""
        if not keys:
            return
        rows = [key if isinstance(key, tuple) else (key,) for key in keys]
        self.adapter.copy_rows(self.conn, self.keys, rows)
        self.staged_keys += len(rows)

    def stage_forced(self, keys: list[Key]) -> None:
        """Stage keys (of staged rows) to overwrite even where the target's ``updated_at`` is newer."""
        if not keys:
            return
        if self.forced is None:
            self.forced = self._stage_table(STAGE_FORCED, self.target.key_columns)
        rows = [key if isinstance(key, tuple) else (key,) for key in keys]
        self.adapter.copy_rows(self.conn, self.forced, rows)
        self.staged_forced += len(rows)

    def range_stage(self) -> sa.Table:
        """The stage of rows travelling by range (created on first use), in :attr:`columns` order."""
        if self.ranges is None:
            self.ranges = self._stage_table(STAGE_RANGES, self.columns)
        return self.ranges

    def dense_stage(self) -> sa.Table:
        """The stage of every source row of densely changed ranges (created on first use)."""
        if self.dense is None:
            # Where an index can only be declared with the table (MySQL), it is maintained while loading.
            self.dense = self._stage_table(STAGE_DENSE, self.columns, key=not self.adapter.index_after_load)
        return self.dense

    def index_dense_stage(self) -> None:
        """Index the dense stage's key, once, after its first range is in (loading is faster before).

        The search for keys only the target holds asks, a chunk at a time in key order, for target
        rows with no staged key: without an index (and with no statistics on a fresh temporary table)
        PostgreSQL and MySQL may scan the whole stage once per target row. The index is unique where
        it can be (in a savepoint: a repeated key rolls it back to a plain one), and then it is the
        check that no key repeats (:attr:`dense_keys_unique`), with no second pass over the stage.
        """
        if self.dense is None or self._dense_indexed or not self.adapter.index_after_load:
            return
        keys = [self.dense.c[k] for k in self.target.key_columns]
        try:
            with self.conn.begin_nested():
                sa.Index(f"{STAGE_DENSE}_key", *keys, unique=True).create(self.conn)
            self.dense_keys_unique = True
        except sa.exc.IntegrityError:
            # A key repeats: the sync will refuse it (bulk.refuse_bad_keys names it); search by it still.
            sa.Index(f"{STAGE_DENSE}_key", *keys).create(self.conn)
        self._dense_indexed = True

    def apply(self) -> tuple[int, int]:
        """Upsert the staged rows and delete the staged keys; returns the rows each statement touched."""
        upserted = deleted = 0
        target = self.target
        if self.staged_forced:
            assert self.forced is not None
            self._take_staged_timestamps(self.rows, self.forced)
        if self.staged_rows:
            stmt = self.adapter.merge_statement(target.table, self.rows, target.key_columns, target.ts_column)
            with self.timed("apply_rows"):
                upserted = self.conn.execute(stmt).rowcount
        if self.staged_ranges:
            with self.timed("apply_ranges"):
                upserted += self._apply_ranges()
        if self.staged_dense:
            upserted += self._apply_dense()
        if self.staged_keys:
            matches = self.adapter.staged_keys_match(target.table, self.keys, target.key_columns)
            # Only rows still inside this window: a row that a concurrent sync of a later window
            # has just brought up to date is not ours to delete.
            where = sa.and_(matches, target.window_clause(self.window))
            if self.soft_delete_column:
                stmt = sa.update(target.table).where(where).values({self.soft_delete_column: True})
            else:
                stmt = sa.delete(target.table).where(where)
            with self.timed("apply_deletes"):
                deleted = self.conn.execute(stmt).rowcount
        return upserted, deleted

    def _take_staged_timestamps(self, stage: sa.Table, only: sa.Table | None) -> None:
        """Give target rows the staged ``updated_at`` so the upsert's never-overwrite-newer guard lets
        the staged row through: how a whole-row repair overwrites a row whose source moved backwards.
        """
        target = self.target.table
        ts = self.target.ts_column
        keys = self.target.key_columns
        where = [target.c[k] == stage.c[k] for k in keys]
        if only is not None:
            where += [target.c[k] == only.c[k] for k in keys]
        self.conn.execute(sa.update(target).where(*where).values({ts: stage.c[ts]}))

    def _apply_ranges(self) -> int:
        """Check, count and upsert the rows staged by range, all set-based."""
        stage = self.range_stage()
        target = self.target.table
        keys = self.target.key_columns
        ts = self.target.ts_column
        joined = stage.outerjoin(target, sa.and_(*(stage.c[k] == target.c[k] for k in keys)))
        newer = sa.and_(target.c[ts].is_not(None), target.c[ts] > stage.c[ts])
        total, existing, newer_count = self.conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(target.c[keys[0]]),
                sa.func.coalesce(sa.func.sum(sa.case((newer, 1), else_=0)), 0),
            ).select_from(joined)
        ).one()
        self.range_counts = RangeCounts(int(total), int(existing), int(newer_count))
        if self.force_ranges and newer_count:
            self._take_staged_timestamps(stage, None)
        stmt = self.adapter.merge_statement(target, stage, keys, ts)
        return int(self.conn.execute(stmt).rowcount)

    def _apply_dense(self) -> int:
        """Count the rows of densely changed ranges and upsert only those that differ, set-based.

        A staged row is left out where the target holds its key with a later ``updated_at`` (never
        overwritten, SPEC 4.9) or the same one (unchanged); every other row is upserted under the
        usual guard. Equal ``updated_at`` means the same window: both are values of the target's
        column type, the staged one is in the window, and the window is a range of that column.
        """
        stage = self.dense_stage()
        target = self.target.table
        keys = self.target.key_columns
        ts = self.target.ts_column
        in_window = self.target.window_clause(self.window)
        joined = stage.outerjoin(target, sa.and_(*(stage.c[k] == target.c[k] for k in keys)))

        def tally(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
            return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

        with self.timed("dense_count"):
            total, existing, unchanged, newer, updated = self.conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.count(target.c[keys[0]]),
                    tally(sa.and_(target.c[ts] == stage.c[ts], in_window)),
                    tally(target.c[ts] > stage.c[ts]),
                    tally(sa.and_(target.c[ts] < stage.c[ts], in_window)),
                ).select_from(joined)
            ).one()
        self.dense_counts = DenseCounts(int(total), int(existing), int(unchanged), int(newer), int(updated))
        # Newer, or the same updated_at: a staged row's updated_at is in the window, so an equal one is
        # in the window too, and that row is unchanged.
        current = target.alias("current_row")
        left_alone = sa.exists().where(
            *(current.c[k] == stage.c[k] for k in keys), current.c[ts] >= stage.c[ts]
        )
        # In key order: the stage was loaded so, and PostgreSQL then merges it with the target's primary
        # key (its unique index) instead of hashing the target; the rows reach the table in key order,
        # page after page. Hashed, they came in hash order: at 1M rows (250k written) the upsert took
        # 2.5x as long, its writes scattered over a table larger than shared_buffers (BENCHMARKS.md).
        ordered = [stage.c[k] for k in keys]
        differing = sa.select(*stage.columns).where(~left_alone).order_by(*ordered).subquery("differing")
        stmt = self.adapter.merge_statement(target, differing, keys, ts)
        with self.timed("dense_upsert"):
            return int(self.conn.execute(stmt).rowcount)

    def close(self) -> None:
        """Drop the stage tables (PostgreSQL drops them at commit already)."""
        stages = (self._rows, self._keys, self.forced, self.ranges, self.dense)
        names = [t.name for t in stages if t is not None]
        for name in names:
            self.adapter.drop_stage(self.conn, name)


def bind_type(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    # A reflected JSON column would write SQL NULL as the JSON text 'null'; keep NULL a NULL.
    if isinstance(type_, sa.JSON):
        return type(type_)(none_as_null=True)
    return type_
