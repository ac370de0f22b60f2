"""The dense-change path (issue 12): densely changed key ranges travel whole and are sorted set-based.

Where changes are spread over every key, the descent hands over ranges that are densely changed
rather than small. Their source rows stream into a stage by range (no key merged, no key looked up,
no row fetched by key), and the apply upserts only the rows that differ; the keys only the target's
window holds there go the per-key way, like the merge's. The counts must be exactly those of the
per-key path (a dry run still takes it: the tests compare both), the target must end equal to the
source, a target row newer than the source is never overwritten, and a second run writes nothing.
Run on every engine pair of the ``pair`` fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.dense import MIN_CHANGED_SHARE, changed_share
from sync_pipeline.engine.diff.segments import KeyRange
from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.plan import plan_sync
from sync_pipeline.engine.writer import PartitionWriter
from sync_pipeline.errors import DataError
from sync_pipeline_tests.helpers import (
    CHANGE_COUNTS,
    NOTHING_CHANGED,
    TS,
    W_AFTER,
    W_BEFORE,
    Pair,
    W,
    assert_same_rows,
    at,
    counts,
    delete,
    fingerprint,
    insert,
    items_table,
    read_rows,
    stamp,
    table_config,
    update,
)

COLUMNS = ["id", "updated_at", "name", "qty"]
DECIDED = ("inserted", "updated", "deleted", "unchanged", "moved_in", "moved_out", "skipped_newer")
# Keys whose target row is newer than the source's, on purpose: kept, so they differ.
KEPT_NEWER = (1, 6, 15)  # id % 100


def rows(ids: Iterable[int], window: Window) -> list[dict[str, Any]]:
    return [{"id": i, "updated_at": stamp(window, i), "name": f"item {i}", "qty": i} for i in ids]


def decided(stats: SyncStats) -> dict[str, int]:
    return counts(stats, *DECIDED)


def changed_everywhere(pair: Pair) -> sa.Table:
    """A synced window of 2,400 rows, then changes spread over every key of it (ids 1 to 3,000):

    * 900 rows updated (``id % 10`` in 1, 2, 3), of which 30 (``id % 100 == 1``) the target holds
      newer still (written there by someone else): kept;
    * 300 deleted (``id % 10 == 0``); 150 moved to the next hour (``id % 20 == 4``); 30 set back
      into the hour before (``id % 100 == 6``), whose target row is then newer: kept;
    * 150 moved in from the hour before (``id % 20 == 5``), and 30 more (``id % 100 == 15``) whose
      target row has since moved to the next hour, newer: kept;
    * 150 inserted (``id % 20 == 7``, keys between the others).
    """
    table = items_table()
    table.create(pair.source.engine)
    ids = range(1, 3001)
    insert(pair.source, table, rows((i for i in ids if i % 10 == 5), W_BEFORE))
    insert(pair.source, table, rows((i for i in ids if i % 10 not in (5, 7)), W))
    config = table_config("items", chunk_size=50)
    assert pair.sync(config, W_BEFORE).inserted == 300
    assert pair.sync(config).inserted == 2400

    c = table.c
    update(pair.source, table, c.id % 10 <= 3, updated_at=at(W, 3599.5), name="updated")
    delete(pair.source, table, c.id % 10 == 0)
    update(pair.source, table, c.id % 20 == 4, updated_at=at(W_AFTER, 10), name="moved out")
    update(pair.source, table, c.id % 100 == 6, updated_at=at(W_BEFORE, 5), name="set back")
    update(pair.source, table, c.id % 20 == 5, updated_at=at(W, 100), name="moved in")
    update(pair.source, table, c.id % 100 == 15, updated_at=at(W, 200), name="moved in, older")
    insert(pair.source, table, rows((i for i in ids if i % 20 == 7), W))
    target = items_table()
    update(pair.target, target, target.c.id % 100 == 1, updated_at=at(W, 3599.9), name="newer")
    update(pair.target, target, target.c.id % 100 == 15, updated_at=at(W_AFTER, 20), name="newer")
    return table


EXPECTED = {
    "inserted": 150,
    "updated": 870 + 150 + 150,  # updated in the window, moved in, moved out
    "deleted": 300,
    "unchanged": 870 + 150,  # id % 10 in 6, 8, 9 but not set back; id % 20 == 14
    "moved_in": 150,
    "moved_out": 150,
    "skipped_newer": 30 + 30 + 30,
}


def test_dense_changes_travel_by_range_with_the_per_key_paths_counts(pair: Pair) -> None:
    """Every key range differs: the window's source rows travel whole into the stage (no key merged),
    the apply counts exactly what the per-key path (a dry run) counts, the target ends equal to the
    source except the rows it holds newer (kept as they were), and a second run writes nothing."""
    changed_everywhere(pair)
    config = table_config("items", chunk_size=50)
    newer = read_rows(pair.target, "items", ["id"], COLUMNS, where=lambda t: t.c.id % 100 == 1)

    predicted = pair.sync(config, dry_run=True)
    stats = pair.sync(config)

    assert decided(predicted) == EXPECTED
    assert decided(stats) == EXPECTED
    assert stats.ranges_dense >= 1
    assert (stats.rows_dense, stats.keys_scanned) == (2250, 0)  # every source row of the window
    assert (stats.source_rows, stats.target_rows) == (2250, 2250)
    assert_same_rows(pair, "items", "items", ["id"], COLUMNS, where=lambda t: ~t.c.id.in_(_kept_ids()))
    assert read_rows(pair.target, "items", ["id"], COLUMNS, where=lambda t: t.c.id % 100 == 1) == newer

    stored = fingerprint(pair.target, "items", ["id"])
    again = pair.sync(config)
    assert counts(again, *CHANGE_COUNTS) == NOTHING_CHANGED
    assert again.skipped_newer == 90
    assert fingerprint(pair.target, "items", ["id"]) == stored


def _kept_ids() -> list[int]:
    return [i for i in range(1, 3001) if i % 100 in KEPT_NEWER]


def test_a_sparse_window_keeps_the_key_merge(pair: Pair) -> None:
    """A few changes in one small range: the descent narrows to it, and no range travels densely."""
    table = items_table()
    table.create(pair.source.engine)
    insert(pair.source, table, rows(range(1, 3001), W))
    config = table_config("items", chunk_size=50)
    pair.sync(config)
    update(pair.source, table, table.c.id.in_([1500, 1501]), updated_at=at(W, 3599.5))

    stats = pair.sync(config)

    assert (stats.updated, stats.unchanged) == (2, 2998)
    assert (stats.ranges_dense, stats.rows_dense) == (0, 0)
    assert 0 < stats.keys_scanned < 2 * 3000
    assert_same_rows(pair, "items", "items", ["id"], COLUMNS)


def test_the_changed_share_is_estimated_from_narrow_probes() -> None:
    """The descent calls a range dense whatever the share of its rows changed; the narrow probes tell
    1 row in 50 changed (the key merge keeps it) from 1 in 4 or every row (it travels whole)."""
    whole = KeyRange(0, 200_000)

    def changed_every(n: int) -> Callable[[KeyRange], bool]:
        def differs(probe: KeyRange) -> bool:
            assert probe.lo is not None
            assert probe.hi is not None
            return any(k % n == 1 for k in range(probe.lo, probe.hi))

        return differs

    assert changed_share(changed_every(50), whole, 1.0) < MIN_CHANGED_SHARE
    assert changed_share(changed_every(4), whole, 1.0) >= MIN_CHANGED_SHARE
    assert changed_share(lambda _: True, whole, 1.0) == 1.0
    assert changed_share(lambda _: False, whole, 1.0) == 0.0
    assert changed_share(lambda _: False, KeyRange(0, 100), 1.0) == 1.0  # too small to sample


@pytest.mark.parametrize(
    ("dense_ranges", "repeated", "pattern"),
    [
        # One densely changed range: its stage is indexed after it is loaded, and the repeated key
        # is named by the check of the staged keys.
        pytest.param(1, 1717, "duplicate key 1717 in the window", id="only-range"),
        # The key repeated in the second of two densely changed ranges (an unchanged stretch of keys
        # between them): the stage's unique key index already holds, so the repetition surfaces as
        # the COPY's (or insert's) unique violation, named with the table and its key columns (the
        # key itself only where the database's message names it).
        pytest.param(2, 5555, "duplicate key (5555 )?in the window", id="later-range"),
    ],
)
def test_a_repeated_key_in_a_dense_range_fails_and_writes_nothing(
    pair: Pair, dense_ranges: int, repeated: int, pattern: str
) -> None:
    """A source without a unique key holding one key twice in a window densely changed: the sync
    fails with a ``DataError`` naming the table, leaving the target as it was."""
    table = sa.Table(
        "unkeyed",
        sa.MetaData(),
        sa.Column("id", sa.Integer),
        sa.Column("updated_at", TS),
        sa.Column("name", sa.String(100)),
        sa.Column("qty", sa.Integer),
    )
    table.create(pair.source.engine)
    ids = 3000 * dense_ranges
    insert(pair.source, table, rows(range(1, ids + 1), W))
    config = table_config("unkeyed", chunk_size=50)
    assert pair.sync(config).inserted == ids
    # One range: every key changed. Two: the first and last thirds, the middle third unchanged.
    changed = table.c.id > 0 if dense_ranges == 1 else (table.c.id <= ids // 3) | (table.c.id > 2 * ids // 3)
    update(pair.source, table, changed, updated_at=at(W, 3599.5), name="updated")
    insert(pair.source, table, [{"id": repeated, "updated_at": at(W, 3599.6), "name": "again", "qty": 1}])
    before = fingerprint(pair.target, "unkeyed", ["id"])

    with pytest.raises(DataError, match=f"unkeyed.*{pattern}"):
        pair.sync(config)
    assert fingerprint(pair.target, "unkeyed", ["id"]) == before


def test_indexing_the_dense_stage_keeps_the_window_transaction_open(pair: Pair) -> None:
    """MySQL and MariaDB commit the open transaction at a CREATE INDEX, a temporary table's too: the
    dense stage's key index is declared with the table there, so a write the window's transaction
    made before the stage was indexed is still rolled back with it (SPEC 4.4)."""
    table = items_table()
    table.create(pair.source.engine)
    insert(pair.source, table, rows(range(1, 101), W))
    config = table_config("items", chunk_size=50)
    pair.sync(config)
    plan = plan_sync(config, pair.source.engine, pair.target.engine, create_target=False)
    assert plan.target is not None
    before = fingerprint(pair.target, "items", ["id"])

    with pair.target.engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(sa.delete(plan.target.table).where(plan.target.table.c.id <= 10))
        writer = PartitionWriter(conn, plan.target, plan.columns, W, None)
        stage = writer.dense_stage()
        conn.execute(
            stage.insert(), [{"id": i, "updated_at": at(W, i), "name": "x", "qty": i} for i in (1, 2)]
        )
        writer.index_dense_stage()
        transaction.rollback()

    assert fingerprint(pair.target, "items", ["id"]) == before
