"""Asset checks of every sync asset: the partition it wrote, the newest due hour, drift since.

- ``in_sync`` (declared on the asset, yielded by every sync): the partition just written is compared
  with the source, every column, computed in each database where the engines allow.
- ``partition_freshness``: fails (ERROR) when the newest hour whose deadline (hour + 1h + grace) has
  passed has not been synced, naming that hour. Dagster's asset-level freshness looks at the last
  materialization of any partition, so a backfill of old hours would make a stale table look fresh.
  The freshness sensor evaluates it on an interval; it can also be run from the UI.
- ``drift``: compares each synced partition within the drift lookback, every column, and fails with
  the partitions that differ and by how many rows. The drift sensor runs it in a step process (never
  in the long-lived code server) and requests a re-sync of exactly those partitions.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    DagsterInstance,
    HourlyPartitionsDefinition,
    MetadataValue,
    PartitionKeyRange,
    asset_check,
    partition_loading_context,
)

from sync_pipeline.config import SyncConfig, TableConfig
from sync_pipeline.engine.diff.window import Window
from sync_pipeline.orchestration.resources import SyncResource

IN_SYNC_CHECK = "in_sync"
FRESHNESS_CHECK = "partition_freshness"
DRIFT_CHECK = "drift"


def in_sync_spec(key: AssetKey) -> AssetCheckSpec:
    return AssetCheckSpec(
        IN_SYNC_CHECK,
        asset=key,
        description="After each sync: the partition's rows in source and target are equal, every column.",
    )


@dataclass(frozen=True)
class Freshness:
    """The newest hour that should be synced by now, and whether it is."""

    partition_key: str | None  # None: no hour is due yet (the table starts in the future)
    deadline: datetime | None
    synced: bool

    @property
    def passed(self) -> bool:
        return self.synced


def evaluate_freshness(
    instance: DagsterInstance,
    key: AssetKey,
    partitions: HourlyPartitionsDefinition,
    config: SyncConfig,
    now: datetime,
) -> Freshness:
    """Hour H is due at H + 1h + grace; the newest due hour must have a materialization."""
    grace = timedelta(minutes=config.freshness.grace_minutes)
    # Dagster's own last complete partition at (now - grace): DST-correct, with its own keys.
    with partition_loading_context(effective_dt=now - grace):
        partition_key = partitions.get_last_partition_key()
    if partition_key is None:
        return Freshness(None, None, True)
    due = partitions.time_window_for_partition_key(partition_key)
    synced = partition_key in instance.get_materialized_partitions(key)
    # In UTC: adding to a local time is wall-clock arithmetic, an hour off across a DST change (and
    # it drops the fold of a repeated hour's end).
    return Freshness(partition_key, due.end.astimezone(UTC) + grace, synced)


def freshness_result(key: AssetKey, status: Freshness) -> AssetCheckResult:
    if status.partition_key is None:
        return AssetCheckResult(asset_key=key, check_name=FRESHNESS_CHECK, passed=True)
    assert status.deadline is not None
    verdict = "synced" if status.synced else "missed"
    return AssetCheckResult(
        asset_key=key,
        check_name=FRESHNESS_CHECK,
        passed=status.synced,
        severity=AssetCheckSeverity.ERROR,
        description=f"Partition {status.partition_key} {verdict} (due by {status.deadline.isoformat()})",
        metadata={"partition": status.partition_key, "deadline": status.deadline.isoformat()},
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
        description=f"The newest due hour (hour + 1h + {config.freshness.grace_minutes} min) is synced.",
    )
    def _freshness(context: AssetCheckExecutionContext) -> AssetCheckResult:
        return freshness_result(
            key, evaluate_freshness(context.instance, key, partitions, config, datetime.now(UTC))
        )

    @asset_check(
        asset=key,
        name=DRIFT_CHECK,
        description=(
            f"Synced partitions of the last {config.drift.lookback_hours} hours still equal the source, "
            "every column (counts and row hashes in each database where the engines allow)."
        ),
    )
    def _drift(context: AssetCheckExecutionContext, sync: SyncResource) -> AssetCheckResult:
        synced = context.instance.get_materialized_partitions(key)
        drifted: dict[str, int] = {}
        compared = 0
        for partition_key, window in lookback_partitions(config, partitions, datetime.now(UTC)):
            if partition_key not in synced:
                continue
            verification = sync.verify(table.name, window)
            compared += 1
            if not verification.in_sync:
                drifted[partition_key] = verification.rows_differing
                context.log.warning(
                    f"drift in {table.name} {partition_key}: {verification.rows_differing} rows differ"
                )
        return AssetCheckResult(
            passed=not drifted,
            severity=AssetCheckSeverity.ERROR,
            description=(
                f"{len(drifted)} of {compared} synced partitions differ from the source"
                if drifted
                else f"{compared} synced partitions equal the source"
            ),
            metadata={
                "drifted_partitions": MetadataValue.json(drifted),
                "partitions_compared": compared,
                "rows_differing": sum(drifted.values()),
            },
        )

    return [_freshness, _drift]
