"""Hostile values and broken source data, on real databases.

Values at the edges of what each engine holds (control characters, NUL, megabytes of text, NaN and
infinities, the extremes of NUMERIC(38,10) and bigint, years 1 and 9999, empty string against NULL)
either arrive exactly or fail the sync with a ``DataError`` naming the table and column, before
anything is written. Source data that breaks the sync's assumptions (duplicate keys in a table
without a unique constraint, a NULL key) fails the same way, never half-applied and never silently
skipped. Identifiers are covered by ``test_sync.py::test_hostile_identifiers``.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from sync_pipeline.errors import DataError, SchemaError
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    CHANGE_COUNTS,
    KEY_TEXT,
    NOTHING_CHANGED,
    TS,
    W_AFTER,
    Pair,
    Side,
    W,
    assert_same_rows,
    counts,
    fingerprint,
    has_table,
    insert,
    make_pair,
    read_rows,
    stamp,
    table_config,
    update,
)

CONTROL = "".join(chr(c) for c in range(1, 32))  # every C0 control character but NUL
# TEXT on MariaDB holds 64 KiB; LONGTEXT 4 GiB.
LONG_TEXT: sa.types.TypeEngine[Any] = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def pair_params(*pairs: tuple[str, str]) -> Any:
    return pytest.mark.parametrize(("source_kind", "target_kind"), pairs, ids=[f"{s}->{t}" for s, t in pairs])


def values_table(name: str, *columns: sa.Column[Any]) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", TS, nullable=False),
        *columns,
    )


def bump(i: int) -> datetime:
    """A later in-window ``updated_at`` than ``stamp(W, i)``: the row counts as changed."""
    return stamp(W, i) + timedelta(seconds=1)


# -- text ---------------------------------------------------------------------------------------------
def texts_table() -> sa.Table:
    return sa.Table(
        "texts",
        sa.MetaData(),
        sa.Column("code", KEY_TEXT, primary_key=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("body", LONG_TEXT),
        sa.Column("note", sa.String(50)),
    )


# Keys made of control characters, the empty string, and prefixes of each other: binary (code point)
# order puts "a" before "a\x01", which a PAD SPACE collation (MariaDB's utf8mb4_bin) does not.
CODES = ["", "\x01", "\t", "\n", "\r\n", "\x1f", " x", "a", "a\x01", "a\x1f", "a\tb", "a b", "b", CONTROL]


def test_control_characters_empty_strings_and_nulls_arrive_exact(pair: Pair) -> None:
    """Text with every control character (\\x01..\\x1f) arrives exactly, in values and in keys; the
    empty string stays distinct from NULL both ways; changes that only swap "" and NULL are synced;
    a second run finds nothing to do.
    """
    table = texts_table()
    table.create(pair.source.engine)
    bodies = [CONTROL, "line\r\nnext", "\x1b[31mred\x1b[0m", "\x7f\x08back", "", None, " ", "\t\n"]
    rows = [
        {"code": code, "updated_at": stamp(W, n), "body": bodies[n % len(bodies)], "note": [None, ""][n % 2]}
        for n, code in enumerate(CODES)
    ]
    insert(pair.source, table, rows)
    config = table_config("texts", primary_key=["code"])
    columns = ["code", "updated_at", "body", "note"]

    assert pair.sync(config).inserted == len(CODES)
    assert_same_rows(pair, "texts", "texts", ["code"], columns)
    target = read_rows(pair.target, "texts", ["code"], columns)
    for row in rows:
        assert target[row["code"]][2:] == (row["body"], row["note"]), repr(row["code"])

    # "" -> NULL and NULL -> "" (nothing else changes), a key of control characters goes, one comes.
    update(pair.source, table, table.c.code == "", updated_at=bump(0), note="")
    update(pair.source, table, table.c.code == "\x01", updated_at=bump(1), note=None, body=None)
    update(pair.source, table, table.c.code == "a", updated_at=bump(7), body="")
    with pair.source.engine.begin() as conn:
        conn.execute(table.delete().where(table.c.code == "a\x1f"))
    insert(pair.source, table, [{"code": "\x02\x03", "updated_at": bump(3), "body": CONTROL, "note": ""}])
    stats = pair.sync(config)

    assert counts(stats, *CHANGE_COUNTS) == {"inserted": 1, "updated": 3, "deleted": 1}
    assert_same_rows(pair, "texts", "texts", ["code"], columns)
    target = read_rows(pair.target, "texts", ["code"], columns)
    assert target[""][3] == ""
    assert target["\x01"][2:] == (None, None)
    assert target["a"][2] == ""
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED


@pair_params(("mysql", "postgresql"), ("sqlite", "postgresql"), ("mysql", "sqlite"), ("sqlite", "mysql"))
def test_nul_character_arrives_or_fails_naming_the_column(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str
) -> None:
    """A NUL character (\\x00) in text arrives exactly where the target holds it (MariaDB, SQLite).
    PostgreSQL text cannot hold NUL: the sync fails with a ``DataError`` naming the target table and
    the column, and writes nothing (not even the other rows of the run).
    """
    pair = make_pair(make_db_url, source_kind, target_kind)
    table = values_table("nul", sa.Column("body", LONG_TEXT))
    table.create(pair.source.engine)
    insert(
        pair.source, table, [{"id": i, "updated_at": stamp(W, i), "body": f"row {i}"} for i in range(1, 11)]
    )
    config = table_config("nul")
    pair.sync(config)
    insert(pair.source, table, [{"id": 11, "updated_at": stamp(W, 11), "body": "ok"}])
    update(pair.source, table, table.c.id == 3, updated_at=bump(3), body="a\x00b\x00")

    if target_kind == "postgresql":
        before = fingerprint(pair.target, "nul", ["id"])
        with pytest.raises(DataError, match=r"target table 'nul' .*column 'body'.*NUL"):
            pair.sync(config)
        assert fingerprint(pair.target, "nul", ["id"]) == before
        return
    assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 1, "updated": 1, "deleted": 0}
    assert read_rows(pair.target, "nul", ["id"], ["id", "body"])[3] == (3, "a\x00b\x00")
    assert_same_rows(pair, "nul", "nul", ["id"], ["id", "updated_at", "body"])


def sha(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


@pytest.mark.slow
@pair_params(
    ("postgresql", "postgresql"),
    ("mysql", "postgresql"),
    ("postgresql", "mysql"),
    ("postgresql", "sqlite"),
    ("sqlite", "mysql"),
)
def test_very_long_text_arrives_exact(make_db_url: MakeDbUrl, source_kind: str, target_kind: str) -> None:
    """Text values of 1 MiB (four scripts and emoji) and 10 MB arrive exactly, and so does an update
    that appends to one; a second run finds nothing to do.
    """
    pair = make_pair(make_db_url, source_kind, target_kind)
    table = values_table("long", sa.Column("body", LONG_TEXT))
    table.create(pair.source.engine)
    mixed = ("中文 😀 العربية é\x01 " * 60_000)[: 1 << 20]
    big = ("0123456789abcdef" * 625_000) + "😀"  # 10 MB and a 4-byte character at the end
    bodies = {1: mixed, 2: big, 3: "short", 4: big[::-1]}
    insert(pair.source, table, [{"id": i, "updated_at": stamp(W, i), "body": b} for i, b in bodies.items()])
    config = table_config("long", chunk_size=2)

    assert pair.sync(config).inserted == 4
    assert {k: sha(v[1]) for k, v in read_rows(pair.target, "long", ["id"], ["id", "body"]).items()} == {
        i: sha(b) for i, b in bodies.items()
    }
    update(pair.source, table, table.c.id == 2, updated_at=bump(2), body=big + "tail")
    assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 0, "updated": 1, "deleted": 0}
    assert sha(read_rows(pair.target, "long", ["id"], ["id", "body"])[2][1]) == sha(big + "tail")
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED


# -- floats and numerics ------------------------------------------------------------------------------
def floats_table() -> sa.Table:
    # An unconstrained numeric: PostgreSQL refuses an infinity in a NUMERIC(p, s).
    return values_table("floats", sa.Column("ratio", sa.Double), sa.Column("amount", sa.Numeric()))


NAN, INF = float("nan"), float("inf")


def same_float(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, Decimal) and isinstance(b, Decimal) and a.is_nan():
        return b.is_nan()
    return bool(a == b)


@pytest.mark.parametrize(
    ("target_kind", "column", "value", "stored"),
    [
        ("postgresql", "ratio", NAN, True),
        ("postgresql", "ratio", INF, True),
        ("postgresql", "ratio", -INF, True),
        ("postgresql", "amount", Decimal("NaN"), True),
        ("postgresql", "amount", Decimal("-Infinity"), True),
        ("sqlite", "ratio", INF, True),
        ("sqlite", "ratio", -INF, True),
        ("sqlite", "ratio", NAN, False),  # SQLite would store NULL
        ("sqlite", "amount", Decimal("NaN"), False),
        ("mysql", "ratio", NAN, False),  # MariaDB numbers have no NaN or infinity
        ("mysql", "ratio", INF, False),
        ("mysql", "ratio", -INF, False),
        ("mysql", "amount", Decimal("Infinity"), False),
    ],
    ids=lambda v: str(v),
)
def test_nan_and_infinity_arrive_or_fail_naming_the_column(
    make_db_url: MakeDbUrl, target_kind: str, column: str, value: Any, stored: bool
) -> None:
    """NaN and ±infinity from PostgreSQL (double precision and numeric) arrive exactly where the
    target holds them (PostgreSQL; SQLite holds the infinities). Where it cannot (MariaDB has neither;
    SQLite turns NaN into NULL), the sync fails with a ``DataError`` naming the target table, the
    column and the value, having written nothing; once the source value is fixed, the next run syncs.
    """
    pair = make_pair(make_db_url, "postgresql", target_kind)
    table = floats_table()
    table.create(pair.source.engine)
    insert(
        pair.source,
        table,
        [{"id": i, "updated_at": stamp(W, i), "ratio": i / 3, "amount": i} for i in range(1, 6)],
    )
    config = table_config("floats")
    pair.sync(config)
    update(pair.source, table, table.c.id == 2, updated_at=bump(2), **{column: value})
    insert(pair.source, table, [{"id": 9, "updated_at": stamp(W, 9), "ratio": 0.5, "amount": 1}])

    if stored:
        assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 1, "updated": 1, "deleted": 0}
        got = read_rows(pair.target, "floats", ["id"], ["id", column])[2][1]
        assert same_float(value, got), got
        assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED
        return
    before = fingerprint(pair.target, "floats", ["id"])
    with pytest.raises(DataError, match=rf"target table 'floats' .*column '{column}'.*(?i:nan|inf)"):
        pair.sync(config)
    assert fingerprint(pair.target, "floats", ["id"]) == before
    update(pair.source, table, table.c.id == 2, updated_at=bump(2) + timedelta(seconds=1), **{column: 0})
    assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 1, "updated": 1, "deleted": 0}


NUMERIC_MAX = Decimal("9999999999999999999999999999.9999999999")  # NUMERIC(38,10)
EXTREMES = [
    {"amount": NUMERIC_MAX, "big": 2**63 - 1, "small": 2**31 - 1},
    {"amount": NUMERIC_MAX.copy_negate(), "big": -(2**63), "small": -(2**31)},  # `-` would round to 28 digits
    {"amount": Decimal("0.0000000001"), "big": 0, "small": 0},
    {"amount": Decimal("-0.0000000001"), "big": 1, "small": -1},
    {"amount": Decimal("1234567890123456789012345678.0000000001"), "big": -1, "small": 1},
]


def numerics_table() -> sa.Table:
    return values_table(
        "numerics",
        sa.Column("amount", sa.Numeric(38, 10)),
        sa.Column("big", sa.BigInteger),
        sa.Column("small", sa.Integer),
    )


@pair_params(("postgresql", "postgresql"), ("mysql", "postgresql"), ("postgresql", "mysql"))
def test_extreme_numerics_arrive_exact(make_db_url: MakeDbUrl, source_kind: str, target_kind: str) -> None:
    """The largest and smallest NUMERIC(38,10) values (38 significant digits), its smallest steps, and
    the bigint and integer extremes arrive exactly between the servers, as ``Decimal``s and ints.
    """
    pair = make_pair(make_db_url, source_kind, target_kind)
    table = numerics_table()
    table.create(pair.source.engine)
    rows = [{"id": i, "updated_at": stamp(W, i)} | values for i, values in enumerate(EXTREMES, 1)]
    insert(pair.source, table, rows)

    assert pair.sync(table_config("numerics")).inserted == len(rows)
    target = read_rows(pair.target, "numerics", ["id"], ["id", "amount", "big", "small"])
    assert target == {row["id"]: (row["id"], row["amount"], row["big"], row["small"]) for row in rows}
    assert counts(pair.sync(table_config("numerics")), *CHANGE_COUNTS) == NOTHING_CHANGED


def test_decimal_sqlite_cannot_hold_fails_naming_the_column(make_db_url: MakeDbUrl) -> None:
    """SQLite keeps NUMERIC as a 64-bit float: bigint extremes and decimals of up to 15 significant
    digits arrive exactly; a NUMERIC(38,10) value it would round fails the sync with a ``DataError``
    naming the column and both values, and nothing is written (the target table, created by the
    run's plan, stays empty).
    """
    pair = make_pair(make_db_url, "postgresql", "sqlite")
    table = numerics_table()
    table.create(pair.source.engine)
    fits = [
        {"id": 1, "updated_at": stamp(W, 1), "amount": Decimal("12345.6789012345"), "big": 2**63 - 1},
        {"id": 2, "updated_at": stamp(W, 2), "amount": Decimal("-0.0000000001"), "big": -(2**63)},
    ]
    insert(pair.source, table, fits)
    config = table_config("numerics")
    assert pair.sync(config).inserted == 2
    assert read_rows(pair.target, "numerics", ["id"], ["id", "amount", "big"]) == {
        r["id"]: (r["id"], r["amount"], r["big"]) for r in fits
    }

    insert(pair.source, table, [{"id": 3, "updated_at": stamp(W, 3), "amount": NUMERIC_MAX, "big": 0}])
    before = fingerprint(pair.target, "numerics", ["id"])
    with pytest.raises(
        DataError, match=r"column 'amount': 9999999999999999999999999999\.9999999999 would be"
    ):
        pair.sync(config)
    assert fingerprint(pair.target, "numerics", ["id"]) == before


# -- dates and times ----------------------------------------------------------------------------------
FIRST_INSTANT = datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
LAST_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def test_years_1_and_9999_arrive_exact(pair: Pair) -> None:
    """Timestamps of year 1 and year 9999 (to the microsecond) and the dates 0001-01-01 and 9999-12-31
    arrive exactly on every engine pair (MariaDB's DATETIME and DATE hold them, though documented
    from year 1000).
    """
    table = values_table("dates", sa.Column("happened_at", TS), sa.Column("day", sa.Date))
    table.create(pair.source.engine)
    rows = [
        {"id": 1, "updated_at": stamp(W, 1), "happened_at": FIRST_INSTANT, "day": date(1, 1, 1)},
        {"id": 2, "updated_at": stamp(W, 2), "happened_at": LAST_INSTANT, "day": date(9999, 12, 31)},
        {"id": 3, "updated_at": stamp(W, 3), "happened_at": None, "day": None},
    ]
    insert(pair.source, table, rows)
    config = table_config("dates")

    assert pair.sync(config).inserted == 3
    assert read_rows(pair.target, "dates", ["id"], ["id", "happened_at", "day"]) == {
        r["id"]: (r["id"], r["happened_at"], r["day"]) for r in rows
    }
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED


@pytest.mark.parametrize(
    ("target_kind", "zone", "instant"),
    [("postgresql", "Asia/Tokyo", LAST_INSTANT), ("sqlite", "America/Bogota", FIRST_INSTANT)],
    ids=["year-9999-in-Tokyo", "year-1-in-Bogota"],
)
def test_instant_without_wall_time_in_the_naive_zone_fails_naming_the_column(
    make_db_url: MakeDbUrl, target_kind: str, zone: str, instant: datetime
) -> None:
    """A naive target column stores wall times of ``naive_timezone``: an instant whose wall time
    there falls outside years 1..9999 (9999-12-31 23:59 UTC is in year 10000 in Tokyo) fails the sync
    with a ``DataError`` naming the column and the value, and nothing is written.
    """
    pair = make_pair(make_db_url, "postgresql", target_kind)
    table = values_table("zoned", sa.Column("happened_at", TS))
    table.create(pair.source.engine)
    if target_kind == "postgresql":  # a `timestamp without time zone` column (SQLite's always is)
        values_table("zoned", sa.Column("happened_at", sa.DateTime(timezone=False))).create(
            pair.target.engine
        )
    insert(pair.source, table, [{"id": 1, "updated_at": stamp(W, 1), "happened_at": stamp(W, 1)}])
    config = table_config("zoned", naive_timezone=zone)
    pair.sync(config)
    insert(pair.source, table, [{"id": 2, "updated_at": stamp(W, 2), "happened_at": instant}])
    before = fingerprint(pair.target, "zoned", ["id"])

    with pytest.raises(DataError, match=r"target table 'zoned' .*column 'happened_at'.*has no equivalent"):
        pair.sync(config)
    assert fingerprint(pair.target, "zoned", ["id"]) == before


@pair_params(("mysql", "postgresql"), ("postgresql", "mysql"))
def test_mariadb_without_time_zone_tables_fails_before_writing(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str
) -> None:
    """MariaDB reads naive DATETIMEs of a named ``naive_timezone`` only with its time zone tables
    loaded. Without them the sync fails in its plan with a ``SchemaError`` naming the table, the zone
    and the fix, and writes nothing (the target is not even created). Before the check, CONVERT_TZ
    returned NULL and the sync died on an assertion in the middle of the diff.
    """
    pair = make_pair(make_db_url, source_kind, target_kind)
    mariadb = pair.source if source_kind == "mysql" else pair.target
    with mariadb.engine.connect() as conn:
        if conn.exec_driver_sql("SELECT CONVERT_TZ('2000-01-01', 'Asia/Tokyo', '+00:00')").scalar():
            pytest.skip("this MariaDB server has its time zone tables loaded")
    table = values_table("zoned", sa.Column("happened_at", TS))
    table.create(pair.source.engine)
    insert(pair.source, table, [{"id": 1, "updated_at": stamp(W, 1), "happened_at": stamp(W, 1)}])

    side = "source" if source_kind == "mysql" else "target"
    with pytest.raises(SchemaError, match=rf"{side} table 'zoned' .*'Asia/Tokyo'.*time zone tables"):
        pair.sync(table_config("zoned", naive_timezone="Asia/Tokyo"))
    assert not has_table(pair.target, "zoned")


def test_mariadb_timestamp_columns_need_no_time_zone_tables(make_db_url: MakeDbUrl) -> None:
    """MariaDB's TIMESTAMP holds instants, read in the session's UTC: a table of TIMESTAMPs on both
    sides never converts wall times, so a named ``naive_timezone`` (set for other tables) must not
    make it depend on the server's time zone tables, nor shift its values (they were once read as
    Tokyo wall times and written 9 hours early). Equal values, and a second run finds nothing.
    """
    pair = make_pair(make_db_url, "mysql", "mysql")
    instants = sa.Table(
        "instants",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", mysql.TIMESTAMP(fsp=6), nullable=False),
        sa.Column("note", sa.String(20)),
    )
    instants.create(pair.source.engine)
    instants.create(pair.target.engine)
    insert(pair.source, instants, [{"id": i, "updated_at": stamp(W, i), "note": f"n{i}"} for i in range(5)])
    config = table_config("instants", naive_timezone="Asia/Tokyo")

    assert pair.sync(config).inserted == 5
    assert_same_rows(pair, "instants", "instants", ["id"], ["id", "updated_at", "note"])
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED


# -- broken keys --------------------------------------------------------------------------------------
def unkeyed_table(key_type: sa.types.TypeEngine[Any]) -> sa.Table:
    """A source table without primary key or unique index, its key column nullable."""
    return sa.Table(
        "unkeyed",
        sa.MetaData(),
        sa.Column("id", key_type, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("name", sa.String(50)),
    )


def keyed_target(side: Side, key_type: sa.types.TypeEngine[Any]) -> sa.Table:
    """The target as a deployment would have it: the same columns with a primary key."""
    table = sa.Table(
        "unkeyed",
        sa.MetaData(),
        sa.Column("id", key_type, primary_key=True, autoincrement=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("name", sa.String(50)),
    )
    table.create(side.engine)
    return table


KEY_TYPES = {"integer": sa.Integer(), "text": KEY_TEXT}


def key(key_kind: str, i: int) -> Any:
    return i if key_kind == "integer" else f"k{i:04d}"


BROKEN_PAIRS = [
    ("postgresql", "postgresql"),
    ("mysql", "postgresql"),
    ("sqlite", "sqlite"),
    ("postgresql", "mysql"),
]


@pytest.mark.parametrize("key_kind", ["integer", "text"])
@pytest.mark.parametrize("where", ["in_window", "other_window"])
@pair_params(*BROKEN_PAIRS)
def test_duplicate_source_keys_fail_and_write_nothing(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str, where: str, key_kind: str
) -> None:
    """A source table without a unique constraint holding two rows of one key fails the sync with a
    ``DataError`` that says the key is duplicated, and the target is left exactly as it was: whether
    both rows are in the window, or the second copy is in another hour (found when the key's row is
    fetched). Before the check, PostgreSQL refused with a cardinality error and MariaDB and SQLite
    silently kept one of the two rows.
    """
    pair = make_pair(make_db_url, source_kind, target_kind)
    key_type = KEY_TYPES[key_kind]
    table = unkeyed_table(key_type)
    table.create(pair.source.engine)
    keyed_target(pair.target, key_type)
    rows = [{"id": key(key_kind, i), "updated_at": stamp(W, i), "name": f"n{i}"} for i in range(1, 41)]
    insert(pair.source, table, rows)
    config = table_config("unkeyed")
    assert pair.sync(config).inserted == 40

    duplicate_at = stamp(W, 3000) if where == "in_window" else stamp(W_AFTER, 5)
    insert(pair.source, table, [{"id": key(key_kind, 7), "updated_at": duplicate_at, "name": "twin"}])
    update(pair.source, table, table.c.name == "n7", updated_at=bump(7))  # makes key 7 travel
    insert(pair.source, table, [{"id": key(key_kind, 50), "updated_at": stamp(W, 50), "name": "new"}])
    before = fingerprint(pair.target, "unkeyed", ["id"])

    twin = repr(key(key_kind, 7))
    with pytest.raises(DataError, match=rf"duplicate key {twin}|several rows for key\(s\) {twin}"):
        pair.sync(config)
    assert fingerprint(pair.target, "unkeyed", ["id"]) == before


def test_duplicate_keys_into_a_missing_target_write_no_row(make_db_url: MakeDbUrl) -> None:
    """The first sync of a source with duplicate keys fails with a ``DataError``; the target table
    is created by the plan (before any row is compared) but receives no row.
    """
    pair = make_pair(make_db_url, "mysql", "postgresql")
    table = unkeyed_table(sa.Integer())
    table.create(pair.source.engine)
    rows = [{"id": i, "updated_at": stamp(W, i), "name": f"n{i}"} for i in range(1, 21)]
    insert(pair.source, table, [*rows, {"id": 5, "updated_at": stamp(W, 99), "name": "twin"}])

    with pytest.raises(DataError, match="duplicate key 5"):
        pair.sync(table_config("unkeyed"))
    assert has_table(pair.target, "unkeyed")
    assert read_rows(pair.target, "unkeyed", ["id"], ["id"]) == {}


@pytest.mark.parametrize("key_kind", ["integer", "text"])
@pair_params(*BROKEN_PAIRS)
def test_null_source_key_fails_and_writes_nothing(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str, key_kind: str
) -> None:
    """A source row of the window whose key is NULL fails the sync with a ``DataError`` saying so, and
    the target is left exactly as it was. (An integer key used to be skipped silently: the key-range
    descent never looked at NULL, and every later run reported the window as synced.)
    """
    pair = make_pair(make_db_url, source_kind, target_kind)
    key_type = KEY_TYPES[key_kind]
    table = unkeyed_table(key_type)
    table.create(pair.source.engine)
    keyed_target(pair.target, key_type)
    insert(
        pair.source,
        table,
        [{"id": key(key_kind, i), "updated_at": stamp(W, i), "name": "x"} for i in range(1, 31)],
    )
    config = table_config("unkeyed")
    assert pair.sync(config).inserted == 30

    insert(pair.source, table, [{"id": None, "updated_at": stamp(W, 77), "name": "no key"}])
    insert(pair.source, table, [{"id": key(key_kind, 31), "updated_at": stamp(W, 31), "name": "new"}])
    before = fingerprint(pair.target, "unkeyed", ["id"])

    with pytest.raises(DataError, match=r"key.* is NULL"):
        pair.sync(config)
    assert fingerprint(pair.target, "unkeyed", ["id"]) == before


def test_keys_differing_in_trailing_spaces_stay_distinct_in_a_mariadb_target(make_db_url: MakeDbUrl) -> None:
    """Text keys that differ only in trailing spaces ("a" and "a ") are two rows in PostgreSQL and
    must stay two rows in a MariaDB target, each with its own values; a second run finds nothing.
    (A PAD SPACE collation such as utf8mb4_bin would make them one key: created targets use a
    binary NO PAD collation.)
    """
    pair = make_pair(make_db_url, "postgresql", "mysql")
    table = sa.Table(
        "padded",
        sa.MetaData(),
        sa.Column("code", sa.String(20), primary_key=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("body", sa.Text),
    )
    table.create(pair.source.engine)
    rows = [
        {"code": "a", "updated_at": stamp(W, 1), "body": "no space"},
        {"code": "a ", "updated_at": stamp(W, 2), "body": "one space"},
    ]
    insert(pair.source, table, rows)
    config = table_config("padded", primary_key=["code"])

    pair.sync(config)

    assert read_rows(pair.target, "padded", ["code"], ["code", "body"]) == {
        "a": ("a", "no space"),
        "a ": ("a ", "one space"),
    }
    assert counts(pair.sync(config), *CHANGE_COUNTS) == NOTHING_CHANGED
