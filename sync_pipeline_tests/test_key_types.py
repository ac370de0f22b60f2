"""Every key type the plan accepts syncs exactly between every pair of engines, or is refused.

The merge compares the source's and the target's key streams value by value and in order: both must
yield one Python type per key column (a PostgreSQL ``uuid`` read as text where the other side stores
text) and sort alike (binary order of the text, which for lowercase uuids is PostgreSQL's own uuid
order). The matrix runs each engine pair (PostgreSQL, MariaDB, SQLite as source and as target) with
each key type on a small table: a first sync is exact, a second writes nothing, verification passes,
and a round of inserts, updates and deletes (which looks keys up on the other side) converges too.

Integer keys spread over the whole signed 64-bit range (random ids) also go through the descent's
bucket queries, which compute a bucket per key inside the databases: those need more rows than one
leaf of the descent, so they have a test of their own.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from sync_pipeline.engine.verify import verify_partition
from sync_pipeline.errors import SchemaError
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    NOTHING_CHANGED,
    TS,
    Pair,
    W,
    counts,
    fingerprint,
    has_table,
    insert,
    open_pair,
    read_rows,
    stamp,
    table_config,
)

ENGINES = ("postgresql", "mysql", "sqlite")
ALL_PAIRS = [(s, t) for s in ENGINES for t in ENGINES]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _text(length: int) -> sa.types.TypeEngine[Any]:
    # A binary NO PAD collation on MariaDB: 'a', 'a ' and 'A' are three keys, as on the other engines.
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_nopad_bin"), "mysql", "mariadb"
    )


# Text keys that collations, padding and byte order disagree about; nothing PostgreSQL cannot store.
HOSTILE_TEXT = [
    "",
    " ",
    "a",
    "a ",
    "A",
    "b",
    "é",
    "e\u0301",
    "E",
    "\t",
    "a\x01",
    "ǅ",
    "ß",
    "ss",
    "İ",
    "i",
    "%_",
    "O'Brien",
    '"quoted"',
    "back\\slash",
    "日本",
    "😀",
    "\U0010fffd",
    "z",
    "Z",
    "9",
    "10",
]


@dataclass(frozen=True)
class KeyKind:
    """A key column type (or two) and the key values of the test's rows."""

    columns: list[tuple[str, sa.types.TypeEngine[Any]]]
    make_keys: Callable[[], list[Any]]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]


def _random_int64(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return sorted({rng.randint(INT64_MIN, INT64_MAX) for _ in range(n)} | {INT64_MIN, INT64_MAX})


def _uuids(n: int) -> list[uuid.UUID]:
    rng = random.Random(13)
    # Every first hex digit, so the order of 0-9 against a-f is exercised.
    return [uuid.UUID(int=(i % 16) << 124 | rng.getrandbits(124)) for i in range(n)]


UUID_TYPE: sa.types.TypeEngine[Any] = sa.Uuid().with_variant(sa.String(36), "mysql", "mariadb", "sqlite")

KINDS: dict[str, KeyKind] = {
    "int": KeyKind([("id", sa.Integer())], lambda: [-5, -1, 0, 1, 2, 7, 100, 2**31 - 1, -(2**31)]),
    "bigint_extremes": KeyKind(
        [("id", sa.BigInteger())],
        lambda: [INT64_MIN, INT64_MIN + 1, -(2**62), -1, 0, 1, 2**62, INT64_MAX - 1, INT64_MAX],
    ),
    "random_int64": KeyKind([("id", sa.BigInteger())], lambda: _random_int64(30, seed=7)),
    "uuid": KeyKind([("id", UUID_TYPE)], lambda: _uuids(24)),
    "date": KeyKind(
        [("id", sa.Date())], lambda: [date(1, 1, 1), date(1970, 1, 1), date(2026, 11, 30), date(9999, 12, 31)]
    ),
    "hostile_text": KeyKind([("id", _text(40))], lambda: list(HOSTILE_TEXT)),
    "composite": KeyKind(
        [("k1", sa.BigInteger()), ("k2", _text(20))],
        lambda: [(a, b) for a in (INT64_MIN, -1, 0, 1, INT64_MAX) for b in ("", "a", "a ", "B", "é")],
    ),
    "long_text": KeyKind(
        [("id", _text(400))],
        lambda: ["x" * 300 + suffix for suffix in ("", " ", "a", "b", "é", "A")] + ["y" * 399],
    ),
}


def _source_table(kind: KeyKind) -> sa.Table:
    return sa.Table(
        "keyed",
        sa.MetaData(),
        *(sa.Column(name, type_, primary_key=True, autoincrement=False) for name, type_ in kind.columns),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("val", sa.String(50)),
    )


def _storable_key(pair_side_kind: str, value: Any) -> Any:
    if isinstance(value, uuid.UUID) and pair_side_kind != "postgresql":
        return str(value)
    return value


def _rows(kind: KeyKind, side_kind: str, keys: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for i, key in enumerate(keys):
        parts = key if isinstance(key, tuple) else (key,)
        row = {name: _storable_key(side_kind, part) for name, part in zip(kind.names, parts, strict=True)}
        row.update(updated_at=stamp(W, i), val=f"v{i}")
        rows.append(row)
    return rows


@pytest.fixture(params=ALL_PAIRS, ids=[f"{s}->{t}" for s, t in ALL_PAIRS])
def any_pair(request: pytest.FixtureRequest, make_db_url: MakeDbUrl) -> Iterator[Pair]:
    """A fresh source and target of one of the nine engine pairs."""
    yield from open_pair(make_db_url, *request.param)


def _key_where(table: sa.Table, names: list[str], key: Any, side_kind: str) -> sa.ColumnElement[bool]:
    parts = key if isinstance(key, tuple) else (key,)
    return sa.and_(*(table.c[n] == _storable_key(side_kind, p) for n, p in zip(names, parts, strict=True)))


@pytest.mark.parametrize("kind_name", list(KINDS))
def test_key_type_syncs_exactly_between_every_pair(any_pair: Pair, kind_name: str) -> None:
    """First sync exact, second writes nothing, verification passes; then inserts, updates and deletes
    (keys looked up on the other side) converge the same way."""
    pair = any_pair
    kind = KINDS[kind_name]
    keys = kind.make_keys()
    source = _source_table(kind)
    source.create(pair.source.engine)
    insert(pair.source, source, _rows(kind, pair.source.kind, keys))
    config = table_config("keyed", primary_key=kind.names, chunk_size=7)
    columns = [*kind.names, "updated_at", "val"]

    first = pair.sync(config)
    assert counts(first, "inserted", "updated", "deleted") == {
        "inserted": len(keys),
        "updated": 0,
        "deleted": 0,
    }
    _assert_same_rows(pair, kind.names, columns)

    before = fingerprint(pair.target, "keyed", kind.names)
    second = pair.sync(config)
    assert counts(second, "inserted", "updated", "deleted") == NOTHING_CHANGED
    assert second.unchanged == len(keys)
    assert fingerprint(pair.target, "keyed", kind.names) == before
    assert verify_partition(config, pair.source.url, pair.target.url, W).in_sync

    # Delete two keys, update two, insert one new: lookups of keys on the other side must match.
    gone, changed = keys[:2], keys[2:4]
    with pair.source.engine.begin() as conn:
        for key in gone:
            conn.execute(source.delete().where(_key_where(source, kind.names, key, pair.source.kind)))
        for key in changed:
            conn.execute(
                source.update()
                .where(_key_where(source, kind.names, key, pair.source.kind))
                .values(val="changed", updated_at=_storable_updated_at(pair, 3000))
            )
    new_key = _new_key(kind_name, keys)
    insert(pair.source, source, [{**_rows(kind, pair.source.kind, [new_key])[0], "val": "new"}])
    third = pair.sync(config)
    assert counts(third, "inserted", "updated", "deleted") == {"inserted": 1, "updated": 2, "deleted": 2}
    _assert_same_rows(pair, kind.names, columns)
    assert counts(pair.sync(config), "inserted", "updated", "deleted") == NOTHING_CHANGED
    assert verify_partition(config, pair.source.url, pair.target.url, W).in_sync


def _as_text(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(map(_as_text, value))
    return str(value) if isinstance(value, uuid.UUID) else value


def _assert_same_rows(pair: Pair, key: list[str], columns: list[str]) -> None:
    """Both sides hold the same rows; a uuid equals its text (a uuid key lands in CHAR(36) as text)."""
    source, target = (
        {_as_text(k): _as_text(v) for k, v in read_rows(side, "keyed", key, columns).items()}
        for side in (pair.source, pair.target)
    )
    assert set(source) == set(target), (
        f"only in source: {sorted(set(source) - set(target), key=repr)[:5]}; "
        f"only in target: {sorted(set(target) - set(source), key=repr)[:5]}"
    )
    assert source == target


def _storable_updated_at(pair: Pair, seconds: int) -> Any:
    moment = stamp(W, seconds)
    return moment.replace(tzinfo=None) if pair.source.stores_naive else moment


def _new_key(kind_name: str, keys: list[Any]) -> Any:
    if kind_name == "uuid":
        return uuid.UUID("ffffffff-0000-4000-8000-000000000001")
    if kind_name in ("hostile_text", "long_text"):
        return "new key ✓"
    if kind_name == "composite":
        return (42, "new")
    if kind_name == "date":
        return date(2000, 2, 29)
    return next(k for k in (3, 4, 5, 6, 12345) if k not in keys)


SPREAD_PAIRS = [
    ("postgresql", "postgresql"),
    ("mysql", "mysql"),
    ("sqlite", "sqlite"),
    ("postgresql", "mysql"),
    ("mysql", "sqlite"),
    ("sqlite", "postgresql"),
]


@pytest.mark.parametrize(
    ("source_kind", "target_kind"), SPREAD_PAIRS, ids=[f"{s}->{t}" for s, t in SPREAD_PAIRS]
)
def test_random_64_bit_ids_go_through_the_descent(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str
) -> None:
    """Keys spread over all of -2**63 .. 2**63 - 1, more than one leaf of the descent: the bucket
    queries (``key - lo`` in the database) never overflow, and a few changes are found exactly."""
    kind = KeyKind([("id", sa.BigInteger())], lambda: _random_int64(1500, seed=64))
    keys = kind.make_keys()
    assert len(keys) > 1000  # more than the descent's leaf (chunk_size 100): buckets are queried
    for pair in open_pair(make_db_url, source_kind, target_kind):
        source = _source_table(kind)
        source.create(pair.source.engine)
        insert(pair.source, source, _rows(kind, pair.source.kind, keys))
        config = table_config("keyed", chunk_size=100)
        first = pair.sync(config)
        assert counts(first, "inserted", "updated", "deleted") == {
            "inserted": len(keys),
            "updated": 0,
            "deleted": 0,
        }
        second = pair.sync(config)
        assert counts(second, "inserted", "updated", "deleted") == NOTHING_CHANGED
        assert second.unchanged == len(keys)

        changed = [keys[0], keys[len(keys) // 2], keys[-1]]  # both extremes included
        with pair.source.engine.begin() as conn:
            conn.execute(
                source.update()
                .where(source.c.id.in_(changed))
                .values(val="changed", updated_at=_storable_updated_at(pair, 3500))
            )
        third = pair.sync(config)
        assert counts(third, "inserted", "updated", "deleted") == {"inserted": 0, "updated": 3, "deleted": 0}
        assert third.ranges_compared > 1  # the descent ran: not one merge of every key
        assert third.keys_scanned < 2 * len(keys)
        _assert_same_rows(pair, ["id"], ["id", "updated_at", "val"])
        assert verify_partition(config, pair.source.url, pair.target.url, W).in_sync


def test_timestamp_key_between_engines_is_refused_naming_the_column(make_db_url: MakeDbUrl) -> None:
    """A timestamp key from PostgreSQL (instants) into SQLite (wall-time text) would never compare
    equal to itself: refused before any row is written, naming the column."""
    for pair in open_pair(make_db_url, "postgresql", "sqlite"):
        source = sa.Table(
            "keyed",
            sa.MetaData(),
            sa.Column("happened_at", TS, primary_key=True),
            sa.Column("updated_at", TS, nullable=False),
        )
        source.create(pair.source.engine)
        insert(
            pair.source, source, [{"happened_at": stamp(W, i), "updated_at": stamp(W, i)} for i in range(3)]
        )
        with pytest.raises(SchemaError, match="key column 'happened_at' is a timestamp"):
            pair.sync(table_config("keyed", primary_key=["happened_at"]))
        if has_table(pair.target, "keyed"):
            with pair.target.engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM keyed")).scalar_one() == 0


@pytest.mark.parametrize(("source_kind", "target_kind"), [("postgresql", "postgresql"), ("sqlite", "mysql")])
def test_new_keys_up_to_the_types_maximum_travel_by_range(
    make_db_url: MakeDbUrl, source_kind: str, target_kind: str
) -> None:
    """New rows whose keys run up to INTEGER's largest value, above every key the target holds: the
    descent hands their range to the bulk path, whose bounds must be values of the column's type too."""
    kind = KeyKind([("id", sa.Integer())], lambda: [*range(1, 1201), *range(2**31 - 400, 2**31)])
    keys = kind.make_keys()
    for pair in open_pair(make_db_url, source_kind, target_kind):
        source = _source_table(kind)
        source.create(pair.source.engine)
        insert(pair.source, source, _rows(kind, pair.source.kind, keys[:1200]))
        config = table_config("keyed", chunk_size=100)
        assert pair.sync(config).inserted == 1200
        insert(pair.source, source, _rows(kind, pair.source.kind, keys)[1200:])
        stats = pair.sync(config)
        assert counts(stats, "inserted", "updated", "deleted") == {
            "inserted": 400,
            "updated": 0,
            "deleted": 0,
        }
        _assert_same_rows(pair, ["id"], ["id", "updated_at", "val"])
        assert verify_partition(config, pair.source.url, pair.target.url, W).in_sync
