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
- and, if its last run failed (retries exhausted), only once its backoff has passed: the n-th
  failure of an hour waits ``retry_failed_after_minutes * 2**(n-1)``, at most
  ``retry_failed_max_minutes``, after that failure. A passing outage is retried soon; a hopeless
  hour is not retried at every evaluation, nor every hour for a week.

The backoff needs how many times, and when, each hour failed. Dagster has no built-in condition for
that, so :class:`RetryBackoffPassed` is a small custom condition that reads it from Dagster's own
run records (the failed runs that synced the hour, by its partition tag or a ranged run's range): no
state of ours to keep. A custom condition is evaluated in the code server (``use_user_code_server``),
like every other sensor of this code location; it opens no database connection of the syncs.

Two runs of one hour never sync at once anyway: the engine's per-partition lock serialises them.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    AutomationContext,
    AutomationResult,
    BetaWarning,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    HourlyPartitionsDefinition,
    RunsFilter,
    TimeWindowPartitionsDefinition,
    map_asset_specs,
    partition_loading_context,
)

from sync_pipeline.config import SyncConfig
from sync_pipeline.orchestration.freshness import collapse, describe
from sync_pipeline.orchestration.ranged import covers

CATCH_UP_SENSOR = "catch_up_sensor"


# -- the backoff of failed hours -----------------------------------------------------------------


@dataclass(frozen=True)
class RetryBackoff:
    """How long a failed hour waits before the catch-up requests it again: doubling, capped."""

    first: timedelta
    longest: timedelta

    @classmethod
    def of(cls, config: SyncConfig) -> RetryBackoff:
        settings = config.catch_up
        return cls(
            timedelta(minutes=settings.retry_failed_after_minutes),
            timedelta(minutes=settings.retry_failed_max_minutes),
        )

    def delay(self, failures: int) -> timedelta:
        """The wait after an hour's ``failures``-th failure (1 for the first)."""
        if failures < 1:
            return timedelta(0)
        # Doubling stops at the cap long before the exponent could grow large.
        wait = self.first
        for _ in range(failures - 1):
            if wait >= self.longest:
                break
            wait *= 2
        return min(wait, self.longest)

    def due(self, failed_at: Sequence[datetime]) -> datetime | None:
        """When an hour that failed at ``failed_at`` (any order) is retried; ``None`` if it never failed."""
        if not failed_at:
            return None
        return max(failed_at) + self.delay(len(failed_at))

    def words(self) -> str:
        """The rule, for people: ``after 60 min, doubling up to 24 h``."""
        if self.first == self.longest:
            return f"failed ones every {_duration(self.first)}"
        return f"failed ones after {_duration(self.first)}, the wait doubling up to {_duration(self.longest)}"


def _duration(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes % 60 or minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h"


def failures_by_hour(
    instance: DagsterInstance,
    key: AssetKey,
    partitions: TimeWindowPartitionsDefinition,
    hours: Collection[str],
) -> dict[str, list[datetime]]:
    """When each of ``hours`` failed: the end of every failed run that synced it, from Dagster's run records.

    A run syncs an hour when the hour is its partition or lies in its range (a ranged run that failed
    at an earlier hour of its range failed this one too: it was not synced), and it selected ``key``
    (a scheduled run of the hourly job selects every table of the job).
    """
    if not hours:
        return {}
    # A run of an hour can only start once the hour has ended.
    since = min(partitions.time_window_for_partition_key(h).end for h in hours) - timedelta(minutes=1)
    runs = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.FAILURE], created_after=since))
    found: dict[str, list[datetime]] = {h: [] for h in hours}
    for record in runs:
        run = record.dagster_run
        if run.asset_selection and key not in run.asset_selection:
            continue
        ended = datetime.fromtimestamp(record.end_time, UTC) if record.end_time else record.update_timestamp
        for hour in hours:
            if covers(run, partitions, hour):
                found[hour].append(ended)
    return found


def next_retry(
    instance: DagsterInstance,
    key: AssetKey,
    partitions: TimeWindowPartitionsDefinition,
    hour: str,
    config: SyncConfig,
) -> tuple[int, datetime] | None:
    """How many times ``hour`` has failed, and when the catch-up requests it again; ``None`` if never."""
    failed_at = failures_by_hour(instance, key, partitions, [hour])[hour]
    due = RetryBackoff.of(config).due(failed_at)
    return None if due is None else (len(failed_at), due)


class RetryBackoffPassed(AutomationCondition[AssetKey]):
    """True for each hour whose backoff since its last failure has passed (or that never failed).

    Meant to be given only failed hours (``execution_failed() & RetryBackoffPassed(...)``): it reads
    the run records of exactly the hours it is asked about.
    """

    def __init__(self, backoff: RetryBackoff) -> None:
        self.backoff = backoff

    @property
    def name(self) -> str:
        return "retry_backoff_passed"

    @property
    def description(self) -> str:
        return f"Retry backoff passed ({self.backoff.words()})"

    @property
    def requires_cursor(self) -> bool:
        return False

    def evaluate(self, context: AutomationContext[AssetKey]) -> AutomationResult[AssetKey]:
        partitions = context.partitions_def
        candidates = context.candidate_subset
        if candidates.is_empty or not isinstance(partitions, TimeWindowPartitionsDefinition):
            return AutomationResult(context, candidates)
        hours = candidates.expensively_compute_partition_keys()
        instance = context.asset_graph_view.instance
        now = context.evaluation_time
        failures = failures_by_hour(instance, context.key, partitions, hours)
        due = {h for h, failed_at in failures.items() if (self.backoff.due(failed_at) or now) <= now}
        return AutomationResult(context, candidates.compute_intersection_with_partition_keys(due))


# -- the condition and its sensor -----------------------------------------------------------------


def catch_up_condition(config: SyncConfig) -> AutomationCondition | None:  # type: ignore[type-arg]
    """The sync assets' automation condition; ``None`` when ``catch_up.enabled`` is false."""
    settings = config.catch_up
    if not settings.enabled:
        return None
    failed = AutomationCondition.execution_failed()
    return (
        AutomationCondition.in_latest_time_window(timedelta(hours=settings.max_hours))
        & ~AutomationCondition.in_latest_time_window()
        & AutomationCondition.missing()
        & ~AutomationCondition.in_progress()
        & (~failed | (failed & RetryBackoffPassed(RetryBackoff.of(config))))
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
    ``use_user_code_server``: the backoff is a custom condition, which only the code server can
    evaluate (Dagster allows 500 assets a sensor there, far more tables than one location holds).
    """
    enabled = config.catch_up.enabled
    # use_user_code_server is marked beta in Dagster 1.13; it is the documented way to custom
    # conditions, and the warning would otherwise print wherever the definitions load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return _catch_up_sensor(config, keys, enabled)


def _catch_up_sensor(
    config: SyncConfig, keys: Sequence[AssetKey], enabled: bool
) -> AutomationConditionSensorDefinition:
    return AutomationConditionSensorDefinition(
        CATCH_UP_SENSOR,
        target=AssetSelection.assets(*keys),
        default_status=DefaultSensorStatus.RUNNING if enabled else DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=config.catch_up.interval_seconds,
        emit_backfills=True,
        use_user_code_server=True,
        description=(
            f"Requests the missed hours of the last {config.catch_up.max_hours} (not the newest, which "
            f"is the schedule's) that are not in progress; {RetryBackoff.of(config).words()}."
        ),
    )


def catch_up_note(
    config: SyncConfig,
    partitions: HourlyPartitionsDefinition,
    hours: Sequence[str],
    now: datetime,
    retry: tuple[int, datetime] | None = None,
) -> str:
    """What will happen to missed or failed ``hours``, in the words an alert uses.

    ``retry``: how many times the one failed hour has failed and when it is requested again (see
    :func:`next_retry`), which the run-failure alert states.
    """
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
    backoff = RetryBackoff.of(config)
    if not beyond:
        if retry is not None:
            failures, due = retry
            times = "once" if failures == 1 else f"{failures} times"
            return (
                f"the catch-up requests {them} again at {due.astimezone(UTC):%Y-%m-%d %H:%M} UTC "
                f"(failed {times}: next wait {_duration(backoff.delay(failures))}; "
                f"{backoff.words()})"
            )
        return f"the catch-up requests {them} again ({backoff.words()})"
    horizon = f"older than catch_up.max_hours ({settings.max_hours}h)"
    if len(beyond) == len(hours):
        return f"{horizon}: backfill {them} from the UI"
    return (
        f"{describe(collapse(beyond, partitions))} {horizon}: backfill from the UI; "
        f"the catch-up requests the other {len(hours) - len(beyond)} ({backoff.words()})"
    )
