"""The hourly window of one partition, as UTC instants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster's hourly partition key format


@dataclass(frozen=True)
class Window:
    """``[start, end)`` in UTC; one hourly partition's rows are those whose ``updated_at`` falls inside."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        # To UTC first: across a DST change two local times can read alike (02:00+02, 02:00+01) and
        # Python compares datetimes of one zone by wall time.
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "end", self.end.astimezone(UTC))
        if self.end <= self.start:
            raise ValueError(f"empty window: {self.start} .. {self.end}")

    @classmethod
    def hour_starting(cls, start: datetime) -> Window:
        return cls(start, start.astimezone(UTC) + timedelta(hours=1))

    @classmethod
    def from_partition_key(cls, key: str, timezone: str = "UTC") -> Window:
        """The window of a Dagster hourly partition key such as ``2026-11-30-08:00``."""
        try:
            local = datetime.strptime(key, PARTITION_KEY_FORMAT)
        except ValueError:
            raise ValueError(
                f"partition key {key!r} is not of the form YYYY-MM-DD-HH:MM (e.g. 2026-11-30-08:00)"
            ) from None
        return cls.hour_starting(local.replace(tzinfo=ZoneInfo(timezone)))

    @classmethod
    def last_completed(cls, now: datetime, timezone: str = "UTC") -> Window:
        """The latest hour of ``timezone`` that has ended by ``now``."""
        local = now.astimezone(ZoneInfo(timezone)).replace(minute=0, second=0, microsecond=0)
        return cls.hour_starting(local - timedelta(hours=1))

    def partition_key(self, timezone: str = "UTC") -> str:
        return self.start.astimezone(ZoneInfo(timezone)).strftime(PARTITION_KEY_FORMAT)

    def bounds_in(self, zone: str, *, naive: bool) -> tuple[datetime, datetime]:
        """The bounds to compare a column with: wall times in ``zone`` for a naive column."""
        if not naive:
            return self.start, self.end
        tz = ZoneInfo(zone)
        return (
            self.start.astimezone(tz).replace(tzinfo=None),
            self.end.astimezone(tz).replace(tzinfo=None),
        )

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def in_zone(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant (in UTC) a naive wall time of ``zone`` stands for, read as PostgreSQL reads it.

    A wall time of the hour that happens twice (clocks going back) is the later instant, in the
    offset that prevails after the change; one the clocks skip (going forward) takes the offset
    before the gap. Python's default (``fold=0``) takes the earlier instant of a repeated hour:
    SQLite's and PostgreSQL's sides then saw one row an hour apart, and the key merge counted it
    newer in the target (or changed) on every run. The later instant is also the one in the window
    that holds the wall time: the second 02:00-03:00 of Berlin is 01:00-02:00 UTC.
    """
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    early, late = first.utcoffset(), second.utcoffset()
    assert early is not None
    assert late is not None
    # In UTC: Python never calls a time of a repeated hour equal to one of another zone (PEP 495).
    return (second if early > late else first).astimezone(UTC)


# How far ahead repeated wall times are looked for: the zone database's rules repeat yearly, so a
# zone whose clocks go back at all does so within any year of this horizon.
_HORIZON = datetime(2100, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=32)
def clocks_go_back(zone: str, since: datetime) -> datetime | None:
    """The first instant at or after ``since`` when ``zone``'s clocks go back, or ``None``.

    From then on an hour of wall times happens twice (the end of summer time), and a column storing
    wall times of ``zone`` cannot tell the two apart. Found by sampling the zone's UTC offset weekly
    (a few milliseconds, once per process): offsets change by rules months apart, never back within
    a week of going forward.
    """
    if zone == "UTC":
        return None
    tz = ZoneInfo(zone)
    moment = since.astimezone(UTC)
    offset = moment.astimezone(tz).utcoffset()
    step = timedelta(days=7)
    while moment < max(_HORIZON, since + timedelta(days=366)):
        later = moment + step
        later_offset = later.astimezone(tz).utcoffset()
        assert offset is not None
        assert later_offset is not None
        if later_offset < offset:
            # Narrow to the hour: where the offset first drops between the two samples.
            while step > timedelta(hours=1):
                step /= 2
                middle = moment + step
                if middle.astimezone(tz).utcoffset() == offset:
                    moment = middle
            return (moment + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
        moment, offset = later, later_offset
    return None
