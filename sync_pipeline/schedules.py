"""Hourly jobs and schedules: each completed hour of every table, a few minutes after it ends.

A Dagster job holds assets of one partitions definition, so tables are grouped by theirs (usually
all tables share one ``start`` and this makes a single job, ``sync_hourly``). Each tick asks for the
last completed hour, skips it if a run of it is still in flight, and tags the run with the lookback
so the step also re-checks the hours before it for late commits.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    HourlyPartitionsDefinition,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

from sync_pipeline.assets import LOOKBACK_TAG, asset_key, partitions_def
from sync_pipeline.config import SyncConfig
from sync_pipeline.diff.window import Window

PARTITION_TAG = "dagster/partition"


def build_jobs(config: SyncConfig) -> list[tuple[UnresolvedAssetJobDefinition, HourlyPartitionsDefinition]]:
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
            selection=AssetSelection.assets(*(asset_key(t) for t in tables)),
            partitions_def=defs[start],
            description=f"Sync one hour of: {', '.join(names)}",
        )
        jobs.append((job, defs[start]))
    return jobs


def build_hourly_schedule(
    job: UnresolvedAssetJobDefinition, partitions: HourlyPartitionsDefinition, config: SyncConfig
) -> ScheduleDefinition:
    settings = config.schedule
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
        this_hour = now.astimezone(partitions.start.tzinfo).replace(minute=0, second=0, microsecond=0)
        last_completed = Window.hour_starting(this_hour - timedelta(hours=1))
        if last_completed.start < partitions.start:
            return SkipReason("no hour has completed since the tables' start")
        partition_key = last_completed.partition_key(config.partition_timezone)
        in_flight = context.instance.get_run_records(
            RunsFilter(
                job_name=job.name, tags={PARTITION_TAG: partition_key}, statuses=IN_PROGRESS_RUN_STATUSES
            ),
            limit=1,
        )
        if in_flight:
            run_id = in_flight[0].dagster_run.run_id
            return SkipReason(f"partition {partition_key} is already being synced by run {run_id}")
        return RunRequest(
            run_key=partition_key,
            partition_key=partition_key,
            tags={LOOKBACK_TAG: str(settings.lookback_hours)},
        )

    return _tick


def build_schedules(
    jobs: list[tuple[UnresolvedAssetJobDefinition, HourlyPartitionsDefinition]], config: SyncConfig
) -> list[ScheduleDefinition]:
    return [build_hourly_schedule(job, partitions, config) for job, partitions in jobs]
