"""Converting a source row's values into what the target column stores, without losing anything.

Drivers hand back Python values (``Decimal``, aware or naive ``datetime``, parsed JSON, ``bytes``); the
target may want another shape for the same meaning: a wall time in a zone instead of an instant, a
``bool`` instead of MySQL's ``TINYINT(1)``, text instead of a UUID. Converters are chosen once per
column, and only where the shapes differ, so the common case costs nothing per row.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from sync_pipeline.engine.db.schema import Family
from sync_pipeline.engine.diff.window import in_zone
from sync_pipeline.errors import DataError

Converter = Callable[[Any], Any]


def _instant(value: Any, source_zone: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        return (value if value.tzinfo else in_zone(value, source_zone)).astimezone(UTC)
    if isinstance(value, date):
        return in_zone(datetime.combine(value, time()), source_zone).astimezone(UTC)
    if isinstance(value, str):
        return _instant(datetime.fromisoformat(value), source_zone)
    raise TypeError(f"cannot read {type(value).__name__} as a timestamp")


class _ToTimestamp:
    """A timestamp read in ``source_zone``, as the target column holds it (an instant, or a wall time
    in ``target_zone``), floored to the target's precision."""

    def __init__(self, *, source_zone: str, target_zone: str, naive: bool, divisor: int) -> None:
        self.source_zone = ZoneInfo(source_zone)
        self.target_zone = ZoneInfo(target_zone)
        self.naive = naive
        self.divisor = divisor
        # Read in UTC, held as an instant or a UTC wall time, nothing floored: the source's own text
        # of the value, read as UTC, is the value (no wall time moved out of a DST gap, no rounding).
        self.keeps_utc_text = source_zone == "UTC" and (not naive or target_zone == "UTC") and divisor == 1

    def __call__(self, value: Any) -> datetime | None:
        if value is None:
            return None
        moment = _instant(value, self.source_zone)
        if self.divisor > 1:
            moment = moment.replace(microsecond=moment.microsecond - moment.microsecond % self.divisor)
        return moment.astimezone(self.target_zone).replace(tzinfo=None) if self.naive else moment


def _to_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _json_to_text(value: Any) -> str | None:
    # Every JSON value, a string or a boolean included, as its JSON text ("x" -> '"x"', True -> 'true').
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _to_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _to_decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    return Decimal(str(value))


def _to_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _to_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _to_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _to_uuid(value: Any) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


def _to_bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def converter(
    source: Family,
    target: Family,
    *,
    target_naive: bool,
    source_zone: str,
    target_zone: str,
    micros_divisor: int,
    native_uuid: bool,
) -> Converter | None:
    """The function turning a source value into the target column's value; ``None`` if none is needed."""
    if target is Family.TIMESTAMP:
        return _ToTimestamp(
            source_zone=source_zone, target_zone=target_zone, naive=target_naive, divisor=micros_divisor
        )
    if target is Family.TEXT and source is Family.JSON:
        return _json_to_text
    if target is Family.TEXT and source is not Family.TEXT:
        return _to_text
    if target is Family.JSON and source is not Family.JSON:
        return _to_json
    if target is Family.DECIMAL and source is not Family.DECIMAL:
        return _to_decimal
    if target is Family.FLOAT and source is not Family.FLOAT:
        return _to_float
    if target is Family.BOOLEAN and source is not Family.BOOLEAN:
        return _to_bool
    if target is Family.INTEGER and source is Family.BOOLEAN:
        return _to_int
    if target is Family.UUID:
        return _to_uuid if native_uuid else _to_text
    if target is Family.BINARY:
        return _to_bytes
    return None


class RowConverter:
    """Per-column converters applied to a row; the identity when no column needs one.

    Keeps its columns' converters, so that a path writing the source's own text of the values (see
    :func:`exact_from_text`) can keep their checks and drop the conversions.
    """

    def __init__(self, converters: Sequence[Converter | None]) -> None:
        self.converters = list(converters)
        self._active = [(i, fn) for i, fn in enumerate(self.converters) if fn is not None]

    def __call__(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        if not self._active:
            return row
        values = list(row)
        for i, fn in self._active:
            values[i] = fn(values[i])
        return tuple(values)


def row_converter(converters: Sequence[Converter | None]) -> RowConverter:
    """Apply per-column converters to a row; the identity when no column needs one."""
    return RowConverter(converters)


# Families whose values a MySQL/MariaDB source prints exactly as PostgreSQL reads them back (integers,
# decimals at their scale, text, dates, JSON text): the same value on both sides, nothing to convert.
_EXACT_TEXT_FAMILIES = frozenset({Family.INTEGER, Family.DECIMAL, Family.TEXT, Family.DATE, Family.JSON})


def exact_from_text(source: Family, target: Family, convert: Converter | None) -> bool:
    """Whether the target reading the source's text of a value stores exactly what ``convert`` gives.

    Then the value can travel as the source prints it, with no Python object built for it: the same
    family on both sides with nothing to convert; JSON text into a JSON column (parsed once, by the
    target: its numbers keep every digit, where a Python float would round them); a timestamp read and
    held in UTC at no lower precision (the text, marked as UTC, is the instant).
    """
    inner = convert.convert if isinstance(convert, Guarded) else convert
    if inner is None:
        return source is target and source in _EXACT_TEXT_FAMILIES
    if inner is _to_json:
        return source is Family.TEXT and target is Family.JSON
    if isinstance(inner, _ToTimestamp):
        return source is Family.TIMESTAMP and inner.keeps_utc_text
    return False


# -- values a target engine would refuse or silently change ------------------------------------------
Check = Callable[[Any], str | None]


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, Decimal) and not value.is_finite()


def _no_nul(value: Any) -> str | None:
    if isinstance(value, str) and "\x00" in value:
        return "the text contains a NUL character (\\x00), which PostgreSQL text cannot store"
    return None


def _finite(value: Any) -> str | None:
    if _non_finite(value):
        return f"{value} cannot be stored: MySQL/MariaDB numbers have no NaN or infinity"
    return None


def _not_nan(value: Any) -> str | None:
    if (isinstance(value, float) and math.isnan(value)) or (isinstance(value, Decimal) and value.is_nan()):
        return "NaN cannot be stored: SQLite stores a NaN as NULL"
    return None


def _survives_double(value: Any, scale: int) -> str | None:
    if not isinstance(value, Decimal | float):
        return None
    if (nan := _not_nan(value)) is not None:
        return nan
    # SQLite keeps a NUMERIC as a 64-bit float; SQLAlchemy reads it back rounded to the column's scale.
    stored = Decimal(f"{float(value):.{scale}f}")
    if stored != value:
        return f"{value} would be stored as {stored} (SQLite keeps decimals as 64-bit floats)"
    return None


def unstorable_check(target_dialect: str, target: Family, *, scale: int | None) -> Check | None:
    """What a target engine would refuse, or store as another value, of a value its column accepts.

    PostgreSQL text cannot hold NUL; MySQL/MariaDB numbers have no NaN or infinity; SQLite turns a
    NaN into NULL and keeps decimals as doubles. ``None`` when the target stores every value as is.
    """
    if target_dialect == "postgresql" and target is Family.TEXT:
        return _no_nul
    if target_dialect in ("mysql", "mariadb") and target in (Family.FLOAT, Family.DECIMAL):
        return _finite
    if target_dialect == "sqlite" and target is Family.FLOAT:
        return _not_nan
    if target_dialect == "sqlite" and target is Family.DECIMAL:
        return partial(_survives_double, scale=10 if scale is None else scale)
    return None


class Guarded:
    """A column's conversion followed by its check: a value the target cannot hold fails the sync
    as a DataError naming the column.

    So does a value the conversion cannot represent (an instant of year 9999 as a wall time east of
    UTC). Raised while the rows are staged, before anything is applied: the target is left as it was.
    """

    def __init__(self, convert: Converter | None, check: Check | None, where: str) -> None:
        self.convert = convert
        self.check = check
        self.where = where

    def __call__(self, value: Any) -> Any:
        converted = value
        if self.convert is not None:
            try:
                converted = self.convert(value)
            except OverflowError as error:
                raise DataError(
                    f"{self.where}: {value!r} has no equivalent in the target column ({error})"
                ) from error
        problem = None if self.check is None else self.check(converted)
        if problem is not None:
            raise DataError(
                f"{self.where}: {problem}; fix the source value or sync the column into a type that holds it"
            )
        return converted

    def checking_only(self) -> Guarded | None:
        """The check alone, for a value that needs no conversion (it travels as the source's text)."""
        return None if self.check is None else Guarded(None, self.check, self.where)


def guarded(convert: Converter | None, check: Check | None, where: str) -> Guarded | None:
    """``convert`` followed by ``check`` (see :class:`Guarded`); ``None`` when neither is needed."""
    if convert is None and check is None:
        return None
    return Guarded(convert, check, where)
