"""Whole-row comparison agrees with the canonical-text comparison, on every type and engine pair.

Verification and drift checks compare rows by a hash: the engine's own hash of the stored values
between two tables of one engine (PostgreSQL's per-type extended hashes, MariaDB's product of two CRC32s),
md5 of the canonical text across engines, and the canonical text printed in Python where no engine
can print it alike (JSON across engines; doubles print their IEEE bits in every engine's SQL).
Whichever is used, a row must count as different exactly when the canonical text of one of its
columns differs (:func:`python_text`, the reference).

Hypothesis draws rows of every family the engine compares, the sync copies them (creating the
target), and then some target rows are tampered with: a column set to NULL, to another value, or to
a near one (a microsecond, the last decimal place, a flipped byte, JSON keys reordered). The keys the
engine finds different, the range checksums and ``verify_partition`` must all agree with the
reference read back from both tables. A second test pins that each single-column change is seen by
the native hash of each engine.
"""

from __future__ import annotations

import math
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import mysql

from sync_pipeline.engine.db.canonical import python_text
from sync_pipeline.engine.db.engine import open_engine
from sync_pipeline.engine.db.schema import family_of
from sync_pipeline.engine.diff.segments import KeyRange
from sync_pipeline.engine.plan import SyncPlan, plan_sync, with_row_comparison
from sync_pipeline.engine.verify import verify_partition
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    TS,
    Pair,
    W,
    make_pair,
    open_pair,
    reflect,
    storable,
    table_config,
    update,
)
from sync_pipeline_tests.test_float_bits import ADVERSARIAL_FLOATS

TABLE = "hashed"

# -- values -----------------------------------------------------------------------------------------
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=10)
JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT
JSON_DOCS = st.lists(JSON_SCALARS, max_size=3) | st.dictionaries(TEXT, JSON_SCALARS, min_size=1, max_size=4)
# Any double, and often one of those where a printed or computed form is easily one bit off.
FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=64) | st.sampled_from(ADVERSARIAL_FLOATS)


def _near_json(value: Any) -> Any:
    """The same document with its keys in reverse order (equal), or a list one element longer."""
    if isinstance(value, dict):
        return dict(reversed(list(value.items())))
    return [*value, 0]


@dataclass(frozen=True)
class Kind:
    """A column type, how to draw its values, and a value next to a given one."""

    type_: sa.types.TypeEngine[Any]
    values: st.SearchStrategy[Any]
    near: Callable[[Any], Any]


KINDS: dict[str, Kind] = {
    "c_int": Kind(sa.BigInteger(), st.integers(-(2**63), 2**63 - 1), lambda v: v + 1 if v < 2**63 - 1 else 0),
    "c_small": Kind(sa.Integer(), st.integers(-(2**31), 2**31 - 1), lambda v: -v - 1),
    "c_text": Kind(sa.String(60), TEXT, lambda v: "" if v else " "),
    "c_num": Kind(
        sa.Numeric(14, 6),
        st.decimals(-(10**8) + 1, 10**8 - 2, places=6, allow_nan=False, allow_infinity=False),
        lambda v: v + Decimal("0.000001"),
    ),
    "c_float": Kind(sa.Double(), FLOATS, lambda v: math.nextafter(v, math.inf)),
    "c_ts": Kind(
        TS,
        st.datetimes(datetime(1900, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
        lambda v: v + timedelta(microseconds=1),
    ),
    "c_date": Kind(sa.Date(), st.dates(date(1900, 1, 1), date(2100, 1, 1)), lambda v: v + timedelta(days=1)),
    "c_time": Kind(
        sa.Time().with_variant(mysql.TIME(fsp=6), "mysql", "mariadb"),
        st.times(),
        lambda v: (datetime.combine(date(2000, 1, 1), v) + timedelta(microseconds=1)).time(),
    ),
    "c_bool": Kind(sa.Boolean(), st.booleans(), lambda v: not v),
    "c_bytes": Kind(
        sa.LargeBinary(), st.binary(max_size=12), lambda v: v[:-1] + bytes([v[-1] ^ 1]) if v else b"\0"
    ),
    "c_json": Kind(sa.JSON(none_as_null=True), JSON_DOCS, _near_json),
    "c_uuid": Kind(sa.Uuid(), st.uuids(version=4), lambda v: uuid.UUID(int=v.int ^ 1)),
}


def source_table(columns: list[str]) -> sa.Table:
    return sa.Table(
        TABLE,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", TS, nullable=False),
        *(sa.Column(name, KINDS[name].type_, nullable=True) for name in columns),
    )


# -- the two comparisons ----------------------------------------------------------------------------
def canonical_rows(
    pair: Pair, columns: list[str]
) -> tuple[dict[int, tuple[str, ...]], dict[int, tuple[str, ...]]]:
    """Every row of both tables as the canonical text of each column, read through the source's families."""
    source, target = reflect(pair.source, TABLE), reflect(pair.target, TABLE)
    names = ["id", "updated_at", *columns]
    texts = [python_text(family_of(source.c[c].type), zone="UTC", divisor=1) for c in names]

    def read(side_table: sa.Table, engine: sa.Engine) -> dict[int, tuple[str, ...]]:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(*(side_table.c[c] for c in names))).all()
        return {row[0]: tuple(text(v) for text, v in zip(texts, row, strict=True)) for row in rows}

    return read(source, pair.source.engine), read(target, pair.target.engine)


def engine_comparison(pair: Pair) -> tuple[SyncPlan, dict[int, bool], bool | None]:
    """The plan, which keys its row fingerprints call different, and whether its checksums are equal."""
    config = table_config(TABLE)
    with open_engine(pair.source.url) as s, open_engine(pair.target.url) as t:
        plan = with_row_comparison(plan_sync(config, s, t, create_target=False))
        assert plan.target is not None

        def fingerprints(side: Any, engine: sa.Engine) -> dict[int, int]:
            with engine.connect() as conn:
                return {k: h for chunk in side.key_stream(conn, W, KeyRange(), 3) for k, h in chunk}

        src, tgt = fingerprints(plan.source, s), fingerprints(plan.target, t)
        assert src.keys() == tgt.keys()
        equal_sums = None
        if plan.hash_compare:
            with s.connect() as sc, t.connect() as tc:
                equal_sums = plan.source.checksum(sc, W)[0] == plan.target.checksum(tc, W)[0]
    return plan, {k: src[k] != tgt[k] for k in src}, equal_sums


def assert_agreement(pair: Pair, columns: list[str], *, native: bool = False) -> set[int]:
    """The engine's comparison of the window equals the canonical text's; returns the differing keys.

    ``native``: the plan must compare by the engine's own hash (no column printed in Python).
    """
    source, target = canonical_rows(pair, columns)
    expected = {k for k in source if source[k] != target[k]}
    plan, differing, equal_sums = engine_comparison(pair)
    if native:
        assert plan.source.row_fingerprint is not None
        assert plan.target.row_fingerprint is not None
    found = {k for k, different in differing.items() if different}
    assert found == expected, {k: (source[k], target[k]) for k in found ^ expected}
    assert equal_sums in (None, not expected)
    assert verify_partition(table_config(TABLE), pair.source.url, pair.target.url, W).rows_differing == len(
        expected
    )
    return expected


# -- the property -----------------------------------------------------------------------------------
def run_property(pair: Pair, data: st.DataObject) -> None:
    columns = data.draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=5, unique=True))
    table = source_table(columns)
    for side in (pair.source, pair.target):
        with side.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {TABLE}"))
    table.create(pair.source.engine)
    n = data.draw(st.integers(1, 6), label="rows")
    rows = [
        {"id": i, "updated_at": W.start + timedelta(seconds=i)}
        | {c: data.draw(st.none() | KINDS[c].values, label=c) for c in columns}
        for i in range(1, n + 1)
    ]
    with pair.source.engine.begin() as conn:
        conn.execute(table.insert(), [{k: storable(pair.source, v) for k, v in row.items()} for row in rows])
    stats = pair.sync(table_config(TABLE))
    assert stats.inserted == n

    tampered = data.draw(
        st.lists(st.sampled_from(rows), max_size=n, unique_by=lambda r: r["id"]), label="tampered"
    )
    for row in tampered:
        column = data.draw(st.sampled_from(columns), label="column")
        how = data.draw(st.sampled_from(["null", "other", "near"]), label="how")
        old = row[column]
        if how == "null" or (how == "near" and old is None):
            new = None if how == "null" else data.draw(KINDS[column].values)
        elif how == "near":
            new = KINDS[column].near(old)
        else:
            new = data.draw(KINDS[column].values, label="new")
        if column == "c_uuid" and pair.source.kind == "sqlite" and new is not None:
            # SQLite has no uuid type: the source holds 32 hex digits, and so does the text column
            # the sync created in the target.
            target = reflect(pair.target, TABLE)
            update(pair.target, target, target.c.id == row["id"], c_uuid=new.hex)
        else:
            update(pair.target, table, table.c.id == row["id"], **{column: new})
    differing = assert_agreement(pair, columns)
    # A row the sync copied and nobody touched is equal: the reference itself is no false drift.
    assert differing <= {row["id"] for row in tampered}


def examples(n: int) -> Any:
    # No shrinking: every example syncs on real servers, and shrinking one took over five minutes;
    # the failing example is printed as drawn.
    return settings(
        max_examples=n,
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


ENGINES = ("postgresql", "mysql", "sqlite")
ENGINE_PAIRS = [(source, target) for source in ENGINES for target in ENGINES]  # all nine


@pytest.fixture(params=ENGINE_PAIRS, ids=[f"{s}->{t}" for s, t in ENGINE_PAIRS])
def engine_pair(request: pytest.FixtureRequest, make_db_url: MakeDbUrl) -> Iterator[Pair]:
    yield from open_pair(make_db_url, *request.param)


@pytest.mark.slow
@examples(15)
@given(data=st.data())
def test_row_comparison_agrees_with_canonical_text(engine_pair: Pair, data: st.DataObject) -> None:
    """On every engine pair, the keys whose rows compare different (per-key fingerprints, range
    checksums and verification) are exactly those whose canonical text differs in some column."""
    run_property(engine_pair, data)


# -- each single-column change, seen by the native hash ---------------------------------------------
BASE: dict[str, Any] = {
    "c_int": 7,
    "c_small": 7,
    "c_text": "a",
    "c_num": Decimal("1.500000"),
    "c_float": 0.1,
    "c_ts": W.start + timedelta(minutes=30, microseconds=5),
    "c_date": date(2026, 11, 30),
    "c_time": time(8, 5, 0, 7),
    "c_bool": True,
    "c_bytes": b"\x00\xff",
    "c_json": {"a": 1, "b": [1, "x"]},
    "c_uuid": uuid.UUID(int=7),
}
# One change per row: column, new value. The JSON keys reordered are the same document: no change.
CHANGES: list[tuple[str, Any, bool]] = [
    ("c_int", 8, True),
    ("c_int", 2**32 + 6, True),  # PostgreSQL's bigint hash folds it to 7's 32 bits (hi ^ lo)
    ("c_small", -7, True),
    ("c_text", "", True),
    ("c_text", None, True),
    ("c_text", "a ", True),
    ("c_num", Decimal("1.500001"), True),
    ("c_float", 0.1 + 2**-56, True),  # the last bit: 15 printed digits (SQLite's CAST) do not see it
    ("c_ts", BASE["c_ts"] + timedelta(microseconds=1), True),
    ("c_date", date(2026, 12, 1), True),
    ("c_time", time(8, 5, 0, 8), True),
    ("c_bool", False, True),
    ("c_bytes", b"\x00\xfe", True),
    ("c_bytes", b"", True),
    ("c_json", {"a": 1, "b": [1, "y"]}, True),
    ("c_json", None, True),
    ("c_uuid", uuid.UUID(int=8), True),
    ("c_json", {"b": [1, "x"], "a": 1}, False),
]


@pytest.mark.parametrize("kind", ["postgresql", "mysql", "sqlite"])
def test_each_one_column_change_is_found_by_the_native_hash(make_db_url: MakeDbUrl, kind: str) -> None:
    """A row differing in one column only (a microsecond, the last decimal place, the last bit of a
    double, '' for NULL, one byte, one JSON value) is found, and only it; JSON with its keys
    reordered is the same value. Two SQLite files have no native hash: their canonical text (doubles
    as their bits in SQL, JSON printed in Python)."""
    pair = make_pair(make_db_url, kind, kind)
    # MariaDB's uuid column becomes a varchar(36) in a target the sync creates: compared in Python.
    columns = [c for c in sorted(KINDS) if (kind, c) != ("mysql", "c_uuid")]
    table = source_table(columns)
    table.create(pair.source.engine)
    with pair.source.engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    k: storable(pair.source, v)
                    for k, v in ({"id": i, "updated_at": W.start + timedelta(seconds=i)} | BASE).items()
                    if k in table.c
                }
                for i in range(1, len(CHANGES) + 2)
            ],
        )
    pair.sync(table_config(TABLE))
    native = kind != "sqlite"
    assert assert_agreement(pair, columns, native=native) == set()
    for i, (column, value, _) in enumerate(CHANGES, start=1):
        if column in columns:
            update(pair.target, table, table.c.id == i, **{column: value})
    differing = assert_agreement(pair, columns, native=native)
    # MariaDB keeps JSON as the text it was given: reordered keys are another text, so a change.
    changed = {
        i
        for i, (c, _, change) in enumerate(CHANGES, start=1)
        if c in columns and (change or (kind, c) == ("mysql", "c_json"))
    }
    assert differing == changed
    pair.source.engine.dispose()
    pair.target.engine.dispose()


# -- doubles across engines, compared in SQL --------------------------------------------------------
# Every pair whose doubles are compared by their canonical text rather than an engine's own hash.
TEXT_PAIRS = [(s, t) for s, t in ENGINE_PAIRS if s != t or s == "sqlite"]


def _one_bit_off(value: float) -> float:
    return math.nextafter(value, 0) if value else 5e-324


@pytest.mark.parametrize(("source", "target"), TEXT_PAIRS, ids=[f"{s}->{t}" for s, t in TEXT_PAIRS])
def test_doubles_across_engines_are_compared_in_sql_to_the_last_bit(
    make_db_url: MakeDbUrl, source: str, target: str
) -> None:
    """Doubles copied between two engines (or two SQLite files) verify clean with no row printed in
    Python and the range checksums in use; a value one bit off is found, and only it; -0.0 for 0.0
    (and back) is no change, as MariaDB stores -0.0 as 0.0."""
    pair = make_pair(make_db_url, source, target)
    values = [*ADVERSARIAL_FLOATS]
    if "mysql" not in (source, target):
        values += [math.inf, -math.inf]
    table = source_table(["c_float"])
    table.create(pair.source.engine)
    rows = dict(enumerate(values, start=1))
    with pair.source.engine.begin() as conn:
        conn.execute(
            table.insert(),
            [{"id": i, "updated_at": W.start + timedelta(seconds=i), "c_float": v} for i, v in rows.items()],
        )
    pair.sync(table_config(TABLE))
    plan, _, _ = engine_comparison(pair)
    assert plan.hash_compare
    assert plan.source.row_texts is None
    assert plan.target.row_texts is None
    assert assert_agreement(pair, ["c_float"]) == set()

    changes = {i: _one_bit_off(v) for i, v in rows.items() if math.isfinite(v)}
    changes |= {i: -v for i, v in rows.items() if v == 0}  # the sign of zero: no change
    for i, new in changes.items():
        update(pair.target, table, table.c.id == i, c_float=new)
    found = assert_agreement(pair, ["c_float"])
    assert found == {i for i, v in rows.items() if math.isfinite(v) and v != 0}
    pair.source.engine.dispose()
    pair.target.engine.dispose()


# -- the Python fallback holds a bounded number of bytes --------------------------------------------
def test_wide_rows_compared_in_python_are_read_in_batches_bounded_in_bytes(
    make_db_url: MakeDbUrl,
) -> None:
    """JSON from PostgreSQL into SQLite is compared in Python. With 1 MB documents and the default
    ``chunk_size`` (10,000 rows), the rows of a batch must still weigh about the byte budget, not
    the whole window: the comparison's peak of Python memory stays under a few budgets (it held
    every row of the window at once before, 1.28 GB for a window like this one from PostgreSQL
    into MariaDB)."""
    pair = make_pair(make_db_url, "postgresql", "sqlite")
    documents = sa.Table(
        TABLE,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("doc", sa.JSON),
    )
    documents.create(pair.source.engine)
    rows = 60
    with pair.source.engine.begin() as conn:
        for i in range(1, rows + 1):
            doc = {"id": i, "blob": chr(ord("a") + i % 26) * 1_000_000}
            conn.execute(
                documents.insert(), [{"id": i, "updated_at": W.start + timedelta(seconds=i), "doc": doc}]
            )
    config = table_config(TABLE, chunk_size=10_000, chunk_bytes=4 * 1024 * 1024)
    assert pair.sync(config).inserted == rows

    tracemalloc.start()
    try:
        verification = verify_partition(config, pair.source.url, pair.target.url, W)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert verification.in_sync
    assert verification.keys_scanned == 2 * rows  # every row compared in Python, on both sides
    # Both sides read at once: each holds one batch of about 4 MB (its text, its parsed JSON, its
    # canonical text). The whole window is 60 MB per side.
    assert peak < 48 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"
    pair.source.engine.dispose()
    pair.target.engine.dispose()


# Documents a structural hash confuses easily, each pair one change: PostgreSQL's jsonb hash is the
# same for every empty container, and for a scalar and the array holding only it (``5`` and
# ``[5]``: a scalar is stored as a one-element array); a record hash gives a NULL field what it
# gives [[]].
JSON_LOOKALIKES: list[tuple[Any, Any]] = [
    ({}, []),
    ([], {}),
    ([[]], None),
    (None, [[]]),
    ({}, None),
    ([], None),
    ([0], [[0]]),
    ({"a": []}, {"a": {}}),
    (5, [5]),
    (["a"], "a"),
    ([None], None),
    ([{}], [[]]),
    ({"a": {"b": []}}, {"a": {"b": {}}}),
]


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_empty_json_containers_and_null_are_told_apart_by_the_native_hash(
    make_db_url: MakeDbUrl, kind: str
) -> None:
    """Each row whose JSON became a look-alike (``{}`` for ``[]``, ``[[]]`` for NULL) is found, and
    a row left alone is not."""
    pair = make_pair(make_db_url, kind, kind)
    table = source_table(["c_json"])
    table.create(pair.source.engine)
    rows = [(i, old) for i, (old, _) in enumerate(JSON_LOOKALIKES, start=1)]
    unchanged = len(rows) + 1
    with pair.source.engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"id": i, "updated_at": W.start + timedelta(seconds=i), "c_json": value}
                for i, value in [*rows, (unchanged, {})]
            ],
        )
    pair.sync(table_config(TABLE))
    assert assert_agreement(pair, ["c_json"], native=True) == set()
    for i, (_, new) in enumerate(JSON_LOOKALIKES, start=1):
        update(pair.target, table, table.c.id == i, c_json=new)
    assert assert_agreement(pair, ["c_json"], native=True) == {i for i, _ in rows}
    pair.source.engine.dispose()
    pair.target.engine.dispose()


def test_not_null_columns_hash_as_their_nullable_counterparts(make_db_url: MakeDbUrl) -> None:
    """PostgreSQL hashes a NOT NULL column without the test for NULL: a side declaring the column
    NOT NULL and a side allowing NULL hash the same values alike, and a NULL or another value on the
    nullable side is still found."""
    pair = make_pair(make_db_url, "postgresql", "postgresql")
    columns = ["c_int", "c_text", "c_ts"]

    def table(nullable: bool) -> sa.Table:
        return sa.Table(
            TABLE,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("updated_at", TS, nullable=nullable),
            *(sa.Column(name, KINDS[name].type_, nullable=nullable) for name in columns),
        )

    source, target = table(nullable=False), table(nullable=True)
    source.create(pair.source.engine)
    target.create(pair.target.engine)
    rows = [
        {"id": i, "updated_at": W.start + timedelta(seconds=i), "c_int": 2**32 + i, "c_text": f"t{i}",
         "c_ts": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=i)}
        for i in range(1, 6)
    ]  # fmt: skip
    for side, created in ((pair.source, source), (pair.target, target)):
        with side.engine.begin() as conn:
            conn.execute(created.insert(), rows)
    config = table_config(TABLE)
    assert verify_partition(config, pair.source.url, pair.target.url, W).in_sync
    update(pair.target, target, target.c.id == 1, c_int=None)
    update(pair.target, target, target.c.id == 2, c_ts=rows[1]["c_ts"] + timedelta(microseconds=1))
    update(pair.target, target, target.c.id == 3, c_text=None)
    assert verify_partition(config, pair.source.url, pair.target.url, W).rows_differing == 3
    pair.source.engine.dispose()
    pair.target.engine.dispose()


def test_a_null_column_does_not_hide_the_rest_of_its_row(make_db_url: MakeDbUrl) -> None:
    """A NULL in a nullable column hashes as its own constant: a row holding one on both sides is
    still compared by its other columns (without that, the row's hash would be NULL on both sides,
    left out of both sums alike)."""
    pair = make_pair(make_db_url, "postgresql", "postgresql")
    table = source_table(["c_int", "c_text"])
    table.create(pair.source.engine)
    with pair.source.engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"id": i, "updated_at": W.start + timedelta(seconds=i), "c_int": None, "c_text": "a"}
                for i in (1, 2)
            ],
        )
    config = table_config(TABLE)
    pair.sync(config)
    assert verify_partition(config, pair.source.url, pair.target.url, W).in_sync
    target = reflect(pair.target, TABLE)
    update(pair.target, target, target.c.id == 1, c_text="b")
    assert verify_partition(config, pair.source.url, pair.target.url, W).rows_differing == 1
    pair.source.engine.dispose()
    pair.target.engine.dispose()
