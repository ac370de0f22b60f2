"""Tests of the asset checks (orchestration.checks) on a real Dagster instance and real databases.

``partition_freshness`` is evaluated by ``evaluate_freshness`` from the instance's event log at a
chosen instant, after real syncs of chosen partitions. ``drift`` runs as the code location runs it,
through the ``drift_check`` job, against partitions synced for real and then tampered with behind
the pipeline's back. ``in_sync`` is the check every sync yields.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    HourlyPartitionsDefinition,
    instance_for_test,
)

from sync_pipeline.config import SyncConfig, load_config
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.orchestration.assets import partitions_def
from sync_pipeline.orchestration.checks import (
    DRIFT_CHECK,
    FRESHNESS_CHECK,
    IN_SYNC_CHECK,
    Freshness,
    evaluate_freshness,
    freshness_result,
    lookback_partitions,
)
from sync_pipeline.orchestration.freshness import HourRange
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import (
    create_source,
    in_hour,
    load_definitions,
    row,
    rows_in,
    side,
    utc,
    write_orders_config,
)
from sync_pipeline_tests.helpers import Side, delete, update

KEY = AssetKey(["sync", "orders"])


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as temp:
        yield temp


@dataclass
class Deployment:
    """A config file on real databases, its definitions, and the instance its runs are recorded in."""

    source: Side
    target: Side
    path: Path
    defs: Definitions
    instance: DagsterInstance

    @property
    def config(self) -> SyncConfig:
        return load_config(self.path)

    @property
    def partitions(self) -> HourlyPartitionsDefinition:
        config = self.config
        return partitions_def(config.tables[0], config)

    def sync(self, *partition_keys: str) -> list[ExecuteInProcessResult]:
        """Materialize ``sync/orders`` for each partition through the code location's hourly job."""
        job = self.defs.resolve_job_def("sync_hourly")
        results = [job.execute_in_process(instance=self.instance, partition_key=k) for k in partition_keys]
        assert all(r.success for r in results)
        return results

    def freshness(self, now: str) -> Freshness:
        return evaluate_freshness(self.instance, KEY, self.partitions, self.config, utc(now))

    def drift_check(self) -> AssetCheckEvaluation:
        """Run the ``drift_check`` job as the drift sensor has it run; its one ``drift`` evaluation."""
        result = self.defs.resolve_job_def("drift_check").execute_in_process(instance=self.instance)
        assert result.success
        [evaluation] = result.get_asset_check_evaluations()
        assert (evaluation.asset_key, evaluation.check_name) == (KEY, DRIFT_CHECK)
        return evaluation


def deploy(
    tmp_path: Path, instance: DagsterInstance, source: Side, target: Side, start: str, **top: Any
) -> Deployment:
    path = write_orders_config(tmp_path / "sync.yaml", source, target, start=start, **top)
    return Deployment(source, target, path, load_definitions(str(path)), instance)


@pytest.fixture
def sqlite_pair(make_db_url: MakeDbUrl) -> tuple[Side, Side]:
    """A SQLite source with an (empty) ``orders`` table and a SQLite target: syncs cost milliseconds."""
    source = side("sqlite", make_db_url("sqlite", "source"))
    create_source(source, [])
    return source, side("sqlite", make_db_url("sqlite", "target"))


# -- partition_freshness ----------------------------------------------------------------------------


@pytest.fixture
def fixed(tmp_path: Path, instance: DagsterInstance, sqlite_pair: tuple[Side, Side]) -> Deployment:
    """``orders`` from 2026-11-30 06:00 UTC with 30 minutes of grace."""
    return deploy(tmp_path, instance, *sqlite_pair, "2026-11-30T06:00:00", freshness={"grace_minutes": 30})


def test_before_the_deadline_the_newest_due_hour_is_the_previous_one(fixed: Deployment) -> None:
    """Hour H is due at H + 1h + grace: until 09:30 the newest due hour is 07:00, from 09:30 it is 08:00."""
    fixed.sync("2026-11-30-06:00", "2026-11-30-07:00")

    before = fixed.freshness("2026-11-30T09:29:59")
    assert before == Freshness("2026-11-30-07:00", utc("2026-11-30T08:30"))
    assert before.passed

    at = fixed.freshness("2026-11-30T09:30")
    assert at == Freshness(
        "2026-11-30-08:00",
        utc("2026-11-30T09:30"),
        ("2026-11-30-08:00",),
        (HourRange("2026-11-30-08:00", "2026-11-30-08:00", 1),),
    )


def test_missed_hour_fails_naming_it_until_it_is_synced(fixed: Deployment) -> None:
    """After 08:00's deadline with 08:00 not materialized the check fails naming 08:00; synced, it passes."""
    fixed.sync("2026-11-30-06:00", "2026-11-30-07:00")

    missed = fixed.freshness("2026-11-30T09:45")
    assert (missed.partition_key, missed.passed, missed.missing) == (
        "2026-11-30-08:00",
        False,
        ("2026-11-30-08:00",),
    )
    result = freshness_result(KEY, missed)
    assert not result.passed
    assert result.check_name == FRESHNESS_CHECK
    assert result.description == "1 due hours not synced: 2026-11-30-08:00, 1 hour"
    assert {k: getattr(v, "value", v) for k, v in result.metadata.items()} == {
        "partition": "2026-11-30-08:00",
        "deadline": "2026-11-30T09:30:00+00:00",
        "missing_hours": 1,
        "missing": "2026-11-30-08:00, 1 hour",
        "hours_checked": 3,
    }

    fixed.sync("2026-11-30-08:00")
    synced = fixed.freshness("2026-11-30T09:45")
    assert (synced.partition_key, synced.passed) == ("2026-11-30-08:00", True)
    assert freshness_result(KEY, synced).passed


def test_backfill_of_old_hours_does_not_make_a_stale_table_fresh(fixed: Deployment) -> None:
    """Materializing old hours after a missed one leaves the check failing on the missed hour.

    The newest materialization of the asset is recent (the backfill just ran), which is all Dagster's
    asset-level freshness would look at; the partition-aware check still names 08:00.
    """
    fixed.sync("2026-11-30-07:00")
    fixed.sync("2026-11-30-06:00")
    latest = fixed.instance.get_latest_materialization_event(KEY)
    assert latest is not None
    assert latest.dagster_event is not None
    assert latest.dagster_event.partition == "2026-11-30-06:00"

    status = fixed.freshness("2026-11-30T10:00")
    assert (status.partition_key, status.passed, status.missing) == (
        "2026-11-30-08:00",
        False,
        ("2026-11-30-08:00",),
    )


def test_every_missing_hour_of_the_horizon_is_named_in_ranges(
    tmp_path: Path, instance: DagsterInstance, sqlite_pair: tuple[Side, Side]
) -> None:
    """Not only the newest due hour: every missing hour of the horizon fails the check, in ranges.

    From 2026-12-04 10:00 with hours 19:00 and 05:00 synced (the last good run after an outage), at
    06:10 the nine hours 20:00 .. 04:00 and the hours before 19:00 within the 12-hour horizon are
    missing; the newest due hour itself is synced, which is all the check used to look at.
    """
    deployment = deploy(
        tmp_path,
        instance,
        *sqlite_pair,
        "2026-12-04T10:00:00",
        freshness={"grace_minutes": 0, "horizon_hours": 12},
        catch_up={"max_hours": 12},
    )
    deployment.sync("2026-12-04-19:00", "2026-12-05-05:00")

    status = deployment.freshness("2026-12-05T06:10")

    assert status.partition_key == "2026-12-05-05:00"
    assert status.missing == tuple(f"2026-12-04-{h}:00" for h in (18, 20, 21, 22, 23)) + tuple(
        f"2026-12-05-{h:02d}:00" for h in range(5)
    )
    result = freshness_result(KEY, status)
    assert not result.passed
    assert result.severity == AssetCheckSeverity.ERROR
    assert result.description == (
        "10 due hours not synced: 2026-12-04-18:00, 1 hour; 2026-12-04-20:00 … 2026-12-05-04:00, 9 hours"
    )
    values = {k: getattr(v, "value", v) for k, v in result.metadata.items()}
    assert values["missing_hours"] == 10
    assert values["hours_checked"] == 12


def test_table_starting_in_the_future_has_nothing_due(fixed: Deployment) -> None:
    """Before the first hour's deadline nothing is due: the check passes without naming a partition."""
    status = fixed.freshness("2026-11-30T07:29")
    assert status == Freshness(None, None)
    assert freshness_result(KEY, status).passed


@pytest.mark.parametrize(
    ("now", "grace", "due", "deadline"),
    [
        # Autumn in Paris: 02:00-03:00 local happens twice; the second is Dagster's 02:00+0100.
        ("2026-10-25T00:59", 0, "2026-10-25-01:00", "2026-10-25T00:00"),  # the first 02:00 is not due yet
        ("2026-10-25T01:00", 0, "2026-10-25-02:00", "2026-10-25T01:00"),  # first 02:00 (CEST), ends 01:00Z
        ("2026-10-25T02:00", 0, "2026-10-25-02:00+0100", "2026-10-25T02:00"),  # second 02:00 (CET)
        ("2026-10-25T03:00", 0, "2026-10-25-03:00", "2026-10-25T03:00"),
        # A grace that spans the change: 90 minutes after 00:00Z, not after the wall time 02:00.
        ("2026-10-25T01:30", 90, "2026-10-25-01:00", "2026-10-25T01:30"),
        ("2026-10-25T02:30", 90, "2026-10-25-02:00", "2026-10-25T02:30"),
        # Spring: 02:00-03:00 local does not exist; the hour after 01:00 CET is 03:00 CEST.
        ("2026-03-29T01:00", 0, "2026-03-29-01:00", "2026-03-29T01:00"),
        ("2026-03-29T02:00", 0, "2026-03-29-03:00", "2026-03-29T02:00"),
        ("2026-03-29T02:29", 90, "2026-03-29-00:00", "2026-03-29T01:30"),  # 01:00 CET due at 02:30Z
        ("2026-03-29T02:30", 90, "2026-03-29-01:00", "2026-03-29T02:30"),
        ("2026-03-29T03:30", 90, "2026-03-29-03:00", "2026-03-29T03:30"),
    ],
)
def test_newest_due_hour_is_dst_safe_in_a_local_partition_timezone(
    tmp_path: Path,
    instance: DagsterInstance,
    sqlite_pair: tuple[Side, Side],
    now: str,
    grace: int,
    due: str,
    deadline: str,
) -> None:
    """In Europe/Paris the newest due hour is Dagster's own key, repeated and skipped hours included.

    Its deadline is the instant the local hour ends plus the grace, in UTC, whatever the wall clock did.
    """
    deployment = deploy(
        tmp_path,
        instance,
        *sqlite_pair,
        "2026-03-01T00:00:00",
        partition_timezone="Europe/Paris",
        freshness={"grace_minutes": grace},
    )
    status = deployment.freshness(now)
    assert status.partition_key == due
    assert status.deadline == utc(deadline)
    assert status.deadline is not None
    assert status.deadline.utcoffset() == timedelta(0)
    assert not status.passed


def test_the_repeated_dst_hour_is_its_own_partition(
    tmp_path: Path, instance: DagsterInstance, sqlite_pair: tuple[Side, Side]
) -> None:
    """Syncing the first 02:00 of the autumn night does not satisfy the second (02:00+0100).

    A one-hour horizon keeps the earlier hours of the table out of the way.
    """
    deployment = deploy(
        tmp_path,
        instance,
        *sqlite_pair,
        "2026-10-24T00:00:00",
        partition_timezone="Europe/Paris",
        freshness={"grace_minutes": 0, "horizon_hours": 1},
        catch_up={"enabled": False},
    )
    deployment.sync("2026-10-25-02:00")
    assert deployment.freshness("2026-10-25T01:30").passed
    second = deployment.freshness("2026-10-25T02:30")
    assert (second.partition_key, second.passed) == ("2026-10-25-02:00+0100", False)

    deployment.sync("2026-10-25-02:00+0100")
    assert deployment.freshness("2026-10-25T02:30").passed


# -- drift ------------------------------------------------------------------------------------------


def test_drift_lookback_windows_span_the_repeated_dst_hour(
    tmp_path: Path, instance: DagsterInstance, sqlite_pair: tuple[Side, Side]
) -> None:
    """The hours the drift check compares, newest first, include both 02:00s of the autumn night.

    Each is a one-hour UTC window, the first 02:00 included (its local bounds read 02:00 to 02:00).
    """
    deployment = deploy(
        tmp_path,
        instance,
        *sqlite_pair,
        "2026-10-24T00:00:00",
        partition_timezone="Europe/Paris",
        drift={"lookback_hours": 4},
    )
    found = lookback_partitions(deployment.config, deployment.partitions, utc("2026-10-25T03:10"))
    assert [(key, window.start) for key, window in found] == [
        ("2026-10-25-03:00", utc("2026-10-25T02:00")),
        ("2026-10-25-02:00+0100", utc("2026-10-25T01:00")),
        ("2026-10-25-02:00", utc("2026-10-25T00:00")),
        ("2026-10-25-01:00", utc("2026-10-24T23:00")),
    ]
    assert all(window.end - window.start == timedelta(hours=1) for _, window in found)


def hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass
class Drifting:
    """A deployment whose ``orders`` partition ``synced`` has been synced and ``unsynced`` has not.

    The drift check compares the hours before the real clock, so both are a few hours back from now.
    """

    deployment: Deployment
    orders: sa.Table
    synced: Window
    unsynced: Window


@pytest.fixture(params=["sqlite", "mysql"], ids=["sqlite->postgresql", "mysql->postgresql"])
def drifting(
    request: pytest.FixtureRequest, make_db_url: MakeDbUrl, tmp_path: Path, instance: DagsterInstance
) -> Drifting:
    """Five rows synced in the hour three hours back; four more in the next hour, not synced."""
    source = side(request.param, make_db_url(request.param, "source"))
    target = side("postgresql", make_db_url("postgresql", "target"))
    now = hour_floor(datetime.now(UTC))
    synced, unsynced = (
        Window.hour_starting(now - timedelta(hours=3)),
        Window.hour_starting(now - timedelta(hours=2)),
    )
    orders = create_source(
        source,
        [row(i, in_hour(synced, i)) for i in range(1, 6)]
        + [row(i, in_hour(unsynced, i)) for i in range(6, 10)],
    )
    start = (now - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%S")
    # Compared at an hour old (the default waits for the lookback's last hour: this is about the verdict).
    drift = {"lookback_hours": 6, "milestones_minutes": [60]}
    deployment = deploy(tmp_path, instance, source, target, start, drift=drift)
    deployment.sync(synced.partition_key())
    assert rows_in(target, "orders", synced) == rows_in(source, "orders", synced)
    return Drifting(deployment, orders, synced, unsynced)


def check_values(evaluation: AssetCheckEvaluation) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}


def drift_verdict(evaluation: AssetCheckEvaluation) -> dict[str, Any]:
    """The drift check's verdict, without the schedule's bookkeeping (test_drift_schedule.py pins that)."""
    values = check_values(evaluation)
    return {k: values[k] for k in ("drifted_partitions", "partitions_compared", "rows_differing")}


def test_drift_check_passes_when_synced_partitions_equal_the_source(drifting: Drifting) -> None:
    """Right after a sync the drift check passes, comparing only the one synced partition.

    The next hour has source rows the target lacks, but it was never synced, so it is not compared.
    """
    evaluation = drifting.deployment.drift_check()
    assert evaluation.passed
    assert drift_verdict(evaluation) == {
        "drifted_partitions": {},
        "partitions_compared": 1,
        "rows_differing": 0,
    }
    assert evaluation.description == "1 compared partitions equal the source (0 due later)"


TAMPERING = ["target_row_deleted", "target_value_changed", "source_row_deleted"]


def tamper(drifting: Drifting, how: str) -> None:
    """Change one row of the synced hour behind the pipeline's back; ``updated_at`` is never touched."""
    deployment = drifting.deployment
    if how == "source_row_deleted":
        delete(deployment.source, drifting.orders, drifting.orders.c.id == 3)
        return
    target = sa.Table("orders", sa.MetaData(), autoload_with=deployment.target.engine)
    if how == "target_row_deleted":
        delete(deployment.target, target, target.c.id == 1)
    else:
        update(deployment.target, target, target.c.id == 2, amount=999, note="edited in the warehouse")


@pytest.mark.parametrize("how", TAMPERING)
def test_drift_check_fails_naming_the_drifted_partition(drifting: Drifting, how: str) -> None:
    """Each kind of drift alone fails the check with the synced partition and one row differing."""
    tamper(drifting, how)

    evaluation = drifting.deployment.drift_check()

    assert not evaluation.passed
    assert drift_verdict(evaluation) == {
        "drifted_partitions": {drifting.synced.partition_key(): 1},
        "partitions_compared": 1,
        "rows_differing": 1,
    }
    assert evaluation.description == "1 of 1 compared partitions differ from the source"


def test_drift_check_counts_every_drifted_row(drifting: Drifting) -> None:
    """A deleted target row, a value changed in the target and a deleted source row make 3 rows of drift.

    Still only the synced partition is compared and named.
    """
    for how in TAMPERING:
        tamper(drifting, how)

    evaluation = drifting.deployment.drift_check()

    assert not evaluation.passed
    assert drift_verdict(evaluation) == {
        "drifted_partitions": {drifting.synced.partition_key(): 3},
        "partitions_compared": 1,
        "rows_differing": 3,
    }


# -- in_sync ----------------------------------------------------------------------------------------


def test_in_sync_check_yielded_by_a_sync_passes(drifting: Drifting) -> None:
    """A normal sync of an hour yields the in_sync check of that partition, passed, with the row counts."""
    [result] = drifting.deployment.sync(drifting.unsynced.partition_key())

    [event] = [e for e in result.all_events if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION]
    evaluation = event.event_specific_data
    assert isinstance(evaluation, AssetCheckEvaluation)
    assert (evaluation.asset_key, evaluation.check_name, evaluation.passed) == (KEY, IN_SYNC_CHECK, True)
    values = check_values(evaluation)
    assert {k: values[k] for k in ("rows_differing", "source_rows", "target_rows")} == {
        "rows_differing": 0,
        "source_rows": 4,
        "target_rows": 4,
    }
    assert rows_in(drifting.deployment.target, "orders", drifting.unsynced) == rows_in(
        drifting.deployment.source, "orders", drifting.unsynced
    )
