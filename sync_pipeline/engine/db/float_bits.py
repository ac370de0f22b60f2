"""A double's canonical text: the 16 hex digits of its IEEE 754 bits, which every engine can compute.

Decimal text is not a common form: PostgreSQL prints the shortest round-trip digits as ``100`` and
``1e+15``, MariaDB the same digits as ``100`` and ``1e15``, Python ``100.0`` and ``1000000000000000.0``,
and SQLite 15 significant digits (two doubles a few ulps apart print alike). The bits are one
integer per value whatever the printer: PostgreSQL sends them (``float8send``), MariaDB/MySQL
computes them exactly from the value (a power of two scales a double without rounding), SQLite
calls :func:`float_bits` itself. Two values have equal bits exactly when they are equal as doubles,
except -0.0, taken for 0.0 (MariaDB stores -0 as 0, so a -0 copied there must compare equal), and
NaN, whose payloads and sign are all one NaN (PostgreSQL calls every NaN equal): the equality the
text ``repr(value + 0.0)`` gave before.
"""

from __future__ import annotations

import math
import struct

NAN_BITS = "7ff8000000000000"  # the quiet NaN every NaN is printed as

_DOUBLE = struct.Struct(">d")


def float_bits(value: object) -> str | None:
    """The bits of ``value`` read as a double: a float, or the int or text a loosely typed column holds."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]  # SQLite may hand back int or str, as the driver does
    if math.isnan(number):
        return NAN_BITS
    return _DOUBLE.pack(number + 0.0).hex()
