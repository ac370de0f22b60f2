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

from sync_pipeline.db.dialects import adapter_for
from sync_pipeline.db.engine import open_engine
from sync_pipeline.diff.mixhash import P, mix62
from sync_pipeline.diff.segments import HASH_MODULUS
from sync_pipeline_tests.conftest import MakeDbUrl

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
