"""Timestamps at the edges: repeated wall times at the end of summer time, and SQLite text forms.

A column storing wall times (SQLite text, MySQL DATETIME, PostgreSQL ``timestamp``) in a zone whose
clocks go back holds the hour before and the hour after as the same text: instants written there are
refused at validation rather than merged. SQLite keeps timestamps as whatever text (or number) the
application wrote; every row lands once in its true UTC hour, or is counted and reported.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.diff.window import Window, clocks_go_back
from sync_pipeline.engine.verify import verify_partition
from sync_pipeline.errors import SchemaError
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    NOTHING_CHANGED,
    TS,
    counts,
    has_table,
    insert,
    make_pair,
    table_config,
)

# The end of summer time in Berlin, 2026-10-25: 02:00-03:00 local happens twice, first at 00:00 UTC
# (CEST, +02:00), then at 01:00 UTC (CET, +01:00).
FIRST_TWO_AM = Window.hour_starting(datetime(2026, 10, 25, 0, tzinfo=UTC))
SECOND_TWO_AM = Window.hour_starting(datetime(2026, 10, 25, 1, tzinfo=UTC))


def _stamped(name: str, ts_type: sa.types.TypeEngine[object]) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", ts_type, nullable=False),
    )


def test_clocks_go_back_finds_the_end_of_summer_time() -> None:
    """Zones whose clocks go back are found (to the hour); zones that no longer change are not."""
    since = datetime(2026, 10, 1, tzinfo=UTC)
    assert clocks_go_back("Europe/Berlin", since) == datetime(2026, 10, 25, 1, tzinfo=UTC)
    assert clocks_go_back("America/New_York", since) == datetime(2026, 11, 1, 6, tzinfo=UTC)
    assert clocks_go_back("Asia/Shanghai", since) is None  # summer time ended in 1991
    assert clocks_go_back("Asia/Tokyo", since) is None
    assert clocks_go_back("UTC", since) is None


@pytest.mark.parametrize("target_kind", ["sqlite", "postgresql"])
def test_instants_into_wall_times_of_a_zone_whose_clocks_go_back_are_refused(
    make_db_url: MakeDbUrl, target_kind: str
) -> None:
    """Two instants an hour apart (00:30 and 01:30 UTC on 2026-10-25) are both 02:30 in Berlin: a
    target storing wall times cannot hold both. Refused at validation, naming the table, column and
    zone, with nothing written (not even the target table)."""
    pair = make_pair(make_db_url, "postgresql", target_kind)
    source = _stamped("events", TS)
    source.create(pair.source.engine)
    if target_kind == "postgresql":  # `timestamp without time zone`: wall times (SQLite's always are)
        _stamped("events", sa.DateTime(timezone=False)).create(pair.target.engine)
    insert(
        pair.source,
        source,
        [
            {"id": 1, "updated_at": datetime(2026, 10, 25, 0, 30, tzinfo=UTC)},
            {"id": 2, "updated_at": datetime(2026, 10, 25, 1, 30, tzinfo=UTC)},
        ],
    )
    config = table_config("events", naive_timezone="Europe/Berlin")

    for window in (FIRST_TWO_AM, SECOND_TWO_AM):
        with pytest.raises(SchemaError) as refused:
            pair.sync(config, window)
        message = str(refused.value)
        assert "target table 'events'" in message
        assert "column 'updated_at'" in message
        assert "naive_timezone 'Europe/Berlin' has repeated wall times" in message
        assert "use UTC" in message
    if target_kind == "sqlite":
        assert not has_table(pair.target, "events")
    else:
        with pair.target.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one() == 0


def test_wall_times_copied_from_wall_times_are_accepted_in_such_a_zone(make_db_url: MakeDbUrl) -> None:
    """Wall times into wall times keep what the source meant, repeated hour included: accepted, and a
    second run writes nothing (only instants into wall times are ambiguous)."""
    pair = make_pair(make_db_url, "sqlite", "sqlite")
    source = _stamped("events", sa.DateTime())
    source.create(pair.source.engine)
    insert(pair.source, source, [{"id": 1, "updated_at": datetime(2026, 10, 25, 2, 30)}])  # Berlin wall time
    config = table_config("events", naive_timezone="Europe/Berlin")

    # The wall-time window of 00:00-01:00 UTC is 02:00-02:00 in Berlin, and of 01:00-02:00 UTC it is
    # 02:00-03:00: the row lands once, in the second.
    first = [pair.sync(config, window) for window in (FIRST_TWO_AM, SECOND_TWO_AM)]
    assert [stats.inserted for stats in first] == [0, 1]
    for window in (FIRST_TWO_AM, SECOND_TWO_AM):
        assert counts(pair.sync(config, window), "inserted", "updated", "deleted") == NOTHING_CHANGED
        assert verify_partition(config, pair.source.url, pair.target.url, window).in_sync
