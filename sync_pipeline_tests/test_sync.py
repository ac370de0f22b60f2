"""The guarantees of one partition sync (SPEC section 4), on real databases.

Each test builds its source table with SQLAlchemy Core, lets ``sync_partition`` create the target, and
compares both sides by reading them back. Most tests run over engine pairs (source -> target) chosen so
that every engine is a source and a target at least once, including MariaDB -> PostgreSQL and
PostgreSQL -> SQLite. Chunk sizes are small so that chunking, batched lookups and the key-range descent
all run on a few hundred rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from sync_pipeline.config import TableConfig
from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    ALL_COUNTS,
    CHANGE_COUNTS,
    KEY_TEXT,
    NOTHING_CHANGED,
    TS,
    W_AFTER,
    W_BEFORE,
    Pair,
    W,
    all_counts,
    assert_same_rows,
    at,
    counts,
    delete,
    fingerprint,
    has_table,
    insert,
    items_table,
    make_pair,
    normalise,
    read_rows,
    stamp,
    table_config,
    update,
)

# -- builders of the items table (``pair``, the fixture most tests run on, is in conftest.py) ---------
ITEM_COLUMNS = ["id", "updated_at", "name", "qty"]


def item(i: int, ts: datetime | None, version: int = 0) -> dict[str, Any]:
    return {"id": i, "updated_at": ts, "name": f"item {i} v{version}", "qty": i * 10 + version}


def items_in(window: Window, ids: range | list[int], version: int = 0) -> list[dict[str, Any]]:
    return [item(i, stamp(window, i), version) for i in ids]


def create_items(pair: Pair, rows: list[dict[str, Any]]) -> sa.Table:
    table = items_table()
    table.create(pair.source.engine)
    insert(pair.source, table, rows)
    return table


def synced_items(pair: Pair, rows: list[dict[str, Any]], **options: Any) -> tuple[sa.Table, TableConfig]:
    """``items`` holding ``rows`` in the source, synced once (window W): what most tests then change.

    Returns the source table, to change, and the config (``options`` are its table settings).
    """
    table = create_items(pair, rows)
    config = table_config("items", **options)
    pair.sync(config)
    return table, config


def assert_items_equal(pair: Pair, where: Any = None) -> None:
    assert_same_rows(pair, "items", "items", ["id"], ITEM_COLUMNS, where=where)


# -- 4.1 exact values ---------------------------------------------------------------------------------


def all_types_table() -> sa.Table:
    return sa.Table(
        "all_types",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("big", sa.BigInteger),
        sa.Column("small", sa.SmallInteger),
        sa.Column("amount", sa.Numeric(38, 10)),
        sa.Column("ratio", sa.Double),
        sa.Column("label", sa.Text),
        sa.Column("short", sa.String(50)),
        sa.Column("doc", sa.JSON(none_as_null=True)),
        sa.Column("blob", sa.LargeBinary),
        sa.Column("happened_at", TS),
        sa.Column("flag", sa.Boolean),
        sa.Column("day", sa.Date),
    )


TYPE_COLUMNS = [column.name for column in all_types_table().columns]


def special_values(sqlite_involved: bool) -> list[dict[str, Any]]:
    """Five rows holding the edge values of every type, and a sixth NULL in every nullable column."""
    if sqlite_involved:
        # SQLite stores NUMERIC as REAL (a double): only values within 15 significant digits, whose
        # scale-10 rendering is exact, survive it. Servers get the full NUMERIC(38,10) range.
        decimals = [Decimal("12345.6789012345"), Decimal("-0.0000000001"), Decimal("99999.9999999999")]
    else:
        decimals = [
            Decimal("1234567890123456789012345678.0123456789"),
            Decimal("-0.0000000001"),
            Decimal("-9999999999999999999999999999.9999999999"),
        ]
    values: dict[str, list[Any]] = {
        "big": [-(2**63), 2**63 - 1, 0, 1, -1],
        "small": [-32768, 32767, 0, 7, -7],
        "amount": [*decimals, Decimal(0), Decimal("0.1")],
        "ratio": [0.1, -1.5e300, 3.141592653589793, 1.7976931348623157e308, 1e-300],
        "label": [
            "emoji 😀 family 👩\u200d👩\u200d👧 flag 🇯🇵",
            "中文 日本語 한국어",
            "العربية עברית",
            "combining e\u0301 vs \u00e9, a\u0308",
            "quotes ' \" ` \\ and\nnew line\ttab, trailing space ",
        ],
        "short": ["", "x", "é", "😀", "  "],  # "" is not NULL
        "doc": [
            {"nested": {"list": [1, 2, {"deep": None}], "float": 1.5, "big": 9007199254740993}},
            [1, "two", None, True, {"x": []}],
            {"unicode": "中文 😀 العربية", "key é": "e\u0301"},
            "just a string",  # JSON scalars: a string is not its own JSON text
            True,
        ],
        "blob": [b"\x00", b"\x00\xff\x00binary\x80", b"", bytes(range(256)), b"\x00\x00"],
        "happened_at": [
            datetime(2001, 2, 3, 4, 5, 6, 789012, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC),
            datetime(2026, 6, 1, 12, 0, 0, 999999, tzinfo=ZoneInfo("America/New_York")),
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(2026, 11, 30, 8, 0, tzinfo=UTC),
        ],
        "flag": [True, False, True, False, True],
        "day": [date(1970, 1, 1), date(2026, 2, 28), date(1900, 1, 1), date(9999, 12, 31), date(2000, 2, 29)],
    }
    rows = [
        {"id": i + 1, "updated_at": stamp(W, i + 1)} | {column: v[i] for column, v in values.items()}
        for i in range(5)
    ]
    rows.append({"id": 6, "updated_at": stamp(W, 6)} | dict.fromkeys(values))
    return rows


def filler_values(start: int, count: int) -> list[dict[str, Any]]:
    """Ordinary rows around the edge cases, so several chunks travel."""
    return [
        {
            "id": i,
            "updated_at": stamp(W, i),
            "big": i * 1_000_000_007,
            "small": i % 300,
            "amount": Decimal(i) / Decimal(8),
            "ratio": i / 7,
            "label": f"row {i} ✓",
            "short": f"s{i}",
            "doc": {"i": i, "tags": ["a", "b"][: i % 3]},
            "blob": i.to_bytes(4, "big"),
            "happened_at": stamp(W_BEFORE, i),
            "flag": i % 2 == 0,
            "day": date(2026, 1, 1) + timedelta(days=i),
        }
        for i in range(start, start + count)
    ]


def test_every_type_arrives_exact(pair: Pair) -> None:
    """SPEC 4.1: every synced column arrives with exactly the source's value.

    Integers up to the bigint extremes, exact decimals, floats bit for bit, text in several scripts
    (emoji, CJK, Arabic, combining characters), empty string distinct from NULL, JSON (nested,
    list, unicode, NULL), bytes including NUL bytes, aware timestamps with microseconds, booleans,
    dates, and a row that is NULL in every nullable column.
    """
    sqlite_involved = "sqlite" in (pair.source.kind, pair.target.kind)
    table = all_types_table()
    table.create(pair.source.engine)
    rows = special_values(sqlite_involved) + filler_values(100, 250)
    insert(pair.source, table, rows)

    stats = pair.sync(table_config("all_types"))

    assert counts(stats, *ALL_COUNTS) == all_counts(rows=len(rows), inserted=len(rows))
    assert stats.rows_fetched == len(rows)
    assert_same_rows(pair, "all_types", "all_types", ["id"], TYPE_COLUMNS, json_columns=["doc"])
    # The values the test wrote arrive, not merely "what a reading of the source gives": a lossy read
    # (a float rounded to 10 decimals, say) would be the same on both sides and go unnoticed above.
    target = read_rows(pair.target, "all_types", ["id"], TYPE_COLUMNS, json_columns=["doc"])
    for row in rows:
        assert target[row["id"]] == tuple(normalise(row[c]) for c in TYPE_COLUMNS)


# -- 4.1/4.2/4.5 inserts, updates, deletes, exact counts ----------------------------------------------
def test_inserts_updates_and_count_preserving_changes(pair: Pair) -> None:
    """SPEC 4.1, 4.2: inserts and updates are applied, and so is a change that keeps the row count.

    One insert plus one delete in the same window leaves the count equal (what the old count-based
    job missed); the sync still applies both. Every counter of the stats is exact.
    """
    create_items(pair, items_in(W, range(1, 301)) + items_in(W_BEFORE, range(1001, 1021)))
    config = table_config("items")
    first = pair.sync(config)
    assert counts(first, *ALL_COUNTS) == all_counts(rows=300, inserted=300)

    table = items_table()
    for i in range(1, 6):
        update(
            pair.source,
            table,
            table.c.id == i,
            updated_at=stamp(W, i) + timedelta(seconds=1),
            name=f"new {i}",
        )
    insert(pair.source, table, items_in(W, range(301, 305)))
    stats = pair.sync(config)
    assert counts(stats, *ALL_COUNTS) == all_counts(rows=304, inserted=4, updated=5, unchanged=295)
    assert stats.target_rows_before == 300
    assert_items_equal(pair, where=lambda t: t.c.id < 1000)

    # One insert and one delete: the window's count stays 304 on both sides.
    delete(pair.source, table, table.c.id == 100)
    insert(pair.source, table, items_in(W, [305]))
    stats = pair.sync(config)
    assert counts(stats, *ALL_COUNTS) == all_counts(rows=304, inserted=1, deleted=1, unchanged=303)
    assert stats.target_rows_before == 304
    assert_items_equal(pair, where=lambda t: t.c.id < 1000)


def test_late_commit_is_caught_by_a_resync(pair: Pair) -> None:
    """SPEC 4.10 (the sync's part): a row stamped inside an already-synced window lands on re-sync.

    A long transaction commits a row whose ``updated_at`` is earlier than the previous sync of the
    window; syncing the window again (what the lookback does) inserts exactly that row.
    """
    table, config = synced_items(pair, items_in(W, range(1, 101)))
    insert(pair.source, table, [item(500, at(W, 1))])
    stats = pair.sync(config)
    assert counts(stats, *ALL_COUNTS) == all_counts(rows=101, inserted=1, unchanged=100)
    assert_items_equal(pair)


# -- 4.2 rows that move between windows ----------------------------------------------------------------
# After the move W holds 49 rows and W_AFTER 51, on both sides; the first sync of either moves the row.
@pytest.mark.parametrize(
    ("first", "then", "moves"),
    [
        pytest.param((W_AFTER, 51), (W, 49), {"moved_in": 1, "moved_out": 0}, id="later_window_first"),
        pytest.param((W, 49), (W_AFTER, 51), {"moved_in": 0, "moved_out": 1}, id="earlier_window_first"),
    ],
)
def test_row_moved_to_later_window_is_never_lost(
    pair: Pair, first: tuple[Window, int], then: tuple[Window, int], moves: dict[str, int]
) -> None:
    """SPEC 4.2: a row updated into a later window ends with its current version, in either order.

    Syncing the later window first brings it in (``moved_in``); syncing the earlier window first
    finds it gone from there, looks it up in the whole source and updates it (``moved_out``), never
    deleting it. Both count as ``updated``, and the other window then has nothing to do.
    """
    table, config = synced_items(pair, items_in(W, range(1, 51)) + items_in(W_AFTER, range(51, 101)))
    pair.sync(config, W_AFTER)

    update(pair.source, table, table.c.id == 7, updated_at=stamp(W_AFTER, 500), name="moved", qty=-7)

    (first_window, first_rows), (then_window, then_rows) = first, then
    stats = pair.sync(config, first_window)
    assert counts(stats, *CHANGE_COUNTS, "moved_in", "moved_out") == {
        "inserted": 0,
        "updated": 1,
        "deleted": 0,
        **moves,
    }
    assert (stats.source_rows, stats.target_rows) == (first_rows, first_rows)
    again = pair.sync(config, then_window)
    assert counts(again, *CHANGE_COUNTS) == NOTHING_CHANGED
    assert (again.unchanged, again.source_rows, again.target_rows) == (then_rows, then_rows, then_rows)

    assert_items_equal(pair)
    moved = read_rows(pair.target, "items", ["id"], ITEM_COLUMNS)[7]
    assert moved[2:] == ("moved", -7)


# -- 4.2 deletes in each delete mode -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "deleted", "kept_deleted", "target_rows"),
    [("hard", 2, 0, 38), ("soft", 2, 0, 38), ("ignore", 0, 2, 40)],
    ids=["hard", "soft", "ignore"],
)
def test_deleted_source_row(pair: Pair, mode: str, deleted: int, kept_deleted: int, target_rows: int) -> None:
    """SPEC 4.2: a row gone from the whole source is deleted, marked deleted, or kept, per delete_mode.

    hard: deleted from the target. soft: ``soft_delete_column`` is set true, the row stays, and a
    second run reports nothing (a marked row is not in the target's window any more); a row that
    comes back in the source is revived. ignore: kept as it is and reported as ``kept_deleted``.
    """
    table, config = synced_items(pair, items_in(W, range(1, 41)), delete_mode=mode)
    delete(pair.source, table, table.c.id.in_([3, 4]))

    stats = pair.sync(config)
    assert counts(stats, *CHANGE_COUNTS, "kept_deleted") == {
        "inserted": 0,
        "updated": 0,
        "deleted": deleted,
        "kept_deleted": kept_deleted,
    }
    assert stats.target_rows == target_rows
    target = read_rows(pair.target, "items", ["id"], ITEM_COLUMNS)
    if mode == "hard":
        assert_items_equal(pair)
    elif mode == "soft":
        assert set(target) == set(range(1, 41))
        flags = read_rows(pair.target, "items", ["id"], ["id", "_sync_deleted"])
        assert {k for k, (_, flag) in flags.items() if flag} == {3, 4}
        assert_same_rows(pair, "items", "items", ["id"], ITEM_COLUMNS, where=lambda t: t.c.id.notin_([3, 4]))

        again = pair.sync(config)
        assert counts(again, *CHANGE_COUNTS) == NOTHING_CHANGED
        assert (again.unchanged, again.target_rows) == (38, 38)

        insert(pair.source, table, [item(3, stamp(W, 2000), version=9)])
        revived = pair.sync(config)
        assert counts(revived, *CHANGE_COUNTS) == {"inserted": 0, "updated": 1, "deleted": 0}
        flags = read_rows(pair.target, "items", ["id"], ["id", "_sync_deleted"])
        assert {k for k, (_, flag) in flags.items() if flag} == {4}
        assert_same_rows(pair, "items", "items", ["id"], ITEM_COLUMNS, where=lambda t: t.c.id != 4)
    else:
        assert set(target) == set(range(1, 41))
        assert target[3] == (3, stamp(W, 3), "item 3 v0", 30)


# -- 4.5 idempotence -----------------------------------------------------------------------------------
def test_second_run_writes_nothing(pair: Pair) -> None:
    """SPEC 4.5, 4.8: a second run with no source change writes nothing and reports 0 changes.

    The target is byte-for-byte the same (on PostgreSQL not even a new row version; on SQLite the
    same database file), and the run ends after one whole-window checksum without streaming a key.
    """
    _, config = synced_items(pair, items_in(W, range(1, 301)) + items_in(W_BEFORE, range(301, 331)))
    before = fingerprint(pair.target, "items", ["id"])

    stats = pair.sync(config)

    assert counts(stats, *ALL_COUNTS) == all_counts(rows=300, unchanged=300)
    assert (stats.keys_scanned, stats.ranges_compared, stats.rows_fetched) == (0, 1, 0)
    assert fingerprint(pair.target, "items", ["id"]) == before


# -- 4.3 rows outside the window ------------------------------------------------------------------------
def test_rows_outside_the_window_are_untouched(pair: Pair) -> None:
    """SPEC 4.3: the sync changes only rows of its window (and keys of S), nothing else.

    Target rows outside W with data that differs from the source (other windows, keys the source
    never had, a NULL ``updated_at``) survive a sync of W that inserts, updates and deletes.
    """
    table, config = synced_items(
        pair,
        items_in(W, range(1, 101)) + items_in(W_BEFORE, range(201, 221)) + items_in(W_AFTER, range(301, 321)),
    )

    target = items_table()
    outside = (
        [item(i, stamp(W_BEFORE, i), version=5) for i in range(201, 221)]
        + [item(i, stamp(W_AFTER, i), version=6) for i in range(301, 321)]
        + [item(i, at(W_BEFORE, 10), version=7) for i in range(901, 906)]
        + [item(950, None, version=8)]
    )
    insert(pair.target, target, outside)
    untouched = read_rows(pair.target, "items", ["id"], ITEM_COLUMNS, where=lambda t: t.c.id > 200)
    assert len(untouched) == len(outside)

    for i in range(1, 11):
        update(pair.source, table, table.c.id == i, updated_at=stamp(W, i + 1000), name=f"changed {i}")
    delete(pair.source, table, table.c.id.between(11, 15))
    insert(pair.source, table, items_in(W, range(101, 111)))
    stats = pair.sync(config)

    assert counts(stats, *ALL_COUNTS) == all_counts(
        rows=105, inserted=10, updated=10, deleted=5, unchanged=85
    )
    assert read_rows(pair.target, "items", ["id"], ITEM_COLUMNS, where=lambda t: t.c.id > 200) == untouched
    assert_same_rows(pair, "items", "items", ["id"], ITEM_COLUMNS, where=lambda t: t.c.id < 200)


# -- 4.7 NULL updated_at --------------------------------------------------------------------------------
def test_null_updated_at_rows_are_counted_not_synced_not_deleted(pair: Pair) -> None:
    """SPEC 4.7: rows with NULL ``updated_at`` belong to no window; they are counted, never lost.

    They are reported in ``null_updated_at`` and not copied; a target row whose source row's
    ``updated_at`` became NULL is left as it is, never deleted.
    """
    table = create_items(pair, items_in(W, range(1, 51)) + [item(i, None) for i in (51, 52, 53)])
    config = table_config("items")
    first = pair.sync(config)
    assert counts(first, "inserted", "null_updated_at", "source_rows", "target_rows") == {
        "inserted": 50,
        "null_updated_at": 3,
        "source_rows": 50,
        "target_rows": 50,
    }
    assert set(read_rows(pair.target, "items", ["id"], ["id"])) == set(range(1, 51))
    kept = read_rows(pair.target, "items", ["id"], ITEM_COLUMNS)

    update(pair.source, table, table.c.id.in_([5, 6]), updated_at=None, name="nulled")
    stats = pair.sync(config)
    assert counts(stats, *CHANGE_COUNTS, "null_updated_at", "kept_deleted") == {
        "inserted": 0,
        "updated": 0,
        "deleted": 0,
        "null_updated_at": 5,
        "kept_deleted": 0,
    }
    assert (stats.source_rows, stats.target_rows) == (48, 50)
    assert read_rows(pair.target, "items", ["id"], ITEM_COLUMNS) == kept


# -- 4.1/4.8 composite keys and collations -------------------------------------------------------------
CODES = ["a", "B", "b", "A", "Ä", "ä", "é", "e\u0301", "e", "z", "Z", "ß", "ss", "😀", "中", "Ω", "_", "0"]


def composite_table() -> sa.Table:
    return sa.Table(
        "composite",
        sa.MetaData(),
        sa.Column("tenant", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("code", KEY_TEXT, primary_key=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("payload", sa.Text),
    )


def test_composite_keys_with_collation_sensitive_text(pair: Pair) -> None:
    """SPEC 4.1, 4.2: a composite (integer, text) key works, whatever the engines' collations.

    Text keys that are equal or ordered differently under case- and accent-insensitive collations
    ("a", "B", "b", "Ä", "é" and a combining "é") stay distinct rows, the key streams of both sides
    merge in one (code point) order, and updates, inserts and deletes hit exactly their keys.
    """
    table = composite_table()
    table.create(pair.source.engine)
    codes = CODES + [f"k{i:03d}" for i in range(50)]
    rows = [
        {"tenant": t, "code": c, "updated_at": stamp(W, t * 1000 + n), "payload": f"{t}/{c}"}
        for t in (1, 2, 3)
        for n, c in enumerate(codes)
    ]
    insert(pair.source, table, rows)
    config = table_config("composite", primary_key=["tenant", "code"], chunk_size=50)
    columns = ["tenant", "code", "updated_at", "payload"]

    first = pair.sync(config)
    assert (first.inserted, first.source_rows, first.target_rows) == (len(rows), len(rows), len(rows))
    assert_same_rows(pair, "composite", "composite", ["tenant", "code"], columns)

    for code in ("b", "Ä", "e\u0301"):
        where = sa.and_(table.c.tenant == 2, table.c.code == code)
        update(pair.source, table, where, updated_at=at(W, 3500), payload=f"changed {code}")
    delete(pair.source, table, sa.and_(table.c.tenant == 1, table.c.code == "B"))
    insert(pair.source, table, [{"tenant": 3, "code": "äb", "updated_at": at(W, 3501), "payload": "new"}])
    stats = pair.sync(config)
    assert counts(stats, *ALL_COUNTS) == all_counts(
        rows=len(rows), inserted=1, updated=3, deleted=1, unchanged=len(rows) - 4
    )
    assert stats.rows_fetched == 4
    assert_same_rows(pair, "composite", "composite", ["tenant", "code"], columns)
    target = read_rows(pair.target, "composite", ["tenant", "code"], columns)
    assert target[(2, "b")][3] == "changed b"
    assert target[(2, "B")][3] == "2/B"
    assert target[(2, "é")][3] == "2/é"
    assert (1, "B") not in target
    assert (1, "b") in target

    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED


def test_text_keys_of_a_case_insensitive_mariadb_column(make_db_url: MakeDbUrl) -> None:
    """A MariaDB source whose text key has the database's default case- and accent-insensitive
    collation (utf8mb4_unicode_ci) syncs into PostgreSQL: the key stream is read in binary order,
    not in the column's collation order, so it merges with PostgreSQL's; changes land on their keys.
    """
    pair = make_pair(make_db_url, "mysql", "postgresql")
    table = sa.Table(
        "ci_keys",
        sa.MetaData(),
        sa.Column("code", sa.String(40), primary_key=True),  # the database default: utf8mb4_unicode_ci
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("payload", sa.Text),
    )
    table.create(pair.source.engine)
    # Distinct under unicode_ci, and ordered differently there ("a" < "B" < "é" < "Ö" < "z") than by
    # code point ("B" < "a" < "z" < "é" < "Ö").
    codes = ["B", "a", "Ö", "é", "z", "C", "_x", "中", "😀", *(f"K{i:02d}" for i in range(20))]
    rows = [{"code": c, "updated_at": stamp(W, n), "payload": c} for n, c in enumerate(codes)]
    insert(pair.source, table, rows)
    config = table_config("ci_keys", primary_key=["code"], chunk_size=3)
    columns = ["code", "updated_at", "payload"]

    assert pair.sync(config).inserted == len(codes)
    assert_same_rows(pair, "ci_keys", "ci_keys", ["code"], columns)

    update(pair.source, table, table.c.code == "é", updated_at=at(W, 3599), payload="changed")
    delete(pair.source, table, table.c.code == "B")
    insert(pair.source, table, [{"code": "b2", "updated_at": at(W, 3599), "payload": "new"}])
    stats = pair.sync(config)
    assert counts(stats, *CHANGE_COUNTS, "unchanged") == {
        "inserted": 1,
        "updated": 1,
        "deleted": 1,
        "unchanged": len(codes) - 2,
    }
    assert_same_rows(pair, "ci_keys", "ci_keys", ["code"], columns)


# -- identifiers -----------------------------------------------------------------------------------------
HOSTILE_TABLE = "we\"ird `tab`le 'ü' select"
HOSTILE_KEY = "order"
HOSTILE_TS = 'x"; DROP TABLE t; --'
HOSTILE_COLUMNS = ["select", "group", "col with space", 'quo"te', "back`tick", "it's", "ünï ✓"]


def hostile_table() -> sa.Table:
    return sa.Table(
        HOSTILE_TABLE,
        sa.MetaData(),
        sa.Column(HOSTILE_KEY, sa.Integer, primary_key=True, autoincrement=False),
        sa.Column(HOSTILE_TS, TS, nullable=False),
        *(sa.Column(name, sa.String(60)) for name in HOSTILE_COLUMNS),
    )


def sentinel_table() -> sa.Table:
    return sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True, autoincrement=False))


def test_hostile_identifiers(pair: Pair) -> None:
    """Identifiers are always quoted: names with spaces, quotes, backticks, unicode, reserved words
    and a SQL fragment (``x"; DROP TABLE t; --``) sync like any other, and no other table is touched.
    """
    for side in (pair.source, pair.target):
        sentinel_table().create(side.engine)
        insert(side, sentinel_table(), [{"id": 1}])
    table = hostile_table()
    table.create(pair.source.engine)

    def row(i: int, version: int = 0) -> dict[str, Any]:
        return {HOSTILE_KEY: i, HOSTILE_TS: stamp(W, i + version)} | {
            name: f"{name} {i} v{version}" for name in HOSTILE_COLUMNS
        }

    insert(pair.source, table, [row(i) for i in range(1, 151)])
    config = table_config(HOSTILE_TABLE, primary_key=[HOSTILE_KEY], updated_at=HOSTILE_TS)
    columns = [HOSTILE_KEY, HOSTILE_TS, *HOSTILE_COLUMNS]

    assert pair.sync(config).inserted == 150
    assert_same_rows(pair, HOSTILE_TABLE, HOSTILE_TABLE, [HOSTILE_KEY], columns)

    key = table.c[HOSTILE_KEY]
    update(pair.source, table, key == 10, **{HOSTILE_TS: stamp(W, 3000), "select": "new", "it's": "it's new"})
    delete(pair.source, table, key.in_([20, 21]))
    insert(pair.source, table, [row(200)])
    stats = pair.sync(config)
    assert counts(stats, *CHANGE_COUNTS) == {"inserted": 1, "updated": 1, "deleted": 2}
    assert_same_rows(pair, HOSTILE_TABLE, HOSTILE_TABLE, [HOSTILE_KEY], columns)
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED

    for side in (pair.source, pair.target):
        assert read_rows(side, "t", ["id"], ["id"]) == {1: (1,)}
        assert set(sa.inspect(side.engine).get_table_names()) == {"t", HOSTILE_TABLE}


# -- 4.9 never overwrite a newer version ----------------------------------------------------------------
def test_older_resync_never_overwrites_newer_target_rows(pair: Pair) -> None:
    """SPEC 4.9: where the target holds a newer version of a key, the sync leaves it and says so.

    One key's newer version is inside the window, another's in a later window; both are reported as
    ``skipped_newer`` and keep the target's values.
    """
    _, config = synced_items(pair, items_in(W, range(1, 31)))
    target = items_table()
    update(pair.target, target, target.c.id == 5, updated_at=at(W, 3500), name="newer in W", qty=-5)
    update(pair.target, target, target.c.id == 6, updated_at=at(W_AFTER, 10), name="newer in W+1", qty=-6)

    stats = pair.sync(config)

    assert counts(stats, *CHANGE_COUNTS, "skipped_newer", "unchanged") == {
        "inserted": 0,
        "updated": 0,
        "deleted": 0,
        "skipped_newer": 2,
        "unchanged": 28,
    }
    rows = read_rows(pair.target, "items", ["id"], ITEM_COLUMNS)
    assert rows[5] == (5, at(W, 3500), "newer in W", -5)
    assert rows[6] == (6, at(W_AFTER, 10), "newer in W+1", -6)
    assert_same_rows(pair, "items", "items", ["id"], ITEM_COLUMNS, where=lambda t: t.c.id.notin_([5, 6]))


# -- 4.8 only differing rows travel ---------------------------------------------------------------------
def test_only_differing_rows_travel(pair: Pair) -> None:
    """SPEC 4.8: changing 3 rows of a 5000-row window fetches exactly 3 rows.

    The key-range descent narrows the key stream to the ranges whose in-database count and hash
    differ (far fewer keys than the window holds); an unchanged window is settled by one
    whole-window checksum per side, without streaming a single key.
    """
    n = 5000
    table, config = synced_items(pair, items_in(W, range(1, n + 1)), chunk_size=100)

    for i in (10, 2500, 4990):
        update(
            pair.source, table, table.c.id == i, updated_at=stamp(W, i) + timedelta(microseconds=1), name="x"
        )
    stats = pair.sync(config)

    assert counts(stats, *ALL_COUNTS) == all_counts(rows=n, updated=3, unchanged=n - 3)
    assert stats.rows_fetched == 3
    assert stats.ranges_compared > 1
    assert 0 < stats.keys_scanned < n // 2, "only the differing key ranges are streamed"
    assert_items_equal(pair)

    unchanged = pair.sync(config)
    assert counts(unchanged, *CHANGE_COUNTS) == NOTHING_CHANGED
    assert (unchanged.keys_scanned, unchanged.ranges_compared, unchanged.rows_fetched) == (0, 1, 0)
    assert unchanged.unchanged == n


# -- 4.11 naive timestamps and precision -----------------------------------------------------------------
def stamped_table(name: str, updated_at: sa.types.TypeEngine[Any]) -> sa.Table:
    """``name`` (id, updated_at, name) with ``updated_at`` of the given type: a naive or coarse one."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", updated_at),
        sa.Column("name", sa.Text),
    )


def stamped_rows(stamps: dict[int, datetime]) -> list[dict[str, Any]]:
    """A row of :func:`stamped_table` for each ``id -> updated_at``."""
    return [{"id": i, "updated_at": ts, "name": f"n{i}"} for i, ts in stamps.items()]


def test_naive_source_timestamps_are_read_in_naive_timezone(make_db_url: MakeDbUrl) -> None:
    """SPEC 4.11: a naive ``updated_at`` is read in ``naive_timezone`` and windows are UTC.

    A PostgreSQL ``timestamp without time zone`` source read as Asia/Tokyo, synced into a timestamptz
    target: Tokyo 17:30 is 08:30 UTC and belongs to the 08:00 UTC window (17:00 Tokyo is its
    inclusive start, 18:00 its exclusive end); the target stores the instant.
    """
    pair = make_pair(make_db_url, "postgresql", "postgresql")
    source = stamped_table("naive", sa.DateTime(timezone=False))
    source.create(pair.source.engine)
    stamped_table("naive", sa.DateTime(timezone=True)).create(pair.target.engine)
    wall = {
        1: datetime(2026, 11, 30, 17, 30, 0, 123456),  # 08:30:00.123456 UTC: in W
        2: datetime(2026, 11, 30, 8, 30),  # 23:30 UTC the day before
        3: datetime(2026, 11, 30, 18, 0),  # 09:00 UTC: the next window
        4: datetime(2026, 11, 30, 17, 0),  # 08:00 UTC: W's first instant
    }
    insert(pair.source, source, stamped_rows(wall))
    config = table_config("naive", naive_timezone="Asia/Tokyo")

    stats = pair.sync(config)

    assert counts(stats, "inserted", "source_rows", "target_rows") == {
        "inserted": 2,
        "source_rows": 2,
        "target_rows": 2,
    }
    rows = read_rows(pair.target, "naive", ["id"], ["id", "updated_at", "name"])
    assert rows == {
        1: (1, datetime(2026, 11, 30, 8, 30, 0, 123456, tzinfo=UTC), "n1"),
        4: (4, datetime(2026, 11, 30, 8, 0, tzinfo=UTC), "n4"),
    }
    again = pair.sync(config)
    assert counts(again, *CHANGE_COUNTS, "unchanged") == {**NOTHING_CHANGED, "unchanged": 2}
    day_before = pair.sync(config, W.hour_starting(datetime(2026, 11, 29, 23, tzinfo=UTC)))
    assert day_before.inserted == 1
    assert read_rows(pair.target, "naive", ["id"], ["id", "updated_at"])[2] == (
        2,
        datetime(2026, 11, 29, 23, 30, tzinfo=UTC),
    )


@pytest.mark.parametrize("target_exists", [False, True], ids=["created_target", "microsecond_target"])
def test_precision_difference_is_not_a_change(make_db_url: MakeDbUrl, target_exists: bool) -> None:
    """SPEC 4.11: MariaDB DATETIME (whole seconds) -> PostgreSQL: precision differences are no change.

    A second run reports nothing to do; and a target that already holds the same rows stamped with
    microseconds within the same second is unchanged too (both sides compare at whole seconds).
    """
    pair = make_pair(make_db_url, "mysql", "postgresql")
    source = stamped_table("coarse", mysql.DATETIME())
    source.create(pair.source.engine)
    whole = {i: at(W, i * 7 % 3600) for i in range(1, 201)}
    insert(pair.source, source, stamped_rows(whole))
    config = table_config("coarse")
    if target_exists:
        target = stamped_table("coarse", sa.DateTime(timezone=True))
        target.create(pair.target.engine)
        fine = {i: ts + timedelta(microseconds=654321) for i, ts in whole.items()}
        insert(pair.target, target, stamped_rows(fine))
        stats = pair.sync(config)
        assert counts(stats, *CHANGE_COUNTS, "unchanged") == {**NOTHING_CHANGED, "unchanged": 200}
        return

    first = pair.sync(config)
    assert first.inserted == 200
    assert_same_rows(pair, "coarse", "coarse", ["id"], ["id", "updated_at", "name"])
    second = pair.sync(config)
    assert counts(second, *CHANGE_COUNTS, "unchanged", "keys_scanned") == {
        **NOTHING_CHANGED,
        "unchanged": 200,
        "keys_scanned": 0,
    }


# -- dry run ---------------------------------------------------------------------------------------------
def collector() -> tuple[list[tuple[str, Any]], Callable[[str, Any], None]]:
    seen: list[tuple[str, Any]] = []
    return seen, lambda kind, key: seen.append((kind, key))


def test_dry_run_into_missing_target_creates_nothing(pair: Pair) -> None:
    """A dry run writes nothing, not even the missing target table, and reports what a sync would do;
    ``on_change`` is told every key it would insert.
    """
    create_items(pair, items_in(W, range(1, 121)) + items_in(W_AFTER, range(200, 210)))
    seen, on_change = collector()

    stats = pair.sync(table_config("items"), dry_run=True, on_change=on_change)

    assert stats.dry_run
    assert counts(stats, *ALL_COUNTS) == all_counts(rows=120, inserted=120)
    assert not has_table(pair.target, "items")
    assert sorted(seen) == [("inserted", i) for i in range(1, 121)]


def test_dry_run_reports_changes_and_writes_nothing(pair: Pair) -> None:
    """A dry run against an existing target writes nothing and predicts the real run exactly.

    Its counts and the keys given to ``on_change`` (inserted, updated, deleted, moved) equal those
    of the real sync that follows.
    """
    table, config = synced_items(pair, items_in(W, range(1, 121)) + items_in(W_AFTER, range(200, 210)))
    pair.sync(config, W_AFTER)
    update(pair.source, table, table.c.id.in_([1, 2, 3]), updated_at=at(W, 3599), name="upd")
    update(pair.source, table, table.c.id == 4, updated_at=at(W_AFTER, 5), name="moved")
    delete(pair.source, table, table.c.id == 5)
    insert(pair.source, table, items_in(W, [150, 151]))
    before = fingerprint(pair.target, "items", ["id"])

    seen, on_change = collector()
    dry = pair.sync(config, dry_run=True, on_change=on_change)

    assert fingerprint(pair.target, "items", ["id"]) == before
    expected = all_counts(rows=120, inserted=2, updated=4, deleted=1, unchanged=115)
    assert counts(dry, *ALL_COUNTS) == expected
    assert dry.moved_out == 1
    assert sorted(seen) == sorted(
        [
            *[("inserted", 150), ("inserted", 151)],
            *[("updated", 1), ("updated", 2), ("updated", 3)],
            *[("moved_out", 4), ("deleted", 5)],
        ]
    )

    real_seen, real_on_change = collector()
    real = pair.sync(config, on_change=real_on_change)
    assert counts(real, *ALL_COUNTS) == expected
    assert sorted(real_seen) == sorted(seen)
    assert_items_equal(pair)


# -- 4.4 atomic commit -----------------------------------------------------------------------------------
def test_failure_midway_leaves_target_as_before(pair: Pair) -> None:
    """SPEC 4.4: a failure after some chunks were staged leaves the target exactly as before the run,
    and running again converges.
    """
    table, config = synced_items(pair, items_in(W, range(1, 601)), chunk_size=50)
    for start in range(1, 301, 50):
        ids = range(start, start + 25)
        update(pair.source, table, table.c.id.in_(ids), updated_at=at(W, 3599), name="changed")
    delete(pair.source, table, table.c.id.between(590, 600))
    insert(pair.source, table, items_in(W, range(700, 800)))
    before = fingerprint(pair.target, "items", ["id"])
    calls = 0

    def crash_on_third_chunk(_stats: SyncStats) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("simulated crash after staging two chunks")

    with pytest.raises(RuntimeError, match="simulated crash"):
        pair.sync(config, on_progress=crash_on_third_chunk)

    assert fingerprint(pair.target, "items", ["id"]) == before
    stats = pair.sync(config)
    assert counts(stats, *CHANGE_COUNTS) == {"inserted": 100, "updated": 150, "deleted": 11}
    assert_items_equal(pair)


@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [("postgresql", "postgresql"), ("sqlite", "mysql")],
    ids=["pg->pg", "sqlite->mysql"],
)
def test_failed_delete_rolls_back_the_upserts(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str
) -> None:
    """SPEC 4.4: upserts and deletes of a window commit together: when the delete statement fails
    (a foreign key in the target refuses it) the upserts already executed are rolled back too.
    """
    pair = make_pair(make_db_url, source_kind, target_kind)
    table, config = synced_items(pair, items_in(W, range(1, 101)))
    with pair.target.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE child (id INTEGER PRIMARY KEY, FOREIGN KEY (id) REFERENCES items (id))"
        )
        conn.exec_driver_sql("INSERT INTO child (id) VALUES (7)")
    update(pair.source, table, table.c.id.between(1, 5), updated_at=at(W, 3599), name="changed")
    delete(pair.source, table, table.c.id == 7)
    before = fingerprint(pair.target, "items", ["id"])

    with pytest.raises(sa.exc.IntegrityError):
        pair.sync(config)

    assert fingerprint(pair.target, "items", ["id"]) == before
    with pair.target.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE child")
    stats = pair.sync(config)
    assert counts(stats, *CHANGE_COUNTS) == {"inserted": 0, "updated": 5, "deleted": 1}
    assert_items_equal(pair)


# -- 4.6 concurrent runs ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [("sqlite", "postgresql"), ("postgresql", "mysql"), ("postgresql", "sqlite")],
    ids=["sqlite->pg", "pg->mysql", "pg->sqlite"],
)
@pytest.mark.parametrize("target_exists", [True, False], ids=["existing_target", "missing_target"])
def test_concurrent_runs_of_one_partition_do_not_interleave(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str, target_exists: bool
) -> None:
    """SPEC 4.6: two syncs of the same table and window started at once both succeed, one after the
    other: one applies every change, the other then finds nothing to do, and the target is right.
    """
    pair = make_pair(make_db_url, source_kind, target_kind)
    table = create_items(pair, items_in(W, range(1, 501)))
    config = table_config("items", chunk_size=50)
    new_rows, updated_rows = 500, 0
    if target_exists:
        pair.sync(config)
        update(pair.source, table, table.c.id <= 20, updated_at=at(W, 3599), name="changed")
        insert(pair.source, table, items_in(W, range(501, 801)))
        new_rows, updated_rows = 300, 20

    start = threading.Barrier(2)
    results: list[SyncStats] = []
    errors: list[BaseException] = []

    def slow_down(_stats: SyncStats) -> None:
        # The run doing the work holds its lock for a while (>= 10 chunks x 50 ms): the other one,
        # started at the same moment, is certainly waiting meanwhile. Without the lock both would
        # diff the same state and both report every change.
        time.sleep(0.05)

    def run() -> None:
        start.wait()
        try:
            results.append(pair.sync(config, on_progress=slow_down))
        except BaseException as error:  # noqa: BLE001 - reported to the main thread below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    assert len(results) == 2
    assert sum(r.inserted for r in results) == new_rows
    assert sum(r.updated for r in results) == updated_rows
    assert sorted(r.changed for r in results) == [0, new_rows + updated_rows]
    assert_items_equal(pair)
