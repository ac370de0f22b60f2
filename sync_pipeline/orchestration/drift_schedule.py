"""The rolling schedule of drift comparisons: when each synced hour is compared, a bounded amount a run.

Drift (a value changed without touching ``updated_at``, a row deleted or added behind the pipeline's
back) is looked for by comparing an hour's rows in source and target, every column. Each such
comparison costs the source about half of COPYing the hour out once (0.52x of the COPY's source CPU
at 1M rows PostgreSQL -> PostgreSQL, docs/capacity.md), and the budget for a whole table-hour is 3x
(issue 16). The rest of a table-hour already spends 2.16x: the first sync 1.07, its ``in_sync``
check 0.52 (itself the whole-row comparison at age 0) and the three lookback re-syncs 0.56. So the
default is **one** comparison per hour over its lookback, when the hour reaches its last hour
(23 h with the default lookback of 24): 2.67x of the COPY in source CPU and 2.0x in step time. Two
comparisons would be 3.19x, the earlier six (1, 2, 4, 8, 16, 23 h) 5.25x; comparing at every run
was 144 an hour. One late comparison finds drift at *every* age of the lookback (the promise), and
finding it late is the price: drift appearing when the hour is ``a`` hours old waits ``23 - a``
hours. ``drift.milestones_minutes`` is how a team buys a shorter wait with more source CPU
(figures at 1M rows, PostgreSQL -> PostgreSQL, from the measured costs of docs/capacity.md):

=========================  ===========  ===========================================  ============  ==========
milestones (age of hour)   comparisons  drift appearing at age a found after          source CPU    step time
                           per hour     (plus up to one interval and the run)         x COPY        x COPY
=========================  ===========  ===========================================  ============  ==========
23 h (default)             1            23 - a h                                      2.67          2.00
1 h, 23 h                  2            a < 1: 1 - a h; else 23 - a h                 3.19          2.27
1, 4, 23 h                 3            at most 3 h up to age 4; then 23 - a h        3.70          2.54
1, 2, 4, 8, 16, 23 h       6            at most the age (a >= 1), 7 h after 16        5.25          3.34
=========================  ===========  ===========================================  ============  ==========

When the whole-row comparison gets cheaper, the same budget buys more milestones: with each
comparison at c x COPY the source CPU is 2.16 + K c (rerun ``benchmarks.capacity``).

A drift step whose table has no hour due compares nothing and opens no database connection (it
reads Dagster's event log only), but it still costs a Dagster step, about 1.2 CPU-s: the drift
sensor starts a run only when some hour is due (:func:`runs_per_hour`), so with milestones on
whole hours one drift step per table an hour, not one per ``drift.interval_seconds`` (six). The
step times above count two steps per table-hour (the sync's and that one).

The schedule is kept in Dagster's own event log, in the drift check's metadata (``last_compared``:
hour -> when it was last compared), so it survives restarts and is visible in the UI. A run compares
at most ``drift.max_partitions_per_run`` hours of a table: hours at their last milestone first,
then the most overdue (the earliest milestone passed), so a backlog (a new deployment, a daemon
that was down) drains in order and no hour of the lookback leaves it uncompared while the runs keep
up. At every full hour one hour of a table reaches each milestone, so a bound of at least the
number of milestones lets every comparison happen in the first run after its milestone.

Pure functions, no Dagster, no database: the drift check feeds them and acts on the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sync_pipeline.engine.diff.window import Window


def milestones(lookback_hours: int) -> list[int]:
    """The default ages in hours at which an hour is compared: once, in the last hour of its lookback.

    One comparison keeps a table-hour within 3x of COPYing it (see the module's docstring); it is
    the latest one that still finds drift appearing at any earlier age of the lookback.
    """
    return [lookback_hours - 1]


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


def runs_per_hour(ages: Sequence[timedelta], interval_seconds: int) -> int:
    """Drift runs an hour in steady state: the sensor starts one only when some hour is due.

    Hours end on the hour, so an hour reaches each milestone at that milestone's minute past the
    hour: one run for each distinct such minute, and at most one per ``interval_seconds``.
    """
    minutes = {(age // timedelta(minutes=1)) % 60 for age in ages}
    return min(len(minutes), max(1, 3600 // interval_seconds))
