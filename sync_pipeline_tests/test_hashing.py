"""The integer mix hash of ``(key, updated_at micros)``: the same bits on every engine and in Python.

Range checksums are compared across engines (MariaDB into PostgreSQL, PostgreSQL into SQLite): if one
engine computed another value, equal windows would look different at every sync (a full key scan each
hour), or, for a hash that cancels, different windows could look equal. Each engine computes the hash
of awkward values in SQL here and must agree with the Python reference, bit for bit.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from sync_pipeline.config import TableConfig
from sync_pipeline.engine.db.dialects import adapter_for
from sync_pipeline.engine.db.engine import open_engine
from sync_pipeline.engine.db.side import TableSide
from sync_pipeline.engine.diff.mixhash import P, mix62
from sync_pipeline.engine.diff.segments import HASH_MODULUS
from sync_pipeline.engine.plan import plan_sync
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    CHANGE_COUNTS,
    Pair,
    W,
    counts,
    insert,
    make_pair,
    table_config,
    update,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOW_MICROS = int((datetime(2026, 11, 30, 8, 59, 59, 999999, tzinfo=UTC) - EPOCH) / timedelta(microseconds=1))

# Keys and micros at the edges of the word split (multiples of P, signs) and of signed 64 bits.
EDGE_KEYS = [0, 1, -1, P - 1, P, P + 1, -P, -P - 1, 2**31, 2**40 + 7, 2**62, -(2**62), 2**63 - 1, -(2**63)]
EDGE_MICROS = [0, 1, -1, P, -P, NOW_MICROS, NOW_MICROS + 1, -62_135_596_800_000_000, 253_402_300_799_999_999]


def _cases() -> list[tuple[int, int]]:
    rng = random.Random(5)
    cases = [(k, m) for k in EDGE_KEYS for m in EDGE_MICROS]
    cases += [(rng.randrange(-(2**63), 2**63), rng.randrange(-(2**62), 2**62)) for _ in range(200)]
    return cases


def test_reference_hash_is_62_bits_and_sensitive_to_each_input() -> None:
    """Every case gives a value under 2**62 in magnitude; a microsecond or a key step changes it."""
    for key, micros in _cases():
        value = mix62(key, micros)
        assert abs(value) < 2**62 + 2**31
        assert value != mix62(key, micros + 1)
        assert value != mix62(key + 1, micros) or key == 2**63 - 1


def test_changes_do_not_cancel_in_a_sum() -> None:
    """One row a millisecond later and another a millisecond earlier: the window's sum still differs.

    A linear hash would cancel these exactly; the product of two linear forms does not.
    """
    rng = random.Random(7)
    cancelled = 0
    for _ in range(2000):
        a, b = rng.sample(range(1, 10**6), 2)
        m = NOW_MICROS - rng.randrange(3_600_000_000)
        before = mix62(a, m) + mix62(b, m)
        after = mix62(a, m + 1000) + mix62(b, m - 1000)
        cancelled += (before - after) % HASH_MODULUS == 0
    assert cancelled == 0


@pytest.mark.parametrize("engine", ["postgresql", "mysql", "sqlite"])
def test_every_engine_computes_the_reference_hash(engine: str, make_db_url: MakeDbUrl) -> None:
    """The adapter's SQL of the mix (or SQLite's registered function) equals :func:`mix62` exactly."""
    cases = _cases()
    if engine == "sqlite":
        cases = [(k, m) for k, m in cases if -(2**63) <= k < 2**63]
    url = make_db_url(engine, "hashing")
    with open_engine(url) as db, db.connect() as conn:
        adapter = adapter_for(db.dialect.name)
        table = sa.Table(
            "cases",
            sa.MetaData(),
            sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("k", sa.BigInteger, nullable=False),
            sa.Column("m", sa.BigInteger, nullable=False),
        )
        table.create(conn)
        conn.execute(table.insert(), [{"n": i, "k": k, "m": m} for i, (k, m) in enumerate(cases)])
        hashed = conn.execute(
            sa.select(table.c.n, adapter.mix_hash(table.c.k, table.c.m)).order_by(table.c.n)
        ).all()
        in_sql = [int(value) for _, value in hashed]
        total = conn.execute(sa.select(adapter.hash_sum(adapter.mix_hash(table.c.k, table.c.m)))).scalar_one()
        conn.rollback()
    expected = [mix62(k, m) for k, m in cases]
    assert in_sql == expected
    assert int(total) % HASH_MODULUS == sum(expected) % HASH_MODULUS


# Instants whose micros are awkward: before 1970 with a fraction (whole seconds floor below it), the
# epoch itself, a second's last microsecond, and the ends of the years a DATETIME holds.
EDGE_INSTANTS = [
    datetime(1000, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    EPOCH,
    datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 11, 30, 8, 59, 59, 999_999, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
]


@pytest.mark.parametrize("divisor", [1, 1000])
@pytest.mark.parametrize("engine", ["postgresql", "mysql", "sqlite"])
def test_every_engine_reads_a_timestamp_as_the_same_micros(
    engine: str, divisor: int, make_db_url: MakeDbUrl
) -> None:
    """The micros each engine's SQL computes from a stored timestamp (the input of the mix, and what
    the key merge compares) are Python's, in units of the divisor floored: before 1970 and after."""
    url = make_db_url(engine, "micros")
    column_type = mysql.DATETIME(fsp=6) if engine == "mysql" else sa.DateTime(timezone=engine == "postgresql")
    with open_engine(url) as db, db.connect() as conn:
        adapter = adapter_for(db.dialect.name)
        naive = adapter.is_naive(column_type)
        table = sa.Table(
            "stamps",
            sa.MetaData(),
            sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("at", column_type, nullable=False),
        )
        table.create(conn)
        stored = [at.replace(tzinfo=None) if naive else at for at in EDGE_INSTANTS]
        conn.execute(table.insert(), [{"n": i, "at": at} for i, at in enumerate(stored)])
        micros = adapter.epoch_micros(table.c.at, naive=naive, zone="UTC", divisor=divisor)
        in_sql = [int(m) for m in conn.execute(sa.select(micros).order_by(table.c.n)).scalars()]
        conn.rollback()
    expected = [((at - EPOCH) // timedelta(microseconds=1)) // divisor for at in EDGE_INSTANTS]
    assert in_sql == expected


# -- Two tables on the same engine: the engine's own hash ---------------------------------------------
# The updated_at column of each kind at microsecond precision: an instant, and a wall time.
TIMESTAMP_TYPES: dict[tuple[str, bool], sa.types.TypeEngine[datetime]] = {
    ("postgresql", True): sa.DateTime(timezone=True),
    ("postgresql", False): sa.DateTime(timezone=False),
    ("mysql", True): mysql.TIMESTAMP(fsp=6),
    ("mysql", False): mysql.DATETIME(fsp=6),
}


def _events(ts: sa.types.TypeEngine[datetime], name: str = "events") -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("updated_at", ts, nullable=False),
    )


def _plan_sides(pair: Pair, config: TableConfig) -> tuple[TableSide, TableSide]:
    with open_engine(pair.source.url) as source, open_engine(pair.target.url) as target:
        plan = plan_sync(config, source, target, create_target=False)
    assert plan.target is not None
    return plan.source, plan.target


@pytest.mark.parametrize(
    ("engine", "aware"),
    list(TIMESTAMP_TYPES),
    ids=["postgresql-timestamptz", "postgresql-timestamp", "mysql-timestamp", "mysql-datetime"],
)
def test_same_engine_pair_hashes_natively_and_sees_one_microsecond(
    make_db_url: MakeDbUrl, engine: str, aware: bool
) -> None:
    """Between two tables on one engine, ranges are compared by that engine's own hash of the stored
    rows (a fraction of the exact micros arithmetic): a window settles with no key read, and one row
    moved by a microsecond, or two rows moved by +d and -d, is still found, in a window and in a range."""
    pair = make_pair(make_db_url, engine, engine)
    start = W.start if aware else W.start.replace(tzinfo=None)
    rows = [{"id": i, "updated_at": start + timedelta(seconds=i)} for i in range(1, 3001)]
    table = _events(TIMESTAMP_TYPES[engine, aware])
    table.create(pair.source.engine)
    table.create(pair.target.engine)  # the same type: a MariaDB target is made DATETIME, not TIMESTAMP
    insert(pair.source, table, rows)
    config = table_config("events", chunk_size=100)
    pair.sync(config)

    source, target = _plan_sides(pair, config)
    assert source.hashes_natively
    assert target.hashes_natively
    unchanged = pair.sync(config)
    assert (unchanged.keys_scanned, unchanged.ranges_compared, unchanged.unchanged) == (0, 1, 3000)

    update(pair.source, table, table.c.id == 1500, updated_at=start + timedelta(seconds=1500, microseconds=1))
    update(pair.source, table, table.c.id == 10, updated_at=start + timedelta(seconds=10, microseconds=7))
    update(pair.source, table, table.c.id == 11, updated_at=start + timedelta(seconds=11, microseconds=-7))
    stats = pair.sync(config)
    assert counts(stats, *CHANGE_COUNTS) == {"inserted": 0, "updated": 2, "deleted": 0}
    assert stats.skipped_newer == 1  # id 11 went back in time: the target's newer version is kept
    assert 0 < stats.keys_scanned < 3000, "the descent narrowed to the changed ranges"


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_native_hash_only_where_both_sides_store_the_same_kind_of_time(
    make_db_url: MakeDbUrl, engine: str
) -> None:
    """An instant column (timestamptz, MariaDB TIMESTAMP) into a wall-time one (timestamp, DATETIME)
    stores instants on one side and wall times on the other: the engine's hash of the stored values
    would differ for equal rows, so the exact micros and the cross-engine mix are used, and an
    unchanged window still settles with no key read."""
    pair = make_pair(make_db_url, engine, engine)
    source_table = _events(TIMESTAMP_TYPES[engine, True])
    source_table.create(pair.source.engine)
    insert(
        pair.source,
        source_table,
        [{"id": i, "updated_at": W.start + timedelta(seconds=i)} for i in range(1, 501)],
    )
    _events(TIMESTAMP_TYPES[engine, False]).create(pair.target.engine)
    config = table_config("events", chunk_size=100)
    first = pair.sync(config)
    assert first.inserted == 500

    source, target = _plan_sides(pair, config)
    assert not source.hashes_natively
    assert not target.hashes_natively
    assert source.mixes
    unchanged = pair.sync(config)
    assert (unchanged.keys_scanned, unchanged.ranges_compared, unchanged.unchanged) == (0, 1, 500)


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_native_hash_tells_keys_apart_whose_halves_xor_alike(make_db_url: MakeDbUrl, engine: str) -> None:
    """PostgreSQL's hash of a bigint folds its halves (hi XOR lo): keys 7 and 2**32 + 6 hash alike.
    A target holding 7 where the source holds 2**32 + 6, at the same updated_at, must still differ:
    the range's count is the same, so only the hash can tell, and the window is repaired."""
    pair = make_pair(make_db_url, engine, engine)
    table = _events(TIMESTAMP_TYPES[engine, True])
    table.create(pair.source.engine)
    table.create(pair.target.engine)
    common = [{"id": i, "updated_at": W.start + timedelta(seconds=i)} for i in range(100, 200)]
    at = W.start + timedelta(minutes=30)
    insert(pair.source, table, [*common, {"id": 2**32 + 6, "updated_at": at}])
    insert(pair.target, table, [*common, {"id": 7, "updated_at": at}])
    config = table_config("events", chunk_size=100)
    source, target = _plan_sides(pair, config)
    assert source.hashes_natively
    assert target.hashes_natively

    stats = pair.sync(config)
    assert counts(stats, *CHANGE_COUNTS) == {"inserted": 1, "updated": 0, "deleted": 1}
    assert pair.sync(config).unchanged == 101
