"""Property-based tests of one partition sync (SPEC 4.1, 4.2, 4.3, 4.5, 4.7), on real databases.

Hypothesis draws a small table (an integer or text key, ``updated_at``, and a few nullable columns of
random families: bigint, unicode text, numeric, timestamp, JSON, boolean), rows spread over the synced
hour W and the hours around it, and several rounds of changes made to the source: inserts, updates
within the row's hour, moves to a later hour (out of W, or from the hour before into W), deletes, and
``updated_at`` set to NULL. After each round the window W is synced, and the whole target must be
exactly what the SPEC says: every key of the source's window with the source's values; a key that
left the window with its current version, or gone if the source lost it, or kept as it was if its
``updated_at`` became NULL; every other row as it was. The counts must say so, and a second sync
must find nothing to do.

``updated_at`` moves forward, as a last-update time does, with one exception: a row whose time was
set to NULL may be stamped again at any hour, even earlier than the copy the target holds. SPEC 4.9
then keeps the target's newer version, and the sync must count it as ``skipped_newer`` (it used to
report it as updated, on every run, while writing nothing).

Each test function gets one pair of databases; every example drops and recreates its tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_pipeline.engine.diff.stats import SyncStats
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    CHANGE_COUNTS,
    KEY_TEXT,
    NOTHING_CHANGED,
    TS,
    Pair,
    Side,
    W,
    counts,
    insert,
    make_pair,
    open_pair,
    read_rows,
    storable,
    table_config,
)

TABLE = "props"
HOUR_MICROS = 3_600_000_000
HOURS = (-1, 0, 1, 2)  # the hour before W, W, and two after it

# -- values -----------------------------------------------------------------------------------------
# Text as every engine stores it: any code point but NUL (PostgreSQL) and lone surrogates (not UTF-8).
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
FAMILIES: dict[str, tuple[sa.types.TypeEngine[Any], st.SearchStrategy[Any]]] = {
    "c_int": (sa.BigInteger(), st.integers(-(2**63), 2**63 - 1)),
    "c_text": (sa.String(60), TEXT),
    # 14 significant digits: exact in SQLite too, which stores NUMERIC as a double.
    "c_num": (
        sa.Numeric(14, 6),
        st.decimals(-(10**8) + 1, 10**8 - 1, places=6, allow_nan=False, allow_infinity=False),
    ),
    "c_ts": (
        TS,
        st.datetimes(datetime(1900, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
    ),
    # A JSON column holds a list or an object here: the JSON scalar null would read back as NULL.
    "c_json": (
        sa.JSON(none_as_null=True),
        st.lists(JSON_VALUES, max_size=3) | st.dictionaries(TEXT, JSON_VALUES, max_size=3),
    ),
    "c_bool": (sa.Boolean(), st.booleans()),
}
# Text keys: no trailing space, which MariaDB's PAD SPACE collations would take as equal to none.
TEXT_KEYS = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=8
).filter(lambda k: not k.endswith(" "))


@dataclass
class Schema:
    key_kind: str  # "integer" or "text"
    columns: list[str]  # value columns, in FAMILIES

    def table(self) -> sa.Table:
        key_type = sa.Integer() if self.key_kind == "integer" else KEY_TEXT
        return sa.Table(
            TABLE,
            sa.MetaData(),
            sa.Column("id", key_type, primary_key=True, autoincrement=False),
            sa.Column("updated_at", TS, nullable=True),
            *(sa.Column(name, FAMILIES[name][0], nullable=True) for name in self.columns),
        )

    @property
    def all_columns(self) -> list[str]:
        return ["id", "updated_at", *self.columns]


# -- changes ----------------------------------------------------------------------------------------
@dataclass
class Source:
    """The test's model of which keys exist and their ``updated_at``, to draw valid changes."""

    side: Side
    schema: Schema
    keys: list[Any]  # fresh keys for inserts, used in order
    live: dict[Any, datetime | None] = field(default_factory=dict)
    used: int = 0

    def values(self, data: st.DataObject) -> dict[str, Any]:
        return {name: data.draw(st.none() | FAMILIES[name][1], label=name) for name in self.schema.columns}

    def insert(self, data: st.DataObject) -> None:
        if self.used == len(self.keys):
            return
        key = self.keys[self.used]
        self.used += 1
        ts = at_hour(data.draw(st.sampled_from(HOURS), label="hour"), data)
        insert(self.side, self.schema.table(), [{"id": key, "updated_at": ts} | self.values(data)])
        self.live[key] = ts

    def pick(self, data: st.DataObject) -> Any:
        return data.draw(st.sampled_from(sorted(self.live, key=repr)), label="key") if self.live else None

    def update_within_hour(self, data: st.DataObject) -> None:
        key = self.pick(data)
        if key is None or (ts := self.live[key]) is None:
            return
        end = hour_start(hour_of(ts) + 1)
        room = (end - ts) // timedelta(microseconds=1) - 1
        if room < 1:
            return
        self._set(key, ts + timedelta(microseconds=data.draw(st.integers(1, room), label="later by")), data)

    def move_later(self, data: st.DataObject) -> None:
        key = self.pick(data)
        if key is None:
            return
        ts = self.live[key]
        later = [h for h in HOURS if ts is None or h > hour_of(ts)]
        if later:
            self._set(key, at_hour(data.draw(st.sampled_from(later), label="to hour"), data), data)

    def nullify(self, data: st.DataObject) -> None:
        key = self.pick(data)
        if key is not None:
            self._set(key, None, data)

    def delete(self, data: st.DataObject) -> None:
        key = self.pick(data)
        if key is not None:
            table = self.schema.table()
            with self.side.engine.begin() as conn:
                conn.execute(table.delete().where(table.c.id == key))
            del self.live[key]

    def _set(self, key: Any, ts: datetime | None, data: st.DataObject) -> None:
        table = self.schema.table()
        values = {k: storable(self.side, v) for k, v in ({"updated_at": ts} | self.values(data)).items()}
        with self.side.engine.begin() as conn:
            conn.execute(table.update().where(table.c.id == key).values(values))
        self.live[key] = ts


def hour_start(hour: int) -> datetime:
    return W.start + timedelta(hours=hour)


def hour_of(ts: datetime) -> int:
    return (ts - W.start) // timedelta(hours=1)


def at_hour(hour: int, data: st.DataObject) -> datetime:
    """An instant in ``hour`` (relative to W), to the microsecond."""
    return hour_start(hour) + timedelta(microseconds=data.draw(st.integers(0, HOUR_MICROS - 1), label="at"))


CHANGES = ("insert", "update_within_hour", "move_later", "nullify", "delete")


# -- the property -----------------------------------------------------------------------------------
def in_window(row: tuple[Any, ...]) -> bool:
    ts = row[1]
    return ts is not None and W.start <= ts < W.end


def expected_after(
    source: dict[Any, tuple[Any, ...]], target: dict[Any, tuple[Any, ...]]
) -> tuple[dict[Any, tuple[Any, ...]], dict[str, int]]:
    """The whole target after a sync of W, and its counts, from the source and the target before."""
    s = {k: row for k, row in source.items() if in_window(row)}
    t = {k: row for k, row in target.items() if in_window(row)}
    after = dict(target)
    changes = {"inserted": 0, "updated": 0, "deleted": 0, "skipped_newer": 0}
    for k, row in s.items():
        if k not in target:
            changes["inserted"] += 1
        elif target[k][1] is not None and target[k][1] > row[1]:
            changes["skipped_newer"] += 1  # SPEC 4.9: the target's newer version stays
            continue
        elif k not in t or t[k] != row:
            changes["updated"] += 1
        after[k] = row
    for k in t.keys() - s.keys():
        if k not in source:
            changes["deleted"] += 1
            del after[k]
        elif source[k][1] is None:
            pass  # its updated_at became NULL: in no window, kept as it is (SPEC 4.7)
        elif source[k][1] < t[k][1]:
            changes["skipped_newer"] += 1  # stamped again, earlier than the target's version
        else:
            changes["updated"] += 1  # moved to a later hour: its current version (SPEC 4.2)
            after[k] = source[k]
    return after, changes


def run_property(pair: Pair, data: st.DataObject) -> None:
    schema = Schema(
        data.draw(st.sampled_from(["integer", "text"]), label="key kind"),
        data.draw(
            st.lists(st.sampled_from(sorted(FAMILIES)), min_size=1, max_size=4, unique=True), label="cols"
        ),
    )
    if schema.key_kind == "integer":
        keys: list[Any] = list(range(1, 41))
    else:
        keys = data.draw(st.lists(TEXT_KEYS, min_size=40, max_size=40, unique=True), label="text keys")
    for side in (pair.source, pair.target):
        with side.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")
    schema.table().create(pair.source.engine)
    source = Source(pair.source, schema, keys)
    for _ in range(data.draw(st.integers(0, 12), label="initial rows")):
        source.insert(data)

    config = table_config(TABLE, chunk_size=data.draw(st.sampled_from([1, 3, 100]), label="chunk"))
    json_columns = ["c_json"] if "c_json" in schema.columns else []
    target: dict[Any, tuple[Any, ...]] = {}
    for _round in range(data.draw(st.integers(1, 4), label="rounds")):
        if _round:
            for change in data.draw(st.lists(st.sampled_from(CHANGES), max_size=8), label="changes"):
                getattr(source, change)(data)
        now = read_rows(pair.source, TABLE, ["id"], schema.all_columns, json_columns=json_columns)
        expected, expected_counts = expected_after(now, target)

        stats = pair.sync(config)

        target = read_rows(pair.target, TABLE, ["id"], schema.all_columns, json_columns=json_columns)
        assert target == expected, diff_message(target, expected)
        assert counts(stats, *CHANGE_COUNTS, "skipped_newer") == expected_counts
        assert stats.target_rows == sum(map(in_window, target.values()))
        again: SyncStats = pair.sync(config)
        assert counts(again, *CHANGE_COUNTS) == NOTHING_CHANGED


def diff_message(got: dict[Any, Any], want: dict[Any, Any]) -> str:
    missing = {k: want[k] for k in want.keys() - got.keys()}
    extra = {k: got[k] for k in got.keys() - want.keys()}
    wrong = {k: (got[k], want[k]) for k in got.keys() & want.keys() if got[k] != want[k]}
    return f"missing {missing}; unexpected {extra}; differing (got, want) {wrong}"


# -- one test per engine pair -----------------------------------------------------------------------
def pair_fixture(source_kind: str, target_kind: str) -> Any:
    """A fixture giving its test a fresh ``source_kind`` -> ``target_kind`` pair of databases.

    One fixture per pair, not a parametrized one: each pair's test has its own example budget and marks.
    """

    @pytest.fixture
    def made(make_db_url: MakeDbUrl) -> Iterator[Pair]:
        yield from open_pair(make_db_url, source_kind, target_kind)

    return made


sqlite_pair = pair_fixture("sqlite", "sqlite")
pg_pair = pair_fixture("postgresql", "postgresql")
pg_mysql_pair = pair_fixture("postgresql", "mysql")
mysql_pg_pair = pair_fixture("mysql", "postgresql")
mysql_pair = pair_fixture("mysql", "mysql")


def examples(n: int) -> Any:
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


@examples(100)
@given(data=st.data())
def test_random_changes_sqlite_to_sqlite(sqlite_pair: Pair, data: st.DataObject) -> None:
    """SQLite -> SQLite: after every round of random changes, the target is exactly what SPEC 4.1-4.3
    and 4.7 say (the window equals the source's; moved, deleted and NULL-stamped rows handled; every
    other row unchanged), the counts say so, and a second sync writes nothing.
    """
    run_property(sqlite_pair, data)


@pytest.mark.slow
@examples(40)
@given(data=st.data())
def test_random_changes_postgresql_to_postgresql(pg_pair: Pair, data: st.DataObject) -> None:
    """PostgreSQL -> PostgreSQL: the same property as for SQLite, through binary COPY and jsonb."""
    run_property(pg_pair, data)


@pytest.mark.slow
@examples(30)
@given(data=st.data())
def test_random_changes_mariadb_to_postgresql(mysql_pg_pair: Pair, data: st.DataObject) -> None:
    """MariaDB -> PostgreSQL: the same property across engines (naive DATETIME read as UTC, JSON kept
    as text by MariaDB, keys merged in code point order on both sides).
    """
    run_property(mysql_pg_pair, data)


@pytest.mark.slow
@examples(25)
@given(data=st.data())
def test_random_changes_postgresql_to_mariadb(pg_mysql_pair: Pair, data: st.DataObject) -> None:
    """PostgreSQL -> MariaDB: the same property into a MariaDB target (DATETIME(6), JSON as text,
    multi-table DELETE of the staged keys, text keys of every code point ordered by their UTF-8 bytes).
    """
    run_property(pg_mysql_pair, data)


@pytest.mark.slow
@examples(25)
@given(data=st.data())
def test_random_changes_mariadb_to_mariadb(mysql_pair: Pair, data: st.DataObject) -> None:
    """MariaDB -> MariaDB: the same property where integer-keyed ranges are compared by MariaDB's own
    CRC32 hash of the stored rows rather than the cross-engine mix."""
    run_property(mysql_pair, data)


# -- what the property found, pinned ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_row_restamped_earlier_than_target_copy_is_skipped_newer(make_db_url: MakeDbUrl, kind: str) -> None:
    """A synced row whose ``updated_at`` became NULL and was then set to an hour before W is not in
    W any more, and its target copy (in W) is newer: the target keeps it (SPEC 4.9) and every run says
    so as ``skipped_newer``, reporting nothing updated (it reported one update per run, writing none).
    """
    pair = make_pair(make_db_url, kind, kind)
    schema = Schema("integer", ["c_int"])
    table = schema.table()
    table.create(pair.source.engine)
    insert(pair.source, table, [{"id": 1, "updated_at": W.start + timedelta(minutes=5), "c_int": 1}])
    config = table_config(TABLE)
    assert pair.sync(config).inserted == 1
    before = read_rows(pair.target, TABLE, ["id"], schema.all_columns)
    for stamp_ in (None, W.start - timedelta(minutes=5)):
        with pair.source.engine.begin() as conn:
            conn.execute(table.update().values(updated_at=storable(pair.source, stamp_), c_int=2))

    for _ in range(2):
        stats = pair.sync(config)
        assert counts(stats, *CHANGE_COUNTS, "skipped_newer") == {
            "inserted": 0,
            "updated": 0,
            "deleted": 0,
            "skipped_newer": 1,
        }
        assert read_rows(pair.target, TABLE, ["id"], schema.all_columns) == before
