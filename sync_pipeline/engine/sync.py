"""Syncing one table's one hourly window: plan, lock, diff, stage, apply, commit. No Dagster here.

The order of work is what makes the guarantees of SPEC section 4 hold:

1. :func:`~sync_pipeline.engine.plan.plan_sync` checks both tables before anything is written.
2. A lock on the target (advisory lock, ``GET_LOCK``, or SQLite's write lock) keeps two syncs of the
   same table and window from interleaving; it dies with the session, so a killed run leaves none.
3. Count and hash of the window on both sides, computed in the databases: an unchanged window ends
   here. Otherwise the descent narrows to the key ranges that differ.
4. Keys and ``updated_at`` of those ranges stream from both sides and are merged; only keys that are
   new, changed, or gone are looked up and fetched, a chunk at a time, and staged.
5. One set-based upsert and delete apply the stage; one commit makes the window's changes visible.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from time import perf_counter
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL

from sync_pipeline.engine.db.dialects.sqlite import BEGIN_OPTION
from sync_pipeline.engine.db.engine import is_driver_error, open_engine, redact_url, translate_error
from sync_pipeline.engine.db.side import TableSide
from sync_pipeline.engine.diff.merge import ChunkDiff, Key, diff_chunks
from sync_pipeline.engine.diff.segments import Descent, KeyRange
from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.plan import plan_sync, with_row_comparison
from sync_pipeline.engine.settings import DeleteMode, TableConfig
from sync_pipeline.engine.writer import PartitionWriter
from sync_pipeline.errors import DataError, LockTimeout

log = logging.getLogger(__name__)

Compare = Literal["updated_at", "row"]
ProgressCallback = Callable[[SyncStats], None]
ChangeCallback = Callable[[str, Key], None]
T = TypeVar("T")


def window_lock_name(schema: str | None, table: str, window: Window) -> str:
    """The name a sync locks ``table``'s ``window`` under on its target.

    Public so that an operator (or a test) can see who holds it: ``pg_locks`` shows the advisory key
    ``hashtextextended(name, 0)``; MariaDB's ``IS_USED_LOCK`` takes the adapter's digest of it. On
    MariaDB and MySQL, whose lock names are global to the server, ``schema`` of a table named without
    one is the connection's database (``Adapter.lock_scope``).
    """
    return f"{schema or ''}.{table}@{window.start.isoformat()}"


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
) -> SyncStats:
    """Make the target's rows of ``window`` equal to the source's, and say what changed.

    ``compare="row"`` compares every synced column instead of ``updated_at`` alone: slower, but it
    finds and repairs values changed without touching ``updated_at`` (drift). With ``dry_run`` it is
    the verification of a partition: the stats count the rows that differ.

    With ``dry_run`` nothing is written (not even a missing target table) and the stats say what a
    sync would do; ``on_change(kind, key)`` is told every key it would insert, update or delete.
    Transient database failures are raised as :class:`~sync_pipeline.errors.DatabaseUnavailable`.
    """
    where = f"sync of {table.name} {window}"
    try:
        with open_engine(source_url) as source, open_engine(target_url) as target:
            return _Sync(table, source, target, window, dry_run, on_progress, on_change, compare).run()
    except Exception as error:
        # Wrapped by SQLAlchemy, or raw from the driver (psycopg's COPY runs on the DBAPI connection).
        if not (isinstance(error, sa.exc.DBAPIError) or is_driver_error(error)):
            raise
        translated = translate_error(error, where=where)
        if translated is not None:
            raise translated from error
        raise


@dataclass
class _Batch:
    """Keys awaiting lookup and fetch; flushed every chunk so memory stays bounded."""

    source_only: list[tuple[Key, int]] = field(default_factory=list)
    changed: list[Key] = field(default_factory=list)
    target_only: list[tuple[Key, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.source_only) + len(self.changed) + len(self.target_only)

    def split(self, size: int) -> Iterator[_Batch]:
        """Batches of at most ``size`` keys: one lookup's ``IN (...)`` stays under the parameter limit."""
        part = _Batch()
        for name in ("source_only", "changed", "target_only"):
            for item in getattr(self, name):
                getattr(part, name).append(item)
                if len(part) >= size:
                    yield part
                    part = _Batch()
        if len(part):
            yield part


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
        self.compare = compare
        self.config = table
        self.source_engine = source
        self.target_engine = target
        self.window = window
        self.dry_run = dry_run
        self.on_progress = on_progress
        self.on_change = on_change
        self.stats = SyncStats(dry_run=dry_run)
        self.chunk_size = table.chunk_size

    # -- top level -------------------------------------------------------------------------------
    def run(self) -> SyncStats:
        started = perf_counter()
        with self._timed("plan"):
            self.plan = plan_sync(
                self.config, self.source_engine, self.target_engine, create_target=not self.dry_run
            )
            # Rows already in the target hold NULL in a column just added: only a whole-row
            # comparison sees that they differ from the source (their updated_at does not).
            if self.plan.added_columns:
                self.compare = "row"
            if self.compare == "row":
                self.plan = with_row_comparison(self.plan)
        with self.source_engine.connect() as conn:
            self.stats.null_updated_at = self.plan.source.count_null_ts(conn)
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
        timeout = self.config.lock_timeout_seconds
        wrote = False
        with self.target_engine.connect() as conn:
            schema = target.name.schema or target.adapter.lock_scope(conn)
            lock_name = window_lock_name(schema, target.name.table, self.window)
            with self._timed("lock"):
                if not target.adapter.acquire_lock(conn, lock_name, timeout):
                    raise LockTimeout(
                        f"another sync of {self.config.name} {self.window} held the lock for more than "
                        f"{timeout:g}s (target {redact_url(self.target_engine.url)})"
                    )
            try:
                conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
                try:
                    transaction = conn.begin()
                except sa.exc.OperationalError as error:
                    if "locked" in str(error.orig):
                        raise LockTimeout(
                            f"another sync holds the write lock of {target.name} for more than {timeout:g}s"
                        ) from error
                    raise
                with transaction:
                    writer = PartitionWriter(
                        conn, target, self.plan.columns, self.window, self.plan.soft_delete_column
                    )
                    self._diff(target, writer)
                    with self._timed("apply"):
                        writer.apply()
                        writer.close()
                    wrote = bool(writer.staged_rows or writer.staged_keys)
            finally:
                _quietly(lambda: target.adapter.release_lock(conn, lock_name))
        if not wrote:
            # Nothing was written: the window holds what the checksum (or the merge) just counted,
            # and the steady-state sync of an unchanged window costs no second scan of it.
            self.stats.target_rows = self.stats.target_rows_before
            return
        with self.target_engine.connect() as conn:
            self.stats.target_rows = target.count_window(conn, self.window)

    # -- diff ------------------------------------------------------------------------------------
    def _diff(self, target: TableSide, writer: PartitionWriter | None) -> None:
        source = self.plan.source
        with ExitStack() as stack, ThreadPoolExecutor(2, thread_name_prefix="sync-side") as pool:
            src_scan = stack.enter_context(self.source_engine.connect())
            src_fetch = stack.enter_context(self.source_engine.connect())
            tgt_scan = stack.enter_context(self.target_engine.connect())
            tgt_lookup = stack.enter_context(self.target_engine.connect())

            def both(on_source: Callable[[], T], on_target: Callable[[], T]) -> tuple[T, T]:
                future = pool.submit(on_target)
                return on_source(), future.result()

            ranges = self._ranges(source, target, src_scan, tgt_scan, both)
            batch = _Batch()
            limit = source.batch_size(self.chunk_size)
            count_rows = not self.plan.hash_compare
            with self._timed("merge"):
                for krange in ranges:
                    # Each side's keys are read on a thread of their own, a few chunks ahead, so both
                    # servers and the comparison work at the same time. Closed on any error too: a
                    # half-read SQLite cursor would keep a read lock that blocks every later writer.
                    src_stream = partial(source.key_stream, src_scan, self.window, krange, self.chunk_size)
                    tgt_stream = partial(target.key_stream, tgt_scan, self.window, krange, self.chunk_size)
                    with (
                        _read_ahead(src_stream, "sync-source-keys") as src_chunks,
                        _read_ahead(tgt_stream, "sync-target-keys") as tgt_chunks,
                    ):
                        for chunk in diff_chunks(src_chunks, tgt_chunks):
                            self._take(chunk, batch, count_rows)
                            if len(batch) >= limit:
                                for part in batch.split(limit):
                                    self._flush(part, source, target, src_fetch, tgt_lookup, writer)
                                batch = _Batch()
            for part in batch.split(limit):
                self._flush(part, source, target, src_fetch, tgt_lookup, writer)
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
        src: sa.Connection,
        tgt: sa.Connection,
        both: Callable[[Callable[[], Any], Callable[[], Any]], tuple[Any, Any]],
    ) -> Iterator[KeyRange]:
        """Key ranges whose keys must be merged; equal ranges are counted as unchanged and skipped."""
        if not self.plan.hash_compare:
            yield KeyRange()
            return
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
        bounds = [b for b in (src_lo, src_hi, tgt_lo, tgt_hi) if b is not None]
        if not (source.single_integer_key and target.single_integer_key and bounds):
            yield KeyRange()
            return
        descent = Descent(
            source_buckets=lambda r, w: source.bucket_checksums(src, self.window, r, w),
            target_buckets=lambda r, w: target.bucket_checksums(tgt, self.window, r, w),
            leaf_rows=max(2 * self.chunk_size, 1000),
            both=both,  # the two sides' bucket queries run at the same time
        )
        yield from descent.differing(
            KeyRange(min(bounds), max(bounds) + 1), max(src_sum.count, tgt_sum.count)
        )
        self.stats.ranges_compared += descent.ranges_compared
        self.stats.ranges_differing += descent.ranges_differing
        self.stats.unchanged += descent.rows_proved_equal

    def _take(self, chunk: ChunkDiff, batch: _Batch, count_rows: bool) -> None:
        """Count a compared stretch of keys and queue its differing keys for lookup and fetch."""
        stats = self.stats
        stats.keys_scanned += chunk.source_keys + chunk.target_keys
        if count_rows:
            stats.source_rows += chunk.source_keys
            stats.target_rows_before += chunk.target_keys
        stats.unchanged += chunk.unchanged
        for key, source_ts, target_ts in chunk.changed:
            # A row fingerprint is a hash, not a time: any difference is a change to copy.
            if self.compare == "row" or source_ts > target_ts:
                batch.changed.append(key)
            else:
                stats.skipped_newer += 1  # the target holds a newer version: never overwrite it
        batch.source_only.extend(chunk.source_only)
        batch.target_only.extend(chunk.target_only)

    # -- lookups, fetches, staging ---------------------------------------------------------------
    def _flush(
        self,
        batch: _Batch,
        source: TableSide,
        target: TableSide,
        src_fetch: sa.Connection,
        tgt_lookup: sa.Connection,
        writer: PartitionWriter | None,
    ) -> None:
        if not len(batch):
            return
        stats = self.stats
        to_write: dict[Key, str] = {}
        to_delete: list[Key] = []
        with self._timed("lookup"):
            if batch.source_only:
                existing = target.lookup(tgt_lookup, [key for key, _ in batch.source_only])
                for key, source_ts in batch.source_only:
                    if key not in existing:
                        to_write[key] = "inserted"
                    elif (target_ts := existing[key]) is not None and target_ts > source_ts:
                        stats.skipped_newer += 1
                    else:
                        to_write[key] = "moved_in"
            for key in batch.changed:
                to_write[key] = "updated"
            if batch.target_only:
                found = source.lookup(src_fetch, [key for key, _ in batch.target_only])
                for key, in_target in batch.target_only:
                    if key not in found:
                        to_delete.append(key)
                    elif (now_at := found[key]) is None:
                        # A source row whose updated_at became NULL is in no window: it is counted in
                        # null_updated_at and its target row is left as it is, never deleted.
                        pass
                    elif self.compare == "updated_at" and now_at < in_target:
                        # Stamped earlier than the target's version (after a NULL, or a clock set
                        # back): the upsert would not overwrite the newer row, so do not count it.
                        stats.skipped_newer += 1
                    else:
                        to_write[key] = "moved_out"
        deleting = self.config.delete_mode is not DeleteMode.IGNORE
        with self._timed("fetch"):
            rows = list(source.fetch_rows(src_fetch, list(to_write), self.plan.columns)) if to_write else []
        stats.rows_fetched += len(rows)
        key_at = [self.plan.columns.index(k) for k in source.key_columns]
        fetched = {row[key_at[0]] if len(key_at) == 1 else tuple(row[i] for i in key_at) for row in rows}
        if len(fetched) < len(rows):
            # A key the window holds once may have another row outside it: the upsert would fail
            # obscurely (PostgreSQL) or pick one of the rows (MySQL, SQLite).
            keys = Counter(
                row[key_at[0]] if len(key_at) == 1 else tuple(row[i] for i in key_at) for row in rows
            )
            duplicates = sorted((key for key, n in keys.items() if n > 1), key=repr)
            raise DataError(
                f"{source.name} has several rows for key(s) {', '.join(map(repr, duplicates[:5]))}; "
                "the primary_key columns must be unique in the source"
            )
        for key, kind in to_write.items():
            if key not in fetched:
                stats.vanished_during_sync += 1  # deleted since the key scan; the next sync sees it
                continue
            self._count(kind)
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
                writer.stage_rows([self.plan.convert(row) for row in rows])
                if deleting and to_delete:
                    writer.stage_deletes(to_delete)
        if self.on_progress is not None:
            self.on_progress(self.stats)
        log.debug("chunk staged: %d rows, %d deletes", len(rows), len(to_delete))

    def _count(self, kind: str) -> None:
        stats = self.stats
        if kind == "inserted":
            stats.inserted += 1
        else:
            stats.updated += 1
            if kind == "moved_in":
                stats.moved_in += 1
            elif kind == "moved_out":
                stats.moved_out += 1

    def _predict_into_missing_target(self) -> None:
        """Dry run against a target that does not exist yet: every source row would be inserted."""
        source = self.plan.source
        with self.source_engine.connect() as conn:
            self.stats.source_rows = source.count_window(conn, self.window)
            if self.on_change is not None:
                for chunk in source.key_stream(conn, self.window, KeyRange(), self.chunk_size):
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


def _quietly(action: Callable[[], object]) -> None:
    """Run a cleanup whose failure must not hide the real error (a dead connection drops its lock)."""
    try:
        action()
    except sa.exc.SQLAlchemyError as error:
        log.debug("cleanup failed: %s", error)


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_DONE = object()


@contextmanager
def _read_ahead(
    produce: Callable[[], Generator[T, None, None]], name: str, depth: int = 2
) -> Iterator[Iterator[T]]:
    """Run a stream on a thread of its own, at most ``depth`` items ahead of its reader.

    The stream's generator is created, drained and closed on that thread (its connection is used by
    no other thread meanwhile); its error is raised to the reader. Leaving the block early stops the
    thread at its next item and waits for it, so the stream's cursor is closed when the block ends.
    """
    items: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        end: object = _DONE
        try:
            stream = produce()
            try:
                for item in stream:
                    if not put(item):
                        return
            finally:
                stream.close()
        except BaseException as error:  # noqa: BLE001 - handed to the reader, who raises it
            end = _Failed(error)
        put(end)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()

    def read() -> Iterator[T]:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]

    try:
        yield read()
    finally:
        stop.set()
        thread.join()
