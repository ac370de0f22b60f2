"""Issue 13 defect 9: a source row whose ``updated_at`` moved backwards, and the whole-row repair.

The hourly sync never overwrites a target row newer than the source's (SPEC 4.9). But when rows are
compared whole (``compare="row"``: the drift repair), the source is the truth: the repair makes the
target equal to the source even where the source's ``updated_at`` went back, and verification (the
``in_sync`` check) fails for as long as such a row differs. Before the fix the repair reported
``updated=1`` on every run while the upsert's guard wrote nothing, and a row set back into an earlier
hour was counted as "moved out" by verification, so the check passed.
"""

from __future__ import annotations

import sqlalchemy as sa

from sync_pipeline.engine.verify import verify_partition
from sync_pipeline_tests.helpers import (
    CHANGE_COUNTS,
    NOTHING_CHANGED,
    W_BEFORE,
    Pair,
    W,
    assert_same_rows,
    at,
    counts,
    insert,
    items_table,
    table_config,
    update,
)

COLUMNS = ["id", "updated_at", "name", "qty"]
CONFIG = table_config("items", chunk_size=50)


def seeded(pair: Pair) -> sa.Table:
    """Rows 1..30 in W, synced; row 7 stamped late in the hour."""
    table = items_table()
    table.create(pair.source.engine)
    insert(
        pair.source,
        table,
        [
            {"id": i, "updated_at": at(W, 1800 if i == 7 else i), "name": f"n{i}", "qty": i}
            for i in range(1, 31)
        ],
    )
    assert pair.sync(CONFIG).inserted == 30
    return table


def in_sync(pair: Pair, window: object = W) -> bool:
    return verify_partition(CONFIG, pair.source.url, pair.target.url, window).in_sync  # type: ignore[arg-type]


def test_whole_row_repair_overwrites_a_row_whose_source_went_back_within_the_hour(pair: Pair) -> None:
    """Row 7 changes in the source with an earlier ``updated_at`` of the same hour: the hourly sync
    keeps the target's newer-stamped row and the check fails; the whole-row repair writes the source's
    row; then the check passes and another repair writes nothing."""
    table = seeded(pair)
    update(pair.source, table, table.c.id == 7, updated_at=at(W, 600), name="set back")

    hourly = pair.sync(CONFIG)
    assert (hourly.skipped_newer, hourly.changed) == (1, 0)
    assert not in_sync(pair)

    repair = pair.sync(CONFIG, compare="row")
    assert counts(repair, *CHANGE_COUNTS) == {"inserted": 0, "updated": 1, "deleted": 0}
    assert_same_rows(pair, "items", "items", ["id"], COLUMNS)
    assert in_sync(pair)
    assert counts(pair.sync(CONFIG, compare="row"), *CHANGE_COUNTS) == NOTHING_CHANGED


def test_row_set_back_into_an_earlier_hour_fails_the_check_until_repaired(pair: Pair) -> None:
    """Row 7 is set back into the hour before: verification of W counts it as differing (it did not
    move out to a later hour), and the whole-row repair of W gives the target the source's row."""
    table = seeded(pair)
    update(pair.source, table, table.c.id == 7, updated_at=at(W_BEFORE, 600), name="set back")

    assert not in_sync(pair)
    repair = pair.sync(CONFIG, compare="row")
    assert (repair.updated, repair.moved_out, repair.skipped_newer) == (1, 0, 0)
    assert_same_rows(pair, "items", "items", ["id"], COLUMNS)
    assert in_sync(pair)
    assert in_sync(pair, W_BEFORE)


def test_whole_row_repair_of_an_empty_window_overwrites_newer_rows_streamed_by_range(pair: Pair) -> None:
    """The hour before has never been synced (its target window is empty, so its rows travel by range):
    row 7 set back into it is kept newer by the hourly sync, and overwritten by the whole-row repair."""
    table = seeded(pair)
    update(pair.source, table, table.c.id == 7, updated_at=at(W_BEFORE, 600), name="set back")

    hourly = pair.sync(CONFIG, W_BEFORE)
    assert (hourly.rows_streamed, hourly.skipped_newer, hourly.changed) == (1, 1, 0)
    repair = pair.sync(CONFIG, W_BEFORE, compare="row")
    assert (repair.rows_streamed, repair.updated, repair.moved_in, repair.skipped_newer) == (1, 1, 1, 0)
    assert_same_rows(pair, "items", "items", ["id"], COLUMNS)
    assert in_sync(pair)
    assert in_sync(pair, W_BEFORE)
