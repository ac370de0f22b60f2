"""Tests of the hourly jobs and schedules (orchestration.schedules), evaluated as the daemon would.

The schedules come from the code location's definitions for a config file, and each tick is
evaluated with ``build_schedule_context`` at a fixed scheduled time against a real (temporary)
Dagster instance, so the in-flight check reads real run records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    build_schedule_context,
    instance_for_test,
)
from dagster._core.definitions.schedule_definition import ScheduleExecutionData
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from sync_pipeline.config import CONFIG_ENV_VAR
from sync_pipeline.demo.config import DATA_DIR_ENV
from sync_pipeline.orchestration.assets import LOOKBACK_TAG
from sync_pipeline_tests.dagster_helpers import load_definitions, table_entry, utc, write_config

PARTITION_TAG = "dagster/partition"

CONNECTIONS = {"app": "sqlite:///app.db", "warehouse": "sqlite:///warehouse.db"}
TABLES = [table_entry("orders", "app", "warehouse"), table_entry("events", "app", "warehouse")]


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Definitions]:
    """``load(tables=None, **top)``: the code location's definitions for such a config file.

    The connections are placeholder SQLite files: building definitions and ticking never opens them.
    """
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "demo"))
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)

    def load(tables: list[dict[str, Any]] | None = None, **top: Any) -> Definitions:
        path = write_config(tmp_path / "sync.yaml", CONNECTIONS, tables or TABLES, **top)
        return load_definitions(str(path))

    return load


def schedules_of(defs: Definitions) -> dict[str, ScheduleDefinition]:
    """The hourly schedules of the code location (a demo would add its own)."""
    return {s.name: s for s in defs.get_repository_def().schedule_defs}


def only_schedule(defs: Definitions) -> ScheduleDefinition:
    [schedule] = schedules_of(defs).values()
    return schedule


def tick(
    defs: Definitions, schedule: ScheduleDefinition, instance: DagsterInstance, at: datetime
) -> ScheduleExecutionData:
    repository = defs.get_repository_def()
    with build_schedule_context(
        instance=instance, scheduled_execution_time=at, repository_def=repository
    ) as context:
        return schedule.evaluate_tick(context)


def requested(data: ScheduleExecutionData) -> list[tuple[str | None, str | None, str | None]]:
    """(partition key, run key, lookback tag) of each run request of a tick."""
    return [
        (request.partition_key, request.run_key, request.tags.get(LOOKBACK_TAG))
        for request in data.run_requests or []
    ]


def add_run(instance: DagsterInstance, partition: str, status: DagsterRunStatus) -> DagsterRun:
    """Record a run of sync_hourly for ``partition`` in ``status``, as the daemon would have."""
    # A queued run must say where its code lives, for the run coordinator to launch it.
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="sync_pipeline.definitions")),
            "__repository__",
        ),
        "sync_hourly",
    )
    run = DagsterRun(
        job_name="sync_hourly", status=status, tags={PARTITION_TAG: partition}, remote_job_origin=origin
    )
    return instance.add_run(run)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as temp:
        yield temp


def test_one_job_and_schedule_when_tables_share_a_start(load: Callable[..., Definitions]) -> None:
    """Tables with one start make one job, sync_hourly, with a running schedule at the configured minute."""
    defs = load(schedule={"minute": 25})
    job = defs.resolve_job_def("sync_hourly")
    assert job.asset_layer.executable_asset_keys == {
        AssetKey(["sync", "orders"]),
        AssetKey(["sync", "events"]),
    }
    assert job.partitions_def is not None
    assert job.partitions_def.get_first_partition_key() == "2026-11-30-00:00"
    schedule = only_schedule(defs)
    assert schedule.name == "sync_hourly_schedule"
    assert schedule.job_name == "sync_hourly"
    assert schedule.cron_schedule == "25 * * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING


def test_disabled_schedule_is_stopped_by_default(load: Callable[..., Definitions]) -> None:
    """``schedule.enabled: false`` keeps the schedule but stopped, so an operator can start it in the UI."""
    assert only_schedule(load(schedule={"enabled": False})).default_status == DefaultScheduleStatus.STOPPED


def test_tick_requests_the_last_completed_hour_with_the_lookback(
    load: Callable[..., Definitions], instance: DagsterInstance
) -> None:
    """At 09:10 UTC the tick asks for partition 08:00, keyed by it, tagged with the lookback hours."""
    defs = load(schedule={"lookback_hours": 5})

    data = tick(defs, only_schedule(defs), instance, utc("2026-11-30T09:10"))

    assert requested(data) == [("2026-11-30-08:00", "2026-11-30-08:00", "5")]
    assert data.skip_message is None


def test_tick_uses_the_default_lookback(load: Callable[..., Definitions], instance: DagsterInstance) -> None:
    """Without a ``schedule:`` section the tick re-checks the three hours before the synced one."""
    defs = load()
    assert requested(tick(defs, only_schedule(defs), instance, utc("2026-12-03T00:10"))) == [
        ("2026-12-02-23:00", "2026-12-02-23:00", "3")
    ]


def test_tick_skips_until_the_first_hour_has_completed(
    load: Callable[..., Definitions], instance: DagsterInstance
) -> None:
    """Before the first partition has ended there is nothing to sync: the tick skips with a reason."""
    defs = load([table_entry("orders", "app", "warehouse", start="2026-11-30T09:00:00")])
    schedule = only_schedule(defs)

    for at in ("2026-11-30T08:10", "2026-11-30T09:10", "2026-11-30T09:59"):
        data = tick(defs, schedule, instance, utc(at))
        assert data.run_requests == [], at
        assert data.skip_message, at

    assert [key for key, _, _ in requested(tick(defs, schedule, instance, utc("2026-11-30T10:00")))] == [
        "2026-11-30-09:00"
    ]


def test_tick_in_a_non_utc_partition_timezone_asks_for_the_local_key(
    load: Callable[..., Definitions], instance: DagsterInstance
) -> None:
    """Partition keys are local to ``partition_timezone`` (here UTC+05:30), and so is the schedule."""
    defs = load(partition_timezone="Asia/Kolkata")
    schedule = only_schedule(defs)
    assert schedule.execution_timezone == "Asia/Kolkata"

    # 08:40 UTC is 14:10 in Kolkata: the hour that just ended is 13:00-14:00 local.
    assert requested(tick(defs, schedule, instance, utc("2026-11-30T08:40"))) == [
        ("2026-11-30-13:00", "2026-11-30-13:00", "3")
    ]


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        # Autumn: 02:00-03:00 happens twice in Paris; Dagster names the second one 02:00+0100.
        ("2026-10-25T00:10", "2026-10-25-01:00"),
        ("2026-10-25T01:10", "2026-10-25-02:00"),
        ("2026-10-25T02:10", "2026-10-25-02:00+0100"),
        ("2026-10-25T03:10", "2026-10-25-03:00"),
        # Spring: 02:00-03:00 does not exist; at 03:10 local the hour that ended began at 01:00.
        ("2026-03-29T01:10", "2026-03-29-01:00"),
        ("2026-03-29T02:10", "2026-03-29-03:00"),
    ],
)
def test_tick_across_daylight_saving_changes_asks_for_the_hour_that_just_ended(
    load: Callable[..., Definitions], instance: DagsterInstance, at: str, expected: str
) -> None:
    """Around DST changes the tick asks for the partition (Dagster's own key) that ended just before it."""
    defs = load(
        [table_entry("orders", "app", "warehouse", start="2026-01-01T00:00:00")],
        partition_timezone="Europe/Paris",
    )
    partitions = defs.resolve_job_def("sync_hourly").partitions_def
    assert partitions is not None

    [(key, run_key, _)] = requested(tick(defs, only_schedule(defs), instance, utc(at)))

    assert (key, run_key) == (expected, expected)
    window = partitions.time_window_for_partition_key(expected)  # type: ignore[attr-defined]
    assert window.end <= utc(at) < window.end + timedelta(hours=1)


def test_tick_skips_a_partition_whose_run_is_in_flight(
    load: Callable[..., Definitions], instance: DagsterInstance
) -> None:
    """While a run of the hour is queued or running the tick skips it, naming that run."""
    defs = load()
    for status in (DagsterRunStatus.QUEUED, DagsterRunStatus.STARTED):
        run = add_run(instance, "2026-11-30-08:00", status)
        data = tick(defs, only_schedule(defs), instance, utc("2026-11-30T09:10"))
        assert data.run_requests == [], status
        assert data.skip_message is not None
        assert run.run_id in data.skip_message
        instance.delete_run(run.run_id)


def test_tick_ignores_finished_runs_and_other_partitions(
    load: Callable[..., Definitions], instance: DagsterInstance
) -> None:
    """A finished run of the hour, or a running one of another hour, does not hold the tick back."""
    defs = load()
    add_run(instance, "2026-11-30-08:00", DagsterRunStatus.FAILURE)
    add_run(instance, "2026-11-30-08:00", DagsterRunStatus.SUCCESS)
    add_run(instance, "2026-11-30-07:00", DagsterRunStatus.STARTED)

    data = tick(defs, only_schedule(defs), instance, utc("2026-11-30T09:10"))

    assert [key for key, _, _ in requested(data)] == ["2026-11-30-08:00"]


def test_tick_skips_when_a_backfill_run_of_the_partition_is_in_flight(
    load: Callable[..., Definitions], instance: DagsterInstance
) -> None:
    """A run of the hour launched outside the schedule (a UI backfill of one asset) also holds it back."""
    defs = load()
    run = instance.add_run(
        DagsterRun(
            job_name="__ASSET_JOB",
            status=DagsterRunStatus.STARTED,
            tags={PARTITION_TAG: "2026-11-30-08:00", "dagster/backfill": "abcdefgh"},
            asset_selection=frozenset({AssetKey(["sync", "orders"])}),
        )
    )

    data = tick(defs, only_schedule(defs), instance, utc("2026-11-30T09:10"))

    assert data.run_requests == []
    assert data.skip_message is not None
    assert run.run_id in data.skip_message


def test_tables_with_different_starts_get_a_job_and_schedule_each(
    load: Callable[..., Definitions], instance: DagsterInstance
) -> None:
    """Tables starting at different hours are split into jobs by start; each schedule asks for its hour.

    A run in flight for one job's partition does not hold back the other job's same partition.
    """
    defs = load(
        [
            table_entry("orders", "app", "warehouse", start="2026-11-30T00:00:00"),
            table_entry("events", "app", "warehouse", start="2026-11-30T08:00:00"),
        ]
    )
    schedules = schedules_of(defs)
    assert sorted(schedules) == [
        "sync_hourly_from_2026113000_schedule",
        "sync_hourly_from_2026113008_schedule",
    ]
    early, late = (schedules[name] for name in sorted(schedules))
    at = utc("2026-11-30T08:10")
    assert [key for key, _, _ in requested(tick(defs, early, instance, at))] == ["2026-11-30-07:00"]
    assert tick(defs, late, instance, at).skip_message

    at = utc("2026-11-30T09:10")
    instance.add_run(
        DagsterRun(
            job_name="sync_hourly_from_2026113000",
            status=DagsterRunStatus.STARTED,
            tags={PARTITION_TAG: "2026-11-30-08:00"},
        )
    )
    assert tick(defs, early, instance, at).skip_message
    assert [key for key, _, _ in requested(tick(defs, late, instance, at))] == ["2026-11-30-08:00"]
