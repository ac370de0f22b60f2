"""The rolling schedule of drift comparisons: recent hours often, old hours rarely, a bounded amount per run.

Comparing every synced hour of the lookback at every drift run made the cost lookback x runs per
hour (24 hours x 6 runs: each hour compared 144 times an hour), about 90% of what a table-hour cost
its source. Drift (a value changed without touching ``updated_at``, a row deleted behind the
pipeline's back) is most likely soon after an hour is written, and finding it a few hours later is
as good as finding it at once. So an hour is compared when its age (time since the hour ended)
crosses each *milestone*: 1, 2, 4, 8, 16 hours, and once more in the last hour of the lookback (23 h
with the default 24): six comparisons over its lookback instead of 144 an hour.
``drift.milestones_minutes`` sets other ages (in minutes, so a schedule can also be rehearsed in
minutes rather than hours).

The schedule is kept in Dagster's own event log, in the drift check's metadata (``last_compared``:
hour -> when it was last compared), so it survives restarts and is visible in the UI. A run compares
at most ``drift.max_partitions_per_run`` hours of a table: hours at their last milestone first,
then the most overdue (the earliest milestone passed), so a backlog (a new deployment, a daemon
that was down) drains in order and no hour of the lookback leaves it uncompared while the runs keep
up. At every full hour one hour of a table reaches each milestone (six with the default lookback),
so a bound of at least that many lets every comparison happen in the first run after its milestone.

Pure functions, no Dagster, no database: the drift check feeds them and acts on the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sync_pipeline.engine.diff.window import Window


def milestones(lookback_hours: int) -> list[int]:
    """Ages in hours at which an hour is compared: powers of two below the lookback, and its last hour."""
    ages = {2**k for k in range(lookback_hours.bit_length()) if 2**k < lookback_hours}
    ages.add(lookback_hours - 1)
    return sorted(ages)


def milestone_ages(lookback_hours: int, minutes: Sequence[int] | None = None) -> list[timedelta]:
    """The ages an hour is compared at: ``drift.milestones_minutes`` if set, else :func:`milestones`."""
    if minutes is None:
        return [timedelta(hours=m) for m in milestones(lookback_hours)]
    return [timedelta(minutes=m) for m in sorted(minutes)]


def in_hours(age: timedelta) -> int | float:
    """An age as hours, a whole number when it is one (``4``, not ``4.0``; ``0.25`` for 15 minutes)."""
    hours = age / timedelta(hours=1)
    return int(hours) if hours.is_integer() else round(hours, 4)


@dataclass(frozen=True)
class DueComparison:
    """An hour whose latest passed milestone has not been compared yet."""

    partition_key: str
    window: Window
    milestone: timedelta  # the newest milestone of its age that has passed
    due_since: datetime  # when that milestone passed

    @property
    def milestone_hours(self) -> int | float:
        return in_hours(self.milestone)


@dataclass(frozen=True)
class DriftPlan:
    """What one run compares (bounded), and what stays due for the next runs."""

    compare: list[DueComparison]
    pending: list[DueComparison]


def plan_comparisons(
    hours: Sequence[tuple[str, Window]],
    last_compared: Mapping[str, datetime],
    now: datetime,
    ages: Sequence[timedelta],
    limit: int,
) -> DriftPlan:
    """The synced ``hours`` of the lookback due a comparison at ``now``, at most ``limit`` of them.

    ``ages`` are the milestones (:func:`milestone_ages`), increasing. An hour is due when a
    milestone of its age has passed since it was last compared (never compared: since its first
    milestone). Several passed milestones make one comparison, not several. Hours at their last
    milestone go first (soon they leave the lookback), then by when they became due, oldest
    first, ties newest hour first: a backlog drains in order and no hour of the lookback leaves it
    uncompared while runs keep up with the last milestones.
    """
    due: list[DueComparison] = []
    for partition_key, window in hours:
        passed = [m for m in ages if window.end + m <= now]
        if not passed:
            continue
        since = window.end + passed[-1]
        compared = last_compared.get(partition_key)
        if compared is None or compared < since:
            due.append(DueComparison(partition_key, window, passed[-1], since))
    last = ages[-1]
    due.sort(key=lambda d: (d.milestone != last, d.due_since, -d.window.start.timestamp()))
    return DriftPlan(compare=due[:limit], pending=due[limit:])


def detection_latency(age: timedelta, ages: Sequence[timedelta]) -> timedelta | None:
    """How long until drift that appears in an hour of age ``age`` reaches a comparison.

    Without waiting for a run (add up to ``drift.interval_seconds`` and the run itself) or for a
    backlog. ``None``: the hour has passed its last milestone, drift appearing now is not looked for.
    """
    for milestone in ages:
        if milestone >= age:
            return milestone - age
    return None


def detection_latency_hours(age_hours: float, lookback_hours: int) -> float | None:
    """:func:`detection_latency` with the default milestones, in hours."""
    latency = detection_latency(timedelta(hours=age_hours), milestone_ages(lookback_hours))
    return None if latency is None else latency / timedelta(hours=1)
