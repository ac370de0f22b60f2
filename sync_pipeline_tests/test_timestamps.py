"""Timestamps at the edges: repeated wall times at the end of summer time, and SQLite text forms.

A column storing wall times (SQLite text, MySQL DATETIME, PostgreSQL ``timestamp``) in a zone whose
clocks go back holds the hour before and the hour after as the same text: instants written there are
refused at validation rather than merged. SQLite keeps timestamps as whatever text (or number) the
application wrote; every row lands once in its true UTC hour, or is counted and reported.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.diff.window import Window, clocks_go_back, in_zone
from sync_pipeline.engine.verify import verify_partition
from sync_pipeline.errors import SchemaError
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    NOTHING_CHANGED,
    TS,
    W_AFTER,
    W_BEFORE,
    W,
    counts,
    has_table,
    insert,
    make_pair,
    read_rows,
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


# SQLite text in the forms applications write: SQLAlchemy's, SQLite's datetime(), Python's
# isoformat(), JavaScript's toISOString(); an offset; a number. W is 2026-11-30 08:00-09:00 UTC.
SQLITE_FORMS: dict[int, object] = {
    1: "2026-11-30 08:05:00",  # SQLite's datetime()
    2: "2026-11-30T08:10:00",  # isoformat() of a naive datetime
    3: "2026-11-30T08:15:00.123Z",  # toISOString()
    4: "2026-11-30 08:20:00.123456+00:00",  # str() of an aware UTC datetime
    5: "2026-11-30 08:00",  # no seconds, the window's first instant
    6: "2026-11-30T10:25:00+02:00",  # 08:25 UTC, but 10:25 as text: counted in the 10:00 window
    7: 1_796_112_300,  # a number (epoch seconds?): in no window, counted in every one
    8: "2026-11-30T09:05:00",  # the next window
    9: "2026-11-30 07:59:59.999999",  # the window before
}


@pytest.mark.parametrize("target_kind", ["sqlite", "postgresql"])
def test_sqlite_text_timestamps_land_in_their_utc_hour_or_are_counted(
    make_db_url: MakeDbUrl, target_kind: str
) -> None:
    """Every ISO form of a wall time or a UTC instant lands once, in its true UTC hour, and arrives as
    that instant; a number or a non-zero offset is counted in ``unplaced_updated_at`` and not synced."""
    pair = make_pair(make_db_url, "sqlite", target_kind)
    _stamped("events", sa.DateTime()).create(pair.source.engine)
    with pair.source.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO events (id, updated_at) VALUES (?, ?)", list(SQLITE_FORMS.items()))
    config = table_config("events")

    first = pair.sync(config, W)
    assert counts(first, "inserted", "source_rows", "target_rows", "unplaced_updated_at") == {
        "inserted": 5,
        "source_rows": 5,
        "target_rows": 5,
        "unplaced_updated_at": 1,
    }
    stored = read_rows(pair.target, "events", ["id"], ["id", "updated_at"])
    assert {key: values[1] for key, values in stored.items()} == {
        1: datetime(2026, 11, 30, 8, 5, tzinfo=UTC),
        2: datetime(2026, 11, 30, 8, 10, tzinfo=UTC),
        3: datetime(2026, 11, 30, 8, 15, 0, 123000, tzinfo=UTC),
        4: datetime(2026, 11, 30, 8, 20, 0, 123456, tzinfo=UTC),
        5: datetime(2026, 11, 30, 8, 0, tzinfo=UTC),
    }
    again = pair.sync(config, W)
    assert counts(again, "inserted", "updated", "deleted") == NOTHING_CHANGED
    assert verify_partition(config, pair.source.url, pair.target.url, W).in_sync

    assert counts(pair.sync(config, W_AFTER), "inserted", "unplaced_updated_at") == {
        "inserted": 1,
        "unplaced_updated_at": 1,
    }
    assert counts(pair.sync(config, W_BEFORE), "inserted", "unplaced_updated_at") == {
        "inserted": 1,
        "unplaced_updated_at": 1,
    }
    ten = pair.sync(config, Window.from_partition_key("2026-11-30-10:00"))
    assert counts(ten, "inserted", "unplaced_updated_at") == {"inserted": 0, "unplaced_updated_at": 2}
    assert set(read_rows(pair.target, "events", ["id"], ["id"])) == {1, 2, 3, 4, 5, 8, 9}


@pytest.mark.parametrize(
    ("zone", "midnight"),
    [
        ("UTC", datetime(2026, 11, 30, 0, tzinfo=UTC)),
        # Midnight in India (+05:30) is 18:30 UTC the day before: inside an hour, not at its start.
        ("Asia/Kolkata", datetime(2026, 11, 29, 18, 30, tzinfo=UTC)),
    ],
)
@pytest.mark.parametrize("target_kind", ["sqlite", "postgresql"])
def test_a_sqlite_date_alone_lands_at_its_midnight(
    make_db_url: MakeDbUrl, target_kind: str, zone: str, midnight: datetime
) -> None:
    """A date alone ('2026-11-30') is the midnight that starts it in the table's naive zone, as
    Python and SQLite read it. As text it sorts just before '2026-11-30 00:00', inside the previous
    hour's range: it landed there, an hour early, with a midnight value that window does not hold.
    Now it lands once, in the hour holding its midnight, arrives as that instant, a second run
    writes nothing, verification passes, and it is in no other window nor counted as unplaced.

    The hours around midnight held more by text: '2026-11-30 12:00:00' is inside
    ['2026-11-29T23:00', '2026-11-30T00:00') (' ' < 'T'), and '2026-11-29T05:00:00' inside
    ['2026-11-29 23:00', '2026-11-30 00:00'): both landed in the hour before midnight as well."""
    pair = make_pair(make_db_url, "sqlite", target_kind)
    _stamped("events", sa.DateTime()).create(pair.source.engine)
    with pair.source.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO events (id, updated_at) VALUES (?, ?)",
            [(1, "2026-11-30"), (2, "2026-11-30 12:00:00"), (3, "2026-11-29T05:00:00")],
        )
    config = table_config("events", naive_timezone=zone)
    hour = Window.hour_starting(midnight.replace(minute=0))
    before = Window.hour_starting(hour.start - (hour.end - hour.start))
    after = Window.hour_starting(hour.end)

    assert counts(pair.sync(config, before), "inserted", "source_rows", "unplaced_updated_at") == {
        "inserted": 0,
        "source_rows": 0,
        "unplaced_updated_at": 0,
    }
    assert counts(pair.sync(config, hour), "inserted", "source_rows", "unplaced_updated_at") == {
        "inserted": 1,
        "source_rows": 1,
        "unplaced_updated_at": 0,
    }
    assert counts(pair.sync(config, after), "inserted", "source_rows") == {"inserted": 0, "source_rows": 0}
    stored = read_rows(pair.target, "events", ["id"], ["id", "updated_at"])
    # Both targets store wall times (SQLite text, PostgreSQL timestamp without time zone, as created
    # from a SQLite source): the midnight itself, which the test reads back as if UTC.
    assert stored[1][1] == datetime(2026, 11, 30, tzinfo=UTC)
    assert counts(pair.sync(config, hour), "inserted", "updated", "deleted") == NOTHING_CHANGED
    assert verify_partition(config, pair.source.url, pair.target.url, hour).in_sync


def test_a_wall_time_is_read_as_postgresql_reads_it_around_summer_time() -> None:
    """Naive wall times become instants as PostgreSQL's ``timezone(zone, ts)`` makes them, so that a
    SQLite side (and values converted in Python) agree with a PostgreSQL side to the microsecond: the
    repeated 02:30 of Berlin's autumn is the later instant (01:30 UTC, in the window that holds the
    wall time), the skipped 02:30 of spring takes the offset before the gap, other times are plain."""
    berlin = ZoneInfo("Europe/Berlin")
    assert in_zone(datetime(2026, 10, 25, 2, 30), berlin) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert in_zone(datetime(2026, 10, 25, 1, 59, 59), berlin) == datetime(
        2026, 10, 24, 23, 59, 59, tzinfo=UTC
    )
    assert in_zone(datetime(2026, 10, 25, 3, 0), berlin) == datetime(2026, 10, 25, 2, 0, tzinfo=UTC)
    assert in_zone(datetime(2026, 3, 29, 2, 30), berlin) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert in_zone(datetime(2026, 11, 30, 8, 5), ZoneInfo("UTC")) == datetime(2026, 11, 30, 8, 5, tzinfo=UTC)
