"""The dense-change path (issue 12) at the edges of real schemas: keys, timestamps, wide rows, values.

``test_dense.py`` proves the path's counts on the ``items`` table; here it meets what real tables
hold, on the engine pairs where each edge exists: integer keys at the extremes of their type
(random 64-bit ids, MariaDB ``BIGINT UNSIGNED`` up to 2**64 - 1, negative keys, gaps), ``updated_at``
on a change of summer time and on the window's edges to the microsecond, rows of a megabyte, and
NULLs, empty strings, odd text and JSON ``null`` in every column. Each test changes rows spread over
every key of a window of more than a descent's leaf (1,000 rows), so the ranges are densely changed
and their source rows travel whole (``rows_dense > 0``); then :func:`converges_densely` checks what
every such run must do: the counts equal those of a dry run (which takes the per-key path), the
target equals the source in every column, verification passes, and a second run writes nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from sync_pipeline.config import TableConfig
from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.engine.sync import sync_partition
from sync_pipeline.engine.verify import verify_partition
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    CHANGE_COUNTS,
    NOTHING_CHANGED,
    TS,
    W_AFTER,
    W_BEFORE,
    Pair,
    Side,
    W,
    assert_same_rows,
    at,
    counts,
    delete,
    fingerprint,
    insert,
    open_pair,
    reflect,
    stamp,
    storable,
    table_config,
    update,
)
from sync_pipeline_tests.test_memory import HOUR, STEP_BUDGET_KIB, _peak_kib

ENGINES = ("postgresql", "mysql", "sqlite")
ALL_PAIRS = [(s, t) for s in ENGINES for t in ENGINES]
DECIDED = ("inserted", "updated", "deleted", "unchanged", "moved_in", "moved_out", "skipped_newer")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@pytest.fixture(params=ALL_PAIRS, ids=[f"{s}->{t}" for s, t in ALL_PAIRS])
def any_pair(request: pytest.FixtureRequest, make_db_url: MakeDbUrl) -> Iterator[Pair]:
    """A fresh source and target of one of the nine engine pairs."""
    yield from open_pair(make_db_url, *request.param)


def converges_densely(
    pair: Pair,
    config: TableConfig,
    name: str,
    columns: Sequence[str],
    *,
    window: Window = W,
    json_columns: Sequence[str] = (),
    dense: bool = True,
) -> SyncStats:
    """Sync ``window`` of a densely changed table and check what the dense path must do.

    Some ranges travel whole (``rows_dense > 0``; none if not ``dense``: a key the descent cannot
    range over); the counts are a dry run's (the per-key path);
    the target ends equal to the source in every column of ``columns`` (``id`` the key);
    verification passes; a second run writes nothing, not even a row version.
    """
    predicted = pair.sync(config, window, dry_run=True)
    stats = pair.sync(config, window)
    assert (stats.rows_dense > 0) is dense, (
        f"dense path expected {dense}: {counts(stats, 'rows_dense', 'ranges_dense', 'keys_scanned')}"
    )
    assert counts(stats, *DECIDED) == counts(predicted, *DECIDED)
    assert (stats.source_rows, stats.target_rows) == (predicted.source_rows, predicted.target_rows)
    assert_same_rows(pair, name, name, ["id"], columns, json_columns=json_columns)
    assert verify_partition(config, pair.source.url, pair.target.url, window).in_sync

    stored = fingerprint(pair.target, name, ["id"])
    again = pair.sync(config, window)
    assert counts(again, *CHANGE_COUNTS) == NOTHING_CHANGED
    assert again.unchanged == stats.source_rows
    assert fingerprint(pair.target, name, ["id"]) == stored
    return stats


# -- integer keys ------------------------------------------------------------------------------------
def keyed_table(key: sa.types.TypeEngine[Any], ts: sa.types.TypeEngine[Any] = TS) -> sa.Table:
    return sa.Table(
        "keyed",
        sa.MetaData(),
        sa.Column("id", key, primary_key=True, autoincrement=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("val", sa.String(40)),
    )


KEYED_COLUMNS = ["id", "updated_at", "val"]


def change_spread_keys(pair: Pair, table: sa.Table, keys: list[int], new_keys: list[int]) -> None:
    """Write ``keys`` (every 13th in the hour before), sync both hours, then change rows spread over
    every key: a third updated, a seventh deleted, an eleventh moved to the next hour, the hour
    before's moved in, and ``new_keys`` inserted. Extremes (first and last keys) are updated."""
    config = table_config(table.name, chunk_size=50)
    before = {k for n, k in enumerate(keys) if n % 13 == 5}
    rows = [
        {"id": k, "updated_at": stamp(W_BEFORE if k in before else W, n), "val": f"v{n}"}
        for n, k in enumerate(keys)
    ]
    insert(pair.source, table, rows)
    assert pair.sync(config, W_BEFORE).inserted == len(before)
    assert pair.sync(config).inserted == len(keys) - len(before)

    c = table.c
    updated = [k for n, k in enumerate(keys) if n % 3 == 0 or n == len(keys) - 1]
    for part in _parts(updated):
        update(pair.source, table, c.id.in_(part), updated_at=at(W, 3599.25), val="updated")
    for part in _parts([k for k in keys[1::7] if k not in before]):
        delete(pair.source, table, c.id.in_(part))
    for part in _parts([k for n, k in enumerate(keys) if n % 11 == 2]):
        update(pair.source, table, c.id.in_(part), updated_at=at(W_AFTER, 1), val="moved out")
    for part in _parts(sorted(before)):
        update(pair.source, table, c.id.in_(part), updated_at=at(W, 7.5), val="moved in")
    insert(pair.source, table, [{"id": k, "updated_at": stamp(W, k % 3599), "val": "new"} for k in new_keys])


def _parts(keys: list[int], size: int = 400) -> Iterator[list[int]]:
    for i in range(0, len(keys), size):
        yield keys[i : i + size]


def random_int64(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return sorted({rng.randint(INT64_MIN, INT64_MAX) for _ in range(n)} | {INT64_MIN, INT64_MAX})


KEY_SETS: dict[str, tuple[sa.types.TypeEngine[Any], Callable[[], tuple[list[int], list[int]]]]] = {
    # Sparse over all of -2**63 .. 2**63 - 1, the type's extremes included: the descent halves the
    # range in Python, the probes of the changed share are as wide as a few rows, not a few keys.
    "random_int64": (sa.BigInteger(), lambda: (random_int64(1150, seed=12), random_int64(60, seed=13)[1:-1])),
    # Negative keys with gaps: holes of every size, one of 700 keys, the range's bound at -1.
    "negative_gaps": (
        sa.BigInteger(),
        lambda: (
            [k for k in range(-2600, 0) if k % 3 != 0 and not -1900 <= k < -1200],
            [k for k in range(-2600, 0) if k % 30 == 0],
        ),
    ),
    # INTEGER's extremes, spread evenly across the type: one past the largest key is no INTEGER.
    "int32_extremes": (
        sa.Integer(),
        lambda: (
            sorted({-(2**31) + i * 3_734_000 for i in range(1150)} | {-(2**31), 2**31 - 1}),
            [-(2**31) + i * 3_734_000 + 11 for i in range(0, 1150, 25)],
        ),
    ),
}


def test_random_64_bit_ids_and_the_types_extremes_take_the_dense_path(any_pair: Pair) -> None:
    """Keys over all of -2**63 .. 2**63 - 1, both extremes included, on every engine pair: densely
    changed ranges travel whole and are applied exactly (no overflow in a bound, a midpoint or a
    bucket), with the per-key path's counts, and a second run writes nothing.

    Failed before the changed share's probes were sized by rows rather than a floor of keys: probes
    a few billion keys wide found no row among 1e-16 a key, so no change, and the key merge kept
    every range."""
    _dense_integer_keys(any_pair, "random_int64")


@pytest.mark.parametrize("key_set", ["negative_gaps", "int32_extremes"])
def test_negative_keys_gaps_and_integers_extremes_take_the_dense_path(pair: Pair, key_set: str) -> None:
    """Negative keys with holes of every size, and INTEGER keys spread from -2**31 to 2**31 - 1: the
    same, on every engine as source and as target.

    INTEGER's extremes failed on PostgreSQL before its bucket queries computed ``key - lo`` in 64
    bits: ``integer out of range`` in the descent."""
    _dense_integer_keys(pair, key_set)


def _dense_integer_keys(pair: Pair, key_set: str) -> None:
    key_type, make_keys = KEY_SETS[key_set]
    keys, new_keys = make_keys()
    assert not set(keys) & set(new_keys)
    table = keyed_table(key_type)
    table.create(pair.source.engine)
    change_spread_keys(pair, table, keys, new_keys)

    stats = converges_densely(pair, table_config("keyed", chunk_size=50), "keyed", KEYED_COLUMNS)
    assert stats.inserted == len(new_keys)
    assert stats.deleted == len([n for n in range(len(keys)) if n % 7 == 1 and n % 13 != 5])


@pytest.mark.parametrize("target_kind", ["mysql", "postgresql"])
def test_bigint_unsigned_keys_up_to_2_64_take_the_dense_path_into_mariadb(
    make_db_url: MakeDbUrl, target_kind: str
) -> None:
    """MariaDB ``BIGINT UNSIGNED`` keys over all of 0 .. 2**64 - 1 (2**63 - 1, 2**63 and both ends
    included): into MariaDB the descent ranges over them and densely changed ranges travel whole
    (bounds and bucket offsets above 2**63 stay unsigned). Into PostgreSQL the key is NUMERIC(20,0),
    compared by streaming keys (README, "Supported types"): the key merge, with the same outcome."""
    rng = random.Random(64)
    ends = {0, 2**63 - 1, 2**63, 2**64 - 1}
    keys = sorted({rng.randint(0, 2**64 - 1) for _ in range(1150)} | ends)
    new_keys = sorted({rng.randint(0, 2**64 - 1) for _ in range(40)} - set(keys))
    for pair in open_pair(make_db_url, "mysql", target_kind):
        table = keyed_table(mysql.BIGINT(unsigned=True))
        table.create(pair.source.engine)
        change_spread_keys(pair, table, keys, new_keys)
        config = table_config("keyed", chunk_size=50)
        stats = converges_densely(pair, config, "keyed", KEYED_COLUMNS, dense=target_kind == "mysql")
        assert stats.inserted == len(new_keys)


# -- timestamps on a change of summer time, to the microsecond ------------------------------------------
# The end of summer time in Berlin, 2026-10-25: 02:00-03:00 local happens twice, first at 00:00 UTC
# (CEST, +02:00), then at 01:00 UTC (CET, +01:00). The instant of the change is 01:00 UTC.
FIRST_TWO_AM = Window.hour_starting(datetime(2026, 10, 25, 0, tzinfo=UTC))
SECOND_TWO_AM = Window.hour_starting(datetime(2026, 10, 25, 1, tzinfo=UTC))
THREE_AM = Window.hour_starting(datetime(2026, 10, 25, 2, tzinfo=UTC))
BERLIN = "Europe/Berlin"
MICRO = timedelta(microseconds=1)


def in_hour(window: Window, n: int) -> datetime:
    """A distinct instant of ``window`` with microseconds for row number ``n`` (the last µs included)."""
    return window.start + timedelta(microseconds=(n * 2_999_993_011) % 3_600_000_000)


def berlin_sessions(side: Side, name: str) -> None:
    """Make a PostgreSQL database's default zone Berlin, and the test's own session on it too: any
    session of the sync that did not set its zone would read and write in Berlin time."""
    if side.kind != "postgresql":
        return
    database = sa.make_url(side.url).database
    with side.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET timezone TO '{BERLIN}'")
    side.engine.dispose()
    side.engine = sa.create_engine(
        side.url, connect_args={"options": f"-c timezone={BERLIN}"}, poolclass=sa.pool.NullPool
    )
    with side.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW timezone").scalar_one() == BERLIN, name


DST_PAIRS = [
    ("postgresql", "postgresql"),
    ("postgresql", "mysql"),
    ("postgresql", "sqlite"),
    ("mysql", "postgresql"),
]


@pytest.mark.parametrize(("source_kind", "target_kind"), DST_PAIRS, ids=[f"{s}->{t}" for s, t in DST_PAIRS])
def test_instants_on_the_end_of_summer_time_take_the_dense_path(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str
) -> None:
    """The hour after Berlin's clocks went back (01:00-02:00 UTC, 02:00-03:00 local a second time),
    PostgreSQL databases whose default zone and test sessions are Berlin's: rows on the change's
    instant, on the window's first and last microsecond, moved out to the next window's first
    microsecond and in from the last of the hour before travel densely and land exactly; both
    neighbouring windows are then unchanged."""
    for pair in open_pair(make_db_url, source_kind, target_kind):
        berlin_sessions(pair.source, "source")
        berlin_sessions(pair.target, "target")
        table = keyed_table(sa.Integer())
        table.create(pair.source.engine)
        ids = range(1, 1301)
        first = [i for i in ids if i % 9 == 4]
        edges = {1: SECOND_TWO_AM.start, 2: SECOND_TWO_AM.end - MICRO, 3: FIRST_TWO_AM.end - MICRO}
        rows = [
            {
                "id": i,
                "updated_at": edges.get(i, in_hour(FIRST_TWO_AM if i in first else SECOND_TWO_AM, i)),
                "val": f"v{i}",
            }
            for i in ids
        ]
        insert(pair.source, table, rows)
        config = table_config("keyed", chunk_size=50)
        assert pair.sync(config, FIRST_TWO_AM).inserted == len(first) + 1  # and id 3, its last µs
        assert pair.sync(config, SECOND_TWO_AM).inserted == len(ids) - len(first) - 1

        c = table.c
        update(pair.source, table, (c.id % 3 == 0) & (c.id != 3), updated_at=SECOND_TWO_AM.end - MICRO)
        update(pair.source, table, c.id % 7 == 1, updated_at=THREE_AM.start, val="moved out")
        on_the_change = [i for i in first if i % 2]
        update(pair.source, table, c.id.in_(on_the_change), updated_at=SECOND_TWO_AM.start, val="moved in")
        later = [i for i in first if not i % 2]
        update(pair.source, table, c.id.in_(later), updated_at=SECOND_TWO_AM.start + MICRO, val="moved in")
        delete(pair.source, table, (c.id % 13 == 6) & ~c.id.in_([*first, 3]))
        insert(
            pair.source,
            table,
            [{"id": i, "updated_at": in_hour(SECOND_TWO_AM, i)} for i in range(1301, 1341)],
        )

        converges_densely(pair, config, "keyed", KEYED_COLUMNS, window=SECOND_TWO_AM)
        for window in (FIRST_TWO_AM, THREE_AM):
            assert counts(pair.sync(config, window), *CHANGE_COUNTS) == NOTHING_CHANGED
        assert_same_rows(pair, "keyed", "keyed", ["id"], KEYED_COLUMNS)


WALL_PAIRS = [
    ("sqlite", "sqlite"),
    ("sqlite", "postgresql"),
    ("postgresql", "postgresql"),
    ("postgresql", "sqlite"),
]


@pytest.mark.parametrize(("source_kind", "target_kind"), WALL_PAIRS, ids=[f"{s}->{t}" for s, t in WALL_PAIRS])
def test_wall_times_of_the_repeated_hour_take_the_dense_path(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str
) -> None:
    """Wall times (SQLite text, PostgreSQL ``timestamp``) read in Berlin time: the second 02:00-03:00
    window holds every wall time of that hour, from 02:00:00.000000 to 02:59:59.999999; rows moved to
    03:00:00 (the next window) and in from 01:59:59.999999 travel densely and land exactly, and the
    first 02:00 window (no wall time of its own) finds nothing to do."""
    wall = sa.DateTime(timezone=False)
    two, three = datetime(2026, 10, 25, 2), datetime(2026, 10, 25, 3)
    before = Window.hour_starting(datetime(2026, 10, 24, 23, tzinfo=UTC))  # 01:00-02:00 in Berlin
    for pair in open_pair(make_db_url, source_kind, target_kind):
        table = keyed_table(sa.Integer(), wall)
        table.create(pair.source.engine)
        ids = range(1, 1301)
        early = [i for i in ids if i % 9 == 4]
        edges = {1: two, 2: three - MICRO}
        walls = {i: two + (in_hour(W, i) - W.start) for i in ids} | {i: two - MICRO * i for i in early}
        rows = [{"id": i, "updated_at": edges.get(i, walls[i]), "val": f"v{i}"} for i in ids]
        insert(pair.source, table, rows)
        config = table_config("keyed", chunk_size=50, naive_timezone=BERLIN)
        assert pair.sync(config, before).inserted == len(early)
        assert pair.sync(config, SECOND_TWO_AM).inserted == len(ids) - len(early)

        c = table.c
        update(pair.source, table, c.id % 3 == 0, updated_at=three - MICRO)
        update(pair.source, table, c.id % 7 == 1, updated_at=three, val="moved out")
        update(pair.source, table, c.id.in_(early), updated_at=two, val="moved in")
        delete(pair.source, table, (c.id % 13 == 6) & ~c.id.in_(early))
        insert(pair.source, table, [{"id": i, "updated_at": two + MICRO * i} for i in range(1301, 1341)])

        converges_densely(pair, config, "keyed", KEYED_COLUMNS, window=SECOND_TWO_AM)
        assert counts(pair.sync(config, FIRST_TWO_AM), *CHANGE_COUNTS, "source_rows") == {
            **NOTHING_CHANGED,
            "source_rows": 0,
        }
        for window in (before, THREE_AM):
            assert counts(pair.sync(config, window), *CHANGE_COUNTS) == NOTHING_CHANGED
        assert_same_rows(pair, "keyed", "keyed", ["id"], KEYED_COLUMNS)


# -- NULLs, empty and odd values ----------------------------------------------------------------------
JSON_NULL = sa.JSON.NULL  # the JSON document ``null``, not SQL NULL (the column maps None to SQL NULL)
ODD_TEXT = [
    None,
    "",
    " ",
    "\\N",  # what text COPY reads as NULL
    "\\",
    "tab\there",
    "line\nbreak\r\nand return",
    "quote ' and \" and `",
    "日本語 😀 עברית e\u0301",
    "\u200b\ufeff",
    "null",
]
VALUE_CYCLES: dict[str, list[Any]] = {
    "txt": ODD_TEXT,
    "note": [*ODD_TEXT[1:], None, "x" * 5000],
    "qty": [None, 0, -1, 2**31 - 1, -(2**31)],
    "amount": [None, Decimal("0.00"), Decimal("-9999999999.99"), Decimal("0.01")],
    "ratio": [None, 0.0, -2.5, 1.7976931348623157e308, 0.1],
    "flag": [None, True, False],
    "doc": [None, JSON_NULL, {}, [], {"a": None, "b": [1, None, "x"]}, "text", 0, [None]],
    "data": [None, b"", b"\x00", bytes(range(256))],
    "day": [None, date(1970, 1, 1), date(2026, 2, 28), date(9999, 12, 31)],
}
VALUE_COLUMNS = ["id", "updated_at", *VALUE_CYCLES]


def values_table() -> sa.Table:
    return sa.Table(
        "vals",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("txt", sa.String(100)),
        sa.Column("note", sa.Text),
        sa.Column("qty", sa.Integer),
        sa.Column("amount", sa.Numeric(12, 2)),
        sa.Column("ratio", sa.Float(53).with_variant(mysql.DOUBLE(asdecimal=False), "mysql", "mariadb")),
        sa.Column("flag", sa.Boolean),
        sa.Column("doc", sa.JSON(none_as_null=True)),
        sa.Column("data", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")),
        sa.Column("day", sa.Date),
    )


def value_row(i: int, turn: int, updated_at: datetime) -> dict[str, Any]:
    """Row ``i``'s values: each column's cycle shifted by ``turn``, so an update turns NULL into a
    value, a value into NULL, JSON ``null`` into SQL NULL, an empty string into another."""
    row = {column: cycle[(i + turn) % len(cycle)] for column, cycle in VALUE_CYCLES.items()}
    return {"id": i, "updated_at": updated_at, **row}


def sql_nulls(side: Side) -> dict[str, set[int]]:
    """Per column, the keys whose value is SQL NULL (not JSON ``null``, which drivers read as None)."""
    table = reflect(side, "vals")
    nulls: dict[str, set[int]] = {column: set() for column in VALUE_CYCLES}
    flags = [sa.case((table.c[column].is_(None), 1), else_=0) for column in VALUE_CYCLES]
    with side.engine.connect() as conn:
        for key, *is_null in conn.execute(sa.select(table.c.id, *flags)):
            for column, flag in zip(VALUE_CYCLES, is_null, strict=True):
                if flag:
                    nulls[column].add(key)
    return nulls


def test_nulls_empty_and_odd_values_in_every_column_take_the_dense_path(pair: Pair) -> None:
    """SQL NULL in every nullable column, empty strings and bytes, text that COPY or a driver could
    misread (``\\N``, backslashes, tabs, line breaks, quotes, zero-width and combining characters),
    and JSON ``null`` beside SQL NULL: rows updated between all of these travel densely and arrive as
    they are; a JSON ``null`` stays a document and SQL NULL stays NULL."""
    table = values_table()
    table.create(pair.source.engine)
    ids = range(1, 1201)
    insert(pair.source, table, [value_row(i, 0, stamp(W, i)) for i in ids])
    config = table_config("vals", chunk_size=50)
    assert pair.sync(config).inserted == len(ids)

    changed = [value_row(i, 1, at(W, 3599.5)) for i in ids if i % 3 == 0 or i % 5 == 0]
    by_key = table.update().where(table.c.id == sa.bindparam("key"))
    by_key = by_key.values({c: sa.bindparam(f"new_{c}", type_=table.c[c].type) for c in VALUE_COLUMNS[1:]})
    with pair.source.engine.begin() as conn:
        conn.execute(
            by_key,
            [
                {"key": row["id"]} | {f"new_{c}": storable(pair.source, row[c]) for c in VALUE_COLUMNS[1:]}
                for row in changed
            ],
        )
    delete(pair.source, table, table.c.id % 11 == 4)
    insert(pair.source, table, [value_row(i, 2, stamp(W, i)) for i in range(1201, 1261)])

    converges_densely(pair, config, "vals", VALUE_COLUMNS, json_columns=["doc"])
    in_source, in_target = sql_nulls(pair.source), sql_nulls(pair.target)
    for column in VALUE_CYCLES:
        if column != "doc":
            assert in_target[column] == in_source[column], column
    # SQL NULL stays NULL. JSON null is read as None by every driver, so the rows that travel as
    # Python values write it as SQL NULL, and the comparisons read both alike (Adapter.json_text);
    # MySQL's printed text into PostgreSQL keeps the document. Either way nothing else turns NULL.
    source_nulls, target_nulls = in_source["doc"], in_target["doc"]
    assert source_nulls <= target_nulls
    json_nulls = {i for i in [*ids, *range(1201, 1261)] if _doc_is_json_null(i)}
    assert target_nulls - source_nulls <= json_nulls


def _doc_is_json_null(i: int) -> bool:
    """Whether the source's current row ``i`` holds the JSON document ``null`` (by how it was written)."""
    if i % 11 == 4 and i <= 1200:
        return False  # deleted
    turn = 2 if i > 1200 else 1 if i % 3 == 0 or i % 5 == 0 else 0
    return value_row(i, turn, W.start)["doc"] is JSON_NULL


# -- rows of a megabyte ---------------------------------------------------------------------------------
WIDE_EVERY = 6  # one row in six is about 1 MB: 200 MB in a window of 1,200 rows
_WIDE_ROWS = {
    "postgresql": (
        "CREATE TABLE wide (id bigint PRIMARY KEY, body text, data bytea, doc jsonb,"
        " updated_at timestamptz NOT NULL)",
        "INSERT INTO wide SELECT g,"
        " repeat(chr(97 + mod(g, 26)), CASE WHEN mod(g, {every}) = 0 THEN {text} ELSE 20 END),"
        " decode(repeat(lpad(to_hex(mod(g, 256)), 2, '0'),"
        " CASE WHEN mod(g, {every}) = 0 THEN {data} ELSE 4 END), 'hex'), jsonb_build_object('n', g, 'note',"
        " repeat('j', CASE WHEN mod(g, {every}) = 0 THEN {json} ELSE 3 END)),"
        " timestamptz '{hour}' + g * interval '1 second' FROM generate_series(1, {rows}) AS g",
        "UPDATE wide SET updated_at = updated_at + interval '1 second'",
    ),
    "mysql": (
        "CREATE TABLE wide (id BIGINT PRIMARY KEY, body LONGTEXT, data LONGBLOB, doc JSON,"
        " updated_at DATETIME(6) NOT NULL)",
        "INSERT INTO wide SELECT seq,"
        " REPEAT(CHAR(97 + MOD(seq, 26)), IF(MOD(seq, {every}) = 0, {text}, 20)),"
        " REPEAT(UNHEX(LPAD(HEX(MOD(seq, 256)), 2, '0')), IF(MOD(seq, {every}) = 0, {data}, 4)),"
        " JSON_OBJECT('n', seq, 'note', REPEAT('j', IF(MOD(seq, {every}) = 0, {json}, 3))),"
        " TIMESTAMP '{hour}' + INTERVAL seq SECOND FROM seq_1_to_{rows}",
        "UPDATE wide SET updated_at = updated_at + INTERVAL 1 SECOND",
    ),
}


def _execute_on(url: str, *statements: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [("mysql", "postgresql"), ("postgresql", "mysql")],
    ids=["mysql->postgresql", "postgresql->mysql"],
)
def test_rows_of_a_megabyte_on_the_dense_path_stay_within_the_step_budget(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str
) -> None:
    """Every row of a 1,200-row window changed, one in six of about 1 MB (200 MB in all): the window's
    rows travel densely (MariaDB's printed text into PostgreSQL's COPY; rows converted in batches
    into MariaDB), and the step process (memory_probe.py, Dagster's code location included) peaks
    under the 250 MiB budget of test_memory, bounded by the batch's bytes, not by the range. Then the
    window verifies, and a second run writes nothing."""
    source, target = make_db_url(source_kind, "wide_src"), make_db_url(target_kind, "wide_tgt")
    create, seed, touch = _WIDE_ROWS[source_kind]
    hour = HOUR if source_kind == "postgresql" else HOUR[:19].replace("T", " ")
    sizes = {"text": 512 * 1024, "data": 256 * 1024, "json": 256 * 1024}
    _execute_on(source, create, seed.format(every=WIDE_EVERY, hour=hour, rows=1200, **sizes))
    first = _peak_kib(source, target, 100, "--table", "wide")
    assert (first["inserted"], first["rows_dense"]) == (1200, 0)
    _execute_on(source, touch)

    changed = _peak_kib(source, target, 100, "--table", "wide")

    assert changed["updated"] == 1200, changed
    assert changed["rows_dense"] == 1200, changed
    assert changed["peak_kib"] < STEP_BUDGET_KIB, f"{changed['peak_kib'] / 1024:.0f} MiB: {changed}"
    config = table_config("wide", chunk_size=100)
    assert verify_partition(config, source, target, W).in_sync
    assert counts(sync_partition(config, source, target, W), *CHANGE_COUNTS) == NOTHING_CHANGED
