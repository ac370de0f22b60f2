"""Each engine computes a double's canonical text, its IEEE bits in hex, exactly as Python does.

Whole-row comparison across engines joins each column's canonical text in SQL; a double is printed
as its bits (:mod:`~sync_pipeline.engine.db.float_bits`), which PostgreSQL sends, MariaDB computes
by exact arithmetic and SQLite asks of Python. One wrong bit anywhere, or a decimal text in place of
the bits, is a false drift on every run or a drift never seen: every value below must print the
same bits in the database as :func:`float_bits` gives for the value read back.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync_pipeline.engine.db.dialects import adapter_for
from sync_pipeline.engine.db.engine import open_engine
from sync_pipeline.engine.db.float_bits import NAN_BITS, float_bits
from sync_pipeline_tests.conftest import MakeDbUrl

# Values where an exponent or a fraction computed from the value is easily one off: subnormals and
# the least normal, powers of two and their neighbours (log2 rounds up just below them), the largest
# double (log2 rounds it to 1024), sums that are not their decimal (0.1 + 0.2), -0.0.
ADVERSARIAL_FLOATS: list[float] = [
    0.0,
    -0.0,
    0.1 + 0.2,
    0.3,
    1 / 3,
    1e308,
    -1e308,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    5e-324,
    -5e-324,
    1e-323,
    2.225073858507201e-308,  # the largest subnormal
    2.2250738585072014e-308,  # the least normal
    1e15,
    1e16,
    1e-5,
    100.0,
    2.0**53 + 2,
    123456789.123456789,
    *(value for k in (-1022, -1, 0, 1, 52, 1023) for value in (2.0**k, math.nextafter(2.0**k, 0))),
    math.nextafter(1.0, 2),
]
SPECIALS = [math.inf, -math.inf, math.nan, -math.nan]  # PostgreSQL and SQLite store infinities


def table() -> sa.Table:
    return sa.Table(
        "doubles",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("x", sa.Double),
    )


def bits_in_sql(url: str, values: list[float | None]) -> list[tuple[Any, str | None, str | None]]:
    """(value read back, bits printed by the database, bits printed by Python) of each value."""
    doubles = table()
    with open_engine(url) as engine:
        doubles.drop(engine, checkfirst=True)
        doubles.create(engine)
        with engine.begin() as conn:
            conn.execute(doubles.insert(), [{"id": i, "x": v} for i, v in enumerate(values)])
        adapter = adapter_for(engine.dialect.name)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(doubles.c.x, adapter.float_bits(doubles.c.x)).order_by(doubles.c.id)
            ).all()
    return [(value, printed, float_bits(value)) for value, printed in rows]


@pytest.mark.parametrize("engine", ["postgresql", "mysql", "sqlite"])
def test_adversarial_doubles_print_the_same_bits_in_sql_and_python(
    make_db_url: MakeDbUrl, engine: str
) -> None:
    """Every adversarial double, and NULL, prints the same bits in the database as in Python; -0.0
    prints as 0.0, and on PostgreSQL every NaN (the negative one arithmetic makes too) as one."""
    url = make_db_url(engine, "db")
    values: list[float | None] = [*ADVERSARIAL_FLOATS, None]
    if engine != "mysql":
        values += SPECIALS
    rows = bits_in_sql(url, values)
    assert [printed for _, printed, _ in rows] == [expected for _, _, expected in rows]
    assert rows[1][1] == rows[0][1] == "0000000000000000"  # -0.0 as 0.0
    if engine == "postgresql":
        assert [printed for _, printed, _ in rows[-2:]] == [NAN_BITS, NAN_BITS]
        # x86 makes a NaN of its invalid operations negative: inf - inf is sent as fff8...
        negative_nan = sa.literal_column("CAST('Infinity' AS float8) - CAST('Infinity' AS float8)", sa.Double)
        with open_engine(url) as db, db.connect() as conn:
            sent = conn.execute(sa.select(sa.func.encode(sa.func.float8send(negative_nan), "hex"))).scalar()
            printed = conn.execute(sa.select(adapter_for("postgresql").float_bits(negative_nan))).scalar()
        assert (sent, printed) == ("fff8000000000000", NAN_BITS)


@pytest.mark.parametrize("engine", ["postgresql", "mysql", "sqlite"])
def test_any_double_prints_the_same_bits_in_sql_and_python(make_db_url: MakeDbUrl, engine: str) -> None:
    """Doubles drawn from the whole range (every exponent, subnormals) print alike in SQL and Python."""
    url = make_db_url(engine, "db")

    @settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=200))
    def check(values: list[float]) -> None:
        rows = bits_in_sql(url, list(values))
        assert [printed for _, printed, _ in rows] == [expected for _, _, expected in rows]

    check()
