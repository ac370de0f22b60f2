"""The demo's heartbeat: a small job that keeps changing the demo source so the schedule has work.

Only part of the code location when it runs the embedded demo. The changes themselves (inserts,
updates, deletes, rows moved between hours) are made by :mod:`sync_pipeline.demo.simulator`.
"""

from dagster import DefaultScheduleStatus, OpExecutionContext, ScheduleDefinition, job, op

from sync_pipeline.orchestration.resources import SyncResource


@op(description="Apply one round of realistic changes to the demo's source database.")
def simulate_source_activity(context: OpExecutionContext, sync: SyncResource) -> None:
    from sync_pipeline.demo.seed import ensure_seeded
    from sync_pipeline.demo.simulator import simulate_activity

    ensure_seeded(sync.load())
    activity = simulate_activity(sync.demo_source_url())
    context.log.info(f"demo source changed: {activity}")


@job(description="Demo only: changes the SQLite source so every hour has something to sync.")
def demo_activity_job() -> None:
    simulate_source_activity()


demo_activity_schedule = ScheduleDefinition(
    name="demo_activity_schedule",
    job=demo_activity_job,
    cron_schedule="*/5 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Demo only: change the demo source every five minutes.",
)
