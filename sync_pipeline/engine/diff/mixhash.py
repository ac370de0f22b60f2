"""A 62-bit hash of ``(integer key, updated_at micros)`` that every engine computes exactly in SQL.

Why not md5: the hourly sync compares ``updated_at`` per key, and hashing the text of both with md5
costs about a microsecond a row (formatting, md5, hex to bits) — most of an unchanged window's check.
Integer arithmetic costs a fraction of that on PostgreSQL, MariaDB and SQLite alike, and gives the same
bits everywhere as long as every intermediate value stays inside signed 64 bits and ``%`` and integer
division truncate toward zero (all three engines do; Python emulates it below).

Construction: with ``P = 2**31 - 1`` the key and the micros are split into words ``k = kh*P + kl`` and
``m = mh*P + ml`` (truncating), and each of two lanes is the product, mod ``P``, of two different
linear forms of those words. A product of two forms is not linear, so changes of two rows do not cancel
in the window's sum (as they would for a linear hash: one row's ``updated_at`` up by d, another's down
by d). Both lanes together give 62 bits; sums are compared modulo ``2**63`` like the md5 sums.

Bounds: ``|kl|, |ml| < 2**31``, constants ``< 2**30``, ``|kh|, |mh| < 2**32``: each form is below
``2**62`` before its ``% P``, each product below ``2**62``, the combined hash below ``2**62 + 2**31``.

Full-row comparison (verification, drift) keeps hashing canonical text with md5: it has to hash values
of every type, not two integers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

P = 2_147_483_647  # 2**31 - 1, prime
LANE_SHIFT = 1 << 31
# (a, b, c) of each linear form a*kl + b*ml + (kh or mh) + c; two forms per lane, two lanes.
# Fixed forever: changing them makes every window of every table look changed once (harmless, but a
# full key scan of each). Odd, below 2**30, no structure.
FORMS: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...] = (
    ((1_029_415_173, 771_683_927, 506_102_327), (883_515_059, 964_150_001, 293_041_577)),
    ((612_798_433, 1_055_133_401, 178_884_419), (937_261_091, 442_612_367, 811_376_449)),
)


def _tmod(value: int, modulus: int) -> int:
    """``value % modulus`` truncated toward zero, as SQL engines compute it (sign of the dividend)."""
    rest = abs(value) % modulus
    return -rest if value < 0 else rest


def mix62(key: int, micros: int) -> int:
    """The reference implementation, in Python: what the SQL of :func:`mix62_sql` computes."""
    kl = _tmod(key, P)
    kh = (key - kl) // P  # exact: key - kl is a multiple of P
    ml = _tmod(micros, P)
    mh = (micros - ml) // P
    lanes = []
    for (a1, b1, c1), (a2, b2, c2) in FORMS:
        first = _tmod(a1 * kl + b1 * ml + kh + c1, P)
        second = _tmod(b2 * ml + a2 * kl + mh + c2, P)
        lanes.append(_tmod(first * second, P))
    return lanes[0] * LANE_SHIFT + lanes[1]


def mix62_sql(
    key: ColumnElement[Any],
    micros: ColumnElement[Any],
    int_div: Callable[[ColumnElement[Any], ColumnElement[Any]], ColumnElement[Any]],
) -> ColumnElement[int]:
    """The same hash as a SQL expression over two signed 64-bit integer expressions.

    ``int_div`` is the engine's truncating integer division (``/`` on integers, MySQL's ``DIV``).
    ``key`` and ``micros`` each appear several times: pass plain column references (a subquery's
    columns) where computing them is costly, so each row computes them once.
    """

    def const(value: int) -> ColumnElement[Any]:
        return sa.literal_column(str(value), sa.BigInteger)

    p = const(P)
    kl = key % p
    kh = int_div(key, p)  # truncating: key == kh * P + kl exactly
    ml = micros % p
    mh = int_div(micros, p)
    lanes = []
    for (a1, b1, c1), (a2, b2, c2) in FORMS:
        first = (kl * const(a1) + ml * const(b1) + kh + const(c1)) % p
        second = (ml * const(b2) + kl * const(a2) + mh + const(c2)) % p
        lanes.append((first * second) % p)
    return sa.type_coerce(lanes[0] * const(LANE_SHIFT) + lanes[1], sa.BigInteger)
