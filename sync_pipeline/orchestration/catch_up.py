"""Catch-up: missed hours within a horizon are requested again, by Dagster's declarative automation.

An hour can be missed in many ways: the daemon was down at the schedule's tick, a run failed past
its retries, a table was added with history. Rather than a hand-written sensor that reads the event
log and builds run requests, each sync asset carries an :class:`~dagster.AutomationCondition` and one
:class:`~dagster.AutomationConditionSensorDefinition` evaluates it. Dagster already knows what that
needs: which partitions are missing, which are in a run or backfill not finished yet (so requests
never pile up on one hour), which failed last; and the sensor turns a request of many partitions
into one backfill, run as ranged runs when the asset has a multi-run ``BackfillPolicy``.

The condition, for each hourly partition:

- within the newest ``catch_up.max_hours`` hours (a new table with a long history does not flood
  the queue; older hours are backfilled on purpose, from the UI), but not the newest hour, which is
  the hourly schedule's (it waits ``schedule.minute`` past the hour for late commits);
- missing (never materialized) and not in progress;
- and, if its last run failed (retries exhausted), only when a retry tick has passed: once every
  ``catch_up.retry_failed_every_minutes`` (by default hourly, at ``schedule.minute + 30``), a
  fixed backoff that keeps a hopeless hour from being retried at every evaluation.

Two runs of one hour never sync at once anyway: the engine's per-partition lock serialises them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    HourlyPartitionsDefinition,
    map_asset_specs,
    partition_loading_context,
)

from sync_pipeline.config import SyncConfig
from sync_pipeline.orchestration.freshness import collapse, describe

CATCH_UP_SENSOR = "catch_up_sensor"


def retry_cron(config: SyncConfig) -> str:
    """When failed hours are requested again: every N minutes, or half an hour after the schedule's
    minute every N hours.
    """
    minutes = config.catch_up.retry_failed_every_minutes
    if minutes < 60:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    hours = minutes // 60
    return f"{(config.schedule.minute + 30) % 60} {'*' if hours == 1 else f'*/{hours}'} * * *"


def retry_words(config: SyncConfig) -> str:
    """:func:`retry_cron` for people."""
    minutes = config.catch_up.retry_failed_every_minutes
    if minutes < 60:
        return f"failed ones every {minutes} minutes"
    hours = minutes // 60
    every = "hour" if hours == 1 else f"{hours} hours"
    return f"failed ones at minute {(config.schedule.minute + 30) % 60} of every {every}"


def catch_up_condition(config: SyncConfig) -> AutomationCondition | None:  # type: ignore[type-arg]
    """The sync assets' automation condition; ``None`` when ``catch_up.enabled`` is false."""
    settings = config.catch_up
    if not settings.enabled:
        return None
    failed_retry = AutomationCondition.cron_tick_passed(retry_cron(config), config.partition_timezone)
    return (
        AutomationCondition.in_latest_time_window(timedelta(hours=settings.max_hours))
        & ~AutomationCondition.in_latest_time_window()
        & AutomationCondition.missing()
        & ~AutomationCondition.in_progress()
        & (~AutomationCondition.execution_failed() | failed_retry)
    ).with_label(f"catch up missed hours (newest {settings.max_hours}h)")


def with_catch_up(assets: Sequence[AssetsDefinition], config: SyncConfig) -> list[AssetsDefinition]:
    """The sync assets with the catch-up condition attached: a policy applied where definitions meet."""
    condition = catch_up_condition(config)
    if condition is None:
        return list(assets)
    return list(map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=condition), assets))


def build_catch_up_sensor(
    config: SyncConfig, keys: Sequence[AssetKey]
) -> AutomationConditionSensorDefinition:
    """The sensor that evaluates the catch-up condition of every sync asset.

    ``emit_backfills``: a tick that finds many missed hours launches one backfill of them, which the
    backfill daemon runs within the run queue's limits, rather than one run request per hour.
    """
    enabled = config.catch_up.enabled
    return AutomationConditionSensorDefinition(
        CATCH_UP_SENSOR,
        target=AssetSelection.assets(*keys),
        default_status=DefaultSensorStatus.RUNNING if enabled else DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=config.catch_up.interval_seconds,
        emit_backfills=True,
        description=(
            f"Requests the missed hours of the last {config.catch_up.max_hours} (not the newest, which "
            f"is the schedule's) that are not in progress; failed ones again on cron '{retry_cron(config)}'."
        ),
    )


def catch_up_note(
    config: SyncConfig, partitions: HourlyPartitionsDefinition, hours: Sequence[str], now: datetime
) -> str:
    """What will happen to missed or failed ``hours``, in the words an alert uses."""
    settings = config.catch_up
    them = "it" if len(hours) == 1 else "them"
    if not settings.enabled:
        return f"catch-up is off: backfill {them} from the UI"
    with partition_loading_context(effective_dt=now):
        latest = partitions.get_last_partition_window()
    oldest_caught_up = None if latest is None else latest.end - timedelta(hours=settings.max_hours)
    beyond = [
        h
        for h in hours
        if oldest_caught_up is not None
        and partitions.time_window_for_partition_key(h).start < oldest_caught_up
    ]
    retry = retry_words(config)
    if not beyond:
        return f"the catch-up requests {them} again ({retry})"
    horizon = f"older than catch_up.max_hours ({settings.max_hours}h)"
    if len(beyond) == len(hours):
        return f"{horizon}: backfill {them} from the UI"
    return (
        f"{describe(collapse(beyond, partitions))} {horizon}: backfill from the UI; "
        f"the catch-up requests the other {len(hours) - len(beyond)} ({retry})"
    )
