"""Densely changed key ranges: every source row of the range travels by range, the apply sorts them.

Where changes are spread over every key, no key range of the window is equal on both sides, and the
descent hands over ranges that are densely changed rather than small. The key merge would stream
both sides' keys there, look every differing key up in the target, and fetch each row back from the
source by key lists: about 30 µs per changed key. Here the source's rows of such a range stream once,
in key order, into a stage of the window's transaction, with the bulk path's machinery
(:class:`~sync_pipeline.engine.bulk.RangeLoader`: binary COPY between PostgreSQL servers, text or
converted rows from MySQL/MariaDB, bounded in rows and bytes); the apply then counts and upserts
set-based only the rows that differ (:meth:`~sync_pipeline.engine.writer.PartitionWriter.apply`),
under the upsert's never-overwrite-newer guard.

The keys of the range that the target's window holds and the source's window does not (deleted,
moved to a later hour, or set back to an earlier one) are found by one anti-join of the target's
window against the stage, a chunk at a time in key order, and take the per-key path: looked up in the
source and decided by :func:`~sync_pipeline.engine.classify.classify` exactly as the key merge's
target-only keys are, so deletes and moves out keep their semantics.

Only for the hourly comparison of ``updated_at`` with a single integer key (the descent needs one);
a whole-row comparison, a dry run or per-key reporting keep the key merge. Everything happens in the
window's one transaction: the promises of a partition sync hold, under a kill too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import sqlalchemy as sa

from sync_pipeline.engine.bulk import RangeLoader, range_clause
from sync_pipeline.engine.db.dialects.postgresql_copy import INTEGRITY_ERRORS
from sync_pipeline.engine.diff.merge import Key
from sync_pipeline.engine.diff.segments import KeyRange
from sync_pipeline.errors import DataError

# When a range the descent hands over as densely changed is worth streaming whole. The descent
# only knows that buckets differ, and a bucket of thousands of rows differs at 1.8% of rows changed
# as surely as at 100%. So a few narrow probes, each a handful of keys, are compared on both sides:
# the share of probes that differ estimates the share of rows changed. Measured (BENCHMARKS.md,
# "Densely changed windows", 200k rows PostgreSQL -> PostgreSQL): streaming the range costs about
# a COPY of it plus a set-based apply, whatever the changes; the key merge costs reading both
# sides' keys plus about 0.8 ms per changed key under that load; they break even near 7% of rows
# changed. Below MIN_CHANGED_SHARE the key merge keeps the range.
PROBES = 16
PROBE_ROWS = 8
MIN_CHANGED_SHARE = 0.08


def changed_share(differs: Callable[[KeyRange], bool], krange: KeyRange, rows_per_key: float) -> float:
    """Estimated share of the rows of ``krange`` that changed, from ``PROBES`` narrow key ranges
    spread over it (``differs`` compares one on both sides): with ``p`` of them differing, each of
    about ``r`` rows, a row changed with probability ``1 - (1 - p) ** (1 / r)``."""
    assert krange.lo is not None
    assert krange.hi is not None
    if rows_per_key <= 0:
        return 1.0  # no row to sample by (the descent hands over no empty range)
    # Exact for keys of any sparseness: random 64-bit ids hold about 1e-16 rows per key, and a
    # floor on rows_per_key made probes of a few billion keys that found no row, so no change.
    width = max(1, round(PROBE_ROWS / rows_per_key))
    if width * PROBES >= krange.span:
        return 1.0  # probes would cover the range: too small to sample, stream it
    step = krange.span // PROBES
    # One probe in each of PROBES equal parts, at a scattered offset (Knuth's multiplicative hash of
    # its number): probes a whole number of steps apart would see the same residue of a periodic
    # change pattern (every 100th key) and all differ, or all not.
    slack = max(1, step - width)
    starts = [krange.lo + i * step + (i * 2654435761) % slack for i in range(PROBES)]
    probes = [KeyRange(lo, lo + width) for lo in starts]
    share = sum(differs(probe) for probe in probes) / max(1, len(probes))
    rows = max(1.0, width * rows_per_key)
    return float(1.0 - (1.0 - min(share, 1.0)) ** (1.0 / rows))


class DenseLoader:
    """Stages every source row of densely changed ranges and finds the keys only the target holds."""

    def __init__(self, loader: RangeLoader) -> None:
        # The range loader holds the window's writer, window, chunk size, stats and timer: shared, not copied.
        self.loader = loader
        self.writer = loader.writer
        self.window = loader.window
        self.chunk_size = loader.chunk_size
        self.stats = loader.stats
        self.timed = loader.timed

    def load(self, source_conn: sa.Connection, krange: KeyRange) -> Iterator[list[tuple[Key, int]]]:
        """Stage the source's rows of ``krange``; then yield, a chunk at a time, ``(key, updated_at
        micros)`` of the target window's rows of ``krange`` whose key the source's window lacks."""
        stage = self.writer.dense_stage()
        with self.timed("stream_dense"):
            try:
                written = self.loader.stage_range(source_conn, krange, stage)
            except INTEGRITY_ERRORS as error:
                # Only once the stage's unique key index holds (a later range): a key the source
                # repeats. The window's transaction is lost; nothing was applied.
                source = self.loader.source
                raise DataError(
                    f"{source.name} has a duplicate key in the window {self.window} (columns "
                    f"{', '.join(map(repr, source.key_columns))}); the primary_key columns must be "
                    f"unique in the source ({error})"
                ) from error
        self.writer.staged_dense += written
        self.stats.ranges_dense += 1
        self.stats.rows_dense += written
        self.stats.rows_fetched += written
        with self.timed("dense_index"):
            self.writer.index_dense_stage()
        yield from self._target_only(stage, krange)

    def _target_only(self, stage: sa.Table, krange: KeyRange) -> Iterator[list[tuple[Key, int]]]:
        # Read on the writer's own session: the stage is private to it. Each chunk is read whole
        # before it is handed over, so the session is free for the per-key path's staging.
        target = self.writer.target
        key = target.keys[0]
        staged = sa.exists().where(stage.c[target.key_columns[0]] == key)
        after: Key | None = None
        while True:
            clause = sa.and_(range_clause(target, self.window, krange), ~staged)
            if after is not None:
                clause = sa.and_(clause, key > after)
            stmt = sa.select(key, target.ts_micros).where(clause).order_by(key).limit(self.chunk_size)
            with self.timed("dense_target_only"):
                rows = [(row[0], row[1]) for row in self.writer.conn.execute(stmt)]
            if rows:
                yield rows
            if len(rows) < self.chunk_size:
                return
            after = rows[-1][0]
