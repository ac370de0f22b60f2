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
from sync_pipeline.errors import DataError

Converter = Callable[[Any], Any]


def _instant(value: Any, source_zone: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=source_zone)).astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=source_zone).astimezone(UTC)
    if isinstance(value, str):
        return _instant(datetime.fromisoformat(value), source_zone)
    raise TypeError(f"cannot read {type(value).__name__} as a timestamp")


def _to_timestamp(
    value: Any, *, source_zone: ZoneInfo, target_zone: ZoneInfo, naive: bool, divisor: int
) -> datetime | None:
    if value is None:
        return None
    moment = _instant(value, source_zone)
    if divisor > 1:
        moment = moment.replace(microsecond=moment.microsecond - moment.microsecond % divisor)
    return moment.astimezone(target_zone).replace(tzinfo=None) if naive else moment


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
        return partial(
            _to_timestamp,
            source_zone=ZoneInfo(source_zone),
            target_zone=ZoneInfo(target_zone),
            naive=target_naive,
            divisor=micros_divisor,
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


def row_converter(converters: Sequence[Converter | None]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Apply per-column converters to a row; the identity when no column needs one."""
    active = [(i, fn) for i, fn in enumerate(converters) if fn is not None]
    if not active:
        return lambda row: row

    def convert(row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = list(row)
        for i, fn in active:
            values[i] = fn(values[i])
        return tuple(values)

    return convert


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


def guarded(convert: Converter | None, check: Check | None, where: str) -> Converter | None:
    """``convert`` followed by ``check``: a value the target cannot hold fails the sync as a DataError.

    So does a value the conversion cannot represent (an instant of year 9999 as a wall time east of
    UTC). Raised while the rows are staged, before anything is applied: the target is left as it was.
    """
    if convert is None and check is None:
        return None

    def run(value: Any) -> Any:
        converted = value
        if convert is not None:
            try:
                converted = convert(value)
            except OverflowError as error:
                raise DataError(
                    f"{where}: {value!r} has no equivalent in the target column ({error})"
                ) from error
        problem = None if check is None else check(converted)
        if problem is not None:
            raise DataError(
                f"{where}: {problem}; fix the source value or sync the column into a type that holds it"
            )
        return converted

    return run
