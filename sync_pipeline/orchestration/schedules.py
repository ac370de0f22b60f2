"""Hourly jobs and schedules: each completed hour of every table, a few minutes after it ends.

A Dagster job holds assets of one partitions definition, so tables are grouped by theirs (usually
all tables share one ``start`` and this makes a single job, ``sync_hourly``). Each tick asks for the
last completed hour, skips it if a run of it is still in flight, and tags the run with the lookback
so the step also re-checks the hours before it for late commits.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, TypeAlias

from dagster import (
    AssetCheckKey,
    AssetSelection,
    DagsterRunStatus,
    DefaultScheduleStatus,
    HourlyPartitionsDefinition,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    partition_loading_context,
    schedule,
)

from sync_pipeline.config import SyncConfig
from sync_pipeline.orchestration.assets import LOOKBACK_TAG, asset_key, partitions_def
from sync_pipeline.orchestration.checks import IN_SYNC_CHECK
from sync_pipeline.orchestration.ranged import covers

PARTITION_TAG = "dagster/partition"
"""The run tag holding a run's partition key; Dagster's own name for it, whose constant is private."""

# Runs not finished yet, waiting ones included: with a run queue a run of the hour may well be waiting
# its turn. (Dagster's own list of in-progress statuses is private, and leaves out QUEUED and NOT_STARTED.)
IN_FLIGHT_STATUSES = [
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
    DagsterRunStatus.SUSPENDED,
]

# What define_asset_job returns: a job that Definitions resolves against the assets. Dagster does not
# export its class (it lives in dagster._core), so it is named here and typed loosely.
AssetJob: TypeAlias = Any


def build_jobs(config: SyncConfig) -> list[tuple[AssetJob, HourlyPartitionsDefinition]]:
    """One asset job per distinct partitions definition among the tables."""
    groups: dict[str, list[str]] = defaultdict(list)
    defs: dict[str, HourlyPartitionsDefinition] = {}
    for table in config.tables:
        partitions = partitions_def(table, config)
        groups[partitions.start.strftime("%Y%m%d%H")].append(table.name)
        defs[partitions.start.strftime("%Y%m%d%H")] = partitions
    jobs = []
    for start, names in sorted(groups.items()):
        name = "sync_hourly" if len(groups) == 1 else f"sync_hourly_from_{start}"
        tables = [t for t in config.tables if t.name in names]
        job = define_asset_job(
            name,
            # The sync steps and their in_sync checks (yielded by the sync itself); the freshness and
            # drift checks run from their sensors, not in every hourly run.
            selection=AssetSelection.assets(*(asset_key(t) for t in tables)).without_checks()
            | AssetSelection.checks(
                *(AssetCheckKey(asset_key(t), IN_SYNC_CHECK) for t in tables if t.verify)
            ),
            description=f"Sync one hour of: {', '.join(names)}",
        )
        jobs.append((job, defs[start]))
    return jobs


def build_hourly_schedule(
    job: AssetJob, partitions: HourlyPartitionsDefinition, config: SyncConfig
) -> ScheduleDefinition:
    settings = config.schedule
    keys = {asset_key(t) for t in config.tables if partitions_def(t, config).start == partitions.start}
    status = DefaultScheduleStatus.RUNNING if settings.enabled else DefaultScheduleStatus.STOPPED

    @schedule(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=f"{settings.minute} * * * *",
        execution_timezone=config.partition_timezone,
        default_status=status,
        description=(
            f"At minute {settings.minute} of every hour: sync the hour that just ended and re-check "
            f"the {settings.lookback_hours} before it for late commits."
        ),
    )
    def _tick(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        now = context.scheduled_execution_time or datetime.now(UTC)
        # Dagster's own last complete partition: right across DST changes, where local wall-clock
        # arithmetic is not, and with Dagster's key for a repeated hour (2026-10-25-02:00+0100).
        with partition_loading_context(effective_dt=now):
            partition_key = partitions.get_last_partition_key()
        if partition_key is None:
            return SkipReason("no hour has completed since the tables' start")
        # Any run of this hour that syncs one of these tables: this job's, or a backfill's or a
        # manual materialization's (those run the implicit asset job with an asset selection); a
        # ranged backfill run covers the hour when it lies inside its partition range.
        in_flight = [
            record.dagster_run
            for record in context.instance.get_run_records(RunsFilter(statuses=IN_FLIGHT_STATUSES))
            if (
                record.dagster_run.job_name == job.name
                or keys & (record.dagster_run.asset_selection or frozenset())
            )
            and covers(record.dagster_run, partitions, partition_key)
        ]
        if in_flight:
            run_id = in_flight[0].run_id
            return SkipReason(f"partition {partition_key} is already being synced by run {run_id}")
        return RunRequest(
            run_key=partition_key,
            partition_key=partition_key,
            tags={LOOKBACK_TAG: str(settings.lookback_hours)},
        )

    return _tick


def build_schedules(
    jobs: list[tuple[AssetJob, HourlyPartitionsDefinition]], config: SyncConfig
) -> list[ScheduleDefinition]:
    return [build_hourly_schedule(job, partitions, config) for job, partitions in jobs]
