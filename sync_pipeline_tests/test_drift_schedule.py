"""The rolling schedule of drift comparisons (orchestration.drift_schedule) and the check that follows it.

The schedule itself is pure, so its promises are checked over simulated days of runs, with the
default (one comparison, in the last hour of the lookback) and with a team's own milestones (the
earlier doubling ages, 1, 2, 4, 8, 16 and 23 hours): every synced hour of the lookback is compared
at each milestone of its age within one run interval (the latency README states), no run compares
more than its bound, and a backlog drains oldest first so no hour waits forever. Then the drift
check on real databases, with its clock set by the test: which hours it compares run after run,
what its metadata shows, drift found at the next milestone (the default's included), and a run
with nothing due opening no database connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import AssetCheckEvaluation, AssetKey, DagsterInstance, instance_for_test
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_pipeline.config import load_config
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.errors import ConfigError
from sync_pipeline.orchestration import checks
from sync_pipeline.orchestration.drift_schedule import (
    detection_latency,
    detection_latency_hours,
    milestone_ages,
    milestones,
    plan_comparisons,
    runs_per_hour,
)
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import (
    create_source,
    in_hour,
    load_definitions,
    row,
    side,
    table_entry,
    utc,
    write_config,
    write_orders_config,
)
from sync_pipeline_tests.helpers import Side, free_port, update

KEY = AssetKey(["sync", "orders"])
T0 = utc("2026-11-30T00:00")
# A team's own schedule that buys a shorter wait: 1, 2, 4, 8, 16 and 23 hours (the earlier default).
DOUBLING_MINUTES = [60, 120, 240, 480, 960, 1380]
DOUBLING = milestone_ages(24, DOUBLING_MINUTES)


def test_by_default_an_hour_is_compared_once_in_the_last_hour_of_its_lookback() -> None:
    """One comparison per hour of data (its in_sync check is the one at age 0): the cost a table-hour
    can afford within 3x of COPYing it, and the latest age that still finds drift of any earlier age."""
    assert milestones(24) == [23]
    assert milestones(6) == [5]
    assert milestones(1) == [0]
    assert milestones(168) == [167]
    assert milestone_ages(24) == [timedelta(hours=23)]


def test_detection_latency_is_the_wait_for_the_next_milestone() -> None:
    """Drift appearing at age a is looked for at the next milestone: by default at 23 h, 23 - a hours
    later; with the doubling milestones at most a more hours (a >= 1)."""
    assert detection_latency_hours(0.5, 24) == 22.5
    assert detection_latency_hours(9, 24) == 14
    assert detection_latency_hours(22.75, 24) == 0.25
    assert detection_latency_hours(23.5, 24) is None  # past the last comparison
    assert detection_latency_hours(5, 6) == 0
    hours = timedelta(hours=1)
    assert detection_latency(0.5 * hours, DOUBLING) == 0.5 * hours
    assert detection_latency(3 * hours, DOUBLING) == hours
    assert detection_latency(9 * hours, DOUBLING) == 7 * hours
    assert detection_latency(17 * hours, DOUBLING) == 6 * hours
    assert detection_latency(23.5 * hours, DOUBLING) is None


def hour(n: int) -> tuple[str, Window]:
    window = Window.hour_starting(T0 + timedelta(hours=n))
    return window.partition_key(), window


def simulate(
    lookback: int,
    limit: int,
    interval: timedelta,
    *,
    start: int,
    stop: int,
    synced_from: int = 0,
    ages: list[timedelta] | None = None,
) -> tuple[dict[str, list[datetime]], list[int]]:
    """Drift runs every ``interval`` from hour ``start`` to hour ``stop`` (hours after T0).

    Hours from ``synced_from`` on are synced as each ends (those ended before ``start`` are a
    backlog: synced, never compared). ``ages``: the milestones, by default the lookback's.
    Returns when each hour was compared, and each run's size.
    """
    ages = ages or milestone_ages(lookback)
    compared: dict[str, list[datetime]] = {}
    last: dict[str, datetime] = {}
    sizes: list[int] = []
    now = T0 + timedelta(hours=start)
    while now < T0 + timedelta(hours=stop):
        ended = int((now - T0) / timedelta(hours=1))
        in_lookback = [
            hour(n) for n in range(synced_from, ended) if hour(n)[1].end > now - timedelta(hours=lookback)
        ]
        plan = plan_comparisons(in_lookback, last, now, ages, limit)
        sizes.append(len(plan.compare))
        for due in plan.compare:
            compared.setdefault(due.partition_key, []).append(now)
            last[due.partition_key] = now
        now += interval
    return compared, sizes


@pytest.mark.parametrize(
    ("lookback", "interval_minutes", "own"),
    [(24, 10, None), (24, 1, None), (6, 10, None), (72, 30, None), (24, 10, DOUBLING_MINUTES)],
    ids=["24h-10min", "24h-1min", "6h-10min", "72h-30min", "24h-10min-doubling"],
)
def test_every_hour_is_compared_at_each_milestone_within_one_interval(
    lookback: int, interval_minutes: int, own: list[int] | None
) -> None:
    """In steady state every hour of the lookback is compared at each milestone, one run late at most.

    So drift that appears in an hour of age a is found by the milestone after a, plus one interval,
    when a run may compare as many hours as there are milestones (at each full hour, one hour of
    the table reaches each milestone). An hour costs len(milestones) comparisons over its whole
    lookback (by default one), not one per run.
    """
    interval = timedelta(minutes=interval_minutes)
    ages = milestone_ages(lookback, own)
    compared, sizes = simulate(lookback, len(ages), interval, start=0, stop=4 * lookback, ages=ages)
    for n in range(lookback, 2 * lookback):  # hours whose whole lookback lies inside the simulation
        key, window = hour(n)
        times = compared[key]
        assert len(times) == len(ages), key
        for milestone, at in zip(ages, times, strict=True):
            due = window.end + milestone
            assert due <= at < due + interval, (key, milestone, at)
    assert max(sizes) <= len(ages)


@pytest.mark.parametrize("own", [None, DOUBLING_MINUTES], ids=["default", "doubling"])
def test_one_run_an_hour_has_anything_to_compare(own: list[int] | None) -> None:
    """Milestones on whole hours fall due at the full hour: of the six runs an hour only the first
    compares anything, so the drift sensor, starting runs only when an hour is due, starts one an hour
    (``runs_per_hour``, the count docs/capacity.md uses)."""
    ages = milestone_ages(24, own)
    _, sizes = simulate(24, len(ages), timedelta(minutes=10), start=0, stop=96, ages=ages)
    busy = [sum(1 for size in sizes[6 * h : 6 * h + 6] if size) for h in range(24, 96)]
    assert busy == [1] * 72
    assert runs_per_hour(ages, 600) == 1


def test_runs_an_hour_are_the_milestones_minutes_past_the_hour_at_most_one_per_interval() -> None:
    assert runs_per_hour(milestone_ages(24, [15, 90]), 600) == 2  # at :15 and :30
    assert runs_per_hour(milestone_ages(24, [60, 1380]), 600) == 1
    assert runs_per_hour(milestone_ages(24, list(range(1, 60))), 600) == 6
    assert runs_per_hour(milestone_ages(24, [15, 90]), 3600) == 1


def test_with_a_smaller_bound_comparisons_wait_a_few_runs_but_every_one_happens() -> None:
    """Two comparisons a run, six milestones an hour: each is at most three runs late, none is lost."""
    interval = timedelta(minutes=10)
    compared, sizes = simulate(24, 2, interval, start=0, stop=96, ages=DOUBLING)
    assert max(sizes) == 2
    for n in range(24, 48):
        key, window = hour(n)
        assert len(compared[key]) == 6, key
        for milestone, at in zip(DOUBLING, compared[key], strict=True):
            due = window.end + milestone
            assert due <= at < due + 3 * interval, (key, milestone, at)


def test_a_backlog_drains_within_the_bound_and_no_hour_leaves_the_lookback_uncompared() -> None:
    """A new deployment with the doubling milestones: 24 hours synced, never compared, two comparisons
    a run. No run compares more than two; the hour about to leave the lookback goes first; every hour
    of the backlog is compared before it leaves, and the new hours keep their milestones once the
    backlog is gone. (With the default single milestone there is no backlog: each hour of a new
    deployment is due at its own 23 h, one an hour.)
    """
    interval = timedelta(minutes=10)
    compared, sizes = simulate(24, 2, interval, start=48, stop=96, synced_from=24, ages=DOUBLING)
    assert max(sizes) == 2
    for n in range(24, 72):
        key, _ = hour(n)
        assert compared.get(key), f"{key} left the lookback never compared"
    first = plan_comparisons([hour(n) for n in range(24, 48)], {}, T0 + timedelta(hours=48), DOUBLING, 2)
    assert first.compare[0].partition_key == hour(24)[0]  # at its last milestone (23 h)
    assert len(first.pending) == 21  # 47:00 has just ended: not due before it is an hour old
    for n in range(60, 72):  # hours synced after the backlog drained: on time again
        key, window = hour(n)
        for milestone, at in zip(DOUBLING, compared[key], strict=False):
            assert at < window.end + milestone + timedelta(minutes=30), (key, milestone)
    # The default on the same backlog: one comparison per hour, each at its 23 h, never two a run.
    compared, sizes = simulate(24, 2, interval, start=48, stop=96, synced_from=24)
    assert max(sizes) == 1
    for n in range(24, 72):
        key, window = hour(n)
        [at] = compared[key]
        assert window.end + timedelta(hours=23) <= at < window.end + timedelta(hours=23) + interval


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, list[timedelta], int, list[datetime], dict[int, datetime]]:
    """A lookback, its milestones, a bound, the runs (any interval up to an hour, outages) and when
    each hour was synced (on time, late, as a backlog, never)."""
    lookback = draw(st.integers(1, 36), label="lookback_hours")
    if draw(st.booleans(), label="own milestones"):
        # The last one within an hour of the lookback's end: one hour at a time sits there.
        last = draw(st.integers(max(0, lookback * 60 - 60), lookback * 60 - 1))
        earlier = draw(st.sets(st.integers(0, max(0, last - 1)), max_size=6)) if last else set()
        ages = milestone_ages(lookback, sorted(earlier | {last}))
    else:
        ages = milestone_ages(lookback)
    limit = draw(st.integers(1, 8), label="max_partitions_per_run")
    interval = timedelta(minutes=draw(st.integers(5, 60), label="interval_minutes"))
    horizon = 3 * lookback + 2
    outages = draw(
        st.lists(st.tuples(st.integers(0, horizon * 60), st.integers(1, 6 * 60)), max_size=3), label="outages"
    )
    first_run = T0 + timedelta(minutes=draw(st.integers(0, 59), label="phase"))
    runs: list[datetime] = []
    at = first_run
    while at < T0 + timedelta(hours=horizon):
        minute = (at - T0) / timedelta(minutes=1)
        if not any(start <= minute < start + length for start, length in outages):
            runs.append(at)
        at += interval
    synced: dict[int, datetime] = {}
    for n in range(horizon):
        delay = draw(
            st.none() | st.integers(0, 3 * 60) | st.integers(0, lookback * 60 + 60), label=f"sync {n}"
        )
        if delay is not None:
            synced[n] = hour(n)[1].end + timedelta(minutes=delay)
    return lookback, ages, limit, runs, synced


@settings(max_examples=150, deadline=None)
@given(history=histories())
def test_no_hour_of_the_lookback_is_skipped_forever(
    history: tuple[int, list[timedelta], int, list[datetime], dict[int, datetime]],
) -> None:
    """Whatever the bound, the interval (up to an hour), the outages and however late hours are synced:
    no run compares more than its bound, and every synced hour that a run sees after its last
    milestone (the last hour of the lookback) is compared at or after that milestone. So drift that
    appears at any age before the last milestone is looked for before the hour leaves the lookback;
    a smaller bound or a backlog only delays the earlier milestones.
    """
    lookback, ages, limit, runs, synced = history
    last: dict[str, datetime] = {}
    compared: dict[int, list[datetime]] = {}
    for now in runs:
        in_lookback = [
            hour(n)
            for n, at in synced.items()
            if at <= now and hour(n)[1].end > now - timedelta(hours=lookback)
        ]
        plan = plan_comparisons(in_lookback, last, now, ages, limit)
        assert len(plan.compare) <= limit
        for due in plan.compare:
            last[due.partition_key] = now
            compared.setdefault(int((due.window.start - T0) / timedelta(hours=1)), []).append(now)
    for n, at in synced.items():
        end = hour(n)[1].end
        final = max(at, end + ages[-1])
        leaves = end + timedelta(hours=lookback)
        if any(final <= run < leaves for run in runs):
            assert compared.get(n), f"hour {n} synced at {at} never compared"
            assert compared[n][-1] >= end + ages[-1], (n, compared[n], ages[-1])


def test_own_milestones_in_minutes_are_followed() -> None:
    """``drift.milestones_minutes`` replaces the default ages: an hour is compared at 15 and 90 minutes
    old, and drift appearing at 20 minutes old waits 70 minutes; the metadata names them in hours."""
    ages = milestone_ages(24, [15, 90])
    assert ages == [timedelta(minutes=15), timedelta(minutes=90)]
    key, window = hour(0)
    early = plan_comparisons([(key, window)], {}, window.end + timedelta(minutes=14), ages, 8)
    assert early.compare == []
    first = plan_comparisons([(key, window)], {}, window.end + timedelta(minutes=16), ages, 8)
    [due] = first.compare
    assert (due.milestone_hours, due.due_since) == (0.25, window.end + timedelta(minutes=15))
    later = {key: window.end + timedelta(minutes=16)}
    assert plan_comparisons([(key, window)], later, window.end + timedelta(minutes=89), ages, 8).compare == []
    [again] = plan_comparisons([(key, window)], later, window.end + timedelta(minutes=90), ages, 8).compare
    assert again.milestone_hours == 1.5
    assert detection_latency(timedelta(minutes=20), ages) == timedelta(minutes=70)
    assert detection_latency(timedelta(minutes=91), ages) is None


def test_milestones_outside_the_lookback_or_out_of_order_are_refused(tmp_path: Path) -> None:
    """A milestone the lookback never reaches would never be compared: the file, section and index
    are named, nothing is deployed."""
    path = tmp_path / "sync.yaml"
    write_orders_config(
        path,
        side("sqlite", f"sqlite:///{tmp_path / 'a.db'}"),
        side("sqlite", f"sqlite:///{tmp_path / 'b.db'}"),
        drift={"lookback_hours": 6, "milestones_minutes": [30, 30, 360]},
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert str(path) in message
    assert "drift.milestones_minutes[1]" in message
    assert "must increase" in message
    assert "drift.milestones_minutes[2]" in message
    assert "from 0 to 359 minutes" in message


# -- the drift check on real databases ----------------------------------------------------------


@dataclass
class Clock:
    at: datetime


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The drift check's clock (it runs in process here), set by the test."""
    clock = Clock(utc("2026-11-30T10:05"))

    class Now(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return clock.at.astimezone(tz or UTC)

    monkeypatch.setattr(checks, "datetime", Now)
    return clock


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as temp:
        yield temp


HOURS = [f"2026-11-30-{h:02d}:00" for h in range(4, 9)]  # 04:00 .. 08:00, five rows each


@dataclass
class Deployment:
    source: Side
    target: Side
    instance: DagsterInstance
    path: Path

    def run(self, job: str, **kwargs: Any) -> Any:
        result = (
            load_definitions(str(self.path))
            .resolve_job_def(job)
            .execute_in_process(instance=self.instance, **kwargs)
        )
        assert result.success
        return result

    def drift_check(self) -> dict[str, Any]:
        [evaluation] = self.run("drift_check").get_asset_check_evaluations()
        assert isinstance(evaluation, AssetCheckEvaluation)
        return {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()} | {
            "passed": evaluation.passed
        }


@pytest.fixture
def deployment(make_db_url: MakeDbUrl, tmp_path: Path, instance: DagsterInstance) -> Deployment:
    source = side("sqlite", make_db_url("sqlite", "source"))
    target = side("postgresql", make_db_url("postgresql", "target"))
    rows = [
        row(i * 10 + j, in_hour(Window.from_partition_key(key), j))
        for i, key in enumerate(HOURS)
        for j in range(5)
    ]
    create_source(source, rows)
    path = write_orders_config(
        tmp_path / "sync.yaml",
        source,
        target,
        start="2026-11-30T00:00:00",
        drift={"lookback_hours": 24, "max_partitions_per_run": 2, "milestones_minutes": DOUBLING_MINUTES},
    )
    deployed = Deployment(source, target, instance, path)
    for key in HOURS:
        deployed.run("sync_hourly", partition_key=key)
    return deployed


def test_drift_check_compares_a_bounded_number_of_due_hours_and_shows_its_schedule(
    deployment: Deployment, clock: Clock
) -> None:
    """Five synced hours, all past a milestone: two a run, the most overdue first, then none until the
    next milestone; the metadata names the hours compared, their milestone, and the state.
    """
    clock.at = utc("2026-11-30T10:05")  # ages: 04:00 -> 5.1h (milestone 4) .. 08:00 -> 1.1h (milestone 1)

    first = deployment.drift_check()
    assert first["passed"]
    # 04:00 passed its milestone 4 at 09:00; 05:00 its milestone 4 at 10:00; 06:00 its 2 at 09:00 ...
    assert first["compared"] == {"2026-11-30-04:00": 4, "2026-11-30-06:00": 2}
    assert first["partitions_compared"] == 2
    # Due since 10:00 (ties, newest first): 08:00 at 1 hour, 07:00 at 2, 05:00 at 4.
    assert first["pending"] == ["2026-11-30-08:00", "2026-11-30-07:00", "2026-11-30-05:00"]

    second = deployment.drift_check()
    assert second["compared"] == {"2026-11-30-07:00": 2, "2026-11-30-08:00": 1}
    third = deployment.drift_check()
    assert third["compared"] == {"2026-11-30-05:00": 4}
    quiet = deployment.drift_check()
    assert (quiet["compared"], quiet["pending"]) == ({}, [])
    assert set(quiet["last_compared"]) == set(HOURS)

    clock.at = utc("2026-11-30T11:05")  # 08:00 is 2 hours old now, 06:00 is 4
    assert deployment.drift_check()["compared"] == {"2026-11-30-08:00": 2, "2026-11-30-06:00": 4}


def test_drift_in_an_old_hour_is_found_at_its_next_milestone(deployment: Deployment, clock: Clock) -> None:
    """A value changed behind the pipeline's back in an hour already compared at 4 hours old is found
    when the hour reaches 8 hours, not before, and the check names the hour and the rows.
    """
    clock.at = utc("2026-11-30T10:05")
    while deployment.drift_check()["compared"]:
        pass
    target = sa.Table("orders", sa.MetaData(), autoload_with=deployment.target.engine)
    update(deployment.target, target, target.c.id == 1, amount=999)  # a row of 04:00

    clock.at = utc("2026-11-30T12:30")  # 04:00 is 7.5 hours old: no milestone since 4
    assert "2026-11-30-04:00" not in deployment.drift_check()["compared"]

    clock.at = utc("2026-11-30T13:01")  # 8 hours old
    found: dict[str, Any] = {}
    while not found.get("drifted_partitions"):
        found = deployment.drift_check()
        assert found["compared"], "the drifted hour was never compared"
    assert found["drifted_partitions"] == {"2026-11-30-04:00": 1}
    assert not found["passed"]


def test_by_default_each_hour_is_compared_once_in_its_last_hour_and_finds_drift_of_any_age(
    deployment: Deployment, clock: Clock
) -> None:
    """The default schedule on real databases: nothing is compared while the hours are young; a value
    changed behind the pipeline's back in 04:00 when it was about five hours old is found when 04:00 is
    23 hours old, and every hour is compared once, in its own 24th hour."""
    write_orders_config(
        deployment.path,
        deployment.source,
        deployment.target,
        start="2026-11-30T00:00:00",
        drift={"lookback_hours": 24, "max_partitions_per_run": 2},
    )
    clock.at = utc("2026-11-30T10:05")  # 04:00 .. 08:00 are 5.1 .. 1.1 hours old: none due
    quiet = deployment.drift_check()
    assert (quiet["passed"], quiet["compared"], quiet["pending"]) == (True, {}, [])
    target = sa.Table("orders", sa.MetaData(), autoload_with=deployment.target.engine)
    update(deployment.target, target, target.c.id == 1, amount=999)  # a row of 04:00

    clock.at = utc("2026-12-01T04:30")  # 04:00 is 23.5 hours old, 05:00 22.5
    found = deployment.drift_check()
    assert found["compared"] == {"2026-11-30-04:00": 23}
    assert (found["passed"], found["drifted_partitions"]) == (False, {"2026-11-30-04:00": 1})
    assert deployment.drift_check()["compared"] == {}  # compared once, not at every run

    for key in HOURS[1:]:  # each later hour in its own 24th hour, once
        start = Window.from_partition_key(key).start
        clock.at = start + timedelta(hours=24, minutes=1)
        assert deployment.drift_check()["compared"] == {key: 23}
        clock.at = start + timedelta(hours=24, minutes=50)
        assert deployment.drift_check()["compared"] == {}


def test_a_run_with_no_hour_due_opens_no_database_connection(deployment: Deployment, clock: Clock) -> None:
    """Between milestones a drift step compares nothing and costs next to nothing: with both databases
    unreachable (nothing listens on their port) it passes, comparing nothing; once an hour is due the
    same step fails connecting, so the first did not connect at all (nor reflect a table)."""
    clock.at = utc("2026-11-30T10:05")
    while deployment.drift_check()["compared"]:  # the hours due now, compared
        pass
    nowhere = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    write_config(
        deployment.path,
        {"app": nowhere, "warehouse": nowhere},
        [table_entry("orders", "app", "warehouse", start="2026-11-30T00:00:00")],
        drift={"lookback_hours": 24, "max_partitions_per_run": 2, "milestones_minutes": DOUBLING_MINUTES},
    )
    clock.at = utc("2026-11-30T10:50")  # no milestone passed since 10:00
    idle = deployment.drift_check()
    assert (idle["passed"], idle["compared"], idle["pending"]) == (True, {}, [])

    clock.at = utc("2026-11-30T11:05")  # 08:00 is 2 hours old, 06:00 is 4: due, and unreachable
    result = (
        load_definitions(str(deployment.path))
        .resolve_job_def("drift_check")
        .execute_in_process(instance=deployment.instance, raise_on_error=False)
    )
    assert not result.success
