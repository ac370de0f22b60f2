"""One plan for many windows (engine.run_plan): a ranged run plans its table once, and every window
synced with that plan first proves that neither table changed since, on the real databases.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.run_plan import plan_run
from sync_pipeline.engine.sync import sync_partition
from sync_pipeline.errors import PlanOutdated
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    W_AFTER,
    W_BEFORE,
    Pair,
    Side,
    W,
    assert_same_rows,
    has_table,
    insert,
    items_table,
    make_pair,
    read_rows,
    reflect,
    stamp,
    table_config,
)

COLUMNS = ["id", "updated_at", "name", "qty"]


def _seed(pair: Pair) -> sa.Table:
    items = items_table()
    items.create(pair.source.engine)
    rows = [
        {"id": h * 100 + i, "updated_at": stamp(window, i), "name": f"n{h}-{i}", "qty": i}
        for h, window in enumerate((W_BEFORE, W, W_AFTER))
        for i in range(1, 6)
    ]
    insert(pair.source, items, rows)
    return items


def _keys(side: Side) -> set[int]:
    return {int(k) for k in read_rows(side, "items", ["id"], ["id"])}


def test_windows_synced_with_one_run_plan_are_not_planned_again(pair: Pair) -> None:
    """The run's plan creates the target; three windows synced with it each check the plan (a
    ``plan_check`` phase) instead of planning (no ``plan`` phase), and end equal to the source."""
    _seed(pair)
    config = table_config("items")
    plan = plan_run(config, pair.source.url, pair.target.url)
    assert has_table(pair.target, "items")

    for window in (W_BEFORE, W, W_AFTER):
        stats = sync_partition(config, pair.source.url, pair.target.url, window, plan=plan)
        assert stats.inserted == 5
        assert "plan_check" in stats.timings
        assert "plan" not in stats.timings
    assert_same_rows(pair, "items", "items", ["id"], COLUMNS)


def test_a_plan_is_refused_for_other_databases(pair: Pair) -> None:
    _seed(pair)
    config = table_config("items")
    plan = plan_run(config, pair.source.url, pair.target.url)
    with pytest.raises(ValueError, match="other databases"):
        sync_partition(config, pair.target.url, pair.source.url, W, plan=plan)


def test_a_column_added_after_the_plan_fails_the_window_naming_table_and_column(pair: Pair) -> None:
    """A column added to the source between two windows: the second window's sync fails before
    writing anything, naming the source table and the column; a new plan syncs it, column included."""
    _seed(pair)
    config = table_config("items")
    plan = plan_run(config, pair.source.url, pair.target.url)
    sync_partition(config, pair.source.url, pair.target.url, W_BEFORE, plan=plan)
    with pair.source.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE items ADD COLUMN extra INTEGER")
        conn.exec_driver_sql("UPDATE items SET extra = qty * 10")

    with pytest.raises(PlanOutdated, match=r"source table 'items'.*column 'extra' added"):
        sync_partition(config, pair.source.url, pair.target.url, W, plan=plan)
    assert _keys(pair.target) == {1, 2, 3, 4, 5}  # W_BEFORE's rows only: nothing of W written

    replanned = plan_run(config, pair.source.url, pair.target.url)
    assert replanned.plan.added_columns == ["extra"]
    for window in (W, W_AFTER):
        stats = sync_partition(config, pair.source.url, pair.target.url, window, plan=replanned)
        assert stats.inserted == 5
    # The rows of the hour synced before the column existed are compared whole by the new plan's
    # windows only; W_BEFORE is synced again here as a later hour of the run would be.
    sync_partition(config, pair.source.url, pair.target.url, W_BEFORE, plan=replanned)
    assert_same_rows(pair, "items", "items", ["id"], [*COLUMNS, "extra"])


def test_a_type_change_a_binary_copy_would_not_notice_fails_the_window(make_db_url: MakeDbUrl) -> None:
    """PostgreSQL to PostgreSQL, the source's ``updated_at`` turned from ``timestamptz`` into a wall-time
    ``timestamp`` after the plan: both are 8 bytes in a binary COPY, so a blindly reused plan would copy
    wall times as instants. The window fails naming the column and both types; nothing is written."""
    pair = make_pair(make_db_url, "postgresql", "postgresql")
    _seed(pair)
    config = table_config("items")
    plan = plan_run(config, pair.source.url, pair.target.url)
    with pair.source.engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE items ALTER COLUMN updated_at TYPE timestamp"
            " USING updated_at AT TIME ZONE 'Asia/Tokyo'"
        )
    with pytest.raises(
        PlanOutdated, match=r"column 'updated_at' was TIMESTAMP\(timezone=True\), now TIMESTAMP"
    ):
        sync_partition(config, pair.source.url, pair.target.url, W, plan=plan)
    assert _keys(pair.target) == set()
    pair.source.engine.dispose()
    pair.target.engine.dispose()


def test_a_target_dropped_after_the_plan_fails_the_window_and_a_new_plan_recreates_it(pair: Pair) -> None:
    _seed(pair)
    config = table_config("items")
    plan = plan_run(config, pair.source.url, pair.target.url)
    sync_partition(config, pair.source.url, pair.target.url, W_BEFORE, plan=plan)
    reflect(pair.target, "items").drop(pair.target.engine)

    with pytest.raises(PlanOutdated, match=r"target table 'items'.*no longer exists"):
        sync_partition(config, pair.source.url, pair.target.url, W, plan=plan)
    assert not has_table(pair.target, "items")

    replanned = plan_run(config, pair.source.url, pair.target.url)
    sync_partition(config, pair.source.url, pair.target.url, W, plan=replanned)
    assert _keys(pair.target) == {101, 102, 103, 104, 105}
    assert_same_rows(pair, "items", "items", ["id"], COLUMNS, where=lambda t: t.c.id.between(100, 199))
