"""Converting a source row's values into what the target column stores, without losing anything.

Drivers hand back Python values (``Decimal``, aware or naive ``datetime``, parsed JSON, ``bytes``); the
target may want another shape for the same meaning: a wall time in a zone instead of an instant, a
``bool`` instead of MySQL's ``TINYINT(1)``, text instead of a UUID. Converters are chosen once per
column, and only where the shapes differ, so the common case costs nothing per row.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from sync_pipeline.db.schema import Family

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
