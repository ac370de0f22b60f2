"""The code location: the one place that assembles the Dagster definitions.

The configuration is chosen once, here: the YAML file named by ``SYNC_PIPELINE_CONFIG``, or the
embedded SQLite demo when it is unset. Loading reads that file and builds the definitions; it opens
no database connection (every connection is opened inside a step process).
"""

from __future__ import annotations

import os

from dagster import Definitions, JobDefinition, ScheduleDefinition

from sync_pipeline.config import CONFIG_ENV_VAR
from sync_pipeline.orchestration.assets import asset_key, build_sync_assets, partitions_def
from sync_pipeline.orchestration.catch_up import build_catch_up_sensor, with_catch_up
from sync_pipeline.orchestration.checks import build_checks, build_placement_check
from sync_pipeline.orchestration.executors import build_executor
from sync_pipeline.orchestration.resources import AlertResource, SyncResource, active_config
from sync_pipeline.orchestration.schedules import build_jobs, build_schedules
from sync_pipeline.orchestration.sensors import (
    WatchedTable,
    build_drift_job,
    build_drift_sensor,
    build_failure_sensor,
    build_freshness_sensor,
    build_unplaced_sensor,
)
from sync_pipeline.orchestration.sources import build_source_specs, with_sources_and_owners


def build_definitions(config_path: str) -> Definitions:
    """Everything the code location serves, for the config at ``config_path`` (empty: the demo)."""
    config = active_config(config_path)
    jobs = build_jobs(config)
    extra_jobs: list[JobDefinition] = []
    extra_schedules: list[ScheduleDefinition] = []
    if not config_path:
        from sync_pipeline.orchestration.demo_activity import demo_activity_job, demo_activity_schedule

        extra_jobs, extra_schedules = [demo_activity_job], [demo_activity_schedule]
    watched = [
        WatchedTable(
            table=table,
            key=asset_key(table),
            partitions=partitions_def(table, config),
            job_name=next(job.name for job, p in jobs if p == partitions_def(table, config)),
        )
        for table in config.tables
    ]
    freshness_checks, drift_checks = [], []
    for w in watched:
        freshness, drift = build_checks(w.table, config, w.key, w.partitions)
        freshness_checks.append(freshness)
        drift_checks.append(drift)
    drift_job = build_drift_job(drift_checks)
    sync_jobs = [job for job, _ in jobs]
    return Definitions(
        assets=[
            *build_source_specs(config),
            *with_sources_and_owners(config, with_catch_up(build_sync_assets(config), config)),
        ],
        asset_checks=[*freshness_checks, *drift_checks, *(build_placement_check(w.key) for w in watched)],
        jobs=[*sync_jobs, drift_job, *extra_jobs],
        schedules=[*build_schedules(jobs, config), *extra_schedules],
        sensors=[
            build_freshness_sensor(config, watched),
            build_drift_sensor(config, watched, drift_job, sync_jobs),
            build_failure_sensor(config, watched),
            build_unplaced_sensor(config, watched),
            build_catch_up_sensor(config, [w.key for w in watched]),
        ],
        resources={
            "sync": SyncResource(config_path=config_path),
            "alerts": AlertResource(config_path=config_path),
        },
        executor=build_executor(config.executor, config_path or "the demo configuration"),
    )


defs = build_definitions(os.environ.get(CONFIG_ENV_VAR, ""))
