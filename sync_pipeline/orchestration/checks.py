"""Asset checks of every sync asset: the partition it wrote, every due hour, drift since.

- ``in_sync`` (declared on the asset, yielded by every sync): the partition just written is compared
  with the source, every column, computed in each database where the engines allow.
- ``partition_freshness``: fails (ERROR) when any due hour (hour + 1h + grace) of the freshness
  horizon has no materialization, naming them collapsed into ranges, with a ``missing_hours``
  count the UI plots (:mod:`~sync_pipeline.orchestration.freshness`). The freshness sensor
  evaluates it on an interval; it can also be run from the UI.
- ``updated_at_placed`` (WARN): the source rows whose ``updated_at`` the sync cannot place in any
  hour (SQLite: a number, or text with a UTC offset other than zero), counted by every sync in its
  ``unplaced_updated_at`` metadata. Such rows are never synced; the check fails while the newest
  sync counted any, and ``unplaced_sensor`` evaluates it as materializations arrive and alerts
  when the count changes to one above zero.
- ``drift``: compares the synced hours the rolling schedule says are due
  (:mod:`~sync_pipeline.orchestration.drift_schedule`), every column, at most
  ``drift.max_partitions_per_run`` a run, and fails with the partitions that differ and by how many
  rows. Its metadata records which hours it compared at which age, and when each hour of the
  lookback was last compared (the schedule's state, read back by the next run). The drift sensor
  runs it in a step process (never in the long-lived code server), only when some hour is due
  (:func:`drift_plan`, from the event log alone), and requests a re-sync of exactly the drifted
  partitions.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    HourlyPartitionsDefinition,
    MetadataValue,
    PartitionKeyRange,
    asset_check,
    partition_loading_context,
)

from sync_pipeline.config import SyncConfig, TableConfig
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.orchestration.drift_schedule import DriftPlan, in_hours, milestone_ages, plan_comparisons
from sync_pipeline.orchestration.freshness import Freshness, describe, evaluate_freshness
from sync_pipeline.orchestration.resources import SyncResource

__all__ = [
    "DRIFT_CHECK",
    "FRESHNESS_CHECK",
    "IN_SYNC_CHECK",
    "UNPLACED_CHECK",
    "Freshness",
    "build_checks",
    "build_placement_check",
    "drift_plan",
    "evaluate_freshness",
    "freshness_result",
    "in_sync_spec",
    "lookback_partitions",
    "placement_result",
    "unplaced_counts",
]

IN_SYNC_CHECK = "in_sync"
FRESHNESS_CHECK = "partition_freshness"
DRIFT_CHECK = "drift"
UNPLACED_CHECK = "updated_at_placed"


def in_sync_spec(key: AssetKey) -> AssetCheckSpec:
    return AssetCheckSpec(
        IN_SYNC_CHECK,
        asset=key,
        description="After each sync: the partition's rows in source and target are equal, every column.",
    )


def freshness_result(key: AssetKey, status: Freshness) -> AssetCheckResult:
    """ERROR when any due hour of the horizon is missing, naming them collapsed into ranges."""
    if status.partition_key is None:
        return AssetCheckResult(
            asset_key=key, check_name=FRESHNESS_CHECK, passed=True, metadata={"missing_hours": 0}
        )
    assert status.deadline is not None
    if status.missing:
        description = f"{len(status.missing)} due hours not synced: {describe(status.ranges)}"
    else:
        description = (
            f"Every due hour is synced, up to {status.partition_key} (due by {status.deadline.isoformat()})"
        )
    return AssetCheckResult(
        asset_key=key,
        check_name=FRESHNESS_CHECK,
        passed=status.passed,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "partition": status.partition_key,
            "deadline": status.deadline.isoformat(),
            "missing_hours": len(status.missing),
            "missing": describe(status.ranges),
            "hours_checked": len(status.due_hours),
        },
    )


def lookback_partitions(
    config: SyncConfig, partitions: HourlyPartitionsDefinition, now: datetime
) -> list[tuple[str, Window]]:
    """The completed hours within the drift lookback, newest first, as (partition key, window)."""
    with partition_loading_context(effective_dt=now):
        newest = partitions.get_last_partition_key()
        if newest is None:
            return []
        oldest = partitions.get_partition_key_for_timestamp(
            max(partitions.start, now - timedelta(hours=config.drift.lookback_hours)).timestamp()
        )
        keys = partitions.get_partition_keys_in_range(PartitionKeyRange(oldest, newest))
    found = []
    for partition_key in reversed(keys):
        window = partitions.time_window_for_partition_key(partition_key)
        # In UTC: local bounds compare as wall times, so a repeated DST hour would look empty.
        found.append((partition_key, Window(window.start.astimezone(UTC), window.end.astimezone(UTC))))
    return found


def build_checks(
    table: TableConfig, config: SyncConfig, key: AssetKey, partitions: HourlyPartitionsDefinition
) -> list[AssetChecksDefinition]:
    """The freshness and drift checks of one table's asset."""

    @asset_check(
        asset=key,
        name=FRESHNESS_CHECK,
        description=(
            f"Every due hour (hour + 1h + {config.freshness.grace_minutes} min) of the last "
            f"{config.freshness.horizon_hours} hours is synced."
        ),
    )
    def _freshness(context: AssetCheckExecutionContext) -> AssetCheckResult:
        return freshness_result(
            key, evaluate_freshness(context.instance, key, partitions, config, datetime.now(UTC))
        )

    schedule = milestone_ages(config.drift.lookback_hours, config.drift.milestones_minutes)
    ages = ", ".join(str(in_hours(m)) for m in schedule)

    @asset_check(
        asset=key,
        name=DRIFT_CHECK,
        description=(
            f"Synced hours still equal the source, every column, compared when {ages} hours old "
            f"(at most {config.drift.max_partitions_per_run} hours a run, the most overdue first)."
        ),
    )
    def _drift(context: AssetCheckExecutionContext, sync: SyncResource) -> AssetCheckResult:
        now = datetime.now(UTC)
        plan, last_compared = drift_plan(context.instance, key, partitions, config, now)
        drifted: dict[str, int] = {}
        for due in plan.compare:
            verification = sync.verify(table.name, due.window)
            last_compared[due.partition_key] = now
            if not verification.in_sync:
                drifted[due.partition_key] = verification.rows_differing
                context.log.warning(
                    f"drift in {table.name} {due.partition_key}: {verification.rows_differing} rows differ"
                )
        # Forget hours that left the lookback: the schedule's state stays as small as the lookback.
        keep = {k for k, _ in lookback_partitions(config, partitions, now)}
        return drift_result(drifted, plan, {k: v for k, v in last_compared.items() if k in keep}, now)

    return [_freshness, _drift]


def drift_plan(
    instance: DagsterInstance,
    key: AssetKey,
    partitions: HourlyPartitionsDefinition,
    config: SyncConfig,
    now: datetime,
) -> tuple[DriftPlan, dict[str, datetime]]:
    """What the drift check of ``key`` compares at ``now`` and what stays due, with the schedule's state.

    From Dagster's event log alone (no database of the sync is opened), so the drift sensor can ask
    it too and start no run while no hour is due. Which hours are synced is asked only when one
    would be due if all were: most runs of a steady state find none.
    """
    ages = milestone_ages(config.drift.lookback_hours, config.drift.milestones_minutes)
    limit = config.drift.max_partitions_per_run
    in_lookback = lookback_partitions(config, partitions, now)
    last_compared = previous_comparisons(instance, key)
    if not plan_comparisons(in_lookback, last_compared, now, ages, 1).compare:
        return DriftPlan(compare=[], pending=[]), last_compared
    synced = instance.get_materialized_partitions(key)
    in_lookback = [(k, w) for k, w in in_lookback if k in synced]
    return plan_comparisons(in_lookback, last_compared, now, ages, limit), last_compared


def drift_result(
    drifted: dict[str, int], plan: DriftPlan, last_compared: dict[str, datetime], now: datetime
) -> AssetCheckResult:
    """The drift check's verdict and the schedule it followed, both visible in the UI."""
    compared = len(plan.compare)
    return AssetCheckResult(
        passed=not drifted,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"{len(drifted)} of {compared} compared partitions differ from the source"
            if drifted
            else f"{compared} compared partitions equal the source ({len(plan.pending)} due later)"
        ),
        metadata={
            "drifted_partitions": MetadataValue.json(drifted),
            "partitions_compared": compared,
            # Which hours this run compared, at which milestone of their age (hours since they ended).
            "compared": MetadataValue.json({d.partition_key: d.milestone_hours for d in plan.compare}),
            "pending": MetadataValue.json([d.partition_key for d in plan.pending]),
            "partitions_pending": len(plan.pending),
            "compared_at": now.isoformat(),
            "last_compared": MetadataValue.json({k: v.isoformat() for k, v in sorted(last_compared.items())}),
            "rows_differing": sum(drifted.values()),
        },
    )


def previous_comparisons(instance: DagsterInstance, key: AssetKey) -> dict[str, datetime]:
    """When each hour was last compared, from the latest ``drift`` evaluation's metadata."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(key, DRIFT_CHECK), limit=5
    )
    for record in records:  # newest first; a planned one (its run not finished) has no evaluation
        event = record.event.dagster_event if record.event else None
        evaluation = event.event_specific_data if event else None
        if not isinstance(evaluation, AssetCheckEvaluation):
            continue
        value = evaluation.metadata.get("last_compared")
        data = getattr(value, "value", None) or getattr(value, "data", None)
        if isinstance(data, str):
            data = json.loads(data)
        if isinstance(data, dict):
            return {str(k): datetime.fromisoformat(str(v)) for k, v in data.items()}
        return {}
    return {}


def unplaced_counts(materialization: AssetMaterialization) -> tuple[int, int]:
    """(unplaced, NULL) ``updated_at`` counts a sync recorded in its materialization's metadata."""

    def count(name: str) -> int:
        value: Any = materialization.metadata.get(name)
        return int(getattr(value, "value", value) or 0)

    return count("unplaced_updated_at"), count("null_updated_at")


def placement_result(key: AssetKey, partition_key: str | None, unplaced: int, null: int) -> AssetCheckResult:
    """WARN while the newest sync counted source rows it cannot place in an hour: nothing syncs them."""
    where = f" (partition {partition_key})" if partition_key else ""
    return AssetCheckResult(
        asset_key=key,
        check_name=UNPLACED_CHECK,
        passed=unplaced == 0,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"{unplaced} source rows have an updated_at no hour holds{where}: they are not synced. "
            "Store it as text in UTC or without an offset (a number, or an offset other than +00:00, "
            "cannot be placed)"
            if unplaced
            else f"every source row with an updated_at is in an hour{where}"
        ),
        metadata={
            "partition": partition_key or "",
            "unplaced_updated_at": unplaced,
            "null_updated_at": null,
        },
    )


def build_placement_check(key: AssetKey) -> AssetChecksDefinition:
    """The ``updated_at_placed`` check of one table's asset, from its newest materialization.

    It reads Dagster's event log only (the sync counted the rows): it runs after the sync in a run
    that selects it, and ``unplaced_sensor`` records it as materializations arrive.
    """

    @asset_check(
        asset=key,
        name=UNPLACED_CHECK,
        description=(
            "Every source row with an updated_at is in an hour: none is a number or has a UTC offset "
            "the sync cannot place (such rows are counted, never synced)."
        ),
    )
    def _placed(context: AssetCheckExecutionContext) -> AssetCheckResult:
        event = context.instance.get_latest_materialization_event(key)
        materialization = event.asset_materialization if event is not None else None
        if materialization is None:
            return placement_result(key, None, 0, 0)
        return placement_result(key, materialization.partition, *unplaced_counts(materialization))

    return _placed
