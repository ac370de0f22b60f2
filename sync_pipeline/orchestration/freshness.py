"""Freshness of an hourly asset: every due hour within the horizon, not only the newest, is synced.

Hour H is due at H + 1h + grace. Looking only at the newest due hour (as this check first did) lets a
nine-hour outage that ended with one good run look healthy; Dagster's asset-level freshness looks at
the newest materialization of any partition, so a backfill of old hours makes a stale table look
fresh. So the check lists every due hour of the last ``freshness.horizon_hours`` that has no
materialization, collapsed into ranges (``2026-12-04-20:00 … 2026-12-05-04:00, 9 hours``) for people.

The freshness sensor alerts per *gap*, not per hour: :func:`follow_gaps` remembers the hours it has
announced, so a nine-hour outage is one message listing the hours, an outage that goes on grows its
gap silently, and a gap whose hours are all synced again gets one "recovered" message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    DagsterInstance,
    HourlyPartitionsDefinition,
    PartitionKeyRange,
    partition_loading_context,
)

from sync_pipeline.config import SyncConfig

RANGE_SEPARATOR = " … "


@dataclass(frozen=True)
class HourRange:
    """Consecutive hours: the first and last partition keys and how many hours they span."""

    first: str
    last: str
    hours: int

    def __str__(self) -> str:
        if self.hours == 1:
            return f"{self.first}, 1 hour"
        return f"{self.first}{RANGE_SEPARATOR}{self.last}, {self.hours} hours"


def collapse(keys: Sequence[str], partitions: HourlyPartitionsDefinition) -> list[HourRange]:
    """``keys`` (any order) as runs of consecutive partitions, oldest first.

    Consecutive by Dagster's own windows (one ends where the next starts), so the two 02:00 hours of
    an autumn night in a DST zone are one run, and the missing spring hour is no gap.
    """
    windows = sorted((partitions.time_window_for_partition_key(k), k) for k in set(keys))
    ranges: list[HourRange] = []
    previous_end: datetime | None = None
    for window, key in windows:
        if ranges and previous_end == window.start:
            last = ranges[-1]
            ranges[-1] = HourRange(last.first, key, last.hours + 1)
        else:
            ranges.append(HourRange(key, key, 1))
        previous_end = window.end
    return ranges


def describe(ranges: Sequence[HourRange]) -> str:
    return "; ".join(str(r) for r in ranges)


@dataclass(frozen=True)
class Freshness:
    """Which due hours within the horizon have no materialization, and the newest due hour."""

    partition_key: str | None  # the newest due hour; None: nothing is due yet (start in the future)
    deadline: datetime | None  # the newest due hour's deadline
    missing: tuple[str, ...] = ()  # due hours without a materialization, oldest first
    ranges: tuple[HourRange, ...] = ()  # ``missing`` collapsed
    due_hours: tuple[str, ...] = field(default=(), compare=False, repr=False)  # oldest first

    @property
    def passed(self) -> bool:
        return not self.missing


def due_hours(
    partitions: HourlyPartitionsDefinition, config: SyncConfig, now: datetime
) -> tuple[str | None, datetime | None, Sequence[str]]:
    """The newest due hour, its deadline, and every due hour of the horizon, oldest first."""
    grace = timedelta(minutes=config.freshness.grace_minutes)
    # Dagster's own last complete partition at (now - grace): DST-correct, with its own keys.
    with partition_loading_context(effective_dt=now - grace):
        newest = partitions.get_last_partition_key()
        if newest is None:
            return None, None, []
        horizon_start = max(partitions.start, now - timedelta(hours=config.freshness.horizon_hours))
        oldest = partitions.get_partition_key_for_timestamp(horizon_start.timestamp())
        keys = partitions.get_partition_keys_in_range(PartitionKeyRange(oldest, newest))
    window = partitions.time_window_for_partition_key(newest)
    # In UTC: adding to a local time is wall-clock arithmetic, an hour off across a DST change.
    return newest, window.end.astimezone(UTC) + grace, keys


def evaluate_freshness(
    instance: DagsterInstance,
    key: AssetKey,
    partitions: HourlyPartitionsDefinition,
    config: SyncConfig,
    now: datetime,
) -> Freshness:
    """Every due hour of the horizon must have a materialization, from any run (schedule, backfill, ...)."""
    newest, deadline, keys = due_hours(partitions, config, now)
    if newest is None:
        return Freshness(None, None)
    synced = instance.get_materialized_partitions(key)
    missing = tuple(k for k in keys if k not in synced)
    return Freshness(newest, deadline, missing, tuple(collapse(missing, partitions)), tuple(keys))


# -- gaps, for the alerts ------------------------------------------------------------------------


@dataclass(frozen=True)
class GapChange:
    """What one evaluation changed: hours newly missed (one alert) and gaps now closed (one alert each)."""

    new: list[str]
    closed: list[list[str]]
    gaps: list[list[str]]  # the open gaps to remember: hours announced and not synced yet


def follow_gaps(
    open_gaps: Sequence[Sequence[str]],
    status: Freshness,
    synced: set[str] | frozenset[str],
) -> GapChange:
    """Update the announced gaps of one table with a new evaluation.

    A missing hour that directly follows an open gap's hour extends that gap without a new alert
    (an outage that goes on is one gap); other missing hours not announced yet form one new gap. A
    gap is closed when all its hours are synced; hours that left the horizon unsynced are dropped
    from it, and a gap left with none is forgotten without a "recovered" message.
    """
    in_horizon = set(status.due_hours)
    missing = set(status.missing)
    gaps = [[h for h in gap if h in in_horizon or h in synced] for gap in open_gaps]
    closed = [gap for gap in gaps if gap and all(h in synced for h in gap)]
    still_open = [gap for gap in gaps if any(h in missing for h in gap)]
    announced = {h for gap in still_open for h in gap}
    previous = dict(zip(status.due_hours[1:], status.due_hours[:-1], strict=True))
    owner = {h: i for i, gap in enumerate(still_open) for h in gap}
    new: list[str] = []
    for hour in status.missing:  # oldest first, so a gap grows hour by hour
        if hour in announced:
            continue
        before = previous.get(hour)
        if before is not None and before in owner and before in missing:
            owner[hour] = owner[before]
            still_open[owner[hour]].append(hour)
        else:
            new.append(hour)
    if new:
        still_open.append(list(new))
    return GapChange(new=new, closed=closed, gaps=still_open)


def parse_gaps(state: Mapping[str, object], table: str) -> list[list[str]]:
    """The open gaps of ``table`` in a sensor cursor, tolerating a cursor from an older version."""
    gaps = state.get("gaps")
    if not isinstance(gaps, dict):
        return []
    found = gaps.get(table)
    if not isinstance(found, list):
        return []
    return [[str(h) for h in gap] for gap in found if isinstance(gap, list)]
