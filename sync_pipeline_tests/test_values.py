"""Which conversions the target's own parsing of the source's text reproduces exactly.

The bulk path from MySQL/MariaDB into PostgreSQL writes a value as the source prints it only where
the target reading that text stores what the Python conversion would have stored; every other column
keeps its conversion. Plain values, no database.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sync_pipeline.engine.db.schema import Family
from sync_pipeline.engine.db.values import (
    Converter,
    Guarded,
    converter,
    exact_from_text,
    guarded,
    row_converter,
)
from sync_pipeline.errors import DataError


def convert_for(
    source: Family, target: Family, *, zone: str = "UTC", naive: bool = False, divisor: int = 1
) -> Converter | None:
    return converter(
        source,
        target,
        target_naive=naive,
        source_zone=zone,
        target_zone=zone,
        micros_divisor=divisor,
        native_uuid=True,
    )


@pytest.mark.parametrize(
    ("source", "target", "exact"),
    [
        (Family.INTEGER, Family.INTEGER, True),
        (Family.DECIMAL, Family.DECIMAL, True),
        (Family.TEXT, Family.TEXT, True),
        (Family.DATE, Family.DATE, True),
        (Family.JSON, Family.JSON, True),
        (Family.TEXT, Family.JSON, True),  # MariaDB's JSON is LONGTEXT: its text, parsed by the target
        (Family.FLOAT, Family.FLOAT, False),  # a server's printed float need not round-trip
        (Family.BOOLEAN, Family.BOOLEAN, False),  # TINYINT(1) holding 2 is True, not '2'
        (Family.BINARY, Family.BINARY, False),
        (Family.INTEGER, Family.DECIMAL, False),
        (Family.JSON, Family.TEXT, False),  # re-serialised by the converter
    ],
)
def test_families_whose_text_is_their_value(source: Family, target: Family, exact: bool) -> None:
    """Only families printed exactly as the target reads them travel as text."""
    assert exact_from_text(source, target, convert_for(source, target)) is exact


def test_timestamps_travel_as_text_only_when_read_and_held_in_utc_at_full_precision() -> None:
    """A wall time read in another zone would have to be moved to an instant (and out of a DST gap), a
    coarser target floored: both keep their Python conversion."""
    ts = Family.TIMESTAMP
    assert exact_from_text(ts, ts, convert_for(ts, ts))
    assert exact_from_text(ts, ts, convert_for(ts, ts, naive=True))
    assert not exact_from_text(ts, ts, convert_for(ts, ts, zone="Europe/Paris"))
    assert not exact_from_text(ts, ts, convert_for(ts, ts, divisor=1000))
    assert not exact_from_text(Family.DATE, ts, convert_for(Family.DATE, ts))


def test_a_guarded_column_keeps_its_check_without_its_conversion() -> None:
    """A column travelling as text still refuses what the target cannot hold, naming the column."""
    check = guarded(None, lambda v: "no NUL" if "\x00" in v else None, "t: column 'note'")
    assert isinstance(check, Guarded)
    only = check.checking_only()
    assert only is not None
    assert only.convert is None
    assert only("fine") == "fine"
    with pytest.raises(DataError, match="t: column 'note': no NUL"):
        only("a\x00b")
    convert = row_converter([None, convert_for(Family.TIMESTAMP, Family.TIMESTAMP)])
    assert convert((1, datetime(2026, 11, 30, 8, 0, 0, 5))) == (
        1,
        datetime(2026, 11, 30, 8, 0, 0, 5, tzinfo=UTC),
    )
    assert [type(c).__name__ for c in convert.converters] == ["NoneType", "_ToTimestamp"]
