"""Syncing one table's one hourly window: plan, lock, diff, stage, apply, commit. No Dagster here.

The order of work is what makes the guarantees of SPEC section 4 hold:

1. :func:`~sync_pipeline.engine.plan.plan_sync` checks both tables before anything is written (a
   run of many windows planned once, :mod:`~sync_pipeline.engine.run_plan`, checks that its plan
   still matches both tables instead).
2. The window's lock and one transaction on the target (:mod:`~sync_pipeline.engine.transaction`)
   keep two syncs of the same table and window apart and make the window's changes atomic.
3. Count and hash of the window on both sides, computed in the databases: an unchanged window ends
   here. Otherwise the descent narrows to the key ranges that differ.
4. Ranges with no target row in the window (the first sync of an hour, or rows only the source has)
   travel whole: the source's rows stream straight to the target's session
   (:mod:`~sync_pipeline.engine.bulk`), with no key compared.
5. Ranges the descent finds densely changed travel whole too, into a stage the apply sorts
   set-based (:mod:`~sync_pipeline.engine.dense`); only the keys the target's window holds there
   and the source's does not take the per-key path below.
6. In the other ranges, keys and ``updated_at`` stream from both sides and are merged; only keys
   that are new, changed, or gone are looked up, decided (:mod:`~sync_pipeline.engine.classify`),
   fetched a chunk at a time, and staged.
7. Set-based upserts and one delete apply the stages; one commit makes the window's changes visible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from functools import partial
from time import perf_counter
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL

from sync_pipeline.engine.bulk import RangeLoader, TargetGaps, refuse_bad_keys, window_is_empty
from sync_pipeline.engine.classify import Compare, KeyBatch, classify, count, take
from sync_pipeline.engine.db.engine import normalize_url, open_engine, translated_errors
from sync_pipeline.engine.db.side import TableSide
from sync_pipeline.engine.dense import MIN_CHANGED_SHARE, DenseLoader, changed_share
from sync_pipeline.engine.diff.merge import Key, diff_chunks
from sync_pipeline.engine.diff.segments import Descent, KeyRange
from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.plan import plan_sync, with_row_comparison
from sync_pipeline.engine.run_plan import RunPlan
from sync_pipeline.engine.settings import DeleteMode, TableConfig
from sync_pipeline.engine.streams import read_ahead
from sync_pipeline.engine.transaction import locked_window, window_lock_name
from sync_pipeline.engine.writer import DenseCounts, PartitionWriter, RangeCounts
from sync_pipeline.errors import DataError

__all__ = ["ChangeCallback", "Compare", "ProgressCallback", "sync_partition", "window_lock_name"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[SyncStats], None]
ChangeCallback = Callable[[str, Key], None]
T = TypeVar("T")
Both = Callable[[Callable[[], Any], Callable[[], Any]], tuple[Any, Any]]
Path = Literal["bulk", "dense", "merge"]  # how a differing key range's rows travel


def sync_partition(
    table: TableConfig,
    source_url: str | URL,
    target_url: str | URL,
    window: Window,
    *,
    dry_run: bool = False,
    on_progress: ProgressCallback | None = None,
    on_change: ChangeCallback | None = None,
    compare: Compare = "updated_at",
    plan: RunPlan | None = None,
) -> SyncStats:
    """Make the target's rows of ``window`` equal to the source's, and say what changed.

    ``compare="row"`` compares every synced column instead of ``updated_at`` alone: slower, but it
    finds and repairs values changed without touching ``updated_at`` (drift). The source is then the
    truth: a row that differs is overwritten even where the source's ``updated_at`` moved backwards.
    With ``dry_run`` it is the verification of a partition: the stats count the rows that differ.

    With ``dry_run`` nothing is written (not even a missing target table) and the stats say what a
    sync would do; ``on_change(kind, key)`` is told every key it would insert, update or delete.
    Transient database failures are raised as :class:`~sync_pipeline.errors.DatabaseUnavailable`.

    With ``plan`` (:func:`~sync_pipeline.engine.run_plan.plan_run`, made once for a run of windows of
    this table from the same URLs) the tables are not planned again: the sync uses the plan's engines
    and first checks that neither table changed since (:class:`~sync_pipeline.errors.PlanOutdated`).
    """
    where = f"sync of {table.name} {window}"
    if plan is not None and (plan.source.url, plan.target.url) != (
        normalize_url(source_url),
        normalize_url(target_url),
    ):
        raise ValueError(f"{where}: the plan was made for other databases")
    with translated_errors(where), _engines(table, source_url, target_url, plan) as (source, target):
        sync = _Sync(table, source, target, window, dry_run, on_progress, on_change, compare)
        return sync.run(plan)


@contextmanager
def _engines(
    table: TableConfig, source_url: str | URL, target_url: str | URL, plan: RunPlan | None
) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    """Engines for one sync, their connections all closed when it ends: its own, or a run plan's."""
    if plan is not None:
        plan.forget_inherited_connections()
        try:
            yield plan.source, plan.target
        finally:
            plan.release()
        return
    bound = table.lock_timeout_seconds  # no session of the run waits longer for any lock
    with (
        open_engine(source_url, lock_timeout_seconds=bound) as source,
        open_engine(target_url, lock_timeout_seconds=bound) as target,
    ):
        yield source, target


class _Connection:
    """A connection of ``engine`` opened on the first call, closed with ``stack``.

    Called only on the sync's own thread: the two sides' concurrent queries receive it opened.
    """

    def __init__(self, stack: ExitStack, engine: sa.Engine) -> None:
        self._stack = stack
        self._engine = engine
        self._conn: sa.Connection | None = None

    def __call__(self) -> sa.Connection:
        if self._conn is None:
            self._conn = self._stack.enter_context(self._engine.connect())
        return self._conn


class _Sync:
    def __init__(
        self,
        table: TableConfig,
        source: sa.Engine,
        target: sa.Engine,
        window: Window,
        dry_run: bool,
        on_progress: ProgressCallback | None,
        on_change: ChangeCallback | None,
        compare: Compare = "updated_at",
    ) -> None:
        self.compare: Compare = compare
        self.config = table
        self.source_engine = source
        self.target_engine = target
        self.window = window
        self.dry_run = dry_run
        self.on_progress = on_progress
        self.on_change = on_change
        self.stats = SyncStats(dry_run=dry_run)
        self.chunk_size = table.chunk_size
        self.window_unhashed = False  # the target's window was empty: no checksum counted the source

    # -- top level -------------------------------------------------------------------------------
    def run(self, run_plan: RunPlan | None = None) -> SyncStats:
        started = perf_counter()
        with self._timed("plan" if run_plan is None else "plan_check"):
            if run_plan is None:
                self.plan = plan_sync(
                    self.config, self.source_engine, self.target_engine, create_target=not self.dry_run
                )
            else:
                run_plan.require_current()
                self.plan = run_plan.plan
            # Rows already in the target hold NULL in a column just added: only a whole-row
            # comparison sees that they differ from the source (their updated_at does not). With a
            # run's plan, that is every window of the run.
            if self.plan.added_columns:
                self.compare = "row"
            if self.compare == "row":
                self.plan = with_row_comparison(self.plan)
        with self.source_engine.connect() as conn:
            # A NOT NULL column holds none, and counting them would scan a source table that has no
            # index on updated_at, whole, every hour.
            if self.plan.source.ts.nullable:
                self.stats.null_updated_at = self.plan.source.count_null_ts(conn)
            self.stats.unplaced_updated_at = self.plan.source.count_unplaced_ts(conn, self.window)
        described = self.plan.target or self.plan.source
        self.stats.target_table = described.name.qualified
        self.stats.target_columns = [(c.name, str(c.type)) for c in described.table.columns]
        if self.plan.target is None:
            self._predict_into_missing_target()
        elif self.dry_run:
            self._diff(self.plan.target, writer=None)
        else:
            self._locked_sync(self.plan.target)
        self.stats.add_time("total", perf_counter() - started)
        return self.stats

    def _locked_sync(self, target: TableSide) -> None:
        started = perf_counter()
        what = f"{self.config.name} {self.window}"
        timeout = self.config.lock_timeout_seconds
        with locked_window(self.target_engine, target, self.window, what=what, timeout=timeout) as conn:
            self.stats.add_time("lock", perf_counter() - started)
            writer = PartitionWriter(
                conn,
                target,
                self.plan.columns,
                self.window,
                self.plan.soft_delete_column,
                force_ranges=self.compare == "row",
                timed=self._timed,
            )
            self._diff(target, writer)
            with self._timed("apply"):
                with self._timed("check_keys"):
                    refuse_bad_keys(writer, self.plan.source, self.window)
                writer.apply()
                self._count_ranges(writer.range_counts, writer.dense_counts)
                writer.close()
            wrote = bool(writer.staged_rows or writer.staged_keys or writer.staged_ranges)
            wrote = wrote or bool(writer.staged_dense)
            wrote = wrote or bool(self.stats.rows_direct)
            applied = perf_counter()
        self.stats.add_time("commit", perf_counter() - applied)  # leaving locked_window commits
        if not wrote:
            # Nothing was written: the window holds what the checksum (or the merge) just counted,
            # and the steady-state sync of an unchanged window costs no second scan of it.
            self.stats.target_rows = self.stats.target_rows_before
            return
        if self.window_unhashed:
            # The window was empty under the lock: it holds what this sync put in it, no second scan
            # of rows just written (their pages not yet all-visible: 0.2 s at 200k rows).
            self.stats.target_rows = self.stats.inserted + self.stats.moved_in
            return
        with self.target_engine.connect() as conn:
            self.stats.target_rows = target.count_window(conn, self.window)

    def _count_ranges(self, counts: RangeCounts, dense: DenseCounts) -> None:
        """Add what the apply counted, set-based, of the rows staged by range and of dense ranges."""
        stats = self.stats
        kept = 0 if self.compare == "row" else counts.newer  # a whole-row repair overwrites them
        stats.inserted += counts.inserted
        stats.moved_in += counts.existing - kept
        stats.updated += counts.existing - kept
        stats.skipped_newer += kept
        stats.inserted += dense.inserted
        stats.updated += dense.updated + dense.moved_in
        stats.moved_in += dense.moved_in
        stats.skipped_newer += dense.newer
        stats.unchanged += dense.unchanged

    # -- diff ------------------------------------------------------------------------------------
    def _diff(self, target: TableSide, writer: PartitionWriter | None) -> None:
        source = self.plan.source
        # Per-key reporting (on_change) needs every key; a dry run writes nothing to stream into.
        bulk = dense = None
        if writer is not None and self.on_change is None:
            bulk = RangeLoader(self.plan, writer, self.window, self.chunk_size, self.stats, self._timed)
            if self.compare == "updated_at":
                dense = DenseLoader(bulk)
        with ExitStack() as stack, ThreadPoolExecutor(2, thread_name_prefix="sync-side") as pool:
            # Each connection opens when first used, on this thread: an unchanged window opens no
            # lookup connection, and the first sync of an hour reads the source on one and probes the
            # target on one (a connection is 5-10 ms of both servers' time, quiet, every hour of a
            # backfill).
            src_scan = _Connection(stack, self.source_engine)
            src_fetch = _Connection(stack, self.source_engine)
            tgt_scan = _Connection(stack, self.target_engine)
            tgt_lookup = _Connection(stack, self.target_engine)

            def both(on_source: Callable[[], T], on_target: Callable[[], T]) -> tuple[T, T]:
                future = pool.submit(on_target)
                return on_source(), future.result()

            batch = KeyBatch()
            limit = source.batch_size(self.chunk_size)
            count_rows = not self.plan.hash_compare
            flush = partial(self._flush, source=source, target=target, src_conn=src_fetch,
                            tgt_conn=tgt_lookup, writer=writer)  # fmt: skip
            paths = (bulk is not None, dense is not None)
            ranges = self._ranges(source, target, src_scan, tgt_scan, both, *paths)
            for krange, path in ranges:
                if path == "bulk" and bulk is not None:
                    streamed = self.stats.rows_streamed
                    bulk.load(src_fetch(), krange)
                    if count_rows or self.window_unhashed:
                        self.stats.source_rows += self.stats.rows_streamed - streamed
                    continue
                if path == "dense" and dense is not None:
                    # Only the keys the target's window holds and the source's lacks are decided
                    # key by key, like the merge's target-only keys.
                    for keys in dense.load(src_fetch(), krange):
                        batch.target_only.extend(keys)
                        if len(batch) >= limit:
                            for part in batch.split(limit):
                                flush(part)
                            batch = KeyBatch()
                    continue
                # Each side's keys are read on a thread of their own, a few chunks ahead, so both
                # servers and the comparison work at the same time. Closed on any error too: a
                # half-read SQLite cursor would keep a read lock that blocks every later writer.
                size, weight = self.chunk_size, self.config.chunk_bytes
                src_stream = partial(source.key_stream, src_scan(), self.window, krange, size, weight)
                tgt_stream = partial(target.key_stream, tgt_scan(), self.window, krange, size, weight)
                with (
                    self._timed("merge"),
                    read_ahead(src_stream, "sync-source-keys") as src_chunks,
                    read_ahead(tgt_stream, "sync-target-keys") as tgt_chunks,
                ):
                    for chunk in diff_chunks(src_chunks, tgt_chunks):
                        take(chunk, batch, self.stats, self.compare, count_rows=count_rows)
                        if len(batch) >= limit:
                            for part in batch.split(limit):
                                flush(part)
                            batch = KeyBatch()
            for part in batch.split(limit):
                flush(part)
        if self.dry_run:
            self.stats.target_rows = (
                self.stats.target_rows_before
                + self.stats.inserted
                + self.stats.moved_in
                - self.stats.moved_out
                - self.stats.deleted
            )

    def _ranges(
        self,
        source: TableSide,
        target: TableSide,
        src_conn: _Connection,
        tgt_conn: _Connection,
        both: Both,
        bulk: bool,
        dense: bool,
    ) -> Iterator[tuple[KeyRange, Path]]:
        """Key ranges whose rows must be compared or copied, each with how its rows travel: whole where
        the target holds none of the window's rows in it (``bulk``) or where the descent found it
        densely changed (``dense``), else by the key merge. Equal ranges are counted unchanged and
        skipped."""
        tgt = tgt_conn()
        if bulk and window_is_empty(target, tgt, self.window):
            # The first sync of the hour: one index probe says there is nothing to compare with, and
            # the source's rows are counted as they stream instead of hashed first.
            self.window_unhashed = True
            yield KeyRange(), "bulk"
            return
        if not self.plan.hash_compare:
            yield KeyRange(), "merge"
            return
        src = src_conn()
        with self._timed("checksum"):
            (src_sum, src_lo, src_hi), (tgt_sum, tgt_lo, tgt_hi) = both(
                lambda: source.checksum(src, self.window), lambda: target.checksum(tgt, self.window)
            )
        self.stats.source_rows = src_sum.count
        self.stats.target_rows_before = tgt_sum.count
        self.stats.ranges_compared += 1
        if src_sum == tgt_sum:
            self.stats.unchanged += src_sum.count
            return
        self.stats.ranges_differing += 1
        if bulk and tgt_sum.count == 0:
            yield KeyRange(), "bulk"  # emptied since the probe (or rows only soft-deleted ones hide)
            return
        bounds = [b for b in (src_lo, src_hi, tgt_lo, tgt_hi) if b is not None]
        if not (source.single_integer_key and target.single_integer_key and bounds):
            yield KeyRange(), "merge"
            return
        gaps = TargetGaps()
        descent = Descent(
            source_buckets=gaps.source(partial(source.bucket_checksums, src, self.window)),
            target_buckets=gaps.target(partial(target.bucket_checksums, tgt, self.window)),
            leaf_rows=max(2 * self.chunk_size, 1000),
            both=both,  # the two sides' bucket queries run at the same time
        )
        whole = KeyRange(min(bounds), max(bounds) + 1)
        rows = max(src_sum.count, tgt_sum.count)

        def differs(probe: KeyRange) -> bool:
            self.stats.ranges_compared += 1
            sides = both(
                partial(source.bucket_checksums, src, self.window, probe, probe.span),
                partial(target.bucket_checksums, tgt, self.window, probe, probe.span),
            )
            return bool(sides[0] != sides[1])

        for krange, densely in descent.differing_kinds(whole, rows):
            if bulk and gaps.covers(krange):
                yield krange, "bulk"
            elif dense and densely and changed_share(differs, krange, rows / whole.span) >= MIN_CHANGED_SHARE:
                yield krange, "dense"
            else:
                yield krange, "merge"
        self.stats.ranges_compared += descent.ranges_compared
        self.stats.ranges_differing += descent.ranges_differing
        self.stats.unchanged += descent.rows_proved_equal

    # -- lookups, fetches, staging ---------------------------------------------------------------
    def _flush(
        self,
        batch: KeyBatch,
        *,
        source: TableSide,
        target: TableSide,
        src_conn: _Connection,
        tgt_conn: _Connection,
        writer: PartitionWriter | None,
    ) -> None:
        if not len(batch):
            return
        src_fetch, tgt_lookup = src_conn(), tgt_conn()
        stats = self.stats
        source_only = [key for key, _ in batch.source_only]
        target_only = [key for key, _ in batch.target_only]
        source_at = target_at = None
        with self._timed("lookup"):
            in_target = target.lookup(tgt_lookup, source_only) if source_only else {}
            in_source = source.lookup(src_fetch, target_only) if target_only else {}
            if self.compare == "row":
                # The batch carries row hashes: each side's updated_at of its own keys says which
                # way a row moved.
                source_at = source.lookup(src_fetch, source_only) if source_only else {}
                target_at = target.lookup(tgt_lookup, target_only) if target_only else {}
        decision = classify(
            batch,
            in_target=in_target,
            in_source=in_source,
            compare=self.compare,
            stats=stats,
            source_at=source_at,
            target_at=target_at,
        )
        to_write, to_delete = decision.to_write, decision.to_delete
        deleting = self.config.delete_mode is not DeleteMode.IGNORE
        fetched = self._fetch_and_stage(source, src_fetch, list(to_write), writer)
        for key, kind in to_write.items():
            if key not in fetched:
                stats.vanished_during_sync += 1  # deleted since the key scan; the next sync sees it
                continue
            count(stats, kind)
            if self.on_change is not None:
                self.on_change(kind, key)
        for key in to_delete:
            if deleting:
                stats.deleted += 1
                if self.on_change is not None:
                    self.on_change("deleted", key)
            else:
                stats.kept_deleted += 1
        if writer is not None:
            with self._timed("stage"):
                if deleting and to_delete:
                    writer.stage_deletes(to_delete)
                writer.stage_forced([key for key in decision.forced if key in fetched])
        if self.on_progress is not None:
            self.on_progress(self.stats)
        log.debug("chunk staged: %d rows, %d deletes", len(fetched), len(to_delete))

    def _fetch_and_stage(
        self, source: TableSide, src_fetch: sa.Connection, keys: list[Key], writer: PartitionWriter | None
    ) -> set[Key]:
        """Fetch the source's rows of ``keys`` and stage them, a batch of at most ``chunk_bytes`` at a
        time (1 MB rows are never all held at once); returns the keys found."""
        key_at = [self.plan.columns.index(k) for k in source.key_columns]
        fetched: set[Key] = set()
        repeated: set[Key] = set()
        # Closed on any error too: an unbuffered MariaDB result left open would break the connection.
        with closing(
            source.fetch_rows(src_fetch, keys, self.plan.columns, self.config.chunk_bytes)
        ) as batches:
            while True:
                with self._timed("fetch"):
                    rows = next(batches, None)
                if rows is None:
                    break
                self.stats.rows_fetched += len(rows)
                for row in rows:
                    key = row[key_at[0]] if len(key_at) == 1 else tuple(row[i] for i in key_at)
                    if key in fetched:
                        repeated.add(key)
                    fetched.add(key)
                if writer is not None and not repeated:
                    with self._timed("stage"):
                        writer.stage_rows([self.plan.convert(row) for row in rows])
                del rows  # not held while the next batch is read
        if repeated:
            # A key the window holds once may have another row outside it: the upsert would fail
            # obscurely (PostgreSQL) or pick one of the rows (MySQL, SQLite).
            shown = sorted(repeated, key=repr)[:5]
            raise DataError(
                f"{source.name} has several rows for key(s) {', '.join(map(repr, shown))}; "
                "the primary_key columns must be unique in the source"
            )
        return fetched

    def _predict_into_missing_target(self) -> None:
        """Dry run against a target that does not exist yet: every source row would be inserted."""
        source = self.plan.source
        with self.source_engine.connect() as conn:
            self.stats.source_rows = source.count_window(conn, self.window)
            if self.on_change is not None:
                for chunk in source.key_stream(
                    conn, self.window, KeyRange(), self.chunk_size, self.config.chunk_bytes
                ):
                    for key, _ in chunk:
                        self.on_change("inserted", key)
        self.stats.inserted = self.stats.target_rows = self.stats.source_rows

    @contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        started = perf_counter()
        try:
            yield
        finally:
            self.stats.add_time(phase, perf_counter() - started)
